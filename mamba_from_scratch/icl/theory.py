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
"""
from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import math
import os
import time
from dataclasses import asdict, replace

import numpy as np
from tqdm import tqdm

from .. import files
from .. import rng as R
from ..files import atomic_write, parse_list, save_figure
from ..validate import check_choice
from .baselines import baseline_predict, krr_baseline
from .features import relevant_features
from .gated import GATES, context_statistic, context_statistics
from .krr import DEFAULT_KERNELS, RIDGES_REL
from .links import make_link
from .metrics import normalized_error, paired_difference
from .pretrain import PretrainConfig, practical, stage1, stage1_streamed, stage2
from .task import SingleIndexTask

COLUMNS = ["method", "gate", "link", "d", "r", "N", "error", "stderr", "n_prompts", "seed",
           "diff_vs_zero", "diff_vs_zero_se", "note"]
LABELS = {("one_layer", "product"): "Mamba, product gate (exact S6)",
          ("one_layer", "normalized"): "Mamba, normalized gate",
          ("one_layer", "two_channel"): "Mamba, two-channel gate",
          ("one_layer", "none"): "linear attention (no gate)",
          ("krr_full", ""): "KRR on full x", ("krr_intrinsic", ""): "KRR on intrinsic coords",
          ("context_free", ""): "context-free optimum", ("zero", ""): "zero predictor"}


def default_backend():
    """The compiled Numba scan when the package has it, else the NumPy reference."""
    return "numba" if importlib.util.find_spec("mamba_from_scratch.scan.cpu") else "numpy"


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
                        "prompts, score the selected ones on the test prompts (default N: the largest of --N's default)")
    p.add_argument("--sweep-rhos", type=_floats, default=[0.25, 0.5, 1.0, 2.0, 4.0, 8.0],
                   help="gate temperatures of --sweep-product-gate")
    p.add_argument("--sweep-b0s", type=_floats, default=[-3.0, 0.0, 3.0],
                   help="gate offsets b0 (b = b0 - log N) of --sweep-product-gate; write --sweep-b0s=-3,0,3 (a leading minus)")
    p.add_argument("--val-prompts", type=int, help="validation prompts per (link, d, N) of --sweep-product-gate "
                   "(default 256), drawn from their own stream, never the test prompts'")
    p.add_argument("--replot", action="store_true",
                   help="redraw the figures (and the sweeps' N-needed tables) from the CSVs in --out")
    p.add_argument("--backend", default=None, help="scan backend for the product gate (default: numba if built, else numpy)")
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
    args.backend = args.backend or default_backend()
    return args


def write_csv(path, rows, columns=COLUMNS):
    """icl-theory's tables: 6 significant digits, "\\n" line ends (as the committed files)."""
    files.write_csv(path, rows, columns, float_format=".6g", lineterminator="\n")


def pretrain_config(args, gate):
    return PretrainConfig(gate=gate, rho=args.rho, b0=args.b0, width=args.width, n_queries=args.n_queries,
                          stage1_prompts=args.stage1_prompts, stage1_N=args.stage1_N,
                          stage2_prompts=args.stage2_prompts, backend=args.backend)


def _rng(args, *tags):
    """The named stream ``[--seed, *tags]`` (the tags are rng.py's THEORY_*)."""
    return R.stream(args.seed, *tags)


def run_cell(args, task, link_id, gates, bar, krr=True, stage1_prompts=None):
    """All methods for one (link, d) over the N grid. Returns metric rows and Stage I info."""
    rows, info = [], {}
    base = dict(link=task.link.name, d=task.d, r=task.r, seed=args.seed)
    T1 = stage1_prompts or args.stage1_prompts
    pre = {}
    if args.stage1_chunk:  # streamed: chunk i of the Stage I prompts comes from its own seeded stream
        C = args.stage1_chunk
        n_chunks = math.ceil(T1 / C)

        def draw(i):
            return task.sample(_rng(args, link_id, task.d, task.r, R.THEORY_STAGE1_CHUNK, i), min(C, T1 - i * C), args.stage1_N,
                               args.n_queries)

        cfgs = [pretrain_config(args, gate) for gate in gates]
        with tqdm(total=2 * n_chunks, desc=f"Stage I {task.link.name} d={task.d} ({T1} prompts, 2 passes)",
                  leave=False, disable=args.no_progress) as sbar:
            res = stage1_streamed(task, cfgs, [_rng(args, link_id, task.d, task.r, R.THEORY_STAGE1_MLP, gi) for gi in range(len(gates))],
                                  draw, n_chunks, progress=sbar.update)
        for gate, cfg, (gamma, v, inf) in zip(gates, cfgs, res):
            pre[gate] = (cfg, gamma, v)
            info[gate] = inf
        bar.update(len(gates))
    else:
        s1 = task.sample(_rng(args, link_id, task.d, task.r, R.THEORY_STAGE1_PROMPTS), T1, args.stage1_N, args.n_queries)
        h1 = context_statistics(s1.x_context, s1.y_context, gates, args.rho, args.b0, args.backend)
        for gi, gate in enumerate(gates):
            cfg = pretrain_config(args, gate)
            gamma, v, inf = stage1(task, cfg, _rng(args, link_id, task.d, task.r, R.THEORY_STAGE1_MLP, gi), prompts=s1, h=h1[gate])
            pre[gate] = (cfg, gamma, v)
            info[gate] = dict(inf, stage1_prompts=T1)
            bar.update(1)
    for N in args.N:
        s2 = task.sample(_rng(args, link_id, task.d, task.r, R.THEORY_STAGE2_PROMPTS, N), args.stage2_prompts, N, args.n_queries)
        test = task.sample(_rng(args, link_id, task.d, task.r, R.THEORY_TEST, N), args.n_prompts, N, args.n_queries)
        target, m2 = test.y_query_clean, task.link.second_moment
        _, _, e_zero = normalized_error(np.zeros_like(target), target, m2)

        def add(method, gate, pred, n=None, note=""):
            e, se, ep = normalized_error(pred, target[:n], m2)
            dz, dzse = paired_difference(ep, e_zero[:len(ep)])
            rows.append(dict(base, method=method, gate=gate, N=N, error=e, stderr=se, n_prompts=len(ep),
                             diff_vs_zero=dz, diff_vs_zero_se=dzse, note=note, _ep=ep))
            return ep

        rows.append(dict(base, method="zero", gate="", N=N, error=float(e_zero.mean()),
                         stderr=float(e_zero.std(ddof=1) / math.sqrt(e_zero.size)), n_prompts=e_zero.size,
                         diff_vs_zero=0.0, diff_vs_zero_se=0.0, note=""))
        add("context_free", "", baseline_predict("context_free", task, test))
        h2 = context_statistics(s2.x_context, s2.y_context, gates, args.rho, args.b0, args.backend)
        h_test = context_statistics(test.x_context, test.y_context, gates, args.rho, args.b0, args.backend)
        for gi, gate in enumerate(gates):
            cfg, gamma, v = pre[gate]
            model = stage2(task, cfg, gamma, v, N, _rng(args, link_id, task.d, task.r, R.THEORY_STAGE2_MLP, N, gi), prompts=s2,
                           h=h2[gate])
            add("one_layer", gate, model.predict(test, h=h_test[gate]), note=f"ridge={model.info['ridge']:g}")
            bar.update(1)
        if krr and N <= args.krr_max_N:
            n = min(args.krr_prompts, args.n_prompts)
            sub = test.subset(slice(0, n))
            for method in ("krr_full", "krr_intrinsic"):
                pred, choices = krr_baseline(task, sub, intrinsic=method == "krr_intrinsic")
                kinds = sorted({f"{c['kernel'][0]}{c['kernel'][1]:g}" for c in choices})
                add(method, "", pred, n=n, note="kernels=" + "/".join(kinds))
            bar.update(1)
    return rows, info


