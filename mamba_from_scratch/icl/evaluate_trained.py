"""In-context error vs N of trained checkpoints, against KRR, the context-free optimum, the
zero predictor and the oracle, all on the same test prompts.

    python -m mamba_from_scratch icl-eval --checkpoint runs/a/ckpt.npz,runs/b/ckpt.npz \\
        --d 16,32 --out results/icl_trained

Checkpoints are grouped by the task they were trained on (link, d, r, tau, task seed); each
group gets its own test prompts (seeded by ``--seed``, a stream that neither training nor
its validation uses), with Q queries per prompt sharing the context. At each N of the grid
every method predicts every query from the prompt's first N context examples:
    <model>          the trained network (label: its --model, or --labels)
    krr_full         kernel ridge regression on the N examples, full x in R^d
    krr_intrinsic    the same on the r hidden coordinates (knows the subspace)
    context_free     E[g(<beta, x>) | x]: the best prediction that ignores the examples
    zero             predicts 0 (error about 1 by the normalisation)
    oracle           knows beta and g (error 0 against the noiseless target)
Errors are normalised by E[g^2] with standard errors over prompts (metrics.py). Paired
differences between a trained model and each baseline, per prompt on the same prompts, go
to ``paired.csv``: that is how "below the context-free optimum by more than 5 standard
errors" is measured.

``--freeze-selection`` adds, for every Mamba-family checkpoint, the same model with its
selection frozen (models/mamba_ablations.FrozenSelection: Δ_t, B_t, C_t replaced by their
means over each prompt), labelled ``<label>-frozen`` and evaluated on the same prompts, so
its paired difference to the model is in paired.csv.

Errors relative to the zero predictor on the same prompts, and the N at which each method
first reaches half of it with a bootstrap interval (icl/sample_complexity.py), go to
over_zero.csv, half_zero.csv, table.md and error_over_zero_vs_N.png.

Writes metrics.csv, paired.csv, over_zero.csv, half_zero.csv, table.md, error_vs_N.png,
error_over_zero_vs_N.png, training_curves.png (each checkpoint's validation log) and
config.json to --out.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os

import matplotlib
import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
from tqdm import tqdm

from ..checkpoint import load_checkpoint
from ..files import parse_list, write_csv
from ..models.mamba import MambaConfig
from ..models.mamba_ablations import FrozenSelection
from ..rng import EVAL_TEST, stream
from ..runtime import tune_process
from ..scan import resolve_backend
from ..validate import check_output_dir, check_positive_int
from .baselines import BASELINES, baseline_predict
from .metrics import normalized_error, paired_difference
from .prompts import query_examples
from .sample_complexity import format_half, half_zero_N, ratio_to_zero
from .task import SingleIndexTask
from .train import TrainConfig, context_free_errors, gap_window, make_task, predict, validation_curve, validation_set

TASK_KEYS = ("link", "d", "r", "tau", "task_seed")


def predict_queries(params, cfg, prompts, n, encoding="paired", backend="numba"):
    """A trained model's prediction for every query from the first n context examples.

    Returns:
        (P, Q) predictions.
    """
    P, Q, _ = prompts.x_query.shape
    x, y = query_examples(prompts, n)                                  # (P Q, n + 1, d), (P Q, n)
    return predict(params, cfg, x, y, encoding, backend)[:, -1].reshape(P, Q)


def evaluate_group(models, task, N_grid, n_prompts, n_queries, seed, backend=None, progress=True,
                   per_prompt_out=None):
    """Every method at every N on one task's test prompts.

    Args:
        models: list of (label, params, cfg, train_config dict).
        task: the SingleIndexTask they were trained on.
        per_prompt_out: a dict to receive every method's per-prompt errors, keyed (method, N),
            or None.
    Returns:
        rows (list of dicts for metrics.csv), paired (list of dicts for paired.csv).
    """
    prompts = task.sample(stream(seed, EVAL_TEST, task.d), n_prompts, max(N_grid), n_queries)
    clean, m2 = prompts.y_query_clean, task.link.second_moment
    rows, paired = [], []
    methods = [label for label, *_ in models] + list(BASELINES)
    bar = tqdm(total=len(N_grid) * len(methods), desc=f"{task.link.name} d={task.d}", disable=not progress)
    for n in N_grid:
        per_prompt = {}
        for label, params, cfg, tc in models:
            pred = predict_queries(params, cfg, prompts, n, tc["encoding"], backend or tc["backend"])
            per_prompt[label] = normalized_error(pred, clean, m2)
            bar.update(1)
        for method in BASELINES:
            per_prompt[method] = normalized_error(baseline_predict(method, task, prompts, n), clean, m2)
            bar.update(1)
        for method in methods:
            err, se, e = per_prompt[method]
            if per_prompt_out is not None:
                per_prompt_out[method, n] = e
            rows.append({"method": method, "link": task.link.name, "d": task.d, "r": task.r, "N": n,
                         "error": err, "stderr": se, "n_prompts": n_prompts, "n_queries": n_queries, "seed": seed})
        for label, *_ in models:
            for other in methods:
                if other in (label, "oracle"):
                    continue
                diff, se = paired_difference(per_prompt[label][2], per_prompt[other][2])
                paired.append({"model": label, "versus": other, "link": task.link.name, "d": task.d, "N": n,
                               "diff": diff, "stderr": se, "z": diff / se if se > 0 else float("nan")})
    bar.close()
    return rows, paired


def plot(rows, path, ylabel="test error (zero predictor = 1)",
         title="In-context error vs number of examples N"):
    """One panel per (link, d): error vs N for every method, with error bars."""
    groups = sorted({(r["link"], r["d"]) for r in rows})
    links = sorted({g[0] for g in groups})
    ds = sorted({g[1] for g in groups})
    fig, axes = plt.subplots(len(links), len(ds), figsize=(5.2 * len(ds), 3.9 * len(links)), squeeze=False,
                             sharey=True)
    style = {"krr_full": ("tab:gray", "s", "KRR on full x"), "krr_intrinsic": ("k", "D", "KRR on hidden coords"),
             "context_free": ("tab:red", None, "context-free optimum"), "zero": ("tab:brown", None, "zero predictor")}
    # distinct colours and line styles: two models that learned the same function overlap exactly
    # (five hand-picked styles, then every other colour x line style, repeating past those)
    first = [("tab:blue", "o", "-"), ("tab:orange", "^", ":"), ("tab:green", "v", "-."),
             ("tab:purple", "P", "--"), ("tab:cyan", "X", "-")]
    more = [(c, m, ls) for ls in ("--", ":", "-.", "-") for c, m in
            (("tab:blue", "o"), ("tab:orange", "^"), ("tab:green", "v"), ("tab:purple", "P"), ("tab:cyan", "X"),
             ("tab:olive", "*"), ("tab:pink", "h"))]
    model_styles = itertools.cycle(first + [s for s in more if s not in first])
    colors = {}
    for i, link in enumerate(links):
        for j, d in enumerate(ds):
            ax = axes[i, j]
            sel = [r for r in rows if r["link"] == link and r["d"] == d]
            for method in dict.fromkeys(r["method"] for r in sel):
                if method == "oracle":
                    continue
                pts = sorted((r for r in sel if r["method"] == method and r["N"] > 0), key=lambda r: r["N"])
                N = [r["N"] for r in pts]
                err = np.array([r["error"] for r in pts])
                se = np.array([r["stderr"] for r in pts])
                if method in ("context_free", "zero"):
                    color, _, label = style[method]
                    ax.axhline(err.mean(), color=color, ls="--", lw=1.2, label=label)
                    continue
                if method in style:
                    (color, marker, label), ls = style[method], "-"
                else:
                    if method not in colors:  # one style per model across all panels
                        colors[method] = next(model_styles)
                    color, marker, ls = colors[method]
                    label = f"trained {method}"
                ax.errorbar(N, err, yerr=2 * se, color=color, marker=marker, ls=ls, ms=5, capsize=2, label=label)
            ax.set_xscale("log", base=2)
            ax.xaxis.set_major_formatter(matplotlib.ticker.StrMethodFormatter("{x:g}"))
            ax.set_title(f"{link}, d = {d}, r = {sel[0]['r']}")
            ax.set_xlabel("N (context examples)")
            if j == 0:
                ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    ncol = min(len(labels), 2 if len(ds) == 1 else 3 * len(ds))   # a one-panel figure: two columns fit
    fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=ncol)
    fig.suptitle(f"{title}\n(same test prompts for every method; bars: 2 standard errors)", fontsize=10)
    legend_rows = -(-len(labels) // ncol)
    fig.tight_layout(rect=(0, 0.05 * legend_rows / len(links) + 0.02, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_training_curves(members, path):
    """Validation error during training, one panel per (link, d), one line per checkpoint.

    Each point is the checkpoint's logged validation error averaged over the prefix lengths
    N/4..N (train.validation_curve, as icl-train prints it); the dashed line is the
    context-free optimum on the same validation prompts, rebuilt from the run's own config
    (validation_set is seeded).

    Args:
        members: list of (label, train_config dict, extra dict) of icl-train checkpoints.
    """
    links = sorted({tc["link"] for _, tc, _ in members})
    ds = sorted({tc["d"] for _, tc, _ in members})
    colors = {}
    for label, _, _ in members:
        colors.setdefault(label, f"C{len(colors)}")                      # one colour per label in every panel
    fig, axes = plt.subplots(len(links), len(ds), figsize=(5.2 * len(ds), 3.4 * len(links)), squeeze=False,
                             sharey=True)
    for (i, link), (j, d) in ((a, b) for a in enumerate(links) for b in enumerate(ds)):
        ax = axes[i, j]
        inside = [m for m in members if (m[1]["link"], m[1]["d"]) == (link, d)]
        for label, _, extra in inside:
            ax.plot(*validation_curve(extra), marker="o", ms=3, color=colors[label], label=label)
        if inside:
            config = TrainConfig(**inside[0][1])
            task = make_task(config)
            cf_err = context_free_errors(task, validation_set(config, task))[:, gap_window(config.N)].mean()
            ax.axhline(cf_err, color="tab:red", ls="--", lw=1.2, label="context-free optimum")
            ax.set_title(f"{link}, d = {d}, r = {config.r}", fontsize=10)
            ax.legend(fontsize=7)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("validation error, mean over N/4..N")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(rows, paired):
    """A markdown table: error +- stderr per method at every N >= 1 of the grid, and each
    model's paired margin over the context-free optimum and both KRRs, in standard errors."""
    lines = []
    for link, d in sorted({(r["link"], r["d"]) for r in rows}):
        sel = [r for r in rows if r["link"] == link and r["d"] == d]
        Ns = sorted({r["N"] for r in sel if r["N"] >= 1})
        lines += [f"### {link}, d = {d}", "", "| method | " + " | ".join(f"N = {n}" for n in Ns) + " |",
                  "|---" * (len(Ns) + 1) + "|"]
        for method in dict.fromkeys(r["method"] for r in sel):
            cells = [next(f"{r['error']:.3f} ± {r['stderr']:.3f}" for r in sel if r["method"] == method and r["N"] == n)
                     for n in Ns]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines.append("")
        for model in dict.fromkeys(p["model"] for p in paired if p["link"] == link and p["d"] == d):
            for other in ("context_free", "krr_full", "krr_intrinsic"):
                cells = []
                for n in Ns:
                    p = next(p for p in paired if (p["model"], p["versus"], p["link"], p["d"], p["N"]) ==
                             (model, other, link, d, n))
                    cells.append(f"{p['diff']:+.3f} ({p['z']:+.1f} SE)")
                lines.append(f"- {model} minus {other}: " + ", ".join(f"N = {n}: {c}" for n, c in zip(Ns, cells)))
        lines.append("")
    lines += d_gap_lines(rows)
    return "\n".join(lines)


