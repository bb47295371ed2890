"""``python -m mamba_from_scratch icl-theory``: paper 1's one-layer gated Mamba vs linear
attention and kernel ridge regression on Gaussian single-index prompts.

Main run (writes metrics.csv, config.json, error_vs_N.png, table.md into --out):
    for each link and d: Stage I once per gate, then for each N: Stage II per gate on shared
    prompts, and every method scored on the same test prompts (Q queries each):
    the one-layer model per gate, KRR on the full x and on the intrinsic coordinates (for
    N <= --krr-max-N, on the first --krr-prompts test prompts), the context-free optimum,
    and the zero predictor. The oracle scores 0 by construction and is not listed.
Extra studies (each writes its own <name>.csv / .png / .md next to them):
    --sweep r       N needed for error < --threshold as r varies (d = 32)
    --sweep d       the same as d varies (r = 4)
    --ablate gate   product / normalized / two_channel / none on the main grid
    --ablate pretraining   error at the largest N vs the number of Stage I prompts, the
                    ideal gamma, and the practical (AdamW) variant
    --sweep-product-gate   the exact S6 (product) gate and the normalized gate over a grid of
                    (rho, b0), each (rho, b0) selected per (link, d, N) on validation prompts
                    drawn apart from the test prompts; the selected gates, linear attention and
                    the zero predictor then scored on the same test prompts
                    (product_gate_sweep.csv / .md / .png)
    --stage1-chunk C   stream Stage I's --stage1-prompts in chunks of C prompts (two passes over
                    seeded chunks; memory O(C)), for T1 far beyond what fits at once
    --replot        redraw error_vs_N.png and the sweep files from the CSVs already in --out
                    (no training, no scoring)
Every file is written to a temporary name and renamed, so an interrupted run never leaves a
half-written file, and a re-run into the same --out replaces files whole.

This module is the command line; the runner is theory_run.py, the tables and figures
theory_report.py. Tested in tests/test_icl_theory.py.
"""
from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict

from ..files import atomic_write, parse_list
from ..validate import check_choice
from .gated import GATES
from .krr import DEFAULT_KERNELS, RIDGES_REL
from .links import make_link
from .theory_report import replot, separation
from .theory_run import main_grid, pretrain_config, run_ablate_pretraining, run_product_gate_sweep, run_sweep


