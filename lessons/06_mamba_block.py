# %% [markdown]
# # 06 · The Mamba block and the model
#
# **Goal.** Assemble the full model around the selective scan: `in_proj`, the causal
# convolution, `x_proj`, `dt_proj`, the gate, RMSNorm and residuals; understand the
# official initialization; write the backward passes of RMSNorm, of the causal convolution
# (with a carried state) and of the whole mixer, each checked by float64 finite
# differences; and verify that the recurrent **step mode** gives the same outputs as the
# full forward while costing O(1) per token.
#
# **Prerequisites.** Lessons 01 and 02 (the scan and its backward). Linear layers and the
# chain rule: for `Y = X Wᵀ`, `dX = dY W` and `dW = Σ_rows dYᵀ X`; a quantity used twice
# receives the sum of both gradients.
#
# **Run time.** About 10–25 seconds (measured 9.5 s at load average 6 and 26 s at load 8 on
# 2 cores; about 3 s of compute with `LESSONS_FAST=1`).
#
# **Exercises.** 06.1 the step-size bias of the official init; 06.2 the RMSNorm backward;
# 06.3 the causal depthwise conv backward, with a carried state; 06.4 the whole mixer's
# backward; 06.5 the convolution in step mode. The backwards are checked against float64
# central differences, the step mode against frozen outputs of the package
# (`lessons/_data/make_06.py`).
#
# **You will use** `mamba_from_scratch.models.mixer` (`mixer_forward`, `mixer_backward`),
# `mamba_from_scratch.models.mamba` (`MambaConfig`, `init_params`, `model_forward`, `model_backward`,
# `init_state`, `model_step`), `mamba_from_scratch.layers`, `selective_scan_forward` /
# `selective_scan_backward` and `mamba_from_scratch.gradcheck`.

# %% tags=["parameters"]
import os

FAST = os.environ.get("LESSONS_FAST", "0") == "1"  # CI sets LESSONS_FAST=1 to shrink every size
SEED = 0
GEN_LENGTHS = [4, 8, 16] if FAST else [8, 16, 32, 64, 128, 256]   # tokens generated in the timing
INIT_D_MODEL = 64 if FAST else 256                                # model width for the init picture

# %%
import time

import matplotlib.pyplot as plt
import numpy as np

from mamba_from_scratch.gradcheck import numerical_grad, rel_error
from mamba_from_scratch.grading import package_calls, python_lines
from mamba_from_scratch.layers import conv1d_backward, conv1d_forward, rmsnorm_forward, softplus_forward
from mamba_from_scratch.layers import rmsnorm_backward as rmsnorm_backward_pkg
from mamba_from_scratch.models.mamba import (
    MambaConfig,
    init_params,
    init_state,
    model_backward,
    model_forward,
    model_step,
)
from mamba_from_scratch.models.mixer import mixer_backward as package_mixer_backward
from mamba_from_scratch.models.mixer import mixer_forward
from mamba_from_scratch.params import sub_params
from mamba_from_scratch.scan import selective_scan_backward, selective_scan_forward

rng = np.random.default_rng(SEED)
_passed = {}                     # exercise id -> True once its check passed (read by the fallbacks)
REF = np.load("_data/06_conv.npz")   # frozen conv outputs of the package (lessons/_data/make_06.py)
plt.rcParams.update({"figure.dpi": 80, "axes.grid": True, "grid.alpha": 0.3})


# %% [markdown]
# ## 1. The block in words
#
# The scan mixes information **along time** within each channel; everything else in the
# block mixes **across channels** or adds a little local context:
#
# 1. `in_proj` widens each token from `d_model` to two streams of `d_inner = 2 d_model`:
#    `x` (goes through the SSM) and `z` (the gate).
# 2. A causal depthwise convolution of width 4 lets each channel see the last 3 tokens,
#    then SiLU.
# 3. `x_proj` reads from `x` the token-dependent SSM parameters: a low-rank `dt` (rank
#    `r = ceil(d_model/16)`), `B_t` and `C_t`; `dt_proj` expands `dt` to one step size per
#    channel, `Δ = softplus(dt_proj(dt))`.
# 4. The selective scan with `A = -exp(A_log)` and the skip `D`.
# 5. The gate `y · silu(z)`, then `out_proj` back to `d_model`.
#
# The model wraps blocks in pre-norm residuals: `h = h + mixer(rmsnorm(h))`, between a
# `read_in` and a final `norm_f` + `read_out` (a regressor, the shape in-context learning
# needs).
#
# | code | shape | meaning |
# |---|---|---|
# | `in_proj.weight` | `(2 d_inner, d_model)` | no bias |
# | `conv1d.weight`, `.bias` | `(d_inner, 1, k)`, `(d_inner,)` | depthwise, causal, `k = d_conv = 4` |
# | `x_proj.weight` | `(r + 2n, d_inner)` | gives `dt (r), B (n), C (n)` |
# | `dt_proj.weight`, `.bias` | `(d_inner, r)`, `(d_inner,)` | `Δ = softplus(W dt + bias)` |
# | `A_log`, `D` | `(d_inner, n)`, `(d_inner,)` | `A = -exp(A_log)` |
# | `out_proj.weight` | `(d_model, d_inner)` | no bias |
#
# ## 2. The smallest implementation
#
# Float64, every step written out with plain NumPy (the scan from lesson 01 is reused from
# the package). The forward keeps every intermediate in a `cache` dict, because the
# backward (exercise 06.4) needs them. Then the package's `mixer_forward` must agree.

