"""icl-theory's reports: its CSV tables (written and read back), markdown tables and figures.
Nothing here trains or scores; ``theory_run.py`` produces the rows, ``theory.py`` is the
command line. Tested in tests/test_icl_theory.py.

Every file is written to a temporary name and renamed (files.py), so an interrupted run
never leaves a half-written file.
"""
from __future__ import annotations

import math
import os

import numpy as np

from .. import files
from ..files import atomic_write, save_figure
from .metrics import paired_difference

COLUMNS = ["method", "gate", "link", "d", "r", "N", "error", "stderr", "n_prompts", "seed",
           "diff_vs_zero", "diff_vs_zero_se", "note"]


LABELS = {("one_layer", "product"): "Mamba, product gate (exact S6)",
          ("one_layer", "normalized"): "Mamba, normalized gate",
          ("one_layer", "two_channel"): "Mamba, two-channel gate",
          ("one_layer", "none"): "linear attention (no gate)",
          ("krr_full", ""): "KRR on full x", ("krr_intrinsic", ""): "KRR on intrinsic coords",
          ("context_free", ""): "context-free optimum", ("zero", ""): "zero predictor"}


def write_csv(path, rows, columns=COLUMNS):
    """icl-theory's tables: 6 significant digits, "\\n" line ends (as the committed files)."""
    files.write_csv(path, rows, columns, float_format=".6g", lineterminator="\n")


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
    rows = files.read_csv(path)
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
                 "(± 1 s.e. over prompts, bounded as in relative_to_zero; below the dotted line = learned something)",
                 fontsize=10)
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


def plot_pretraining(rows, path, link, d, N):
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


SWEEP_GATES = ("product", "normalized")


SWEEP_COLUMNS = ["split", "role", "gate", "rho", "b0", "link", "d", "r", "N", "error", "stderr", "n_prompts", "seed",
                 "diff_vs_zero", "diff_vs_zero_se", "ratio_to_zero", "ratio_to_zero_se", "diff_vs_normalized",
                 "diff_vs_normalized_se", "diff_vs_none", "diff_vs_none_se", "gamma_mass_on_subspace", "selected",
                 "note"]


def read_sweep_rows(path):
    """product_gate_sweep.csv back as rows, numbers as numbers (empty cells stay "")."""
    rows = files.read_csv(path)
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
                "| role | gate | rho | b0 | error | error / zero's | minus normalized (0.25, 0) "
                "| minus linear attention |",
                "|---|---|---|---|---|---|---|---|"]
        for r in test:
            if r["role"] == "zero":
                out.append(f"| zero predictor | | | | {r['error']:.3f} ± {r['stderr']:.3f} | 1 | | |")
                continue
            out.append(f"| {r['role']} | {r['gate']} | {r['rho']:g} | {r['b0']:g} | "
                       f"{r['error']:.3f} ± {r['stderr']:.3f} | "
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
                pb, nb = test["product_best"], test["normalized_best"]
                chosen = (("product_best", f"product (rho {pb['rho']:g}, b0 {pb['b0']:g})"),
                          ("normalized_default", "normalized (0.25, 0)"),
                          ("normalized_best", f"normalized (rho {nb['rho']:g}, b0 {nb['b0']:g})"),
                          ("none", "linear attention"))
                txt = "\n".join(f"{lab}: {test[k]['ratio_to_zero']:.3f} ± {test[k]['ratio_to_zero_se']:.3f}"
                                for k, lab in chosen if k in test)
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
    slopes = plot_sweep(need, sweep, os.path.join(out, f"sweep_{sweep}.png"), link, threshold)
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


def plot_sweep(need, sweep, path, link, threshold):
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

ABLATE_PRETRAINING_COLUMNS = ["variant", "stage1_prompts", "link", "d", "r", "N", "error", "stderr", "n_prompts",
                              "seed", "diff_vs_zero", "diff_vs_zero_se", "note"]


def ablate_pretraining_md(rows, args, link, d, N, timing):
    """The pretraining ablation as a markdown table, one row per variant."""
    md = [f"# Pretraining ablation ({link}, d = {d}, r = {args.r}, N = {N}, normalized gate, "
          f"{args.n_prompts} test prompts; {timing})", "",
          "| variant | Stage I prompts | error ± s.e. | error - zero predictor's (paired) | note |",
          "|---|---|---|---|---|"]
    md += [f"| {r['variant']} | {r['stage1_prompts']} | {r['error']:.3f} ± {r['stderr']:.3f} | "
           f"{r['diff_vs_zero']:+.3f} ± {r['diff_vs_zero_se']:.3f} | {r['note']} |" for r in rows]
    return "\n".join(md) + "\n"
