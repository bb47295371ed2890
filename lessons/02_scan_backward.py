# %% [markdown]
# # 02 · Backprop through the scan, by hand
#
# **Goal.** Derive the gradient of the selective scan without autograd: the *adjoint*
# recurrence that runs backwards in time. Check it with finite differences, then against
# the package's backward, and see what it costs in memory.
#
# **Prerequisites.** Lesson 01 (the recurrence `h_t = e^{Δ_t A} h_{t-1} + Δ_t B_t u_t`,
# and its vectorised loop). Math: the multivariable chain rule (a quantity used in several
# places receives the sum of their gradients), Taylor's theorem to third order (for the
# error of a central difference), and floating-point round-off (`ε_mach ≈ 2.2e-16`).
# What a gradient check is, we build here.
#
# **Run time.** About 5 seconds (4 seconds with `LESSONS_FAST=1`).
#
# **Exercises.** 02.1 the S6 backward (the adjoint recurrence vectorised over batch,
# channels and state, with an upstream gradient on the final state); 02.2 the checkpointed
# backward, whose stored states and allocated memory are checked. Both checked against
# float64 finite differences.
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

from mamba_from_scratch.grading import package_calls, python_lines
from mamba_from_scratch.scan import selective_scan_backward, selective_scan_forward

rng = np.random.default_rng(SEED)
_passed = {}                     # exercise id -> True once its check passed (read by the fallbacks)
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

# %% [markdown]
# ## 4. From the scalar adjoint to S6
#
# S6 is `n` such recurrences per channel, with
# `a_t = exp(Δ_t A)` (`deltaA`), `b_t = Δ_t B_t u_t` (`deltaB_u`), `c_t = C_t`, summed into
# `y_t = Σ_n C_t[n] h_t[n] + D u_t`. The adjoint is the same, and the chain rule through the
# discretization gives, with `dh` the adjoint and `h_prev = h_{t-1}`:
#
# | gradient | formula | why |
# |---|---|---|
# | `dh_t` | `C_t dy_t + deltaA_{t+1} dh_{t+1}`, starting from `dh_last` | the adjoint: `h_t` feeds `y_t` and `h_{t+1}` |
# | `d(deltaA)` | `dh * h_prev` | `∂L/∂a_t` above |
# | `ddelta` | `Σ_n d(deltaA) deltaA A + Σ_n dh B u` | `deltaA = exp(delta A)`, `deltaB_u = delta B u` |
# | `dA` | `Σ_t d(deltaA) deltaA delta` | `A` is shared by all steps: sum over t (and batch) |
# | `dB_t` | `Σ_d dh delta u` | `B_t` is shared by all channels: sum over d |
# | `dC_t` | `Σ_d dy h` | same |
# | `du` | `Σ_n dh delta B + D dy` | through `deltaB_u` and the skip |
# | `dD` | `Σ_t dy u` | summed over batch too |
# | `dh0` | `deltaA_1 dh_1` | the initial state feeds `h_1` |
#
# The forward pass that stores every state, vectorised over batch, channels and state as
# in lesson 01 (given; the backward is yours):

# %%
def s6_forward(u, delta, A, B, C, D, h0):
    """S6 forward that keeps every state for the backward.

    Args:
        u, delta: (b, l, d).  A: (d, n).  B, C: (b, l, n).  D: (d,).  h0: (b, d, n) initial state.
    Returns:
        y: (b, l, d).  hs: (b, l, d, n), hs[:, t] = h_{t+1} (the state after step t, 0-based).
    """
    b, l, d = u.shape
    hs = np.empty((b, l, d, A.shape[1]))
    h = h0
    for t in range(l):
        h = np.exp(delta[:, t, :, None] * A) * h + (delta[:, t] * u[:, t])[:, :, None] * B[:, t, None, :]
        hs[:, t] = h
    y = np.einsum("bldn,bln->bld", hs, C) + D * u
    return y, hs


def random_s6_problem(rng, b, l, d, n):
    """Float64 S6 inputs with an initial state, an upstream dy and an upstream dh_last."""
    u = rng.standard_normal((b, l, d))
    delta = np.log1p(np.exp(rng.standard_normal((b, l, d))))     # softplus: > 0
    A = -np.exp(rng.standard_normal((d, n)))
    B, C = rng.standard_normal((b, l, n)), rng.standard_normal((b, l, n))
    D = rng.standard_normal(d)
    h0 = rng.standard_normal((b, d, n))
    dy, dh_last = rng.standard_normal((b, l, d)), rng.standard_normal((b, d, n))
    return [u, delta, A, B, C, D, h0], dy, dh_last


