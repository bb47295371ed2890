# %% [markdown]
# # 07 · Single-index models, exponents, and kernel ridge regression
#
# **Goal.** Understand the task of paper 1 before any Mamba: single-index targets
# `y = g(<β, x>)`, their Hermite expansion, the **information exponent** (what correlational
# learners such as kernels and linear attention see) versus the **generative exponent**
# (what a learner that may transform the labels sees), and the kernel ridge regression (KRR)
# baseline, written by hand, checked against scikit-learn, and measured as `d` grows.
#
# **Prerequisites.** Lesson 00 (the task and Hermite polynomials); least squares; what a
# kernel is helps but is explained.
#
# **Run time.** About 30 seconds on an idle 2-core machine (10 seconds with `LESSONS_FAST=1`).
#
# **You will use** `mamba_from_scratch.icl.links` (`make_link`, `hermite_he`,
# `gauss_hermite_coefficients`), `mamba_from_scratch.icl.task.SingleIndexTask` and
# `mamba_from_scratch.icl.krr` (`kernel_matrix`, `loo_errors`, `krr_fit_predict`, `krr_predict`).

# %% tags=["parameters"]
import os

FAST = os.environ.get("LESSONS_FAST", "0") == "1"  # CI sets LESSONS_FAST=1 to shrink every size
SEED = 0
MC_SAMPLES = 50_000 if FAST else 400_000              # Monte Carlo samples for label-transform correlations
SPECTRAL_DIMS = [8, 32] if FAST else [8, 16, 32]      # d for the "find beta" experiment
SPECTRAL_TRIALS = 5 if FAST else 20
KRR_DIMS = [4, 16]                                    # d for the KRR sweep
KRR_NS = [16, 32, 64] if FAST else [16, 32, 64, 128, 256]
KRR_PROMPTS = 4 if FAST else 16

# %%
import math

import matplotlib.pyplot as plt
import numpy as np
from sklearn.kernel_ridge import KernelRidge

from mamba_from_scratch.icl.krr import kernel_matrix, krr_fit_predict, krr_predict, loo_errors
from mamba_from_scratch.icl.links import gauss_hermite_coefficients, hermite_he, make_link
from mamba_from_scratch.icl.task import SingleIndexTask

rng = np.random.default_rng(SEED)
plt.rcParams.update({"figure.dpi": 80, "axes.grid": True, "grid.alpha": 0.3})


def h(k, z):
    """Normalized Hermite polynomial He_k / sqrt(k!)."""
    return hermite_he(k, z) / math.sqrt(math.factorial(k))

# %% [markdown]
# ## 1. The idea in words
#
# In a **single-index model** the label depends on a `d`-dimensional input only through one
# direction: `y = g(<β, x>) + noise`. Once `β` is known, the problem is one-dimensional and
# easy; finding `β` is the hard part. How hard depends on how much the label *correlates*
# with simple functions of `<β, x>`:
#
# * A learner that only forms correlations `E[y · f(x)]` (a kernel method, a linear
#   attention layer, gradient descent early in training) needs the lowest degree `k` at which
#   `g` has a nonzero Hermite coefficient: the **information exponent** `ie`. Its sample cost
#   grows like `d` to a power that grows with `ie` (the "CSQ" lower bound is about `d^{ie/2}`).
# * A learner that may first **transform the label** (`T(y)`, any function) needs the lowest
#   `k` at which some `T(y)` correlates with a degree-`k` polynomial of `<β, x>`: the
#   **generative exponent** `ge ≤ ie`. For polynomial links `ge` is 1, or 2 if `g` is even.
#
# Paper 1's point is that Mamba's gate is such a label transform. This lesson measures the
# two exponents and the kernel baseline.
#
# ## 2. The Hermite expansion
#
# Under `z ~ N(0, 1)`, the normalized Hermite polynomials `h_k = He_k/√k!` are orthonormal, so
# every link has a unique expansion:
#
# $$g(z) = \sum_k c_k h_k(z), \qquad c_k = \mathbb{E}[g(z)\, h_k(z)], \qquad \text{ie} = \min\{k \ge 1 : c_k \ne 0\}.$$
#
# | symbol | code | meaning |
# |---|---|---|
# | `d`, `r` | `task.d`, `task.r` | ambient dimension; dimension of the subspace holding `β` |
# | `N` | | context examples per prompt |
# | `z` | `x @ beta` | the index `<β, x>`, standard Gaussian |
# | `c_k` | `link.coeffs[k]` | Hermite coefficient |
# | `ie`, `ge` | `link.ie`, `link.ge` | information / generative exponent |
#
# ### Exercise 1: a Hermite coefficient by Monte Carlo
# Write `hermite_coefficient_mc(g, k, n, rng)` returning the estimate of `c_k = E[g(z) h_k(z)]`
# from `n` standard normal draws, and its standard error `std(g(z) h_k(z)) / √n`. The check
# compares it with the package's Gauss–Hermite quadrature.

