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
# **Run time.** A few seconds to a minute on a 2-core machine, depending on its load (measured
# 4 s at load average 0.7, 38 s at 6.1 and 67 s at 5.9; 1–7 s with `LESSONS_FAST=1`).
# The full-size results (r = 8, d = 16 and 32, N up to 4096) come from
# `python -m mamba_from_scratch icl-theory` and are in `docs/results_icl_theory.md`; this
# lesson reruns a small version.
#
# **You will use** `mamba_from_scratch.icl.pretrain` (`PretrainConfig`, `stage1`, `stage2`,
# `init_mlp`, `ridge_solve`, `gamma_concentration`), `mamba_from_scratch.icl.gated`
# (`context_statistics`, `readout_forward`), `mamba_from_scratch.icl.features`
# (`hermite_features`, `relevant_features`, `feature_groups`),
# `mamba_from_scratch.icl.krr.krr_predict` and `mamba_from_scratch.icl.metrics`
# (`normalized_error`, `paired_difference`).

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

from mamba_from_scratch.grading import code_names, package_calls
from mamba_from_scratch.icl.features import feature_groups, hermite_features, relevant_features
from mamba_from_scratch.icl.gated import context_statistics, readout_forward
from mamba_from_scratch.icl.krr import krr_predict
from mamba_from_scratch.icl.metrics import normalized_error, paired_difference
from mamba_from_scratch.icl.pretrain import PretrainConfig, init_mlp, loss_and_grads, ridge_solve, stage1, stage2
from mamba_from_scratch.icl.task import SingleIndexTask

rng = np.random.default_rng(SEED)
_passed = {}                     # exercise id -> True once its check passed (read by the fallbacks)
FROZEN = np.load("_data/09_stage1.npz")      # reference numbers written by lessons/_data/make_09.py


