# %% [markdown]
# # 10 · Training the full Mamba in context
#
# **Goal.** Leave the one-layer construction of lessons 08–09 and train the whole Mamba of
# lesson 06 end to end on prompts of the single-index task, next to a linear-attention
# Transformer of the same size: how a prompt becomes a token sequence, what one training step
# is, and what the committed runs learned. The honest answer for He2 is: **nothing beyond the
# context-free optimum**, while a He1 control run does learn in context; this lesson shows both.
#
# **Prerequisites.** Lesson 06 (the Mamba model and its backward), lesson 07 (the task, KRR,
# the normalized error), lesson 09 (the context-free and zero predictors as references).
#
# **Run time.** About 30 seconds on an idle 2-core machine (10 seconds with `LESSONS_FAST=1`).
# Nothing is retrained: the curves come from the checkpoints in `docs/checkpoints/` (their
# training took 15–35 minutes each). Set `LESSONS_RETRAIN=1` to retrain the He1 control
# (about 15 minutes on 2 cores).
#
# **You will use** `mamba_from_scratch.icl.prompts` (`encode`, `decode`),
# `mamba_from_scratch.icl.train` (`TrainConfig`, `build_model`, `sample_batch`,
# `loss_and_grads`, `train`, `validation_set`), `mamba_from_scratch.optim`,
# `mamba_from_scratch.checkpoint.load_checkpoint` and
# `mamba_from_scratch.icl.evaluate_trained` (`predict_queries`, `baseline_predict`).

# %% tags=["parameters"]
import os

FAST = os.environ.get("LESSONS_FAST", "0") == "1"  # CI sets LESSONS_FAST=1 to shrink every size
RETRAIN = os.environ.get("LESSONS_RETRAIN", "0") == "1"   # retrain the He1 control instead of loading it
SEED = 1000                                          # test prompts (icl-eval's default seed)
DEMO_STEPS = 10 if FAST else 40                      # steps of the tiny training demo
TEST_PROMPTS = 24 if FAST else 128                   # test prompts per checkpoint
TEST_QUERIES = 4 if FAST else 16                     # queries per prompt
NS = [1, 4, 16, 32] if FAST else [1, 2, 4, 8, 16, 32]  # context lengths to evaluate at

# %%
import dataclasses
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from mamba_from_scratch.checkpoint import load_checkpoint
from mamba_from_scratch.icl.evaluate_trained import baseline_predict, predict_queries
from mamba_from_scratch.icl.metrics import normalized_error, paired_difference
from mamba_from_scratch.icl.prompts import decode, encode
from mamba_from_scratch.icl.task import SingleIndexTask
from mamba_from_scratch.icl.train import (TrainConfig, build_model, loss_and_grads, make_task, sample_batch,
                                          train, validation_set)
from mamba_from_scratch.optim import AdamW, clip_grad_norm, cosine_lr

plt.rcParams.update({"figure.dpi": 80, "axes.grid": True, "grid.alpha": 0.3})
REPO = Path.cwd().parent if Path.cwd().name == "lessons" else Path.cwd()
CKPT = REPO / "docs" / "checkpoints"

# %% [markdown]
# ## 1. The idea in words
#
# In lessons 08–09 the model's structure was built by hand to match the theory. Here nothing
# is built in: a stack of Mamba blocks reads a prompt `(x_1, y_1), ..., (x_N, y_N), x_query`
# token by token and must output `y_query`. Every prompt has its own `β`, so the only way to
# predict well is to **learn from the context**, and the weights that do so are found by plain
# gradient descent over many prompts (Garg et al. 2022). Two references tell us whether it
# happened:
#
# * the **context-free optimum** `E[g(<β, x>) | x]` over `β` (lesson 09's task knows it in
#   closed form): the best any model can do *without* reading the context. For He2 it is
#   `(|x_I|²/r - 1)/√2`, which already beats the zero predictor;
# * **KRR** fit on the prompt's own context (lesson 07), on the full `x` and on the intrinsic
#   coordinates.
#
# A model that learned in context must beat the context-free optimum, more so as `N` grows.
#
# ## 2. Prompts as tokens
#
# The package uses one token per example (`prompts.py`, "paired" encoding):
#
# $$\text{token}_t = (x_t,\; x_{t-1},\; y_{t-1},\; 1), \qquad \text{token}_1 = (x_1, 0, 0, 0),$$
#
# so the output at token `t` predicts `y_t` from the `t-1` examples before it, and causality
# keeps `y_t` out of its view. One forward pass over `N + 1` tokens trains `N + 1`
# predictions, one per prefix length `0..N`.
#
# | symbol | code | meaning |
# |---|---|---|
# | `P`, `T`, `d` | | prompts, examples per prompt (context + query), input dimension |
# | `d_in = 2d + 2` | `token_dim(d)` | features per token |
# | `tokens` | `encode(x, y)` | `(P, T, d_in)` |
# | `pred` | `decode(out, T)` | `(P, T)`: column `t` used the `t` examples before it |
#
# ### Exercise 1: the paired encoding
# Write `encode_paired(x, y)` for `x` of shape `(P, T, d)` and `y` of shape `(P, T)`, returning
# the `(P, T, 2d + 2)` tokens above (float64). The check compares with the package's `encode`.