# %%
def silu(v):
    """SiLU v * sigmoid(v), elementwise."""
    return v / (1 + np.exp(-v))


def causal_conv(x, weight, bias, conv_state=None):
    """Causal depthwise conv: out[:, t, c] = bias[c] + sum_j weight[c, 0, j] * xpad[:, t + j, c].

    Args:
        x: (b, l, d).  weight: (d, 1, k).  bias: (d,).
        conv_state: (b, k-1, d) the inputs just before x, or None for zeros.
    Returns:
        out: (b, l, d).
    """
    b, l, d = x.shape
    k = weight.shape[-1]
    if conv_state is None:
        conv_state = np.zeros((b, k - 1, d))
    xpad = np.concatenate([conv_state, x], axis=1)                          # (b, k-1+l, d): left-padded
    return bias + sum(weight[:, 0, j] * xpad[:, j:j + l] for j in range(k))


def mixer_forward_cached(x, p):
    """The Mamba mixer for a batch x: (b, l, d_model), parameters p as in the package.

    Returns:
        out: (b, l, d_model), cache: dict of the intermediates (and x, p) for the backward.
    """
    d_inner, n = p["A_log"].shape
    r = p["dt_proj.weight"].shape[1]
    xz = x @ p["in_proj.weight"].T                                          # (b, l, 2 d_inner)
    xi, z = xz[..., :d_inner], xz[..., d_inner:]                            # (b, l, d_inner) each
    xc = causal_conv(xi, p["conv1d.weight"], p["conv1d.bias"])              # (b, l, d_inner)
    xs = silu(xc)
    x_dbl = xs @ p["x_proj.weight"].T                                       # (b, l, r + 2n)
    dt, B, C = x_dbl[..., :r], x_dbl[..., r:r + n], x_dbl[..., r + n:]
    dtp = dt @ p["dt_proj.weight"].T + p["dt_proj.bias"]                    # (b, l, d_inner)
    delta = np.logaddexp(0.0, dtp)                                          # softplus
    A = -np.exp(p["A_log"])                                                 # (d_inner, n)
    y, _, scan_cache = selective_scan_forward(xs, delta, A, B, C, p["D"], backend="numpy")
    gate = silu(z)
    out = (y * gate) @ p["out_proj.weight"].T                               # (b, l, d_model)
    cache = dict(x=x, p=p, xi=xi, z=z, xc=xc, xs=xs, dt=dt, dtp=dtp, A=A, y=y, gate=gate, scan=scan_cache)
    return out, cache


cfg = MambaConfig(d_model=8, n_layer=2, d_state=4, d_in=3, d_out=2)
params = init_params(cfg, np.random.default_rng(SEED), dtype=np.float64)
p0 = sub_params(params, "layers.0.mixer.")
x = rng.standard_normal((2, 7, cfg.d_model))
out_pkg, _, _ = mixer_forward(x, p0, backend="numpy")
out_mine, _ = mixer_forward_cached(x, p0)
assert np.allclose(out_pkg, out_mine, rtol=1e-10, atol=1e-12)
print("mixer_forward_cached == package mixer; max |diff| =", np.abs(out_pkg - out_mine).max())

# %% [markdown]
# ## 3. The official initialization, and why
#
# * `A_log[d, :] = log(1, 2, …, n)`, so `A = -(1, …, n)` in every channel (from S4D-real):
#   each channel has state coordinates that decay at `n` different rates.
# * `Δ` starts **log-uniform in `[0.001, 0.1]`**: `dt_proj.bias = softplus⁻¹(dt)` with
#   `dt = exp(U[log 0.001, log 0.1])`. A channel with step `Δ` and `A = -1` remembers about
#   `1/Δ` tokens, so the channels start with memories from ~10 to ~1000 tokens: the model
#   does not have to discover long memory by training.
# * `D = 1` (the skip), norm weights 1, `out_proj` scaled by `1/√n_layer` so that the
#   residual stream's variance does not grow with depth. `A_log` and `D` get no weight decay.
#
# ### Exercise 06.1: the step-size bias
# Write `dt_bias_init(rng, d_inner, dt_min, dt_max, floor)`: draw `dt = exp(U[log dt_min,
# log dt_max])` (one `rng.uniform` call of size `d_inner`), clamp it below at `floor`, and
# return the bias `b` with `softplus(b) = dt`, i.e. `b = dt + log(-expm1(-dt))` (the inverse
# of softplus, written so that it stays accurate for tiny `dt`).

# %% tags=["solution"]
def dt_bias_init(rng, d_inner, dt_min=1e-3, dt_max=1e-1, floor=1e-4):
    """The official dt_proj.bias initialization.

    Args:
        rng: numpy Generator.  d_inner: number of channels.
        dt_min, dt_max: range of the log-uniform step sizes.  floor: smallest step size.
    Returns:
        bias: (d_inner,) with softplus(bias) = max(dt, floor), dt log-uniform in [dt_min, dt_max].
    """
    ### BEGIN SOLUTION
    dt = np.exp(rng.uniform(np.log(dt_min), np.log(dt_max), size=d_inner))
    dt = np.maximum(dt, floor)
    return dt + np.log(-np.expm1(-dt))              # inverse softplus
    ### END SOLUTION

