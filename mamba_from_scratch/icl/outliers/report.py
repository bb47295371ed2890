"""Tables and figures of ``python -m mamba_from_scratch outliers`` (metrics.csv, table.md, PNGs).
Tested in tests/test_outliers_cli.py.

Every number is a mean over seeds with its standard error (SEM); a seed whose test tasks
have no task of a subset (e.g. no test task with a held-out mirror) is left out of that
subset's mean, and ``n_seeds`` says how many remain.
"""
from __future__ import annotations

import os

import numpy as np

from ...files import write_csv
from .data import CORRUPTIONS, DIRECTION_NAMES, POSITIONS
from .design import ALPHAS, LR_SCALES, MAGNITUDES, SUBSETS, model_key
from .floor import clean_vote_floor, error_floor
from .model import MODELS

LABELS = {"mamba": "one-layer Mamba", "linear": "linear Transformer",
          "floor": "exact floor (same-pattern vote)", "floor_clean_vote": "floor of a clean-example vote"}
FLOORS = {"floor": error_floor, "floor_clean_vote": clean_vote_floor}
COLORS = {"mamba": "tab:blue", "linear": "tab:orange"}
SUBSET_LABELS = {"all": "all test tasks", "mirror_trained": "mirror (b, a) trained",
                 "mirror_held_out": "mirror (b, a) held out too"}
POSITION_LABELS = {"fq": "FQ (farthest from the query)", "r": "R (random positions)",
                   "cq": "CQ (closest to the query)"}
# The paper's Table 1: accuracy (%) at alpha = 0.5 of its three-layer models (p_a = 0.4).
PAPER_TABLE1 = {"mamba": {"fq": 99.73, "r": 99.67, "cq": 82.73},
                "linear": {"fq": 93.68, "r": 94.12, "cq": 93.96}}


def where_columns(study: str, setting: str) -> dict:
    """metrics.csv's ``position`` and ``direction`` of a row: where the test outliers sit
    ("r": random positions, also the main runs' independent draws) and which of the test
    directions they use ("all": uniformly among v1', v2', v3')."""
    return {"position": setting if study == "position" else "r",
            "direction": setting if study == "direction" else "all"}