# %% tags=["exercise"]
def hermite_coefficient_mc(g, k, n, rng):
    """Monte Carlo estimate of the k-th normalized Hermite coefficient of g.

    Returns:
        (estimate, standard_error).
    """
    raise NotImplementedError("Exercise 1: write hermite_coefficient_mc")

# %% tags=["solution"]
def hermite_coefficient_mc(g, k, n, rng):
    """Monte Carlo estimate of the k-th normalized Hermite coefficient of g (see the exercise)."""
    z = rng.standard_normal(n)
    prod = g(z) * h(k, z)
    return float(prod.mean()), float(prod.std() / math.sqrt(n))

# %% tags=["check"]
g_chk = make_link("poly:0:0.6:0:0.8")             # 0.6 h_1 + 0.8 h_3
exact = gauss_hermite_coefficients(g_chk, 4)
for k in range(5):
    est, se = hermite_coefficient_mc(g_chk, k, 200_000, np.random.default_rng(k))
    assert abs(est - exact[k]) < 5 * se + 1e-12, (k, est, exact[k], se)
assert np.allclose(exact, [0, 0.6, 0, 0.8, 0], atol=1e-10)
print("exercise 1 passed: Monte Carlo agrees with quadrature within 5 standard errors")

# %%
for name in ["he1", "he2", "he3", "he4", "poly:0:0:1:1"]:
    link = make_link(name)
    print(f"{link.name:>16}: coefficients {np.round(link.coeffs, 3)}   ie = {link.ie}, ge = {link.ge}")

# %% [markdown]
# ## 3. Information vs generative exponent, measured
#
# For three links we estimate `E[T(y) h_k(z)]` (with `T(y)` standardised) for three label
# transforms: the identity (what a correlational learner uses), `y²`, and `sign(y)`. The
# identity row lights up only at `k = ie`; a nonlinear transform moves signal down to
# `k = ge`.

# %%
z = rng.standard_normal(MC_SAMPLES)
transforms = {"T(y) = y": lambda y: y, "T(y) = y²": lambda y: y ** 2, "T(y) = sign(y)": np.sign}
links = ["he2", "he3", "he4"]
corr = np.zeros((len(links), len(transforms), 4))
se = np.zeros_like(corr)                                  # Monte Carlo standard errors
for i, name in enumerate(links):
    y = make_link(name)(z)
    for j, T in enumerate(transforms.values()):
        t = T(y)
        t = (t - t.mean()) / t.std()
        prods = [t * h(k, z) for k in range(1, 5)]
        corr[i, j] = [p.mean() for p in prods]
        se[i, j] = [p.std() / math.sqrt(MC_SAMPLES) for p in prods]
assert abs(corr[1, 0, 0]) < 5 * se[1, 0, 0] and abs(corr[1, 2, 0]) > 0.3, "He3: y has no degree-1 signal, sign(y) has"
assert abs(corr[2, 0, 1]) < 5 * se[2, 0, 1] and abs(corr[2, 2, 1]) > 0.3, "He4: y has no degree-2 signal, sign(y) has"

