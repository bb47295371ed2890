# %% [markdown]
# # 07 · Single-index models, exponents, and kernel ridge regression
#
# **Goal.** Understand the task of paper 1 before any Mamba: single-index targets
# `y = g(<β, x>)`, their Hermite expansion, the **information exponent** (what correlational
# learners such as kernels and linear attention see) versus the **generative exponent**
# (what a learner that may transform the labels sees), and the kernel ridge regression (KRR)
# baseline, written by hand, checked against scikit-learn, and measured as `d` grows.
#
# **Prerequisites.** Lesson 00 (the task); least squares; expectations under a Gaussian. What a
# kernel is helps but is explained. Hermite polynomials are built here, from their recurrence.
#
# **Run time.** 5 to 60 seconds on a 2-core machine (measured 5 s at load 0.3, 61 s at load 10.6; a few seconds with `LESSONS_FAST=1`).
#
# **You will use** `mamba_from_scratch.icl.links` (`make_link`, `gauss_hermite_coefficients`),
# `mamba_from_scratch.icl.task.SingleIndexTask` and `mamba_from_scratch.icl.krr` (`kernel_matrix`,
# `loo_errors`, `krr_fit_predict`, `krr_predict`).

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

from mamba_from_scratch.grading import package_calls
from mamba_from_scratch.icl.krr import kernel_matrix, krr_fit_predict, krr_predict, loo_errors
from mamba_from_scratch.icl.links import gauss_hermite_coefficients, make_link
from mamba_from_scratch.icl.task import SingleIndexTask

rng = np.random.default_rng(SEED)
plt.rcParams.update({"figure.dpi": 80, "axes.grid": True, "grid.alpha": 0.3})
_passed = {}                     # exercise id -> True once its check passed (read by the fallbacks)
FROZEN = np.load("_data/07_hermite.npz")     # reference numbers written by lessons/_data/make_07.py


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
# ### Exercise 07.1: the Hermite polynomials from their recurrence
# The probabilists' Hermite polynomials satisfy
#
# $$\mathrm{He}_0 = 1, \qquad \mathrm{He}_1 = z, \qquad \mathrm{He}_{k+1}(z) = z\,\mathrm{He}_k(z) - k\,\mathrm{He}_{k-1}(z),$$
#
# so `He_2 = z² - 1`, `He_3 = z³ - 3z`, `He_4 = z⁴ - 6z² + 3`, and `E[He_j He_k] = k! [j = k]` under
# `z ~ N(0, 1)`. Write `hermite_table(K, z)` returning the **normalized** `h_k = He_k / √k!` for every
# `k = 0..K` at once, stacked on a new first axis, by the recurrence (one pass, no `np.polynomial`).
# The check compares with the closed forms above, with orthonormality under Gauss–Hermite
# quadrature, and with frozen values up to `K = 8`.

# %% tags=["solution"]
def hermite_table(K, z):
    """Normalized Hermite polynomials h_0..h_K at z, by the three-term recurrence.

    Args:
        K: highest degree, int >= 0.
        z: array of any shape S.
    Returns:
        (K + 1, *S) float64 array; entry [k] is He_k(z) / sqrt(k!).
    """
    ### BEGIN SOLUTION
    z = np.asarray(z, dtype=np.float64)
    he = np.empty((K + 1,) + z.shape)
    he[0] = 1.0
    if K >= 1:
        he[1] = z
    for k in range(1, K):
        he[k + 1] = z * he[k] - k * he[k - 1]
    norms = np.sqrt([math.factorial(k) for k in range(K + 1)])        # (K + 1,)
    return he / norms.reshape((K + 1,) + (1,) * z.ndim)
    ### END SOLUTION

