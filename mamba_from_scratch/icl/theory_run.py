"""icl-theory's runner: trains the one-layer model (two-stage pretraining) and scores every
method on shared test prompts, per (link, d) cell; the main run, the gate ablation, the
pretraining ablation, the sample-complexity sweeps and the product-gate sweep. Each writes
its rows through ``theory_report.py``; ``theory.py`` is the command line. Every random draw
comes from a named stream of rng.py. Tested in tests/test_icl_theory.py.
"""
from __future__ import annotations

import argparse
import math
import os
import time
from dataclasses import replace

import numpy as np
from tqdm import tqdm

from .. import rng as R
from ..files import atomic_write
from .baselines import baseline_predict, krr_baseline
from .features import relevant_features
from .gated import context_statistic, context_statistics
from .metrics import normalized_error, paired_difference
from .pretrain import PretrainConfig, practical, stage1, stage1_streamed, stage2
from .task import SingleIndexTask
from .theory_report import (
    ABLATE_PRETRAINING_COLUMNS,
    SWEEP_COLUMNS,
    SWEEP_GATES,
    ablate_pretraining_md,
    plot_error_vs_N,
    plot_pretraining,
    plot_product_gate_sweep,
    product_gate_sweep_md,
    relative_to_zero,
    table_md,
    write_csv,
    write_stage1_csv,
    write_sweep,
)


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
    cell = (link_id, task.d, task.r)  # the first tags of every stream of this cell (rng.py)
    base = dict(link=task.link.name, d=task.d, r=task.r, seed=args.seed)
    T1 = stage1_prompts or args.stage1_prompts
    pre = {}
    if args.stage1_chunk:  # streamed: chunk i of the Stage I prompts comes from its own seeded stream
        C = args.stage1_chunk
        n_chunks = math.ceil(T1 / C)

        def draw(i):
            return task.sample(_rng(args, *cell, R.THEORY_STAGE1_CHUNK, i), min(C, T1 - i * C), args.stage1_N,
                               args.n_queries)

        cfgs = [pretrain_config(args, gate) for gate in gates]
        with tqdm(total=2 * n_chunks, desc=f"Stage I {task.link.name} d={task.d} ({T1} prompts, 2 passes)",
                  leave=False, disable=args.no_progress) as sbar:
            res = stage1_streamed(task, cfgs, [_rng(args, *cell, R.THEORY_STAGE1_MLP, gi) for gi in range(len(gates))],
                                  draw, n_chunks, progress=sbar.update)
        for gate, cfg, (gamma, v, inf) in zip(gates, cfgs, res):
            pre[gate] = (cfg, gamma, v)
            info[gate] = inf
        bar.update(len(gates))
    else:
        s1 = task.sample(_rng(args, *cell, R.THEORY_STAGE1_PROMPTS), T1, args.stage1_N, args.n_queries)
        h1 = context_statistics(s1.x_context, s1.y_context, gates, args.rho, args.b0, args.backend)
        for gi, gate in enumerate(gates):
            cfg = pretrain_config(args, gate)
            gamma, v, inf = stage1(task, cfg, _rng(args, *cell, R.THEORY_STAGE1_MLP, gi), prompts=s1, h=h1[gate])
            pre[gate] = (cfg, gamma, v)
            info[gate] = dict(inf, stage1_prompts=T1)
            bar.update(1)
    for N in args.N:
        s2 = task.sample(_rng(args, *cell, R.THEORY_STAGE2_PROMPTS, N), args.stage2_prompts, N, args.n_queries)
        test = task.sample(_rng(args, *cell, R.THEORY_TEST, N), args.n_prompts, N, args.n_queries)
        target, m2 = test.y_query_clean, task.link.second_moment
        _, _, e_zero = normalized_error(np.zeros_like(target), target, m2)

        # this N's values bound as defaults: a closure would read whatever the loop holds when called
        def add(method, gate, pred, n=None, note="", N=N, target=target, m2=m2, e_zero=e_zero):
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
            model = stage2(task, cfg, gamma, v, N, _rng(args, *cell, R.THEORY_STAGE2_MLP, N, gi), prompts=s2,
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

    def ablate_rng(*tags):  # the ablation's own family of streams, [seed, THEORY_ABLATE, ...]
        return _rng(args, R.THEORY_ABLATE, *tags)

    test = task.sample(ablate_rng(R.THEORY_TEST, N), args.n_prompts, N, args.n_queries)
    s2 = task.sample(ablate_rng(R.THEORY_STAGE2_PROMPTS, N), args.stage2_prompts, N, args.n_queries)
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
                gamma, v, info = stage1(task, replace(cfg, stage1_prompts=T1),
                                        ablate_rng(R.THEORY_STAGE1_PROMPTS, T1, rep))
                model = stage2(task, cfg, gamma, v, N, ablate_rng(R.THEORY_STAGE2_MLP, T1, rep), prompts=s2)
                add("stage1", T1, model, f"rep={rep};mass={info['gamma_mass_on_subspace']:.3f}")
                bar.update(1)
        v = ablate_rng(R.THEORY_ABLATE_INDICATOR_V).choice([-1.0, 1.0], size=cfg.width)
        indicator = stage2(task, cfg, ideal_gamma(task), v, N, ablate_rng(R.THEORY_ABLATE_INDICATOR_STAGE2),
                           prompts=s2)
        add("subspace_indicator_gamma", 0, indicator)
        bar.update(1)
        steps = 100 if args.quick else 300
        model = practical(task, cfg, N=N, rng=ablate_rng(R.THEORY_ABLATE_PRACTICAL), steps=steps, lr=1e-2, batch=32)
        add("practical_adamw", steps * 32, model, f"AdamW on gamma and MLP, {steps} steps x 32 prompts, "
            f"final train loss {np.mean(model.info['losses'][-20:]):.3f}")
        bar.update(1)
    write_csv(os.path.join(args.out, "ablate_pretraining.csv"), rows, ABLATE_PRETRAINING_COLUMNS)
    plot_pretraining(rows, os.path.join(args.out, "ablate_pretraining.png"), link.name, d, N)
    atomic_write(os.path.join(args.out, "ablate_pretraining.md"),
                 ablate_pretraining_md(rows, args, link.name, d, N, clock.summary()))
    return rows


# rng key of each gate's Stage I / Stage II draws: the main run's gate order (product, normalized, none)
GATE_KEY = {"product": 0, "normalized": 1, "none": 2}


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
                s1 = task.sample(_rng(args, *key, R.THEORY_STAGE1_PROMPTS), args.stage1_prompts, args.stage1_N,
                                 args.n_queries)
                cells = {N: sweep_prompts(args, task, li, N) for N in args.N}
                zero_val = {N: normalized_error(np.zeros_like(c[1].y_query_clean), c[1].y_query_clean,
                                                task.link.second_moment)[2] for N, c in cells.items()}
                models = {}
                for gate, rho, b0 in grid:
                    def stat(pr, gate=gate, rho=rho, b0=b0):
                        return context_statistics(pr.x_context, pr.y_context, [gate], rho, b0, args.backend,
                                                  product="closed")[gate]
                    cfg = replace(pretrain_config(args, gate), rho=rho, b0=b0)
                    gamma, v, inf = stage1(task, cfg, _rng(args, *key, R.THEORY_STAGE1_MLP, GATE_KEY[gate]), prompts=s1,
                                           h=stat(s1))
                    for N, (s2, val, _) in cells.items():
                        rng2 = _rng(args, *key, R.THEORY_STAGE2_MLP, N, GATE_KEY[gate])
                        model = stage2(task, cfg, gamma, v, N, rng2, prompts=s2,
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
                            note = ("test statistic by the selective scan; "
                                    f"max |scan - closed form| / max |closed form| = {dev:.1e}")
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


def run_sweep(args):
    """N needed for error < threshold as r (d = 32) or d (r = 4) varies."""
    os.makedirs(args.out, exist_ok=True)
    values = [2, 4, 8, 16] if args.sweep == "r" else [8, 16, 32, 64]
    if args.quick:
        values = values[:2]
    link = args.links[0]
    gate = "normalized"
    rows = []
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
