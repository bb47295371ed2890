# %% [markdown]
# # 01 · The selective scan
#
# **Goal.** Understand the recurrence at the heart of Mamba: where it comes from (a
# continuous state space model), how it is discretized (and why the official kernel mixes
# two discretizations), how to run it as a loop over time, and when it can also be run as
# a convolution.
#
# **Prerequisites.** NumPy, a first course in linear algebra and ODEs (`h' = a h` has the
# solution `h(t) = e^{a t} h(0)`). No deep learning needed.
#
# **Run time.** About 10 seconds (1 second with `LESSONS_FAST=1`).
#
# **You will use** `mamba_from_scratch.scan.selective_scan_forward` (backend `"numpy"`,
# the readable reference that the compiled kernels of lessons 03 and 05 are checked against).

# %% tags=["parameters"]
import os

FAST = os.environ.get("LESSONS_FAST", "0") == "1"  # CI sets LESSONS_FAST=1 to shrink every size
SEED = 0
L_LOOP = 32 if FAST else 256        # sequence length for the naive loop vs the package
D_LOOP = 4 if FAST else 16          # channels (d_inner) for the same comparison
N_STATE = 4 if FAST else 16         # state size n (d_state)
L_VIEW = 32 if FAST else 48         # sequence length of the recurrent-vs-convolution pictures

# %%
import time

import matplotlib.pyplot as plt
import numpy as np

from mamba_from_scratch.scan import selective_scan_forward

rng = np.random.default_rng(SEED)
plt.rcParams.update({"figure.dpi": 80, "axes.grid": True, "grid.alpha": 0.3})

# %% [markdown]
# ## 1. The idea in words
#
# A sequence model must carry information from earlier tokens to later ones. A
# Transformer keeps *every* past token and looks back at all of them (cost grows with the
# square of the length). A state space model (SSM) keeps a fixed-size **state** `h` and
# updates it once per token, like an RNN but *linear* in `h`: cost grows linearly with the
# length, and memory does not grow at all.
#
# Mamba's twist (Gu & Dao 2023, "selective" SSM, S6) is that the update rule itself depends
# on the current token: a token can decide to be remembered (small step `Δ`, slow decay)
# or to overwrite the memory (large `Δ`, fast decay). That makes the model input-dependent
# like attention, while keeping the linear-time recurrence.
#
# ## 2. The continuous model
#
# For one channel, with an `n`-dimensional state and a scalar input `u(t)`:
#
# $$h'(t) = A\,h(t) + B\,u(t), \qquad y(t) = C\,h(t) + D\,u(t).$$
#
# | symbol | shape (one channel) | meaning |
# |---|---|---|
# | `u(t)` | scalar | input signal (in Mamba: one channel of the conv output) |
# | `h(t)` | `(n,)` | hidden state, `n = d_state` (16 in Mamba) |
# | `A` | `(n,)` diagonal | decay rates, negative so the state forgets: `A = -exp(A_log)` |
# | `B`, `C` | `(n,)` | how the input enters the state, how the state is read out |
# | `D` | scalar | skip connection from input to output |
# | `Δ` (`delta`) | scalar > 0 | step size: how much continuous time one token spans |
#
# In Mamba `A` is diagonal, so the `n` state coordinates evolve independently, and
# `Δ, B, C` are computed from the token (that is the "selective" part).
#
# ## 3. Discretization: from an ODE to a recurrence
#
# Tokens arrive at discrete steps, so we integrate the ODE over one step of length `Δ`,
# holding the input constant over the step ("zero-order hold", ZOH). For diagonal `A`
# the exact solution is, coordinate by coordinate,
#
# $$h_t = \underbrace{e^{\Delta A}}_{\bar A}\, h_{t-1} + \underbrace{\frac{e^{\Delta A} - 1}{A}\, B}_{\bar B_{\rm ZOH}}\; u_t .$$
#
# Forward Euler instead uses `h_t = (1 + Δ A) h_{t-1} + Δ B u_t`. The official Mamba kernel
# takes **ZOH for A and Euler for B**:
#
# $$\bar A = e^{\Delta A} \quad (\text{ZOH}), \qquad \bar B = \Delta B \quad (\text{Euler}).$$
#
# Why mix them?
# * `A` must be ZOH: with `A < 0`, `e^{ΔA}` lies in `(0, 1)` for **every** `Δ > 0`, so the
#   recurrence never blows up however large the token makes its step. Euler's `1 + ΔA`
#   goes below `-1` as soon as `Δ |A| > 2`, and the state oscillates and explodes.
# * For `B`, the exact factor `(e^{ΔA} - 1)/(ΔA) = 1 + ΔA/2 + …` tends to 1 for small
#   `Δ|A|`, so `ΔB` is its first-order approximation. It saves a division (and the
#   special case `A → 0`), and since `B` is learned from data anyway, the network trains
#   around the difference. Albert Gu (state-spaces/mamba issue #114): it "makes the
#   implementation slightly simpler without affecting empirical performance".
#
# Let us measure the three choices on a scalar system whose exact answer we know: with a
# piecewise-constant input, ZOH is exact, so it is the reference.