# %% tags=["check", "points=2"]
_passed["07.1"] = False
_z = np.linspace(-3, 3, 7).reshape(7, 1) * np.ones((1, 2))          # (7, 2): shape S is kept
_t = hermite_table(4, _z)
assert np.shape(_t) == (5, 7, 2), f"expected shape (K + 1, *z.shape) = (5, 7, 2), got {np.shape(_t)}"
_closed = [np.ones_like(_z), _z, (_z ** 2 - 1) / math.sqrt(2), (_z ** 3 - 3 * _z) / math.sqrt(6),
           (_z ** 4 - 6 * _z ** 2 + 3) / math.sqrt(24)]
for _k in range(5):
    assert np.allclose(_t[_k], _closed[_k], rtol=1e-12, atol=1e-12), f"h_{_k} differs from its closed form"
_nodes, _w = np.polynomial.hermite_e.hermegauss(30)                  # exact for degree < 60
_H = hermite_table(8, _nodes)                                        # (9, 30)
_gram = (_H * (_w / math.sqrt(2 * math.pi))) @ _H.T                  # E[h_j h_k], (9, 9)
assert np.allclose(_gram, np.eye(9), atol=1e-10), "h_0..h_8 should be orthonormal under N(0, 1)"
### BEGIN HIDDEN TESTS
_tf = hermite_table(8, FROZEN["table_z"])
assert np.shape(_tf) == FROZEN["table_h"].shape, "shape (9, 3, 5) expected"
assert np.allclose(_tf, FROZEN["table_h"], rtol=1e-10, atol=1e-10), "degrees up to 8 differ from the frozen table"
assert np.shape(hermite_table(0, np.zeros(3))) == (1, 3) and np.allclose(hermite_table(0, np.zeros(3)), 1.0)
assert np.allclose(hermite_table(1, np.array(2.0)), [1.0, 2.0]), "a scalar z gives shape (K + 1,)"
### END HIDDEN TESTS
_passed["07.1"] = True
print("exercise 07.1 passed: the recurrence gives orthonormal Hermite polynomials")

# %% tags=["fallback"]
if not _passed["07.1"]:
    from mamba_from_scratch.icl.links import hermite_he

    def hermite_table(K, z):
        """Reference: the package's recurrence (mamba_from_scratch.icl.links.hermite_he)."""
        return np.stack([hermite_he(k, z) / math.sqrt(math.factorial(k)) for k in range(K + 1)])
    print("exercise 07.1 not solved yet: the rest of the lesson uses the reference")

# %%
def h(k, z):
    """Normalized Hermite polynomial h_k = He_k / sqrt(k!) at z (any shape), from your table."""
    return hermite_table(k, z)[k]


print("h_3 at z = 0, 1, 2:", np.round(h(3, np.array([0.0, 1.0, 2.0])), 4) + 0.0, "(closed form (z³ - 3z)/√6)")

# %% [markdown]
# ### Exercise 07.2: a Hermite coefficient by Monte Carlo, and its standard error
# Write `hermite_coefficient_mc(g, k, n, rng)` returning the estimate of `c_k = E[g(z) h_k(z)]`
# from `n` standard normal draws, made by **one** call `z = rng.standard_normal(n)`, and its
# standard error `std(g(z) h_k(z)) / √n` (population standard deviation, numpy's default
# `ddof = 0`). Use your `h`. An estimate without its error bar cannot tell a real coefficient
# from noise; the check therefore tests both: against frozen values for the same draws (to
# `1e-9`), and the estimate against Gauss–Hermite quadrature within 5 of your standard errors.

# %% tags=["solution"]
def hermite_coefficient_mc(g, k, n, rng):
    """Monte Carlo estimate of the k-th normalized Hermite coefficient of g.

    Args:
        g: vectorized function of z.  k: degree >= 0.  n: number of draws.
        rng: numpy Generator; draw z = rng.standard_normal(n) once.
    Returns:
        (estimate, standard_error): floats; the mean of g(z) h_k(z) and std(g(z) h_k(z)) / sqrt(n).
    """
    ### BEGIN SOLUTION
    z = rng.standard_normal(n)
    prod = g(z) * h(k, z)
    return float(prod.mean()), float(prod.std() / math.sqrt(n))
    ### END SOLUTION