def d_gap_lines(rows):
    """How much each method's error grows from the smallest to the largest d, per link and N.

    The d groups have their own test prompts, so the difference is unpaired: its standard
    error is sqrt(se_small^2 + se_large^2).
    """
    lines = []
    for link in sorted({r["link"] for r in rows}):
        ds = sorted({r["d"] for r in rows if r["link"] == link})
        if len(ds) < 2:
            continue
        lo, hi = ds[0], ds[-1]
        lines += [f"### {link}: error at d = {hi} minus error at d = {lo} (unpaired)", ""]
        for method in dict.fromkeys(r["method"] for r in rows if r["link"] == link):
            if method == "oracle":
                continue
            at = {(r["d"], r["N"]): r for r in rows if r["link"] == link and r["method"] == method}
            cells = [f"N = {n}: {at[hi, n]['error'] - at[lo, n]['error']:+.3f} ± "
                     f"{np.hypot(at[hi, n]['stderr'], at[lo, n]['stderr']):.3f}"
                     for n in sorted({n for d, n in at if d == lo and (hi, n) in at and n >= 1})]
            if cells:  # a model evaluated at one d only has no gap
                lines.append(f"- {method}: " + ", ".join(cells))
        lines.append("")
    return lines


def relative_to_zero(per_prompt, rows, n_boot=1000):
    """Every method's error over the zero predictor's at each N, and the N where it first
    reaches half of it, from one group's per-prompt errors (evaluate_group's per_prompt_out).

    Args:
        per_prompt: {(method, N): (P,) errors} of one (link, d) group.
        rows: that group's metrics rows (for link, d, r and the methods' order).
    Returns:
        over (rows with ratio, stderr), half (rows with N_half, kind, lo, hi, frac_reached).
    """
    over, half = [], []
    link, d, r = rows[0]["link"], rows[0]["d"], rows[0]["r"]
    Ns = sorted({n for _, n in per_prompt if n >= 1})
    for method in dict.fromkeys(row["method"] for row in rows):
        if method in ("oracle", "zero"):
            continue
        for n in Ns:
            ratio, se = ratio_to_zero(per_prompt[method, n], per_prompt["zero", n])
            over.append({"method": method, "link": link, "d": d, "r": r, "N": n, "error": ratio, "stderr": se})
        h = half_zero_N(Ns, [per_prompt[method, n] for n in Ns], [per_prompt["zero", n] for n in Ns], n_boot)
        half.append({"method": method, "link": link, "d": d, "N_max": Ns[-1], **h})
    return over, half