def _ints(text):
    try:
        return parse_list(text, int)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _floats(text):
    try:
        return parse_list(text, float)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def build_parser():
    p = argparse.ArgumentParser(prog="python -m mamba_from_scratch icl-theory",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--links", help="comma-separated: he1..he6 or poly:c0:c1:... (default he2,he3,he4)")
    p.add_argument("--d", type=_ints, help="ambient dimensions (default 16,32)")
    p.add_argument("--r", type=int, default=8, help="intrinsic dimension")
    p.add_argument("--N", type=_ints, help="context lengths (default 16,32,...,4096)")
    p.add_argument("--gates", help=f"gates of the main run, from {GATES} (default product,normalized,none)")
    p.add_argument("--tau", type=float, default=0.1, help="label noise amplitude")
    p.add_argument("--n-prompts", type=int, help="test prompts per (link, d, N) (default 128)")
    p.add_argument("--n-queries", type=int, default=32, help="queries per prompt")
    p.add_argument("--stage1-prompts", type=int, help="T1 (default 1024)")
    p.add_argument("--stage1-N", type=int, default=512, help="N1, context length of Stage I")
    p.add_argument("--stage1-chunk", type=int, default=0,
                   help="stream Stage I in chunks of this many prompts (seeded per chunk, two passes, "
                        "never all prompts at once); 0 (default) draws them all at once as the committed runs did")
    p.add_argument("--stage2-prompts", type=int, help="T2 per N (default 128)")
    p.add_argument("--width", type=int, help="MLP width (default 256)")
    p.add_argument("--rho", type=float, default=0.25)
    p.add_argument("--b0", type=float, default=0.0)
    p.add_argument("--krr-max-N", type=int, help="largest N at which KRR runs, O(N^3) per prompt (default 512)")
    p.add_argument("--krr-prompts", type=int, help="test prompts KRR is scored on (default 12)")
    p.add_argument("--threshold", type=float, default=0.5, help="error level of the sample-complexity sweeps")
    p.add_argument("--sweep", choices=["r", "d"], help="sample-complexity sweep instead of the main run")
    p.add_argument("--ablate", choices=["gate", "pretraining"], help="ablation instead of the main run")
    p.add_argument("--sweep-product-gate", action="store_true",
                   help="sweep (rho, b0) of the product (exact S6) and normalized gates, select on validation "
                        "prompts, score the selected ones on the test prompts "
                        "(default N: the largest of --N's default)")
    p.add_argument("--sweep-rhos", type=_floats, default=[0.25, 0.5, 1.0, 2.0, 4.0, 8.0],
                   help="gate temperatures of --sweep-product-gate")
    p.add_argument("--sweep-b0s", type=_floats, default=[-3.0, 0.0, 3.0],
                   help="gate offsets b0 (b = b0 - log N) of --sweep-product-gate; "
                        "write --sweep-b0s=-3,0,3 (a leading minus)")
    p.add_argument("--val-prompts", type=int, help="validation prompts per (link, d, N) of --sweep-product-gate "
                   "(default 256), drawn from their own stream, never the test prompts'")
    p.add_argument("--replot", action="store_true",
                   help="redraw the figures (and the sweeps' N-needed tables) from the CSVs in --out")
    p.add_argument("--backend", default=None, help="scan backend for the product gate (default numba)")
    p.add_argument("--quick", action="store_true", help="small sizes for a smoke run (well under 90 s): "
                   "He3, d = 16, N = 256,1024,4096, normalized gate vs linear attention")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="results/icl_theory")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


# Options whose default depends on --quick (the parser leaves them None).
FULL = dict(links="he2,he3,he4", d=[16, 32], N=[2 ** k for k in range(4, 13)], gates="product,normalized,none",
            n_prompts=128, stage1_prompts=1024, stage2_prompts=128, width=256, krr_max_N=512, krr_prompts=12,
            val_prompts=256)


QUICK = dict(links="he3", d=[16], N=[256, 1024, 4096], gates="normalized,none", n_prompts=96,
             stage1_prompts=512, stage2_prompts=128, width=128, krr_max_N=256, krr_prompts=8, val_prompts=48)


# Stage I prompts held at once above this many bytes (x of context and queries) need --stage1-chunk
STAGE1_MAX_BYTES = 2 << 30