# %% tags=["check", "points=2"]
_passed["07.2"] = False
g_chk = make_link("poly:0:0.6:0:0.8")             # 0.6 h_1 + 0.8 h_3
exact = gauss_hermite_coefficients(g_chk, 4)
assert np.allclose(exact, [0, 0.6, 0, 0.8, 0], atol=1e-10)
for k in range(5):
    est, se = hermite_coefficient_mc(g_chk, k, 200_000, np.random.default_rng(k))
    assert abs(est - FROZEN["mc_est"][k]) < 1e-9 * max(1.0, abs(est)), f"k={k}: estimate {est} != frozen {FROZEN['mc_est'][k]}"
    assert abs(se - FROZEN["mc_se"][k]) < 1e-9 * FROZEN["mc_se"][k], f"k={k}: standard error {se} != frozen {FROZEN['mc_se'][k]}"
    assert abs(est - exact[k]) < 5 * se, (k, est, exact[k], se)
### BEGIN HIDDEN TESTS
est, se = hermite_coefficient_mc(make_link("he3"), 3, 1000, np.random.default_rng(11))
assert abs(est - float(FROZEN["mc_he3_est"])) < 1e-9 and abs(se - float(FROZEN["mc_he3_se"])) < 1e-9 * se
# the standard error shrinks like 1 / sqrt(n): 4x the draws, half the error (same distribution)
_se1 = hermite_coefficient_mc(g_chk, 1, 40_000, np.random.default_rng(3))[1]
_se4 = hermite_coefficient_mc(g_chk, 1, 160_000, np.random.default_rng(4))[1]
assert 0.45 < _se4 / _se1 < 0.55, (_se1, _se4)
### END HIDDEN TESTS
_passed["07.2"] = True
print("exercise 07.2 passed: estimates and standard errors match; Monte Carlo agrees with quadrature")

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
# ## Paper 1's result, and which experiments here test it
#
# Oh, Suzuki & Huang (2025, "Mamba can learn low-dimensional targets in-context via test-time
# feature learning", arXiv 2510.12026) study prompts whose `β` lies in an unknown `r`-dimensional
# subspace `S_r` of `R^d` (`docs/results.md` lists their claims and our verdicts), and prove:
#
# * **Mamba** (one layer, the gated scan of lesson 08, pretrained by gradient steps on many
#   prompts) predicts the query after a number of context examples `N` that grows polynomially in
#   **`r`**, with a power set by the **generative exponent `ge`** (the project's results page writes
#   it "`N ~ r^ge`"), and that does **not grow with `d`**: pretraining finds `S_r` (that is where
#   `d` is paid, in pretraining prompts), and the gate then finds `β` inside it at test time, by the
#   label transform that lowers `ie` to `ge`.
# * **Correlational learners** that use the raw labels, kernel methods and linear Transformers
#   (which behave like kernels), need `N` of order **`d^{ie}`**; no correlational method can do
#   better than about `d^{ie/2}` (the CSQ lower bound). Here the **information exponent `ie`**
#   enters, and the ambient `d`.
#
# So `ie` sets the price for learners that only correlate, `ge ≤ ie` the price for Mamba's gate, and
# the gate also trades `d` for `r`. What tests which part:
#
# | claim | experiment | where |
# |---|---|---|
# | the raw label reaches degree `ie`, a transformed label degree `ge` | the correlation table above | §3 |
# | a correlational estimator needs `N ∝ d^{·}` samples (`ie = 2`: `N ∝ d`) | spectral estimate of `β` vs `N/d` | §4 |
# | kernels degrade with `d`; knowing `S_r` removes `d` | KRR on the full `x` vs the intrinsic coordinates | §6 |
# | the gate lowers `ie` to `ge`; the statistic points at `β` without pretraining `d` away | gated vs ungated statistic | lesson 08 |
# | the full rate with a pretrained model | `docs/results_icl_theory.md` (`icl-theory --sweep r/d`) | lesson 09 |
#
# The measured verdict on the last row (`docs/results.md`): the gated model's error levels off
# below the zero predictor for every `r` and `d`, but no slope in `r` could be measured.
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
# ### Exercise 07.3: leave-one-out error without refitting
# Which kernel and `λ`? The package picks them per prompt by the **leave-one-out** (LOO) error
# on the context, which has a closed form: with the hat matrix `H = K (K + λI)⁻¹` (the map from
# the labels to the fitted values), the LOO residual of point `i` is
#
# $$e_i = \frac{y_i - (Hy)_i}{1 - H_{ii}},$$
#
# so one solve replaces `N` refits. Write `loo_error(K, y, lam)` returning the mean squared LOO
# residual `mean(e_i²)` **and** the residual vector `e`. The check compares both with `N` explicit
# refits (each dropping one point), to `1e-9`.

