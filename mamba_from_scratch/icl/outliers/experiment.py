"""``python -m mamba_from_scratch outliers``: paper 3's experiments end to end.

For each seed (a fresh draw of the patterns, the task split, the initialisation, the
training prompts and the test prompts) it trains the one-layer Mamba and the linear
Transformer by SGD on the hinge loss, on the same batches, then measures the classification
error on the held-out test tasks against the test outlier fraction alpha for the three label
corruptions, both models on the same test prompts. Every error is also split by the kind of
test task: its mirror (b, a) was a training task, or it was held out too.

Two test-time studies reuse the main runs' models on extra test prompts: each of the
paper's test outlier directions alone (flipped labels), and where the outliers sit (exactly
round(alpha l) of them farthest from the query, at random, or closest to it; all three
corruptions), the paper's Table 1.

Sensitivity studies, each under flipped labels: the test outlier magnitude and the learning
rate reuse the main runs (extra models trained on the same batches, extra test prompts);
the outlier norm, the task split and the training corruption retrain both models.

``--tune`` instead chooses the Mamba's SGD settings on validation tasks held out from the
training tasks (the test tasks are never looked at) and writes tune.csv / tune.md /
fig_tune.png.

Writes into --out: metrics.csv, table.md, results.json and the figures
fig_error_vs_alpha.png, fig_training.png, fig_gates.png, fig_sensitivity.png.
Tested in tests/test_outliers_cli.py.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, replace

import numpy as np

from ...optim import TrainingDiverged
from ...rng import outlier_streams
from ...runtime import tune_process
from ...validate import check_output_dir, check_positive_float, check_positive_int
from .data import (
    CORRUPTIONS,
    DIRECTION_NAMES,
    POSITIONS,
    TASK_SPLITS,
    DataConfig,
    hold_out,
    make_patterns,
    mirror_seen,
    sample_prompts,
    split_tasks,
)
from .design import ALPHAS, LR_SCALES, MAGNITUDES, SUBSETS, VAL_SETS, model_key, model_lrs
from .model import MODELS, ModelConfig, gates, init_params, model_forward
from .report import plot_all, plot_tune, write_metrics, write_table, write_tune
from .train import SCHEDULES, TrainConfig, error_rate, train


def pattern_scores(params: dict, patterns, tasks) -> np.ndarray:
    """(T, 2): the same-pattern score mu_a^T W mu_a and the cross score mu_b^T W mu_a of each
    task (a, b), divided by beta^2, with W = W_B^T W_C on the inputs (example b, query a).
    A positive cross score makes an example of the other class vote for the query's class."""
    d = patterns.mu.shape[1]
    S = patterns.mu @ (params["W_B"].T @ params["W_C"])[:d, :d] @ patterns.mu.T  # (M1, M1)
    S /= np.sum(patterns.mu[0] ** 2)
    return np.array([[S[a, a], S[b, a]] for a, b in np.asarray(tasks).tolist()])


def subset_errors(err: np.ndarray, seen: np.ndarray) -> list:
    """Mean error over all prompts, over those whose task's mirror was trained, and over the
    rest (NaN where a subset is empty)."""
    out = [err.mean()]
    for mask in (seen, ~seen):
        out.append(err[mask].mean() if mask.any() else np.nan)
    return out


