"""The ICL III tables and figures over training seeds (docs/results_icl_mechanism.md), from the
per-run evaluations the grid wrote (scripts/icl_mechanism_grid.py).

    .venv/bin/python scripts/icl_mechanism_report.py            # all evaluated runs, page updated

Reads docs/figures/icl_mechanism/runs/*/ and writes into docs/figures/icl_mechanism/:
    seeds.csv                   one row per (label, link, d, N): seed mean and seed SE of the error
                                over the zero predictor's, the paired gap to the context-free
                                optimum (seed SE and per-prompt SE), collapse and learn counts
    runs.csv                    one row per run and label at the largest N: its numbers and state
    differences.csv             model against model (each (link, d, N)) and d = 32 minus d = 16 (each
                                (link, N)) of the seed means of error / zero: diff, SE from both
                                seed SEs, Welch t, df and two-sided p
    error_over_zero_vs_N.png    one panel per (link, d): seed means +- seed SE, seeds thin
    gap_to_context_free.png     one panel per (link, d): the paired gap at the largest N, per seed
    seeds.md                    the page's tables; with --page they replace the text between
                                the page's "<!-- seeds:begin -->" and "<!-- seeds:end -->" lines
The definitions (seed SE, prompt SE, collapse) are mamba_from_scratch/icl/seeds.py's.

Tests: tests/test_icl_seeds.py (on a synthetic grid of run folders).
"""
from __future__ import annotations

import argparse
import math
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from mamba_from_scratch.files import atomic_write, save_figure, write_csv  # noqa: E402
from mamba_from_scratch.icl import seeds as S  # noqa: E402

MODELS = ("mamba", "mamba-nonselective", "mamba-nogate", "softmax-tf", "linear-tf")
COLORS = {"mamba": "C0", "mamba-nonselective": "C1", "mamba-nogate": "C2", "softmax-tf": "C3", "linear-tf": "C4",
          "krr_full": "0.45", "krr_intrinsic": "0.2", "context_free": "k"}
PANELS = (("He3", 16), ("He3", 32), ("He2", 16), ("He2", 32))
COMPARISONS = (("mamba", "mamba-nonselective"), ("mamba", "mamba-nogate"), ("softmax-tf", "linear-tf"),
               ("mamba", "softmax-tf"), ("mamba", "linear-tf"), ("mamba-nogate", "softmax-tf"))
BEGIN, END = "<!-- seeds:begin -->", "<!-- seeds:end -->"


def fmt(x, nd=3):
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


def pm(m, se, nd=3):
    return fmt(m, nd) if math.isnan(se) else f"{fmt(m, nd)} ± {fmt(se, nd)}"


def n_half_text(s):
    if s["kind"] == "gt":
        return "> 64"
    if s["kind"] == "le":
        return "≤ 1"
    hi = "∞" if math.isinf(s["hi"]) else f"{s['hi']:.0f}"
    return f"{s['N_half']:.0f} [{s['lo']:.0f}, {hi}]"


RATIO_YLIM = (0.0, 1.25)       # error / zero: the models' range; a curve above it is marked, not rescaled
GAP_YLIM = (-1.0, 0.4)         # gap / zero at N = 64: likewise


def off_scale(ax, x, v, ylim, color, text=None, left=False, row=0):
    """Mark a value above or below the axes' fixed range with a triangle on the edge and its value,
    so that one exploding run (a frozen He2 Mamba) does not squash every other panel. The value is
    written to the right of the mark, or to its left with left=True; row moves the text one line
    further from the edge per step, so that neighbouring marks' values do not overlap."""
    lo, hi = ylim
    if lo <= v <= hi:
        return False
    edge, marker, va = (hi, "^", "top") if v > hi else (lo, "v", "bottom")
    ax.plot([x], [edge], marker, color=color, ms=7, clip_on=False, zorder=4)
    ax.annotate(text or f"{v:+.1f}", (x, edge), xytext=(-5 if left else 5, (-3 - 9 * row) if v > hi else (3 + 9 * row)),
                textcoords="offset points", fontsize=7, color=color, va=va, ha="right" if left else "left")
    return True


