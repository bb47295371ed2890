"""``python -m mamba_from_scratch outliers``: paper 3's experiments end to end.

For each seed (a fresh draw of the patterns, the task split, both initialisations, the
training prompts and the test prompts) it trains the one-layer Mamba and the linear
Transformer by SGD on the hinge loss, then measures the classification error on held-out
tasks against the test outlier fraction alpha for the three label corruptions, with both
models evaluated on the same prompts. Then the sensitivity studies the issue asks for, each
under flipped labels: test outlier magnitude (evaluation only), outlier norm, task split,
learning rate and the training corruption (each retrains both models).

Writes into --out: metrics.csv, table.md, results.json and the figures
fig_error_vs_alpha.png, fig_training.png, fig_gates.png, fig_sensitivity.png.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import time
from dataclasses import asdict, replace

import numpy as np

from ...validate import check_positive_int
from .data import CORRUPTIONS, TASK_SPLITS, DataConfig, make_patterns, sample_prompts, split_tasks
from .floor import error_floor
from .model import MODELS, gates, init_params, model_forward
from .train import TrainConfig, error_rate, train

ALPHAS = np.round(np.arange(10) / 10, 1)
LABELS = {"mamba": "one-layer Mamba", "linear": "linear Transformer"}
COLORS = {"mamba": "tab:blue", "linear": "tab:orange"}


def model_lrs(lr: float, l: int) -> dict:
    """Mamba's gate weights sum to at most 1, the linear Transformer's G = 1 sum to l, so
    its output and gradients are ~l times larger: it gets lr / l for a comparable step."""
    return {"mamba": lr, "linear": lr / l}


def cross_scores(params: dict, patterns, tasks) -> tuple[float, float]:
    """Mean same-pattern score mu_a^T W mu_a and cross score mu_b^T W mu_a over tasks (a, b),
    both divided by beta^2, with W = W_B^T W_C restricted to the inputs. The floor argument
    needs the cross score small next to the same-pattern score on the test tasks."""
    d = patterns.mu.shape[1]
    W = (params["W_B"].T @ params["W_C"])[:d, :d]                    # (d, d)
    mu = patterns.mu
    beta2 = float(np.sum(mu[0] ** 2))
    same = np.mean([mu[a] @ W @ mu[a] for a, _ in tasks]) / beta2
    cross = np.mean([mu[b] @ W @ mu[a] for a, b in tasks]) / beta2
    return float(same), float(cross)


def run_seed(seed: int, data_cfg: DataConfig, train_cfg: TrainConfig, n_test: int,
             corruptions=CORRUPTIONS, test_magnitudes=(), keep=False, desc="") -> dict:
    """Train both models on one seed and measure their test errors.

    Args:
        seed: seeds every random draw of this run (patterns, split, init, prompts).
        data_cfg, train_cfg: the design; train_cfg.lr is the Mamba's (see model_lrs).
        n_test: test prompts per (corruption, alpha) point, shared by both models.
        corruptions: label corruptions to evaluate at test time.
        test_magnitudes: extra test outlier magnitudes to evaluate (flipped labels only).
        keep: also return the trained parameters, patterns and tasks.
    Returns:
        {"errors": {model: {corruption: [error per alpha]}}, "history": {model: ...},
         "magnitude": {kappa: {model: [...]}}, "scores": {model: {...}}, "train_s": {...}}
    """
    data_rng, split_rng, init_rng, train_rng, test_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(5))
    patterns = make_patterns(data_cfg, data_rng)
    train_tasks, test_tasks = split_tasks(data_cfg, split_rng)
    curve_prompts = sample_prompts(data_cfg, patterns, test_tasks, min(n_test, 1000), 0.5,
                                   "flipped", test_rng, test=True)
    lrs = model_lrs(train_cfg.lr, data_cfg.l)
    out = {"errors": {}, "history": {}, "magnitude": {}, "scores": {}, "train_s": {}}
    params = {}
    for model in MODELS:
        params[model] = init_params(data_cfg.d + 1, model, init_rng)
        t0 = time.perf_counter()
        out["history"][model] = train(params[model], data_cfg, patterns, train_tasks,
                                      replace(train_cfg, lr=lrs[model]), train_rng,
                                      curve_prompts, desc=f"{desc} {model}".strip() or None)
        out["train_s"][model] = time.perf_counter() - t0
        out["scores"][model] = {
            "test_same_cross": cross_scores(params[model], patterns, test_tasks),
            "train_same_cross": cross_scores(params[model], patterns, train_tasks)}
        out["errors"][model] = {c: [] for c in corruptions}

    def errors_on(cfg, corruption, into):
        for alpha in ALPHAS:
            prompts = sample_prompts(cfg, patterns, test_tasks, n_test, float(alpha), corruption,
                                     test_rng, test=True)
            for model in MODELS:
                F, _ = model_forward(params[model], prompts.P)
                into[model].append(float(error_rate(F, prompts.y_query).mean()))

    for corruption in corruptions:
        errors_on(data_cfg, corruption, {m: out["errors"][m][corruption] for m in MODELS})
    for kappa in test_magnitudes:
        out["magnitude"][kappa] = {m: [] for m in MODELS}
        errors_on(replace(data_cfg, kappa_a_test=float(kappa)), "flipped", out["magnitude"][kappa])
    if keep:
        out.update(params=params, patterns=patterns, test_tasks=test_tasks, test_rng=test_rng)
    return out


def mean_sem(rows):
    """Mean and standard error over seeds (axis 0); the SEM is 0 for a single seed."""
    a = np.asarray(rows, dtype=float)
    sem = a.std(axis=0, ddof=1) / np.sqrt(len(a)) if len(a) > 1 else np.zeros(a.shape[1:])
    return a.mean(axis=0), sem


def gate_profile(params, data_cfg, patterns, test_tasks, rng, n=2000, alpha=0.3):
    """Gate weights of the trained Mamba at alpha: one example prompt, and over n prompts the
    mean weight of clean and of outlier examples by distance from the query."""
    prompts = sample_prompts(data_cfg, patterns, test_tasks, n, alpha, "flipped", rng, test=True)
    G, _ = gates(prompts.P, params["w"])                            # (n, L)
    G = G[:, :-1]                                                   # (n, l) examples only
    mean = {}
    for name, mask in (("clean", ~prompts.outlier), ("outlier", prompts.outlier)):
        total = np.where(mask, G, 0.0).sum(axis=0)
        mean[name] = (total / np.maximum(mask.sum(axis=0), 1)).tolist()  # position 0..l-1
    return {"example": {"G": G[0].tolist(), "outlier": prompts.outlier[0].tolist(),
                        "same": prompts.same[0].tolist()},
            "mean": mean,
            "mean_clean_over_outlier": float(G[~prompts.outlier].mean() / G[prompts.outlier].mean())}


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m mamba_from_scratch outliers",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="results/outliers", help="output directory")
    p.add_argument("--quick", action="store_true",
                   help="one seed, 1000 steps, 1000 test prompts, no retraining studies (<= 60 s)")
    p.add_argument("--seeds", type=int, default=5, help="seeds of the main comparison")
    p.add_argument("--sens-seeds", type=int, default=3, help="seeds of each sensitivity setting")
    p.add_argument("--steps", type=int, default=3000, help="SGD steps per model")
    p.add_argument("--batch", type=int, default=64, help="prompts per SGD step")
    p.add_argument("--lr", type=float, default=0.05, help="Mamba's SGD step (linear gets lr / l)")
    p.add_argument("--n-test", type=int, default=4000, help="test prompts per (corruption, alpha)")
    p.add_argument("--split", choices=TASK_SPLITS, default="pairs", help="train/test task split")
    p.add_argument("--method", choices=("closed", "scan"), default="closed",
                   help="compute the gated sum in closed form or through the selective scan")
    p.add_argument("--seed", type=int, default=0, help="first seed")
    a = p.parse_args(argv)
    if a.quick:
        a.seeds, a.sens_seeds, a.steps, a.n_test = 1, 0, 1000, 1000
    for name in ("seeds", "steps", "batch", "n_test"):
        check_positive_int(f"--{name.replace('_', '-')}", getattr(a, name))
    return a


def main(argv=None) -> int:
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    t_start = time.perf_counter()
    data_cfg = DataConfig(task_split=args.split).validate()
    train_cfg = TrainConfig(steps=args.steps, batch=args.batch, lr=args.lr,
                            eval_every=max(args.steps // 30, 1), method=args.method).validate()
    seeds = [args.seed + i for i in range(args.seeds)]
    magnitudes = (1.0, 2.0, 3.0, 4.0)

    main_runs = [run_seed(s, data_cfg, train_cfg, args.n_test, test_magnitudes=magnitudes,
                          keep=(i == 0), desc=f"seed {s}") for i, s in enumerate(seeds)]
    first = main_runs[0]
    gate = gate_profile(first["params"]["mamba"], data_cfg, first["patterns"], first["test_tasks"],
                        first["test_rng"])

    # Retraining studies: each changes one knob of the main design; flipped labels only.
    studies = {"outlier_norm": [("outlier_norm", v) for v in (0.5, 3.0)],
               "task_split": [("task_split", v) for v in ("ordered", "shared") if v != args.split],
               "lr": [("lr", args.lr * f) for f in (0.3, 3.0)],
               "train_corruption": [("corruption", "flipped")]}
    sens = {}
    sens_seeds = [args.seed + i for i in range(args.sens_seeds)]
    for study, settings in studies.items():
        for key, value in settings:
            if not sens_seeds:
                continue
            dc = replace(data_cfg, **{key: value}) if hasattr(data_cfg, key) else data_cfg
            tc = replace(train_cfg, **{key: value}) if hasattr(train_cfg, key) else train_cfg
            runs = [run_seed(s, dc, tc, args.n_test, corruptions=("flipped",),
                             desc=f"{study}={value} seed {s}") for s in sens_seeds]
            sens[(study, f"{value:g}" if isinstance(value, float) else str(value))] = runs

    rows, summary = write_metrics(args, main_runs, sens, data_cfg, magnitudes)
    wall = time.perf_counter() - t_start
    results = {
        "command": "python -m mamba_from_scratch outliers " + " ".join(argv or []),
        "data_config": asdict(data_cfg), "train_config": asdict(train_cfg),
        "lr_per_model": model_lrs(args.lr, data_cfg.l), "seeds": seeds, "sens_seeds": sens_seeds,
        "alphas": ALPHAS.tolist(), "n_test": args.n_test, "wall_s": wall,
        "main": [{k: r[k] for k in ("errors", "history", "scores", "train_s")}
                 | {"magnitude": {str(k): v for k, v in r["magnitude"].items()}} for r in main_runs],
        "sensitivity": {f"{s}={v}": [r["errors"]["mamba"]["flipped"] for r in runs]
                        for (s, v), runs in sens.items()},
        "sensitivity_linear": {f"{s}={v}": [r["errors"]["linear"]["flipped"] for r in runs]
                               for (s, v), runs in sens.items()},
        "gate_alpha_0.3": gate, "summary": summary,
    }
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    write_table(args, rows, summary, gate, wall)
    plot_all(args, main_runs, sens, gate, data_cfg, magnitudes)
    print(open(os.path.join(args.out, "table.md")).read())
    print(f"wrote {args.out}/ in {wall:.0f} s")
    return 0


def write_metrics(args, main_runs, sens, data_cfg, magnitudes):
    """metrics.csv: one row per (study, setting, model, corruption, alpha) with mean and SEM
    over seeds; the exact floor as model "floor"."""
    rows = []

    def add(study, setting, model, corruption, per_seed):
        m, s = mean_sem(per_seed)
        for alpha, mi, si in zip(ALPHAS, m, s):
            rows.append({"study": study, "setting": setting, "model": model, "corruption": corruption,
                         "alpha": float(alpha), "error_mean": float(mi), "error_sem": float(si),
                         "n_seeds": len(per_seed), "n_test": args.n_test})

    for model in MODELS:
        for c in CORRUPTIONS:
            add("main", "default", model, c, [r["errors"][model][c] for r in main_runs])
        for kappa in magnitudes:
            add("test_magnitude", str(kappa), model, "flipped",
                [r["magnitude"][kappa][model] for r in main_runs])
        for (study, value), runs in sens.items():
            add(study, value, model, "flipped", [r["errors"][model]["flipped"] for r in runs])
    for c in CORRUPTIONS:
        add("main", "default", "floor", c, [error_floor(ALPHAS, data_cfg.l, c)])
    with open(os.path.join(args.out, "metrics.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    summary = {
        "train_s_mean": {m: float(np.mean([r["train_s"][m] for r in main_runs])) for m in MODELS},
        "test_scores_mean": {m: np.mean([r["scores"][m]["test_same_cross"] for r in main_runs],
                                        axis=0).tolist() for m in MODELS},
        "train_scores_mean": {m: np.mean([r["scores"][m]["train_same_cross"] for r in main_runs],
                                         axis=0).tolist() for m in MODELS},
    }
    return rows, summary


def write_table(args, rows, summary, gate, wall):
    """table.md: the main comparison and every sensitivity setting, mean +- SEM over seeds."""
    def cell(r):
        return f"{r['error_mean']:.3f} ± {r['error_sem']:.3f}" if r["model"] != "floor" else f"{r['error_mean']:.3f}"

    lines = [f"# Paper 3: in-context classification with outliers", "",
             f"Error on held-out tasks, mean ± SEM over seeds ({args.n_test} test prompts per point). "
             f"Wall time {wall:.0f} s.", ""]
    for c in CORRUPTIONS:
        lines += [f"## {c} labels", "", "| alpha | " + " | ".join(f"{a:.1f}" for a in ALPHAS) + " |",
                  "|---" * (len(ALPHAS) + 1) + "|"]
        for model in MODELS + ("floor",):
            sel = [r for r in rows if r["study"] == "main" and r["model"] == model and r["corruption"] == c]
            name = LABELS.get(model, "exact floor")
            lines.append(f"| {name} | " + " | ".join(cell(r) for r in sel) + " |")
        lines.append("")
    lines += ["## Sensitivity (flipped labels)", "",
              "| study | setting | model | alpha=0 | alpha=0.3 | alpha=0.5 | alpha=0.8 |", "|---" * 7 + "|"]
    for r0 in rows:
        if r0["study"] in ("main",) or r0["alpha"] != 0.0:
            continue
        sel = {r["alpha"]: r for r in rows if (r["study"], r["setting"], r["model"], r["corruption"])
               == (r0["study"], r0["setting"], r0["model"], r0["corruption"])}
        lines.append(f"| {r0['study']} | {r0['setting']} | {LABELS[r0['model']]} | "
                     + " | ".join(cell(sel[a]) for a in (0.0, 0.3, 0.5, 0.8)) + " |")
    ts, tr = summary["test_scores_mean"], summary["train_scores_mean"]
    lines += ["", "## Learned attention scores (W = W_B^T W_C, divided by beta^2, mean over seeds)", "",
              "| model | same-pattern, test tasks | cross-pattern, test tasks | same, train tasks | cross, train tasks |",
              "|---|---|---|---|---|"]
    for m in MODELS:
        lines.append(f"| {LABELS[m]} | {ts[m][0]:.3f} | {ts[m][1]:.3f} | {tr[m][0]:.3f} | {tr[m][1]:.3f} |")
    lines += ["", f"Mamba gate at alpha = 0.3: mean weight of clean examples / outlier examples = "
              f"{gate['mean_clean_over_outlier']:.1f}.",
              f"Training time per model (s, mean over seeds): "
              + ", ".join(f"{LABELS[m]} {t:.1f}" for m, t in summary["train_s_mean"].items()), ""]
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write("\n".join(lines))


def plot_all(args, main_runs, sens, gate, data_cfg, magnitudes):
    """The four figures (matplotlib Agg, PNG)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Fig. 2 of the paper: error vs alpha, one panel per corruption, with the exact floor.
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2), sharey=True)
    for ax, c in zip(axes, CORRUPTIONS):
        for model in MODELS:
            m, s = mean_sem([r["errors"][model][c] for r in main_runs])
            ax.errorbar(ALPHAS, m, yerr=s, marker="o", ms=4, capsize=3, color=COLORS[model],
                        label=LABELS[model])
        fine = np.linspace(0, 0.95, 96)
        ax.plot(fine, error_floor(fine, data_cfg.l, c), "k--", lw=1.2,
                label="exact floor of a same-pattern vote")
        ax.set_title(f"{c} labels on outlier examples")
        ax.set_xlabel("test outlier fraction alpha")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test classification error (held-out tasks)")
    axes[0].legend(loc="upper left", fontsize=8)
    fig.suptitle(f"Error vs outlier fraction, mean ± SEM over {len(main_runs)} seeds (l = {data_cfg.l})")
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "fig_error_vs_alpha.png"), dpi=120)
    plt.close(fig)

    # Training curves: hinge loss and held-out error at alpha = 0.5 (flipped) vs step.
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for model in MODELS:
        steps = main_runs[0]["history"][model]["step"]
        for ax, key in zip(axes, ("loss", "eval_error")):
            m, s = mean_sem([r["history"][model][key] for r in main_runs])
            ax.plot(steps, m, color=COLORS[model], label=LABELS[model])
            ax.fill_between(steps, m - s, m + s, color=COLORS[model], alpha=0.25)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("training hinge loss (p_a = 0.6, random outlier labels)")
    axes[1].set_ylabel("held-out error at alpha = 0.5, flipped labels")
    for ax in axes:
        ax.set_xlabel("SGD step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Training curves (mean ± SEM over seeds)")
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "fig_training.png"), dpi=120)
    plt.close(fig)

    # Fig. 4 of the paper: the learned gate on a test prompt at alpha = 0.3.
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    ex = gate["example"]
    pos = np.arange(1, len(ex["G"]) + 1)
    colors = ["tab:red" if o else "tab:green" for o in ex["outlier"]]
    axes[0].bar(pos, ex["G"], color=colors, edgecolor="k")
    for p, g, same in zip(pos, ex["G"], ex["same"]):
        if same:
            axes[0].text(p, g, "q", ha="center", va="bottom", fontsize=8)
    axes[0].set_xlabel(f"example position (query follows position {len(pos)})")
    axes[0].set_ylabel("gate weight G_i")
    axes[0].set_title("one test prompt: green clean, red outlier, q = query's pattern")
    for name, color in (("clean", "tab:green"), ("outlier", "tab:red")):
        axes[1].semilogy(pos, gate["mean"][name], "o-", color=color, label=f"{name} examples")
    axes[1].set_xlabel("example position")
    axes[1].set_ylabel("mean gate weight G_i (log scale)")
    axes[1].set_title("mean over 2000 test prompts")
    axes[1].legend()
    for ax in axes:
        ax.set_xticks(pos[::2] if len(pos) > 12 else pos)
        ax.grid(alpha=0.3)
    fig.suptitle("Learned Mamba gate at alpha = 0.3: tiny on outliers, decaying with distance from the query")
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "fig_gates.png"), dpi=120)
    plt.close(fig)

    # Sensitivity: each panel changes one knob; solid Mamba, dashed linear Transformer.
    panels = [("test outlier magnitude kappa_a'", {f"{k:g}": [r["magnitude"][k] for r in main_runs]
                                                   for k in magnitudes})]
    default = {"outlier_norm": f"{data_cfg.outlier_norm:g}", "task_split": data_cfg.task_split,
               "lr": f"{args.lr:g}", "train_corruption": "random"}
    titles = {"outlier_norm": "outlier pattern norm", "task_split": "task split",
              "lr": "learning rate (Mamba; linear gets lr / l)", "train_corruption": "training outlier labels"}
    for study, title in titles.items():
        settings = {default[study]: [{m: r["errors"][m]["flipped"] for m in MODELS} for r in main_runs]}
        for (s, v), runs in sens.items():
            if s == study:
                label = f"{float(v):g}" if study in ("outlier_norm", "lr") else v
                settings[label] = [{m: r["errors"][m]["flipped"] for m in MODELS} for r in runs]
        if len(settings) > 1:
            panels.append((title, settings))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4), sharey=True, squeeze=False)
    for ax, (title, settings) in zip(axes[0], panels):
        for k, (label, runs) in enumerate(settings.items()):
            color = plt.cm.viridis(k / max(len(settings) - 1, 1) * 0.85)
            for model, ls in (("mamba", "-"), ("linear", "--")):
                m, _ = mean_sem([r[model] for r in runs])
                ax.plot(ALPHAS, m, ls, marker="o", ms=3, color=color,
                        label=f"{label}" if model == "mamba" else None)
        ax.plot(ALPHAS, error_floor(ALPHAS, data_cfg.l, "flipped"), "k:", lw=1)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("test outlier fraction alpha")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, title="solid Mamba, dashed linear", title_fontsize=7)
    axes[0][0].set_ylabel("test error, flipped labels")
    fig.suptitle(f"Sensitivity under flipped labels (dotted: exact floor). Defaults: kappa_a' = "
                 f"{data_cfg.kappa_a_test:g}, outlier norm {data_cfg.outlier_norm:g}, split "
                 f"{data_cfg.task_split}, lr {args.lr:g}, random training outlier labels", fontsize=10)
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "fig_sensitivity.png"), dpi=110)
    plt.close(fig)