# %% tags=["check", "points=1"]
_passed["06.1"] = False
bias_chk = np.asarray(dt_bias_init(np.random.default_rng(3), 20_000))
assert bias_chk.shape == (20_000,), f"one bias per channel: shape (20000,), got {bias_chk.shape}"
dt_chk = np.logaddexp(0.0, bias_chk)                 # softplus, in closed form
assert dt_chk.min() >= 1e-3 * (1 - 1e-9) and dt_chk.max() <= 1e-1 * (1 + 1e-9), "softplus(bias) in [dt_min, dt_max]"
assert abs(np.mean(np.log10(dt_chk)) - (-2.0)) < 0.02, "log10(dt) must be uniform on [-3, -1]: mean -2"
assert abs(np.mean(np.log10(dt_chk) < -2.5) - 0.25) < 0.02, "a quarter of the channels below 10^-2.5"
one = np.asarray(dt_bias_init(np.random.default_rng(4), 5, dt_min=0.01, dt_max=0.01))
assert one.shape == (5,) and np.allclose(one, 0.01 + np.log(-np.expm1(-0.01)), rtol=1e-12, atol=0), \
    "dt_min = dt_max = 0.01: every bias is softplus^-1(0.01) = 0.01 + log(1 - e^-0.01)"
assert not package_calls(dt_bias_init), f"draw the steps yourself, without {package_calls(dt_bias_init)}"
### BEGIN HIDDEN TESTS
low = np.asarray(dt_bias_init(np.random.default_rng(5), 7, dt_min=1e-6, dt_max=1e-5, floor=1e-4))
assert low.shape == (7,) and np.allclose(low, 1e-4 + np.log(-np.expm1(-1e-4)), rtol=1e-12, atol=0), \
    "every draw below the floor: the bias of dt = floor"
wide = np.asarray(dt_bias_init(np.random.default_rng(6), 20_000, dt_min=1e-4, dt_max=1.0, floor=0.0))
dt_w = np.log10(np.logaddexp(0.0, wide))
assert abs(dt_w.mean() - (-2.0)) < 0.03 and abs(dt_w.std() - 4 / np.sqrt(12)) < 0.03, "log-uniform on [-4, 0]"
### END HIDDEN TESTS
_passed["06.1"] = True
print("exercise 06.1 passed: bias[:3] =", bias_chk[:3])

# %% [markdown]
# The package's `init_params` does the same. The picture: how long each channel of a fresh
# model remembers, `1 / (Δ · |A|)` tokens, for its slowest (`A = -1`) and fastest
# (`A = -n`) state coordinate.

# %%
cfg_init = MambaConfig(d_model=INIT_D_MODEL, n_layer=1, d_in=1, d_out=1)
p_init = init_params(cfg_init, np.random.default_rng(SEED), dtype=np.float64)
delta0 = softplus_forward(p_init["layers.0.mixer.dt_proj.bias"])[0]       # (d_inner,) step sizes at init
A0 = -np.exp(p_init["layers.0.mixer.A_log"])                             # (d_inner, n)
assert np.allclose(A0[0], -np.arange(1, cfg_init.d_state + 1))
memory_slow = 1 / (delta0 * -A0[:, 0])
memory_fast = 1 / (delta0 * -A0[:, -1])
fig, ax = plt.subplots(figsize=(6.5, 3.6))
bins = np.logspace(-0.5, 3.2, 40)
ax.hist(memory_slow, bins=bins, alpha=0.7, label="slowest state (A = -1)")
ax.hist(memory_fast, bins=bins, alpha=0.7, label=f"fastest state (A = -{cfg_init.d_state})")
ax.set_xscale("log")
ax.set_xlabel("memory length 1 / (Δ |A|), in tokens")
ax.set_ylabel("channels")
ax.set_title(f"At initialization the {cfg_init.d_inner} channels span many time scales", fontsize=10)
ax.legend(fontsize=9)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 4. The backward passes, by hand
#
# Every layer of the block has a hand-written backward in the package. Here you write three
# of them, and each is checked the same way (cs231n's recipe, lesson 02): pick a random
# upstream gradient `dout`, define `L = Σ out · dout`, and compare your gradients with float64
# central differences of `L`, coordinate by coordinate (`numerical_grad`, relative error
# `rel_error` = max |a - b| / max(|a|, |b|)).

# %%
def fd_grads(f, arrays, eps=1e-6):
    """Central differences of the scalar f() with respect to each array (perturbed in place)."""
    return [numerical_grad(f, a, eps=eps) for a in arrays]


def assert_grads(got, expected, names, tol):
    """Each gradient must have the shape of its finite-difference estimate and agree to tol."""
    assert isinstance(got, (tuple, list)) and len(got) == len(expected), \
        f"return {len(expected)} gradients: {', '.join(names)}"
    for name, g_, fd in zip(names, got, expected):
        g_ = np.asarray(g_, dtype=float)
        assert g_.shape == fd.shape, f"{name} must have shape {fd.shape}, got {g_.shape}"
        err = rel_error(g_, fd)
        assert err < tol, f"{name}: relative error {err:.1e} against finite differences (need < {tol:g})"