def mean_sem(per_seed):
    """Mean, SEM and count over seeds (axis 0), ignoring NaN (a seed without that subset)."""
    a = np.asarray(per_seed, dtype=float)                           # (seeds, ...)
    n = np.sum(~np.isnan(a), axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.nanmean(a, axis=0) if np.any(n) else np.full(a.shape[1:], np.nan)
        sd = np.sqrt(np.nansum((a - mean) ** 2, axis=0) / np.maximum(n - 1, 1))
        sem = np.where(n > 1, sd / np.sqrt(np.maximum(n, 1)), 0.0)
    return mean, sem, n


def fmt(x: float) -> str:
    """A setting value without float noise: 0.015 * 3 prints as 0.045."""
    return f"{x:.3g}"


def defaults(args, data_cfg) -> dict:
    """The default setting of each sensitivity study, as it appears in metrics.csv."""
    return {"test_magnitude": fmt(data_cfg.kappa_a_test), "outlier_norm": fmt(data_cfg.outlier_norm),
            "task_split": data_cfg.task_split, "lr": fmt(args.lr), "train_corruption": "random"}


def collect(args, main_runs, sens, data_cfg):
    """{(study, setting, model, corruption): list over seeds of (3, len(ALPHAS)) arrays}.

    Each retraining study also gets its default setting from the main runs of the same seeds
    (the first ``sens_seeds``), marked "(default)", so every comparison is paired by seed.
    """
    n_sens = args.sens_seeds
    default = defaults(args, data_cfg)
    out = {}
    for m in MODELS:
        for c in CORRUPTIONS:
            out[("main", "default", m, c)] = [r["errors"][m][c] for r in main_runs]
        for kappa in MAGNITUDES:
            tag = " (default)" if fmt(kappa) == default["test_magnitude"] else ""
            out[("test_magnitude", fmt(kappa) + tag, m, "flipped")] = [r["magnitude"][kappa][m] for r in main_runs]
        if n_sens:
            studies = {s for s, _ in sens} | {"lr"}
            for study in sorted(studies):
                out[(study, default[study] + " (default)", m, "flipped")] = [
                    r["errors"][m]["flipped"] for r in main_runs[:n_sens]]
            for scale in LR_SCALES:
                out[("lr", fmt(args.lr * scale), m, "flipped")] = [
                    r["errors"][model_key(m, scale)]["flipped"] for r in main_runs[:n_sens]]
        for (study, value), runs in sens.items():
            out[(study, value, m, "flipped")] = [r["errors"][m]["flipped"] for r in runs]
        for name in DIRECTION_NAMES:
            if name in main_runs[0]["direction"]:
                out[("direction", name, m, "flipped")] = [r["direction"][name][m] for r in main_runs]
        for pos in POSITIONS:
            for c in main_runs[0]["position"].get(pos, {}):
                out[("position", pos, m, c)] = [r["position"][pos][c][m] for r in main_runs]
    return out


def write_metrics(args, main_runs, sens, data_cfg):
    """metrics.csv: one row per (study, setting, model, corruption, subset, alpha) with mean
    and SEM over seeds; the exact floor as model "floor"."""
    rows = []
    for (study, setting, model, corruption), per_seed in collect(args, main_runs, sens, data_cfg).items():
        mean, sem, n = mean_sem(per_seed)                           # (3, len(ALPHAS)) each
        for j, subset in enumerate(SUBSETS):
            for i, alpha in enumerate(ALPHAS):
                rows.append({"study": study, "setting": setting, **where_columns(study, setting),
                             "model": model, "corruption": corruption, "subset": subset,
                             "alpha": float(alpha),
                             "error_mean": round(float(mean[j, i]), 6), "error_sem": round(float(sem[j, i]), 6),
                             "n_seeds": int(n[j, i]), "n_test": args.n_test})
    for name, floor in FLOORS.items():
        for c in CORRUPTIONS:
            for alpha, f in zip(ALPHAS, floor(ALPHAS, data_cfg.l, c)):
                rows.append({"study": "main", "setting": "default", "position": "r",
                             "direction": "all", "model": name, "corruption": c, "subset": "all", "alpha": float(alpha),
                             "error_mean": round(float(f), 6), "error_sem": 0.0, "n_seeds": 0, "n_test": 0})
    write_csv(os.path.join(args.out, "metrics.csv"), rows)

    seen = np.concatenate([r["mirror_seen"] for r in main_runs])    # all test tasks of all seeds
    summary = {"share_mirror_trained": float(seen.mean()), "scores": {}, "paired_diff": {}}
    for c in CORRUPTIONS:  # both models saw the same test prompts: compare them seed by seed
        diff = [r["errors"]["mamba"][c][0] - r["errors"]["linear"][c][0] for r in main_runs]
        mean, sem, _ = mean_sem(diff)
        summary["paired_diff"][c] = {"mean": mean.tolist(), "sem": sem.tolist()}
    # where the outliers sit, paired on the same seeds: each model's CQ minus its R error,
    # and the Mamba minus the linear Transformer at each position (all test tasks)
    summary["position_diff"] = {}
    for c in main_runs[0]["position"].get("cq", {}):
        P = {pos: {m: np.array([r["position"][pos][c][m][0] for r in main_runs]) for m in MODELS}
             for pos in POSITIONS}                                   # (seeds, len(ALPHAS)) each
        d = {f"{m} cq - r": P["cq"][m] - P["r"][m] for m in MODELS}
        d.update({f"mamba - linear {pos}": P[pos]["mamba"] - P[pos]["linear"] for pos in POSITIONS})
        summary["position_diff"][c] = {k: dict(zip(("mean", "sem"), (x.tolist() for x in mean_sem(v)[:2])))
                                       for k, v in d.items()}
    for m in MODELS:
        S = np.concatenate([r["scores"][m] for r in main_runs])     # (tasks, 2) same, cross
        summary["scores"][m] = {sub: (S[mask].mean(axis=0).tolist() if mask.any() else [np.nan] * 2)
                                for sub, mask in (("mirror_trained", seen), ("mirror_held_out", ~seen))}
    return rows, summary


def _lookup(rows):
    return {(r["study"], r["setting"], r["model"], r["corruption"], r["subset"], r["alpha"]): r
            for r in rows}


def _cell(r):
    if r["model"] in FLOORS:
        return f"{r['error_mean']:.3f}"
    if np.isnan(r["error_mean"]):
        return "n/a"
    return f"{r['error_mean']:.3f} ± {r['error_sem']:.3f}"


def write_table(args, rows, summary, gate, timing, command):
    """table.md: the main comparison, the split by kind of test task, every sensitivity
    setting and the learned attention scores."""
    R = _lookup(rows)
    n_main = R[("main", "default", "mamba", "flipped", "all", 0.0)]["n_seeds"]
    lines = ["# Paper 3: in-context classification with outliers", "",
             f"`{command.strip()}`", "",
             f"Error on the held-out test tasks (split `{args.split}`), mean ± SEM over {n_main} seeds, "
             f"{args.n_test} test prompts per point and seed. Wall time {timing['wall_s']:.0f} s at load "
             f"average {timing['load_start'][0]:.1f} (1 min) on the shared 2-core machine.", ""]
    head = ["| alpha | " + " | ".join(f"{a:.1f}" for a in ALPHAS) + " |", "|---" * (len(ALPHAS) + 1) + "|"]
    for c in CORRUPTIONS:
        lines += [f"## {c} labels, all test tasks", ""] + head
        for m in MODELS + tuple(FLOORS):
            lines.append(f"| {LABELS[m]} | " + " | ".join(
                _cell(R[("main", "default", m, c, "all", float(a))]) for a in ALPHAS) + " |")
        lines.append("")
    lines += ["## Mamba minus linear Transformer, paired by seed (same test prompts), all test tasks", ""] + head
    for c in CORRUPTIONS:
        d = summary["paired_diff"][c]
        lines.append(f"| {c} | " + " | ".join(f"{m:+.3f} ± {e:.3f}" for m, e in zip(d["mean"], d["sem"])) + " |")
    lines += ["", "## flipped labels, by kind of test task", "",
              f"A test task (a, b) whose mirror (b, a) is a training task shows two patterns the model "
              f"saw together in training; otherwise the pair is new. Share of test tasks with a trained "
              f"mirror: {summary['share_mirror_trained']:.2f}.", ""] + head
    for sub in SUBSETS[1:]:
        for m in MODELS:
            lines.append(f"| {LABELS[m]}, {SUBSET_LABELS[sub]} | " + " | ".join(
                _cell(R[("main", "default", m, "flipped", sub, float(a))]) for a in ALPHAS) + " |")
    lines += ["", "## Sensitivity (flipped labels, all test tasks)", "",
              "| study | setting | model | alpha=0 | alpha=0.3 | alpha=0.5 | alpha=0.8 | seeds |",
              "|---" * 8 + "|"]
    keys = sorted({(r["study"], r["setting"], r["model"]) for r in rows
                   if r["study"] not in ("main", "direction", "position") and r["subset"] == "all"},
                  key=lambda k: (k[0], k[2], k[1]))
    for study, setting, m in keys:
        sel = [R[(study, setting, m, "flipped", "all", a)] for a in (0.0, 0.3, 0.5, 0.8)]
        lines.append(f"| {study} | {setting} | {LABELS[m]} | " + " | ".join(_cell(r) for r in sel)
                     + f" | {sel[0]['n_seeds']} |")
    lines += where_tables(R, summary)
    lines += ["", "## Learned attention scores on test tasks (W = W_B^T W_C, / beta^2, mean over seeds)", "",
              "| model | kind of test task | same pattern mu_a^T W mu_a | cross mu_b^T W mu_a |", "|---|---|---|---|"]
    for m in MODELS:
        for sub, (same, cross) in summary["scores"][m].items():
            lines.append(f"| {LABELS[m]} | {SUBSET_LABELS[sub]} | {same:.3f} | {cross:.3f} |")
    lines += ["", f"Mamba gate at alpha = {gate['alpha']}: mean weight of clean examples / outlier "
              f"examples = {gate['mean_clean_over_outlier']:.1f}.",
              f"Training time per seed (all models of the seed on shared batches): "
              f"{timing['train_s_per_seed']:.1f} s.", ""]
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write("\n".join(lines))


def where_tables(R, summary) -> list:
    """table.md's sections on the test outlier directions and on the outliers' positions
    (empty when the run did not measure them)."""
    head = ["| alpha | " + " | ".join(f"{a:.1f}" for a in ALPHAS) + " |", "|---" * (len(ALPHAS) + 1) + "|"]
    lines = []
    if ("direction", DIRECTION_NAMES[0], "mamba", "flipped", "all", 0.0) in R:
        lines += ["", "## Test outlier directions, flipped labels, all test tasks", "",
                  "Coefficients on (v1, v2, v3): v1' = (0.7, 0.6, -0.4), v2' = (0.4, 0.7, -0.6), "
                  "v3' = (-0.7, 0.5, 0.5); sums 0.9, 0.5, 0.3. \"all\" draws each outlier's direction "
                  "uniformly among the three (the main runs).", ""] + head
        for m in MODELS:
            rows_of = [(n, ("direction", n)) for n in DIRECTION_NAMES] + [("all", ("main", "default"))]
            for name, (study, setting) in rows_of:
                lines.append(f"| {LABELS[m]}, {name} | " + " | ".join(
                    _cell(R[(study, setting, m, "flipped", "all", float(a))]) for a in ALPHAS) + " |")
    if ("position", "cq", "mamba", "flipped", "all", 0.5) in R:
        corrs = list(summary["position_diff"])
        lines += ["", "## Where the outliers sit: exactly round(alpha l) outlier examples, all test tasks", "",
                  "Error at alpha = 0.5 (10 of the 20 examples are outliers) per corruption, and the "
                  "accuracy (1 - error) under flipped labels beside the paper's Table 1 (three-layer "
                  "models, p_a = 0.4; ours are one-layer, p_a = 0.6).", "",
                  "| model | position | " + " | ".join(f"error, {c}" for c in corrs)
                  + " | accuracy %, flipped | paper's accuracy % |", "|---" * (len(corrs) + 4) + "|"]
        for m in MODELS:
            for pos in POSITIONS:
                cells = [_cell(R[("position", pos, m, c, "all", 0.5)]) for c in corrs]
                acc = 100 * (1 - R[("position", pos, m, "flipped", "all", 0.5)]["error_mean"])
                lines.append(f"| {LABELS[m]} | {POSITION_LABELS[pos]} | " + " | ".join(cells)
                             + f" | {acc:.1f} | {PAPER_TABLE1[m][pos]:.2f} |")
        lines += ["", "Paired differences at alpha = 0.5 (same seeds and test prompts), mean ± SEM over seeds:", "",
                  "| difference | " + " | ".join(corrs) + " |", "|---" * (len(corrs) + 1) + "|"]
        i = list(ALPHAS).index(0.5)
        for key in summary["position_diff"][corrs[0]]:
            lines.append(f"| {key} | " + " | ".join(
                f"{summary['position_diff'][c][key]['mean'][i]:+.3f} ± {summary['position_diff'][c][key]['sem'][i]:.3f}"
                for c in corrs) + " |")
        lines += ["", "### Flipped labels at every alpha, by position", ""] + head
        for m in MODELS:
            for pos in POSITIONS:
                lines.append(f"| {LABELS[m]}, {pos.upper()} | " + " | ".join(
                    _cell(R[("position", pos, m, "flipped", "all", float(a))]) for a in ALPHAS) + " |")
    return lines


def write_tune(args, result, command, timing):
    """tune.csv (every setting) and tune.md (sorted by the validation score)."""
    rows = result["rows"]
    write_csv(os.path.join(args.out, "tune.csv"),
              [{k: round(v, 6) if isinstance(v, float) else v for k, v in r.items()} for r in rows])
    lines = ["# Paper 3: choosing the Mamba's SGD settings on validation tasks", "",
             f"`{command.strip()}`", "",
             f"Validation tasks: {2 * result['n_val_pairs']} of the training tasks held out by the "
             f"`{result['rule']}` rule; the test tasks are never used. Score = mean of the validation "
             f"error at alpha = 0 and at alpha = 0.5 (flipped labels, training outlier directions). "
             f"Mean ± SEM over {rows[0]['n_seeds']} seeds, {args.n_test} prompts per point. Wall time "
             f"{timing['wall_s']:.0f} s at load average {timing['load_start'][0]:.1f}.", "",
             "| schedule | batch | steps | lr | val error alpha=0 | val error alpha=0.5 | score "
             "| alpha=0, mirror trained | alpha=0, mirror held out |", "|---" * 9 + "|"]
    pm = lambda r, k: "n/a" if np.isnan(r[k]) else f"{r[k]:.3f} ± {r[k + '_sem']:.3f}"
    for r in sorted(rows, key=lambda r: r["score"]):
        lines.append(f"| {r['schedule']} | {r['batch']} | {r['steps']} | {fmt(r['lr'])} | "
                     f"{pm(r, 'val_clean')} | {pm(r, 'val_flipped')} | {pm(r, 'score')} | "
                     f"{pm(r, 'val_clean_mirror_trained')} | {pm(r, 'val_clean_mirror_held_out')} |")
    b, c, bc = result["best"], result["chosen"], result["best_clean"]
    name = lambda r: f"{r['schedule']}, batch {r['batch']}, {r['steps']} steps, lr {fmt(r['lr'])}"
    lines += ["", f"Best score: {name(b)} ({b['score']:.3f} ± {b['score_sem']:.3f}).",
              f"Chosen (cheapest within one SEM of the best): {name(c)} ({c['score']:.3f}).",
              f"Best clean error alone: {name(bc)} ({bc['val_clean']:.3f}).",
              "The last two columns use extra validation prompts restricted to validation tasks whose "
              "mirror (b, a) is, or is not, a training task (mean over the seeds that have such tasks).", ""]
    with open(os.path.join(args.out, "tune.md"), "w") as f:
        f.write("\n".join(lines))


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_tune(args, result):
    """Validation error against steps for each lr (constant schedule, batch 64), with the
    other runs as single points."""
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.4), sharex=True)
    rows = result["rows"]
    for k, lr in enumerate(result["lrs"]):
        color = plt.cm.viridis(k / max(len(result["lrs"]) - 1, 1) * 0.85)
        for ax, key in zip(axes, ("val_clean", "val_flipped")):
            for schedule, batch, marker, ls in (("constant", 64, "o", "-"), ("constant", 256, "s", ":"),
                                                ("cosine", 64, "^", "--")):
                sel = sorted((r for r in rows if (r["schedule"], r["batch"], r["lr"]) == (schedule, batch, lr)),
                             key=lambda r: r["steps"])
                if sel:
                    ax.errorbar([r["steps"] for r in sel], [r[key] for r in sel],
                                yerr=[r[key + "_sem"] for r in sel], marker=marker, ls=ls, color=color,
                                capsize=2, label=f"lr {fmt(lr)}, {schedule}, batch {batch}")
        sel = sorted((r for r in rows if (r["schedule"], r["batch"], r["lr"]) == ("constant", 64, lr)),
                     key=lambda r: r["steps"])
        for key, ls, kind in (("val_clean_mirror_held_out", "-", "mirror held out"),
                              ("val_clean_mirror_trained", ":", "mirror trained")):
            axes[2].errorbar([r["steps"] for r in sel], [r[key] for r in sel], yerr=[r[key + "_sem"] for r in sel],
                             marker="o", ls=ls, color=color, capsize=2, label=f"lr {fmt(lr)}: {kind}")
    axes[0].set_ylabel("validation error, clean prompts (alpha = 0)")
    axes[1].set_ylabel("validation error, alpha = 0.5, flipped labels")
    axes[2].set_ylabel("clean validation error by kind of task")
    axes[2].set_title("constant lr, batch 64", fontsize=10)
    axes[2].legend(fontsize=6, ncol=2)
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("SGD steps")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=6, ncol=2)
    fig.suptitle("Mamba on validation tasks held out from the training tasks (mean ± SEM over seeds)")
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "fig_tune.png"), dpi=120)
    plt.close(fig)


