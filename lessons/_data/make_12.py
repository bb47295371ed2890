"""Frozen reference data for lesson 12 (run from the repository root: python lessons/_data/make_12.py).

The lesson's release is a standalone folder, so the test fixture ``tests/data/tiny-mamba-hf``
(a small random ``MambaForCausalLM`` saved by transformers, made by
``scripts/make_lm_fixture.py``) travels with it: its three files are copied flat to
``lessons/_data/12_tiny-mamba-hf_{config.json, model.safetensors, tokenizer.json}`` (the
release copies every ``_data`` file whose name starts with ``12_``; the lesson puts them back
in a folder for ``from_pretrained``).

Writes lessons/_data/12_lm.npz:

- ``hf_input_ids`` (1, 7), ``hf_logits`` (1, 7, 512) float32, ``hf_greedy_ids`` (1, 27): the
  fixture's prompt, the logits and the 20-token greedy continuation that transformers'
  ``MambaForCausalLM`` produced (copied from the fixture's ``expected.npz``: not our output);
- ``ce_loss`` () and ``ce_dlogits`` (1, 6, 512): the package's next-token cross-entropy of
  ``hf_logits`` (float64, positions 0..5 predicting tokens 1..6) and its gradient (exercise 12.1);
- ``probs_settings`` (4, 2) rows (temperature, top_k; 0 = all) and ``probs`` (4, 512): the
  package's ``next_token_probs`` of the prompt's last logits (exercise 12.2);
- ``greedy64_logits`` (1, 8, 512): float64 full-forward logits that chose the first 8 greedy
  tokens after the prompt (exercise 12.3);
- ``batch_ids`` (2, 5), ``batch_greedy_ids`` (2, 11), ``batch_logits64`` (2, 6, 512): a batch of
  two prompts, the package's float64 greedy continuation by 6 tokens, and the full-forward
  logits that chose them (hidden test of exercise 12.3).

Sizes are fixed (they do not depend on the lesson's FAST switch).
"""
import shutil
from pathlib import Path

import numpy as np

from mamba_from_scratch.lm import (
    cross_entropy_backward,
    cross_entropy_forward,
    from_pretrained,
    generate,
    lm_forward,
    next_token_probs,
)

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "data" / "tiny-mamba-hf"
DATA = Path(__file__).resolve().parent
OUT = DATA / "12_lm.npz"
FILES = ("config.json", "model.safetensors", "tokenizer.json")
PROBS_SETTINGS = np.array([[1.0, 0], [0.7, 0], [1.5, 50], [0.5, 5]])


def chosen_logits(params, cfg, ids, l):
    """Full-forward logits at positions l-1 .. L-2: those that chose tokens l .. L-1."""
    logits, _ = lm_forward(params, cfg, ids, backend="numpy")                        # (b, L, V)
    return logits[:, l - 1:-1]


def main():
    for name in FILES:
        shutil.copy(FIXTURE / name, DATA / f"12_tiny-mamba-hf_{name}")
    expected = np.load(FIXTURE / "expected.npz")
    ids, hf_logits = expected["input_ids"], expected["logits"]
    params, cfg = from_pretrained(FIXTURE, dtype=np.float64)

    ce_loss, cache = cross_entropy_forward(hf_logits[:, :-1].astype(np.float64), ids[:, 1:])
    ce_dlogits = cross_entropy_backward(1.0, cache)
    probs = np.concatenate([next_token_probs(hf_logits[:, -1], t, int(k) or None) for t, k in PROBS_SETTINGS])

    g8 = generate(params, cfg, ids, 8, temperature=0, backend="numpy")
    assert np.array_equal(g8, expected["greedy_ids"][:, :g8.shape[1]]), "float64 greedy left transformers' path"
    greedy64_logits = chosen_logits(params, cfg, g8, ids.shape[1])

    batch_ids = np.random.default_rng(12).integers(0, cfg.vocab_size, size=(2, 5))
    batch_greedy = generate(params, cfg, batch_ids, 6, temperature=0, backend="numpy")
    batch_logits = chosen_logits(params, cfg, batch_greedy, batch_ids.shape[1])

    np.savez_compressed(OUT, hf_input_ids=ids, hf_logits=hf_logits, hf_greedy_ids=expected["greedy_ids"],
                        ce_loss=ce_loss, ce_dlogits=ce_dlogits, probs_settings=PROBS_SETTINGS, probs=probs,
                        greedy64_logits=greedy64_logits, batch_ids=batch_ids, batch_greedy_ids=batch_greedy,
                        batch_logits64=batch_logits)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes) and the fixture's {len(FILES)} files")


if __name__ == "__main__":
    main()