# %% [markdown]
# ### Exercise 06.2: the RMSNorm backward
#
# RMSNorm (Zhang & Sennrich 2019) rescales each token to unit root-mean-square, then
# multiplies by a learned weight; no mean subtraction, no bias. For one token `x ∈ R^d`:
#
# $$r = \Big(\tfrac1d \textstyle\sum_i x_i^2 + \epsilon\Big)^{-1/2}, \qquad \hat x = r\,x, \qquad \text{out} = \hat x \odot w .$$
#
# | code | shape | meaning |
# |---|---|---|
# | `x` | `(..., d)` | tokens (any leading axes) |
# | `weight` | `(d,)` | `w` |
# | `dout` | `(..., d)` | `∂L/∂out` |
# | returned | `dx (..., d)`, `dweight (d,)` | |
#
# Hints: `∂r/∂x_i = -r³ x_i / d`; the weight is shared by every token, so its gradient sums
# over all leading axes. Write `rmsnorm_backward(dout, x, weight, eps)` (vectorised, no loops).

# %%
def rmsnorm(x, weight, eps=1e-5):
    """out = x / rms(x) * weight over the last axis.  x: (..., d), weight: (d,)."""
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight

# %% tags=["solution"]
def rmsnorm_backward(dout, x, weight, eps=1e-5):
    """Gradients of L = sum(dout * rmsnorm(x, weight, eps)).

    Args:
        dout: (..., d).  x: (..., d).  weight: (d,).  eps: the epsilon under the square root.
    Returns:
        dx: (..., d), dweight: (d,).
    """
    ### BEGIN SOLUTION
    d = x.shape[-1]
    r = 1.0 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)        # (..., 1)
    xhat = x * r
    dweight = (dout * xhat).reshape(-1, d).sum(0)                          # (d,)
    dxhat = dout * weight                                                  # (..., d)
    dx = r * (dxhat - xhat * np.mean(dxhat * xhat, axis=-1, keepdims=True))
    return dx, dweight
    ### END SOLUTION

# %% tags=["check", "points=2"]
_passed["06.2"] = False


def check_rmsnorm(seed, shape, eps, x_scale=1.0):
    """rmsnorm_backward against central differences at one shape and eps."""
    r_ = np.random.default_rng(seed)
    x_ = x_scale * r_.standard_normal(shape)
    w_ = r_.standard_normal(shape[-1])
    dout_ = r_.standard_normal(shape)
    got_ = rmsnorm_backward(dout_.copy(), x_.copy(), w_.copy(), eps)
    fd = fd_grads(lambda: float(np.sum(rmsnorm(x_, w_, eps) * dout_)), [x_, w_])
    assert_grads(got_, fd, ("dx", "dweight"), 1e-7)


check_rmsnorm(61, (2, 5, 6), 1e-5)
assert not package_calls(rmsnorm_backward), f"write the backward yourself, without {package_calls(rmsnorm_backward)}"
### BEGIN HIDDEN TESTS
check_rmsnorm(62, (3, 7), 0.5)                     # a large eps: where it sits matters
check_rmsnorm(63, (1, 2, 3, 4), 1e-5, x_scale=0.01)  # tiny tokens: eps is a large part of the rms
### END HIDDEN TESTS
_passed["06.2"] = True
print("exercise 06.2 passed: dx and dweight agree with finite differences")

# %% tags=["fallback"]
if not _passed["06.2"]:
    def rmsnorm_backward(dout, x, weight, eps=1e-5):
        """The package's RMSNorm backward in place of the exercise."""
        return rmsnorm_backward_pkg(dout, rmsnorm_forward(x, weight, eps)[1])
    print("exercise 06.2 not solved yet: the rest of the lesson uses the package's RMSNorm backward")

# %% [markdown]
# The package's `rmsnorm_backward` computes the same from the forward's cache (not graded):

# %%
x_n, w_n, dout_n = rng.standard_normal((2, 5, 6)), rng.standard_normal(6), rng.standard_normal((2, 5, 6))
_, cache_n = rmsnorm_forward(x_n, w_n)
for name, mine, pkg in zip(("dx", "dweight"), rmsnorm_backward(dout_n, x_n, w_n), rmsnorm_backward_pkg(dout_n, cache_n)):
    print(f"{name:>8}: yours vs package, relative error {rel_error(mine, pkg):.1e}")