def main_grid(args, gates, krr=True, name="metrics"):
    """The main run (also the gate ablation): every (link, d) cell over the N grid."""
    os.makedirs(args.out, exist_ok=True)
    total = len(args.links) * len(args.d) * (len(gates) * (1 + len(args.N)) + (len(args.N) if krr else 0))
    rows, stage1_info = [], {}
    clock = Clock()
    with tqdm(total=total, desc="icl-theory", disable=args.no_progress) as bar:
        for li, link in enumerate(args.links):
            for d in args.d:
                task = SingleIndexTask(d, args.r, link, args.tau, args.seed)
                cell_rows, info = run_cell(args, task, li, gates, bar, krr=krr)
                rows += cell_rows
                stage1_info[f"{link.name},d={d}"] = info
                write_csv(os.path.join(args.out, f"{name}.csv"), rows)
                write_stage1_csv(os.path.join(args.out, f"{name}_stage1.csv"), stage1_info, args)
    elapsed = clock.wall()
    write_csv(os.path.join(args.out, f"{name}.csv"), rows)
    plot_error_vs_N(rows, args, os.path.join(args.out, "error_vs_N.png" if name == "metrics" else f"{name}.png"))
    atomic_write(os.path.join(args.out, "table.md" if name == "metrics" else f"{name}.md"),
                 table_md(rows, args, elapsed, stage1_info, timing=clock.summary()))
    return rows, stage1_info, elapsed


class Clock:
    """Wall time, this process's CPU time and the machine's 1-minute load average (start and
    end): the machine is shared, so a wall time means little without the load beside it."""

    def __init__(self):
        self.t0, self.c0, self.load0 = time.time(), time.process_time(), os.getloadavg()[0]

    def wall(self):
        return time.time() - self.t0

    def summary(self):
        return (f"wall {self.wall():.0f} s, CPU {time.process_time() - self.c0:.0f} s, "
                f"load average {self.load0:.1f} at the start and {os.getloadavg()[0]:.1f} at the end")


def write_stage1_csv(path, stage1_info, args):
    """One row per (link, d, gate): Stage I's size and how much of gamma lies on the subspace."""
    cols = ["link", "d", "r", "gate", "stage1_prompts", "stage1_N", "stage1_chunk", "gamma_mass_on_subspace",
            "gamma_mass_chance", "gamma_mass_subspace_linear", "gamma_mass_subspace_quadratic", "stage1_loss", "seed"]
    rows = []
    for cell, info in stage1_info.items():
        link, d = cell.split(",d=")
        for gate, inf in info.items():
            rows.append(dict(link=link, d=int(d), r=args.r, gate=gate, stage1_prompts=inf["stage1_prompts"],
                             stage1_N=args.stage1_N, stage1_chunk=args.stage1_chunk,
                             gamma_mass_on_subspace=inf["gamma_mass_on_subspace"],
                             gamma_mass_chance=inf["gamma_mass_chance"],
                             gamma_mass_subspace_linear=inf["gamma_mass_subspace_linear"],
                             gamma_mass_subspace_quadratic=inf["gamma_mass_subspace_quadratic"],
                             stage1_loss=inf["stage1_loss"],
                             seed=args.seed))
    write_csv(path, rows, cols)


def _series(rows, link, d):
    out = {}
    for row in rows:
        if row["link"] == link and row["d"] == d:
            out.setdefault((row["method"], row["gate"]), []).append(row)
    return out


STYLE = {("one_layer", "normalized"): ("C0", "o", "-"), ("one_layer", "product"): ("C3", "v", "-"),
         ("one_layer", "two_channel"): ("C4", "^", "-"), ("one_layer", "none"): ("C1", "s", "-"),
         ("krr_full", ""): ("C2", "D", "--"), ("krr_intrinsic", ""): ("C5", "P", "--"),
         ("context_free", ""): ("0.5", "", ":"), ("zero", ""): ("k", "", ":")}


def relative_to_zero(row):
    """(error / zero predictor's error on the same prompts, its standard error) of a metrics row.

    The zero predictor's mean error z on the row's own prompts (a subset for KRR) is
    ``error - diff_vs_zero``, so the ratio R = e / z is recoverable from the CSV alone. By the
    delta method its standard error is sd(e_i - R z_i) / (sqrt(n) z); since
    e_i - R z_i = (1 - R) e_i + R (e_i - z_i), the triangle inequality bounds it by
    (|1 - R| stderr + |R| diff_vs_zero_se) / z, which needs only the CSV's columns. That bound
    is what we report: near R = 1 it is the paired difference's s.e., near R = 0 the
    method's own (a model far below the zero predictor is not charged with the heavy-tailed
    targets' noise of the zero predictor).
    """
    e, dz, dzse = float(row["error"]), float(row["diff_vs_zero"]), float(row["diff_vs_zero_se"])
    zero = e - dz
    R = e / zero
    return R, (abs(1 - R) * float(row["stderr"]) + abs(R) * dzse) / zero