def s6_fd_gradients(inputs, dy, dh_last, eps=1e-5):
    """Central differences of L = sum(dy * y) + sum(dh_last * h_l) for each of the 7 inputs."""
    def loss():
        y_, hs_ = s6_forward(*inputs)
        return float(np.sum(dy * y_) + np.sum(dh_last * hs_[:, -1]))
    return [numerical_grad(loss, x, eps) for x in inputs]


def grad_rel_error(analytic, numeric):
    """Largest entrywise relative error, floored at 1e-3 of the array's largest magnitude.

    A central difference has an absolute error floor (round-off, section 5), so an entry
    1e-8 times smaller than its neighbours has no meaningful relative error of its own.
    """
    mag = np.abs(analytic) + np.abs(numeric)
    return float(np.max(np.abs(analytic - numeric) / np.maximum(mag, 1e-3 * mag.max() + 1e-300)))

# %% [markdown]
# ### Exercise 02.1: the S6 backward, vectorised over batch, channels and state
#
# Write `s6_backward(dy, dh_last, u, delta, A, B, C, D, h0, hs)`: one loop over time, **from
# the last step to the first**, that carries the adjoint `dh` of shape `(b, d, n)` and
# fills every gradient of the table with whole-array operations (no loops over batch,
# channel or state). `dh_last` is the upstream gradient of the final state (when a long
# sequence is processed in pieces, the last state is itself an output; only the starting
# value of the adjoint changes).
#
# | code | shape | meaning |
# |---|---|---|
# | `dy` | `(b, l, d)` | `∂L/∂y` |
# | `dh_last` | `(b, d, n)` | `∂L/∂h_l` |
# | `hs` | `(b, l, d, n)` | the states from `s6_forward` |
# | returned | `du (b, l, d)`, `ddelta (b, l, d)`, `dA (d, n)`, `dB (b, l, n)`, `dC (b, l, n)`, `dD (d,)`, `dh0 (b, d, n)` | |
#
# The check compares every gradient with float64 central differences of
# `L = Σ dy·y + Σ dh_last·h_l` (relative error below `1e-6`) at tiny, *distinct* sizes
# (`b=2, l=5, d=3, n=4`), so a swapped axis fails loudly. It also checks the method: it counts
# the Python lines your function runs at two sizes with the same `l` (a loop over batch,
# channels or state runs more of them), and it rejects a call of the package's backward.

# %% tags=["solution"]
def s6_backward(dy, dh_last, u, delta, A, B, C, D, h0, hs):
    """Reverse-time adjoint of s6_forward.

    Args:
        dy: (b, l, d).  dh_last: (b, d, n).  u, delta: (b, l, d).  A: (d, n).  B, C: (b, l, n).
        D: (d,).  h0: (b, d, n).  hs: (b, l, d, n) the forward states.
    Returns:
        du, ddelta: (b, l, d).  dA: (d, n).  dB, dC: (b, l, n).  dD: (d,).  dh0: (b, d, n).
    """
    ### BEGIN SOLUTION
    b, l, d = u.shape
    du, ddelta = np.empty_like(u), np.empty_like(delta)
    dB, dC, dA = np.empty_like(B), np.empty_like(C), np.zeros_like(A)
    dh_next = dh_last.copy()                                            # deltaA_{t+1} dh_{t+1}; at t = l: dh_last
    for t in range(l - 1, -1, -1):
        h_prev = hs[:, t - 1] if t > 0 else h0                          # (b, d, n)
        deltaA = np.exp(delta[:, t, :, None] * A)                       # (b, d, n)
        dh = dy[:, t, :, None] * C[:, t, None, :] + dh_next             # (b, d, n)  the adjoint
        dC[:, t] = np.einsum("bd,bdn->bn", dy[:, t], hs[:, t])
        d_deltaA = dh * h_prev * deltaA                                 # d(deltaA) * deltaA
        dh_B = np.einsum("bdn,bn->bd", dh, B[:, t])                      # (b, d)  sum_n dh B
        ddelta[:, t] = (d_deltaA * A).sum(-1) + dh_B * u[:, t]
        dA += np.einsum("bdn,bd->dn", d_deltaA, delta[:, t])
        dB[:, t] = np.einsum("bdn,bd->bn", dh, delta[:, t] * u[:, t])
        du[:, t] = dh_B * delta[:, t]
        dh_next = deltaA * dh
    du += D * dy                                                        # the skip
    dD = np.einsum("bld,bld->d", dy, u)
    return du, ddelta, dA, dB, dC, dD, dh_next                          # after t = 0: dh0 = deltaA_1 dh_1
    ### END SOLUTION

