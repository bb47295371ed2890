# %% [markdown]
# # 08 · One-layer Mamba = gated linear attention
#
# **Goal.** Derive paper 1's one-layer model from the selective scan of lesson 01: with
# `A = -1`, a step size that depends on the label, and exact ZOH for `B`, the scan's state at
# the query is a **gated** linear-attention statistic `Σ_j G_j y_j φ(x_j)`. Run it through the
# package's scan and check it against the closed form; see the gate as a nonlinear **label
# transform** (lesson 07's generative exponent at work); and see why the exact product gate
# collapses on heavy-tailed labels while a normalized gate does not.
#
# **Prerequisites.** Lesson 01 (the scan and its discretization), lesson 07 (Hermite
# coefficients, information vs generative exponent).
#
# **Run time.** About 20 seconds on an idle 2-core machine (5 seconds with `LESSONS_FAST=1`).
#
# **You will use** `mamba_from_scratch.icl.features` (`hermite_features`, `weighted_feature_sum`),
# `mamba_from_scratch.icl.gated` (`gate_weights`, `product_gate_scan`, `context_statistics`,
# `gate_bias`, `sigmoid`) and `mamba_from_scratch.icl.task.SingleIndexTask`.

# %% tags=["parameters"]
import os

FAST = os.environ.get("LESSONS_FAST", "0") == "1"  # CI sets LESSONS_FAST=1 to shrink every size
SEED = 0
MC_SAMPLES = 50_000 if FAST else 400_000            # Monte Carlo samples for the label transforms
D_IN = 8                                            # input dimension of the prompts
OVERLAP_NS = [16, 64, 256] if FAST else [16, 64, 256, 1024, 4096]   # context lengths
OVERLAP_PROMPTS = 8 if FAST else 64                 # prompts per context length

# %%
import math

import matplotlib.pyplot as plt
import numpy as np

from mamba_from_scratch.icl.features import feature_dim, hermite_features, weighted_feature_sum
from mamba_from_scratch.icl.gated import context_statistics, gate_bias, gate_weights, product_gate_scan, sigmoid
from mamba_from_scratch.icl.links import hermite_he, make_link
from mamba_from_scratch.icl.task import SingleIndexTask

rng = np.random.default_rng(SEED)
plt.rcParams.update({"figure.dpi": 80, "axes.grid": True, "grid.alpha": 0.3})


def softplus(v):
    return np.logaddexp(0.0, v)