# %% tags=["exercise"]
def encode_paired(x, y):
    """Tokens (x_t, x_{t-1}, y_{t-1}, 1), with the first token (x_1, 0, 0, 0).

    Args:
        x: (P, T, d).  y: (P, T).
    Returns:
        (P, T, 2 d + 2).
    """
    raise NotImplementedError("Exercise 1: write encode_paired")

# %% tags=["solution"]
def encode_paired(x, y):
    """The paired encoding (see the exercise), one token at a time for clarity."""
    P, T, d = x.shape
    tokens = np.zeros((P, T, 2 * d + 2))
    for t in range(T):
        tokens[:, t, :d] = x[:, t]
        if t > 0:
            tokens[:, t, d:2 * d] = x[:, t - 1]
            tokens[:, t, 2 * d] = y[:, t - 1]
            tokens[:, t, 2 * d + 1] = 1.0
    return tokens

# %% tags=["check"]
r_chk = np.random.default_rng(0)
x_chk, y_chk = r_chk.standard_normal((3, 5, 4)), r_chk.standard_normal((3, 5))
assert np.array_equal(encode_paired(x_chk, y_chk), encode(x_chk, y_chk, dtype=np.float64))
assert not np.any(encode_paired(x_chk, y_chk)[:, :, 8] == y_chk), "token t must not show y_t"
print("exercise 1 passed: the loop equals the package's encode")

# %% [markdown]
# ## 3. One training step, and the loop
#
# One step: draw a fresh batch of prompts (`sample_batch`, seeded by the step so a run is
# reproducible and resumable), forward and hand-written backward through the model
# (`loss_and_grads`: the mean squared error over all prefix positions), clip the gradient's
# global norm, and take an AdamW step with a warmup + cosine learning rate. The package's
# `train` does exactly this plus validation, logging, checkpoints and a divergence guard.
#
# ### Exercise 2: the training loop by hand
# Write `train_by_hand(tc)` that builds the model with `build_model(tc)`, creates
# `AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay)`, and for `step = 0..tc.steps-1`
# samples the batch, computes loss and gradients, clips them to `tc.max_grad_norm` and steps the
# optimizer with `lr = cosine_lr(step, tc.steps, tc.lr, tc.warmup, tc.lr * tc.lr_min_frac)`.
# Return the final parameters and the list of losses. The check runs the package's `train` on
# the same tiny configuration and compares the parameters.

# %% tags=["exercise"]
def train_by_hand(tc):
    """The training loop without validation or checkpoints.

    Returns:
        params (dict), losses (list of floats, one per step).
    """
    raise NotImplementedError("Exercise 2: write train_by_hand")

# %% tags=["solution"]
def train_by_hand(tc):
    """The training loop (see the exercise)."""
    task = make_task(tc)
    cfg, params = build_model(tc)
    opt = AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay)
    losses = []
    for step in range(tc.steps):
        x, y = sample_batch(tc, task, step)
        loss, grads, _ = loss_and_grads(params, cfg, x, y, tc.encoding, tc.backend)
        clip_grad_norm(grads, tc.max_grad_norm)
        opt.step(params, grads, lr=cosine_lr(step, tc.steps, tc.lr, tc.warmup, tc.lr * tc.lr_min_frac))
        losses.append(loss)
    return params, losses

# %% tags=["check"]
tiny = TrainConfig(model="mamba", link="he1", d=4, r=2, N=8, steps=DEMO_STEPS, batch=16, lr=3e-3, warmup=5,
                   d_model=8, n_layer=1, d_state=4, eval_every=DEMO_STEPS, ckpt_every=DEMO_STEPS, n_val=16,
                   log_every=1, backend="numpy")