# %% tags=["check", "points=5"]
_passed["02.1"] = False
GRAD_NAMES = ("du", "ddelta", "dA", "dB", "dC", "dD", "dh0")
chk_inputs, chk_dy, chk_dh_last = random_s6_problem(np.random.default_rng(21), 2, 5, 3, 4)
_, chk_hs = s6_forward(*chk_inputs)
got = s6_backward(chk_dy, chk_dh_last, *chk_inputs, chk_hs)
assert isinstance(got, (tuple, list)) and len(got) == 7, "return the 7 gradients du, ddelta, dA, dB, dC, dD, dh0"
for name, g_, x_, fd in zip(GRAD_NAMES, got, chk_inputs, s6_fd_gradients(chk_inputs, chk_dy, chk_dh_last)):
    assert np.shape(g_) == x_.shape, f"{name} must have shape {x_.shape}, got {np.shape(g_)}"
    err = grad_rel_error(np.asarray(g_), fd)
    assert err < 1e-6, f"{name}: relative error {err:.1e} against finite differences"
# The method: one loop over time, whole-array operations inside it. With l = 6 fixed, 60 times
# more (batch, channel, state) elements must not run more Python lines; no call of the package.
lines_at = {}
for size in ((1, 6, 1, 1), (3, 6, 4, 5)):
    m_inputs, m_dy, m_dh_last = random_s6_problem(np.random.default_rng(24), *size)
    _, lines_at[size] = python_lines(s6_backward, m_dy, m_dh_last, *m_inputs, s6_forward(*m_inputs)[1])
assert lines_at[(3, 6, 4, 5)] - lines_at[(1, 6, 1, 1)] < 6, \
    (f"{lines_at[(1, 6, 1, 1)]} Python lines at b = d = n = 1 but {lines_at[(3, 6, 4, 5)]} at b = 3, d = 4, n = 5: "
     "loop over time only, and vectorise over batch, channels and state")
assert not package_calls(s6_backward), f"write the adjoint yourself, without {package_calls(s6_backward)}"
### BEGIN HIDDEN TESTS
for seed, size in [(22, (1, 6, 2, 5)), (23, (3, 4, 5, 2))]:
    h_inputs, h_dy, h_dh_last = random_s6_problem(np.random.default_rng(seed), *size)
    _, h_hs = s6_forward(*h_inputs)
    got = s6_backward(h_dy, h_dh_last, *h_inputs, h_hs)
    for name, g_, x_, fd in zip(GRAD_NAMES, got, h_inputs, s6_fd_gradients(h_inputs, h_dy, h_dh_last)):
        assert np.shape(g_) == x_.shape and grad_rel_error(np.asarray(g_), fd) < 1e-6, f"{name} at size {size}"
### END HIDDEN TESTS
_passed["02.1"] = True
print("exercise 02.1 passed: all 7 gradients agree with finite differences")

# %% tags=["fallback"]
if not _passed["02.1"]:
    def s6_backward(dy, dh_last, u, delta, A, B, C, D, h0, hs):
        """The package's reference backward (numpy backend) in place of the exercise."""
        _, _, cache = selective_scan_forward(u, delta, A, B, C, D, h0=h0, backend="numpy")
        return selective_scan_backward(dy, cache, dh_last=dh_last)
    print("exercise 02.1 not solved yet: the rest of the lesson uses the package's backward")

# %% [markdown]
# ## 5. The package's backward, and how small ε should be
#
# `selective_scan_backward` does the same adjoint (and on the `"numba"` backend, compiled
# and with checkpoints). Compare yours with it on the check's problem (not graded):

# %%
_, _, cache = selective_scan_forward(*chk_inputs, backend="numpy")
package = selective_scan_backward(chk_dy, cache, dh_last=chk_dh_last)
mine = s6_backward(chk_dy, chk_dh_last, *chk_inputs, chk_hs)
for name, p_, m_ in zip(GRAD_NAMES, package, mine):
    print(f"{name:>7}: yours vs package, relative error {rel_error(p_, m_):.1e}")


