"""``python -m mamba_from_scratch generate --model DIR --prompt "..."``: stream text from a
transformers-format Mamba folder (e.g. state-spaces/mamba-130m-hf), then print prefill and
decode tokens/s.

Prefill tokens/s = prompt tokens / (time to the first new token: the full forward plus one
sampling), timed after a one-token warm-up forward that loads the compiled kernels; decode
tokens/s = the remaining new tokens / their time (one step each).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

PROG = "python -m mamba_from_scratch generate"


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line and exit 2, not argparse's usage block
        print(f"{PROG}: error: {message}", file=sys.stderr)
        sys.exit(2)


def build_parser():
    p = _Parser(prog=PROG,
                description="Generate text with a pretrained Mamba (transformers layout) on our NumPy model.")
    p.add_argument("--model", required=True, help="folder with config.json, model.safetensors, tokenizer.json")
    p.add_argument("--prompt", required=True, help="text to continue")
    p.add_argument("--max-new-tokens", type=int, default=50, help="tokens to generate (default 50)")
    p.add_argument("--temperature", type=float, default=1.0, help="0 = greedy (default 1.0)")
    p.add_argument("--top-k", type=int, default=None, help="sample among the k most likely tokens (default: all)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="compute dtype")
    p.add_argument("--backend", choices=("numpy", "numba"), default="numba", help="scan backend for the prefill")
    return p


def main(argv=None):
    args = build_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    from .generate import iter_generate
    from .model import lm_forward
    from .pretrained import from_pretrained, load_tokenizer

    try:
        if args.max_new_tokens < 1:
            raise ValueError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
        if args.top_k is not None and args.top_k < 1:
            raise ValueError(f"--top-k must be >= 1, got {args.top_k}")
        if not (np.isfinite(args.temperature) and args.temperature >= 0):
            raise ValueError(f"--temperature must be a finite number >= 0, got {args.temperature}")
        if args.seed < 0:
            raise ValueError(f"--seed must be >= 0, got {args.seed}")
        params, cfg = from_pretrained(args.model, dtype=np.dtype(args.dtype).type)
        tokenizer = load_tokenizer(args.model)
        ids = tokenizer.encode(args.prompt).ids
        if not ids:
            raise ValueError("--prompt must encode to at least one token")
        if max(ids) >= cfg.vocab_size:
            raise ValueError(f"--model: tokenizer.json gives id {max(ids)} >= vocab_size {cfg.vocab_size}")
    except ValueError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    prompt = np.array([ids], np.int64)                                             # (1, l)
    # Load (or compile) the numba kernels on one token first, so that prefill tokens/s measures
    # the forward pass, not the JIT (about 0.7 s here, more than a short prompt's whole prefill).
    lm_forward(params, cfg, prompt[:, :1], backend=args.backend)
    print(args.prompt, end="", flush=True)
    new, shown = [], tokenizer.decode(ids)
    t0 = time.perf_counter()
    t_first = None
    for tok in iter_generate(params, cfg, prompt, args.max_new_tokens, args.temperature, args.top_k, args.seed,
                             backend=args.backend):
        if t_first is None:
            t_first = time.perf_counter()
        new.append(int(tok[0]))
        # Decode the whole text each time: a byte-level BPE token can be half a UTF-8 character,
        # so printing tokens one by one would show replacement characters mid-word.
        text = tokenizer.decode(ids + new)
        if text.startswith(shown) and not text.endswith("\ufffd"):
            print(text[len(shown):], end="", flush=True)
            shown = text
    t_end = time.perf_counter()
    text = tokenizer.decode(ids + new)
    print(text[len(shown):] if text.startswith(shown) else "", flush=True)
    prefill_s, decode_s = t_first - t0, t_end - t_first
    decode_rate = (len(new) - 1) / decode_s if len(new) > 1 and decode_s > 0 else float("nan")
    load = os.getloadavg()
    print(f"prefill: {len(ids)} tokens in {prefill_s:.3f} s ({len(ids) / prefill_s:.1f} tokens/s); "
          f"decode: {len(new) - 1} tokens in {decode_s:.3f} s ({decode_rate:.1f} tokens/s); "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