params_hand, losses_hand = train_by_hand(tiny)
with tempfile.TemporaryDirectory() as tmp:
    result = train(tiny, tmp, progress=False)
assert result["status"] == "done"
assert np.allclose([row[1] for row in result["log"]], losses_hand, rtol=1e-6)
assert all(np.allclose(params_hand[k], result["params"][k], rtol=1e-5, atol=1e-7) for k in params_hand)
print(f"exercise 2 passed: your loop == the package's train over {DEMO_STEPS} steps; "
      f"loss {losses_hand[0]:.3f} -> {losses_hand[-1]:.3f}")

# %% [markdown]
# The tiny model above trains in seconds on He1 (the linear link) but is far too small and
# too short to learn anything interesting. The committed runs used `d = 16` (and 32), `r = 8`,
# `N = 32`, `d_model = 32`, 2 layers (about 21k parameters), batch 64: 6,000 steps for He2
# (33–35 minutes for the Mamba on the shared machine) and 2,000 for the He1 control. Their
# checkpoints hold the parameters, the training log and the command that produced them.

# %%
def load(name):
    params, cfg, extra, _ = load_checkpoint(CKPT / f"{name}.npz")
    return params, cfg, extra, TrainConfig(**extra["train_config"])


runs = {"Mamba, He2": "icl_mamba_he2_d16", "linear-attention TF, He2": "icl_linear-tf_he2_d16",
        "Mamba, He1 (control)": "icl_mamba_he1_d16"}
models = {label: load(name) for label, name in runs.items()}
if RETRAIN:
    tc_he1 = models["Mamba, He1 (control)"][3]
    out_dir = REPO / "results" / "lesson10_he1"
    res = train(tc_he1, str(out_dir), command="lesson 10 retrain")
    models["Mamba, He1 (control)"] = load_checkpoint(out_dir / "ckpt.npz")[:3] + (tc_he1,)
