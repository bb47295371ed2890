"""Prefill and decode tokens/s of a randomly initialised Mamba LM (mamba-130m's shape by default).

    python -m mamba_from_scratch.lm.bench [--out docs/benchmarks.md]

The real weights cannot be fetched on the machine these numbers come from, and speed does not
depend on the weights' values, so the model is ``init_lm_params`` at d_model 768, 24 layers,
vocab 50280 (state 16, conv 4, expand 2, dt_rank 48), float32. Prefill is one full forward
over the prompt (batch 1); decode is one ``lm_step`` per token (batch 1). Each timing is the
median of ``--repeats`` runs, printed with the load average at the time (the machine is shared).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np

from .model import MambaLMConfig, init_lm_params, init_lm_state, lm_forward, lm_step, state_from_cache

SECTION = "lm"
HEADER = "# Benchmarks\n"


def _load():
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def run(cfg, prompt_len, new_tokens, repeats, seed=0):
    """Time prefill (full forward, batch 1) and decode (steps, batch 1).

    Returns:
        dict with per-run seconds, medians, tokens/s and the load average beside each.
    """
    rng = np.random.default_rng(seed)
    params = init_lm_params(cfg, rng, np.float32)
    ids = rng.integers(0, cfg.vocab_size, size=(1, prompt_len))
    lm_forward(params, cfg, ids[:, :8])                                     # compile / load the numba kernels
    res = {"prefill": [], "decode": []}
    for _ in range(repeats):
        t0 = time.perf_counter()
        logits, cache = lm_forward(params, cfg, ids)
        state = state_from_cache(cache)
        res["prefill"].append((time.perf_counter() - t0, _load()))
        del cache
        tok = logits[:, -1].argmax(-1)
        t0 = time.perf_counter()
        for _ in range(new_tokens):
            step_logits, state = lm_step(params, cfg, tok, state)
            tok = step_logits.argmax(-1)
        res["decode"].append((time.perf_counter() - t0, _load()))
    for what, n in (("prefill", prompt_len), ("decode", new_tokens)):
        times = sorted(t for t, _ in res[what])
        med = times[len(times) // 2]
        res[what + "_tokens_per_s"] = n / med
        res[what + "_median_s"] = med
    n_params = sum(a.size for a in params.values())
    res.update(prompt_len=prompt_len, new_tokens=new_tokens, repeats=repeats, n_params=n_params,
               state_floats=sum(s["conv"].size + s["h"].size for s in init_lm_state(cfg, 1)))
    return res


def render(res, cfg, argv):
    is_130m = (cfg.d_model, cfg.n_layer, cfg.vocab_size) == (768, 24, 50280)
    shape = " of mamba-130m's shape" if is_130m else ""
    lines = ["## Language model (`python -m mamba_from_scratch.lm.bench`)", "",
             f"Randomly initialised Mamba LM{shape} (d_model {cfg.d_model}, {cfg.n_layer} layers, "
             f"vocab {cfg.vocab_size}, d_state {cfg.d_state}, d_conv {cfg.d_conv}, expand {cfg.expand}, "
             f"dt_rank {cfg.dt_rank}; {res['n_params'] / 1e6:.1f} M parameters, tied head), float32, batch 1, "
             f"on {platform.machine()} with {os.cpu_count()} cores (shared with other work: see the load average "
             f"beside each run). Prefill = one full forward over a {res['prompt_len']}-token prompt (numba scan); "
             f"decode = {res['new_tokens']} recurrent steps (NumPy matrix-vector products, one per layer "
             f"weight; the state is {res['state_floats']:,} floats whatever the length).", "",
             f"Command: `python -m mamba_from_scratch.lm.bench {' '.join(argv)}`".rstrip() + "", "",
             "| run | prefill s | prefill tokens/s | load (prefill) | decode s | decode tokens/s | load (decode) |",
             "|---|---|---|---|---|---|---|"]
    for i, ((tp, lp), (td, ld)) in enumerate(zip(res["prefill"], res["decode"])):
        lines.append(f"| {i + 1} | {tp:.3f} | {res['prompt_len'] / tp:.1f} | {lp[13:]} | {td:.3f} | "
                     f"{res['new_tokens'] / td:.1f} | {ld[13:]} |")
    lines += ["", f"Median: prefill **{res['prefill_tokens_per_s']:.1f} tokens/s**, decode "
              f"**{res['decode_tokens_per_s']:.1f} tokens/s**."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = argparse.ArgumentParser(prog="python -m mamba_from_scratch.lm.bench", description=__doc__.split("\n")[0])
    ap.add_argument("--d-model", type=int, default=768)
    ap.add_argument("--n-layer", type=int, default=24)
    ap.add_argument("--vocab-size", type=int, default=50280)
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None, help="markdown file whose 'lm' section to write (default: print only)")
    args = ap.parse_args(argv)
    for name in ("d_model", "n_layer", "vocab_size", "prompt_len", "new_tokens", "repeats"):
        if getattr(args, name) < 1:
            print(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}", file=sys.stderr)
            return 2
    cfg = MambaLMConfig(d_model=args.d_model, n_layer=args.n_layer, vocab_size=args.vocab_size)
    res = run(cfg, args.prompt_len, args.new_tokens, args.repeats)
    text = render(res, cfg, argv)
    print(text)
    if args.out:
        from ..bench.common import write_section
        write_section(args.out, SECTION, text, HEADER)
    return 0


if __name__ == "__main__":
    sys.exit(main())