def rel_err(a, b):
    """max |a - b| / max |b|, with the shapes required to agree."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    assert a.shape == b.shape, f"shape {a.shape}, expected {b.shape}"
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))



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
# ### Exercise 09.1: the Stage I loss and its gradient with respect to `γ`
# The whole model on one batch of `P` prompts with `Q` queries each, forward:
#
# $$\text{out}_{pq} = h_p^\top(\gamma \odot \varphi(x_{pq})), \quad
# u_{pq} = \frac{\text{out}_{pq} - \text{shift}}{\text{scale}}, \quad
# f_{pq} = \sum_k a_k\, \mathrm{relu}(v_k u_{pq} + c_k), \quad
# \mathcal L = \frac{1}{2PQ}\sum_{p,q}(f_{pq} - y_{pq})^2,$$
#
# and backward, read right to left: `∂L/∂f = (f - y)/(PQ)`, through the ReLU (its derivative
# is `[v_k u + c_k > 0]`) to `∂L/∂u`, through the fixed normalisation (`∂u/∂out = 1/scale`) to
# `∂L/∂out`, and through the readout to `∂L/∂γ = Σ_{p,q} ∂L/∂out_pq · h_p ⊙ φ(x_pq)`.
#
# Write `stage1_loss_and_grad(h, phi_q, y, gamma, a, v, c, shift, scale)` returning the loss
# (a float) and `∂L/∂γ` of shape `(D,)`, vectorised (no Python loop over prompts, queries or
# features). This is the only gradient the Stage I algorithm ever takes. The check compares
# with float64 finite differences and with frozen values from the package, and asserts that
# you wrote the backward yourself (no call of the package's `loss_and_grads` or
# `readout_backward`).

# %% tags=["solution"]
def stage1_loss_and_grad(h, phi_q, y, gamma, a, v, c, shift, scale):
    """Squared loss of the gated readout + ReLU MLP, and its gradient in gamma.

    Args:
        h: (P, D) context statistics.  phi_q: (P, Q, D) query features.  y: (P, Q) labels.
        gamma: (D,).  a, v, c: (W,) the MLP's output weights, signs and biases.
        shift, scale: floats, the fixed normalisation of the MLP's input.
    Returns:
        loss: float, 0.5 mean (f - y)^2.  dgamma: (D,).
    """
    ### BEGIN SOLUTION
    out = np.einsum("pd,pqd->pq", h * gamma, phi_q)       # (P, Q)
    u = (out - shift) / scale                             # (P, Q)
    pre = u[..., None] * v + c                            # (P, Q, W)
    f = np.maximum(pre, 0.0) @ a                          # (P, Q)
    err = f - y
    loss = 0.5 * float(np.mean(err ** 2))
    df = err / err.size                                   # (P, Q)
    dpre = df[..., None] * a * (pre > 0)                  # (P, Q, W)
    dout = (dpre @ v) / scale                             # (P, Q)
    return loss, np.einsum("pq,pd,pqd->d", dout, h, phi_q)
    ### END SOLUTION

# %% tags=["check", "points=3"]
_passed["09.1"] = False
_args = [FROZEN[k] for k in ("s1_h", "s1_phi", "s1_y", "s1_gamma", "s1_a", "s1_v", "s1_c")]
_shift, _scale = FROZEN["s1_shift_scale"]
_loss, _dg = stage1_loss_and_grad(*_args, _shift, _scale)
assert np.shape(_dg) == (10,), f"dgamma has the shape of gamma, (D,) = (10,); got {np.shape(_dg)}"
_g = _args[3]
_fd = np.array([(stage1_loss_and_grad(*_args[:3], _g + e, *_args[4:], _shift, _scale)[0]
                 - stage1_loss_and_grad(*_args[:3], _g - e, *_args[4:], _shift, _scale)[0]) / 2e-6
                for e in 1e-6 * np.eye(10)])
assert rel_err(_dg, _fd) < 1e-6, f"dgamma against central finite differences: {_dg} vs {_fd}"
# at a = 0 the MLP outputs 0: the loss is 0.5 mean y^2 and its gradient in gamma vanishes
_l0, _d0 = stage1_loss_and_grad(*_args[:4], 0 * _args[4], *_args[5:], _shift, _scale)
assert abs(_l0 - 0.5 * np.mean(_args[2] ** 2)) < 1e-12 and np.abs(_d0).max() == 0, "a = 0: f = 0"
assert not package_calls(stage1_loss_and_grad), \
    f"write the loss and its backward yourself, with NumPy only; it calls {package_calls(stage1_loss_and_grad)}"
### BEGIN HIDDEN TESTS
assert abs(_loss - float(FROZEN["s1_loss"])) < 1e-12 * float(FROZEN["s1_loss"]), "loss against the frozen value"
assert rel_err(_dg, FROZEN["s1_dgamma"]) < 1e-10, "dgamma against the frozen package gradient"
_l2, _d2 = stage1_loss_and_grad(*_args, _shift + 0.5, 2 * _scale)         # shift and scale must be used
_fd2 = np.array([(stage1_loss_and_grad(*_args[:3], _g + e, *_args[4:], _shift + 0.5, 2 * _scale)[0]
                  - stage1_loss_and_grad(*_args[:3], _g - e, *_args[4:], _shift + 0.5, 2 * _scale)[0]) / 2e-6
                 for e in 1e-6 * np.eye(10)])
assert rel_err(_d2, _fd2) < 1e-6 and abs(_l2 - _loss) > 1e-6, "other shift and scale"
### END HIDDEN TESTS
_passed["09.1"] = True
print("exercise 09.1 passed: the Stage I gradient matches finite differences and the frozen package values")

# %% tags=["fallback"]
if not _passed["09.1"]:
    def stage1_loss_and_grad(h, phi_q, y, gamma, a, v, c, shift, scale):
        """Reference: the package's loss_and_grads (all gradients; keep gamma's)."""
        loss, grads = loss_and_grads(h, phi_q, y, gamma, a, v, c, shift, scale)
        return loss, grads["gamma"]
    print("exercise 09.1 not solved yet: the rest of the lesson uses the reference")

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

# Stage I by hand with your gradient: the same prompts and the same MLP draw (init_mlp is the
# first thing stage1 takes from the rng after the prompts), gamma1 = gamma0 - eta1 (grad + gamma0 / eta1)
r_hand = np.random.default_rng([SEED, DIMS[0], 1])
s1_hand = tasks[DIMS[0]].sample(r_hand, STAGE1_PROMPTS, 256, 32)
_, v_hand, c_hand = init_mlp(r_hand, 128)
cfg_hand = pre[DIMS[0]]["normalized"][0]
h_hand = context_statistics(s1_hand.x_context, s1_hand.y_context, ["normalized"])["normalized"]   # (T1, D)
phi_hand = hermite_features(s1_hand.x_query)                                                       # (T1, Q, D)
gamma0 = np.full(h_hand.shape[1], cfg_hand.gamma0)
out0 = readout_forward(h_hand, phi_hand, gamma0)[0]
_, grad_hand = stage1_loss_and_grad(h_hand, phi_hand, s1_hand.y_query, gamma0, np.full(128, cfg_hand.alpha),
                                    v_hand, c_hand, float(out0.mean()), float(out0.std()))
gamma1_hand = gamma0 - cfg_hand.eta1 * (grad_hand + gamma0 / cfg_hand.eta1)
diff_hand = rel_err(gamma1_hand, pre[DIMS[0]]["normalized"][1])
print(f"d = {DIMS[0]}: your one-step gamma1 vs the package's stage1: max relative difference {diff_hand:.1e}")
assert diff_hand < 1e-8, "your gradient step reproduces the package's Stage I"
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
# ### Exercise 09.2: the ridge fit
# Write `ridge_fit(F, y, lam)` returning `a` above (`F` is `(n, W)`, `y` is `(n,)`), by the
# normal equations (a `W × W` solve; never form an inverse). The check compares it with the
# gradient condition of the objective (`Fᵀ(Fa - y)/n + λa = 0`), with a least squares problem
# on the augmented matrix `[F; √(nλ) I]` (a different algorithm for the same minimiser), and
# with frozen fits from the package's `ridge_solve` (which you may not call).

# %% tags=["solution"]
def ridge_fit(F, y, lam):
    """argmin_a |F a - y|^2 / n + lam |a|^2.

    Args:
        F: (n, W) features.  y: (n,) targets.  lam: float > 0.
    Returns:
        a: (W,).
    """
    ### BEGIN SOLUTION
    n, W = F.shape
    return np.linalg.solve(F.T @ F / n + lam * np.eye(W), F.T @ y / n)
    ### END SOLUTION

# %% tags=["check", "points=2"]
_passed["09.2"] = False
_F, _y = FROZEN["rd_F"], FROZEN["rd_y"]                         # (50, 8), (50,)
_a = ridge_fit(_F, _y, 0.01)
assert np.shape(_a) == (8,), f"a has one weight per feature, (W,) = (8,); got {np.shape(_a)}"
_grad = _F.T @ (_F @ _a - _y) / 50 + 0.01 * _a
assert np.abs(_grad).max() < 1e-12, f"the objective's gradient must vanish at a; it is {np.abs(_grad).max():.2e}"
_aug = np.vstack([_F, math.sqrt(50 * 0.01) * np.eye(8)])
assert rel_err(_a, np.linalg.lstsq(_aug, np.concatenate([_y, np.zeros(8)]), rcond=None)[0]) < 1e-9, \
    "against least squares on the augmented matrix"
assert not package_calls(ridge_fit) and not code_names(ridge_fit) & {"inv", "pinv"}, \
    "solve the normal equations yourself (np.linalg.solve), without ridge_solve or an inverse"
### BEGIN HIDDEN TESTS
for _lam, _ref in zip(FROZEN["rd_lam"], FROZEN["rd_a"]):
    assert rel_err(ridge_fit(_F, _y, float(_lam)), _ref) < 1e-9, f"against the frozen fit at lam = {_lam}"
_a2 = ridge_fit(_F[:20], _y[:20], 0.5)                          # other n: the 1/n must follow the data
assert np.abs(_F[:20].T @ (_F[:20] @ _a2 - _y[:20]) / 20 + 0.5 * _a2).max() < 1e-12, "n = 20, lam = 0.5"
### END HIDDEN TESTS
_passed["09.2"] = True
print("exercise 09.2 passed: normal equations == augmented least squares == frozen package fits")

# %% tags=["fallback"]
if not _passed["09.2"]:
    def ridge_fit(F, y, lam):
        """Reference: the package's ridge_solve on the Gram matrix."""
        return ridge_solve(F.T @ F, F.T @ y, len(y), lam)
    print("exercise 09.2 not solved yet: the rest of the lesson uses the reference")