# %%
def discretize(delta, a, b, scheme):
    """Return (a_bar, b_bar) for a scalar h' = a h + b u under one of three schemes."""
    if scheme == "euler":
        return 1 + delta * a, delta * b
    if scheme == "mamba (ZOH A, Euler B)":
        return np.exp(delta * a), delta * b
    if scheme == "exact ZOH":
        return np.exp(delta * a), (np.exp(delta * a) - 1) / a * b
    raise ValueError(f"scheme must be one of euler, mamba, exact ZOH, got {scheme!r}")


def simulate(a_bar, b_bar, u):
    """h_t = a_bar h_{t-1} + b_bar u_t from h = 0; returns every h_t."""
    h, hs = 0.0, np.empty(len(u))
    for t, ut in enumerate(u):
        h = a_bar * h + b_bar * ut
        hs[t] = h
    return hs


a, b = -4.0, 1.0                     # a fast-decaying state: Euler is unstable for delta > 0.5
T = 8.0                              # total continuous time
u_slow = rng.standard_normal(int(T))  # the input holds one random value per unit of time
schemes = ["euler", "mamba (ZOH A, Euler B)", "exact ZOH"]
deltas = 2.0 ** -np.arange(0, 9)      # 1, 1/2, ..., 1/256: each divides the unit interval
errors = {s: [] for s in schemes}
for delta in deltas:
    u = np.repeat(u_slow, int(round(1 / delta)))  # the same signal sampled every delta
    exact = simulate(*discretize(delta, a, b, "exact ZOH"), u)[-1]
    for s in schemes:
        errors[s].append(abs(simulate(*discretize(delta, a, b, s), u)[-1] - exact))

for s in schemes:
    print(f"{s:>24}: error at delta=1/256 is {errors[s][-1]:.2e}")

# %% [markdown]
# The exact scheme's error against itself is 0 by construction; the point is the other two.
# Look for two things in the figure: the mix never explodes, and, perhaps surprisingly,
# for small steps plain Euler is *more* accurate than the mix on this signal.

# %%
fig, ax = plt.subplots(figsize=(6.5, 3.8))
for s, marker in zip(schemes[:2], "os"):
    ax.loglog(deltas, errors[s], marker=marker, label=s)
ax.loglog(deltas, deltas * errors[schemes[1]][-1] / deltas[-1], "k:", label="slope 1 (first order)")
ax.axvline(2 / abs(a), color="gray", ls="--")
ax.text(2 / abs(a) * 0.95, 30, "Euler unstable\nfor Δ|A| > 2", color="gray", ha="right")
ax.set_xlabel("step size Δ")
ax.set_ylabel("|h_T - exact h_T|")
ax.set_title(f"Discretizing h' = {a:g} h + u: error after T = {T:g}")
ax.legend(loc="upper left", fontsize=9)
plt.tight_layout()
plt.show()

# %% [markdown]
# **Reading the figure.** Right of the dashed line Euler's `|1 + ΔA| > 1` and the state
# explodes; the mix stays bounded for every `Δ` because `0 < e^{ΔA} < 1`. On the left both
# are first order, and Euler wins: its two errors cancel. The long-run response to a
# constant input (the "DC gain") is `B̄ / (1 - Ā)`; Euler gives `ΔB / (-ΔA) = -B/A`, exactly
# the continuous one, while the mix gives `ΔB / (1 - e^{ΔA})`, too large by a factor
# `ΔA / (e^{ΔA} - 1) ≈ 1 - ΔA/2`. So the mix buys **stability**, not accuracy; its bias is
# a rescaling of `B̄` by that factor (between 1 and `1 + Δ|A|`), which a model that learns
# `Δ` and `B` can compensate for (hence "no loss of performance" in practice).
#
# ### Exercise 1: the exact ZOH input matrix
#
# Write `zoh_B(delta, A, B)` returning the exact ZOH `B̄ = (e^{ΔA} - 1) / A · B`
# elementwise (diagonal `A`). The check compares it with Euler's `ΔB` for small steps
# (they must agree to first order) and verifies that feeding `B̄/Δ` to the package's
# Euler-B kernel turns it into an exact ZOH scan: the state must then settle exactly at the
# continuous system's steady state `h∞ = -B u / A`.