# %% [markdown]
# ## 1. The idea in words
#
# A prompt is a sequence of tokens `z_j = (φ(x_j), y_j)` for the `N` context examples, then
# the query `z_{N+1} = (φ(x), 0)`; `φ` are the degree ≤ 2 Hermite features of lesson 07
# (orthonormal under `x ~ N(0, I)`). Run one Mamba channel over these tokens with the
# simplest possible state matrix, `A = -1`. Each step the state **forgets** a fraction of
# itself and **writes** the current token; how much of each is set by the step size
# `Δ_l`, which (this is the "selective" part) depends on the token. If `Δ_l` depends on the
# label `y_l`, the weight with which token `j` survives to the query depends on `y_j` and on
# all later labels: the scan computes a **gated** linear attention, and the gate transforms
# the labels nonlinearly, which is what lets a one-layer model see `β` when the plain
# average `Σ y_j φ(x_j) / N` (linear attention) cannot (information exponent > 2).
#
# ## 2. The equation
#
# S6 with a diagonal `A = -1`, `Δ_l = softplus(v_l)`, `v_l = y_l/ρ + b`, and **exact** ZOH
# for `B` (lesson 01: `B̄ = (1 - e^{-Δ}) B` instead of Euler's `Δ B`):
#
# $$h_l = e^{-\Delta_l} h_{l-1} + (1 - e^{-\Delta_l})\, y_l\, \varphi(x_l).$$
#
# The identity that makes it attention: `e^{-softplus(v)} = 1/(1+e^v) = 1 - σ(v)`. Writing
# `s_l = σ(v_l)`, the recurrence is `h_l = (1 - s_l) h_{l-1} + s_l y_l φ(x_l)`, and unrolled
# to the query (whose label is 0, so it only decays):
#
# $$h_{N+1} = \sum_{j \le N} G_j\, y_j\, \varphi(x_j), \qquad G_j = s_j \prod_{k=j+1}^{N+1} (1 - s_k),
# \qquad \text{Mamba}(Z) = h_{N+1}^\top (\gamma \odot \varphi(x)).$$
#
# | symbol | code | meaning |
# |---|---|---|
# | `φ(x)`, `D` | `hermite_features(x)`, `feature_dim(d)` | degree ≤ 2 Hermite features, `D = 1 + 2d + d(d-1)/2` |
# | `ρ`, `b = b0 - log N` | `rho`, `gate_bias(b0, N)` | the fixed gate: temperature and bias |
# | `s_l = σ(y_l/ρ + b)` | `sigmoid(...)` | how much token `l` writes (and the state forgets) |
# | `G_j` | `gate_weights(y, "product")` | weight token `j` keeps at the query |
# | `h` | `product_gate_scan(...)[0]` | the scan's final state = the context statistic, `(P, D)` |
# | `γ` | `gamma` | diagonal of `W_Bᵀ W_C` on `φ` (trained in lesson 09) |
#
# Why `b = b0 - log N`: each `s_j` is then about `e^{b0}/N`, so the total weight `Σ_j G_j`
# stays of order one at every `N`. The package's scan uses Euler for `B` (lesson 01), so to get
# exact ZOH we feed it `B_l = (1 - e^{-Δ_l})/Δ_l · φ(x_l)`; Euler's `Δ_l B_l` is then the exact
# ZOH input.
#
# ### Exercise 1: the product gate as a loop
# Write `product_gate_loop(y, rho, b0)` returning `G` of one prompt (shape `(N,)`) by running
# the recurrence with a scalar "weight tracker": keep a list of current weights, and at each
# token `l = 1..N+1` multiply every earlier weight by `1 - s_l` and append `s_l` (the query
# token has label 0 and appends nothing). The check compares with the package's
# closed form (a reversed cumulative sum of `log(1 - s)`).

# %% tags=["exercise"]
def product_gate_loop(y, rho, b0):
    """The product-gate weights G_j of one prompt by an explicit loop over tokens.

    Args:
        y: (N,) context labels.  rho > 0, b0: the gate.
    Returns:
        G: (N,).
    """
    raise NotImplementedError("Exercise 1: write product_gate_loop")

# %% tags=["solution"]
def product_gate_loop(y, rho, b0):
    """The product-gate weights G_j of one prompt by an explicit loop (see the exercise)."""
    N = len(y)
    b = gate_bias(b0, N)
    G = []
    for l, y_l in enumerate(list(y) + [0.0]):        # the query token has label 0
        s = float(sigmoid(y_l / rho + b))
        G = [g * (1.0 - s) for g in G]               # the state forgets...
        if l < N:
            G.append(s)                              # ...and writes token l with weight s
    return np.array(G)

# %% tags=["check"]
y_chk = rng.standard_normal((3, 12)) * 2
for p in range(3):
    assert np.allclose(product_gate_loop(y_chk[p], 0.25, 0.0), gate_weights(y_chk[p:p + 1], "product")[0], rtol=1e-10)
assert np.allclose(product_gate_loop(y_chk[0], 0.5, 1.0), gate_weights(y_chk[:1], "product", rho=0.5, b0=1.0)[0])
print("exercise 1 passed: the loop equals the package's closed form")

# %% [markdown]
# ## 3. The smallest naive implementation vs the package's scan
#
# The naive version is the recurrence above in a Python loop over tokens, on the features
# directly. The package's `product_gate_scan` builds `u, Δ, A, B, C` and calls
# `selective_scan_forward`, the same kernel a Mamba layer uses. Both must equal the closed
# form `Σ_j G_j y_j φ(x_j)`.