# %% [markdown]
# ### Exercise 06.3: the causal convolution's backward, with a carried state
#
# `causal_conv` (section 2) computes, for each channel `c` and tap `j = 0..k-1`,
#
# $$\text{out}_{t,c} = \text{bias}_c + \sum_{j=0}^{k-1} w_{c,j}\, \text{xpad}_{t+j,c}, \qquad \text{xpad} = [\text{conv\_state};\, x] \text{ along time},$$
#
# where `conv_state` holds the `k - 1` inputs before `x` (zeros at the start of a sequence;
# the previous chunk's last inputs when a long sequence is processed in pieces, or in step
# mode). Each tap is a shifted elementwise product, so each tap's gradient is one too.
#
# | code | shape | meaning |
# |---|---|---|
# | `dout` | `(b, l, d)` | `∂L/∂out` |
# | `x` | `(b, l, d)` | the inputs |
# | `weight` | `(d, 1, k)` | depthwise taps (the official layout) |
# | `conv_state` | `(b, k-1, d)` or `None` | carried inputs (`None`: zeros) |
# | returned | `dx (b, l, d)`, `dweight (d, 1, k)`, `dbias (d,)`, `dconv_state (b, k-1, d)` | |
#
# Write `conv_backward(dout, x, weight, conv_state)`, with loops over the `k` taps at most
# (not over time). `dconv_state` is the gradient with respect to the carried inputs (for
# `None`, with respect to the zeros), so that a backward over a long sequence processed in
# pieces can hand it to the piece before. (The check counts the Python lines your function
# runs at two sizes with the same `k`: a loop over time, batch or channels runs more of them.)

# %% tags=["solution"]
def conv_backward(dout, x, weight, conv_state=None):
    """Gradients of L = sum(dout * causal_conv(x, weight, bias, conv_state)).

    Args:
        dout, x: (b, l, d).  weight: (d, 1, k).  conv_state: (b, k-1, d) or None (zeros).
    Returns:
        dx: (b, l, d), dweight: (d, 1, k), dbias: (d,), dconv_state: (b, k-1, d).
    """
    ### BEGIN SOLUTION
    b, l, d = x.shape
    k = weight.shape[-1]
    if conv_state is None:
        conv_state = np.zeros((b, k - 1, d))
    xpad = np.concatenate([conv_state, x], axis=1)                          # (b, k-1+l, d)
    dxpad = np.zeros_like(xpad)
    dweight = np.empty((d, 1, k))
    for j in range(k):                                                      # tap j reads xpad[:, j:j+l]
        dxpad[:, j:j + l] += weight[:, 0, j] * dout
        dweight[:, 0, j] = np.einsum("bld,bld->d", dout, xpad[:, j:j + l])
    return dxpad[:, k - 1:], dweight, dout.sum(axis=(0, 1)), dxpad[:, :k - 1]
    ### END SOLUTION

# %% tags=["check", "points=3"]
_passed["06.3"] = False
CONV_NAMES = ("dx", "dweight", "dbias", "dconv_state")


def check_conv(seed, b, l, d, k, with_state=True):
    """conv_backward against central differences of L = sum(dout * causal_conv(...))."""
    r_ = np.random.default_rng(seed)
    x_, w_, bias_ = r_.standard_normal((b, l, d)), r_.standard_normal((d, 1, k)), r_.standard_normal(d)
    st_ = r_.standard_normal((b, k - 1, d)) if with_state else np.zeros((b, k - 1, d))
    dout_ = r_.standard_normal((b, l, d))
    got_ = conv_backward(dout_.copy(), x_.copy(), w_.copy(), st_.copy() if with_state else None)
    fd = fd_grads(lambda: float(np.sum(causal_conv(x_, w_, bias_, st_) * dout_)), [x_, w_, bias_, st_])
    assert_grads(got_, fd, CONV_NAMES, 1e-8)


check_conv(64, 2, 9, 6, 4)
# The method: a loop over the k taps at most. 5 times more steps, 3 times more batch and 4 times
# more channels (same k = 4) must not run more Python lines; and no call of the package's conv.
lines_at = []
for b_, l_, d_ in ((1, 3, 1), (3, 15, 4)):
    r_ = np.random.default_rng(71)
    args_ = (r_.standard_normal((b_, l_, d_)), r_.standard_normal((b_, l_, d_)), r_.standard_normal((d_, 1, 4)),
             r_.standard_normal((b_, 3, d_)))
    lines_at.append(python_lines(conv_backward, *args_)[1])
assert lines_at[1] - lines_at[0] < 6, (f"{lines_at[0]} Python lines at b = 1, l = 3, d = 1 but {lines_at[1]} at b = 3, "
                                       "l = 15, d = 4: loop over the k taps only, not over time, batch or channels")
assert not package_calls(conv_backward), f"write the backward yourself, without {package_calls(conv_backward)}"
### BEGIN HIDDEN TESTS
check_conv(65, 3, 5, 2, 4, with_state=False)      # no carried state: the gradient of the zeros
check_conv(66, 1, 2, 3, 4)                        # l < k - 1: every output still sees the state
check_conv(67, 2, 6, 3, 2)                        # k = 2
### END HIDDEN TESTS
_passed["06.3"] = True
print("exercise 06.3 passed: dx, dweight, dbias and dconv_state agree with finite differences")

# %% tags=["fallback"]
if not _passed["06.3"]:
    def conv_backward(dout, x, weight, conv_state=None):
        """The package's conv1d backward in place of the exercise."""
        _, cache_c = conv1d_forward(x, weight, np.zeros(weight.shape[0]), conv_state)
        return conv1d_backward(dout, cache_c)
    print("exercise 06.3 not solved yet: the rest of the lesson uses the package's conv backward")