def s6_loss():
    """L = sum(dy * y) + sum(dh_last * h_l) on the check's problem, through the given forward."""
    y_, hs_ = s6_forward(*chk_inputs)
    return float(np.sum(chk_dy * y_) + np.sum(chk_dh_last * hs_[:, -1]))

# %% [markdown]
# `Δ` enters through `exp(ΔA)`, so the central difference now has a truncation error: by
# Taylor, `(L(x+ε) - L(x-ε))/2ε = L'(x) + L'''(x) ε²/6 + …`. And each evaluation of `L` is
# rounded: in float64 the computed `L` is off by about `u_L = ε_mach · Σ_t |dy_t y_t|`
# (the sum of the magnitudes that cancel in `L`, `ε_mach = 2.2e-16`), so the difference is
# off by about `u_L / ε`. The plot shows the **largest relative** error over the entries of
# `ddelta`, so the round-off is divided by a typical gradient entry `g = median |∂L/∂Δ|`:
# the dotted line is `u_L / (ε · g)`, derived, with no fitted constant (the cell prints how
# far the measurement sits from it). The bare `1e-16 / ε` line that an earlier version of
# this lesson drew omits the factor `u_L / (g · 1e-16)`, which is about 70 here: that is why
# it sat two decades below the measurement.

# %%
eps_grid = 10.0 ** np.arange(-11, -0.5, 0.5)
ddelta_ref = package[1]
errs = np.array([rel_error(ddelta_ref, numerical_grad(s6_loss, chk_inputs[1], eps)) for eps in eps_grid])
y_chk, hs_chk = s6_forward(*chk_inputs)
u_L = np.finfo(float).eps * (np.abs(chk_dy * y_chk).sum() + np.abs(chk_dh_last * hs_chk[:, -1]).sum())
g_typ = np.median(np.abs(ddelta_ref))
roundoff = u_L / (eps_grid * g_typ)                                  # derived, no fitted constant
small = eps_grid < 1e-7                                              # where round-off dominates
ratio = np.exp(np.mean(np.log(errs[small] / roundoff[small])))       # geometric-mean gap on that side
print(f"u_L = {u_L:.1e}, median |ddelta| = {g_typ:.2f}: round-off ≈ {u_L / g_typ:.1e} / ε")
print(f"measured / derived round-off for ε < 1e-7: {ratio:.2f}x (geometric mean)")
fig, ax = plt.subplots(figsize=(6.5, 3.8))
ax.loglog(eps_grid, errs, "o-", label="measured: ddelta, package vs finite differences")
ax.loglog(eps_grid, roundoff, "k:", label="round-off ≈ ε_mach Σ|dy·y| / (ε · median|ddelta|)")
ax.loglog(eps_grid, eps_grid ** 2, "k--", label="truncation ~ ε²")
ax.axhline(1e-6, color="red", lw=0.8)
ax.text(2e-8, 1.5e-6, "test threshold 1e-6", color="red", fontsize=9)
ax.set_ylim(1e-12, 1e0)
ax.set_xlabel("finite-difference step ε")
ax.set_ylabel("largest relative error")
ax.set_title("Central differences: truncation vs round-off")
ax.legend(fontsize=8, loc="upper center")
plt.tight_layout()
plt.show()

# %% [markdown]
# The sweet spot is near `ε ≈ 1e-5`, the default of `numerical_grad` above, where the two
# errors meet; even there the error is `1e-9`-ish, not `1e-16`, which is why the checks
# ask for `1e-6`, not more.
#
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
# drops from `l` states to `l/K` checkpoints plus `K` states of the chunk being processed,
# for one extra forward pass. That is what the compiled backends do (with `K = 32`).
#
# ### Exercise 02.2: the checkpointed S6 backward
#
# Write `s6_backward_ckpt(dy, dh_last, u, delta, A, B, C, D, h0, K, checkpoints)`. It gets
# **no** stored states. It must
# 1. run the forward recurrence without storing its states, appending to the list
#    `checkpoints` the state entering each chunk: `h_0` (that is `h0`), `h_K`, `h_{2K}`, …
#    (`ceil(l/K)` arrays of shape `(b, d, n)`, no more);
# 2. walk the chunks from last to first: recompute the chunk's (at most `K`) states from its
#    checkpoint, and run your adjoint through them, carrying `dh` from chunk to chunk.
#
# Return the same 7 gradients as `s6_backward`. (Calling your `s6_forward` and
# `s6_backward` on one chunk at a time is a fine way to do step 2: the adjoint leaving a
# chunk is the `dh_last` of the chunk before it, and the partial gradients of `A` and `D`
# add up over chunks.) The check counts and verifies the checkpoints, compares every
# gradient with finite differences, and measures the memory your function allocates with
# `tracemalloc` at `l = 1024`: the peak must stay far below what storing all states takes.

