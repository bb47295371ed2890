# %% [markdown]
# # 02 · Backprop through the scan, by hand
#
# **Goal.** Derive the gradient of the selective scan without autograd: the *adjoint*
# recurrence that runs backwards in time. Check it with finite differences, then against
# the package's backward, and see what it costs in memory.
#
# **Prerequisites.** Lesson 01 (the recurrence `h_t = e^{Δ_t A} h_{t-1} + Δ_t B_t u_t`);
# the chain rule; what a gradient check is (we build one here).
#
# **Run time.** About 10 seconds (2 seconds with `LESSONS_FAST=1`).
#
# **You will use** `mamba_from_scratch.scan.selective_scan_forward` and
# `selective_scan_backward` with `backend="numpy"`.

# %% tags=["parameters"]
import os

FAST = os.environ.get("LESSONS_FAST", "0") == "1"  # CI sets LESSONS_FAST=1 to shrink every size
SEED = 0
L_SCALAR = 12 if FAST else 40   # length of the scalar recurrence we check by finite differences
L_DECAY = 100 if FAST else 400  # length of the sequence in the gradient-decay figure

# %%
import matplotlib.pyplot as plt
import numpy as np

from mamba_from_scratch.scan import selective_scan_backward, selective_scan_forward

rng = np.random.default_rng(SEED)
plt.rcParams.update({"figure.dpi": 80, "axes.grid": True, "grid.alpha": 0.3})

# %% [markdown]
# ## 1. The idea in words
#
# Training needs `∂L/∂(every input of the scan)`. The forward pass runs left to right,
# each state feeding the next. The gradient runs the same chain right to left: the
# gradient reaching `h_t` is what `y_t` sends directly plus what `h_{t+1}` sends back
# through the decay `Ā_{t+1}`. That backward-running quantity is the **adjoint state**, and
# its recurrence has exactly the shape of the forward one, reversed in time.
#
# ## 2. The scalar recurrence and its adjoint
#
# Strip S6 to one channel and one state coordinate: a scalar linear recurrence
#
# $$h_t = a_t h_{t-1} + b_t, \qquad y_t = c_t h_t, \qquad t = 1..l,\; h_0 \text{ given}.$$
#
# We backprop a scalar loss `L` whose gradient with respect to the outputs is some given
# `g_t = ∂L/∂y_t` (the "upstream gradient", `dy` in code). Let `δ_t = ∂L/∂h_t` through
# **every** path. `h_t` influences `L` through `y_t` and through `h_{t+1}`, so
#
# $$\delta_t = c_t g_t + a_{t+1}\,\delta_{t+1}, \qquad \delta_{l+1} = 0 .$$
#
# Then each input's gradient is local: `h_t = a_t h_{t-1} + b_t` gives
#
# $$\frac{\partial L}{\partial a_t} = \delta_t h_{t-1},\qquad \frac{\partial L}{\partial b_t} = \delta_t,\qquad \frac{\partial L}{\partial c_t} = g_t h_t,\qquad \frac{\partial L}{\partial h_0} = a_1 \delta_1 .$$
#
# | symbol | code | meaning |
# |---|---|---|
# | `a_t, b_t, c_t` | `a, b, c`, `(l,)` | decay, input, readout at step t |
# | `h_t` | `hs[t]` | forward state (must be **stored** or recomputed: the backward needs `h_{t-1}`) |
# | `g_t` | `dy` | upstream gradient `∂L/∂y_t` |
# | `δ_t` | `dh` | adjoint state `∂L/∂h_t` |
#
# Naming rule of the package: a leading `d` means "gradient of", nothing else (so the
# discretized `Ā` is `deltaA`, never `dA`).

# %%
def scalar_scan_forward(a, b, c, h0=0.0):
    """h_t = a_t h_{t-1} + b_t, y_t = c_t h_t.  Returns y (l,) and every state hs (l,)."""
    hs = np.empty(len(a))
    h = h0
    for t in range(len(a)):
        h = a[t] * h + b[t]
        hs[t] = h
    return c * hs, hs


def scalar_scan_backward(dy, a, c, hs, h0=0.0):
    """Adjoint of scalar_scan_forward.  Returns da, db, dc (l,) and dh0."""
    l = len(a)
    da, db, dc = np.empty(l), np.empty(l), np.empty(l)
    dh_next = 0.0                                  # a_{t+1} * delta_{t+1}, zero past the end
    for t in range(l - 1, -1, -1):
        dh = c[t] * dy[t] + dh_next                # delta_t
        h_prev = hs[t - 1] if t > 0 else h0
        da[t] = dh * h_prev
        db[t] = dh
        dc[t] = dy[t] * hs[t]
        dh_next = a[t] * dh
    return da, db, dc, dh_next                     # after t = 0, dh_next = a_1 delta_1 = dL/dh0

