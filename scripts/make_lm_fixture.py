"""Make tests/data/tiny-mamba-hf: a tiny random MambaForCausalLM in the Hugging Face layout,
with a tiny tokenizer and what transformers computes for a fixed prompt.

Needs torch, transformers, safetensors, tokenizers (not the package's own environment; CI
does not run this script, and the tests need none of these except safetensors/tokenizers):

    python3 -m venv /tmp/torchenv
    /tmp/torchenv/bin/pip install torch==2.13.0 transformers safetensors tokenizers numpy
    /tmp/torchenv/bin/python scripts/make_lm_fixture.py [OUT_DIR]

Writes config.json, model.safetensors (save_pretrained; the tied lm_head is not stored),
tokenizer.json, and expected.npz / expected.json: the prompt's ids, transformers' float32
logits for it, and its 20-token greedy continuation (``generate(do_sample=False)``). On a
CPU without the mamba_ssm / causal_conv1d kernels transformers runs its slow path, the
sequential reference (with ``A = -exp(A_log)`` in float32).
"""
from __future__ import annotations

import json
import pathlib
import sys

import numpy as np
import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import MambaConfig, MambaForCausalLM

PROMPT = "The state space model reads the sequence"
NEW_TOKENS = 20
SEED = 0
# A short training text for the tokenizer (the model's weights are random, so the text only
# sets which merges exist). Written for this fixture.
TEXT = """\
A state space model keeps a hidden state and updates it with every token it reads.
The selective state space model makes its step size depend on the input, so it can choose
what to remember and what to forget. Mamba stacks such layers with a gate and a short
convolution, and reads a sequence in linear time. In recurrent mode it needs only the last
state to produce the next token; in parallel mode it scans the whole sequence at once.
The model reads the sequence, the state carries the past, and the output predicts the next word.
"""


def make_tokenizer(vocab_size: int) -> Tokenizer:
    """A byte-level BPE (as GPT-NeoX's, which mamba-130m uses) trained on TEXT."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(TEXT.splitlines(), trainer=trainer)
    return tok


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = pathlib.Path(argv[0] if argv else pathlib.Path(__file__).parents[1] / "tests/data/tiny-mamba-hf")
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(SEED)
    # eos/bos/pad None: generate() then runs all NEW_TOKENS steps, whatever it emits.
    config = MambaConfig(vocab_size=512, hidden_size=64, num_hidden_layers=2, state_size=16, expand=2,
                         conv_kernel=4, time_step_rank="auto", use_bias=False, use_conv_bias=True,
                         tie_word_embeddings=True, residual_in_fp32=True, layer_norm_epsilon=1e-5,
                         bos_token_id=None, eos_token_id=None, pad_token_id=None)
    model = MambaForCausalLM(config).eval()
    with torch.no_grad():  # perturb every parameter, so no term (D = 1, norms = 1, A_log = log n) is trivial
        for name, p in model.named_parameters():
            p.add_(0.1 * torch.randn_like(p))
            # A louder mixer: at the default scale the tied embedding's residual path wins and
            # greedy decoding repeats one token, which would test little; x3 gives 20 distinct-ish tokens.
            if "in_proj" in name or "out_proj" in name:
                p.mul_(3.0)
    model.save_pretrained(out, safe_serialization=True)

    tok = make_tokenizer(config.vocab_size)
    tok.save(str(out / "tokenizer.json"))
    ids = tok.encode(PROMPT).ids
    input_ids = torch.tensor([ids])
    with torch.no_grad():
        logits = model(input_ids).logits.float().numpy()                                # (1, l, V)
        gen = model.generate(input_ids, max_new_tokens=NEW_TOKENS, min_new_tokens=0, do_sample=False,
                             eos_token_id=None, pad_token_id=0)
    np.savez(out / "expected.npz", input_ids=np.array([ids], np.int64), logits=logits,
             greedy_ids=gen.numpy().astype(np.int64))
    (out / "expected.json").write_text(json.dumps({
        "prompt": PROMPT, "new_tokens": NEW_TOKENS, "seed": SEED,
        "greedy_text": tok.decode(gen[0].tolist()),
        "torch": torch.__version__, "transformers": transformers.__version__,
    }, indent=2) + "\n")
    print(f"wrote {out}: prompt {len(ids)} tokens, greedy {gen[0, len(ids):].tolist()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
