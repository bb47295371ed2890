# %% [markdown]
# # 06 · The Mamba block and the model
#
# **Goal.** Assemble the full model around the selective scan: `in_proj`, the causal
# convolution, `x_proj`, `dt_proj`, the gate, RMSNorm and residuals; understand the
# official initialization; check the whole model's hand-written backward by finite
# differences; and verify that the recurrent **step mode** gives the same outputs as the
# full forward while costing O(1) per token.
#
# **Prerequisites.** Lessons 01 and 02 (the scan and its backward). Linear layers and the
# chain rule.
#
# **Run time.** About 30 seconds (8 seconds with `LESSONS_FAST=1`).
#
# **You will use** `mamba_from_scratch.mixer.mixer_forward`, `mamba_from_scratch.model`
# (`MambaConfig`, `init_params`, `model_forward`, `model_backward`, `init_state`,
# `model_step`), `mamba_from_scratch.layers` and `mamba_from_scratch.gradcheck`.

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
from mamba_from_scratch.layers import conv1d_forward, softplus_forward
from mamba_from_scratch.mixer import mixer_forward
from mamba_from_scratch.model import (MambaConfig, init_params, init_state, layer_params, model_backward,
                                      model_forward, model_step)
from mamba_from_scratch.scan import selective_scan_forward

rng = np.random.default_rng(SEED)
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
# One sequence, float64, every step written out with plain NumPy (the scan from lesson 01
# is reused from the package). Then the package's `mixer_forward` must agree.

# %%
def silu(v):
    return v / (1 + np.exp(-v))


def mixer_naive(x, p):
    """The Mamba mixer for one sequence x: (l, d_model), parameters p as in the package."""
    l = x.shape[0]
    d_inner, n = p["A_log"].shape
    r = p["dt_proj.weight"].shape[1]
    k = p["conv1d.weight"].shape[-1]
    xz = x @ p["in_proj.weight"].T                           # (l, 2 d_inner)
    xi, z = xz[:, :d_inner], xz[:, d_inner:]                 # (l, d_inner) each
    xpad = np.vstack([np.zeros((k - 1, d_inner)), xi])       # left-pad: causal
    xc = np.array([p["conv1d.bias"] + np.sum(p["conv1d.weight"][:, 0, :].T * xpad[t:t + k], axis=0)
                   for t in range(l)])                       # (l, d_inner)
    xs = silu(xc)
    x_dbl = xs @ p["x_proj.weight"].T                        # (l, r + 2n)
    dt, B, C = x_dbl[:, :r], x_dbl[:, r:r + n], x_dbl[:, r + n:]
    delta = np.log1p(np.exp(dt @ p["dt_proj.weight"].T + p["dt_proj.bias"]))   # (l, d_inner)
    A = -np.exp(p["A_log"])                                  # (d_inner, n)
    y, _, _ = selective_scan_forward(xs[None], delta[None], A, B[None], C[None], p["D"], backend="numpy")
    return (y[0] * silu(z)) @ p["out_proj.weight"].T         # (l, d_model)


cfg = MambaConfig(d_model=8, n_layer=2, d_state=4, d_in=3, d_out=2)
params = init_params(cfg, np.random.default_rng(SEED), dtype=np.float64)
p0 = {k.split("mixer.")[1]: v for k, v in layer_params(params, 0).items() if "mixer." in k}
x = rng.standard_normal((2, 7, cfg.d_model))
out_pkg, _ = mixer_forward(x, p0, backend="numpy")
out_naive = np.stack([mixer_naive(x[i], p0) for i in range(2)])
assert np.allclose(out_pkg, out_naive, rtol=1e-10, atol=1e-12)
print("naive mixer == package mixer; max |diff| =", np.abs(out_pkg - out_naive).max())

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
# ### Exercise 1: the step-size bias
# Write `dt_bias_init(rng, d_inner, dt_min, dt_max, floor)`: draw `dt = exp(U[log dt_min,
# log dt_max])`, clamp it below at `floor`, and return the bias `b` with `softplus(b) = dt`,
# i.e. `b = dt + log(-expm1(-dt))`.

# %% tags=["exercise"]
def dt_bias_init(rng, d_inner, dt_min=1e-3, dt_max=1e-1, floor=1e-4):
    """The official dt_proj.bias initialization.

    Returns:
        bias: (d_inner,) with softplus(bias) log-uniform in [dt_min, dt_max].
    """
    raise NotImplementedError("Exercise 1: write dt_bias_init")

