# %% [markdown]
# # 00 · A tour: Mamba, in-context learning, and what the two papers claim
#
# **Goal.** Know what this project builds and why: what a Mamba model is, what
# in-context learning (ICL) is, which claims of the two papers we reproduce (and check),
# and how to run everything. Later lessons take each piece apart.
#
# **Prerequisites.** Python and NumPy; least squares. Nothing about Mamba yet.
#
# **Run time.** About 10 seconds (3 seconds with `LESSONS_FAST=1`).
#
# **You will use** `mamba_from_scratch.model` (a forward pass of an untrained model) and
# `mamba_from_scratch.demo.linear_regression_prompts` (the prompts of `make demo`).

# %% tags=["parameters"]
import os

FAST = os.environ.get("LESSONS_FAST", "0") == "1"  # CI sets LESSONS_FAST=1 to shrink every size
SEED = 0
N_PROMPTS = 200 if FAST else 2000   # prompts averaged in the in-context least-squares curve
N_POINTS = 300 if FAST else 500     # points per single-index scatter plot

# %%
import math
import subprocess
import sys

import matplotlib.pyplot as plt
import numpy as np

from mamba_from_scratch.demo import linear_regression_prompts
from mamba_from_scratch.model import MambaConfig, init_params, model_forward

rng = np.random.default_rng(SEED)
plt.rcParams.update({"figure.dpi": 80, "axes.grid": True, "grid.alpha": 0.3})

# %% [markdown]
# ## 1. What Mamba is
#
# Mamba (Gu & Dao 2023) is a sequence model built from **selective state space** layers
# instead of attention. Each layer carries a fixed-size state through the sequence with a
# linear recurrence whose step size `Δ` and matrices `B, C` depend on the current token
# (lesson 01). Cost is linear in the length, and generating a token needs only the state,
# not the whole past. One Mamba block (official `mamba_simple.py`; our `mixer.py`):
#
# ```
# xz    = in_proj(x)                  split into x, z         (b, l, 2 d_inner)
# x     = silu(causal_conv1d(x))      a short local conv     (b, l, d_inner)
# dt, B, C = x_proj(x)                token-dependent SSM parameters
# delta = softplus(dt_proj(dt))       step sizes > 0          (b, l, d_inner)
# y     = selective_scan(x, delta, A, B, C, D)                (b, l, d_inner)
# out   = out_proj(y * silu(z))       a gate, then back to d_model
# ```
#
# | symbol | meaning | typical |
# |---|---|---|
# | `b, l` | batch size, sequence length | |
# | `d_model` | residual width | 64 to 2560 |
# | `d_inner = expand · d_model` | channels inside the block | `expand = 2` |
# | `n = d_state` | state size per channel | 16 |
# | `k = d_conv` | conv width | 4 |
# | `r = dt_rank` | rank of the `Δ` projection | `ceil(d_model / 16)` |
#
# The model stacks blocks with residuals: `read_in → n_layer × (x + mixer(rmsnorm(x))) →
# norm_f → read_out`. Here is the package's version, untrained, with its parameters keyed by
# the official state-dict names:

# %%
cfg = MambaConfig(d_model=16, n_layer=2, d_in=5, d_out=1)
params = init_params(cfg, np.random.default_rng(SEED))
for name, value in params.items():
    if name.startswith(("read", "layers.0", "norm_f")):
        print(f"{name:<32} {str(value.shape):>12}")
print(f"... {sum(v.size for v in params.values())} parameters in all")
tokens, targets = linear_regression_prompts(rng, 3, 24, 4)      # 3 prompts of 24 tokens
out, _ = model_forward(params, cfg, tokens, backend="numpy")
print("tokens", tokens.shape, "-> outputs", out.shape)
assert out.shape == (3, 24, 1) and np.all(np.isfinite(out))

# %% [markdown]
# ## 2. What in-context learning is
#
# Show a model a **prompt** of examples `(x_1, y_1), …, (x_N, y_N)` from a task it has never
# seen, then a query `x_{N+1}`; it predicts `y_{N+1}` without any weight update. The task
# changes from prompt to prompt, so the model cannot memorise it: it has to *learn from the
# context*, in its forward pass. A model is trained on many such prompts (pretraining), then
# tested on fresh ones.
#
# The classic example (Garg et al. 2022) is linear regression: every prompt draws its own
# `w ~ N(0, I/d)` and labels `y_i = <w, x_i>`. The best any learner can do after seeing
# `i - 1` examples is least squares on them; with no noise its expected error is
# `max(0, 1 - (i-1)/d)` (each example pins down one more of the `d` directions of `w`).
# That is the yardstick `make demo` compares a small trained Mamba against. Here is the
# yardstick itself, computed naively, one prompt and one position at a time:

