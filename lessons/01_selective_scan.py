# %% [markdown]
# # 01 · The selective scan
#
# **Goal.** Understand the recurrence at the heart of Mamba: where it comes from (a
# continuous state space model), how it is discretized (and why the official kernel mixes
# two discretizations), how to run it as a loop over time, and when it can also be run as
# a convolution.
#
# **Prerequisites.** NumPy (broadcasting, `np.einsum`). Math: the scalar linear ODE
# (`h' = a h + b u` has the solution `h(t) = e^{a t} h(0) + ∫ e^{a(t-s)} b u(s) ds`), the
# Taylor series of `e^x` to first order, diagonal matrices, and a discrete convolution
# `y_t = Σ_s K_{t-s} u_s`. No deep learning needed; lesson 00 is optional.
#
# **Run time.** About 5 seconds (3 seconds with `LESSONS_FAST=1`).
#
# **Exercises.** 01.1 the exact ZOH discretization, vectorised; 01.2 the S6 forward pass,
# vectorised over batch, channels and state; 01.3 the convolution kernel of a
# time-invariant SSM. Checked against closed forms and frozen arrays (`_data/01_scan.npz`).
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
import math
import time

import matplotlib.pyplot as plt
import numpy as np

from mamba_from_scratch.grading import package_calls, python_lines
from mamba_from_scratch.scan import selective_scan_forward

rng = np.random.default_rng(SEED)
_passed = {}                     # exercise id -> True once its check passed (read by the fallbacks)
frozen = np.load("_data/01_scan.npz")   # reference arrays written by _data/make_01.py from the package
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
# ### Exercise 01.1: the exact ZOH discretization, for every channel and state
#
# Write `discretize_zoh(delta, A, B)` returning the exact ZOH pair for S6's shapes,
#
# $$\bar A_t[d, n] = e^{\Delta_t[d]\, A[d, n]}, \qquad \bar B_t[d, n] = \frac{e^{\Delta_t[d] A[d, n]} - 1}{A[d, n]}\, B_t[n],$$
#
# for every batch `b` and step `t` at once (broadcasting, no Python loops).
#
# | code | shape | meaning |
# |---|---|---|
# | `delta` | `(b, l, d)` | step sizes, > 0 |
# | `A` | `(d, n)` | negative decay rates |
# | `B` | `(b, l, n)` | input matrix per token |
# | returned | `(b, l, d, n)`, `(b, l, d, n)` | `A_bar`, `B_bar` |
#
# Mind the precision of `e^x - 1` for tiny `x = ΔA`: in float64 `np.exp(1e-12) - 1` keeps
# only 4 correct digits; `np.expm1` keeps all 16. The check tests tiny steps too, and the
# identity that makes ZOH exact for a constant input: the steady state
# `B̄ u / (1 - Ā)` equals the continuous one, `-B u / A`, for **every** `Δ`.

# %% tags=["solution"]
def discretize_zoh(delta, A, B):
    """Exact zero-order-hold discretization of S6's diagonal state space model.

    Args:
        delta: (b, l, d) step sizes > 0.  A: (d, n) negative.  B: (b, l, n).
    Returns:
        A_bar: (b, l, d, n) = exp(delta A).
        B_bar: (b, l, d, n) = (exp(delta A) - 1) / A * B.
    """
    ### BEGIN SOLUTION
    delta_A = delta[..., None] * A                 # (b, l, d, n)
    A_bar = np.exp(delta_A)
    B_bar = np.expm1(delta_A) / A * B[:, :, None, :]    # expm1 keeps precision when delta * A is tiny
    return A_bar, B_bar
    ### END SOLUTION

# %% tags=["check", "points=2"]
_passed["01.1"] = False
# By hand: delta = ln 2, A = -1 gives A_bar = 1/2 and B_bar = (1/2 - 1) / (-1) B = B / 2.
A_bar, B_bar = discretize_zoh(np.full((1, 1, 1), np.log(2.0)), -np.ones((1, 1)), np.full((1, 1, 1), 3.0))
assert np.shape(A_bar) == (1, 1, 1, 1) and np.shape(B_bar) == (1, 1, 1, 1), "shapes must be (b, l, d, n)"
assert np.allclose(A_bar, 0.5, rtol=1e-12) and np.allclose(B_bar, 1.5, rtol=1e-12), (A_bar, B_bar)
chk_rng = np.random.default_rng(3)
delta_c = np.exp(chk_rng.uniform(-6, 1, (2, 5, 3)))        # steps from 0.0025 to 2.7
A_c = -np.exp(chk_rng.standard_normal((3, 4)))
B_c = chk_rng.standard_normal((2, 5, 4))
A_bar, B_bar = discretize_zoh(delta_c, A_c, B_c)
assert np.shape(A_bar) == (2, 5, 3, 4) and np.shape(B_bar) == (2, 5, 3, 4), \
    f"shapes must be (b, l, d, n) = (2, 5, 3, 4), got {np.shape(A_bar)}, {np.shape(B_bar)}"