# %% [markdown]
# ## 3. Checking a gradient by finite differences
#
# For any loss `L(x)`, the central difference `(L(x + ε e_i) - L(x - ε e_i)) / 2ε` approximates
# `∂L/∂x_i` with an error `O(ε²)`. We take `L = Σ_t g_t y_t` with a **random** `g` (an
# all-ones `g` would hide errors that cancel), work in float64, and compare with the relative
# error `|x - y| / (|x| + |y|)`.

# %%
def numerical_grad(f, x, eps=1e-5):
    """Central-difference gradient of the scalar function f at x (x is perturbed in place, then restored)."""
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + eps
        f_plus = f()
        x[i] = old - eps
        f_minus = f()
        x[i] = old
        grad[i] = (f_plus - f_minus) / (2 * eps)
    return grad


def rel_error(x, y):
    """Largest relative error between two arrays, guarded against 0 / 0."""
    return float(np.max(np.abs(x - y) / np.maximum(1e-8, np.abs(x) + np.abs(y))))


a = rng.uniform(0.5, 1.0, L_SCALAR)
b = rng.standard_normal(L_SCALAR)
c = rng.standard_normal(L_SCALAR)
g = rng.standard_normal(L_SCALAR)
h0 = np.array(0.3)

y, hs = scalar_scan_forward(a, b, c, h0)
da, db, dc, dh0 = scalar_scan_backward(g, a, c, hs, h0)


def loss():
    return float(np.sum(g * scalar_scan_forward(a, b, c, h0)[0]))


for name, analytic, x in [("a", da, a), ("b", db, b), ("c", dc, c), ("h0", dh0, h0)]:
    err = rel_error(analytic, numerical_grad(loss, x))
    print(f"d{name:<3} relative error vs finite differences: {err:.1e}")
    assert err < 1e-6

# %% [markdown]
# These errors are round-off only: `L` is *affine* in each single `a_t`, `b_t`, `c_t`
# (the others held fixed), so the central difference has no truncation error at all. The
# real test comes with parameters that enter through a nonlinearity, like `Δ` below.
#
# ## 4. From the scalar adjoint to S6
#
# S6 is `n` such recurrences per channel, with
# `a_t = exp(Δ_t A)` (`deltaA`), `b_t = Δ_t B_t u_t` (`deltaB_u`), `c_t = C_t`, summed into
# `y_t = Σ_n C_t[n] h_t[n] + D u_t`. The adjoint is the same, and the chain rule through the
# discretization gives, with `dh` the adjoint and `h_prev = h_{t-1}`:
#
# | gradient | formula | why |
# |---|---|---|
# | `d(deltaA)` | `dh * h_prev` | `∂L/∂a_t` above |
# | `ddelta` | `Σ_n d(deltaA) deltaA A + Σ_n dh B u` | `deltaA = exp(delta A)`, `deltaB_u = delta B u` |
# | `dA` | `Σ_t d(deltaA) deltaA delta` | `A` is shared by all steps: sum over t (and batch) |
# | `dB_t` | `Σ_d dh delta u` | `B_t` is shared by all channels: sum over d |
# | `dC_t` | `Σ_d dy h` | same |
# | `du` | `Σ_n dh delta B + D dy` | through `deltaB_u` and the skip |
# | `dD` | `Σ_t dy u` | |
#
# A naive version loops over batch, channel and state, reusing the scalar adjoint:

# %%
def s6_backward_naive(dy, u, delta, A, B, C, D):
    """S6 gradients from the scalar adjoint, one (batch, channel, state) at a time."""
    b_, l, d = u.shape
    n = A.shape[1]
    du, ddelta = D * dy, np.zeros_like(delta)     # the skip's share of du
    dA, dB, dC = np.zeros_like(A), np.zeros_like(B), np.zeros_like(C)
    dD = np.einsum("bld,bld->d", dy, u)
    for i in range(b_):
        for k in range(d):
            for j in range(n):
                deltaA = np.exp(delta[i, :, k] * A[k, j])                 # a_t, (l,)
                deltaB_u = delta[i, :, k] * B[i, :, j] * u[i, :, k]      # b_t, (l,)
                y_, hs = scalar_scan_forward(deltaA, deltaB_u, C[i, :, j])
                d_deltaA, d_deltaB_u, dc, _ = scalar_scan_backward(dy[i, :, k], deltaA, C[i, :, j], hs)
                ddelta[i, :, k] += d_deltaA * deltaA * A[k, j] + d_deltaB_u * B[i, :, j] * u[i, :, k]
                dA[k, j] += np.sum(d_deltaA * deltaA * delta[i, :, k])
                dB[i, :, j] += d_deltaB_u * delta[i, :, k] * u[i, :, k]
                du[i, :, k] += d_deltaB_u * delta[i, :, k] * B[i, :, j]
                dC[i, :, j] += dc
    return du, ddelta, dA, dB, dC, dD