def plot_all(args, main_runs, sens, gate, data_cfg):
    """The four figures of the main run."""
    plt = _plt()
    series = collect(args, main_runs, sens, data_cfg)
    n = len(main_runs)
    fine = np.linspace(0, 0.95, 96)

    # Fig. 2 of the paper: error vs alpha per corruption, plus flipped labels by kind of task.
    fig, axes = plt.subplots(2, 2, figsize=(12, 9), sharey=True)
    axes = axes.ravel()
    for ax, c in zip(axes, CORRUPTIONS):
        for m in MODELS:
            mean, sem, _ = mean_sem(series[("main", "default", m, c)])
            ax.errorbar(ALPHAS, mean[0], yerr=sem[0], marker="o", ms=4, capsize=3, color=COLORS[m],
                        label=LABELS[m])
        ax.plot(fine, error_floor(fine, data_cfg.l, c), "k--", lw=1.2, label="exact floor (same-pattern vote)")
        ax.plot(fine, clean_vote_floor(fine, data_cfg.l, c), ":", color="gray", lw=1.2,
                label="floor of a vote of all clean examples")
        ax.set_title(f"{c} labels on outlier examples")
    ax = axes[3]
    for m in MODELS:
        mean, sem, _ = mean_sem(series[("main", "default", m, "flipped")])
        for j, ls in ((1, "-"), (2, "--")):
            ax.errorbar(ALPHAS, mean[j], yerr=sem[j], marker="o", ms=3, capsize=2, ls=ls, color=COLORS[m],
                        label=f"{LABELS[m]}: {SUBSET_LABELS[SUBSETS[j]]}")
    ax.plot(fine, error_floor(fine, data_cfg.l, "flipped"), "k--", lw=1.2)
    ax.plot(fine, clean_vote_floor(fine, data_cfg.l, "flipped"), ":", color="gray", lw=1.2)
    ax.set_title("flipped labels, by kind of test task (a, b)")
    for ax in axes:
        ax.set_xlabel("test outlier fraction alpha")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=7)
    for ax in axes[::2]:
        ax.set_ylabel("test classification error (held-out tasks)")
    fig.suptitle(f"Error vs outlier fraction, mean ± SEM over {n} seeds "
                 f"(split {data_cfg.task_split}, l = {data_cfg.l})")
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "fig_error_vs_alpha.png"), dpi=110)
    plt.close(fig)

    # Training curves: hinge loss and test error (clean, and alpha = 0.5 flipped) vs step.
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    keys = (("loss", "training hinge loss (p_a = 0.6, random outlier labels)"),
            ("error_clean", "test error, clean prompts (alpha = 0)"),
            ("error_flipped_0.5", "test error, alpha = 0.5, flipped labels"))
    for m in MODELS:
        steps = main_runs[0]["history"][m]["step"]
        for ax, (key, label) in zip(axes, keys):
            mean, sem, _ = mean_sem([r["history"][m][key] for r in main_runs])
            ax.plot(steps, mean, color=COLORS[m], label=LABELS[m])
            ax.fill_between(steps, mean - sem, mean + sem, color=COLORS[m], alpha=0.25)
            ax.set_ylabel(label)
    axes[0].set_yscale("log")
    for ax in axes:
        ax.set_xlabel("SGD step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Training curves, mean ± SEM over {n} seeds (test curves on 1000 fixed test prompts)")
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "fig_training.png"), dpi=110)
    plt.close(fig)

    # Fig. 4 of the paper: the learned gate on a test prompt at alpha = 0.3.
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    ex = gate["example"]
    pos = np.arange(1, len(ex["G"]) + 1)
    axes[0].bar(pos, ex["G"], color=["tab:red" if o else "tab:green" for o in ex["outlier"]], edgecolor="k")
    for p, g, same in zip(pos, ex["G"], ex["same"]):
        if same:
            axes[0].text(p, g, "q", ha="center", va="bottom", fontsize=8)
    axes[0].set_xlabel(f"example position (the query follows position {len(pos)})")
    axes[0].set_ylabel("gate weight G_i")
    axes[0].set_title("one test prompt: green clean, red outlier, q = query's pattern")
    for name, color in (("clean", "tab:green"), ("outlier", "tab:red")):
        axes[1].semilogy(pos, gate["mean"][name], "o-", color=color, label=f"{name} examples")
    axes[1].set_xlabel("example position")
    axes[1].set_ylabel("mean gate weight G_i (log scale)")
    axes[1].set_title(f"mean over {gate['n']} test prompts")
    axes[1].legend()
    for ax in axes:
        ax.set_xticks(pos[::2] if len(pos) > 12 else pos)
        ax.grid(alpha=0.3)
    fig.suptitle(f"Learned Mamba gate at alpha = {gate['alpha']} (seed {args.seed}): small on outliers, "
                 "decaying with distance from the query")
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "fig_gates.png"), dpi=120)
    plt.close(fig)

    if ("direction", DIRECTION_NAMES[0], "mamba", "flipped") in series:
        plot_where(args, series, n)

    # Sensitivity: one panel per knob; solid Mamba, dashed linear Transformer.
    titles = {"test_magnitude": "test outlier magnitude kappa_a'", "outlier_norm": "outlier pattern norm",
              "task_split": "task split", "lr": "learning rate (Mamba; linear gets lr / l)",
              "train_corruption": "training outlier labels"}
    panels = []
    for study, title in titles.items():
        settings = {}
        for (s, v, m, _), per_seed in series.items():
            if s == study:
                settings.setdefault(v, {})[m] = per_seed
        if len(settings) > 1:
            numeric = study in ("lr", "outlier_norm", "test_magnitude")
            order = sorted(settings, key=lambda v: float(v.split()[0]) if numeric else "(default)" not in v)
            panels.append((study, title, [(v, settings[v]) for v in order]))
    ncol = min(3, len(panels))
    nrow = -(-len(panels) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.8 * ncol, 4.2 * nrow), sharey=True, squeeze=False)
    for ax in axes.ravel()[len(panels):]:
        ax.remove()
    for ax, (_, title, settings) in zip(axes.ravel(), panels):
        for k, (label, per_model) in enumerate(settings):
            color = plt.cm.viridis(k / max(len(settings) - 1, 1) * 0.85)
            for m, ls in (("mamba", "-"), ("linear", "--")):
                mean, _, _ = mean_sem(per_model[m])
                ax.plot(ALPHAS, mean[0], ls, marker="o", ms=3, color=color,
                        label=f"{label}, {len(per_model[m])} seeds" if m == "mamba" else None)
        ax.plot(ALPHAS, error_floor(ALPHAS, data_cfg.l, "flipped"), "k:", lw=1)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("test outlier fraction alpha")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, title="solid Mamba, dashed linear", title_fontsize=7)
    for ax in axes[:, 0]:
        ax.set_ylabel("test error, flipped labels (all test tasks)")
    fig.suptitle("Sensitivity under flipped labels, mean over seeds (dotted: exact floor).\n"
                 "Each panel changes one knob of the default design.", fontsize=10)
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "fig_sensitivity.png"), dpi=110)
    plt.close(fig)