i_, t_, k_, j_ = 1, 3, 2, 0                                  # one element, by the scalar formula
x_ = delta_c[i_, t_, k_] * A_c[k_, j_]
assert np.isclose(A_bar[i_, t_, k_, j_], math.exp(x_), rtol=1e-12), "A_bar[b, t, d, n] = exp(delta[b, t, d] A[d, n])"
assert np.isclose(B_bar[i_, t_, k_, j_], math.expm1(x_) / A_c[k_, j_] * B_c[i_, t_, j_], rtol=1e-12), \
    "B_bar[b, t, d, n] = (exp(delta A) - 1) / A[d, n] * B[b, t, n]"
steady = B_bar / (1 - A_bar)                                 # ZOH's DC gain, (b, l, d, n)
assert np.allclose(steady, -B_c[:, :, None, :] / A_c, rtol=1e-10), "ZOH's steady state must be -B/A for every delta"
# The method: broadcasting, no loop. 120 elements must not run more Python lines than 1.
_, lines_small = python_lines(discretize_zoh, delta_c[:1, :1, :1], A_c[:1, :1], B_c[:1, :1, :1])
_, lines_big = python_lines(discretize_zoh, delta_c, A_c, B_c)
assert lines_big - lines_small < 3, f"{lines_small} Python lines for one element, {lines_big} for 120: use broadcasting, no loops"
### BEGIN HIDDEN TESTS
for i_, t_, k_, j_ in np.ndindex(2, 5, 3, 4):
    x_ = delta_c[i_, t_, k_] * A_c[k_, j_]
    assert np.isclose(A_bar[i_, t_, k_, j_], math.exp(x_), rtol=1e-12)
    assert np.isclose(B_bar[i_, t_, k_, j_], math.expm1(x_) / A_c[k_, j_] * B_c[i_, t_, j_], rtol=1e-12)
tiny = np.full((1, 2, 3), 1e-12)                             # tiny steps: B_bar = delta B (1 + delta A / 2 + ...)
A_bar, B_bar = discretize_zoh(tiny, A_c, B_c[:1, :2])
assert np.allclose(B_bar / (1e-12 * B_c[:1, :2, None, :]), 1.0, rtol=1e-9, atol=0), \
    "for tiny steps B_bar must equal delta B to 9 digits: use np.expm1, not np.exp(x) - 1"
### END HIDDEN TESTS
_passed["01.1"] = True
print("exercise 01.1 passed")

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


# %% [markdown]
# ### Exercise 01.2: the S6 forward pass, vectorised over batch, channels and state
#
# The triple loop is the specification, and it is slow: `b · l · d · n` Python-level
# iterations. Write `selective_scan(u, delta, A, B, C, D)` that keeps **only the loop over
# time** (it must stay: `h_t` needs `h_{t-1}`) and does every `(batch, channel, state)`
# update of a step in one array operation, for a whole batch, starting from `h_0 = 0`:
#
# $$h_t = \bar A_t \odot h_{t-1} + \Delta_t B_t u_t \quad (b, d, n), \qquad y_t = \textstyle\sum_n C_t[n]\, h_t[\cdot, n] + D \odot u_t \quad (b, d),$$
#
# with Mamba's discretization: `Ā = exp(Δ A)` (ZOH), `B̄ = Δ B` (Euler), as in the loop above.
#
# | code | shape |
# |---|---|
# | `u`, `delta` | `(b, l, d)` |
# | `A` | `(d, n)` |
# | `B`, `C` | `(b, l, n)` |
# | `D` | `(d,)` |
# | returned `y`, `h_last` | `(b, l, d)`, `(b, d, n)` (the state after the last step) |
#
# The check compares with arrays the package computed once and froze in `_data/01_scan.npz`
# (a float64 run of its reference scan), and with two closed forms: one step
# (`h_1 = Δ_1 B_1 u_1`), and the impulse response of one channel with `n = 1`
# (`y_t = C Δ B e^{(t-1)ΔA}` after a unit impulse at `t = 1`). It also checks the method: it
# counts the Python lines your function runs at two sizes with the same `l` (a loop over batch,
# channels or state runs more of them), and it rejects a call of the package's scan.