def run_seed(seed: int, data_cfg: DataConfig, train_cfg: TrainConfig, n_test: int,
             corruptions=CORRUPTIONS, lr_scales=(1.0,), magnitudes=(), placement=False,
             keep=False, desc=None) -> dict:
    """Train both models (at each lr scale) on one seed and measure their test errors.

    Args:
        seed: seeds every random draw of this run (patterns, split, init, prompts).
        data_cfg, train_cfg: the design; train_cfg.lr is the Mamba's (see model_lrs).
        n_test: test prompts per (corruption, alpha) point, shared by all models.
        corruptions: label corruptions to evaluate at test time.
        lr_scales: learning rates to train, as multiples of train_cfg.lr; all start from the
            same initialisation and see the same batches.
        magnitudes: extra test outlier magnitudes (flipped labels, lr scale 1 only).
        placement: also measure each test outlier direction alone (flipped labels) and each
            outlier position (POSITIONS, every corruption), lr scale 1 only.
        keep: also return the trained parameters, patterns and tasks.
    Returns:
        {"errors": {key: {corruption: (3, len(ALPHAS)) rows SUBSETS}},
         "magnitude": {kappa: {model: (3, len(ALPHAS))}}, "history": {key: ...},
         "direction": {name: {model: (3, len(ALPHAS))}} (flipped labels),
         "position": {position: {corruption: {model: (3, len(ALPHAS))}}},
         "scores": {key: (T_test, 2)}, "mirror_seen": (T_test,), "train_s": seconds}
    """
    rng = outlier_streams(seed)
    patterns = make_patterns(data_cfg, rng["data"])
    train_tasks, test_tasks = split_tasks(data_cfg, rng["split"])
    seen = mirror_seen(test_tasks, train_tasks)                     # (T_test,)
    curves = {name: sample_prompts(data_cfg, patterns, test_tasks, min(n_test, 1000), alpha,
                                   "flipped", rng["test"], test=True)
              for name, alpha in (("clean", 0.0), ("flipped_0.5", 0.5))}
    init = {m: init_params(ModelConfig(data_cfg.d + 1, m), rng["init"]) for m in MODELS}
    base_lr = model_lrs(train_cfg.lr, data_cfg.l)
    models, lrs = {}, {}
    for scale in lr_scales:
        for m in MODELS:
            models[model_key(m, scale)] = {k: v.copy() for k, v in init[m].items()}
            lrs[model_key(m, scale)] = base_lr[m] * scale
    t0 = time.perf_counter()
    history = train(models, lrs, data_cfg, patterns, train_tasks, train_cfg, rng["train"],
                    curves, desc=desc)
    out = {"history": history, "train_s": time.perf_counter() - t0, "mirror_seen": seen,
           "scores": {k: pattern_scores(p, patterns, test_tasks) for k, p in models.items()},
           "errors": {k: {} for k in models}, "magnitude": {}, "direction": {}, "position": {}}

    def errors_on(cfg, corruption, keys, **where):
        rows = {k: [] for k in keys}
        for alpha in ALPHAS:
            prompts = sample_prompts(cfg, patterns, test_tasks, n_test, float(alpha), corruption,
                                     rng["test"], test=True, **where)
            for k in keys:
                F, _ = model_forward(models[k], ModelConfig.of(models[k]), prompts.tokens)
                rows[k].append(subset_errors(error_rate(F, prompts.y_query), seen[prompts.task]))
        return {k: np.array(v).T for k, v in rows.items()}          # (3, len(ALPHAS)) each

    for corruption in corruptions:
        for k, e in errors_on(data_cfg, corruption, list(models)).items():
            out["errors"][k][corruption] = e
    for kappa in magnitudes:
        if kappa == data_cfg.kappa_a_test and "flipped" in corruptions:
            out["magnitude"][kappa] = {m: out["errors"][m]["flipped"] for m in MODELS}
        else:
            out["magnitude"][kappa] = errors_on(replace(data_cfg, kappa_a_test=float(kappa)),
                                                "flipped", MODELS)
    if placement:  # drawn after the main test prompts, so those stay as they were
        for j, name in enumerate(DIRECTION_NAMES):
            out["direction"][name] = errors_on(data_cfg, "flipped", MODELS, directions=[j])
        for pos in POSITIONS:
            out["position"][pos] = {c: errors_on(data_cfg, c, MODELS, position=pos)
                                    for c in corruptions}
    if keep:
        out.update(params=models, patterns=patterns, test_tasks=test_tasks, test_rng=rng["test"])
    return out


def gate_profile(params, data_cfg, patterns, test_tasks, rng, n=2000, alpha=0.3):
    """Gate weights of the trained Mamba at alpha: one example prompt, and over n prompts the
    mean weight of clean and of outlier examples by position."""
    prompts = sample_prompts(data_cfg, patterns, test_tasks, n, alpha, "flipped", rng, test=True)
    G, _ = gates(prompts.tokens, params["w"])                            # (n, L)
    G = G[:, :-1]                                                   # (n, l) examples only
    mean = {}
    for name, mask in (("clean", ~prompts.outlier), ("outlier", prompts.outlier)):
        total = np.where(mask, G, 0.0).sum(axis=0)
        mean[name] = (total / np.maximum(mask.sum(axis=0), 1)).tolist()  # position 1..l
    return {"example": {"G": G[0].tolist(), "outlier": prompts.outlier[0].tolist(),
                        "same": prompts.same[0].tolist()},
            "mean": mean, "n": n, "alpha": alpha,
            "mean_clean_over_outlier": float(G[~prompts.outlier].mean() / G[prompts.outlier].mean())}


