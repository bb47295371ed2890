"""Prompt encoding, the icl-train loop (seeded stream, resume, divergence stop) and icl-eval."""
import csv
import json

import numpy as np
import pytest

from mamba_from_scratch.checkpoint import load_checkpoint
from mamba_from_scratch.icl import evaluate_trained, train
from mamba_from_scratch.icl.prompts import (
    decode,
    encode,
    prediction_positions,
    query_examples,
    scatter_grad,
    token_dim,
    training_examples,
)
from mamba_from_scratch.icl.task import SingleIndexTask
from mamba_from_scratch.rng import TRAIN_BATCH, stream

# A tiny model and task so each run takes a second: the numpy scan needs no compilation.
TINY = dict(d=4, r=2, N=6, batch=4, steps=12, d_model=8, n_layer=1, d_state=4, n_head=2, warmup=2,
            eval_every=6, ckpt_every=4, log_every=2, n_val=8, backend="numpy")


@pytest.mark.parametrize("encoding", ["paired", "interleaved"])
def test_encoding_layout_and_causality(encoding):
    rng = np.random.default_rng(0)
    P, T, d = 2, 5, 3
    x, y = rng.normal(size=(P, T, d)), rng.normal(size=(P, T))
    tokens = encode(x, y, encoding, np.float64)
    L = T if encoding == "paired" else 2 * T - 1
    assert tokens.shape == (P, L, token_dim(d, encoding))
    pos = prediction_positions(T, encoding)
    for t in range(T):
        # the token that predicts y_t holds x_t, and no token up to it holds y_t
        assert np.array_equal(tokens[:, pos[t], :d], x[:, t])
        assert not np.any(np.isclose(tokens[:, :pos[t] + 1], y[:, t, None, None]))
    if encoding == "paired":
        assert np.array_equal(tokens[:, 1:, d:2 * d], x[:, :-1]) and np.array_equal(tokens[:, 1:, 2 * d], y[:, :-1])
        assert np.array_equal(tokens[:, :, -1], np.array([[0.0] + [1.0] * (T - 1)] * P))
    out = rng.normal(size=(P, L, 1))
    dpred = rng.normal(size=(P, T))
    # scatter_grad is the adjoint of decode: <decode(out), dpred> = <out, scatter_grad(dpred)>
    assert np.isclose(np.sum(decode(out, T, encoding) * dpred), np.sum(out * scatter_grad(dpred, L, encoding)))
    with pytest.raises(ValueError, match="encoding"):
        encode(x, y, "bogus")


def test_query_examples_pair_each_query_with_its_context():
    task = SingleIndexTask(5, 2, "he2", seed=1)
    prompts = task.sample(np.random.default_rng(2), 3, 7, 4)
    x, y = query_examples(prompts, 5)
    assert x.shape == (12, 6, 5) and y.shape == (12, 5)
    assert np.array_equal(x[5, :5], prompts.x_context[1, :5]) and np.array_equal(x[5, 5], prompts.x_query[1, 1])
    xt, yt = training_examples(prompts)
    assert xt.shape == (3, 8, 5) and np.array_equal(yt[:, -1], prompts.y_query[:, 0])


@pytest.mark.parametrize("model", ["mamba", "linear-tf"])
def test_same_seed_same_curve_and_resume_is_bit_identical(tmp_path, model):
    tc = train.TrainConfig(model=model, **TINY)
    full = train.train(tc, tmp_path / "full", progress=False)
    again = train.train(tc, tmp_path / "again", progress=False)
    assert full["status"] == "done" and full["log"] == again["log"]
    # the same run in two pieces: stop after step 4 (a checkpoint), then --resume
    first = train.train(tc, tmp_path / "split", until=4, progress=False)
    assert first["status"] == "paused" and first["step"] == 4
    second = train.train(tc, tmp_path / "split", resume=True, progress=False)
    assert second["status"] == "done" and second["log"] == full["log"] and second["val_log"] == full["val_log"]
    for k, v in full["params"].items():
        assert np.array_equal(v, second["params"][k]), k
    params, _, extra, _ = load_checkpoint(tmp_path / "split" / "ckpt.npz")
    assert extra["step"] == tc.steps and all(np.array_equal(params[k], v) for k, v in full["params"].items())
    with pytest.raises(ValueError, match="different configuration"):
        train.train(train.TrainConfig(model=model, **{**TINY, "lr": 5e-3}), tmp_path / "split", resume=True,
                    progress=False)


def test_fixed_task_pool_and_curriculum():
    tc = train.TrainConfig(**{**TINY, "n_tasks": 3, "curriculum_steps": 10, "N_start": 2, "d": 6})
    task = train.make_task(tc)
    pool = train.task_pool(tc, task)
    assert pool.shape == (3, 6)
    x, y = train.sample_batch(tc, task, 0, pool)
    assert x.shape == (4, 3, 6)                          # N = N_start at step 0, plus the query
    others = np.setdiff1d(np.arange(6), task.index_set)
    assert np.all(x[:, :, others] == 0)                  # only the r relevant coordinates are on
    # every prompt's labels come from one of the pool's betas, up to the +-tau noise
    resid = [np.abs(y - task.link(np.einsum("ptd,d->pt", x, b))) for b in pool]
    assert np.all(np.min([r.max(axis=1) for r in resid], axis=0) <= tc.tau + 1e-12)
    assert train.schedule(tc, 10) == (tc.N, tc.d)