# %% tags=["solution"]
def selective_scan(u, delta, A, B, C, D):
    """S6 forward for a batch, looping over time only.

    Args:
        u, delta: (b, l, d).  A: (d, n).  B, C: (b, l, n).  D: (d,).
    Returns:
        y: (b, l, d).  h_last: (b, d, n), the state after step l.
    """
    ### BEGIN SOLUTION
    b, l, d = u.shape
    h = np.zeros((b, d, A.shape[1]))                                     # (b, d, n)
    y = np.empty((b, l, d))
    for t in range(l):
        deltaA = np.exp(delta[:, t, :, None] * A)                        # (b, d, n)  ZOH for A
        deltaB_u = (delta[:, t] * u[:, t])[:, :, None] * B[:, t, None, :]   # (b, d, n)  Euler for B
        h = deltaA * h + deltaB_u
        y[:, t] = np.einsum("bdn,bn->bd", h, C[:, t]) + D * u[:, t]      # (b, d)
    return y, h
    ### END SOLUTION

# %% tags=["check", "points=4"]
_passed["01.2"] = False
names = ("u", "delta", "A", "B", "C", "D")
y_a, h_a = selective_scan(*(frozen["a_" + k] for k in names))
assert np.shape(y_a) == (2, 7, 3), f"y must be (b, l, d) = (2, 7, 3), got {np.shape(y_a)}"
assert np.shape(h_a) == (2, 3, 4), f"h_last must be (b, d, n) = (2, 3, 4), got {np.shape(h_a)}"
assert np.allclose(y_a, frozen["a_y"], rtol=1e-10, atol=1e-12), "y differs from the frozen reference"
assert np.allclose(h_a, frozen["a_h_last"], rtol=1e-10, atol=1e-12), "h_last differs from the frozen reference"
# One step, by hand: h_1 = delta B u (h_0 = 0), y_1 = sum_n C h_1 + D u.
first = {k: frozen["a_" + k][:, :1] if k in ("u", "delta", "B", "C") else frozen["a_" + k] for k in names}
y_1, h_1 = selective_scan(*(first[k] for k in names))
u1, delta1, B1, C1 = (first[k][:, 0] for k in ("u", "delta", "B", "C"))
h_hand = (delta1 * u1)[:, :, None] * B1[:, None, :]                          # (b, d, n)
assert np.allclose(h_1, h_hand, rtol=1e-12), "after one step h = delta B u"
assert np.allclose(y_1[:, 0], (h_hand * C1[:, None, :]).sum(-1) + frozen["a_D"] * u1, rtol=1e-12), \
    "after one step y = sum_n C h + D u"
# The method: only the loop over time. With l = 6 fixed, 60 times more (batch, channel, state)
# elements must not run more Python lines; and no call of the package's scan.
_, lines_small = python_lines(selective_scan, *random_scan_inputs(np.random.default_rng(8), 1, 6, 1, 1))
_, lines_big = python_lines(selective_scan, *random_scan_inputs(np.random.default_rng(8), 4, 6, 3, 5))
assert lines_big - lines_small < 6, (f"{lines_small} Python lines at b = d = n = 1, {lines_big} at b = 4, d = 3, n = 5: "
                                     "keep only the loop over time and vectorise over batch, channels and state")
assert not package_calls(selective_scan), f"write the loop yourself, without {package_calls(selective_scan)}"
### BEGIN HIDDEN TESTS
y_h, h_h = selective_scan(*(frozen["h_" + k] for k in names))
assert np.shape(y_h) == (1, 5, 2) and np.shape(h_h) == (1, 2, 6)
assert np.allclose(y_h, frozen["h_y"], rtol=1e-10, atol=1e-12) and np.allclose(h_h, frozen["h_h_last"], rtol=1e-10, atol=1e-12)
# Impulse response of one channel, n = 1: y_t = C delta B exp((t - 1) delta A) for t >= 1, D = 0.
l_i, delta_i, a_i, b_i, c_i = 12, 0.3, -0.8, 1.5, -0.7
u_i = np.zeros((1, l_i, 1))
u_i[0, 0] = 1.0
y_i, h_i = selective_scan(u_i, np.full((1, l_i, 1), delta_i), np.full((1, 1), a_i), np.full((1, l_i, 1), b_i),
                          np.full((1, l_i, 1), c_i), np.zeros(1))