for label, (params, cfg, extra, tc) in models.items():
    print(f"{label:>26}: {extra['n_params']:,} parameters, {extra['step']} steps, "
          f"command: {extra['command']}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
for i, (label, (params, cfg, extra, tc)) in enumerate(models.items()):
    log = np.array(extra["log"])                                  # [step, mean loss, gradient norm]
    k = 10                                                        # smooth over k logged points
    smooth = np.convolve(log[:, 1], np.ones(k) / k, mode="valid")
    ax = axes[0] if "He2" in label else axes[1]
    ax.plot(log[k - 1:, 0], smooth, color=f"C{i}", label=f"{label}: training loss")
    val = np.array(extra["val_log"])                              # [step, error at prefix 0..N]
    ax.plot(val[:, 0], val[:, -1], "o--", color=f"C{i}", ms=4, label=f"{label}: validation error at N = {tc.N}")
for ax, tc in ((axes[0], models["Mamba, He2"][3]), (axes[1], models["Mamba, He1 (control)"][3])):
    task = make_task(tc)
    x, y, clean, cf = validation_set(tc, task)
    cf_err = np.mean((cf[:, -1] - clean[:, -1]) ** 2) / task.link.second_moment
    ax.axhline(cf_err, color="k", ls=":", label=f"context-free optimum ({cf_err:.2f})")
    ax.set_xlabel("training step")
    ax.set_title(f"{tc.link.upper()}, d = {tc.d}, r = {tc.r}, N = {tc.N}", fontsize=10)
    ax.legend(fontsize=7)
axes[0].set_ylabel("mean squared error (normalized)")
plt.tight_layout()
plt.show()

# %% [markdown]
# **Reading the figure.** Left (He2): the two models' curves lie on top of each other. Both
# settle within the first ~500 steps and do not move for the remaining 5,500; their
# validation error at `N = 32` comes down onto the dotted context-free optimum and stays
# there. Right (He1): the context-free optimum is the zero predictor (an odd link), and the
# Mamba goes far below it: it reads the context. (The training loss is averaged over all
# prefix lengths `0..N`, including the short ones where little can be learned, on a
# different stream of prompts and with label noise, so its level is not comparable with the
# validation error at `N = 32`: He2's heavy-tailed labels alone move an error by ±0.1 from
# one set of prompts to the next.)
#
# ## 4. Error against context length, on fresh test prompts
#
# The package's `predict_queries` runs each query as its own sequence: the first `n` context
# examples then the query. For each `n` we compare the models with the references on the same
# prompts; the paired difference against the context-free optimum is the test of in-context
# learning.

# %%
def evaluate(label, params, cfg, tc):
    task = SingleIndexTask(tc.d, tc.r, tc.link, tau=tc.tau, seed=tc.task_seed)
    prompts = task.sample(np.random.default_rng([SEED, 4, tc.d]), TEST_PROMPTS, max(NS), TEST_QUERIES)
    clean, m2 = prompts.y_query_clean, task.link.second_moment
    out = {"model": [], "context_free": [], "krr_intrinsic": [], "diff_vs_cf": []}
    for n in NS:
        e_model = normalized_error(predict_queries(params, cfg, prompts, n, tc.encoding, "numpy"), clean, m2)
        e_cf = normalized_error(baseline_predict("context_free", task, prompts, n), clean, m2)
        e_krr = normalized_error(baseline_predict("krr_intrinsic", task, prompts, n), clean, m2)
        out["model"].append(e_model[:2])
        out["context_free"].append(e_cf[:2])
        out["krr_intrinsic"].append(e_krr[:2])
        out["diff_vs_cf"].append(paired_difference(e_model[2], e_cf[2]))
    return {k: np.array(v) for k, v in out.items()}


curves = {label: evaluate(label, *models[label][:2], models[label][3]) for label in models}
for label, c in curves.items():
    print(label)
    for n, (diff, se) in zip(NS, c["diff_vs_cf"]):
        print(f"   N = {n:2d}: model minus context-free optimum {diff:+.3f} ± {se:.3f}  ({diff / se:+.1f} s.e.)")
he1 = curves["Mamba, He1 (control)"]["diff_vs_cf"][-1]
assert he1[0] < -5 * he1[1], "the He1 control learns in context: far below the context-free optimum"
he2 = curves["Mamba, He2"]["diff_vs_cf"][-1]
assert abs(he2[0]) < 0.05, "the He2 Mamba does not use its context: it matches the context-free optimum"

fig, axes = plt.subplots(1, 2, figsize=(11, 3.7))
for i, (label, c) in enumerate(curves.items()):
    ax = axes[0] if "He2" in label else axes[1]
    ax.errorbar(NS, c["model"][:, 0], yerr=2 * c["model"][:, 1], fmt="o-", color=f"C{i}", ms=4, capsize=2, label=label)
for ax, label in ((axes[0], "Mamba, He2"), (axes[1], "Mamba, He1 (control)")):
    c = curves[label]
    ax.errorbar(NS, c["context_free"][:, 0], yerr=2 * c["context_free"][:, 1], fmt="k:", capsize=2,
                label="context-free optimum")
    ax.errorbar(NS, c["krr_intrinsic"][:, 0], yerr=2 * c["krr_intrinsic"][:, 1], fmt="d--", color="C4", ms=4,
                capsize=2, label="KRR on the intrinsic coords")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("context examples N")
    ax.set_title(f"{models[label][3].link.upper()}, d = 16, r = 8 "
                 f"({TEST_PROMPTS} prompts × {TEST_QUERIES} queries, ±2 s.e.)", fontsize=10)
    ax.legend(fontsize=8)
axes[0].set_ylabel("normalized test error")
plt.tight_layout()
plt.show()

# %% [markdown]
# **Reading the figure.** Left: both He2 models (the blue line is hidden under the orange)
# are flat in `N` and on top of the context-free optimum (their paired difference to it is a
# few thousandths, within 2 standard errors at every `N`), so they learned
# the best *context-free* predictor and nothing from the examples; KRR told the subspace
# overtakes them by `N = 32`. This is the same failure the issue reports for the PyTorch
# reference, reproduced here at about 30 times as many steps. Right: with the same code,
# model size and encoding, the He1 Mamba's error falls steadily with `N`, tens of standard
# errors below the context-free optimum, and beats KRR on the intrinsic coordinates at the
# smallest `N`. So the machinery (encoding, hand-written backward, AdamW, the prompt stream)
# learns in context; He2 needs more steps, a larger model, or a curriculum than we could run
# (`docs/results_icl_trained.md`; `icl-train --curriculum-steps` offers the last).
#
# ## Summary
# * A prompt becomes `N + 1` tokens `(x_t, x_{t-1}, y_{t-1}, 1)`; one pass trains every
#   prefix length.
# * A training step is sample → forward → hand-written backward → clip → AdamW with a
#   warmup-cosine schedule; `train` adds validation, checkpoints and a divergence guard.
# * Whether a model learned *in context* is decided against the context-free optimum, paired
#   on the same prompts: the committed He2 runs did not, the He1 control did.
#
# **Next:** lesson 11, where a Mamba and a linear Transformer meet outliers in the context.
