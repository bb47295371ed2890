# %% [markdown]
# # 09 · Two-stage pretraining of the one-layer model
#
# **Goal.** Pretrain lesson 08's gated model the way paper 1 does (Algorithm 1 of Nishikawa et
# al.): **Stage I**, a single gradient step on `γ`, which finds the hidden subspace; **Stage
# II**, a ridge regression for the MLP's output weights, which fits the link. Then the
# headline comparison at small sizes: gated model vs linear attention vs kernel ridge
# regression, and how each depends on the ambient dimension `d`.
#
# **Prerequisites.** Lesson 07 (single-index tasks, KRR, the normalized error), lesson 08 (the
# gated statistic `h`, the readout `h^T(γ ⊙ φ(x))`, product vs normalized gate).
#
# **Run time.** About 90 seconds on an idle 2-core machine (10 seconds with `LESSONS_FAST=1`).
# The full-size results (r = 8, d = 16 and 32, N up to 4096) come from
# `python -m mamba_from_scratch icl-theory` and are in `docs/results_icl_theory.md`; this
# lesson reruns a small version.
#
# **You will use** `mamba_from_scratch.icl.pretrain` (`PretrainConfig`, `stage1`, `stage2`,
# `ridge_solve`, `gamma_concentration`), `mamba_from_scratch.icl.gated` (`context_statistics`,
# `readout_forward`, `readout_backward`), `mamba_from_scratch.icl.krr.krr_predict` and
# `mamba_from_scratch.icl.metrics` (`normalized_error`, `paired_difference`).

# %% tags=["parameters"]
import os

FAST = os.environ.get("LESSONS_FAST", "0") == "1"  # CI sets LESSONS_FAST=1 to shrink every size
SEED = 0
LINK = "he3"                          # information exponent 3, generative exponent 1
R = 2                                 # dimension of the hidden subspace
DIMS = [8] if FAST else [8, 16]       # ambient dimensions d
NS = [64, 256] if FAST else [64, 256, 1024, 4096]   # test context lengths
STAGE1_PROMPTS = 64 if FAST else 512  # T1 (context length N1 = 256)
STAGE2_PROMPTS = 32 if FAST else 96   # T2 per N
TEST_PROMPTS = 32 if FAST else 128    # test prompts per (d, N), 32 queries each
KRR_MAX_N = 64 if FAST else 256       # KRR costs an N x N eigendecomposition per prompt
KRR_PROMPTS = 4 if FAST else 12

# %%
import math

import matplotlib.pyplot as plt
import numpy as np

from mamba_from_scratch.icl.features import feature_groups, hermite_features, relevant_features
from mamba_from_scratch.icl.gated import context_statistics, readout_backward, readout_forward
from mamba_from_scratch.icl.krr import krr_predict
from mamba_from_scratch.icl.metrics import normalized_error, paired_difference
from mamba_from_scratch.icl.pretrain import PretrainConfig, gamma_concentration, ridge_solve, stage1, stage2
from mamba_from_scratch.icl.task import SingleIndexTask

rng = np.random.default_rng(SEED)
plt.rcParams.update({"figure.dpi": 80, "axes.grid": True, "grid.alpha": 0.3})
GATES = ["normalized", "none"]        # the gated model and linear attention (G_j = 1/N)