# %% tags=["solution"]
def dt_bias_init(rng, d_inner, dt_min=1e-3, dt_max=1e-1, floor=1e-4):
    """The official dt_proj.bias initialization (see the exercise)."""
    dt = np.exp(rng.uniform(np.log(dt_min), np.log(dt_max), size=d_inner))
    dt = np.maximum(dt, floor)
    return dt + np.log(-np.expm1(-dt))              # inverse softplus

# %% tags=["check"]
bias_chk = dt_bias_init(np.random.default_rng(3), 20_000)
dt_chk = softplus_forward(bias_chk)[0]
assert bias_chk.shape == (20_000,)
assert dt_chk.min() >= 1e-3 * (1 - 1e-9) and dt_chk.max() <= 1e-1 * (1 + 1e-9)
assert abs(np.mean(np.log10(dt_chk)) - (-2.0)) < 0.02, "log10(dt) must be uniform on [-3, -1]: mean -2"
assert abs(np.mean(np.log10(dt_chk) < -2.5) - 0.25) < 0.02, "a quarter of the channels below 10^-2.5"
print("exercise 1 passed: bias[:3] =", bias_chk[:3])

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
# ## 4. The whole model's gradient, checked
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
# ## 5. Step mode: one token at a time
#
# To generate, a Transformer re-reads its whole cache at every token. Mamba carries a
# fixed-size state per layer: the last `k - 1` conv inputs and the SSM state `h`
# (`d_inner × n`). `model_step` consumes one token and returns the output and the new state;
# run over a sequence it must reproduce `model_forward` exactly.
#
# ### Exercise 2: the convolution in step mode
# Write `conv_step(x_t, conv_state, weight, bias)`: `x_t` is one token `(b, d)`,
# `conv_state` the previous `k - 1` inputs `(b, k-1, d)`. Return the conv output for this
# token `(b, d)` and the new state (drop the oldest input, append `x_t`).

# %% tags=["exercise"]
def conv_step(x_t, conv_state, weight, bias):
    """One token of the causal depthwise conv.

    Args:
        x_t: (b, d).  conv_state: (b, k-1, d).  weight: (d, 1, k).  bias: (d,).
    Returns:
        out_t: (b, d), new_state: (b, k-1, d).
    """
    raise NotImplementedError("Exercise 2: write conv_step")

# %% tags=["solution"]
def conv_step(x_t, conv_state, weight, bias):
    """One token of the causal depthwise conv (see the exercise)."""
    window = np.concatenate([conv_state, x_t[:, None, :]], axis=1)     # (b, k, d): oldest first
    out_t = bias + np.einsum("bkd,dk->bd", window, weight[:, 0, :])    # (b, d)
    return out_t, window[:, 1:]

# %% tags=["check"]
w_c = rng.standard_normal((6, 1, 4))
b_c = rng.standard_normal(6)
seq = rng.standard_normal((2, 9, 6))
full, _ = conv1d_forward(seq, w_c, b_c)
state = np.zeros((2, 3, 6))
for t in range(9):
    out_t, state = conv_step(seq[:, t], state, w_c, b_c)
    assert np.allclose(out_t, full[:, t]), f"token {t} differs"
assert np.allclose(state, seq[:, -3:]), "the state must hold the last k-1 inputs"
print("exercise 2 passed: step-by-step conv == full conv")

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
    print(f"L = {L:4d}: step mode {t_step[-1] * 1e3:7.1f} ms   full forward per token {t_refeed[-1] * 1e3:8.1f} ms")

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
# token costs the same. Re-running the forward on every prefix grows faster, towards
# slope 2, since each call's cost grows with the prefix. (These are wall times on a shared
# machine, so single points can jump; the slopes are the message.)
#
# ## Summary
# * The block: `in_proj → conv → SiLU → x_proj → (dt_proj, softplus), B, C → scan → gate
#   → out_proj`; the model: pre-norm residual blocks between `read_in` and `norm_f,
#   read_out`.
# * The official init starts `A = -(1..n)` and `Δ` log-uniform in `[1e-3, 1e-1]`: many
#   time scales from the start.
# * Every gradient of the hand-written backward matches finite differences to `< 1e-6`.
# * Step mode carries `(conv window, h)` and reproduces the full forward exactly.
#
# **Next:** lesson 07, single-index models and why kernels need many samples.
