# %% [markdown]
# # 11 · Outliers: why a gate helps in-context classification
#
# **Goal.** The setting of Li et al. 2025 (paper 3 in the project's docs, lesson 00): a
# one-layer Mamba and a one-layer linear Transformer classify a query from a prompt of
# labelled examples, some of which are **outliers** with corrupted labels. The Mamba's
# input-dependent gate learns to damp the outliers; the linear Transformer averages them in.
# We train both (the package's hand-written SGD), measure the error as the outlier
# probability `α` grows, look at the learned gates, and compare with the exact error floor of
# the mechanism.
#
# **Prerequisites.** Lesson 08 (the gated sum `Σ G_i ...` as an S6 scan with `A = -1`).
#
# **Run time.** About 30 seconds on a 2-core machine (32 s measured at load average 7.8);
# with `LESSONS_FAST=1` the whole stub/mutant/solution round trip took 18 s.
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

from mamba_from_scratch.grading import package_calls, python_lines
from mamba_from_scratch.icl.outliers.data import DataConfig, make_patterns, sample_prompts, split_tasks
from mamba_from_scratch.icl.outliers.experiment import ALPHAS, gate_profile, run_seed
from mamba_from_scratch.icl.outliers.floor import clean_vote_floor, error_floor
from mamba_from_scratch.icl.outliers.model import (
    ModelConfig,
    gates,
    hinge_backward,
    hinge_forward,
    init_params,
    model_forward,
)
from mamba_from_scratch.icl.outliers.train import TrainConfig