# %% tags=["solution"]
def loo_error(K, y, lam):
    """Leave-one-out error of kernel ridge regression, in closed form.

    Args:
        K: (N, N) symmetric kernel matrix.  y: (N,) labels.  lam: ridge > 0.
    Returns:
        (mean_squared, residuals): a float and the (N,) LOO residuals e_i = y_i - f_{-i}(x_i).
    """
    ### BEGIN SOLUTION
    H = K @ np.linalg.inv(K + lam * np.eye(len(y)))            # (N, N) hat matrix
    resid = (y - H @ y) / (1 - np.diag(H))                     # (N,)
    return float(np.mean(resid ** 2)), resid
    ### END SOLUTION

# %% tags=["check", "points=2"]
_passed["07.3"] = False


def _loo_by_refits(K, y, lam):
    """N explicit refits, each without one point: the definition of the LOO residual."""
    n = len(y)
    out = np.zeros(n)
    for i in range(n):
        keep = np.arange(n) != i
        alpha = np.linalg.solve(K[np.ix_(keep, keep)] + lam * np.eye(n - 1), y[keep])
        out[i] = y[i] - K[i, keep] @ alpha
    return out


K_chk = kernel_matrix(X[:25], X[:25], ("rbf", 1.0))
y_chk = y[:25]
_brute = _loo_by_refits(K_chk, y_chk, 0.3)
_mse, _res = loo_error(K_chk, y_chk, 0.3)
assert np.shape(_res) == (25,), f"return the (N,) residuals, got shape {np.shape(_res)}"
assert np.allclose(_res, _brute, rtol=1e-9, atol=1e-12), "the residuals differ from 25 refits"
assert abs(_mse - np.mean(_brute ** 2)) < 1e-9 * np.mean(_brute ** 2), "the mean squared residual differs"
assert not package_calls(loo_error), f"use the hat matrix yourself, without {package_calls(loo_error)}"
### BEGIN HIDDEN TESTS
K_poly = kernel_matrix(X[:40], X[:40], ("poly", 3))
for _lam in (1e-3, 2.0):
    _b = _loo_by_refits(K_poly, y[:40], _lam)
    _m, _r = loo_error(K_poly, y[:40], _lam)
    assert np.allclose(_r, _b, rtol=1e-9, atol=1e-12) and abs(_m - np.mean(_b ** 2)) < 1e-9 * np.mean(_b ** 2), _lam
### END HIDDEN TESTS
_passed["07.3"] = True
print("exercise 07.3 passed: closed-form LOO == 25 refits")

# %% [markdown]
# The package's `loo_errors(K, y, lams)` does the same for a whole grid of ridges with one
# eigendecomposition of `K` (then `H = U diag(μ/(μ+λ)) Uᵀ` costs nothing per `λ`):

# %%
print("package loo_errors at λ = 0.3:", loo_errors(K_chk, y_chk, [0.3])[0][0],
      " 25 refits:", np.mean(_loo_by_refits(K_chk, y_chk, 0.3) ** 2))

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
    label = "KRR on the intrinsic coordinates (r = 2)" if key[1] else f"KRR on the full x, d = {key[0]}"
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
