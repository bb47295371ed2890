# %% [markdown]
# # 11 · Outliers: why a gate helps in-context classification
#
# **Goal.** Paper 3's setting (Li et al. 2025): a one-layer Mamba and a one-layer linear
# Transformer classify a query from a prompt of labelled examples, some of which are
# **outliers** with corrupted labels. The Mamba's input-dependent gate learns to damp the
# outliers; the linear Transformer averages them in. We train both (the package's
# hand-written SGD), measure the error as the outlier probability `α` grows, look at the
# learned gates, and compare with the exact error floor of the mechanism.
#
# **Prerequisites.** Lesson 08 (the gated sum `Σ G_i ...` as an S6 scan with `A = -1`).
#
# **Run time.** About 60 seconds on an idle 2-core machine (5 seconds with `LESSONS_FAST=1`).
# The full study (10 seeds, sensitivity, tuning) is `python -m mamba_from_scratch outliers`;
# its results are in `docs/results_outliers.md`.
#
# **You will use** `mamba_from_scratch.icl.outliers` (`data`: `DataConfig`, `make_patterns`,
# `split_tasks`, `sample_prompts`; `model`: `init_params`, `model_forward`, `gates`,
# `hinge_forward`, `hinge_backward`; `train.TrainConfig`; `experiment`: `run_seed`,
# `gate_profile`, `ALPHAS`; `floor`: `error_floor`, `clean_vote_floor`).

# %% tags=["parameters"]
import os

FAST = os.environ.get("LESSONS_FAST", "0") == "1"  # CI sets LESSONS_FAST=1 to shrink every size
SEEDS = [0] if FAST else [0, 1, 2, 3]   # each seed redraws patterns, task split, init and prompts
STEPS = 200 if FAST else 1000           # SGD steps (the package's default, chosen on validation tasks)
N_TEST = 300 if FAST else 2000          # test prompts per alpha and seed
GATE_PROMPTS = 300 if FAST else 2000    # prompts for the mean gate profile

# %%
import math

import matplotlib.pyplot as plt
import numpy as np

from mamba_from_scratch.icl.outliers.data import DataConfig, make_patterns, sample_prompts, split_tasks
from mamba_from_scratch.icl.outliers.experiment import ALPHAS, gate_profile, run_seed
from mamba_from_scratch.icl.outliers.floor import clean_vote_floor, error_floor
from mamba_from_scratch.icl.outliers.model import gates, hinge_backward, hinge_forward, init_params, model_forward
from mamba_from_scratch.icl.outliers.train import TrainConfig

rng = np.random.default_rng(0)
plt.rcParams.update({"figure.dpi": 80, "axes.grid": True, "grid.alpha": 0.3})
data_cfg = DataConfig()
L = data_cfg.l

# %% [markdown]
# ## 1. The idea in words
#
# Each task is an ordered pair of "relevant" patterns `(μ_a, μ_b)`: inputs built on `μ_a` are
# class +1, on `μ_b` class −1, plus within-class noise along "irrelevant" patterns. A prompt
# holds `l = 20` labelled examples of one task and a query. With probability `α` an example
# also carries an **outlier** (a large extra direction) and, at test time, a corrupted label
# (here: flipped). A model that lets every example vote for its label on the query's pattern
# (the linear Transformer) is right while clean votes outnumber corrupted ones and collapses
# beyond `α ≈ 1/2`. A model whose vote weights depend on the token itself (the Mamba's gate
# `s_i = σ(w · p_i)`) can learn to give outlier tokens small weight and stay right far longer.
# The test tasks are pattern pairs never trained on in that order, so the rule must be read
# from the prompt: this is in-context learning.
#
# ## 2. The models
#
# Tokens `p_i = (x_i, y_i) ∈ R^{d+1}`, the query `p_q = (x_q, 0)` last. Both models output
#
# $$F(P) = \sum_{i \le l} G_i\, y_i\, p_i^\top W_B^\top W_C\, p_q, \qquad
# \text{Mamba: } G_i = s_i \prod_{j > i}(1 - s_j),\; s_i = \sigma(w \cdot p_i); \qquad \text{linear Transformer: } G_i = 1,$$
#
# and predict `sign F`. As in lesson 08 the Mamba's gated sum is an S6 scan with `A = -1`,
# `Δ_i = softplus(w · p_i)` and exact ZOH; the package computes it both in closed form and
# through `selective_scan_forward`. Training is SGD on the hinge loss `mean max(0, 1 − y F)`.
#
# | symbol | code | meaning |
# |---|---|---|
# | `d = 30`, `l = 20` | `data_cfg.d`, `data_cfg.l` | input dimension, examples per prompt |
# | `P` | `prompts.P` | `(b, l + 1, d + 1)` tokens, the query last with label 0 |
# | `W_B, W_C`, `w` | `params["W_B"]`, `params["W_C"]`, `params["w"]` | attention weights; the Mamba's gate vector |
# | `G_i`, `s_i` | `gates(P, w)` | the weight example `i` keeps at the query; its step |
# | `α` | `p_out` | test outlier probability (training uses `p_a = 0.6` with fair-coin labels) |
#
# First the smallest implementation: one prompt, a loop over the examples, checked against
# the package's closed form and its scan.