def half_zero_lines(half):
    """Markdown: per (link, d), each method's N at half the zero predictor's error."""
    lines = []
    for link, d in sorted({(h["link"], h["d"]) for h in half}):
        lines += [f"### {link}, d = {d}: N at which the error first reaches half the zero predictor's "
                  "(interpolated in log N; [16th, 84th] bootstrap percentiles over prompts)", ""]
        for h in half:
            if (h["link"], h["d"]) == (link, d):
                lines.append(f"- {h['method']}: " + format_half(h).replace("max N", str(h["N_max"])))
        lines.append("")
    return lines


def parse_ints(name, text):
    return [check_positive_int(name, v, minimum=0) for v in parse_list(text, int, name)]


def build_parser():
    p = argparse.ArgumentParser(prog="python -m mamba_from_scratch icl-eval",
                                description="In-context error vs N of trained checkpoints vs KRR and the "
                                            "context-free optimum, on shared test prompts.")
    p.add_argument("--checkpoint", required=True, help="comma-separated checkpoint paths (from icl-train)")
    p.add_argument("--labels", default=None, help="comma-separated labels, one per checkpoint (default: --model)")
    p.add_argument("--d", default=None, help="comma-separated d values to keep (default: all)")
    p.add_argument("--out", required=True)
    p.add_argument("--N", default="1,2,4,8,16,32,64", help="context lengths, capped at each model's trained N")
    p.add_argument("--n-prompts", type=int, default=256)
    p.add_argument("--queries", type=int, default=16, help="queries per prompt, sharing its context")
    p.add_argument("--seed", type=int, default=1000, help="test prompts' seed (training never uses this stream)")
    p.add_argument("--backend", default=None, help="scan backend for Mamba checkpoints (default: as trained)")
    p.add_argument("--freeze-selection", action="store_true",
                   help="also evaluate every Mamba-family checkpoint with Δ, B, C frozen at their means over "
                        "each prompt (label <label>-frozen), paired on the same prompts")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for the half-zero N's interval")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    paths = [s for s in args.checkpoint.split(",") if s]
    if not paths:
        raise ValueError(f"--checkpoint must name at least one checkpoint, got {args.checkpoint!r}")
    labels = args.labels.split(",") if args.labels else [None] * len(paths)
    if len(labels) != len(paths):
        raise ValueError(f"--labels must give one label per checkpoint ({len(paths)}), got {len(labels)}")
    keep_d = set(parse_ints("--d", args.d)) if args.d else None
    N_req = parse_ints("--N", args.N)
    if not N_req:
        raise ValueError(f"--N must list at least one context length, got {args.N!r}")
    n_prompts = check_positive_int("--n-prompts", args.n_prompts, minimum=2)
    n_queries = check_positive_int("--queries", args.queries)
    check_positive_int("--seed", args.seed, minimum=0)
    n_boot = check_positive_int("--n-boot", args.n_boot)
    if args.backend is not None:
        resolve_backend(args.backend)
    tune_process()
    plt.switch_backend("Agg")  # files only; importing this module (e.g. in a notebook) keeps its backend
    groups = {}
    for path, label in zip(paths, labels):
        params, cfg, extra, _ = load_checkpoint(path)
        tc = extra.get("train_config")
        if not isinstance(tc, dict) or any(k not in tc for k in TASK_KEYS + ("N", "encoding", "backend", "model")):
            raise ValueError(f"checkpoint {path!r} was not written by icl-train (no complete train_config)")
        if keep_d is not None and tc["d"] not in keep_d:
            continue
        key = tuple(tc[k] for k in TASK_KEYS)
        groups.setdefault(key, []).append((label or tc["model"], params, cfg, tc, path, extra))
    if not groups:
        raise ValueError(f"--d {args.d}: no checkpoint was trained at these d")
    # The grid of each group is capped at its models' trained N; a group left with nothing
    # to evaluate is an error now, before any compute.
    grids = {}
    for key, members in groups.items():
        trained = min(m[3]["N"] for m in members)
        grids[key] = [n for n in N_req if n <= trained]
        if not grids[key]:
            who = ", ".join(f"{m[4]} (N = {m[3]['N']})" for m in members)
            raise ValueError(f"--N: every requested context length ({args.N}) exceeds the N the models were "
                             f"trained with: {who}; pass values <= {trained}")
    check_output_dir("--out", args.out)
    if args.freeze_selection and not any(isinstance(m[2], MambaConfig) for ms in groups.values() for m in ms):
        raise ValueError("--freeze-selection: none of the checkpoints is a Mamba (selection exists only there)")
    rows, paired, sources, over, half = [], [], [], [], []
    for key, members in sorted(groups.items()):
        tc0 = members[0][3]
        task = SingleIndexTask(tc0["d"], tc0["r"], tc0["link"], tau=tc0["tau"], seed=tc0["task_seed"])
        N_grid = grids[key]
        models = [(label, params, cfg, tc) for label, params, cfg, tc, _, _ in members]
        if args.freeze_selection:
            models += [(f"{label}-frozen", params, FrozenSelection(cfg), tc) for label, params, cfg, tc in models
                       if isinstance(cfg, MambaConfig)]
        per_prompt = {}
        r, p = evaluate_group(models, task, N_grid, n_prompts, n_queries, args.seed, args.backend,
                              not args.no_progress, per_prompt)
        o, h = relative_to_zero(per_prompt, r, n_boot)
        rows += r
        paired += p
        over += o
        half += h
        sources += [{"label": m[0], "path": m[4], "step": m[5].get("step"), "command": m[5].get("command"),
                     "code_version": m[5].get("code_version"), "n_params": m[5].get("n_params")} for m in members]
    write_csv(os.path.join(args.out, "metrics.csv"), rows)
    write_csv(os.path.join(args.out, "paired.csv"), paired)
    write_csv(os.path.join(args.out, "over_zero.csv"), over)
    write_csv(os.path.join(args.out, "half_zero.csv"), half)
    text = table(rows, paired) + "\n" + "\n".join(half_zero_lines(half))
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(text)
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump({"checkpoints": sources, "N": N_req, "n_prompts": n_prompts, "n_queries": n_queries,
                   "seed": args.seed, "freeze_selection": args.freeze_selection, "n_boot": n_boot}, f, indent=1)
    plot(rows, os.path.join(args.out, "error_vs_N.png"))
    plot(over, os.path.join(args.out, "error_over_zero_vs_N.png"), ylabel="error / zero predictor's (same prompts)",
         title="In-context error relative to the zero predictor vs N")
    plot_training_curves([(m[0], m[3], m[5]) for ms in groups.values() for m in ms],
                         os.path.join(args.out, "training_curves.png"))
    print(text)
    print(f"wrote {args.out}/metrics.csv, paired.csv, over_zero.csv, half_zero.csv, table.md, error_vs_N.png, "
          "error_over_zero_vs_N.png, training_curves.png")
    return 0