# %% tags=["solution"]
def s6_backward_ckpt(dy, dh_last, u, delta, A, B, C, D, h0, K, checkpoints):
    """S6 backward from checkpoints every K steps instead of all states.

    Args:
        dy: (b, l, d).  dh_last: (b, d, n).  u, delta: (b, l, d).  A: (d, n).  B, C: (b, l, n).
        D: (d,).  h0: (b, d, n).  K: chunk length >= 1.
        checkpoints: an empty list; append to it the state entering each chunk, (b, d, n) each.
    Returns:
        du, ddelta: (b, l, d).  dA: (d, n).  dB, dC: (b, l, n).  dD: (d,).  dh0: (b, d, n).
    """
    ### BEGIN SOLUTION
    b, l, d = u.shape
    starts = list(range(0, l, K))
    h = h0
    for s in starts:                                                    # forward: keep chunk entries only
        checkpoints.append(h)
        for t in range(s, min(s + K, l)):
            h = np.exp(delta[:, t, :, None] * A) * h + (delta[:, t] * u[:, t])[:, :, None] * B[:, t, None, :]
    du, ddelta = np.empty_like(u), np.empty_like(delta)
    dB, dC = np.empty_like(B), np.empty_like(C)
    dA, dD = np.zeros_like(A), np.zeros_like(D)
    dh = dh_last
    for s, h_in in zip(reversed(starts), reversed(checkpoints)):
        e = min(s + K, l)
        chunk = [x[:, s:e] for x in (u, delta)] + [A] + [x[:, s:e] for x in (B, C)] + [D, h_in]
        _, hs_chunk = s6_forward(*chunk)                                # recompute at most K states
        g = s6_backward(dy[:, s:e], dh, *chunk, hs_chunk)
        du[:, s:e], ddelta[:, s:e], dB[:, s:e], dC[:, s:e] = g[0], g[1], g[3], g[4]
        dA += g[2]
        dD += g[5]
        dh = g[6]                                                       # the adjoint entering this chunk
    return du, ddelta, dA, dB, dC, dD, dh
    ### END SOLUTION

# %% tags=["check", "points=4"]
_passed["02.2"] = False
import tracemalloc


def run_ckpt(inputs, dy, dh_last, K):
    """Call the exercise with a fresh checkpoint list; returns (gradients, checkpoints)."""
    store = []
    grads = s6_backward_ckpt(dy, dh_last, *inputs, K, store)
    return grads, store


def check_checkpoints(store, inputs, K):
    """The list must hold exactly the states h_0, h_K, h_2K, ... of the forward pass."""
    l = inputs[0].shape[1]
    _, hs_ = s6_forward(*inputs)
    expected = [inputs[6]] + [hs_[:, t - 1] for t in range(K, l, K)]    # hs_[:, t-1] = h_t
    assert len(store) <= l / K + 1, f"K = {K}, l = {l}: stored {len(store)} states, at most l/K + 1 allowed"
    assert len(store) == len(expected), f"K = {K}, l = {l}: expected {len(expected)} checkpoints, got {len(store)}"
    for j, (h_s, h_e) in enumerate(zip(store, expected)):
        assert np.shape(h_s) == h_e.shape and np.allclose(h_s, h_e, rtol=1e-12, atol=1e-14), \
            f"checkpoint {j} must be the state h_{j * K}"


ck_inputs, ck_dy, ck_dh_last = random_s6_problem(np.random.default_rng(31), 2, 11, 3, 4)
ck_fd = s6_fd_gradients(ck_inputs, ck_dy, ck_dh_last)
grads, store = run_ckpt(ck_inputs, ck_dy, ck_dh_last, 4)
assert isinstance(grads, (tuple, list)) and len(grads) == 7, "return the 7 gradients du, ddelta, dA, dB, dC, dD, dh0"
for name, g_, x_, fd in zip(GRAD_NAMES, grads, ck_inputs, ck_fd):
    assert np.shape(g_) == x_.shape, f"{name} must have shape {x_.shape}, got {np.shape(g_)}"
    assert grad_rel_error(np.asarray(g_), fd) < 1e-6, f"K = 4: {name} disagrees with finite differences"