# %%
def gated_state_naive(x, y, rho=0.25, b0=0.0):
    """h_{N+1} of one prompt by the recurrence h_l = e^{-Δ_l} h_{l-1} + (1 - e^{-Δ_l}) y_l φ(x_l)."""
    N = len(y)
    b = gate_bias(b0, N)
    phi = hermite_features(x)                               # (N, D)
    h = np.zeros(phi.shape[1])
    for l in range(N + 1):
        y_l = y[l] if l < N else 0.0                        # the query writes label 0
        delta = softplus(y_l / rho + b)
        h = np.exp(-delta) * h
        if l < N:
            h = h + (1.0 - np.exp(-delta)) * y_l * phi[l]
    return h


task = SingleIndexTask(d=D_IN, r=2, link="he3", seed=SEED)
pr = task.sample(rng, 4, 50, n_queries=1)
h_naive = np.stack([gated_state_naive(pr.x_context[p], pr.y_context[p]) for p in range(4)])
gamma = rng.standard_normal(feature_dim(D_IN))
c_query = gamma * hermite_features(pr.x_query[:, 0])       # (P, D): the query's C
h_scan, out_scan = product_gate_scan(pr.x_context, pr.y_context, c_query=c_query)
G = gate_weights(pr.y_context, "product")
h_closed = weighted_feature_sum(pr.x_context, G * pr.y_context)
assert np.allclose(h_naive, h_closed, rtol=1e-10, atol=1e-12)
assert np.allclose(h_scan, h_closed, rtol=1e-10, atol=1e-12)
assert np.allclose(out_scan, np.einsum("pd,pd->p", h_closed, c_query))
print("naive loop == package scan == closed form; max |diff| =", np.abs(h_scan - h_closed).max())
print("the scan's output at the query is Mamba(Z) = h^T (gamma * phi(x)):", np.round(out_scan, 4))

# %% [markdown]
# ## 4. The gate as a label transform
#
# Linear attention (`G_j = 1/N`) estimates `E[y φ(x)]`: the degree ≤ 2 Hermite coefficients of
# the target, which are all zero for He3 (`ie = 3`). A gate that depends on `y_j` multiplies
# each label by a function of itself. For the **normalized** gate `G_j = s_j / Σ_k s_k`
# (the product gate without the erasure, see section 5), the statistic tends, as `N` grows,
# to `E[T(y) φ(x)]` with
#
# $$T(y) = \frac{y\, \sigma(y/\rho + b)}{\mathbb{E}[\sigma(y/\rho + b)]}, \qquad b = b_0 - \log N.$$
#
# Two regimes. At `b = 0`, `y σ(y/ρ) = y/2 + (an even function of y)`; for an odd link such as
# He3 the even part is even in `z = <β, x>`, so it reaches `h_2` but never `h_1`. At
# `b = -log N ≪ 0`, `σ(y/ρ + b) ≈ e^{y/ρ + b}`: the gate is a softmax of `y/ρ`,
# `T(y) ∝ y e^{y/ρ}`, whose odd part `y cosh(y/ρ)` also reaches `h_1`. That is why the
# bias must scale like `-log N`.
#
# ### Exercise 2: the gate's label transform
# Write `label_transform(y, rho, b)` returning `T(y)` above, with the expectation replaced by
# the mean over the given `y`. The check measures the Hermite coefficients of `T(y)` for He3:
# degree 2 at `b = 0`, degree 1 only at `b = -log 4096` (the identity has neither).

# %% tags=["exercise"]
def label_transform(y, rho, b):
    """T(y) = y sigmoid(y / rho + b) / mean(sigmoid(y / rho + b)).

    Args:
        y: (n,) labels.  rho > 0, b: the gate.
    Returns:
        (n,).
    """
    raise NotImplementedError("Exercise 2: write label_transform")

# %% tags=["solution"]
def label_transform(y, rho, b):
    """The normalized gate's label transform (see the exercise)."""
    s = sigmoid(y / rho + b)
    return y * s / s.mean()