# %% tags=["exercise"]
def zoh_B(delta, A, B):
    """Exact ZOH input matrix for a diagonal A.

    Args:
        delta: step size, scalar or broadcastable array, > 0.
        A: diagonal of A, negative.  B: input matrix, same shape as A (or broadcastable).
    Returns:
        B_bar = (exp(delta * A) - 1) / A * B, elementwise.
    """
    raise NotImplementedError("Exercise 1: write zoh_B")

# %% tags=["solution"]
def zoh_B(delta, A, B):
    """Exact ZOH input matrix for a diagonal A (see the exercise for Args/Returns)."""
    return np.expm1(delta * A) / A * B  # expm1 keeps precision when delta * A is tiny

# %% tags=["check"]
A_chk = -np.array([0.5, 1.0, 3.0])
B_chk = np.array([1.0, -2.0, 0.5])
assert np.allclose(zoh_B(np.log(2.0), -1.0, 1.0), 0.5), "(e^{-ln 2} - 1) / (-1) should be 1/2"
small = 1e-4
assert np.allclose(zoh_B(small, A_chk, B_chk), small * B_chk, rtol=1e-3), "ZOH ≈ Euler for small Δ"
# One channel, a constant input u = 1 for many steps: the exact scan reaches -B/A.
delta_chk, l_chk = 0.7, 200
Bt = zoh_B(delta_chk, A_chk, B_chk) / delta_chk  # what the Euler-B kernel must see
_, h_last, _ = selective_scan_forward(
    np.ones((1, l_chk, 1)), np.full((1, l_chk, 1), delta_chk), A_chk[None, :],
    np.tile(Bt, (1, l_chk, 1)), np.zeros((1, l_chk, 3)), backend="numpy")
assert np.allclose(h_last[0, 0], -B_chk / A_chk), (h_last[0, 0], -B_chk / A_chk)
print("exercise 1 passed: steady state", h_last[0, 0], "= -B/A")

# %% [markdown]
# ## 4. The selective scan as a loop over time
#
# With `d` channels (each with its own `A[d]`, `u[d]`, `Δ[d]`) sharing `B_t, C_t`, the
# recurrence run by Mamba is, for every channel `d` and state coordinate `n`:
#
# $$h_t[d, n] = e^{\Delta_t[d] A[d, n]}\, h_{t-1}[d, n] + \Delta_t[d]\, B_t[n]\, u_t[d], \qquad y_t[d] = \sum_n C_t[n]\, h_t[d, n] + D[d]\, u_t[d].$$
#
# | code | shape | meaning |
# |---|---|---|
# | `u`, `delta`, `y` | `(b, l, d_inner)` | input, step size (after softplus), output |
# | `A` | `(d_inner, n)` | negative decay rates (diagonal per channel) |
# | `B`, `C` | `(b, l, n)` | input and output matrices, one per token, shared by channels |
# | `D` | `(d_inner,)` | skip |
# | `deltaA`, `deltaB_u` | `(b, d_inner, n)` per step | `exp(delta A)` and `delta B u` |
#
# The smallest implementation is three nested loops, written for one sequence:

# %%
def selective_scan_loop(u, delta, A, B, C, D):
    """Naive S6 for one sequence.

    Args:
        u, delta: (l, d).  A: (d, n).  B, C: (l, n).  D: (d,).
    Returns:
        y: (l, d).
    """
    l, d = u.shape
    n = A.shape[1]
    h = np.zeros((d, n))
    y = np.zeros((l, d))
    for t in range(l):
        for i in range(d):
            for j in range(n):
                deltaA = np.exp(delta[t, i] * A[i, j])         # ZOH for A
                deltaB_u = delta[t, i] * B[t, j] * u[t, i]      # Euler for B
                h[i, j] = deltaA * h[i, j] + deltaB_u
                y[t, i] += C[t, j] * h[i, j]
            y[t, i] += D[i] * u[t, i]
    return y


def random_scan_inputs(rng, b, l, d, n):
    """Inputs shaped like Mamba's: softplus step sizes, A = -exp(A_log) with A_log = log(1..n)."""
    u = rng.standard_normal((b, l, d))                                  # (b, l, d)
    delta = np.log1p(np.exp(rng.normal(-2.0, 1.0, (b, l, d))))          # (b, l, d), softplus > 0
    A = -np.tile(np.arange(1, n + 1, dtype=float), (d, 1))              # (d, n), official init
    B = rng.standard_normal((b, l, n))                                  # (b, l, n)
    C = rng.standard_normal((b, l, n))                                  # (b, l, n)
    D = np.ones(d)                                                      # (d,)
    return u, delta, A, B, C, D