# %% [markdown]
# ## 1. The idea in words
#
# The model of lesson 08 predicts `f = Σ_k a_k relu(v_k · out_n + c_k)` from the scalar
# `out = h^T(γ ⊙ φ(x))`, where `h` is the gated statistic of the prompt's context. Two things
# must be learned across prompts, and the paper learns them separately:
#
# * **Where to look** (`γ`): every prompt has its own `β`, but all `β` live in the same
#   `r`-dimensional subspace. One gradient step on `γ`, from `γ0 = 1` with a tiny MLP, is a
#   correlation between labels and features over many prompts; it is large exactly on the
#   features of that subspace. Weight decay `λ1 = 1/η1` makes the step forget `γ0`:
#   `γ1 = γ0 - η1(∇ + λ1 γ0) = -η1 ∇`.
# * **What to do with it** (`a`): with `γ` fixed, `out` is a fixed scalar feature and the MLP
#   with random `(v, c)` is a random-features model: fitting `a` is ridge regression.
#
# ## 2. Stage I: the gradient with respect to `γ`
#
# $$\mathcal L = \frac{1}{2PQ}\sum_{p,q} (f_{pq} - y_{pq})^2, \qquad
# \frac{\partial \mathcal L}{\partial \gamma} = \sum_{p,q} \frac{\partial \mathcal L}{\partial\, \text{out}_{pq}}\; h_p \odot \varphi(x_{pq}).$$
#
# | symbol | code | meaning |
# |---|---|---|
# | `T1`, `N1` | `stage1_prompts`, `stage1_N` | Stage I prompts and their context length |
# | `γ0`, `η1`, `α` | `gamma0`, `eta1`, `alpha` | init (1), step (1), the tiny output weights `a = α 1` |
# | `out_n = (out - shift)/scale` | | the MLP input, normalised to O(1) once and then frozen |
# | `γ1` | `stage1(...)[0]` | the Stage I result, `(D,)` |
# | share on the subspace | `gamma_concentration` | `Σ_{relevant} γ² / Σ γ²` (constant excluded) |
#
# ### Exercise 1: the readout's gradient with respect to `γ`
# Write `readout_grad_gamma(dout, h, phi_q)` returning `∂L/∂γ` given `dout = ∂L/∂out` of shape
# `(P, Q)`, `h` of shape `(P, D)` and `phi_q` of shape `(P, Q, D)`. The check compares it with the
# package's `readout_backward` and with finite differences.

# %% tags=["exercise"]
def readout_grad_gamma(dout, h, phi_q):
    """dL/dgamma for out_pq = h_p^T (gamma * phi_q[p, q]).

    Args:
        dout: (P, Q).  h: (P, D).  phi_q: (P, Q, D).
    Returns:
        (D,).
    """
    raise NotImplementedError("Exercise 1: write readout_grad_gamma")

# %% tags=["solution"]
def readout_grad_gamma(dout, h, phi_q):
    """dL/dgamma of the readout (see the exercise): sum over p, q of dout_pq h_p * phi_pq."""
    return np.einsum("pq,pd,pqd->d", dout, h, phi_q)

# %% tags=["check"]
r_chk = np.random.default_rng(3)
h_chk, phi_chk, g_chk, dout_chk = (r_chk.standard_normal((3, 6)), r_chk.standard_normal((3, 4, 6)),
                                   r_chk.standard_normal(6), r_chk.standard_normal((3, 4)))
_, cache = readout_forward(h_chk, phi_chk, g_chk)
assert np.allclose(readout_grad_gamma(dout_chk, h_chk, phi_chk), readout_backward(dout_chk, cache)[1])
fd = np.zeros(6)
for i in range(6):
    e = np.zeros(6)
    e[i] = 1e-6
    fd[i] = (np.sum(readout_forward(h_chk, phi_chk, g_chk + e)[0] * dout_chk)
             - np.sum(readout_forward(h_chk, phi_chk, g_chk - e)[0] * dout_chk)) / 2e-6
assert np.allclose(readout_grad_gamma(dout_chk, h_chk, phi_chk), fd, rtol=1e-6)
print("exercise 1 passed: by hand == package == finite differences")

# %% [markdown]
# ## 3. Stage I finds the subspace
#
# One step on `T1` prompts of length `N1 = 256`, for the gated model and for linear attention,
# with the package's `stage1`. Below, `γ1²` over the features of `φ`, the relevant ones (those
# that depend only on the coordinates of the hidden subspace) in color.

# %%
def pretrain_stage1(task, rng):
    """Stage I for both gates on the same prompts: {gate: (cfg, gamma1, v, info)}."""
    s1 = task.sample(rng, STAGE1_PROMPTS, 256, 32)
    h1 = context_statistics(s1.x_context, s1.y_context, GATES)
    out = {}
    for gate in GATES:
        cfg = PretrainConfig(gate=gate, stage1_prompts=STAGE1_PROMPTS, stage1_N=256,
                             stage2_prompts=STAGE2_PROMPTS, width=128)
        gamma, v, info = stage1(task, cfg, rng, prompts=s1, h=h1[gate])
        out[gate] = (cfg, gamma, v, info)
    return out