# %% [markdown]
# ## 5. The package's backward, checked three ways
#
# `selective_scan_backward` does the same adjoint with the loop over time only, vectorised
# over batch, channels and state. Tiny, *distinct* sizes (`b=2, l=5, d=3, n=4`) make a
# swapped axis fail loudly.

# %%
b_, l, d, n = 2, 5, 3, 4
u = rng.standard_normal((b_, l, d))
delta = np.log1p(np.exp(rng.standard_normal((b_, l, d))))   # softplus: > 0
A = -np.exp(rng.standard_normal((d, n)))
B = rng.standard_normal((b_, l, n))
C = rng.standard_normal((b_, l, n))
D = rng.standard_normal(d)
dy = rng.standard_normal((b_, l, d))

y, h_last, cache = selective_scan_forward(u, delta, A, B, C, D, backend="numpy")
package = selective_scan_backward(dy, cache)[:6]           # du, ddelta, dA, dB, dC, dD
naive = s6_backward_naive(dy, u, delta, A, B, C, D)


def s6_loss():
    return float(np.sum(dy * selective_scan_forward(u, delta, A, B, C, D, backend="numpy")[0]))


print(f"{'':>7} {'package vs naive':>18} {'package vs FD':>15}")
for name, p, q, x in zip(["du", "ddelta", "dA", "dB", "dC", "dD"], package, naive, [u, delta, A, B, C, D]):
    e_naive, e_fd = rel_error(p, q), rel_error(p, numerical_grad(s6_loss, x))
    print(f"{name:>7} {e_naive:18.1e} {e_fd:15.1e}")
    assert e_naive < 1e-10 and e_fd < 1e-6

# %% [markdown]
# How small should `ε` be? `Δ` enters through `exp(ΔA)`, so now the central difference
# has a truncation error `O(ε²)`, while float64 round-off contributes about `1e-16 / ε`. The
# sweet spot is near `ε ≈ 1e-5`, the default of `numerical_grad` above. Note the floor: even
# there the error is `1e-9`-ish, not `1e-16`, which is why a test asks for `1e-6`, not more.

# %%
eps_grid = 10.0 ** np.arange(-11, -0.5, 0.5)
ddelta_pkg = package[1]
errs = [rel_error(ddelta_pkg, numerical_grad(s6_loss, delta, eps)) for eps in eps_grid]
fig, ax = plt.subplots(figsize=(6.5, 3.8))
ax.loglog(eps_grid, errs, "o-", label="measured: ddelta, package vs finite differences")
ax.loglog(eps_grid, 1e-16 / eps_grid, "k:", label="round-off ~ 1e-16 / ε")
ax.loglog(eps_grid, eps_grid ** 2, "k--", label="truncation ~ ε²")
ax.axhline(1e-6, color="red", lw=0.8)
ax.text(2e-8, 1.5e-6, "test threshold 1e-6", color="red", fontsize=9)
ax.set_ylim(1e-12, 1e0)
ax.set_xlabel("finite-difference step ε")
ax.set_ylabel("largest relative error")
ax.set_title("Central differences: truncation vs round-off")
ax.legend(fontsize=9, loc="upper center")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 6. Memory: the backward needs every `h_{t-1}`
#
# The reference stores all states: `b · l · d_inner · n` numbers, 16× the activations
# when `n = 16`. Can we instead recover `h_{t-1}` from `h_t` by running the recurrence
# backwards, `h_{t-1} = (h_t - b_t) / a_t`? No: `a_t = exp(Δ_t A)` underflows to 0 when a
# token resets the state (lesson 01), and then we divide by zero.

# %%
a_reset = np.exp(np.array([-0.1, -800.0, -0.1]))    # the middle step is a "reset": exp(-800) = 0.0
b_reset = np.array([1.0, 2.0, 3.0])
_, hs_reset = scalar_scan_forward(a_reset, b_reset, np.ones(3))
with np.errstate(divide="ignore", invalid="ignore"):
    h_prev_recovered = (hs_reset[1] - b_reset[1]) / a_reset[1]