# %%
def mamba_output_loop(params, P):
    """F for one prompt by the recurrence h_i = (1 - s_i) h_{i-1} + s_i y_i W_B p_i, read at the query."""
    W_B, W_C, w = params["W_B"], params["W_C"], params["w"]
    h = np.zeros(W_B.shape[0])
    for p in P:                                        # the query too: it only decays h (label 0)
        s = 1.0 / (1.0 + math.exp(-(w @ p)))
        h = (1.0 - s) * h + s * p[-1] * (W_B @ p)
    return h @ (W_C @ P[-1])


patterns = make_patterns(data_cfg, rng)
train_tasks, test_tasks = split_tasks(data_cfg, rng)
demo = sample_prompts(data_cfg, patterns, test_tasks, 4, 0.3, "flipped", rng, test=True)
params = init_params(data_cfg.d + 1, "mamba", rng)
params["W_B"] += 0.05 * rng.standard_normal(params["W_B"].shape)   # off the diagonal init, to test every entry
F_closed, _ = model_forward(params, demo.P, "closed")
F_scan, _ = model_forward(params, demo.P, "scan")
F_loop = np.array([mamba_output_loop(params, P) for P in demo.P])
assert np.allclose(F_loop, F_closed, rtol=1e-10) and np.allclose(F_scan, F_closed, rtol=1e-10)
print("loop == closed form == selective scan:", np.round(F_closed, 4))

# %% [markdown]
# ### Exercise 1: the hinge loss and its gradient
# Write `hinge(F, y)` returning the mean hinge loss `mean(max(0, 1 − y F))` and its gradient
# with respect to `F` (`−y/b` where the margin `1 − yF` is positive, 0 elsewhere). The check
# compares with the package's `hinge_forward`/`hinge_backward` and with finite differences.

# %% tags=["exercise"]
def hinge(F, y):
    """Mean hinge loss and dloss/dF.

    Args:
        F: (b,) outputs.  y: (b,) labels +1 / -1.
    Returns:
        loss (float), dF (b,).
    """
    raise NotImplementedError("Exercise 1: write hinge")

# %% tags=["solution"]
def hinge(F, y):
    """Mean hinge loss and its (sub)gradient (see the exercise)."""
    margin = 1.0 - y * F
    return float(np.mean(np.maximum(margin, 0.0))), np.where(margin > 0, -y, 0.0) / len(y)

# %% tags=["check"]
F_chk = np.array([2.0, 0.3, -0.5, -1.7, 0.9])
y_chk = np.array([1.0, 1.0, 1.0, -1.0, -1.0])
loss_pkg, cache = hinge_forward(F_chk, y_chk)
loss_me, dF_me = hinge(F_chk, y_chk)
assert np.isclose(loss_me, loss_pkg) and np.allclose(dF_me, hinge_backward(cache))
fd = [(hinge(F_chk + e, y_chk)[0] - hinge(F_chk - e, y_chk)[0]) / 2e-6 for e in 1e-6 * np.eye(5)]
assert np.allclose(dF_me, fd)
print("exercise 1 passed: loss", loss_me, "gradient", dF_me)