# %% tags=["check"]
z_chk = np.random.default_rng(1).standard_normal(200_000)
y_he3 = make_link("he3")(z_chk)
h2_chk = (z_chk ** 2 - 1) / math.sqrt(2)
T0, TN = label_transform(y_he3, 0.25, 0.0), label_transform(y_he3, 0.25, -math.log(4096))
assert abs(np.mean(y_he3 * z_chk)) < 0.02 and abs(np.mean(y_he3 * h2_chk)) < 0.02, "identity: no degree 1 or 2"
assert abs(np.mean(T0 * z_chk)) < 0.05 < 0.3 < np.mean(T0 * h2_chk) / T0.std(), "b = 0: degree 2 only"
assert np.mean(TN * z_chk) / TN.std() > 0.2, "b = -log N: degree 1 appears"
assert np.allclose(label_transform(np.array([1.0, -1.0]), 1.0, 0.0), [2 * sigmoid(1.0), -2 * sigmoid(-1.0)])
print("exercise 2 passed: the gated label reaches degree 2 at b = 0 and degree 1 at b = -log N")

# %%
z = rng.standard_normal(MC_SAMPLES)
he3 = make_link("he3")
y_all = he3(z)
settings = {"identity (linear attention)": None, "ρ = 0.25, b = 0": (0.25, 0.0),
            "ρ = 0.25, b = -log 4096": (0.25, -math.log(4096)), "ρ = 1, b = -log 4096": (1.0, -math.log(4096))}
coef = {}
for key, gate in settings.items():
    T = y_all if gate is None else label_transform(y_all, *gate)
    coef[key] = [np.mean(T * hermite_he(k, z)) / math.sqrt(math.factorial(k)) / T.std() for k in (1, 2, 3)]
assert abs(coef["identity (linear attention)"][0]) < 0.02 and coef["ρ = 0.25, b = -log 4096"][0] > 0.2

fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
yy = np.linspace(-3, 3, 400)
for key, gate in settings.items():
    if gate is None:
        axes[0].plot(yy, yy, "k--", lw=1, label=key)
    else:
        axes[0].plot(yy, yy * sigmoid(yy / gate[0] + gate[1]) / sigmoid(y_all / gate[0] + gate[1]).mean(), label=key)
axes[0].set_yscale("symlog", linthresh=1)
axes[0].set_xlabel("label y")
axes[0].set_ylabel("T(y)  (symlog scale)")
axes[0].set_title("the gate reweights each label by a function of itself", fontsize=10)
axes[0].legend(fontsize=8)
width = 0.2
for i, key in enumerate(settings):
    axes[1].bar(np.arange(3) + (i - 1.5) * width, np.abs(coef[key]), width, label=key)
axes[1].set_xticks(range(3), ["k = 1", "k = 2", "k = 3"])
axes[1].set_ylabel("|corr(T(y), h_k(<β,x>))|")
axes[1].set_title("He3: which degree of <β, x> does the gated label reach?", fontsize=10)
axes[1].legend(fontsize=8)
plt.tight_layout()
plt.show()

# **Reading the figure.** Left: the identity is what linear attention averages; the gate
# bends it, and with `b = -log N` it amplifies the large positive labels exponentially.
# Right: for He3 the identity only correlates with `h_3`, which the degree ≤ 2 features `φ`
# cannot see. The gate at `b = 0` adds a degree-2 signal (`β βᵀ`, seen by the quadratic
# features); at `b = -log N` also a degree-1 signal (`β` itself, seen by the linear
# features). A flatter gate (larger `ρ`) is closer to the identity and its signal weaker.
#
# ## 5. Product vs normalized gate: the collapse on heavy-tailed labels
#
# The product gate keeps `G_j = s_j Π_{k>j}(1 - s_k)`. A single label with `y_k/ρ > log N`
# drives `s_k` near 1 and multiplies the weight of **every earlier token** by `1 - s_k ≈ 0`:
# the state is reset. He3 labels are heavy-tailed (`y = z³ - 3z` up to normalization), so a
# long context contains many such labels, and the product-gated statistic is a weighted sum
# of the last few large labels only. Below: the weights of one He3 prompt, then how well the
# linear block of `h` (the coordinates `x_1..x_d` of `φ`) lines up with `β` as `N` grows.