print("a_t at the reset:", a_reset[1], "  true h_{t-1}:", hs_reset[0], "  recovered:", h_prev_recovered)

# %% [markdown]
# The safe alternative keeps one state every `K` steps (a *checkpoint*) and, during the
# backward, recomputes the states of one chunk at a time from its checkpoint: memory
# drops by `K` for one extra forward pass. That is what the compiled backends do.
#
# ### Exercise 1: checkpointed backward
#
# Write `scalar_scan_backward_ckpt(dy, a, b, c, h0, K)`: run the forward keeping only
# `h_0, h_K, h_2K, …`, then walk the chunks from last to first, recompute each chunk's
# states from its checkpoint, and run the adjoint through it. Return `(da, db, dc, dh0)`
# and the number of states you stored. (Reuse `scalar_scan_forward`.)

# %% tags=["exercise"]
def scalar_scan_backward_ckpt(dy, a, b, c, h0, K):
    """Same result as scalar_scan_backward, storing only every K-th state.

    Args:
        dy, a, b, c: (l,).  h0: float.  K: chunk length >= 1.
    Returns:
        (da, db, dc, dh0), n_stored: the gradients and how many states were kept.
    """
    raise NotImplementedError("Exercise 1: write scalar_scan_backward_ckpt")

# %% tags=["solution"]
def scalar_scan_backward_ckpt(dy, a, b, c, h0, K):
    """Same result as scalar_scan_backward, storing only every K-th state (see the exercise)."""
    l = len(a)
    starts = list(range(0, l, K))
    ckpts, h = [], h0                          # ckpts[i] = state entering chunk i
    for s in starts:
        ckpts.append(h)
        h = scalar_scan_forward(a[s:s + K], b[s:s + K], c[s:s + K], h)[1][-1]
    da, db, dc = np.empty(l), np.empty(l), np.empty(l)
    dh_next = 0.0
    for s, h_in in zip(reversed(starts), reversed(ckpts)):
        e = min(s + K, l)
        _, hs_chunk = scalar_scan_forward(a[s:e], b[s:e], c[s:e], h_in)   # recompute K states
        for t in range(e - 1, s - 1, -1):
            dh = c[t] * dy[t] + dh_next
            h_prev = hs_chunk[t - s - 1] if t > s else h_in
            da[t], db[t], dc[t] = dh * h_prev, dh, dy[t] * hs_chunk[t - s]
            dh_next = a[t] * dh
    return (da, db, dc, dh_next), len(ckpts)

# %% tags=["check"]
l_chk = 23
a_chk, b_chk, c_chk, g_chk = (rng.uniform(0.3, 1.0, l_chk), rng.standard_normal(l_chk),
                              rng.standard_normal(l_chk), rng.standard_normal(l_chk))