# %% [markdown]
# ## 3. Training both models, error against α
#
# `run_seed` draws the patterns and the task split, trains both models from the paper's
# initialisation on the same batches (Mamba lr 0.05; the linear Transformer lr 0.05 / l,
# because its un-normalised sum of `l` terms makes its gradients about `l` times larger), then
# measures the test error at every `α` on the same test prompts for both.

# %%
runs = [run_seed(seed, data_cfg, TrainConfig(lr=0.05, steps=STEPS, batch=64), N_TEST,
                 corruptions=("flipped",), keep=True) for seed in SEEDS]
err = {m: np.array([r["errors"][m]["flipped"][0] for r in runs]) for m in ("mamba", "linear")}  # (seeds, alphas)
for m, e in err.items():
    print(f"{m:>7}: " + "  ".join(f"α={a:.1f}: {v:.3f}" for a, v in zip(ALPHAS, e.mean(0))))
i5 = list(ALPHAS).index(0.5)
assert err["mamba"][:, i5].mean() < err["linear"][:, i5].mean() - 0.2, "at alpha = 0.5 the gate wins clearly"

# %% [markdown]
# ### Exercise 2: the exact error floor
# The paper's mechanism is a **same-pattern vote**: attention keeps the examples of the
# query's pattern and the gate damps outliers. It is forced wrong on a prompt with **no clean
# example of the query's pattern**. Each example holds the query's pattern with probability
# 1/2 and is an outlier with probability `α`, independently, so that happens with probability
# `((1 + α)/2)^l`. On such a prompt, under flipped labels, every same-pattern vote is wrong
# (error 1), unless no example has the query's pattern at all (probability `2^{-l}`; a coin,
# error 1/2). Write `floor_flipped(alpha, l)` returning the expected error,
# `((1 + α)/2)^l − 2^{-(l+1)}`. The check compares with the package's binomial sum and with
# the share of sampled prompts that have no clean same-pattern example.

# %% tags=["exercise"]
def floor_flipped(alpha, l):
    """Expected error of a same-pattern vote under flipped labels (see the text).

    Args:
        alpha: float or array of outlier probabilities.  l: examples per prompt.
    Returns:
        same shape as alpha.
    """
    raise NotImplementedError("Exercise 2: write floor_flipped")

# %% tags=["solution"]
def floor_flipped(alpha, l):
    """The closed form (see the exercise)."""
    return ((1.0 + np.asarray(alpha, dtype=float)) / 2.0) ** l - 0.5 ** (l + 1)

# %% tags=["check"]
assert np.allclose(floor_flipped(ALPHAS, L), error_floor(ALPHAS, L, "flipped"))
pr_chk = sample_prompts(data_cfg, patterns, test_tasks, 20_000, 0.8, "flipped", np.random.default_rng(5), test=True)
share = np.mean(~np.any(pr_chk.same & ~pr_chk.outlier, axis=1))
se = math.sqrt(share * (1 - share) / 20_000)
assert abs(share - (floor_flipped(0.8, L) + 0.5 ** (L + 1))) < 4 * se, (share, floor_flipped(0.8, L))
print(f"exercise 2 passed: at alpha = 0.8, {share:.4f} of sampled prompts have no clean same-pattern example "
      f"(formula {(1.8 / 2) ** L:.4f})")

# %%
fig, ax = plt.subplots(figsize=(7, 4))
for m, (color, label) in {"mamba": ("C1", "one-layer Mamba (gated)"), "linear": ("k", "linear Transformer")}.items():
    mean = err[m].mean(0)
    sem = err[m].std(0, ddof=1) / math.sqrt(len(SEEDS)) if len(SEEDS) > 1 else np.zeros_like(mean)
    ax.errorbar(ALPHAS, mean, yerr=sem, fmt="o-", color=color, ms=4, capsize=2, label=label)