# %% [markdown]
# The package's `ridge_solve` (what `stage2` calls) takes `FᵀF` and `Fᵀy` instead of `F`:
# `stage2` accumulates them over chunks of queries and tries several `λ` on the same Gram
# matrix. On the data of the check it agrees with your fit to round-off:

# %%
F_demo, y_demo = FROZEN["rd_F"], FROZEN["rd_y"]                 # (50, 8), (50,)
for lam in (1e-4, 0.01, 1.0):
    a_pkg = ridge_solve(F_demo.T @ F_demo, F_demo.T @ y_demo, len(y_demo), lam)
    print(f"lam = {lam:g}: max |ridge_fit - ridge_solve| / max |ridge_solve| = "
          f"{rel_err(ridge_fit(F_demo, y_demo, lam), a_pkg):.1e}")

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
#
# **What paper 1 predicts for this experiment** (its result, stated in lesson 07): once
# pretrained, the gated model needs a number of context examples `N` that grows polynomially in
# the subspace dimension `r`, with a power set by the generative exponent (He3: `ge = 1`), and
# does not grow with the ambient `d` (pretraining pays for `d`); correlational learners pay for
# the information exponent and for `d`: linear attention and kernels need `N` of order `d^{ie}`
# (He3: `ie = 3`). Here `r = 2` is fixed, so the test is in `d` and `N`: the gated model should go
# below 1 at both `d` and not fall far behind at the larger `d`; linear attention, whose
# statistic holds only the degree ≤ 2 coefficients (all zero for He3, lesson 08), should stay at
# 1; KRR on the full `x` should be worse at the larger `d`, and KRR told the subspace should not
# care about `d`. (The sweep over `r` is `icl-theory --sweep`, in `docs/results_icl_theory.md`.)

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
# (`docs/results_icl_theory.md`, r = 8, d = 16 and 32, N up to 4096). At N = 4096 on 1024 test
# prompts per `(d, seed)` (`docs/figures/icl_theory/more_prompts/metrics_seed0.csv` and
# `metrics_seed1.csv`), He3's gated model has a normalized error of 0.587 and 0.536 (seed 0,
# d = 16 and 32) and 0.589 and 0.633 (seed 1), 0.59–0.66 of the zero predictor's on the same
# prompts; linear attention has 0.90–1.00, within 0.03 of the zero predictor's; the paired gaps
# are 14–23 standard errors. (The first run, on 128 test prompts,
# `docs/figures/icl_theory/metrics.csv`, had given 0.46 ± 0.06 vs 0.89 at d = 16; on those
# prompts the zero predictor itself scored 0.89, against 1.00 on the 1024.) All of these use
# 1,024 Stage I prompts, as this lesson does. With Stage I streamed over 65,536 prompts and
# nothing else changed, the gated model's He3 error falls to 0.53 and 0.40 of the zero
# predictor's (seed 0, d = 16 and 32) and 0.57 and 0.39 (seed 1), from 0.65–0.67 with 1,024
# on the same 1024 test prompts (`docs/figures/icl_theory/stage1_streamed/seed0/metrics.csv`,
# `seed1/metrics.csv` against `more_prompts/he3he4_seed0/metrics.csv`, `he3he4_seed1/`):
# more Stage I prompts help most at d = 32. KRR on the
# intrinsic coordinates beats every one-layer variant. What reproduces is the **mechanism**
# (gate vs no gate); the claim that the one-layer model beats kernels is not shown by our runs.
#
# **d-insensitivity.** The theory's argument: the gate's statistic has `D ≈ d²/2` features,
# but Stage I concentrates `γ` on the relevant ones, so at test time the model reads a
# handful of coordinates and its sample cost should not grow with `d`. At this small size it
# is only partly so: the gated model at `d = 16` also learns, but lags `d = 8` (compare the
# two orange curves at the same `N`), because the noise of `h` in the irrelevant features
# still leaks through the imperfect `γ1`. In the full run, in this figure's measure (error
# divided by the zero predictor's on the same prompts; different prompts for each `d`, so the
# comparison is unpaired), d = 32 is behind d = 16 at every N from 512 to 4096 on 128 test
# prompts (0.81, 0.77, 0.62, 0.51 at N = 512, 1024, 2048, 4096 for d = 16 against 0.89, 0.84,
# 0.66, 0.56 for d = 32, `docs/figures/icl_theory/metrics.csv`), while at N = 4096 on 1024 test
# prompts the two agree (0.59 vs 0.60 with seed 0, 0.65 vs 0.66 with seed 1): a small cost of
# `d` along the curve (0.04–0.08, unpaired, on 128 prompts), none visible at the largest `N`
# with 1024.
#
# ## Summary
# * The Stage I gradient runs the model in reverse: squared loss → ReLU MLP → the fixed
#   normalisation → the readout, `∂L/∂γ = Σ ∂L/∂out · h ⊙ φ(x)`.
# * Stage I is one gradient step, `γ1 = -η1 ∇_γ L` at `γ0 = 1`: a label–feature correlation
#   that concentrates on the hidden subspace, far more so with the gate.
# * Stage II is a ridge regression of the MLP's output weights on random ReLU features of the
#   one scalar `out`.
# * The gated model learns He3 in context where linear attention cannot; KRR told the
#   subspace beats both; KRR on the full `x` pays for `d`.
#
# **Next:** lesson 10 trains the full multi-layer Mamba on prompts end to end.