expect = c_i * delta_i * b_i * np.exp(np.arange(l_i) * delta_i * a_i)
assert np.allclose(y_i[0, :, 0], expect, rtol=1e-12)
assert np.allclose(h_i[0, 0, 0], delta_i * b_i * math.exp((l_i - 1) * delta_i * a_i), rtol=1e-12)
### END HIDDEN TESTS
_passed["01.2"] = True
print("exercise 01.2 passed")

# %% tags=["fallback"]
if not _passed["01.2"]:
    def selective_scan(u, delta, A, B, C, D):
        """The package's reference scan (numpy backend) in place of the exercise."""
        y, h_last, _ = selective_scan_forward(u, delta, A, B, C, D, backend="numpy")
        return y, h_last
    print("exercise 01.2 not solved yet: the rest of the lesson uses the package's scan")

# %% [markdown]
# Now the fast version: the package's `"numpy"` backend does what you just wrote (and keeps
# what the backward pass needs). Compare all three on the same inputs (timings on a shared
# machine are noisy; the load average is printed beside them):

# %%
u, delta, A, B, C, D = random_scan_inputs(rng, 2, L_LOOP, D_LOOP, N_STATE)
t0 = time.perf_counter()
y_loop = np.stack([selective_scan_loop(u[i], delta[i], A, B[i], C[i], D) for i in range(2)])
t_loop = time.perf_counter() - t0
t0 = time.perf_counter()
y_vec, _ = selective_scan(u, delta, A, B, C, D)
t_vec = time.perf_counter() - t0
t0 = time.perf_counter()
y_pkg, h_last, _ = selective_scan_forward(u, delta, A, B, C, D, backend="numpy")
t_pkg = time.perf_counter() - t0
print(f"triple loop {t_loop * 1e3:8.1f} ms   your selective_scan {t_vec * 1e3:6.1f} ms   "
      f"package (numpy) {t_pkg * 1e3:6.1f} ms   (load average {os.getloadavg()[0]:.1f})")
assert np.allclose(y_loop, y_pkg, rtol=1e-10, atol=1e-12) and np.allclose(y_vec, y_pkg, rtol=1e-10, atol=1e-12)
print("max |loop - package| =", np.abs(y_loop - y_pkg).max(), "  max |yours - package| =", np.abs(y_vec - y_pkg).max())

# %% [markdown]
# The package's `"numpy"` backend keeps the loop over time and vectorises the rest, as you
# did; it also validates its inputs and stores every state `h_t` for the backward pass
# (lesson 02), so it is no faster than your version, and one timing on a shared machine
# says little either way. Both are far faster than the triple loop. Lesson 03 compiles the
# loop with Numba; lesson 04 shows that even the time loop can be parallelised.
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
# ### Exercise 01.3: the convolution kernels of a time-invariant SSM
#
# Write `conv_kernel(delta, A, B, C, l)` for **all `d` channels at once**: channel `c` has
# its own step `delta[c]` and decay rates `A[c]`, and all share `B, C` (as in Mamba, where
# `B, C` are shared by the channels). Return `K` of shape `(d, l)` with
#
# $$K[c, k] = \sum_n C[n]\, e^{k\, \Delta[c] A[c, n]}\, \Delta[c]\, B[n], \qquad k = 0..l-1 .$$
#
# | code | shape |
# |---|---|
# | `delta` | `(d,)` |
# | `A` | `(d, n)` |
# | `B`, `C` | `(n,)` |
# | returned `K` | `(d, l)` |
#
# No loops needed. The check compares with the impulse response that the package's scan
# produced (frozen), with the closed form for `n = 1`, and with a convolution.