tasks = {d: SingleIndexTask(d=d, r=R, link=LINK, seed=SEED) for d in DIMS}
pre = {d: pretrain_stage1(tasks[d], np.random.default_rng([SEED, d, 1])) for d in DIMS}
for d in DIMS:
    for gate in GATES:
        info = pre[d][gate][3]
        print(f"d = {d:2d}, {gate:>10}: share of |γ1|² on the subspace {info['gamma_mass_on_subspace']:.3f}"
              f"  (chance {info['gamma_mass_chance']:.3f})")
d0 = DIMS[0]
assert pre[d0]["normalized"][3]["gamma_mass_on_subspace"] > 3 * pre[d0]["normalized"][3]["gamma_mass_chance"]

fig, axes = plt.subplots(2, 1, figsize=(11, 4.6), sharex=True)
mask = relevant_features(d0, tasks[d0].index_set)
groups = feature_groups(d0)
for ax, gate in zip(axes, GATES):
    g2 = pre[d0][gate][1] ** 2
    g2 = g2 / g2[1:].max()
    idx = np.arange(g2.size)
    ax.bar(idx[~mask], g2[~mask], color="lightgray", label="other features")
    ax.bar(idx[mask], g2[mask], color="C3", label=f"features of the hidden subspace (coordinates {[int(i) for i in tasks[d0].index_set]})")
    share = pre[d0][gate][3]["gamma_mass_on_subspace"]
    name = "gated model (normalized gate)" if gate == "normalized" else "linear attention (no gate)"
    ax.set_title(f"{name}: {share:.0%} of |γ1|² on the subspace", fontsize=10)
    ax.set_ylabel("γ1² / max")
    ax.set_ylim(0, 1.05)
    for k, lab in enumerate(["1", "linear x_i", "squares (x_i²-1)/√2", "cross x_i x_j"]):
        start = np.argmax(groups == k)
        ax.axvline(start - 0.5, color="k", lw=0.6)
        if gate == GATES[0] and k > 0:
            ax.text(start + 1.5, 0.6, lab, fontsize=8)
axes[0].legend(fontsize=8, loc="upper right")
axes[1].set_xlabel(f"feature index of φ (d = {d0}, D = {g2.size}), constant excluded from the max")
plt.tight_layout()
plt.show()

# %% [markdown]
# **Reading the figure.** The gated step puts almost all its weight on the linear features of
# the two relevant coordinates (He3's gated label reaches `h_1 = <β, x>`, lesson 08). Linear
# attention's step is spread over the quadratic block, and only part of it lands on the
# subspace (0.40 at d = 8 here; more at d = 16): its label–feature correlation `E[y φ(x)]` is
# zero on every degree ≤ 2 feature for He3, and what it finds comes through the MLP's
# nonlinearity at `γ0 = 1`. Finding the subspace is not the whole story, though: section 5
# shows that even where linear attention's `γ1` is on the subspace it cannot use it, because
# its **test-time** statistic `h` carries no degree ≤ 2 signal about `β`.
#
# ## 4. Stage II: ridge regression for the output weights
#
# With `γ1` fixed, each query gives a feature vector `F_pq = relu(v · out_n,pq + c)` of width `W`
# (`c` redrawn). Stage II solves
#
# $$a = \arg\min_a \frac{1}{n}\|F a - y\|^2 + \lambda \|a\|^2 = \left(\frac{F^\top F}{n} + \lambda I\right)^{-1} \frac{F^\top y}{n},$$
#
# with `λ` chosen on a held-out quarter of the `T2` prompts.
#
# ### Exercise 2: the ridge fit
# Write `ridge_fit(F, y, lam)` returning `a` above (`F` is `(n, W)`, `y` is `(n,)`). The check
# compares it with the package's `ridge_solve` (which takes `FᵀF` and `Fᵀy`) and with a least
# squares problem on the augmented matrix `[F; √(nλ) I]`.

# %% tags=["exercise"]
def ridge_fit(F, y, lam):
    """argmin_a |F a - y|^2 / n + lam |a|^2.

    Args:
        F: (n, W).  y: (n,).  lam: > 0.
    Returns:
        a: (W,).
    """
    raise NotImplementedError("Exercise 2: write ridge_fit")