# %%
def in_context_least_squares(tokens, targets):
    """Predict each y_i from the examples before it by minimum-norm least squares.

    Args:
        tokens: (b, N, d + 1) rows (x_i, y_{i-1}) as in the demo.  targets: (b, N) y_i.
    Returns:
        predictions: (b, N).
    """
    b, N, _ = tokens.shape
    x = tokens[..., :-1]                                          # (b, N, d)
    pred = np.zeros((b, N))
    for p in range(b):
        for i in range(1, N):
            w_hat = np.linalg.lstsq(x[p, :i], targets[p, :i], rcond=None)[0]   # (d,)
            pred[p, i] = x[p, i] @ w_hat
    return pred


d_lr, N_lr = 4, 12
tok, y_lr = linear_regression_prompts(rng, N_PROMPTS, N_lr, d_lr, dtype=np.float64)
err = np.mean((in_context_least_squares(tok, y_lr) - y_lr) ** 2, axis=0)      # (N,)
sem = np.std((in_context_least_squares(tok, y_lr) - y_lr) ** 2, axis=0) / np.sqrt(N_PROMPTS)
i = np.arange(1, N_lr + 1)
theory = np.maximum(0.0, 1 - (i - 1) / d_lr)
assert np.all(np.abs(err - theory) < 5 * sem + 1e-9), (err, theory)
print("measured:", err.round(3))
print("theory:  ", theory.round(3))

fig, ax = plt.subplots(figsize=(6.5, 3.6))
ax.errorbar(i, err, yerr=2 * sem, fmt="o", ms=4, capsize=2, label=f"least squares on the context ({N_PROMPTS} prompts, ±2 s.e.)")
ax.plot(i, theory, "k:", label="theory: max(0, 1 - (i-1)/d)")
ax.axhline(1.0, color="gray", ls="--", lw=1, label="predict 0 (ignore the context)")
ax.set_xlabel("example index i (examples seen before it: i - 1)")
ax.set_ylabel("mean squared error")
ax.set_title(f"In-context linear regression, d = {d_lr}: the best possible learner")
ax.legend(fontsize=9)
ax.set_ylim(-0.05, 1.3)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 3. The two papers, and what this project checks
#
# The project's specification, `SPEC.md` (shared with the repository's authors), and the
# summaries of the papers it was given fix every detail we use; where a paper's exact
# construction is not public, the spec makes a choice and says so, and the lessons say so
# too.
#
# **Paper 1: Oh, Suzuki & Huang 2025**, *Mamba Can Learn Low-Dimensional Targets In-Context
# via Test-Time Feature Learning* (arXiv 2510.12026). The task is **single-index**: each
# prompt draws a hidden direction `β` (in a fixed `r`-dimensional subspace of `R^d`), and
# `y = g(<β, x>) + noise` for a known link `g`, e.g. a Hermite polynomial. Claims:
# * a one-layer Mamba, pretrained by gradient methods (a two-stage algorithm), learns such
#   targets in context with a test-time sample complexity that improves on linear
#   Transformers (which behave like kernel methods) and is comparable to nonlinear
#   Transformers;
# * the mechanism is **test-time feature learning**: Mamba's nonlinear **gate** lets it
#   extract the direction `β` from the context, which lowers the difficulty from the
#   link's *information exponent* to its *generative exponent* (lessons 07 to 09);
# * in experiments following Oko et al. 2024, trained Mamba and linear-attention models
#   have about the same error for `d = 16` and `d = 32`, and beat kernel ridge regression
#   at small `N` (lesson 10).
#
# **Paper 3: Li et al. 2025**, *Can Mamba Learn In Context with Outliers?* (arXiv
# 2510.00399). In-context *classification* where a fraction of the examples carry outlier
# patterns with arbitrary labels. Claims: Mamba's gate learns to suppress outlier examples,
# so it stays accurate at outlier fractions where a linear Transformer fails (the paper:
# beyond 1/2), at the price of slower training (lesson 11).
#
# What is reproduced and what is not goes in `docs/results.md`, with error bars.
#
# ## 4. The single-index task in pictures
#
# Links are normalized Hermite polynomials `He_k(z)/√k!`: mean 0 and variance 1 under
# `z ~ N(0, 1)`, and orthogonal to each other. Their **information exponent** is the lowest
# degree with a nonzero Hermite coefficient: `k` for `He_k`. A learner that only correlates
# `y` with fixed functions of `x` (a kernel, a linear attention) needs a number of samples
# that grows like a power of `d`, and the power grows with the information exponent (the
# "correlational statistical query" lower bound is about `d^{ie/2}`); transforming the
# *labels* first (as the gate does) can make such links much easier.
#
# ### Exercise 1: normalized Hermite polynomials
# Write `hermite(k, z)` returning `He_k(z) / sqrt(k!)` using the three-term recurrence
# `He_0 = 1`, `He_1 = z`, `He_{j+1} = z He_j - j He_{j-1}`.