_, hs_chk = scalar_scan_forward(a_chk, b_chk, c_chk, 0.7)
full = scalar_scan_backward(g_chk, a_chk, c_chk, hs_chk, 0.7)
for K in (1, 4, 5, 23, 50):
    grads, n_stored = scalar_scan_backward_ckpt(g_chk, a_chk, b_chk, c_chk, 0.7, K)
    assert all(np.allclose(x, y) for x, y in zip(grads, full)), f"K={K}: gradients differ"
    assert n_stored == -(-l_chk // K), f"K={K}: stored {n_stored} states, expected ceil(l/K)"
print("exercise 1 passed: checkpointed gradients equal the stored-state ones")

# %% [markdown]
# ## 7. How far back does the gradient reach?
#
# The adjoint decays by `deltaA = e^{ΔA}` at every step backwards, exactly as the state
# does forwards. With a loss on the **last** output only, `|∂L/∂u_t|` tells how much the
# final output depends on each earlier input: the model's memory horizon, set by `Δ|A|`.

# %%
A_decay = -np.array([[1.0], [0.1], [0.01]])                 # three channels, n = 1
d3 = A_decay.shape[0]
u_d = np.ones((1, L_DECAY, d3))
delta_d = np.full((1, L_DECAY, d3), 0.1)
B_d = np.ones((1, L_DECAY, 1))
C_d = np.ones((1, L_DECAY, 1))
_, _, cache_d = selective_scan_forward(u_d, delta_d, A_decay, B_d, C_d, backend="numpy")
dy_d = np.zeros((1, L_DECAY, d3))
dy_d[0, -1] = 1.0                                           # only the last output matters
du_d = selective_scan_backward(dy_d, cache_d)[0][0]         # (l, d)
lag = L_DECAY - 1 - np.arange(L_DECAY)
predicted = 0.1 * np.exp(0.1 * A_decay[:, 0] * lag[:, None])  # Δ B C e^{ΔA·lag}
assert np.allclose(du_d, predicted)

fig, ax = plt.subplots(figsize=(6.5, 3.8))
for k in range(d3):
    ax.semilogy(lag, du_d[:, k], label=f"A = {A_decay[k, 0]:g}  (Δ|A| = {0.1 * -A_decay[k, 0]:g})")
ax.set_xlabel("lag: how many steps before the last output")
ax.set_ylabel("|∂ y_last / ∂ u_t|")
ax.set_ylim(1e-8, 1)
ax.set_title("The adjoint decays like the state: memory horizon ~ 1 / (Δ|A|)")
ax.legend(fontsize=9)
plt.tight_layout()
plt.show()

# %% [markdown]
# ### Exercise 2: gradient of the final state
#
# When a long sequence is processed in pieces (or in the recurrent step mode of lesson
# 06), the last state `h_l` is itself an output, with its own upstream gradient
# `dh_last`. Write `scalar_scan_backward_with_state(dy, dh_last, a, c, hs, h0)` returning
# `(da, db, dc, dh0)`. Hint: only the starting value of the adjoint changes.

# %% tags=["exercise"]
def scalar_scan_backward_with_state(dy, dh_last, a, c, hs, h0=0.0):
    """Adjoint of scalar_scan_forward when L also depends on h_l through dh_last = dL/dh_l.

    Returns:
        da, db, dc: (l,), and dh0.
    """
    raise NotImplementedError("Exercise 2: write scalar_scan_backward_with_state")

# %% tags=["solution"]
def scalar_scan_backward_with_state(dy, dh_last, a, c, hs, h0=0.0):
    """Adjoint with an upstream gradient on the final state (see the exercise)."""
    l = len(a)
    da, db, dc = np.empty(l), np.empty(l), np.empty(l)
    dh_next = dh_last                           # the only change: the adjoint starts at dh_last
    for t in range(l - 1, -1, -1):
        dh = c[t] * dy[t] + dh_next
        h_prev = hs[t - 1] if t > 0 else h0
        da[t], db[t], dc[t] = dh * h_prev, dh, dy[t] * hs[t]
        dh_next = a[t] * dh
    return da, db, dc, dh_next

# %% tags=["check"]
w_last = 1.7                                     # L = sum g y + w_last * h_l


def loss_with_state():
    y_, hs_ = scalar_scan_forward(a, b, c, h0)
    return float(np.sum(g * y_) + w_last * hs_[-1])


grads = scalar_scan_backward_with_state(g, w_last, a, c, hs, h0)
for name, analytic, x in zip(["a", "b", "c", "h0"], grads, [a, b, c, h0]):
    assert rel_error(analytic, numerical_grad(loss_with_state, x)) < 1e-6, f"d{name} is wrong"
# The package takes the same argument: compare on one channel with n = 1.
_, _, cache_1 = selective_scan_forward(np.ones((1, 4, 1)), np.full((1, 4, 1), 0.5), -np.ones((1, 1)),
                                       np.ones((1, 4, 1)), np.ones((1, 4, 1)), backend="numpy")
dh0_pkg = selective_scan_backward(np.zeros((1, 4, 1)), cache_1, dh_last=np.ones((1, 1, 1)))[-1]
_, hs_1 = scalar_scan_forward(np.full(4, np.exp(-0.5)), np.full(4, 0.5), np.ones(4))
dh0_mine = scalar_scan_backward_with_state(np.zeros(4), 1.0, np.full(4, np.exp(-0.5)), np.ones(4), hs_1)[-1]
assert np.isclose(dh0_pkg[0, 0, 0], dh0_mine), (dh0_pkg, dh0_mine)
print("exercise 2 passed: dh0 =", dh0_mine, "= exp(-0.5)^4")

# %% [markdown]
# ## Summary
# * The adjoint `δ_t = c_t g_t + a_{t+1} δ_{t+1}` runs the forward recurrence backwards
#   in time; every parameter gradient is then a local product with `δ_t`.
# * S6's backward is that adjoint plus the chain rule through `deltaA = exp(delta A)` and
#   `deltaB_u = delta B u`; shared parameters (`A`, `B_t`, `C_t`, `D`) sum over the axes
#   they are shared along.
# * Check gradients with float64 central differences, a random upstream gradient and tiny
#   distinct sizes; trust relative errors below `1e-6`.
# * The backward needs `h_{t-1}`: store it, or recompute it from checkpoints; never divide
#   by `deltaA`.
#
# **Next:** lesson 03 compiles forward and backward with Numba.