# %% [markdown]
# ### Exercise 06.4: the whole mixer's backward
#
# Now the mixer of section 2, read bottom to top. Write `mixer_backward(dout, cache)` with
# `cache` from `mixer_forward_cached`; it returns `dx` and a dict with the gradient of every
# parameter in `cache["p"]` (same keys, same shapes). You may call
# `selective_scan_backward(dy, cache["scan"])` (it returns `du, ddelta, dA, dB, dC, dD, dh0`,
# lesson 02) and your `conv_backward`; the rest is linear layers and activations:
#
# | forward | backward hint |
# |---|---|
# | `Y = X Wᵀ (+ bias)` | `dX = dY W`, `dW = Σ_{b,l} dYᵀ X`, `dbias = Σ_{b,l} dY` |
# | `silu(v) = v σ(v)` | `silu'(v) = σ(v) (1 + v (1 - σ(v)))` |
# | `softplus(v) = log(1 + eᵛ)` | `softplus'(v) = σ(v)` |
# | `A = -exp(A_log)` | `dA_log = dA ⊙ A` |
# | `x_dbl = [dt, B, C]`, `xz = [xi, z]` | concatenate the pieces' gradients |
# | `xs` feeds the scan (as `u`) **and** `x_proj` | add the two gradients |
#
# The check compares every gradient and `dx` with central differences of
# `L = Σ out · dout` (relative error below `1e-6`) at sizes where no two axes are equal, and
# rejects a call of the package's mixer or layer backwards (other than the scan's).

# %% tags=["solution"]
def mixer_backward(dout, cache):
    """Backward of mixer_forward_cached.

    Args:
        dout: (b, l, d_model) the gradient of L with respect to the mixer's output.
        cache: the dict returned by mixer_forward_cached.
    Returns:
        dx: (b, l, d_model), grads: dict with the keys of cache["p"], each of its parameter's shape.
    """
    ### BEGIN SOLUTION
    p = cache["p"]
    sig = lambda v: 1 / (1 + np.exp(-v))
    dsilu = lambda v: sig(v) * (1 + v * (1 - sig(v)))
    g = {}
    yg = cache["y"] * cache["gate"]                                          # (b, l, d_inner)
    g["out_proj.weight"] = np.einsum("blm,bli->mi", dout, yg)
    dyg = dout @ p["out_proj.weight"]                                        # (b, l, d_inner)
    dy = dyg * cache["gate"]
    dz = dyg * cache["y"] * dsilu(cache["z"])
    dxs, ddelta, dA, dB, dC, g["D"], _ = selective_scan_backward(dy, cache["scan"])
    g["A_log"] = dA * cache["A"]
    ddtp = ddelta * sig(cache["dtp"])                                        # softplus' = sigmoid
    g["dt_proj.weight"] = np.einsum("bli,blr->ir", ddtp, cache["dt"])
    g["dt_proj.bias"] = ddtp.sum(axis=(0, 1))
    ddt = ddtp @ p["dt_proj.weight"]                                         # (b, l, r)
    dx_dbl = np.concatenate([ddt, dB, dC], axis=-1)                          # (b, l, r + 2n)
    g["x_proj.weight"] = np.einsum("blj,bli->ji", dx_dbl, cache["xs"])
    dxs = dxs + dx_dbl @ p["x_proj.weight"]                                  # xs feeds the scan and x_proj
    dxc = dxs * dsilu(cache["xc"])
    dxi, g["conv1d.weight"], g["conv1d.bias"], _ = conv_backward(dxc, cache["xi"], p["conv1d.weight"])
    dxz = np.concatenate([dxi, dz], axis=-1)                                 # (b, l, 2 d_inner)
    g["in_proj.weight"] = np.einsum("blj,blm->jm", dxz, cache["x"])
    return dxz @ p["in_proj.weight"], g
    ### END SOLUTION

# %% tags=["check", "points=5"]
_passed["06.4"] = False


def mixer_problem(seed, d_model, d_state, b, l):
    """A tiny float64 mixer away from the init (every parameter ~ 0.5 N(0, 1)), an input and a dout."""
    r_ = np.random.default_rng(seed)
    cfg_ = MambaConfig(d_model=d_model, n_layer=1, d_state=d_state, d_in=1, d_out=1)
    full = init_params(cfg_, r_, dtype=np.float64)
    p_ = {k.split("mixer.")[1]: 0.5 * r_.standard_normal(v.shape) for k, v in full.items() if ".mixer." in k}
    return p_, r_.standard_normal((b, l, d_model)), r_.standard_normal((b, l, d_model))


def check_mixer(seed, d_model, d_state, b, l):
    """mixer_backward against central differences of L = sum(dout * mixer(x))."""
    p_, x_, dout_ = mixer_problem(seed, d_model, d_state, b, l)
    _, cache_ = mixer_forward_cached(x_.copy(), {k: v.copy() for k, v in p_.items()})
    got_ = mixer_backward(dout_.copy(), cache_)
    assert isinstance(got_, (tuple, list)) and len(got_) == 2, "return (dx, grads)"
    dx_, grads_ = got_
    assert isinstance(grads_, dict) and set(grads_) == set(p_), f"grads needs exactly the keys {sorted(p_)}"
    loss_ = lambda: float(np.sum(mixer_forward_cached(x_, p_)[0] * dout_))
    names = ["x"] + sorted(p_)
    fd = fd_grads(loss_, [x_] + [p_[k] for k in sorted(p_)], eps=1e-5)
    assert_grads([dx_] + [grads_[k] for k in sorted(p_)], fd, names, 1e-6)