def figures(runs, rows, base, out_dir):
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5), sharey=True)
    for ax, (link, d) in zip(axes.flat, PANELS):
        for model in MODELS:
            for label, style in ((model, "-"), (model + "-frozen", ":")):
                r = sorted((x for x in rows if x["label"] == label and x["link"] == link and x["d"] == d),
                           key=lambda x: x["N"])
                if not r or (label.endswith("-frozen") and model == "mamba-nonselective"):
                    continue               # a non-selective model's frozen copy is itself
                Ns = [x["N"] for x in r]
                mean = [x["over_zero"] for x in r]
                se = [0.0 if math.isnan(x["over_zero_seed_se"]) else x["over_zero_seed_se"] for x in r]
                ax.plot(Ns, mean, style, color=COLORS[model], marker="o" if style == "-" else None, ms=3, zorder=3,
                        label=f"{label} ({r[0]['n_seeds']} seed{'s' * (r[0]['n_seeds'] > 1)})")
                ax.fill_between(Ns, [m - s for m, s in zip(mean, se)], [m + s for m, s in zip(mean, se)],
                                color=COLORS[model], alpha=0.15, lw=0)
                out = [(n, m) for n, m in zip(Ns, mean) if m > RATIO_YLIM[1]]
                if out:
                    off_scale(ax, out[-1][0], out[-1][1], RATIO_YLIM, COLORS[model],
                              f"{label}: {out[-1][1]:.1f} at N = {out[-1][0]}", left=True)
                if style == "-":
                    for run in runs:
                        if run["model"] == model and run["link"] == link and run["d"] == d:
                            per = sorted((int(x["N"]), float(x["error"])) for x in run["over_zero"]
                                         if x["method"] == model)
                            ax.plot(*zip(*per), "-", color=COLORS[model], lw=0.6, alpha=0.5)
        for method, style in (("krr_full", "--"), ("krr_intrinsic", "-."), ("context_free", "-")):
            per = sorted(base.get((link, d), {}).get(method, {}).items())
            if per:
                ax.plot([n for n, _ in per], [v[2] for _, v in per], style, color=COLORS[method], lw=1.0, zorder=1,
                        label=method.replace("_", " "))
        ax.axhline(0.5, color="0.6", lw=0.8, ls=(0, (1, 3)))
        ax.set_xscale("log", base=2)
        ax.set_xlim(0.8, 80)
        ax.set_xticks([1, 2, 4, 8, 16, 32, 64], ["1", "2", "4", "8", "16", "32", "64"])
        ax.set_ylim(*RATIO_YLIM)
        ax.set_xlabel("context length N")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, ncol=2, loc="lower left")
    finish(fig, axes, runs, "error / zero predictor's error (same prompts)",
           "In-context error relative to the zero predictor: seed mean ± 1 seed SE (band), each seed thin, frozen "
           "selection dotted;\nfaint grey line at 0.5: half the zero error; a triangle on the top edge: off the scale, "
           "its value written beside it",
           os.path.join(out_dir, "error_over_zero_vs_N.png"))

    fig, axes = plt.subplots(2, 2, figsize=(12, 7.5), sharey=True)
    for ax, (link, d) in zip(axes.flat, PANELS):
        labels = [m for m in MODELS] + ["mamba-frozen", "mamba-nogate-frozen"]
        for i, label in enumerate(labels):
            model = label.replace("-frozen", "")
            per = [(run["seed"], S.run_summary(run)[label]) for run in runs
                   if run["model"] == model and run["link"] == link and run["d"] == d and label in S.labels_of(run)]
            if not per:
                continue
            zero = base[(link, d)]["zero"][max(base[(link, d)]["zero"])][0]
            vals = [s["diff_cf"] / zero for _, s in per]
            for j, ((_, s), v) in enumerate(zip(per, vals)):
                if not off_scale(ax, i + 0.12 * (j - 1), v, GAP_YLIM, COLORS[model], left=True, row=j):
                    ax.errorbar(i + 0.12 * (j - 1), v, yerr=2 * s["se_cf"] / zero, fmt="o", ms=4,
                                color=COLORS[model], mfc="white" if label.endswith("frozen") else COLORS[model],
                                capsize=2, lw=0.8)
            m, se = S.mean_se(vals)
            if not off_scale(ax, i + 0.3, m, GAP_YLIM, "k"):
                ax.errorbar(i + 0.3, m, yerr=0 if math.isnan(se) else 2 * se, fmt="s", color="k", ms=5, capsize=3)
        ax.axhline(0, color="k", lw=0.8)
        ax.set_ylim(*GAP_YLIM)
        ax.set_xticks(range(len(labels)), [lab.replace("mamba-", "mamba\n").replace("-frozen", "\nfrozen")
                                           for lab in labels], fontsize=7)
        ax.set_xlim(-0.6, len(labels) - 0.4)
    finish(fig, axes, runs, "(error − context-free) / zero error",
           "Paired gap to the context-free optimum at N = 64: each seed "
           "(± 2 per-prompt SE; hollow: selection frozen),\n"
           "black square: seed mean ± 2 seed SE (about 82% with 3 seeds); below 0 = learns in context; "
           "triangle on an edge: off the scale, value written",
           os.path.join(out_dir, "gap_to_context_free.png"))