u, delta, A, B, C, D = random_scan_inputs(rng, 2, L_LOOP, D_LOOP, N_STATE)
t0 = time.perf_counter()
y_loop = np.stack([selective_scan_loop(u[i], delta[i], A, B[i], C[i], D) for i in range(2)])
t_loop = time.perf_counter() - t0
t0 = time.perf_counter()
y_pkg, h_last, _ = selective_scan_forward(u, delta, A, B, C, D, backend="numpy")
t_pkg = time.perf_counter() - t0
print(f"triple loop: {t_loop * 1e3:8.1f} ms   package (numpy, vectorised over b, d, n): {t_pkg * 1e3:6.1f} ms")
assert np.allclose(y_loop, y_pkg, rtol=1e-10, atol=1e-12)
print("max |difference| =", np.abs(y_loop - y_pkg).max())

# %% [markdown]
# The package's `"numpy"` backend keeps the loop over time (it must: `h_t` needs
# `h_{t-1}`) but does all channels and state coordinates of a step at once. Lesson 03
# compiles the loop with Numba; lesson 04 shows that even the time loop can be
# parallelised.
#
# ## 5. Two views of one model: recurrence and convolution
#
# If `Δ, B, C` do **not** depend on the token (a linear time-invariant SSM, as in S4),
# unrolling the recurrence from `h_0 = 0` gives
#
# $$y_t = \sum_{s \le t} \underbrace{\sum_n C[n]\, \bar A[n]^{\,t-s}\, \bar B[n]}_{K_{t-s}}\, u_s + D\,u_t ,$$
#
# a causal **convolution** with the kernel `K_k = Σ_n C[n] e^{kΔA[n]} Δ B[n]`. A
# convolution can be computed for all `t` at once with an FFT in `O(l log l)`, which is
# how S4 trains in parallel. Selectivity breaks this: when `Δ_t, B_t, C_t` change with `t`,
# the weight of `u_s` in `y_t` depends on both `s` and `t`, not only on `t - s`.
#
# ### Exercise 2: the convolution kernel of a time-invariant SSM
#
# Write `conv_kernel(delta, A, B, C, l)` for **one channel**: `delta` scalar, `A, B, C`
# of shape `(n,)`, returning `K` of shape `(l,)` with `K[k] = Σ_n C[n] exp(k Δ A[n]) Δ B[n]`.
# The check convolves it with an input and compares with the package's scan.

# %% tags=["exercise"]
def conv_kernel(delta, A, B, C, l):
    """Kernel of the time-invariant scan for one channel.

    Args:
        delta: scalar > 0.  A, B, C: (n,).  l: kernel length.
    Returns:
        K: (l,) with K[k] = sum_n C[n] exp(k delta A[n]) delta B[n].
    """
    raise NotImplementedError("Exercise 2: write conv_kernel")

# %% tags=["solution"]
def conv_kernel(delta, A, B, C, l):
    """Kernel of the time-invariant scan for one channel (see the exercise)."""
    k = np.arange(l)[:, None]                                  # (l, 1)
    return (C * np.exp(k * delta * A) * delta * B).sum(axis=1)  # (l,)

# %% tags=["check"]
n_chk, l_chk = 3, 40
A_c = -np.array([0.3, 1.0, 2.5])
B_c, C_c = rng.standard_normal(n_chk), rng.standard_normal(n_chk)
u_c = rng.standard_normal(l_chk)
K = conv_kernel(0.4, A_c, B_c, C_c, l_chk)
assert K.shape == (l_chk,)
y_conv = np.convolve(u_c, K)[:l_chk]                           # causal: keep the first l outputs
y_scan, _, _ = selective_scan_forward(
    u_c[None, :, None], np.full((1, l_chk, 1), 0.4), A_c[None, :],
    np.tile(B_c, (1, l_chk, 1)), np.tile(C_c, (1, l_chk, 1)), backend="numpy")
assert np.allclose(y_conv, y_scan[0, :, 0]), "convolution and recurrence must agree"
print("exercise 2 passed: convolution == recurrence, max diff", np.abs(y_conv - y_scan[0, :, 0]).max())