fig, axes = plt.subplots(1, 3, figsize=(11, 3.3), sharey=True)
for i, (ax, name) in enumerate(zip(axes, links)):
    link = make_link(name)
    im = ax.imshow(np.abs(corr[i]), cmap="viridis", vmin=0, vmax=1)
    for j in range(len(transforms)):
        for k in range(4):
            ax.text(k, j, f"{corr[i, j, k]:+.2f}", ha="center", va="center",
                    color="white" if abs(corr[i, j, k]) < 0.6 else "black", fontsize=9)
    ax.set_xticks(range(4), [f"k={k}" for k in range(1, 5)])
    ax.set_yticks(range(len(transforms)), list(transforms))
    ax.set_title(f"{name.upper()}: ie = {link.ie}, ge = {link.ge}", fontsize=10)
    ax.grid(False)
fig.colorbar(im, ax=axes, shrink=0.8, label="|E[T(y) h_k(<β,x>)]|")
fig.suptitle("Which degree k of <β, x> does a label transform T(y) correlate with?", fontsize=11)
plt.show()

# %% [markdown]
# **Reading the figure.** Top rows: the identity correlates only with `h_ie`, so a learner
# that only averages `y · f(x)` must use degree-`ie` features to find `β`. Bottom rows:
# `sign(y)` of He3 already correlates with `h_1 = <β, x>` (ge = 1), and `sign(y)` of He4
# with `h_2` (ge = 2: even links stay even under any `T`).
#
# ## 4. Finding β from correlations: samples grow with d
#
# The simplest correlational estimator for an `ie = 2` link (He2): the matrix
# `M = (1/N) Σ_i y_i (x_i x_iᵀ - I)` has expectation `c_2 √2 · ββᵀ`, so its top eigenvector
# estimates `β`. It works once `N` is a multiple of `d` (the noise in `M` has operator norm
# about `√(d/N)`): the overlap `|<β̂, β>|` collapses onto one curve against `N/d`.

# %%
def spectral_estimate(x, y):
    """Top eigenvector (by |eigenvalue|) of (1/N) sum_i y_i (x_i x_i^T - I)."""
    N, d = x.shape
    M = (x * y[:, None]).T @ x / N - np.mean(y) * np.eye(d)      # (d, d)
    ev, U = np.linalg.eigh(M)
    return U[:, np.argmax(np.abs(ev))]


ratios = np.array([0.5, 1, 2, 4, 8, 16, 32])
overlap = {}
he2 = make_link("he2")
for d in SPECTRAL_DIMS:
    vals = []
    for ratio in ratios:
        trials = []
        for _ in range(SPECTRAL_TRIALS):
            beta = rng.standard_normal(d)
            beta /= np.linalg.norm(beta)
            x = rng.standard_normal((int(ratio * d), d))
            trials.append(abs(spectral_estimate(x, he2(x @ beta)) @ beta))
        vals.append((np.mean(trials), np.std(trials) / math.sqrt(SPECTRAL_TRIALS)))
    overlap[d] = np.array(vals)
assert overlap[SPECTRAL_DIMS[-1]][-1, 0] > 0.9, "with N = 32 d samples the direction is found"

fig, ax = plt.subplots(figsize=(6.5, 3.6))
for d in SPECTRAL_DIMS:
    ax.errorbar(ratios, overlap[d][:, 0], yerr=2 * overlap[d][:, 1], fmt="o-", ms=4, capsize=2, label=f"d = {d}")
ax.set_xscale("log")
ax.set_xlabel("samples per dimension N / d")
ax.set_ylabel("|<β̂, β>|  (1 = found)")
ax.set_title("He2: a degree-2 correlation finds β once N ∝ d (mean ± 2 s.e.)", fontsize=10)
ax.legend(fontsize=9)
plt.tight_layout()
plt.show()