# %% tags=["solution"]
def ridge_fit(F, y, lam):
    """Ridge regression by the normal equations (see the exercise)."""
    n, W = F.shape
    return np.linalg.solve(F.T @ F / n + lam * np.eye(W), F.T @ y / n)

# %% tags=["check"]
F_chk = np.maximum(r_chk.standard_normal((50, 1)) * r_chk.choice([-1, 1], 8) + r_chk.uniform(-1, 1, 8), 0)
y_chk = r_chk.standard_normal(50)
a_chk = ridge_fit(F_chk, y_chk, 0.01)
assert np.allclose(a_chk, ridge_solve(F_chk.T @ F_chk, F_chk.T @ y_chk, 50, 0.01))
aug = np.vstack([F_chk, math.sqrt(50 * 0.01) * np.eye(8)])
assert np.allclose(a_chk, np.linalg.lstsq(aug, np.concatenate([y_chk, np.zeros(8)]), rcond=None)[0])
print("exercise 2 passed: normal equations == package == augmented least squares")

# %% [markdown]
# ## 5. The headline comparison, small
#
# For every `d` and test context length `N`: Stage II at that `N` (package's `stage2`), then
# the normalized test error (lesson 07: against the noiseless target, divided by `E[g²]`) on
# fresh prompts, for the gated model, linear attention, and KRR fit on each test prompt's
# context alone (on the full `x`, and on the intrinsic coordinates: an oracle that knows the
# subspace). He3 labels are heavy-tailed, so a set of prompts can be "easy" or "hard" for
# everyone (the zero predictor's own error scatters from 0.7 to 1.8 between sets below): we
# report each method's error **divided by the zero predictor's on the same prompts**, with a
# paired standard error in which the prompts' common difficulty cancels. Below 1 = better
# than predicting 0; 0 = perfect.

# %%
def relative(d, N, method, e_method, e_zero):
    """Error relative to the zero predictor's on the same prompts, mean(e) / mean(e_zero), with
    the ratio estimator's standard error std(e_p - rel z_p) / (sqrt(P) mean(z)) (paired: the
    prompts' common difficulty cancels)."""
    z = float(np.mean(e_zero))
    rel = float(np.mean(e_method)) / z
    se = float(np.std(e_method - rel * e_zero, ddof=1) / math.sqrt(len(e_zero)) / z)
    return dict(d=d, N=N, method=method, error=float(np.mean(e_method)), zero=z, rel=(rel, se), ep=e_method)


rows = []
for d in DIMS:
    task = tasks[d]
    for N in NS:
        r_N = np.random.default_rng([SEED, d, N])
        s2 = task.sample(r_N, STAGE2_PROMPTS, N, 32)
        test = task.sample(r_N, TEST_PROMPTS, N, 32)
        target, m2 = test.y_query_clean, task.link.second_moment
        _, _, e_zero = normalized_error(np.zeros_like(target), target, m2)
        h2 = context_statistics(s2.x_context, s2.y_context, GATES)
        ht = context_statistics(test.x_context, test.y_context, GATES)
        for gate in GATES:
            cfg, gamma, v, _ = pre[d][gate]
            model = stage2(task, cfg, gamma, v, N, r_N, prompts=s2, h=h2[gate])
            e, se, ep = normalized_error(model.predict(test, h=ht[gate]), target, m2)
            rows.append(relative(d, N, gate, ep, e_zero))
        if N <= KRR_MAX_N:
            sub = test.subset(slice(0, KRR_PROMPTS))
            for method, xc, xq in (("krr_full", sub.x_context, sub.x_query),
                                   ("krr_intrinsic", task.intrinsic(sub.x_context), task.intrinsic(sub.x_query))):
                pred, _ = krr_predict(xc, sub.y_context, xq)
                e, se, ep = normalized_error(pred, sub.y_query_clean, m2)
                rows.append(relative(d, N, method, ep, e_zero[:KRR_PROMPTS]))
for row in rows:
    print(f"d = {row['d']:2d}  N = {row['N']:4d}  {row['method']:>13}: error {row['error']:.3f}"
          f" (zero predictor {row['zero']:.3f}), relative {row['rel'][0]:.3f} ± {row['rel'][1]:.3f}")