def read_metrics(path):
    """metrics rows back from a CSV written by :func:`write_csv`, numbers as numbers."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k in ("d", "r", "N", "n_prompts", "seed"):
            r[k] = int(r[k])
        for k in ("error", "stderr", "diff_vs_zero", "diff_vs_zero_se"):
            r[k] = float(r[k])
    return rows


def plot_error_vs_N(rows, args, path):
    """Every method's error over the zero predictor's on the same prompts, against N.

    The absolute error is no use across N: with heavy-tailed He3/He4 targets the zero
    predictor's own error jumps between about 0.6 and 1.4 from one set of test prompts to
    the next. KRR is scored on a subset of the prompts (the first --krr-prompts), so its
    ratio uses the zero predictor on that subset and the legend says how many.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    links = list(dict.fromkeys(r["link"] for r in rows))
    ds = list(dict.fromkeys(r["d"] for r in rows))
    n_all = max(r["n_prompts"] for r in rows)
    fig, axes = plt.subplots(len(links), len(ds), figsize=(max(8.0, 4.6 * len(ds)), 3.4 * len(links) + 1.2),
                             squeeze=False, sharex=True)
    for i, link in enumerate(links):
        for j, d in enumerate(ds):
            ax = axes[i, j]
            for key, pts in _series(rows, link, d).items():
                if key == ("zero", ""):
                    continue  # the reference line itself: 1 by definition
                color, marker, ls = STYLE.get(key, ("k", "x", "-"))
                rel = [relative_to_zero(p) for p in pts]
                label = LABELS.get(key, str(key))
                sizes = sorted({p["n_prompts"] for p in pts})
                if sizes != [n_all]:
                    label += f" (first {'/'.join(map(str, sizes))} of {n_all} prompts)"
                ax.errorbar([p["N"] for p in pts], [x for x, _ in rel], yerr=[se for _, se in rel], color=color,
                            marker=marker or None, ls=ls, ms=4, capsize=2, label=label)
            ax.axhline(1.0, color="k", ls=":", lw=1.2, label="zero predictor (= 1, no learning)")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"{link}, d = {d}, r = {rows[0]['r']}")
            ax.grid(True, which="both", alpha=0.3)
            if i == len(links) - 1:
                ax.set_xlabel("context length N")
            if j == 0:
                ax.set_ylabel("error / zero predictor's error\n(same prompts)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(3, len(labels)), fontsize=8)
    fig.suptitle("In-context test error relative to the zero predictor on the same prompts, vs context length\n"
                 "(± 1 s.e. over prompts, bounded as in relative_to_zero; below the dotted line = learned something)", fontsize=10)
    legend_in = 0.25 * math.ceil(len(labels) / 3) + 0.25  # inches the legend needs at the bottom
    fig.tight_layout(rect=(0, legend_in / fig.get_size_inches()[1], 1, 1 - 0.5 / fig.get_size_inches()[1]))
    save_figure(fig, path)
    plt.close(fig)


def separation(rows, link, d, N, a=("one_layer", "normalized"), b=("one_layer", "none")):
    """Paired comparison of two methods scored on the same prompts of one cell.

    Returns:
        (row_a, row_b, mean of err_b - err_a, its standard error), or None if either is missing.
    """
    pick = {(r["method"], r["gate"]): r for r in rows if r["link"] == link and r["d"] == d and r["N"] == N}
    if a not in pick or b not in pick or "_ep" not in pick[a] or "_ep" not in pick[b]:
        return None
    ra, rb = pick[a], pick[b]
    diff, se = paired_difference(rb["_ep"], ra["_ep"])
    return ra, rb, diff, se


def table_md(rows, args, elapsed, stage1_info, timing=None):
    """Errors at every (link, d, N) as markdown: one table per (link, d)."""
    keys = list(dict.fromkeys((r["method"], r["gate"]) for r in rows))
    stream = f", streamed in chunks of {args.stage1_chunk}" if args.stage1_chunk else ""
    out = [f"# icl-theory results (seed {args.seed}, r = {args.r}, tau = {args.tau}, "
           f"{args.n_prompts} test prompts x {args.n_queries} queries; KRR on the first "
           f"{args.krr_prompts} prompts for N <= {args.krr_max_N}; wall time {elapsed:.0f} s)", "",
           f"Stage I: {args.stage1_prompts} prompts of length {args.stage1_N}{stream}. "
           + (f"Timing: {timing}." if timing else ""), "",
           "Entries: normalised test error ± standard error over prompts (zero predictor ≈ 1).", ""]
    for link in dict.fromkeys(r["link"] for r in rows):
        for d in dict.fromkeys(r["d"] for r in rows):
            ser = _series(rows, link, d)
            Ns = sorted({r["N"] for r in rows if r["link"] == link and r["d"] == d})
            out += [f"## {link}, d = {d}", "", "| method | " + " | ".join(f"N={N}" for N in Ns) + " |",
                    "|---|" + "---|" * len(Ns)]
            for key in keys:
                by_N = {p["N"]: p for p in ser.get(key, [])}
                cells = [f"{by_N[N]['error']:.3f} ± {by_N[N]['stderr']:.3f}" if N in by_N else "—" for N in Ns]
                out.append(f"| {LABELS.get(key, key)} | " + " | ".join(cells) + " |")
            info = stage1_info.get(f"{link},d={d}", {})
            if info:
                out += ["", "Stage I: share of |gamma|^2 on the hidden subspace's features (chance level "
                        f"{next(iter(info.values()))['gamma_mass_chance']:.3f}): " +
                        ", ".join(f"{g} {v['gamma_mass_on_subspace']:.3f}" for g, v in info.items())]
            out.append("")
    return "\n".join(out)


def ideal_gamma(task):
    """gamma = 1 on every feature of the hidden subspace, 0 elsewhere (constant included as 0)."""
    return relevant_features(task.d, task.index_set).astype(float)


def run_ablate_pretraining(args):
    """Error at the largest N vs the number of Stage I prompts (normalized gate, first link,
    first d), with the ideal gamma and the practical AdamW variant for comparison."""
    os.makedirs(args.out, exist_ok=True)
    link, d, N = args.links[0], args.d[0], max(args.N)
    task = SingleIndexTask(d, args.r, link, args.tau, args.seed)
    cfg = pretrain_config(args, "normalized")
    counts = [16, 64, 256, 1024] if args.quick else [16, 64, 256, 1024, 4096]
    test = task.sample(_rng(args, R.THEORY_ABLATE, R.THEORY_TEST, N), args.n_prompts, N, args.n_queries)
    s2 = task.sample(_rng(args, R.THEORY_ABLATE, R.THEORY_STAGE2_PROMPTS, N), args.stage2_prompts, N, args.n_queries)
    h_test = context_statistic(test.x_context, test.y_context, cfg.gate, cfg.rho, cfg.b0, cfg.backend)
    target, m2 = test.y_query_clean, task.link.second_moment
    rows = []
    clock = Clock()

    _, _, e_zero = normalized_error(np.zeros_like(target), target, m2)

    def add(label, T1, model, extra=""):
        pred = np.zeros_like(target) if model is None else model.predict(test, h=h_test)
        e, se, ep = normalized_error(pred, target, m2)
        dz, dzse = paired_difference(ep, e_zero)
        rows.append(dict(variant=label, stage1_prompts=T1, link=link.name, d=d, r=args.r, N=N, error=e,
                         stderr=se, n_prompts=args.n_prompts, seed=args.seed, diff_vs_zero=dz,
                         diff_vs_zero_se=dzse, note=extra))

    add("zero_predictor", 0, None)

    with tqdm(total=len(counts) * 3 + 2, desc="ablate pretraining", disable=args.no_progress) as bar:
        for T1 in counts:
            for rep in range(3):  # Stage I is one noisy gradient: average over 3 draws
                gamma, v, info = stage1(task, replace(cfg, stage1_prompts=T1), _rng(args, R.THEORY_ABLATE, R.THEORY_STAGE1_PROMPTS, T1, rep))
                model = stage2(task, cfg, gamma, v, N, _rng(args, R.THEORY_ABLATE, R.THEORY_STAGE2_MLP, T1, rep), prompts=s2)
                add("stage1", T1, model, f"rep={rep};mass={info['gamma_mass_on_subspace']:.3f}")
                bar.update(1)
        v = _rng(args, R.THEORY_ABLATE, R.THEORY_ABLATE_INDICATOR_V).choice([-1.0, 1.0], size=cfg.width)
        add("subspace_indicator_gamma", 0, stage2(task, cfg, ideal_gamma(task), v, N, _rng(args, R.THEORY_ABLATE, R.THEORY_ABLATE_INDICATOR_STAGE2), prompts=s2))
        bar.update(1)
        steps = 100 if args.quick else 300
        model = practical(task, cfg, N=N, rng=_rng(args, R.THEORY_ABLATE, R.THEORY_ABLATE_PRACTICAL), steps=steps, lr=1e-2, batch=32)
        add("practical_adamw", steps * 32, model, f"AdamW on gamma and MLP, {steps} steps x 32 prompts, "
            f"final train loss {np.mean(model.info['losses'][-20:]):.3f}")
        bar.update(1)
    cols = ["variant", "stage1_prompts", "link", "d", "r", "N", "error", "stderr", "n_prompts", "seed",
            "diff_vs_zero", "diff_vs_zero_se", "note"]
    write_csv(os.path.join(args.out, "ablate_pretraining.csv"), rows, cols)
    _plot_pretraining(rows, os.path.join(args.out, "ablate_pretraining.png"), link.name, d, N)
    md = [f"# Pretraining ablation ({link.name}, d = {d}, r = {args.r}, N = {N}, normalized gate, "
          f"{args.n_prompts} test prompts; {clock.summary()})", "",
          "| variant | Stage I prompts | error ± s.e. | error - zero predictor's (paired) | note |",
          "|---|---|---|---|---|"]
    md += [f"| {r['variant']} | {r['stage1_prompts']} | {r['error']:.3f} ± {r['stderr']:.3f} | "
           f"{r['diff_vs_zero']:+.3f} ± {r['diff_vs_zero_se']:.3f} | {r['note']} |" for r in rows]
    atomic_write(os.path.join(args.out, "ablate_pretraining.md"), "\n".join(md) + "\n")
    return rows


def _plot_pretraining(rows, path, link, d, N):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # every row is scored on the same test prompts: divide by the zero predictor's error on them
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    st = [r for r in rows if r["variant"] == "stage1"]
    Ts = sorted({r["stage1_prompts"] for r in st})
    rel = {id(r): relative_to_zero(r) for r in rows}
    mean = [np.mean([rel[id(r)][0] for r in st if r["stage1_prompts"] == T]) for T in Ts]
    ax.scatter([r["stage1_prompts"] for r in st], [rel[id(r)][0] for r in st], color="C0", s=12, alpha=0.6,
               label="Stage I gamma (3 draws each)")
    ax.plot(Ts, mean, color="C0")
    for r, color in zip([r for r in rows if r["variant"] != "stage1"], ("k", "C2", "C3")):
        R, se = rel[id(r)]
        ax.axhline(R, color=color, ls="--", label=f"{r['variant']} ({R:.2f} ± {se:.2f})")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("number of Stage I prompts T1")
    ax.set_ylabel("test error / zero predictor's error\n(same prompts)")
    ax.set_title(f"{link}, d = {d}, N = {N}: how much pretraining finds the subspace", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="lower left", bbox_to_anchor=(0.0, 0.07))
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


# rng key of each gate's Stage I / Stage II draws: the main run's gate order (product, normalized, none)
GATE_KEY = {"product": 0, "normalized": 1, "none": 2}
SWEEP_GATES = ("product", "normalized")
SWEEP_COLUMNS = ["split", "role", "gate", "rho", "b0", "link", "d", "r", "N", "error", "stderr", "n_prompts", "seed",
                 "diff_vs_zero", "diff_vs_zero_se", "ratio_to_zero", "ratio_to_zero_se", "diff_vs_normalized",
                 "diff_vs_normalized_se", "diff_vs_none", "diff_vs_none_se", "gamma_mass_on_subspace", "selected",
                 "note"]


def sweep_prompts(args, task, link_id, N):
    """Stage II, validation and test prompts of one (link, d, N) cell of the gate sweep.

    Three separate seeded streams (rng.py): Stage II's and the test prompts are the main run's
    (THEORY_STAGE2_PROMPTS and THEORY_TEST, so the test prompts are those of metrics.csv when
    --n-prompts is the same), the validation prompts come from THEORY_VALIDATION, which nothing
    else in icl-theory draws from. Only the validation prompts choose (rho, b0); the test
    prompts score the choice once.
    """
    key = (link_id, task.d, task.r)
    s2 = task.sample(_rng(args, *key, R.THEORY_STAGE2_PROMPTS, N), args.stage2_prompts, N, args.n_queries)
    val = task.sample(_rng(args, *key, R.THEORY_VALIDATION, N), args.val_prompts, N, args.n_queries)
    test = task.sample(_rng(args, *key, R.THEORY_TEST, N), args.n_prompts, N, args.n_queries)
    return s2, val, test


def select_on_validation(rows):
    """{gate: the row of least validation error} among rows of split "validation"; rows of
    any other split are refused, so a test error can never take part in the choice."""
    best = {}
    for r in rows:
        if r["split"] != "validation":
            raise ValueError(f"select_on_validation got a {r['split']!r} row; only validation rows may choose")
        if r["gate"] not in best or r["error"] < best[r["gate"]]["error"]:
            best[r["gate"]] = r
    return best


def _score(args, task, cell, model, prompts, h, e_zero, **extra):
    """A sweep row for ``model`` on ``prompts`` (error, paired difference and ratio to the zero
    predictor on the same prompts) and its per-prompt errors."""
    target, m2 = prompts.y_query_clean, task.link.second_moment
    e, se, ep = normalized_error(model.predict(prompts, h=h), target, m2)
    dz, dzse = paired_difference(ep, e_zero)
    row = dict(cell, error=e, stderr=se, n_prompts=len(ep), diff_vs_zero=dz, diff_vs_zero_se=dzse, **extra)
    row["ratio_to_zero"], row["ratio_to_zero_se"] = relative_to_zero(row)
    return row, ep


def run_product_gate_sweep(args):
    """The exact S6 (product) gate given a fair chance: (rho, b0) swept, chosen on validation.

    For each link and d: Stage I on the main run's Stage I prompts for every (gate, rho, b0)
    of the grid (product and normalized gates; linear attention has no gate to tune), then
    for each N Stage II and the error on the validation prompts. Per (link, d, N) and gate the
    (rho, b0) of least validation error is selected (:func:`select_on_validation`), and only
    then are the test prompts touched: the selected product gate, the normalized gate at the
    main run's (--rho, --b0), the selected normalized gate, linear attention and the zero
    predictor, all on the same test prompts, with paired differences.

    The grid's statistics use the product gate's closed-form weights (equal to the scan's
    output to rounding, tests/test_icl_gated.py); the selected product gate's test statistic
    is computed by the package's selective scan, and the largest relative difference between
    the two on the test prompts is recorded in its row's note.
    """
    os.makedirs(args.out, exist_ok=True)
    clock = Clock()
    grid = [(g, rho, b0) for g in SWEEP_GATES for rho in args.sweep_rhos for b0 in args.sweep_b0s]
    grid.append(("none", args.rho, args.b0))
    if ("normalized", args.rho, args.b0) not in grid:
        grid.append(("normalized", args.rho, args.b0))
    rows = []
    path = os.path.join(args.out, "product_gate_sweep.csv")
    with tqdm(total=len(args.links) * len(args.d) * (len(grid) + len(args.N)), desc="product-gate sweep",
              disable=args.no_progress) as bar:
        for li, link in enumerate(args.links):
            for d in args.d:
                task = SingleIndexTask(d, args.r, link, args.tau, args.seed)
                key = (li, d, args.r)
                s1 = task.sample(_rng(args, *key, R.THEORY_STAGE1_PROMPTS), args.stage1_prompts, args.stage1_N, args.n_queries)
                cells = {N: sweep_prompts(args, task, li, N) for N in args.N}
                zero_val = {N: normalized_error(np.zeros_like(c[1].y_query_clean), c[1].y_query_clean,
                                                task.link.second_moment)[2] for N, c in cells.items()}
                models = {}
                for gate, rho, b0 in grid:
                    def stat(pr, gate=gate, rho=rho, b0=b0):
                        return context_statistics(pr.x_context, pr.y_context, [gate], rho, b0, args.backend,
                                                  product="closed")[gate]
                    cfg = replace(pretrain_config(args, gate), rho=rho, b0=b0)
                    gamma, v, inf = stage1(task, cfg, _rng(args, *key, R.THEORY_STAGE1_MLP, GATE_KEY[gate]), prompts=s1, h=stat(s1))
                    for N, (s2, val, _) in cells.items():
                        model = stage2(task, cfg, gamma, v, N, _rng(args, *key, R.THEORY_STAGE2_MLP, N, GATE_KEY[gate]), prompts=s2,
                                       h=stat(s2))
                        models[(gate, rho, b0, N)] = model
                        cell = dict(split="validation", role="grid", gate=gate, rho=rho, b0=b0, link=link.name, d=d,
                                    r=args.r, N=N, seed=args.seed)
                        row, _ = _score(args, task, cell, model, val, stat(val), zero_val[N],
                                        gamma_mass_on_subspace=inf["gamma_mass_on_subspace"],
                                        note=f"ridge={model.info['ridge']:g}")
                        rows.append(row)
                    bar.update(1)
                for N, (_, _, test) in cells.items():
                    val_rows = [r for r in rows if r["split"] == "validation" and r["link"] == link.name
                                and r["d"] == d and r["N"] == N]
                    best = select_on_validation(val_rows)
                    for r in val_rows:
                        r["selected"] = int(r is best.get(r["gate"]))
                    target = test.y_query_clean
                    e_zero = normalized_error(np.zeros_like(target), target, task.link.second_moment)[2]
                    roles = [("product_best", best["product"]), ("normalized_default", None),
                             ("normalized_best", best["normalized"]), ("none", best["none"])]
                    test_rows, eps = [], {}
                    for role, vrow in roles:
                        gate, rho, b0 = (("normalized", args.rho, args.b0) if vrow is None
                                         else (vrow["gate"], vrow["rho"], vrow["b0"]))
                        h = context_statistic(test.x_context, test.y_context, gate, rho, b0, args.backend)  # scan
                        note = ""
                        if gate == "product":
                            hc = context_statistics(test.x_context, test.y_context, [gate], rho, b0, args.backend,
                                                    product="closed")[gate]
                            dev = float(np.max(np.abs(h - hc)) / max(np.max(np.abs(hc)), 1e-300))
                            note = f"test statistic by the selective scan; max |scan - closed form| / max |closed form| = {dev:.1e}"
                        cell = dict(split="test", role=role, gate=gate, rho=rho, b0=b0, link=link.name, d=d, r=args.r,
                                    N=N, seed=args.seed)
                        row, eps[role] = _score(args, task, cell, models[(gate, rho, b0, N)], test, h, e_zero,
                                                note=note)
                        test_rows.append(row)
                    for row in test_rows:
                        for ref, col in (("normalized_default", "diff_vs_normalized"), ("none", "diff_vs_none")):
                            row[col], row[col + "_se"] = paired_difference(eps[row["role"]], eps[ref])
                    zrow = dict(split="test", role="zero", gate="", rho="", b0="", link=link.name, d=d, r=args.r, N=N,
                                seed=args.seed, error=float(e_zero.mean()),
                                stderr=float(e_zero.std(ddof=1) / math.sqrt(e_zero.size)), n_prompts=e_zero.size,
                                diff_vs_zero=0.0, diff_vs_zero_se=0.0, ratio_to_zero=1.0, ratio_to_zero_se=0.0)
                    rows += test_rows + [zrow]
                    bar.update(1)
                write_csv(path, rows, SWEEP_COLUMNS)
    write_csv(path, rows, SWEEP_COLUMNS)
    plot_product_gate_sweep(rows, os.path.join(args.out, "product_gate_sweep.png"))
    atomic_write(os.path.join(args.out, "product_gate_sweep.md"), product_gate_sweep_md(rows, args, clock.summary()))
    return rows


def read_sweep_rows(path):
    """product_gate_sweep.csv back as rows, numbers as numbers (empty cells stay "")."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k, v in r.items():
            if k in ("split", "role", "gate", "link", "note") or v == "":
                continue
            r[k] = int(v) if k in ("d", "r", "N", "n_prompts", "seed", "selected") else float(v)
    return rows


def product_gate_sweep_md(rows, args, timing):
    """The sweep as markdown: per (link, d, N) the validation grid and the test comparison."""
    out = [f"# Product (exact S6) gate vs normalized gate, (rho, b0) chosen on validation prompts "
           f"(seed {args.seed}, r = {args.r}; {timing})", "",
           f"Stage I {args.stage1_prompts} prompts of length {args.stage1_N}; Stage II {args.stage2_prompts} prompts; "
           f"{args.val_prompts} validation and {args.n_prompts} test prompts x {args.n_queries} queries, separate "
           "streams. b = b0 - log N. Entries are error / zero predictor's error on the same prompts (± s.e.).", ""]
    for cell in dict.fromkeys((r["link"], r["d"], r["N"]) for r in rows):
        val = [r for r in rows if (r["link"], r["d"], r["N"]) == cell and r["split"] == "validation"]
        test = [r for r in rows if (r["link"], r["d"], r["N"]) == cell and r["split"] == "test"]
        b0s = sorted({r["b0"] for r in val if r["gate"] != "none"})
        out += [f"## {cell[0]}, d = {cell[1]}, N = {cell[2]}", "", "Validation (chooses):", "",
                "| gate | rho | " + " | ".join(f"b0 = {b:g}" for b in b0s) + " |", "|---|---|" + "---|" * len(b0s)]
        for gate in SWEEP_GATES:
            for rho in sorted({r["rho"] for r in val if r["gate"] == gate}):
                by = {r["b0"]: r for r in val if r["gate"] == gate and r["rho"] == rho}
                out.append(f"| {gate} | {rho:g} | " + " | ".join(
                    (f"**{by[b]['ratio_to_zero']:.3f}**" if by[b].get("selected") else f"{by[b]['ratio_to_zero']:.3f}")
                    if b in by else "—" for b in b0s) + " |")
        none = [r for r in val if r["gate"] == "none"]
        if none:
            out.append(f"| none (linear attention) | – | {none[0]['ratio_to_zero']:.3f} |" + " |" * (len(b0s) - 1))
        out += ["", "Test (scored once, after the choice; paired on the same prompts):", "",
                "| role | gate | rho | b0 | error | error / zero's | minus normalized (0.25, 0) | minus linear attention |",
                "|---|---|---|---|---|---|---|---|"]
        for r in test:
            if r["role"] == "zero":
                out.append(f"| zero predictor | | | | {r['error']:.3f} ± {r['stderr']:.3f} | 1 | | |")
                continue
            out.append(f"| {r['role']} | {r['gate']} | {r['rho']:g} | {r['b0']:g} | {r['error']:.3f} ± {r['stderr']:.3f} | "
                       f"{r['ratio_to_zero']:.3f} ± {r['ratio_to_zero_se']:.3f} | "
                       f"{r['diff_vs_normalized']:+.3f} ± {r['diff_vs_normalized_se']:.3f} | "
                       f"{r['diff_vs_none']:+.3f} ± {r['diff_vs_none_se']:.3f} |")
        out.append("")
    return "\n".join(out) + "\n"


def plot_product_gate_sweep(rows, path):
    """Validation error / zero's vs rho, one line per (gate, b0), per link (columns) and d (rows),
    at the largest N; the selected gates' test ratios written below each panel."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    N = max(r["N"] for r in rows)
    links = list(dict.fromkeys(r["link"] for r in rows))
    ds = list(dict.fromkeys(r["d"] for r in rows))
    fig, axes = plt.subplots(len(ds), len(links), figsize=(max(9.0, 4.8 * len(links)), 4.9 * len(ds) + 1.4),
                             squeeze=False)
    b0s = sorted({r["b0"] for r in rows if r["split"] == "validation" and r["gate"] != "none"})
    colors = {b: f"C{k}" for k, b in enumerate(b0s)}
    for i, d in enumerate(ds):
        for j, link in enumerate(links):
            ax = axes[i, j]
            val = [r for r in rows if r["split"] == "validation" and r["link"] == link and r["d"] == d and r["N"] == N]
            for gate, ls, mk in (("product", "-", "v"), ("normalized", "--", "o")):
                for b in b0s:
                    pts = sorted((r for r in val if r["gate"] == gate and r["b0"] == b), key=lambda r: r["rho"])
                    if pts:
                        ax.plot([r["rho"] for r in pts], [r["ratio_to_zero"] for r in pts], ls=ls, marker=mk, ms=4,
                                color=colors[b], label=f"{gate}, b0 = {b:g}")
                sel = [r for r in val if r["gate"] == gate and r.get("selected")]
                for r in sel:
                    ax.plot(r["rho"], r["ratio_to_zero"], marker="*", ms=16, mfc="none", mec="k", mew=1.3,
                            ls="none", label="selected on validation" if gate == "product" else None)
            for r in val:
                if r["gate"] == "none":
                    ax.axhline(r["ratio_to_zero"], color="C7", ls="-.", lw=1.2, label="linear attention")
            ax.axhline(1.0, color="k", ls=":", lw=1, label="zero predictor")
            test = {r["role"]: r for r in rows if r["split"] == "test" and r["link"] == link and r["d"] == d
                    and r["N"] == N}
            if test:
                txt = "\n".join(f"{lab}: {test[k]['ratio_to_zero']:.3f} ± {test[k]['ratio_to_zero_se']:.3f}"
                                for k, lab in (("product_best", f"product (rho {test['product_best']['rho']:g}, "
                                                                f"b0 {test['product_best']['b0']:g})"),
                                               ("normalized_default", "normalized (0.25, 0)"),
                                               ("normalized_best", f"normalized (rho {test['normalized_best']['rho']:g}, "
                                                                   f"b0 {test['normalized_best']['b0']:g})"),
                                               ("none", "linear attention")) if k in test)
            else:
                txt = ""
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"{link}, d = {d}, N = {N}", fontsize=9)
            ax.grid(True, which="both", alpha=0.3)
            plain = matplotlib.ticker.FuncFormatter(lambda y, _: f"{y:.3g}")
            ax.yaxis.set_major_formatter(plain)
            ax.yaxis.set_minor_formatter(plain)
            ax.tick_params(axis="y", which="both", labelsize=7)
            ax.set_xlabel("gate temperature rho" + (f"\n\nchosen gates on the test prompts, error / zero's:\n{txt}"
                                                    if txt else ""), fontsize=8)
            if j == 0:
                ax.set_ylabel("validation error / zero predictor's\n(same validation prompts)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    uniq = dict(zip(labels, handles))
    fig.legend(uniq.values(), uniq.keys(), loc="lower center", ncol=4, fontsize=7)
    fig.suptitle("Product (exact S6, solid) and normalized (dashed) gates over (rho, b0), b = b0 - log N:\n"
                 "validation error (chooses rho, b0); the chosen gates' test errors below each panel", fontsize=9)
    legend_in = 0.22 * math.ceil(len(uniq) / 4) + 0.3
    fig.tight_layout(rect=(0, legend_in / fig.get_size_inches()[1], 1, 1 - 0.5 / fig.get_size_inches()[1]))
    save_figure(fig, path)
    plt.close(fig)


def needed_N(Ns, errors, threshold, stderrs=None, z=3.0):
    """Smallest N at which the error falls below threshold, interpolated log-log between grid
    points; None when it never does on the grid.

    With ``stderrs`` a crossing counts only when it is resolved: the first grid point below
    the threshold lies at least ``z`` standard errors below it and the point before it (if
    any) at least ``z`` above. Otherwise the curve merely wanders across the threshold in
    its noise, and None is returned.
    """
    for i, (N, e) in enumerate(zip(Ns, errors)):
        if e < threshold:
            if stderrs is not None and (e + z * stderrs[i] >= threshold
                                        or (i > 0 and errors[i - 1] - z * stderrs[i - 1] <= threshold)):
                return None
            if i == 0:
                return float(N)
            N0, e0 = Ns[i - 1], errors[i - 1]
            t = (math.log(e0) - math.log(threshold)) / (math.log(e0) - math.log(e))
            return float(math.exp(math.log(N0) + t * (math.log(N) - math.log(N0))))
    return None


def run_sweep(args):
    """N needed for error < threshold as r (d = 32) or d (r = 4) varies."""
    os.makedirs(args.out, exist_ok=True)
    values = [2, 4, 8, 16] if args.sweep == "r" else [8, 16, 32, 64]
    if args.quick:
        values = values[:2]
    link = args.links[0]
    gate = "normalized"
    rows, need = [], []
    t0 = time.time()
    with tqdm(total=len(values) * (2 + 2 * len(args.N)), desc=f"sweep {args.sweep}", disable=args.no_progress) as bar:
        for vi, val in enumerate(values):
            d, r = (32, val) if args.sweep == "r" else (val, 4)
            task = SingleIndexTask(d, r, link, args.tau, args.seed)
            sub_args = argparse.Namespace(**{**vars(args), "r": r})
            cell, _ = run_cell(sub_args, task, R.THEORY_SWEEP_LINK0 + vi, [gate], bar, krr=True)
            rows += cell
    write_csv(os.path.join(args.out, f"sweep_{args.sweep}_metrics.csv"), rows)
    return write_sweep(rows, args.sweep, args.out, link.name, args.threshold, f"{time.time() - t0:.0f} s")


def write_sweep(rows, sweep, out, link, threshold, elapsed):
    """sweep_<r|d>.csv / .md / .png / _curves.png from the sweep's metrics rows.

    "N needed" is the N at which the error over the zero predictor's on the same prompts falls
    below ``threshold``, interpolated only at resolved crossings (see :func:`needed_N`, 3
    paired s.e.), and a slope is fitted only through two or more of them. (The absolute error
    was used before; on 8 KRR prompts the zero predictor's own error wanders across 0.5.)
    """
    need = []
    for key in (("one_layer", "normalized"), ("krr_full", ""), ("krr_intrinsic", "")):
        for val in sorted({r[sweep] for r in rows}):
            pts = sorted((p for p in rows if (p["method"], p["gate"]) == key and p[sweep] == val),
                         key=lambda p: p["N"])
            if not pts:
                continue
            rel = [relative_to_zero(p) for p in pts]  # paired with the zero predictor: far less noisy
            errors, ses = [x for x, _ in rel], [se for _, se in rel]
            Nstar = needed_N([p["N"] for p in pts], errors, threshold, ses)
            crossed = needed_N([p["N"] for p in pts], errors, threshold) is not None
            need.append(dict(method=key[0], gate=key[1], d=pts[0]["d"], r=pts[0]["r"], N_needed=Nstar,
                             max_N_tried=pts[-1]["N"], unresolved=crossed and Nstar is None))
    cols = ["method", "gate", "d", "r", "N_needed", "max_N_tried", "unresolved"]
    write_csv(os.path.join(out, f"sweep_{sweep}.csv"),
              [dict(n, N_needed="" if n["N_needed"] is None else n["N_needed"]) for n in need], cols)
    slopes = _plot_sweep(need, sweep, os.path.join(out, f"sweep_{sweep}.png"), link, threshold)
    plot_sweep_curves(rows, sweep, os.path.join(out, f"sweep_{sweep}_curves.png"), link)
    md = [f"# Sample-complexity sweep over {sweep} ({link}, error / zero predictor's error on the same "
          f"prompts < {threshold}; {elapsed})", "",
          "A crossing counts only where the first point below the threshold is >= 3 paired s.e. below it and "
          "the point before >= 3 s.e. above it; \"unresolved\" marks curves that cross within their noise.",
          "", f"| method | {sweep} | N needed |", "|---|---|---|"]
    for n in need:
        val = n["r"] if sweep == "r" else n["d"]
        shown = (f"{n['N_needed']:.0f}" if n["N_needed"] else
                 "unresolved (crosses within 3 s.e.)" if n["unresolved"] else f"> {n['max_N_tried']} (not reached)")
        md.append(f"| {LABELS[(n['method'], n['gate'])]} | {val} | {shown} |")
    md += ["", f"Fitted log-log slopes d log N / d log {sweep} (only through two or more resolved crossings): " +
           ", ".join(f"{LABELS[k]} {s:.2f}" if s is not None else f"{LABELS[k]} none" for k, s in slopes.items())]
    atomic_write(os.path.join(out, f"sweep_{sweep}.md"), "\n".join(md) + "\n")
    return need, slopes


def replot(args):
    """Redraw from the CSVs in --out: error_vs_N.png from metrics.csv, and the sweep files from
    sweep_<r|d>_metrics.csv (the wall time is carried over from the old sweep_<r|d>.md)."""
    import re
    done = []
    path = os.path.join(args.out, "metrics.csv")
    if os.path.exists(path):
        plot_error_vs_N(read_metrics(path), args, os.path.join(args.out, "error_vs_N.png"))
        done.append("error_vs_N.png")
    for sweep in ("r", "d"):
        path = os.path.join(args.out, f"sweep_{sweep}_metrics.csv")
        if not os.path.exists(path):
            continue
        rows = read_metrics(path)
        old = os.path.join(args.out, f"sweep_{sweep}.md")
        m = re.search(r"; (?:sweep run )?(\d+ s)", open(old).readline()) if os.path.exists(old) else None
        elapsed = f"sweep run {m.group(1)}, redrawn by --replot" if m else "redrawn by --replot"
        write_sweep(rows, sweep, args.out, rows[0]["link"], args.threshold, elapsed)
        done.append(f"sweep_{sweep}.*")
    path = os.path.join(args.out, "product_gate_sweep.csv")
    if os.path.exists(path):
        plot_product_gate_sweep(read_sweep_rows(path), os.path.join(args.out, "product_gate_sweep.png"))
        done.append("product_gate_sweep.png")
    if not done:
        raise ValueError(f"--replot found no metrics.csv, sweep_<r|d>_metrics.csv or product_gate_sweep.csv "
                         f"in --out {args.out!r}")
    return done


def _plot_sweep(need, sweep, path, link, threshold):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    slopes = {}
    for key in dict.fromkeys((n["method"], n["gate"]) for n in need):
        pts = [(n[sweep], n["N_needed"]) for n in need if (n["method"], n["gate"]) == key and n["N_needed"]]
        color, marker, _ = STYLE[key]
        slope = None
        if len(pts) >= 2:  # only resolved crossings carry an N_needed
            x, y = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
            slope = float(np.polyfit(x, y, 1)[0])
        slopes[key] = slope
        if pts:
            ax.plot(*zip(*pts), color=color, marker=marker,
                    label=LABELS[key] + (f" (slope {slope:.2f})" if slope is not None else ""))
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xlabel(sweep)
    ax.set_ylabel(f"N needed for error / zero's < {threshold}")
    ax.set_title(f"{link}: sample complexity vs {sweep}\n(missing points: not reached, or crossed within "
                 "3 s.e.; see the .md)", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no method crosses the threshold by >= 3 s.e.", ha="center", transform=ax.transAxes)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return slopes


def plot_sweep_curves(rows, sweep, path, link):
    """Error relative to the zero predictor on the same prompts vs N, one line per swept value.

    The threshold plot reads one noisy number per curve; this shows the whole curve. Dividing
    by the zero predictor's error on the same prompts removes most of the scatter that the
    heavy-tailed He3/He4 targets put into the absolute error. Works on rows read back from
    sweep_<r|d>_metrics.csv too (only error and diff_vs_zero are used).
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [("one_layer", "normalized"), ("krr_full", ""), ("krr_intrinsic", "")]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8), sharey=True)
    values = sorted({int(r[sweep]) for r in rows})
    cmap = plt.get_cmap("viridis")
    for ax, key in zip(axes, keys):
        for k, val in enumerate(values):
            pts = sorted((r for r in rows if (r["method"], r["gate"]) == key and int(r[sweep]) == val),
                         key=lambda r: int(r["N"]))
            if not pts:
                continue
            rel = [float(r["error"]) / (float(r["error"]) - float(r["diff_vs_zero"])) for r in pts]
            ax.plot([int(r["N"]) for r in pts], rel, marker="o", ms=3,
                    color=cmap(k / max(1, len(values) - 1)), label=f"{sweep} = {val}")
        ax.axhline(1.0, color="k", ls=":", lw=1)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(LABELS[key], fontsize=9)
        ax.set_xlabel("context length N")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("error / zero predictor's error\n(same prompts)")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{link}: error relative to the zero predictor as {sweep} varies "
                 f"({'d = 32' if sweep == 'r' else 'r = 4'}; dotted line = no learning)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


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