def tune(args, data_cfg: DataConfig, base: TrainConfig) -> dict:
    """Choose the Mamba's lr, schedule, steps and batch on validation tasks.

    Per seed the test tasks are split off exactly as in the main runs and never used. From
    the training tasks, ``n_val_pairs`` more are held out by the same rule as the test split
    (so validation tasks resemble test tasks: some have a trained mirror, some not); the
    models train on the rest. Validation prompts use the *training* outlier directions and
    magnitude; the score is the mean of the clean error (alpha = 0) and the error at
    alpha = 0.5 with flipped labels. The chosen setting is the cheapest whose score is
    within one SEM of the best (the one-standard-error rule). All learning rates of one (schedule, batch, steps) run
    share batches; a constant schedule is scored at several step counts of one run.
    Returns:
        {"rows": [...], "best": row, "chosen": row, "best_clean": row}, each row one setting
        with mean and SEM over seeds of each validation error (VAL_SETS) and of the score.
    """
    lrs = (0.005, 0.015, 0.05, 0.15)
    checkpoints = (1000, 2000, 3000, 6000, 9000)
    runs = [("constant", 64, max(checkpoints)), ("constant", 256, 3000)]
    runs += [("cosine", 64, s) for s in (1000, 3000, 9000)]
    if args.quick:
        lrs, checkpoints, runs = (0.015, 0.05), (300, 600), [("constant", 64, 600)]
    rule = "pairs" if data_cfg.task_split == "pairs" else "ordered"
    n_val_pairs = 2 if rule == "pairs" else 3
    scores = {}
    for seed in [args.seed + i for i in range(args.seeds)]:
        rng = outlier_streams(seed)
        patterns = make_patterns(data_cfg, rng["data"])
        train_tasks, _ = split_tasks(data_cfg, rng["split"])       # the test tasks: set aside
        fit_tasks, val_tasks = hold_out(train_tasks, rule, n_val_pairs, rng["val"])
        val = {name: sample_prompts(data_cfg, patterns, val_tasks, args.n_test, alpha, "flipped",
                                    rng["val"])
               for name, alpha in (("clean", 0.0), ("flipped", 0.5))}
        # where the clean error comes from: validation tasks whose mirror is trained, or not
        seen = mirror_seen(val_tasks, fit_tasks)
        for name, mask in (("clean_mirror_trained", seen), ("clean_mirror_held_out", ~seen)):
            if mask.any():
                val[name] = sample_prompts(data_cfg, patterns, val_tasks[mask], args.n_test, 0.0,
                                           "flipped", rng["val"])
        init = init_params(ModelConfig(data_cfg.d + 1, "mamba"), rng["init"])
        for schedule, batch, steps in runs:
            cfg = replace(base, schedule=schedule, batch=batch, steps=steps,
                          eval_every=min(checkpoints) if schedule == "constant" else steps)
            models = {lr: {k: v.copy() for k, v in init.items()} for lr in lrs}
            histories = train(models, {lr: lr for lr in lrs}, data_cfg, patterns, fit_tasks, cfg,
                              np.random.default_rng(rng["train"].integers(2**63)), val,
                              desc=f"tune seed {seed} {schedule} batch {batch}")
            for lr, hist in histories.items():
                for i, step in enumerate(hist["step"]):
                    if step in checkpoints or step == steps:
                        key = (schedule, batch, step, lr)
                        scores.setdefault(key, []).append(
                            [hist.get(f"error_{e}", [np.nan] * (i + 1))[i] for e in VAL_SETS])
    rows = []
    for (schedule, batch, steps, lr), per_seed in sorted(scores.items()):
        a = np.array(per_seed)                                      # (seeds, len(VAL_SETS))
        row = {"schedule": schedule, "batch": batch, "steps": steps, "lr": lr}
        for j, name in enumerate(VAL_SETS):
            x = a[:, j][~np.isnan(a[:, j])]
            row[f"val_{name}"] = float(x.mean()) if len(x) else np.nan
            row[f"val_{name}_sem"] = float(x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else 0.0
        score = a[:, :2].mean(axis=1)                               # (seeds,)
        row.update(score=float(score.mean()), n_seeds=len(a),
                   score_sem=float(score.std(ddof=1) / np.sqrt(len(a))) if len(a) > 1 else 0.0)
        rows.append(row)
    best = min(rows, key=lambda r: r["score"])
    # one-standard-error rule: the cheapest setting (fewest training prompts) whose score is
    # within one SEM of the best; the grid's top is flat, so this saves time at no cost
    near = [r for r in rows if r["score"] <= best["score"] + best["score_sem"]]
    chosen = min(near, key=lambda r: (r["steps"] * r["batch"], r["score"]))
    return {"rows": rows, "best": best, "chosen": chosen,
            "best_clean": min(rows, key=lambda r: r["val_clean"]),
            "n_val_pairs": n_val_pairs, "rule": rule, "lrs": list(lrs)}


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m mamba_from_scratch outliers",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="results/outliers", help="output directory")
    p.add_argument("--quick", action="store_true",
                   help="one seed, 1000 steps, 1000 test prompts, only the test-magnitude and lr "
                        "studies (<= 60 s); --seeds, --steps, --n-test and --sens-seeds given "
                        "explicitly still apply")
    p.add_argument("--tune", action="store_true",
                   help="choose lr / schedule / steps / batch on validation tasks instead")
    p.add_argument("--seeds", type=int, default=None,
                   help="seeds of the main comparison (default 10; --tune: 4)")
    p.add_argument("--sens-seeds", type=int, default=None,
                   help="seeds of each sensitivity setting (the first seeds of the main runs; default 5)")
    p.add_argument("--steps", type=int, default=None,
                   help="SGD steps per model (default 1000: with lr 0.05, batch 64, chosen by --tune)")
    p.add_argument("--batch", type=int, default=64, help="prompts per SGD step")
    p.add_argument("--lr", type=float, default=0.05, help="Mamba's SGD step (linear gets lr / l)")
    p.add_argument("--schedule", choices=SCHEDULES, default="constant", help="learning-rate schedule")
    p.add_argument("--n-test", type=int, default=None, help="test prompts per (corruption, alpha) (default 4000)")
    p.add_argument("--split", choices=TASK_SPLITS, default="ordered", help="train/test task split")
    p.add_argument("--method", choices=("closed", "scan"), default="closed",
                   help="compute the gated sum in closed form or through the selective scan")
    p.add_argument("--seed", type=int, default=0, help="first seed")
    a = p.parse_args(argv)
    # Explicit options win; --quick (or --tune) only changes the defaults of those not given,
    # so what results.json records as the arguments is what ran.
    defaults = dict(seeds=4 if a.tune else 10, steps=1000, n_test=4000, sens_seeds=5)
    if a.quick:
        defaults.update(seeds=1, steps=1000, n_test=1000, sens_seeds=1)
    for name, value in defaults.items():
        if getattr(a, name) is None:
            setattr(a, name, value)
    for name in ("seeds", "steps", "batch", "n_test"):
        check_positive_int(f"--{name.replace('_', '-')}", getattr(a, name))
    check_positive_int("--sens-seeds", a.sens_seeds, minimum=0)
    check_positive_int("--seed", a.seed, minimum=0)
    check_positive_float("--lr", a.lr)
    a.sens_seeds = min(a.sens_seeds, a.seeds)
    return a


def main(argv=None) -> int:
    args = parse_args(argv)
    check_output_dir("--out", args.out)
    try:
        return run(args, argv)
    except TrainingDiverged as e:
        summary_path = os.path.join(args.out, "train_summary.json")
        message = f"{e}; outliers writes no checkpoint, so nothing was saved but {summary_path}"
        with open(summary_path, "w") as f:
            json.dump({"status": "diverged", "step": e.step, "message": message, "args": vars(args)}, f, indent=1)
        print(f"training diverged: {message}", file=sys.stderr)
        return 1


def run(args, argv):
    """The experiment (or --tune) for parsed, checked options; see :func:`main`."""
    tune_process()  # tiny matmuls: OpenBLAS threads on a busy machine made them 30x slower
    t_start, load_start = time.perf_counter(), os.getloadavg()
    command = "python -m mamba_from_scratch outliers " + " ".join(argv or [])
    data_cfg = DataConfig(task_split=args.split).validate()
    train_cfg = TrainConfig(steps=args.steps, batch=args.batch, lr=args.lr, schedule=args.schedule,
                            eval_every=max(args.steps // 40, 1), method=args.method).validate()
    if args.tune:
        result = tune(args, data_cfg, train_cfg)
        timing = {"wall_s": time.perf_counter() - t_start, "load_start": load_start,
                  "load_end": os.getloadavg()}
        write_tune(args, result, command, timing)
        plot_tune(args, result)
        print(open(os.path.join(args.out, "tune.md")).read())
        return 0

    seeds = [args.seed + i for i in range(args.seeds)]
    sens_seeds = seeds[:args.sens_seeds]
    main_runs = [run_seed(s, data_cfg, train_cfg, args.n_test,
                          lr_scales=(1.0,) + (LR_SCALES if s in sens_seeds else ()),
                          magnitudes=MAGNITUDES, placement=True, keep=(i == 0), desc=f"seed {s}")
                 for i, s in enumerate(seeds)]
    first = main_runs[0]
    gate = gate_profile(first["params"]["mamba"], data_cfg, first["patterns"], first["test_tasks"],
                        first["test_rng"])

    # Retraining studies: each changes one knob of the main design; flipped labels only.
    other_splits = [s for s in TASK_SPLITS if s != args.split]
    studies = [("outlier_norm", v) for v in (0.5, 3.0)] + [("task_split", s) for s in other_splits]
    studies += [("corruption", "flipped")]
    sens = {}
    for key, value in (studies if not args.quick else []):
        dc = replace(data_cfg, **{key: value}) if hasattr(data_cfg, key) else data_cfg
        tc = replace(train_cfg, **{key: value}) if hasattr(train_cfg, key) else train_cfg
        study = "train_corruption" if key == "corruption" else key
        sens[(study, f"{value:g}" if isinstance(value, float) else value)] = [
            run_seed(s, dc, tc, args.n_test, corruptions=("flipped",), desc=f"{study}={value} seed {s}")
            for s in sens_seeds]

    timing = {"wall_s": time.perf_counter() - t_start, "load_start": load_start,
              "load_end": os.getloadavg(), "train_s_per_seed": float(np.mean([r["train_s"] for r in main_runs]))}
    rows, summary = write_metrics(args, main_runs, sens, data_cfg)
    results = {
        "command": command, "data_config": asdict(data_cfg), "train_config": asdict(train_cfg),
        "lr_per_model": model_lrs(args.lr, data_cfg.l), "seeds": seeds, "sens_seeds": sens_seeds,
        "alphas": ALPHAS.tolist(), "subsets": list(SUBSETS), "n_test": args.n_test,
        "timing": timing, "gate_alpha_0.3": gate, "summary": summary,
        "main": [{"errors": r["errors"], "history": r["history"], "train_s": r["train_s"],
                  "mirror_seen": r["mirror_seen"], "scores": r["scores"],
                  "magnitude": {f"{k:g}": v for k, v in r["magnitude"].items()},
                  "direction": r["direction"], "position": r["position"]} for r in main_runs],
        "sensitivity": {f"{s}={v}": [r["errors"] for r in runs] for (s, v), runs in sens.items()},
    }
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(to_json(results), f, indent=1)
    write_table(args, rows, summary, gate, timing, command)
    plot_all(args, main_runs, sens, gate, data_cfg)
    print(open(os.path.join(args.out, "table.md")).read())
    print(f"wrote {args.out}/ in {timing['wall_s']:.0f} s (load average {load_start[0]:.1f} at the start)")
    return 0


def to_json(x):
    """Arrays to lists and NaN to None, recursively, so json.dump writes standard JSON."""
    if isinstance(x, dict):
        return {str(k): to_json(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_json(v) for v in x]
    if isinstance(x, np.ndarray):
        return to_json(x.tolist())
    if isinstance(x, (float, np.floating)):
        return None if np.isnan(x) else float(x)
    if isinstance(x, np.bool_):
        return bool(x)
    if isinstance(x, np.integer):
        return int(x)
    return x