def validate_args(args):
    """Turn argparse's namespace into checked values (ValueError on bad input)."""
    if args.sweep_product_gate and args.N is None:  # the sweep runs at one N unless told otherwise
        args.N = [1024] if args.quick else [max(FULL["N"])]
    for k, v in FULL.items():  # options left unset take the quick or the full default
        if getattr(args, k) is None:
            setattr(args, k, QUICK[k] if args.quick else v)
    args.links = [make_link(s) for s in args.links.split(",") if s.strip()]
    args.gates = [check_choice("gate", g.strip(), GATES) for g in args.gates.split(",") if g.strip()]
    for name in ("d", "N"):
        vals = getattr(args, name)
        if not vals or min(vals) < 1:
            raise ValueError(f"--{name} must list integers >= 1, got {vals!r}")
    if args.r < 1 or args.r > min(args.d):
        raise ValueError(f"--r must satisfy 1 <= r <= every d, got r={args.r}, d={args.d}")
    if args.tau < 0:
        raise ValueError(f"--tau must be >= 0, got {args.tau}")
    for name in ("n_prompts", "n_queries", "stage1_prompts", "stage1_N", "stage2_prompts", "width", "krr_prompts",
                 "val_prompts"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.n_prompts < 2 or args.val_prompts < 2:
        raise ValueError("--n-prompts and --val-prompts must be >= 2 (standard errors need two prompts)")
    if args.stage1_chunk < 0:
        raise ValueError(f"--stage1-chunk must be >= 0, got {args.stage1_chunk}")
    held = args.stage1_prompts * (args.stage1_N + args.n_queries) * max(args.d) * 8
    if args.stage1_chunk == 0 and held > STAGE1_MAX_BYTES:
        raise ValueError(f"--stage1-prompts {args.stage1_prompts} at once would hold {held / 2**30:.1f} GiB of inputs; "
                         f"stream them with --stage1-chunk (e.g. 1024)")
    if args.sweep_product_gate and (args.sweep or args.ablate):
        raise ValueError("--sweep-product-gate is a run of its own: drop --sweep / --ablate")
    if not args.sweep_rhos or min(args.sweep_rhos) <= 0 or not args.sweep_b0s:
        raise ValueError(f"--sweep-rhos must list numbers > 0 and --sweep-b0s at least one number, "
                         f"got {args.sweep_rhos!r}, {args.sweep_b0s!r}")
    args.backend = args.backend or "numba"
    return args


def main(argv=None):
    args = build_parser().parse_args(argv)
    args = validate_args(args)
    if args.replot:  # before anything is written: the run's own config.json stays as it was
        print("redrew " + ", ".join(replot(args)) + f" in {args.out}")
        return 0
    os.makedirs(args.out, exist_ok=True)
    mode = ("sweep_product_gate" if args.sweep_product_gate else f"sweep_{args.sweep}" if args.sweep
            else (f"ablate_{args.ablate}" if args.ablate else "main"))
    config = {k: v for k, v in vars(args).items() if k != "links"}
    config["links"] = [repr(link) for link in args.links]
    config["mode"] = mode
    config["krr_kernels"] = [list(k) for k in DEFAULT_KERNELS]
    config["krr_ridges_rel"] = list(RIDGES_REL)
    config["pretrain_defaults"] = asdict(pretrain_config(args, args.gates[0]))
    atomic_write(os.path.join(args.out, "config.json" if mode == "main" else f"config_{mode}.json"),
                 json.dumps(config, indent=2) + "\n")
    if args.sweep_product_gate:
        run_product_gate_sweep(args)
        print(open(os.path.join(args.out, "product_gate_sweep.md")).read())
    elif args.sweep:
        need, slopes = run_sweep(args)
        print(open(os.path.join(args.out, f"sweep_{args.sweep}.md")).read())
    elif args.ablate == "pretraining":
        run_ablate_pretraining(args)
        print(open(os.path.join(args.out, "ablate_pretraining.md")).read())
    else:
        gates = list(GATES) if args.ablate == "gate" else args.gates
        name = "ablate_gate" if args.ablate == "gate" else "metrics"
        rows, info, elapsed = main_grid(args, gates, krr=args.ablate != "gate", name=name)
        print(open(os.path.join(args.out, "table.md" if name == "metrics" else f"{name}.md")).read())
        for link in dict.fromkeys(r["link"] for r in rows):
            for d in dict.fromkeys(r["d"] for r in rows):
                pair = separation(rows, link, d, max(args.N))
                if pair:
                    ra, rb, diff, se = pair
                    print(f"{link} d={d} N={max(args.N)}: normalized {ra['error']:.3f} ± {ra['stderr']:.3f}, "
                          f"linear attention {rb['error']:.3f} ± {rb['stderr']:.3f}; paired gap "
                          f"{diff:.3f} ± {se:.3f} ({diff / se:.1f} s.e.); linear attention - zero "
                          f"{rb['diff_vs_zero']:+.3f} ± {rb['diff_vs_zero_se']:.3f}")
    print(f"wrote {args.out}")
    return 0