# %%
pr1 = task.sample(np.random.default_rng([SEED, 1]), 1, 256)
G_prod = gate_weights(pr1.y_context, "product")[0]
G_norm = gate_weights(pr1.y_context, "normalized")[0]


def beta_overlap(h, beta, d):
    """|cos| between the linear block of h (features x_1..x_d) and beta, per prompt."""
    lin = h[:, 1:1 + d]
    return np.abs(np.sum(lin * beta, axis=1)) / (np.linalg.norm(lin, axis=1) + 1e-300)


overlap = {g: [] for g in ("product", "normalized", "none")}
for N in OVERLAP_NS:
    prN = task.sample(np.random.default_rng([SEED, N]), OVERLAP_PROMPTS, N)
    stats = context_statistics(prN.x_context, prN.y_context, list(overlap))
    for g, h in stats.items():
        o = beta_overlap(h, prN.beta, D_IN)
        overlap[g].append((o.mean(), o.std() / math.sqrt(OVERLAP_PROMPTS)))
overlap = {g: np.array(v) for g, v in overlap.items()}
for g, v in overlap.items():
    print(f"{g:>10}: |cos(h_lin, beta)| = {np.round(v[:, 0], 3)}")
assert overlap["normalized"][-1, 0] > overlap["product"][-1, 0], "the normalized gate finds beta better"

fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
j = np.arange(1, 257)
axes[0].semilogy(j, G_prod + 1e-30, ".", ms=3, label="product gate")
axes[0].semilogy(j, G_norm, ".", ms=3, label="normalized gate")
axes[0].axhline(1 / 256, color="k", ls="--", lw=1, label="linear attention 1/N")
axes[0].set_ylim(1e-12, 1)
axes[0].set_xlabel("context position j")
axes[0].set_ylabel("weight G_j at the query")
axes[0].set_title("one He3 prompt, N = 256: large labels erase the past", fontsize=10)
axes[0].legend(fontsize=8)
for g, style in zip(overlap, ["o-", "s-", "k^--"]):
    label = "linear attention (no gate)" if g == "none" else f"{g} gate"
    axes[1].errorbar(OVERLAP_NS, overlap[g][:, 0], yerr=2 * overlap[g][:, 1], fmt=style, ms=4, capsize=2, label=label)
axes[1].set_xscale("log", base=2)
axes[1].set_ylim(0, 1)
axes[1].set_xlabel("context length N")
axes[1].set_ylabel("|cos(linear block of h, β)|")
axes[1].set_title(f"He3, d = {D_IN}, r = 2: does the statistic point at β? (±2 s.e.)", fontsize=10)
axes[1].legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# **Reading the figure.** Left: the product gate's weights jump down by orders of magnitude
# after each large label; every token before position ~150 keeps a weight below 1e-12 (off the
# plot): only the tail of the context counts. The normalized gate's weights depend on each
# token's own label only. Right: without a gate the overlap does not grow with `N` (He3 has no
# degree-1 coefficient; the level it sits at is the noise of `y x`, which is larger along
# `β` than across it). The normalized gate's overlap goes to 1; the product gate's grows
# slowly and stalls well below, because it effectively averages over the last few large
# labels whatever `N` is. This is why the package
# implements both gates and why lesson 09 reports both (`docs/results_icl_theory.md`:
# the product gate stays at the zero predictor on every link).
#
# ## Summary
# * S6 with `A = -1`, `Δ = softplus(y/ρ + b)` and exact ZOH is gated linear attention,
#   `h = Σ G_j y_j φ(x_j)` with `G_j = s_j Π_{k>j}(1 - s_k)`, because `e^{-softplus} = 1 - σ`.
# * The package's scan computes it exactly (checked against the loop and the closed form).
# * The gate is a label transform `T(y)`: it lowers He3's information exponent 3 to its
#   generative exponent 1, so the statistic points at `β`.
# * The exact product gate erases the past at every large label and fails on heavy-tailed
#   labels; the normalized gate keeps the transform without the erasure.
#
# **Next:** lesson 09, pretraining `γ` and the MLP in two stages.