def test_link_curriculum_blends_he1_into_the_link():
    tc = train.TrainConfig(**{**TINY, "link": "he2", "link_curriculum_steps": 10, "tau": 0.0})
    task = train.make_task(tc)
    assert [train.link_blend(tc, s) for s in (0, 5, 10, 11)] == [0.0, 0.5, 1.0, 1.0]
    for step, lam in ((0, 0.0), (5, 0.5), (10, 1.0)):
        x, y = train.sample_batch(tc, task, step)
        # the step's own prompts (same stream), relabelled through the blended link
        prompts = task.sample(stream(tc.seed, TRAIN_BATCH, step), tc.batch, tc.N, 1)
        z = np.einsum("ptd,pd->pt", x, prompts.beta)
        assert np.allclose(y, np.sqrt(1 - lam) * z + np.sqrt(lam) * task.link(z))
    # after the curriculum the batch is exactly the one a run without it draws
    plain = train.TrainConfig(**{**TINY, "link": "he2", "tau": 0.0})
    assert all(np.array_equal(a, b) for a, b in zip(train.sample_batch(tc, task, 12),
                                                    train.sample_batch(plain, task, 12)))


def test_validation_gap_is_paired_against_the_context_free_optimum():
    tc = train.TrainConfig(**{**TINY, "n_val": 64, "N": 12})
    task = train.make_task(tc)
    x, y, clean, cf = val = train.validation_set(tc, task)
    cfg, params = train.build_model(tc)
    err, cf_err, gap, se = train.validate(params, cfg, tc, task, val)
    assert err.shape == cf_err.shape == (tc.N + 1,)
    assert np.allclose(cf_err, np.mean((cf - clean) ** 2, axis=0) / task.link.second_moment)
    assert np.isclose(gap, np.mean(err[tc.N // 4:] - cf_err[tc.N // 4:])) and se > 0


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    real = train.loss_and_grads
    calls = []

    def poisoned(params, cfg, x, y, encoding, backend):
        loss, grads, pred = real(params, cfg, x, y, encoding, backend)
        calls.append(loss)
        return (float("nan") if len(calls) == 7 else loss), grads, pred   # the 7th step: step index 6

    monkeypatch.setattr(train, "loss_and_grads", poisoned)
    out = tmp_path / "run"
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]
    assert train.main([f"--out={out}", "--no-progress", *flags]) == 1
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["status"] == "diverged" and "not finite" in summary["message"] and summary["step"] == 6
    params, _, extra, _ = load_checkpoint(out / "ckpt.npz")
    assert extra["step"] == 4 and all(np.all(np.isfinite(v)) for v in params.values())


def test_exploding_gradient_stops(tmp_path):
    # a factor below 1 makes the first step compared with the median count as an explosion
    tc = train.TrainConfig(**{**TINY, "steps": 40, "ckpt_every": 5, "explode_factor": 0.5})
    result = train.train(tc, tmp_path, progress=False)
    assert result["status"] == "diverged" and "exceeds" in result["message"]
    assert result["step"] >= train.RECENT_NORMS // 2       # no verdict before there is a median
    assert load_checkpoint(tmp_path / "ckpt.npz")[2]["step"] <= result["step"]


def test_quick_training_beats_the_zero_predictor_and_eval_runs(tmp_path):
    """The --quick configuration, shortened: within 150 steps the error on validation
    prompts falls clearly below the zero predictor's (1 by normalisation)."""
    out = tmp_path / "quick"
    argv = ["--quick", "--link", "he2", "--d", "6", "--r", "2", "--N", "12", "--steps", "150",
            "--link-curriculum-steps", "50", "--eval-every", "150", "--ckpt-every", "150",
            "--out", str(out), "--no-progress"]
    assert train.main(argv) == 0
    summary = json.loads((out / "train_summary.json").read_text())
    val = np.array(summary["val_error_at_N"])            # error at each prefix length 0..N
    assert val[1:].mean() < 0.8, val
    gap, se = summary["val_gap_to_context_free"]         # reported; too short a run to use the context
    assert np.isfinite(gap) and se > 0
    ev = tmp_path / "eval"
    assert evaluate_trained.main(["--checkpoint", str(out / "ckpt.npz"), "--out", str(ev), "--N", "2,12",
                                  "--n-prompts", "16", "--queries", "4", "--no-progress"]) == 0
    with open(ev / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["method"] for r in rows} == {"mamba", "krr_full", "krr_intrinsic", "context_free", "zero", "oracle"}
    assert all(float(r["error"]) == 0 for r in rows if r["method"] == "oracle")
    assert (ev / "error_vs_N.png").stat().st_size > 0 and (ev / "paired.csv").exists()
    assert (ev / "training_curves.png").stat().st_size > 0


def test_d_gap_is_the_unpaired_difference_between_the_d_groups():
    rows = [dict(link="He2", d=d, N=n, method=m, error=e, stderr=se)
            for d, e0, se in ((16, 0.5, 0.03), (32, 0.65, 0.04)) for n in (1, 8)
            for m, e in (("mamba", e0 + n / 100), ("oracle", 0.0))]
    lines = evaluate_trained.d_gap_lines(rows)
    assert lines[0] == "### He2: error at d = 32 minus error at d = 16 (unpaired)"
    assert lines[2] == "- mamba: N = 1: +0.150 ± 0.050, N = 8: +0.150 ± 0.050"
    assert not any("oracle" in line for line in lines)
    only16 = [dict(link="He2", d=16, N=1, method="control", error=0.5, stderr=0.01)]
    assert not any("control" in line for line in evaluate_trained.d_gap_lines(rows + only16))
    assert evaluate_trained.d_gap_lines([r for r in rows if r["d"] == 16]) == []   # one d: nothing to compare


def test_plot_keeps_one_style_per_model_across_many_panels(tmp_path, monkeypatch):
    # three models in each of six (link, d) panels: styles were once drawn anew per panel and ran
    # out after five. Every panel must carry every model's line, in that model's one style.
    models = ("mamba", "linear-tf", "softmax-tf")
    rows = [dict(link=link, d=d, r=8, N=n, method=m, error=0.5 + 0.01 * k, stderr=0.01)
            for link in ("He2", "He3", "He4") for d in (16, 32) for n in (1, 8)
            for k, m in enumerate(models + ("krr_full", "context_free"))]
    figures = []
    monkeypatch.setattr(evaluate_trained.plt, "close", figures.append)   # keep the figure to inspect it
    evaluate_trained.plot(rows, tmp_path / "fig.png")
    assert (tmp_path / "fig.png").stat().st_size > 0
    panels = [ax for ax in figures[0].axes if ax.get_title()]
    assert len(panels) == 6
    styles = {}
    for ax in panels:
        handles, labels = ax.get_legend_handles_labels()
        legend = dict(zip(labels, handles))
        assert sorted(legend) == sorted([f"trained {m}" for m in models] + ["KRR on full x", "context-free optimum"])
        for m in models:
            line = legend[f"trained {m}"].lines[0]                        # the errorbar's data line
            styles.setdefault(m, set()).add((line.get_color(), line.get_marker(), line.get_linestyle()))
            assert len(line.get_xdata()) == 2                             # both N of the panel
    assert all(len(s) == 1 for s in styles.values())                      # one style per model everywhere
    assert len({next(iter(s)) for s in styles.values()}) == len(models)   # and distinct between models


def test_softmax_tf_trains_and_evaluates_from_the_command_line(tmp_path):
    """--model softmax-tf through both commands, each in a fresh process: the checkpoint holds a
    SoftmaxTFConfig (so it runs softmax attention, not the linear one its parameter names
    also fit) and icl-eval labels it softmax-tf."""
    import subprocess
    import sys

    from mamba_from_scratch.models.softmax_attention import SoftmaxTFConfig
    out, ev = tmp_path / "run", tmp_path / "eval"
    run = [sys.executable, "-m", "mamba_from_scratch"]
    subprocess.run(run + ["icl-train", "--model", "softmax-tf", "--d", "4", "--r", "2", "--N", "6", "--steps", "4",
                          "--batch", "4", "--d-model", "8", "--n-layer", "1", "--n-head", "2", "--eval-every", "4",
                          "--ckpt-every", "4", "--n-val", "4", "--out", str(out), "--no-progress"],
                   check=True, capture_output=True, text=True)
    params, cfg, extra, _ = load_checkpoint(out / "ckpt.npz")
    assert type(cfg) is SoftmaxTFConfig and extra["train_config"]["model"] == "softmax-tf"
    subprocess.run(run + ["icl-eval", "--checkpoint", str(out / "ckpt.npz"), "--out", str(ev), "--N", "2,6",
                          "--n-prompts", "4", "--queries", "2", "--no-progress"], check=True, capture_output=True,
                   text=True)
    with open(ev / "metrics.csv") as f:
        assert "softmax-tf" in {r["method"] for r in csv.DictReader(f)}


def test_the_transformers_start_from_the_same_weights_and_differ_in_attention():
    tcs = {m: train.TrainConfig(model=m, d=4, r=2, N=6, batch=4, d_model=8, n_layer=1, n_head=2)
           for m in ("linear-tf", "softmax-tf")}
    (lcfg, lp), (scfg, sp) = (train.build_model(tcs[m]) for m in ("linear-tf", "softmax-tf"))
    assert lp.keys() == sp.keys() and all(np.array_equal(lp[k], sp[k]) for k in lp)
    x, y = train.sample_batch(tcs["linear-tf"], train.make_task(tcs["linear-tf"]), 0)
    losses = [train.loss_and_grads(p, c, x, y, "paired", "numba")[0] for p, c in ((lp, lcfg), (sp, scfg))]
    assert losses[0] != losses[1]