# %% [markdown]
# ### The mixing matrix: what each output reads from each input
#
# For fixed `Δ, B, C` the scan is linear in `u`, so `y = M u` for an `l × l` lower-triangular
# matrix `M[t, s]` (the same object as an attention matrix). We can measure it with the
# package itself: feed a unit impulse at each position `s` (a batch of `l` sequences) and
# record the outputs. For a time-invariant SSM `M` is **Toeplitz** (constant along
# diagonals: it only depends on `t - s`). For a selective one, let a few "reset" tokens
# carry a large step `Δ`, which wipes the state: nothing before them reaches anything after.

# %%
def mixing_matrix(delta, A, B, C):
    """M[t, s] = response y_t to a unit impulse at s, one channel, via the package's scan.

    Args:
        delta: (l,).  A: (n,).  B, C: (l, n).
    Returns:
        M: (l, l), lower triangular.
    """
    l = len(delta)
    impulses = np.eye(l)[:, :, None]                              # (b=l, l, 1): batch s has u = e_s
    y, _, _ = selective_scan_forward(
        impulses, np.tile(delta[None, :, None], (l, 1, 1)), A[None, :],
        np.tile(B, (l, 1, 1)), np.tile(C, (l, 1, 1)), backend="numpy")
    return y[:, :, 0].T                                           # (t, s)


n_v = 4
A_v = -np.arange(1, n_v + 1, dtype=float) * 0.5
B_lti, C_lti = np.ones(n_v), np.ones(n_v) / n_v
delta_lti = np.full(L_VIEW, 0.15)
M_lti = mixing_matrix(delta_lti, A_v, np.tile(B_lti, (L_VIEW, 1)), np.tile(C_lti, (L_VIEW, 1)))

resets = np.arange(L_VIEW // 4, L_VIEW, L_VIEW // 4)            # three reset tokens
delta_sel = np.full(L_VIEW, 0.15)
delta_sel[resets] = 20.0                                        # exp(-20 * 0.5) ≈ 5e-5: forget
B_sel = np.tile(B_lti, (L_VIEW, 1)) * (1 + 0.5 * np.sin(np.arange(L_VIEW) / 3))[:, None]
M_sel = mixing_matrix(delta_sel, A_v, B_sel, np.tile(C_lti, (L_VIEW, 1)))

# The matrices really are the scan: y = M u for a random input.
u_v = rng.standard_normal(L_VIEW)
y_v, _, _ = selective_scan_forward(u_v[None, :, None], delta_sel[None, :, None], A_v[None, :],
                                   B_sel[None], np.tile(C_lti, (1, L_VIEW, 1)), backend="numpy")
assert np.allclose(M_sel @ u_v, y_v[0, :, 0])
assert np.allclose(M_lti[5:, 5:], M_lti[:-5, :-5]), "time-invariant: Toeplitz"
assert np.abs(M_sel[resets[0] + 1:, :resets[0]]).max() < 1e-3, "nothing crosses a reset"

fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
for ax, M, title in [(axes[0], M_lti, "time-invariant (S4-like): Toeplitz"),
                     (axes[1], M_sel, "selective (Mamba): resets at the dashed lines")]:
    im = ax.imshow(np.log10(np.abs(M) + 1e-6), cmap="magma", vmin=-4, vmax=0)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("input position s")
    ax.set_ylabel("output position t")
    ax.grid(False)
for r in resets:
    axes[1].axvline(r, color="cyan", ls="--", lw=0.8)
    axes[1].axhline(r, color="cyan", ls="--", lw=0.8)
fig.colorbar(im, ax=axes, shrink=0.8, label="log10 |M[t, s]|  (weight of u_s in y_t)")
plt.show()

# %% [markdown]
# **Reading the figure.** On the left every diagonal band is constant: the influence of
# `u_s` on `y_t` depends only on the distance `t - s`, so one kernel `K` describes it and a
# convolution computes it. On the right the same model with token-dependent `Δ_t, B_t`
# builds a matrix with blocks: a reset token (large `Δ`) multiplies the state by
# `e^{ΔA} ≈ 0`, so inputs before it are forgotten, and writes its own input with the large
# weight `ΔB` (the bright column, clipped by the colour scale). No single kernel can do that, which is
# why Mamba cannot use S4's FFT and needs a fast *scan* instead (lessons 03 to 05).
#
# ## Summary
# * Mamba's recurrence: `h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t u_t`, `y_t = C_t h_t + D u_t`:
#   ZOH for `A` (stable for any `Δ`), Euler for `B` (simpler; first order in `Δ|A|`).
# * A loop over time is the specification; the package's `"numpy"` backend vectorises it
#   over batch, channels and state.
# * Time-invariant SSMs are convolutions; selective ones are not, because the mixing
#   matrix depends on the tokens.
#
# **Next:** lesson 02 runs this loop backwards to get gradients.