# %% [markdown]
# For He3 the same idea needs a degree-3 tensor `(1/N) Σ y_i x_i^{⊗3}`, whose noise only
# falls below the signal at much larger `N` relative to `d`. That is the price of a high
# information exponent, and what a label transform avoids.
#
# ## 5. Kernel ridge regression, by hand
#
# The baseline that uses no pretraining: fit each prompt's `N` context pairs with
#
# $$f(x) = \sum_i \alpha_i k(x_i, x), \qquad \alpha = (K + \lambda I)^{-1} y, \qquad K_{ij} = k(x_i, x_j).$$
#
# The package's kernels are scaled by the input dimension, e.g. the RBF kernel
# `exp(-|x - x'|² / (2 w · dim))`. First the smallest implementation, then scikit-learn and the
# package must give the same predictions.

# %%
def krr_naive(X, y, Xq, width, lam):
    """RBF kernel ridge regression with the package's scaling, by the closed form."""
    dim = X.shape[1]
    sq = lambda P, Q: np.sum((P[:, None, :] - Q[None, :, :]) ** 2, axis=-1)
    K = np.exp(-sq(X, X) / (2 * width * dim))                   # (N, N)
    alpha = np.linalg.solve(K + lam * np.eye(len(X)), y)        # (N,)
    return np.exp(-sq(Xq, X) / (2 * width * dim)) @ alpha       # (Q,)


task = SingleIndexTask(d=8, r=2, link="he2", seed=SEED)
pr = task.sample(rng, 1, 60, n_queries=10)
X, y, Xq = pr.x_context[0], pr.y_context[0], pr.x_query[0]
lam = 0.1
pred_naive = krr_naive(X, y, Xq, 1.0, lam)
sk = KernelRidge(alpha=lam, kernel="rbf", gamma=1 / (2 * 1.0 * X.shape[1])).fit(X, y)
pred_pkg, choice = krr_fit_predict(X, y, Xq, kernels=[("rbf", 1.0)], ridges_rel=[lam])   # mean diag K = 1
assert np.allclose(pred_naive, sk.predict(Xq)) and np.allclose(pred_naive, pred_pkg)
print("naive == scikit-learn == package; max |diff| =", np.abs(pred_naive - sk.predict(Xq)).max())

# %% [markdown]
# ### Exercise 2: leave-one-out error without refitting
# Which kernel and `λ`? The package picks them per prompt by the **leave-one-out** (LOO) error
# on the context, which has a closed form: with the hat matrix `H = K (K + λI)⁻¹`, the LOO
# residual of point `i` is `(y_i - (Hy)_i) / (1 - H_ii)`. Write `loo_error(K, y, lam)` (mean
# squared LOO residual); the check compares it with `N` explicit refits and with the
# package's `loo_errors`.

# %% tags=["exercise"]
def loo_error(K, y, lam):
    """Mean squared leave-one-out error of kernel ridge regression, in closed form.

    Args:
        K: (N, N) kernel matrix.  y: (N,).  lam: ridge > 0.
    Returns:
        float.
    """
    raise NotImplementedError("Exercise 2: write loo_error")

# %% tags=["solution"]
def loo_error(K, y, lam):
    """Mean squared leave-one-out error of kernel ridge regression, in closed form (see the exercise)."""
    H = K @ np.linalg.inv(K + lam * np.eye(len(y)))            # (N, N) hat matrix
    resid = (y - H @ y) / (1 - np.diag(H))
    return float(np.mean(resid ** 2))

# %% tags=["check"]
K_chk = kernel_matrix(X[:25], X[:25], ("rbf", 1.0))
y_chk = y[:25]
brute = []
for i in range(25):
    keep = np.arange(25) != i
    alpha = np.linalg.solve(K_chk[np.ix_(keep, keep)] + 0.3 * np.eye(24), y_chk[keep])
    brute.append((y_chk[i] - K_chk[i, keep] @ alpha) ** 2)