grid = np.linspace(0, 0.95, 60)
ax.plot(grid, floor_flipped(grid, L), "C3--", label="exact floor of a same-pattern vote")
ax.plot(grid, clean_vote_floor(grid, L, "flipped"), "C2:", label="floor of a clean-example vote (α^l)")
ax.set_xlabel("test outlier probability α (labels of outliers flipped)")
ax.set_ylabel("test classification error")
ax.set_title(f"unseen tasks, {len(SEEDS)} seed(s) × {N_TEST} prompts per point (± s.e.m. over seeds)", fontsize=10)
ax.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# **Reading the figure.** The linear Transformer is nearly perfect on clean prompts and
# breaks down as soon as corrupted votes approach half of the prompt (error 0.5 at `α = 0.5`,
# near 1 beyond). The Mamba pays a little on clean prompts (it keeps only the last few
# examples, see below) but stays low up to `α ≈ 0.6` and degrades slowly after. Its error
# follows the shape of the same-pattern floor at large `α` but stays above it; the floor of a
# clean-example vote (which also reads the other pattern's examples, possible when the
# learned cross score is negative) is far lower. In the full run (10 seeds,
# `docs/results_outliers.md`): Mamba 0.087 ± 0.010 vs linear Transformer 0.543 ± 0.009 at
# `α = 0.5`; the paper's "below 0.01 up to α ≈ 0.8" is not reached, and the Mamba's clean
# error of about 0.05 comes entirely from pattern pairs that never appeared together in
# training.
#
# ## 4. The learned gates
#
# The package's `gate_profile` samples prompts at `α = 0.3` and averages the trained Mamba's
# weights `G_i` separately over clean and outlier examples, by position.

# %%
first = runs[0]
prof = gate_profile(first["params"]["mamba"], data_cfg, first["patterns"], first["test_tasks"],
                    np.random.default_rng(7), n=GATE_PROMPTS, alpha=0.3)
ratio = prof["mean_clean_over_outlier"]
print(f"mean gate weight, clean / outlier: {ratio:.1f}")
assert ratio > 1.5, "the trained gate favours clean examples"

fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
pos = np.arange(1, L + 1)
axes[0].semilogy(pos, prof["mean"]["clean"], "o-", color="C0", ms=4, label="clean examples")
axes[0].semilogy(pos, prof["mean"]["outlier"], "s-", color="C3", ms=4, label="outlier examples")
axes[0].set_xlabel("example position i (the query is at l + 1 = 21)")
axes[0].set_ylabel("mean gate weight G_i")
axes[0].set_title(f"trained Mamba, α = 0.3, {GATE_PROMPTS} prompts: clean / outlier = {ratio:.1f}", fontsize=10)
axes[0].legend(fontsize=8)
ex = prof["example"]
colors = ["C3" if o else "C0" for o in ex["outlier"]]
axes[1].bar(pos, ex["G"], color=colors)
for i, same in zip(pos, ex["same"]):
    if same:
        axes[1].text(i, ex["G"][i - 1], "•", ha="center", va="bottom", fontsize=10)
axes[1].set_xlabel("example position i")
axes[1].set_ylabel("G_i")
axes[1].set_title("one prompt: red = outlier, blue = clean, • = query's pattern", fontsize=10)
plt.tight_layout()
plt.show()

# %% [markdown]
# **Reading the figure.** Left: the weights decay geometrically with distance from the query
# (the product `Π (1 − s_j)` of lesson 08 forgets the past), and at every position an outlier
# example gets several times less weight than a clean one: the gate `σ(w · p)` has learned to
# recognise the outlier directions and to close on them. Right: in one prompt, the last few
# examples carry almost all the weight, outliers among them damped. Forgetting is also the
# Mamba's weakness: on a new pattern pair, if the last few examples happen to be of the
# other pattern, the prediction is wrong, which is where its clean error comes from.
#
# ## Summary
# * Paper 3's models are `F = Σ G_i y_i p_iᵀ W_Bᵀ W_C p_q`; the Mamba's `G` is lesson 08's
#   product gate (checked: loop = closed form = selective scan), the linear Transformer's is 1.
# * Trained by SGD on the hinge loss, the gated model tolerates far more outliers than the
#   linear Transformer (0.09 vs 0.54 error at α = 0.5 in the full run) because its gate damps
#   outlier tokens; it pays for forgetting with a small clean error on new pattern pairs.
# * The exact floor of a same-pattern vote, `((1+α)/2)^l − 2^{-(l+1)}`, bounds the paper's
#   mechanism; the paper's below-0.01 claim up to α ≈ 0.8 needs the clean-example vote.