# %% tags=["exercise"]
def hermite(k, z):
    """Normalized probabilists' Hermite polynomial He_k(z) / sqrt(k!).

    Args:
        k: degree >= 0.  z: array.
    Returns:
        array shaped like z.
    """
    raise NotImplementedError("Exercise 1: write hermite")

# %% tags=["solution"]
def hermite(k, z):
    """Normalized probabilists' Hermite polynomial He_k(z) / sqrt(k!) (see the exercise)."""
    z = np.asarray(z, dtype=float)
    prev, cur = np.zeros_like(z), np.ones_like(z)      # He_{-1} (unused), He_0
    for j in range(k):
        prev, cur = cur, z * cur - j * prev            # He_{j+1} = z He_j - j He_{j-1}
    return cur / math.sqrt(math.factorial(k))

# %% tags=["check"]
nodes, weights = np.polynomial.hermite_e.hermegauss(30)   # exact Gaussian expectations up to degree 59
weights = weights / weights.sum()
gram = np.array([[np.sum(weights * hermite(j, nodes) * hermite(k, nodes)) for k in range(6)] for j in range(6)])
assert np.allclose(gram, np.eye(6), atol=1e-10), "E[h_j h_k] must be the identity"
assert np.allclose(hermite(3, np.array([2.0])), (8 - 6) / math.sqrt(6)), "He_3(z) = z^3 - 3z"
print("exercise 1 passed: orthonormal under N(0, 1)")

# %% [markdown]
# ### Exercise 2: a single-index prompt
# Write `single_index_prompt(rng, beta, k, N, tau)` returning `x` of shape `(N, d)` with
# rows `~ N(0, I_d)` and labels `y_i = hermite(k, <beta, x_i>) + zeta_i`,
# `zeta_i ~ Unif{-tau, +tau}` (a random sign times `tau`).

# %% tags=["exercise"]
def single_index_prompt(rng, beta, k, N, tau=0.1):
    """One prompt of the single-index task.

    Args:
        rng: numpy Generator.  beta: (d,) unit direction.  k: Hermite degree of the link.
        N: number of examples.  tau: label noise magnitude.
    Returns:
        x: (N, d), y: (N,).
    """
    raise NotImplementedError("Exercise 2: write single_index_prompt")

# %% tags=["solution"]
def single_index_prompt(rng, beta, k, N, tau=0.1):
    """One prompt of the single-index task (see the exercise)."""
    x = rng.standard_normal((N, len(beta)))                    # (N, d)
    zeta = tau * rng.choice([-1.0, 1.0], size=N)               # (N,)
    return x, hermite(k, x @ beta) + zeta

# %% tags=["check"]
d_chk = 16
beta_chk = np.zeros(d_chk)
beta_chk[:8] = rng.standard_normal(8)
beta_chk /= np.linalg.norm(beta_chk)                          # in the subspace of the first 8 coordinates
x_chk, y_chk = single_index_prompt(np.random.default_rng(1), beta_chk, 3, 5000, tau=0.1)
assert x_chk.shape == (5000, d_chk) and y_chk.shape == (5000,)
assert np.allclose(np.abs(y_chk - hermite(3, x_chk @ beta_chk)), 0.1), "noise must be ±tau"
zeta_chk = y_chk - hermite(3, x_chk @ beta_chk)
assert 0.45 < np.mean(zeta_chk > 0) < 0.55, "the noise sign must be a fair coin"
assert abs(x_chk.mean()) < 0.02 and abs(x_chk.std() - 1) < 0.02, "x ~ N(0, I)"
print("exercise 2 passed")