def plot_where(args, series, n):
    """fig_directions_positions.png: flipped-label error against alpha for each test outlier
    direction (left) and each outlier position (right); solid Mamba, dashed linear."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    panels = ((axes[0], [(f"{d} (sum {s})", ("direction", d)) for d, s in zip(DIRECTION_NAMES, (0.9, 0.5, 0.3))]
               + [("all three", ("main", "default"))], "test outlier direction (independent positions)"),
              (axes[1], [(POSITION_LABELS[p], ("position", p)) for p in POSITIONS],
               "where the round(alpha l) outliers sit (all directions)"))
    for ax, settings, title in panels:
        for k, (label, (study, setting)) in enumerate(settings):
            color = plt.cm.viridis(k / max(len(settings) - 1, 1) * 0.85)
            for m, ls in (("mamba", "-"), ("linear", "--")):
                mean, sem, _ = mean_sem(series[(study, setting, m, "flipped")])
                ax.errorbar(ALPHAS, mean[0], yerr=sem[0], ls=ls, marker="o", ms=3, capsize=2, color=color,
                            label=label if m == "mamba" else None)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("test outlier fraction alpha")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, title="solid Mamba, dashed linear", title_fontsize=7)
    axes[0].set_ylabel("test error, flipped labels (all test tasks)")
    fig.suptitle(f"Test outlier directions and positions, mean ± SEM over {n} seeds (same trained models)")
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "fig_directions_positions.png"), dpi=110)
    plt.close(fig)