def series(d, method):
    sel = [r for r in rows if r["d"] == d and r["method"] == method]
    return np.array([r["N"] for r in sel]), np.array([r["rel"] for r in sel])


last = {r["method"]: r for r in rows if r["d"] == DIMS[0] and r["N"] == NS[-1]}
gap, gap_se = paired_difference(last["none"]["ep"], last["normalized"]["ep"])
print(f"d = {DIMS[0]}, N = {NS[-1]}: linear attention minus gated, paired: {gap:.3f} ± {gap_se:.3f}")
assert gap > (0 if FAST else 2 * gap_se), "at the largest N the gate beats linear attention"

styles = {"normalized": ("C1", "o-", "gated model (normalized gate)"), "none": ("k", "^--", "linear attention"),
          "krr_full": ("C0", "s-", "KRR on the full x"), "krr_intrinsic": ("C2", "d:", "KRR on the intrinsic coords (oracle)")}
fig, axes = plt.subplots(1, len(DIMS), figsize=(5.5 * len(DIMS), 3.9), sharey=True, squeeze=False)
for ax, d in zip(axes[0], DIMS):
    for method, (color, fmt, label) in styles.items():
        Ns, rel = series(d, method)
        if len(Ns):
            ax.errorbar(Ns, rel[:, 0], yerr=2 * rel[:, 1], fmt=fmt, color=color, ms=4, capsize=2, label=label)
    ax.axhline(1.0, color="gray", lw=1)
    ax.set_xscale("log", base=2)
    ax.set_ylim(-0.03, 1.2)
    ax.set_xlabel("context length N")
    ax.set_title(f"{LINK.upper()}, d = {d}, r = {R}", fontsize=10)
axes[0, 0].set_ylabel("error / zero predictor's (paired, ±2 s.e.)")
axes[0, 0].legend(fontsize=8)
fig.suptitle("Below 1: better than predicting 0 on the same prompts. One Stage I, Stage II at each N.", fontsize=10)
plt.tight_layout()
plt.show()

# %% [markdown]
# **Reading the figure.** Linear attention sits at the zero predictor (1) at every `N`: with no
# gate its statistic only holds the degree ≤ 2 coefficients of He3, which are zero, so it
# cannot use what Stage I found. The gated model moves below 1 as `N` grows: it learns in
# context, from the `N` examples of each prompt, because its gate turns the labels into a
# signal along `β`. KRR on the intrinsic coordinates (which is told the subspace) is almost
# perfect at every `N` it was run; KRR on the full `x` learns at `d = 8, N = 256` and not at
# all at `d = 16` for these `N`: it pays for the dimension. The same is true at full size
# (`docs/results_icl_theory.md`, r = 8, d = 16 and 32, N up to 4096: He3 gated 0.46 vs linear
# attention 0.89 at N = 4096, a paired gap of 4–9 standard errors on 128 test prompts and
# 15–23 on 1024; KRR on the intrinsic coordinates beats every one-layer variant). What reproduces is the **mechanism** (gate vs no gate); the
# claim that the one-layer model beats kernels is not shown by our runs.
#
# **d-insensitivity.** The theory's argument: the gate's statistic has `D ≈ d²/2` features,
# but Stage I concentrates `γ` on the relevant ones, so at test time the model reads a
# handful of coordinates and its sample cost should not grow with `d`. At this small size it
# is only partly so: the gated model at `d = 16` also learns, but lags `d = 8` (compare the
# two orange curves at the same `N`), because the noise of `h` in the irrelevant features
# still leaks through the imperfect `γ1`. In the full run the gated model at d = 16 and d = 32
# agrees at N = 4096 (0.456 vs 0.479) but d = 32 lags by about a factor 2 in `N` on the way
# there: the insensitivity holds at large `N`, not along the whole curve.
#
# ## Summary
# * Stage I is one gradient step, `γ1 = -η1 ∇_γ L` at `γ0 = 1`: a label–feature correlation
#   that concentrates on the hidden subspace, far more so with the gate.
# * Stage II is a ridge regression of the MLP's output weights on random ReLU features of the
#   one scalar `out`.
# * The gated model learns He3 in context where linear attention cannot; KRR told the
#   subspace beats both; KRR on the full `x` pays for `d`.
#
# **Next:** lesson 10 trains the full multi-layer Mamba on prompts end to end.