assert np.isclose(loo_error(K_chk, y_chk, 0.3), np.mean(brute))
assert np.isclose(loo_error(K_chk, y_chk, 0.3), loo_errors(K_chk, y_chk, [0.3])[0][0])
print("exercise 2 passed: closed-form LOO == 25 refits")

# %% [markdown]
# ## 6. KRR gets worse as d grows
#
# Now the package's `krr_predict` (kernel and ridge chosen per prompt by LOO from RBF and
# polynomial kernels) on He2 prompts with `r = 2`, for two ambient dimensions, on the full
# `x` and on the intrinsic coordinates (an oracle that knows the subspace). Errors are
# against the noiseless target, divided by `E[g²]` so that predicting 0 scores about 1.

# %%
def krr_error(d, N, intrinsic):
    task = SingleIndexTask(d=d, r=2, link="he2", seed=SEED)
    pr = task.sample(np.random.default_rng([SEED, d, N]), KRR_PROMPTS, N, n_queries=32)
    xc, xq = (task.intrinsic(pr.x_context), task.intrinsic(pr.x_query)) if intrinsic else (pr.x_context, pr.x_query)
    pred, _ = krr_predict(xc, pr.y_context, xq)
    per_prompt = np.mean((pred - pr.y_query_clean) ** 2, axis=1) / task.link.second_moment
    return per_prompt.mean(), per_prompt.std() / math.sqrt(KRR_PROMPTS)


results = {(d, False): np.array([krr_error(d, N, False) for N in KRR_NS]) for d in KRR_DIMS}
results[("intrinsic", True)] = np.array([krr_error(KRR_DIMS[0], N, True) for N in KRR_NS])
for key, v in results.items():
    print(key, np.round(v[:, 0], 3))
assert results[(KRR_DIMS[1], False)][-1, 0] > results[(KRR_DIMS[0], False)][-1, 0], "larger d, larger error"

fig, ax = plt.subplots(figsize=(6.5, 3.8))
for key, style in zip(results, ["o-", "s-", "k^--"]):
    label = f"KRR on the intrinsic coordinates (r = 2)" if key[1] else f"KRR on the full x, d = {key[0]}"
    ax.errorbar(KRR_NS, results[key][:, 0], yerr=2 * results[key][:, 1], fmt=style, ms=4, capsize=2, label=label)
ax.axhline(1.0, color="gray", ls=":", lw=1)
ax.set_xscale("log", base=2)
ax.set_xlabel("context length N")
ax.set_ylabel("normalized test error")
ax.set_title(f"KRR on He2, r = 2 ({KRR_PROMPTS} prompts × 32 queries, ±2 s.e.)", fontsize=10)
ax.legend(fontsize=9)
plt.tight_layout()
plt.show()

# %% [markdown]
# **Reading the figure.** The kernel knows nothing about `β`: it must fit a degree-2
# function of all `d` coordinates, so its error falls later as `d` grows (for `d = 16` and
# small `N` it is even worse than predicting 0: the LOO choice of kernel and ridge is itself
# noisy with few examples). Given the intrinsic
# coordinates it only has a function of 2 variables to fit and needs far fewer examples.
# The gap between the curves is the price of not finding the subspace, and "find the
# direction first" is what the one-layer Mamba of lesson 08 does at test time.
#
# ## Summary
# * Single-index targets: `y = g(<β, x>)`. Hermite coefficients `c_k = E[g h_k]`; `ie` is the
#   first nonzero degree, `ge ≤ ie` the first degree a transformed label reaches.
# * Correlational learners pay for `ie`; a learner that transforms labels pays for `ge`.
# * KRR per prompt: closed form, LOO for free from the hat matrix, matches scikit-learn;
#   its error at fixed `N` grows with `d`.
#
# **Next:** lesson 08, the one-layer Mamba as gated linear attention.