def sigmoid_stable(v):
    """The logistic function 1 / (1 + e^-v) without overflow (either branch of the same formula)."""
    e = np.exp(-np.abs(v))
    return np.where(v >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def rel_err(a, b):
    """max |a - b| / max |b|, with the shapes required to agree."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    assert a.shape == b.shape, f"shape {a.shape}, expected {b.shape}"
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


rng = np.random.default_rng(0)
_passed = {}                     # exercise id -> True once its check passed (read by the fallbacks)
FROZEN = np.load("_data/11_gates.npz")       # reference gates written by lessons/_data/make_11.py
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
# | `P` | `prompts.tokens` | `(b, l + 1, d + 1)` tokens, the query last with label 0 |
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
params = init_params(ModelConfig(data_cfg.d + 1, "mamba"), rng)
params["W_B"] += 0.05 * rng.standard_normal(params["W_B"].shape)   # off the diagonal init, to test every entry
F_closed, _ = model_forward(params, ModelConfig(data_cfg.d + 1, "mamba", method="closed"), demo.tokens)
F_scan, _ = model_forward(params, ModelConfig(data_cfg.d + 1, "mamba", method="scan"), demo.tokens)
F_loop = np.array([mamba_output_loop(params, P) for P in demo.tokens])
assert np.allclose(F_loop, F_closed, rtol=1e-10) and np.allclose(F_scan, F_closed, rtol=1e-10)
print("loop == closed form == selective scan:", np.round(F_closed, 4))

# %% [markdown]
# ### Exercise 11.1: the hinge loss, forward and backward
# Training minimises the mean hinge loss over a batch of `b` prompts,
#
# $$\ell(F, y) = \frac{1}{b}\sum_{n=1}^{b} \max(0,\; 1 - y_n F_n), \qquad
# \frac{\partial \ell}{\partial F_n} = \begin{cases} -y_n / b & 1 - y_n F_n > 0 \\ 0 & \text{otherwise,}\end{cases}$$
#
# (at the kink `1 - yF = 0` the subgradient 0 is used). Write `hinge_forward(F, y)` returning
# the loss and a cache, and `hinge_backward(dloss, cache)` returning `dF = dloss · ∂ℓ/∂F`
# (the upstream `dloss` is 1 when the hinge is the whole loss). The check compares with values
# worked out by hand and with float64 finite differences away from the kinks.

# %% tags=["solution"]
def my_hinge_forward(F, y):
    """Mean hinge loss of a batch.

    Args:
        F: (b,) model outputs.  y: (b,) labels +1 / -1.
    Returns:
        loss (float), cache (whatever hinge_backward needs).
    """
    ### BEGIN SOLUTION
    margin = 1.0 - y * F                                   # (b,)
    return float(np.mean(np.maximum(margin, 0.0))), (y, margin)
    ### END SOLUTION


def my_hinge_backward(dloss, cache):
    """Gradient of the mean hinge loss.

    Args:
        dloss: float, the upstream gradient dL/dloss.  cache: from my_hinge_forward.
    Returns:
        dF: (b,).
    """
    ### BEGIN SOLUTION
    y, margin = cache
    return dloss * np.where(margin > 0, -y, 0.0) / len(y)  # (b,) zero where the margin is met
    ### END SOLUTION

# %% tags=["check", "points=2"]
_passed["11.1"] = False
_F = np.array([2.0, 0.3, -0.5, -1.7, 0.9])
_y = np.array([1.0, 1.0, 1.0, -1.0, -1.0])
# margins 1 - yF = (-1, 0.7, 1.5, -0.7, 1.9): the loss is (0.7 + 1.5 + 1.9) / 5
_loss, _cache = my_hinge_forward(_F, _y)
assert abs(_loss - 0.82) < 1e-12, f"loss: expected (0.7 + 1.5 + 1.9) / 5 = 0.82, got {_loss}"
_dF = my_hinge_backward(1.0, _cache)
assert np.shape(_dF) == (5,), f"dF has the shape of F, (b,); got {np.shape(_dF)}"
assert np.allclose(_dF, [0.0, -0.2, -0.2, 0.0, 0.2], rtol=0, atol=1e-12), f"dF: expected -y/b on violated margins, got {_dF}"
_used = package_calls(my_hinge_forward, my_hinge_backward)
assert not _used, f"write the hinge loss and its gradient yourself, without {_used}"
### BEGIN HIDDEN TESTS
_r = np.random.default_rng(11)
_Fb = 2.0 * _r.standard_normal(40)
_yb = _r.choice([-1.0, 1.0], size=40)
_Fb[np.abs(1.0 - _yb * _Fb) < 1e-3] += 0.01            # stay off the kinks, where the loss has no derivative
_l, _c = my_hinge_forward(_Fb, _yb)
assert abs(_l - sum(max(0.0, 1.0 - a * b) for a, b in zip(_yb, _Fb)) / 40) < 1e-12, "loss on a random batch"
_d = my_hinge_backward(0.7, _c)                          # upstream gradient 0.7 must scale dF
_fd = np.array([(my_hinge_forward(_Fb + e, _yb)[0] - my_hinge_forward(_Fb - e, _yb)[0]) / 2e-6
                for e in 1e-6 * np.eye(40)])
assert np.shape(_d) == (40,) and np.abs(_d - 0.7 * _fd).max() < 1e-8, "dF against finite differences"
assert my_hinge_forward(np.array([3.0, -2.0]), np.array([1.0, -1.0]))[0] == 0.0, "met margins cost nothing"
### END HIDDEN TESTS
_passed["11.1"] = True
print("exercise 11.1 passed: hinge loss and gradient match the hand values and finite differences")

# %% [markdown]
# The package's `hinge_forward` / `hinge_backward` (what `run_seed` trains with) agree:

# %%
_lp, _cp = hinge_forward(_F, _y)
print("package loss", _lp, "gradient", hinge_backward(1.0, _cp))

# %% [markdown]
# ### Exercise 11.2: the learned gate, forward and backward
# The Mamba's only input-dependent part is its gate. With `v_i = w · p_i` and
# `s_i = σ(v_i)`, the weight token `i` keeps at the query (token `L = l + 1`) is
#
# $$G_i = s_i \prod_{j=i+1}^{L} (1 - s_j), \qquad \log G_i = \log s_i + \sum_{j>i}\log(1-s_j), \qquad 1 - s_j = \sigma(-v_j).$$
#
# Training moves `w` through `G`: given `dG = ∂L/∂G` (shape `(b, L)`), the chain rule through
# `log G` gives, since `∂ log G_i/∂v_i = 1 - s_i` and `∂ log G_i/∂v_k = -s_k` for `k > i`,
#
# $$\frac{\partial L}{\partial v_k} = dG_k\, G_k (1 - s_k) \;-\; s_k \sum_{i<k} dG_i\, G_i, \qquad
# \frac{\partial L}{\partial w} = \sum_{n,k} \frac{\partial L}{\partial v_{nk}}\, p_{nk}, \qquad
# \frac{\partial L}{\partial p_{nk}} = \frac{\partial L}{\partial v_{nk}}\, w.$$
#
# Write `gate_forward(P, w)` returning `G` and a cache, and `gate_backward(dG, cache)`
# returning `(dP, dw)`. Vectorise over prompts (no loop over `b`); a loop over the `L`
# positions, or cumulative sums, are both fine. Compute `1 - s` as `σ(-v)`, not as `1 - σ(v)`:
# when `v` is large, `1 - σ(v)` rounds to 0 and the weight of every earlier token is lost. The
# check compares with frozen weights from the package (including saturated gates, to 1e-9
# relative error), with the telescoping identity `Σ_i G_i + Π_j (1 - s_j) = 1`, and the backward
# with float64 finite differences.

# %% tags=["solution"]
def gate_forward(P, w):
    """Gate weights of the one-layer Mamba.

    Args:
        P: (b, L, d1) prompts, the query last.  w: (d1,) gate vector.
    Returns:
        G: (b, L) with G[n, i] = s_i prod_{j>i} (1 - s_j), s = sigmoid(P @ w); cache for gate_backward.
    """
    ### BEGIN SOLUTION
    v = P @ w                                              # (b, L)
    s = sigmoid_stable(v)                                  # (b, L)
    log1m = np.log(sigmoid_stable(-v))                     # (b, L) log(1 - s), exact for large v
    after = np.cumsum(log1m[:, ::-1], axis=1)[:, ::-1] - log1m  # (b, L) sum_{j>i} log(1 - s_j)
    G = s * np.exp(after)                                  # (b, L)
    return G, (P, w, G, s)
    ### END SOLUTION


def gate_backward(dG, cache):
    """Gradients of sum(dG * G) with respect to the tokens and the gate vector.

    Args:
        dG: (b, L) upstream gradient.  cache: from gate_forward.
    Returns:
        dP: (b, L, d1), dw: (d1,).
    """
    ### BEGIN SOLUTION
    P, w, G, s = cache
    dGG = dG * G                                           # (b, L) dG_i G_i
    before = np.cumsum(dGG, axis=1) - dGG                  # (b, L) sum_{i<k} dG_i G_i
    dv = dGG * (1.0 - s) - s * before                      # (b, L)
    return dv[..., None] * w, np.einsum("nk,nkd->d", dv, P)
    ### END SOLUTION

# %% tags=["check", "points=4"]
_passed["11.2"] = False
_P, _w = FROZEN["P"], FROZEN["w"]                          # (3, 7, 5), (5,)
_G, _cache = gate_forward(_P, _w)
assert np.shape(_G) == (3, 7), f"G has shape (b, L) = (3, 7); got {np.shape(_G)}"
_s = 1.0 / (1.0 + np.exp(-(_P @ _w)))
assert np.abs(_G[:, -1] - _s[:, -1]).max() < 1e-12, "the query's own weight is G_L = s_L"
assert np.abs(_G[:, -2] - _s[:, -2] * (1 - _s[:, -1])).max() < 1e-12, "G_{L-1} = s_{L-1} (1 - s_L)"
assert np.abs(_G.sum(axis=1) + np.prod(1 - _s, axis=1) - 1.0).max() < 1e-12, "sum_i G_i + prod_j (1 - s_j) = 1"
_dG = np.random.default_rng(12).standard_normal((3, 7))
_dP, _dw = gate_backward(_dG, _cache)
assert np.shape(_dw) == (5,) and np.shape(_dP) == (3, 7, 5), "dw is (d1,), dP is (b, L, d1)"
_fd_w = np.array([(np.sum(_dG * gate_forward(_P, _w + e)[0]) - np.sum(_dG * gate_forward(_P, _w - e)[0])) / 2e-6
                  for e in 1e-6 * np.eye(5)])
assert np.abs(_dw - _fd_w).max() < 1e-7 * max(1.0, np.abs(_fd_w).max()), f"dw against finite differences: {_dw} vs {_fd_w}"
_used = package_calls(gate_forward, gate_backward)
assert not _used, f"write the gate and its backward yourself, without {_used}"
# The method: vectorised over prompts. 6 prompts must not run more Python lines than 1 (same L).
_Pl = np.random.default_rng(13).standard_normal((6, 7, 5))
_lines = {}
for _b in (1, 6):
    (_Gl, _cl), _lf = python_lines(gate_forward, _Pl[:_b], _w)
    _, _lb = python_lines(gate_backward, np.ones_like(_Gl), _cl)
    _lines[_b] = _lf + _lb
assert _lines[6] - _lines[1] < 4, f"{_lines[1]} Python lines for 1 prompt but {_lines[6]} for 6: no loop over prompts"
### BEGIN HIDDEN TESTS
assert rel_err(_G, FROZEN["G"]) < 1e-10, "G against the frozen package weights"
_Gb, _cb = gate_forward(FROZEN["P_big"], FROZEN["w_big"])  # |w . p| up to 50: saturated gates
assert np.all(np.isfinite(_Gb)) and np.shape(_Gb) == (2, 9), "finite G of shape (2, 9) for saturated gates"
assert np.max(np.abs(_Gb - FROZEN["G_big"]) / np.maximum(FROZEN["G_big"], 1e-300)) < 1e-9, \
    "saturated gates: every weight to 1e-9 relative error (compute 1 - s as sigmoid(-v))"
_fd_P = np.zeros_like(_P)
for _n, _k, _j in np.ndindex(*_P.shape):
    _e = np.zeros_like(_P)
    _e[_n, _k, _j] = 1e-6
    _fd_P[_n, _k, _j] = (np.sum(_dG * gate_forward(_P + _e, _w)[0]) - np.sum(_dG * gate_forward(_P - _e, _w)[0])) / 2e-6
assert np.abs(_dP - _fd_P).max() < 1e-7 * max(1.0, np.abs(_fd_P).max()), "dP against finite differences"
### END HIDDEN TESTS
_passed["11.2"] = True
print("exercise 11.2 passed: gate weights match the frozen ones (saturated too), gradients match finite differences")

# %% tags=["fallback"]
if not _passed["11.2"]:
    def gate_forward(P, w):
        """Reference: the package's closed form; the cache holds what a backward would need."""
        G, s = gates(P, w)
        return G, (P, w, G, s)
    print("exercise 11.2 not solved yet: the rest of the lesson uses the reference")

# %% [markdown]
# The package computes the same weights in `gates` (what `model_forward` uses) and the same
# gradient inside `model_backward`, where `dG_i = dF y_i a_i` comes from the attention score
# `a_i = p_iᵀ W_Bᵀ W_C p_q`. Yours against the package on the frozen prompts:

# %%
print("max |G yours - package|:", np.abs(gate_forward(FROZEN["P"], FROZEN["w"])[0] - gates(FROZEN["P"], FROZEN["w"])[0]).max())
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
# ### Exercise 11.3: the exact error floor
# The paper's mechanism is a **same-pattern vote**: attention keeps the examples of the
# query's pattern and the gate damps outliers. It is forced wrong on a prompt with **no clean
# example of the query's pattern**. Each example holds the query's pattern with probability
# 1/2 and is an outlier with probability `α`, independently, so that happens with probability
# `((1 + α)/2)^l`. On such a prompt, under flipped labels, every same-pattern vote is wrong
# (error 1), unless no example has the query's pattern at all (probability `2^{-l}`; a coin,
# error 1/2). Derive the expected error in closed form and write `floor_flipped(alpha, l)`
# (vectorised over `alpha`). The check compares with values at `α = 0` and `α = 1` that you
# can work out by hand, with a binomial sum over the number of same-pattern examples, and with
# the share of sampled prompts that have no clean same-pattern example.

# %% tags=["solution"]
def floor_flipped(alpha, l):
    """Expected error of a same-pattern vote under flipped labels (see the text).

    Args:
        alpha: float or array of outlier probabilities.  l: examples per prompt.
    Returns:
        float array of the shape of alpha.
    """
    ### BEGIN SOLUTION
    return ((1.0 + np.asarray(alpha, dtype=float)) / 2.0) ** l - 0.5 ** (l + 1)
    ### END SOLUTION

# %% tags=["check", "points=2"]
_passed["11.3"] = False
assert abs(float(floor_flipped(0.0, L)) - 0.5 ** (L + 1)) < 1e-15, \
    "alpha = 0: only a prompt with no same-pattern example at all fails (a coin: 2^-l / 2)"
assert abs(float(floor_flipped(1.0, L)) - (1 - 0.5 ** (L + 1))) < 1e-12, "alpha = 1: every example is an outlier"
_out = floor_flipped(np.array([0.1, 0.5, 0.9]), 5)
assert np.shape(_out) == (3,), f"vectorised over alpha: expected shape (3,), got {np.shape(_out)}"
assert not package_calls(floor_flipped), f"derive the floor yourself, without {package_calls(floor_flipped)}"
### BEGIN HIDDEN TESTS
# binomial sum over k same-pattern examples: all of them outliers with probability alpha^k
for _a in (0.1, 0.5, 0.9):
    for _l in (5, 20):
        _exact = sum(math.comb(_l, k) * 0.5 ** _l * (_a ** k if k > 0 else 0.5) for k in range(_l + 1))
        assert abs(float(floor_flipped(_a, _l)) - _exact) < 1e-12 * _exact, (_a, _l, _exact)
_pr = sample_prompts(data_cfg, patterns, test_tasks, 20_000, 0.8, "flipped", np.random.default_rng(5), test=True)
_share = np.mean(~np.any(_pr.same & ~_pr.outlier, axis=1))
_se = math.sqrt(_share * (1 - _share) / 20_000)
assert abs(_share - (float(floor_flipped(0.8, L)) + 0.5 ** (L + 1))) < 4 * _se, (_share, floor_flipped(0.8, L))
### END HIDDEN TESTS
_passed["11.3"] = True
print("exercise 11.3 passed: the floor matches the hand values and the binomial sum")

# %% tags=["fallback"]
if not _passed["11.3"]:
    def floor_flipped(alpha, l):
        """Reference: the package's binomial sum."""
        return error_floor(np.asarray(alpha, dtype=float), l, "flipped")
    print("exercise 11.3 not solved yet: the rest of the lesson uses the reference")

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
# examples, see below) but degrades far more slowly: from `α = 0.3` on it is below the linear
# Transformer, at `α = 0.5` about a third of its error here. Its error
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
# With your `gate_forward` (exercise 11.2) and the trained Mamba's `w`, on prompts at `α = 0.3`:
# the weights `G_i` averaged separately over clean and outlier examples, by position. The
# package's `gate_profile` does the same with its own `gates`; the two must agree.

# %%
first = runs[0]
w_trained = first["params"]["mamba"]["w"]
gp = sample_prompts(data_cfg, first["patterns"], first["test_tasks"], GATE_PROMPTS, 0.3, "flipped",
                    np.random.default_rng(7), test=True)
G_trained = gate_forward(gp.tokens, w_trained)[0][:, :-1]                  # (n, l): the examples, not the query
prof = {"mean": {name: np.where(mask, G_trained, 0).sum(0) / np.maximum(mask.sum(0), 1)
                 for name, mask in (("clean", ~gp.outlier), ("outlier", gp.outlier))},
        "example": {"G": G_trained[0], "outlier": gp.outlier[0], "same": gp.same[0]}}
ratio = float(G_trained[~gp.outlier].mean() / G_trained[gp.outlier].mean())
pkg = gate_profile(first["params"]["mamba"], data_cfg, first["patterns"], first["test_tasks"],
                   np.random.default_rng(7), n=GATE_PROMPTS, alpha=0.3)
print(f"mean gate weight, clean / outlier: {ratio:.1f} (package's gate_profile: {pkg['mean_clean_over_outlier']:.1f})")
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
# * The hinge loss's gradient is `-y/b` on the violated margins; the gate's gradient runs
#   through `log G` as a cumulative sum over earlier tokens, and `1 - s` must be computed as
#   `σ(-v)` to keep saturated gates' weights.
# * Paper 3's models are `F = Σ G_i y_i p_iᵀ W_Bᵀ W_C p_q`; the Mamba's `G` is lesson 08's
#   product gate (checked: loop = closed form = selective scan), the linear Transformer's is 1.
# * Trained by SGD on the hinge loss, the gated model tolerates far more outliers than the
#   linear Transformer (0.09 vs 0.54 error at α = 0.5 in the full run) because its gate damps
#   outlier tokens; it pays for forgetting with a small clean error on new pattern pairs.
# * The exact floor of a same-pattern vote, `((1+α)/2)^l − 2^{-(l+1)}`, bounds the paper's
#   mechanism; the paper's below-0.01 claim up to α ≈ 0.8 needs the clean-example vote.
