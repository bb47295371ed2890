"""Prefill and decode tokens/s of a randomly initialised Mamba LM (mamba-130m's shape by default).

    python -m mamba_from_scratch.lm.bench [--blas-threads 1 2] [--out docs/benchmarks.md]

The real weights cannot be fetched on the machine these numbers come from, and speed does not
depend on the weights' values, so the model is ``init_lm_params`` at d_model 768, 24 layers,
vocab 50280 (state 16, conv 4, expand 2, dt_rank 48), float32. Prefill is one full forward
over the prompt (batch 1); decode is one ``lm_step`` per token (batch 1). Each timing is the
median of ``--repeats`` runs, printed with the load average at the time (the machine is shared).

The two phases want different thread settings: prefill's numba scan already uses every core,
so a multi-threaded BLAS competes with it, while decode is matrix-vector products that only
BLAS can spread over the cores. ``--blas-threads`` takes several counts and times each.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numba
import numpy as np
from threadpoolctl import threadpool_limits

from ..runtime import reuse_freed_memory
from .model import MambaLMConfig, init_lm_params, init_lm_state, lm_forward, lm_step, state_from_cache

SECTION = "lm"
HEADER = "# Benchmarks\n"


def _load():
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _median(times):
    return float(np.median(times))


def run(cfg, prompt_len, new_tokens, repeats, blas_threads=(1,), seed=0):
    """Time prefill (full forward, batch 1) and decode (steps, batch 1) at each BLAS thread count.

    Returns:
        dict: ``runs`` a list of (blas threads, prefill s, load, decode s, load), per-setting
        medians ``median[n] = (prefill s, decode s)``, and the model's sizes.
    """
    rng = np.random.default_rng(seed)
    params = init_lm_params(cfg, rng, np.float32)
    ids = rng.integers(0, cfg.vocab_size, size=(1, prompt_len))
    lm_forward(params, cfg, ids[:, :8])                                     # compile / load the numba kernels
    runs, median = [], {}
    for n in blas_threads:
        with threadpool_limits(limits=n, user_api="blas"):
            mine = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                logits, cache = lm_forward(params, cfg, ids)
                state = state_from_cache(cache)
                tp, lp = time.perf_counter() - t0, _load()
                del cache
                tok = logits[:, -1].argmax(-1)
                t0 = time.perf_counter()
                for _ in range(new_tokens):
                    step_logits, state = lm_step(params, cfg, tok, state)
                    tok = step_logits.argmax(-1)
                mine.append((n, tp, lp, time.perf_counter() - t0, _load()))
        runs += mine
        median[n] = (_median([r[1] for r in mine]), _median([r[3] for r in mine]))
    return {"runs": runs, "median": median, "prompt_len": prompt_len, "new_tokens": new_tokens,
            "repeats": repeats, "n_params": sum(a.size for a in params.values()),
            "state_floats": sum(s["conv"].size + s["h"].size for s in init_lm_state(cfg, 1))}


def render(res, cfg, argv):
    """The markdown section for docs/benchmarks.md."""
    from ..bench.common import machine

    m = machine()
    is_130m = (cfg.d_model, cfg.n_layer, cfg.vocab_size) == (768, 24, 50280)
    shape = " of mamba-130m's shape" if is_130m else ""
    command = " ".join(["python -m mamba_from_scratch.lm.bench", *argv])
    lp, ln = res["prompt_len"], res["new_tokens"]
    lines = ["## Language model (`python -m mamba_from_scratch.lm.bench`)", "",
             f"Randomly initialised Mamba LM{shape} (d_model {cfg.d_model}, {cfg.n_layer} layers, "
             f"vocab {cfg.vocab_size}, d_state {cfg.d_state}, d_conv {cfg.d_conv}, expand {cfg.expand}, "
             f"dt_rank {cfg.dt_rank}; {res['n_params'] / 1e6:.1f} M parameters, tied head), float32, batch 1. "
             f"Prefill = one full forward over a {lp}-token prompt (numba scan); decode = {ln} recurrent steps "
             f"(NumPy matrix-vector products, one per layer weight; the state is {res['state_floats']:,} floats "
             f"whatever the length). Medians of {res['repeats']} runs after a warm-up call, for each BLAS thread "
             f"count. The machine is shared with other work: the load average (1/5/15 min) is printed beside "
             f"each run, and a run slowed by a neighbour shows as an outlier there.", "",
             f"Command: `{command}`  ",
             f"Machine: {m['cpu']}, {m['nproc']} cores; Python {m['python']}, NumPy {m['numpy']}, "
             f"Numba {numba.__version__}; numba threads: {numba.get_num_threads()}", "",
             "| run | BLAS threads | prefill s | prefill tokens/s | load (prefill) "
             "| decode s | decode tokens/s | load (decode) |",
             "|---|---|---:|---:|---|---:|---:|---|"]
    for i, (n, tp, loadp, td, loadd) in enumerate(res["runs"]):
        lines.append(f"| {i + 1} | {n} | {tp:.3f} | {lp / tp:.1f} | {loadp} | {td:.3f} | {ln / td:.1f} | {loadd} |")
    lines.append("")
    for n, (tp, td) in res["median"].items():
        lines.append(f"Median with {n} BLAS thread{'s' if n > 1 else ''}: prefill **{lp / tp:.1f} tokens/s**, "
                     f"decode **{ln / td:.1f} tokens/s**.  ")
    return "\n".join(lines).rstrip() + "\n"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = argparse.ArgumentParser(prog="python -m mamba_from_scratch.lm.bench", description=__doc__.split("\n")[0])
    ap.add_argument("--d-model", type=int, default=768)
    ap.add_argument("--n-layer", type=int, default=24)
    ap.add_argument("--vocab-size", type=int, default=50280)
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--blas-threads", type=int, nargs="+", default=[1],
                    help="NumPy's BLAS thread counts to time (default 1, as the other benchmarks)")
    ap.add_argument("--out", default=None, help="markdown file whose 'lm' section to write (default: print only)")
    args = ap.parse_args(argv)
    for name in ("d_model", "n_layer", "vocab_size", "prompt_len", "new_tokens", "repeats"):
        if getattr(args, name) < 1:
            print(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}", file=sys.stderr)
            return 2
    if min(args.blas_threads) < 1:
        print(f"--blas-threads must all be >= 1, got {args.blas_threads}", file=sys.stderr)
        return 2
    reuse_freed_memory()  # as the other benchmarks and the training commands (runtime.py)
    cfg = MambaLMConfig(d_model=args.d_model, n_layer=args.n_layer, vocab_size=args.vocab_size)
    res = run(cfg, args.prompt_len, args.new_tokens, args.repeats, tuple(dict.fromkeys(args.blas_threads)))
    text = render(res, cfg, argv)
    print(text)
    if args.out:
        from ..bench.common import write_section
        write_section(args.out, SECTION, text, HEADER)
    return 0


if __name__ == "__main__":
    sys.exit(main())