def finish(fig, axes, runs, ylabel, title, path):
    """Panel titles, a note on panels with no run yet, the y labels and the title; save as PNG."""
    for ax, (link, d) in zip(axes.flat, PANELS):
        ax.set_title(f"{link}, d = {d}")
        if not any(run["link"] == link and run["d"] == d for run in runs):
            ax.text(0.5, 0.5, "no run evaluated yet", transform=ax.transAxes, ha="center", color="0.4")
    for ax in axes[:, 0]:
        ax.set_ylabel(ylabel)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def markdown(runs, rows, base, comp):
    lines = ["#### Runs evaluated (seeds of 0, 1, 2)", "",
             "| link | d | " + " | ".join(MODELS) + " |", "|---|---|" + "---|" * len(MODELS)]
    for link, d in PANELS:
        cells = []
        for model in MODELS:
            done = sorted(r["seed"] for r in runs if r["model"] == model and r["link"] == link and r["d"] == d)
            cells.append(", ".join(map(str, done)) if done else "none")
        lines.append(f"| {link} | {d} | " + " | ".join(cells) + " |")
    lines += [f"\n{len(runs)} of {len(MODELS) * len(PANELS) * 3} runs evaluated.", ""]
    Nmax = 64
    for link, d in PANELS:
        lines += [f"#### {link}, d = {d} (N = {Nmax})", "",
                  "| model | seeds | error / zero: mean ± seed SE [prompt SE] | gap to context-free / zero: "
                  "mean ± seed SE [prompt SE] | per seed | learns / collapses | N at half the zero error, per seed |",
                  "|---|---|---|---|---|---|---|"]
        zero = base.get((link, d), {}).get("zero", {}).get(Nmax, (math.nan,))[0]
        for model in MODELS:
            for label in (model, model + "-frozen"):
                r = [x for x in rows if x["label"] == label and x["link"] == link and x["d"] == d and x["N"] == Nmax]
                if not r or (label == "mamba-nonselective-frozen"):
                    continue
                r = r[0]
                per_runs = [S.run_summary(run)[label] for run in runs
                            if run["model"] == model and run["link"] == link and run["d"] == d]
                per_seed = ", ".join(f"{float(v) / zero:+.3f}" for v in r["per_seed_diff_cf"].split())
                gap = pm(r["diff_cf"] / zero, r["diff_cf_seed_se"] / zero)
                lines.append(f"| {label} | {r['seeds']} | {pm(r['over_zero'], r['over_zero_seed_se'])} "
                             f"[{fmt(r['over_zero_prompt_se'])}] | {gap} [{fmt(r['diff_cf_prompt_se'] / zero)}] | "
                             f"{per_seed} | {r['learns']} / {r['collapses']} | "
                             f"{'; '.join(n_half_text(s) for s in per_runs)} |")
        for method in ("krr_full", "krr_intrinsic", "context_free"):
            v = base.get((link, d), {}).get(method, {}).get(Nmax)
            if v:
                lines.append(f"| {method.replace('_', ' ')} | – | {fmt(v[2])} [{fmt(v[3])}] | – | – | – | "
                             f"{krr_half(runs, link, d, method)} |")
        if not any(x["link"] == link and x["d"] == d for x in rows):
            lines.append("| (no run evaluated yet) | | | | | | |")
        lines.append("")
    lines += ["#### Model against model at N = 64 (error / zero; seed means, SE from both seed SEs)", "",
              "| comparison | " + " | ".join(f"{link}, d = {d}" for link, d in PANELS) + " |",
              "|---|" + "---|" * len(PANELS)]
    at_Nmax = {(c["kind"], c["a"], c["b"], c["link"], c["d_a"]): c for c in comp if c["N"] == Nmax}
    for a, b in COMPARISONS:
        cells = []
        for link, d in PANELS:
            c = at_Nmax.get(("models", a, b, link, d))
            cells.append("–" if c is None else f"{pm(c['diff'], c['se'])} ({c['n_a']} vs {c['n_b']} seeds)")
        lines.append(f"| {a} − {b} | " + " | ".join(cells) + " |")
    lines += ["", "#### Frozen selection minus the model itself (paired on the same prompts, by seed; "
              "error / zero)", "",
              "| model | " + " | ".join(f"{link}, d = {d}: N = 16 / N = 64" for link, d in PANELS) + " |",
              "|---|" + "---|" * len(PANELS)]
    f16, f64 = S.frozen_minus_model(runs, 16), S.frozen_minus_model(runs, 64)
    for model in ("mamba", "mamba-nogate"):
        cells = []
        for link, d in PANELS:
            a, b = f16.get((model, link, d)), f64.get((model, link, d))
            cells.append("–" if a is None else
                         f"{pm(a['diff'], a['seed_se'])} [{fmt(a['prompt_se'])}] / {pm(b['diff'], b['seed_se'])} "
                         f"[{fmt(b['prompt_se'])}] ({a['n_seeds']} seeds)")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    lines += ["", "#### d = 32 minus d = 16 at N = 64 (error / zero; seed means, SE from both)", "",
              "| model | He3 | He2 |", "|---|---|---|"]
    for model in MODELS:
        cells = []
        for link in ("He3", "He2"):
            c = at_Nmax.get(("d32_minus_d16", model, model, link, 32))
            cells.append("–" if c is None else f"{pm(c['diff'], c['se'])} ({c['n_b']} vs {c['n_a']} seeds)")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    for method in ("krr_full", "krr_intrinsic"):
        cells = []
        for link in ("He3", "He2"):
            a, b = (base.get((link, d), {}).get(method, {}).get(Nmax) for d in (16, 32))
            cells.append("–" if a is None or b is None else
                         f"{pm(b[2] - a[2], math.hypot(a[3], b[3]))} (prompt SEs)")
        lines.append(f"| {method.replace('_', ' ')} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def krr_half(runs, link, d, method):
    for run in runs:
        if run["link"] == link and run["d"] == d:
            r = [x for x in run["half_zero"] if x["method"] == method]
            if r:
                r = r[0]
                return n_half_text(dict(kind=r["kind"], N_half=float(r["N_half"]), lo=float(r["lo"]),
                                        hi=float(r["hi"])))
    return "–"


def update_page(page, text):
    with open(page) as f:
        src = f.read()
    if BEGIN not in src or END not in src:
        raise ValueError(f"{page} has no {BEGIN} ... {END} section to replace")
    head, rest = src.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    atomic_write(page, head + BEGIN + "\n" + text + END + tail)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs-dir", default=os.path.join(REPO, "docs/figures/icl_mechanism/runs"))
    ap.add_argument("--out", default=os.path.join(REPO, "docs/figures/icl_mechanism"))
    ap.add_argument("--page", default=os.path.join(REPO, "docs/results_icl_mechanism.md"),
                    help="the page whose seeds section is replaced ('' to leave it)")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    runs = S.load_runs(args.runs_dir)
    if not runs:
        print(f"error: no evaluated run under {args.runs_dir}", file=sys.stderr)
        return 2
    base = S.baselines(runs)
    rows = S.over_seeds(runs)
    write_csv(os.path.join(args.out, "seeds.csv"), rows)
    per_run = [dict(run=run["name"], label=label, link=run["link"], d=run["d"], seed=run["seed"], **s)
               for run in runs for label, s in S.run_summary(run).items()]
    write_csv(os.path.join(args.out, "runs.csv"), per_run)
    comp = S.comparisons(rows, COMPARISONS, MODELS)
    write_csv(os.path.join(args.out, "differences.csv"), comp)
    figures(runs, rows, base, args.out)
    text = markdown(runs, rows, base, comp)
    atomic_write(os.path.join(args.out, "seeds.md"), text)
    if args.page:
        update_page(args.page, text)
    print(f"{len(runs)} runs -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