check_mixer(68, 4, 3, 2, 5)                         # d_inner = 8, n = 3, r = 1
_allowed = {"selective_scan_backward", "conv_backward"}
assert not package_calls(mixer_backward, allowed=_allowed), \
    f"only selective_scan_backward and your conv_backward may be called, not {package_calls(mixer_backward, allowed=_allowed)}"
### BEGIN HIDDEN TESTS
check_mixer(69, 6, 2, 1, 7)                         # d_inner = 12, n = 2
check_mixer(70, 3, 5, 3, 2)                         # l = 2 < k - 1
### END HIDDEN TESTS
_passed["06.4"] = True
print("exercise 06.4 passed: dx and every parameter's gradient agree with finite differences")

# %% tags=["fallback"]
if not _passed["06.4"]:
    def mixer_backward(dout, cache):
        """The package's mixer backward (numpy backend) in place of the exercise."""
        _, _, cache_pkg = mixer_forward(cache["x"], cache["p"], backend="numpy")
        grads_, dx_, _ = package_mixer_backward(dout, cache_pkg)
        return dx_, grads_
    print("exercise 06.4 not solved yet: the rest of the lesson uses the package's mixer backward")

# %% [markdown]
# The package's `mixer_backward` is the same list read bottom to top, built from the
# layers' own backwards (and, on the compiled backends, fused kernels). Yours against it on
# section 2's mixer (not graded):

# %%
dout_m = rng.standard_normal(x.shape)
dx_mine, g_mine = mixer_backward(dout_m, mixer_forward_cached(x, p0)[1])
g_pkg, dx_pkg, _ = package_mixer_backward(dout_m, mixer_forward(x, p0, backend="numpy")[2])
print(f"{'dx':>16}: relative error {rel_error(dx_mine, dx_pkg):.1e}")
for name in sorted(g_pkg):
    print(f"{name:>16}: relative error {rel_error(g_mine[name], g_pkg[name]):.1e}")

# %% [markdown]
# ## 5. The whole model's gradient, checked
#
# `model_backward` is `model_forward` read in reverse: `read_out`, `norm_f`, then every
# block's residual, mixer (gate, scan, `dt_proj`, `x_proj`, conv, `in_proj`) and norm, down
# to `read_in`. We check **every** parameter of a tiny float64 model with central
# differences of `L = Σ out · dout` for a random `dout`, and the input too.
#
# One subtlety: at the official init `Δ` is 0.001 to 0.1, and the gradients that flow
# through it (`dt_proj`, `A_log`) are about `1e-4` of the loss, small enough for the
# round-off of `L` (lesson 02's V-curve) to be a visible fraction of them. A backward is
# correct or not wherever we evaluate it, so for the check we move away from the init:
# every parameter `~ 0.5 · N(0, 1)` (so `Δ ≈ softplus(0) ≈ 0.7`), and every path carries a
# gradient of order one.

# %%
params_chk = {name: 0.5 * rng.standard_normal(v.shape) for name, v in params.items()}
x_in = rng.standard_normal((2, 5, cfg.d_in))
dout = rng.standard_normal((2, 5, cfg.d_out))
out, cache = model_forward(params_chk, cfg, x_in, backend="numpy")
grads, dx = model_backward(dout, cache)


def loss():
    return float(np.sum(model_forward(params_chk, cfg, x_in, backend="numpy")[0] * dout))


worst = 0.0
for name in params_chk:
    err = rel_error(grads[name], numerical_grad(loss, params_chk[name], eps=1e-5))
    worst = max(worst, err)
    assert err < 1e-6, f"{name}: relative error {err:.1e}"
err_x = rel_error(dx, numerical_grad(loss, x_in, eps=1e-5))
assert err_x < 1e-6
print(f"{len(params)} parameter arrays ({sum(v.size for v in params.values())} numbers) and the input: "
      f"worst relative error {max(worst, err_x):.1e}")

# %% [markdown]
# ## 6. Step mode: one token at a time
#
# To generate, a Transformer re-reads its whole cache at every token. Mamba carries a
# fixed-size state per layer: the last `k - 1` conv inputs and the SSM state `h`
# (`d_inner × n`). `model_step` consumes one token and returns the output and the new state;
# run over a sequence it must reproduce `model_forward` exactly.
#
# ### Exercise 06.5: the convolution in step mode
# Write `conv_step(x_t, conv_state, weight, bias)`: `x_t` is one token `(b, d)`,
# `conv_state` the previous `k - 1` inputs `(b, k-1, d)`, oldest first. Return the conv output
# for this token `(b, d)` and the new state (drop the oldest input, append `x_t`). The check
# runs it token by token from a non-zero state and compares with frozen outputs of the
# package's full convolution.

# %% tags=["solution"]
def conv_step(x_t, conv_state, weight, bias):
    """One token of the causal depthwise conv.

    Args:
        x_t: (b, d).  conv_state: (b, k-1, d), oldest first.  weight: (d, 1, k).  bias: (d,).
    Returns:
        out_t: (b, d), new_state: (b, k-1, d).
    """
    ### BEGIN SOLUTION
    window = np.concatenate([conv_state, x_t[:, None, :]], axis=1)     # (b, k, d): oldest first
    out_t = bias + np.einsum("bkd,dk->bd", window, weight[:, 0, :])    # (b, d)
    return out_t, window[:, 1:]
    ### END SOLUTION