# %% [markdown]
# The label depends on `x` only through `<β, x>`. Plotted against that projection it is a
# clean curve; against any single coordinate it looks like noise, for every degree. A
# learner must find `β` before it can see the link, and the higher the information
# exponent, the weaker the linear hints about `β` that `y` carries:

# %%
beta = np.zeros(16)
beta[:8] = rng.standard_normal(8)
beta /= np.linalg.norm(beta)
fig, axes = plt.subplots(2, 3, figsize=(10, 5.5), sharey="row")
for col, k in enumerate([2, 3, 4]):
    x_many, y_many = single_index_prompt(rng, beta, k, 200_000)   # for the correlation only
    corr = np.corrcoef(x_many @ beta, y_many)[0, 1]
    x, y = x_many[:N_POINTS], y_many[:N_POINTS]
    axes[0, col].scatter(x @ beta, y, s=3, alpha=0.4)
    axes[0, col].set_title(f"g = He{k}/√{k}!   (information exponent {k})", fontsize=10)
    axes[0, col].set_xlabel("<β, x>  (the hidden direction)")
    axes[1, col].scatter(x[:, 0], y, s=3, alpha=0.4, color="C1")
    axes[1, col].set_xlabel("x_1  (one coordinate)")
    axes[0, col].text(0.03, 0.92, f"corr(y, <β,x>) = {corr:+.3f}", transform=axes[0, col].transAxes, fontsize=9)
    axes[0, col].set_ylim(-4, 8)
    axes[1, col].set_ylim(-4, 8)
axes[0, 0].set_ylabel("label y")
axes[1, 0].set_ylabel("label y")
fig.suptitle("Single-index targets: a curve along β, noise along anything else", fontsize=11)
plt.tight_layout()
plt.show()

# %% [markdown]
# Note the correlations (from 200 000 samples): for every link here the *linear*
# correlation of `y` with `<β, x>` is about 0 (`He_k` is orthogonal to `He_1 = z` for `k ≥ 2`), so "average `y · x`
# over the context" finds nothing. For `He2` and `He4`, `y · (x xᵀ)` would find `β`; for `He3`
# only degree-3 correlations would, which takes far more examples. A transform of the label,
# like `|y|` or `sign(y)`, brings the signal back to degree 1 or 2: that is the gate's job
# in paper 1.
#
# ## 5. How to run everything
#
# Two commands set up a fresh machine: `make demo` and `make test`. Then everything goes
# through one command line, `python -m mamba_from_scratch <command>` (each has `--help`):
#
# | command | what it does | lesson |
# |---|---|---|
# | `demo` | trains a 2-layer Mamba to do linear regression in context; loss curve and error vs examples seen | 06 |
# | `bench scan`, `bench train-step` | times the scan backends and a training step | 03, 05 |
# | `icl-theory` | paper 1's one-layer gated Mamba vs linear attention and kernel ridge regression | 07 to 09 |
# | `icl-train`, `icl-eval` | trains Mamba / linear-attention Transformer on single-index prompts; evaluates vs KRR | 10 |
# | `outliers` | paper 3: in-context classification with outliers | 11 |
#
# `make lessons` re-executes these notebooks; `make assignments` writes student versions
# with the solutions removed to `build/assignments/`. The list of commands, straight from
# the package:

# %%
result = subprocess.run([sys.executable, "-m", "mamba_from_scratch", "--help"],
                        capture_output=True, text=True, timeout=60)
print(result.stdout)
assert result.returncode == 0 and "demo" in result.stdout

# %% [markdown]
# ## Summary
# * Mamba = stacked blocks around a **selective scan**: a linear recurrence whose step and
#   matrices depend on the token.
# * In-context learning = learning a new task from the examples in the prompt, in the
#   forward pass. Least squares on the context is the yardstick for linear tasks.
# * Paper 1: a gated one-layer Mamba learns single-index targets in context by finding the
#   hidden direction at test time; the gate is what beats kernel-like learners. Paper 3: the
#   gate also filters outliers.
#
# **Next:** lesson 01, the selective scan.