# %% tags=["solution"]
def conv_kernel(delta, A, B, C, l):
    """Convolution kernels of the time-invariant scan, one per channel.

    Args:
        delta: (d,) steps > 0.  A: (d, n) negative.  B, C: (n,).  l: kernel length.
    Returns:
        K: (d, l) with K[c, k] = sum_n C[n] exp(k delta[c] A[c, n]) delta[c] B[n].
    """
    ### BEGIN SOLUTION
    k = np.arange(l)[None, :, None]                                   # (1, l, 1)
    delta_A = (delta[:, None] * A)[:, None, :]                        # (d, 1, n)
    return (C * np.exp(k * delta_A) * B).sum(axis=-1) * delta[:, None]     # (d, l)
    ### END SOLUTION

# %% tags=["check", "points=2"]
_passed["01.3"] = False
K = conv_kernel(frozen["k_delta"], frozen["k_A"], frozen["k_B"], frozen["k_C"], 9)
assert np.shape(K) == (3, 9), f"K must be (d, l) = (3, 9), got {np.shape(K)}"
assert np.allclose(K, frozen["k_K"], rtol=1e-10, atol=1e-13), "K differs from the scan's frozen impulse response"
# n = 1, by hand: K[c, k] = C delta[c] B exp(k delta[c] A[c]).
delta_n1, A1 = np.array([0.5, 2.0]), np.array([[-1.0], [-0.25]])
K1 = conv_kernel(delta_n1, A1, np.array([2.0]), np.array([3.0]), 4)
hand = 6.0 * delta_n1[:, None] * np.exp(np.arange(4) * (delta_n1[:, None] * A1))
assert np.shape(K1) == (2, 4) and np.allclose(K1, hand, rtol=1e-12), f"n = 1: expected\n{hand}\ngot\n{K1}"
assert not package_calls(conv_kernel), f"compute K from its formula, without the package's scan ({package_calls(conv_kernel)})"
### BEGIN HIDDEN TESTS
# A causal convolution of any input with K[c] reproduces the frozen scan's outputs: impulse at t = 0
# convolved is K itself, and linearity gives a shifted, scaled copy for an impulse at t = 3.
K_long = conv_kernel(frozen["k_delta"], frozen["k_A"], frozen["k_B"], frozen["k_C"], 12)
assert np.shape(K_long) == (3, 12) and np.allclose(K_long[:, :9], frozen["k_K"], rtol=1e-10, atol=1e-13)
u_s = np.zeros(12)
u_s[3] = -2.0
for c in range(3):
    assert np.allclose(np.convolve(u_s, K_long[c])[:12][3:], -2.0 * K_long[c, :9], rtol=1e-12)
assert np.allclose(conv_kernel(delta_n1, A1, np.array([2.0]), np.array([3.0]), 1), 6.0 * delta_n1[:, None], rtol=1e-12)
### END HIDDEN TESTS
_passed["01.3"] = True
print("exercise 01.3 passed")

# %% tags=["fallback"]
if not _passed["01.3"]:
    def conv_kernel(delta, A, B, C, l):
        """Reference: the package scan's response to a unit impulse at t = 0, one row per channel."""
        d = len(delta)
        u_imp = np.zeros((1, l, d))
        u_imp[0, 0] = 1.0
        y_imp, _, _ = selective_scan_forward(u_imp, np.tile(delta, (1, l, 1)), A, np.tile(B, (1, l, 1)),
                                             np.tile(C, (1, l, 1)), backend="numpy")
        return y_imp[0].T                                             # (d, l)
    print("exercise 01.3 not solved yet: the rest of the lesson uses the package's impulse response")

# %% [markdown]
# The fast version is the scan itself. Convolving with one channel's kernel and running the
# package's scan give the same output, for a random input (not graded):

# %%
l_cv = 40
u_cv = rng.standard_normal(l_cv)
B_lti_cv, C_lti_cv = rng.standard_normal(3), rng.standard_normal(3)
K_cv = conv_kernel(np.array([0.4]), -np.array([[0.3, 1.0, 2.5]]), B_lti_cv, C_lti_cv, l_cv)[0]   # (l,)
y_conv = np.convolve(u_cv, K_cv)[:l_cv]                            # causal: keep the first l outputs
y_scan, _, _ = selective_scan_forward(
    u_cv[None, :, None], np.full((1, l_cv, 1), 0.4), -np.array([[0.3, 1.0, 2.5]]),
    np.tile(B_lti_cv, (1, l_cv, 1)), np.tile(C_lti_cv, (1, l_cv, 1)), backend="numpy")
print("convolution == recurrence: max |difference| =", np.abs(y_conv - y_scan[0, :, 0]).max())

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