check_checkpoints(store, ck_inputs, 4)
assert not package_calls(s6_backward_ckpt, allowed={"s6_backward"}), \
    f"recompute the chunks with your own code, without {package_calls(s6_backward_ckpt, allowed={'s6_backward'})}"
# Memory, measured: at l = 1024 all states take b l d n 8 bytes = 1 MiB; the gradients themselves
# (du, ddelta, dB, dC, ...) take 0.56 MiB. Allow the outputs plus a third of what storing every
# state needs (0.33 MiB), room for the 32 checkpoints, a chunk's states and temporaries.
mem_inputs, mem_dy, mem_dh_last = random_s6_problem(np.random.default_rng(32), 1, 1024, 4, 32)
out_bytes = sum(x.nbytes for x in mem_inputs)                        # the 7 gradients have the inputs' shapes
all_states = mem_inputs[0].shape[1] * mem_inputs[6].nbytes
tracemalloc.start()
mem_grads, mem_store = run_ckpt(mem_inputs, mem_dy, mem_dh_last, 32)
_, peak = tracemalloc.get_traced_memory()
tracemalloc.stop()
extra = peak - out_bytes
print(f"peak allocation {peak / 2**20:.2f} MiB = outputs {out_bytes / 2**20:.2f} MiB + {extra / 2**20:.2f} MiB; "
      f"all states would be {all_states / 2**20:.2f} MiB")
assert extra < all_states / 3, f"the backward allocated {extra / 2**20:.2f} MiB beyond its outputs: it stores too many states"
check_checkpoints(mem_store, mem_inputs, 32)
mem_ref = s6_backward(mem_dy, mem_dh_last, *mem_inputs, s6_forward(*mem_inputs)[1])
for name, g_, r_ in zip(GRAD_NAMES, mem_grads, mem_ref):
    assert np.shape(g_) == np.shape(r_) and rel_error(np.asarray(g_), r_) < 1e-9, f"l = 1024, K = 32: {name} differs"
### BEGIN HIDDEN TESTS
for K in (1, 5, 11, 50):                                             # one step per chunk, uneven, one chunk, K > l
    grads, store = run_ckpt(ck_inputs, ck_dy, ck_dh_last, K)
    for name, g_, fd in zip(GRAD_NAMES, grads, ck_fd):
        assert grad_rel_error(np.asarray(g_), fd) < 1e-6, f"K = {K}: {name} disagrees with finite differences"
    check_checkpoints(store, ck_inputs, K)
### END HIDDEN TESTS
_passed["02.2"] = True
print("exercise 02.2 passed: checkpointed gradients are right and the memory is bounded")

# %% [markdown]
# The package's `"numba"` backend does the same with `K = 32` inside a compiled kernel
# (lesson 03), and `docs/benchmarks.md` reports its backward's memory next to what all
# states would take.
#
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
h0_d = np.zeros((1, d3, 1))
_, hs_d = s6_forward(u_d, delta_d, A_decay, B_d, C_d, np.zeros(d3), h0_d)
dy_d = np.zeros((1, L_DECAY, d3))
dy_d[0, -1] = 1.0                                           # only the last output matters
du_d = s6_backward(dy_d, np.zeros_like(h0_d), u_d, delta_d, A_decay, B_d, C_d, np.zeros(d3), h0_d, hs_d)[0][0]  # (l, d)
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
# ## Summary
# * The adjoint `δ_t = c_t g_t + a_{t+1} δ_{t+1}` runs the forward recurrence backwards
#   in time; every parameter gradient is then a local product with `δ_t`.
# * S6's backward is that adjoint plus the chain rule through `deltaA = exp(delta A)` and
#   `deltaB_u = delta B u`; shared parameters (`A`, `B_t`, `C_t`, `D`) sum over the axes
#   they are shared along. An upstream gradient on the final state only changes where the
#   adjoint starts.
# * Check gradients with float64 central differences, a random upstream gradient and tiny
#   distinct sizes; trust relative errors below `1e-6`. The round-off floor is
#   `ε_mach Σ|terms of L| / (ε |gradient|)`, not `1e-16/ε`.
# * The backward needs `h_{t-1}`: store it, or recompute it from checkpoints (memory
#   `l/K + K` states instead of `l`); never divide by `deltaA`.
#
# **Next:** lesson 03 compiles the forward with Numba.