# %% tags=["check", "points=2"]
_passed["06.5"] = False


def check_conv_step(key):
    """Run conv_step over the frozen sequence `key`; every output and the last state must match."""
    seq, st = REF[f"{key}_x"], REF[f"{key}_state"].copy()
    for t in range(seq.shape[1]):
        res = conv_step(seq[:, t].copy(), st, REF[f"{key}_w"], REF[f"{key}_b"])
        assert isinstance(res, (tuple, list)) and len(res) == 2, "return (out_t, new_state)"
        out_t, st = (np.asarray(r_, dtype=float) for r_ in res)
        assert out_t.shape == seq[:, t].shape, f"out_t must have shape {seq[:, t].shape}, got {out_t.shape}"
        assert st.shape == REF[f"{key}_state"].shape, f"the state must keep shape {REF[f'{key}_state'].shape}"
        assert np.allclose(out_t, REF[f"{key}_out"][:, t], rtol=1e-12, atol=1e-12), f"token {t} differs"
    assert np.allclose(st, REF[f"{key}_last"], rtol=1e-12, atol=0), "the state must hold the last k-1 inputs"


check_conv_step("a")
assert not package_calls(conv_step), f"write the step yourself, without {package_calls(conv_step)}"
### BEGIN HIDDEN TESTS
check_conv_step("b")                                # k = 2, b = 1, d = 3
### END HIDDEN TESTS
_passed["06.5"] = True
print("exercise 06.5 passed: step-by-step conv == the package's full conv (frozen)")

# %%
state = init_state(cfg, 2, dtype=np.float64)
steps = []
for t in range(x_in.shape[1]):
    out_t, state = model_step(params_chk, cfg, x_in[:, t], state)
    steps.append(out_t)
assert np.allclose(np.stack(steps, axis=1), out, rtol=1e-10, atol=1e-12)
print("step mode == full forward; max |diff| =", np.abs(np.stack(steps, axis=1) - out).max())

# %% [markdown]
# What step mode buys: generating `L` tokens one by one costs `O(L)` steps of constant
# work. Without a state, each new token would need the full forward over the prefix again,
# `O(L²)` in total. We time both on a small float32 model.

# %%
cfg_t = MambaConfig(d_model=32, n_layer=2, d_in=4, d_out=4)
p_t = init_params(cfg_t, np.random.default_rng(SEED))
seq_t = rng.standard_normal((1, max(GEN_LENGTHS), 4)).astype(np.float32)
t_step, t_refeed = [], []
for L in GEN_LENGTHS:
    t0 = time.perf_counter()
    st = init_state(cfg_t, 1)
    for t in range(L):
        _, st = model_step(p_t, cfg_t, seq_t[:, t], st)
    t_step.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    for t in range(L):
        model_forward(p_t, cfg_t, seq_t[:, :t + 1], backend="numpy")
    t_refeed.append(time.perf_counter() - t0)
    print(f"L = {L:4d}: step mode {t_step[-1] * 1e3:7.1f} ms   full forward per token {t_refeed[-1] * 1e3:8.1f} ms"
          f"   (load average {os.getloadavg()[0]:.1f})")

fig, ax = plt.subplots(figsize=(6.5, 3.6))
ax.loglog(GEN_LENGTHS, np.array(t_step) * 1e3, "o-", label="model_step: carry the state, O(1) per token")
ax.loglog(GEN_LENGTHS, np.array(t_refeed) * 1e3, "s-", label="model_forward on the whole prefix per token")
ax.set_xlabel("tokens generated L")
ax.set_ylabel("total time (ms)")
ax.set_title("Generating a sequence: the recurrent state pays off as L grows", fontsize=10)
ax.legend(fontsize=9)
plt.tight_layout()
plt.show()

# %% [markdown]
# **Reading the figure.** Step mode grows about linearly (slope 1 on log-log axes): each
# token costs the same. Re-running the forward on every prefix grows faster, with a slope
# of 2 or more, since each call's cost grows with the prefix (`L²/2` token-steps in all).
# (These are wall times on a shared machine, with the load average printed beside them, so
# single points can jump; the slopes are the message.)
#
# ## Summary
# * The block: `in_proj → conv → SiLU → x_proj → (dt_proj, softplus), B, C → scan → gate
#   → out_proj`; the model: pre-norm residual blocks between `read_in` and `norm_f,
#   read_out`.
# * The official init starts `A = -(1..n)` and `Δ` log-uniform in `[1e-3, 1e-1]`: many
#   time scales from the start.
# * The backwards: RMSNorm `dx = r (dx̂ - x̂ mean(dx̂ ⊙ x̂))` with `dx̂ = dout ⊙ w`; the causal
#   conv, one shifted product per tap, whose carried state gets the gradient of the first
#   `k - 1` padded inputs; the mixer, the forward list read bottom to top, with `xs` (scan
#   input and `x_proj` input) collecting two gradients.
# * Every gradient of the hand-written backward matches finite differences to `< 1e-6`.
# * Step mode carries `(conv window, h)` and reproduces the full forward exactly.
#
# **Next:** lesson 07, single-index models and why kernels need many samples.
