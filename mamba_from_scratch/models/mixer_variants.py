"""The Mamba mixer with its selection or its gate removed, or its selection frozen: the ablations
of issue 14, as one NumPy definition with three switches.

The full mixer (models/mixer.py, glossary there) computes Δ_t, B_t, C_t from the token, which is
what paper 1 calls the selective gate, and multiplies its output by silu(z):
    xz = in_proj(x);  x, z = split(xz);  u = silu(conv1d(x))
    dt, B, C = split(x_proj(u));  delta = softplus(dt_proj(dt))
    y = selective_scan(u, delta, A, B, C, D);  out = out_proj(y * silu(z))
The switches change only the named lines:

selective=False: a linear time-invariant SSM (S4D-like; Gu et al. 2022)
    delta = softplus(dt_proj.bias)      (d_inner,)  one learned step per channel
    B, C                                (n,) each   learned constants, shared by the channels
                                                    as Mamba's B_t, C_t are
    There is nothing input-dependent left for x_proj and dt_proj.weight to produce, so the
    block has neither. The scan is the same kernel with delta, B and C broadcast over
    (b, l). Init: dt_proj.bias as the official one (softplus^-1 of dt in [dt_min, dt_max],
    log-uniform), B = 1 and C ~ N(0, 1) (S4D's choice of B = 1 and a normal C). Gradients:
    the sums over (b, l) of the broadcast ones.
gated=False: out = out_proj(y). in_proj then produces only x: its weight is (d_inner, d_model).
freeze=True: evaluation-time ablation. Δ_t, B_t and C_t are replaced by their means over the
    sequence, one mean per sequence (and per channel for Δ):
        delta_t <- mean_s delta_s,   B_t <- mean_s B_s,   C_t <- mean_s C_s
    The backward is exact. Each delta_s contributes 1/l to every frozen delta_t, so
    ddelta_s = mean_t ddelta_frozen_t (the same for B and C). For a non-selective mixer the
    means are the constants themselves, so freezing changes nothing beyond rounding.

With selective=True, gated=True, freeze=False this is mixer.py's definition, line for line
(tests/test_models_ablations.py checks that they agree). The full Mamba keeps its own
modules (mixer.py, mixer_fused.py), untouched. The ablations run this NumPy definition
around the package's compiled scan (``backend``). The elementwise layers are NumPy, not the
fused kernels; the results page gives the measured step time.

Contract, as mixer.py: ``mixer_forward(x, p, state, backend, check, *, selective, gated,
freeze) -> (out, state, cache)``, ``mixer_backward(dout, cache, dh_last) -> (grads, dx,
dh0)``, ``mixer_step(x_t, p, state, *, selective, gated) -> (out_t, state)``. The state
layout is the full mixer's: {"conv": (b, k-1, d_inner), "h": (b, d_inner, n)}.
Tests: tests/test_models_ablations.py.
"""
from __future__ import annotations

import math

import numpy as np

from ..layers import (
    conv1d_backward,
    conv1d_forward,
    linear_backward,
    linear_forward,
    silu_backward,
    silu_forward,
    softplus_backward,
    softplus_forward,
    softplus_inverse,
)
from ..scan import selective_scan_backward, selective_scan_forward
from .mixer import final_state, split_state


def param_shapes(cfg, selective=True, gated=True) -> dict:
    """The mixer's parameters (without ``mixer.``) for these switches, in the official layouts."""
    di, n, r, k = cfg.d_inner, cfg.d_state, cfg.dt_rank, cfg.d_conv
    shapes = {"in_proj.weight": ((2 if gated else 1) * di, cfg.d_model),
              "conv1d.weight": (di, 1, k),
              "conv1d.bias": (di,)}
    if selective:
        shapes.update({"x_proj.weight": (r + 2 * n, di), "dt_proj.weight": (di, r)})
    else:
        shapes.update({"B": (n,), "C": (n,)})
    shapes.update({"dt_proj.bias": (di,), "A_log": (di, n), "D": (di,), "out_proj.weight": (cfg.d_model, di)})
    return shapes


def init(cfg, rng, selective=True, gated=True) -> dict:
    """The official initialization (models/mamba.py's block_init) of the parameters that remain;
    B = 1 and C ~ N(0, 1) for the non-selective mixer (S4D). Draws in the order of param_shapes."""
    def uniform(shape, bound):
        return rng.uniform(-bound, bound, size=shape)

    di, n, r, k = cfg.d_inner, cfg.d_state, cfg.dt_rank, cfg.d_conv
    p = {"in_proj.weight": uniform(((2 if gated else 1) * di, cfg.d_model), cfg.d_model ** -0.5),
         "conv1d.weight": uniform((di, 1, k), k ** -0.5),
         "conv1d.bias": uniform((di,), k ** -0.5)}
    if selective:
        p["x_proj.weight"] = uniform((r + 2 * n, di), di ** -0.5)
        p["dt_proj.weight"] = uniform((di, r), r ** -0.5)
    else:
        p["B"] = np.ones(n)
        p["C"] = rng.normal(size=n)
    dt = np.maximum(np.exp(rng.uniform(math.log(cfg.dt_min), math.log(cfg.dt_max), size=di)), cfg.dt_init_floor)
    p["dt_proj.bias"] = softplus_inverse(dt)
    p["A_log"] = np.log(np.tile(np.arange(1, n + 1, dtype=np.float64), (di, 1)))
    p["D"] = np.ones(di)
    p["out_proj.weight"] = uniform((cfg.d_model, di), di ** -0.5) / math.sqrt(cfg.n_layer)
    return p


def _freeze(a):
    """a (b, l, m) -> its mean over l, broadcast back to (b, l, m) (a fresh contiguous array)."""
    return np.ascontiguousarray(np.broadcast_to(a.mean(axis=1, keepdims=True), a.shape))


def _unfreeze_grad(da):
    """The gradient through _freeze: every position gets the mean over l of the upstream one."""
    return np.broadcast_to(da.mean(axis=1, keepdims=True), da.shape)


def mixer_forward(x, p, state=None, backend="numpy", check=True, *, selective=True, gated=True, freeze=False):
    """Args:
        x: (b, l, d_model).  p: the mixer's parameters (param_shapes' keys for these switches).
        state: {"conv": (b, k-1, d_inner), "h": (b, d_inner, n)} before x, or None (zeros).
        backend: the selective scan's backend.  check: let the scan validate its inputs.
        selective, gated, freeze: the switches of the module docstring.
    Returns:
        out: (b, l, d_model), state after the last token, cache.
    """
    d_inner, n = p["A_log"].shape
    conv_state, h0 = split_state(state)
    c = {"selective": selective, "gated": gated, "freeze": freeze}
    xz, c["in_proj"] = linear_forward(x, p["in_proj.weight"])                          # (b, l, (1|2) d_inner)
    x = xz[..., :d_inner]                                                              # (b, l, d_inner)
    b, l = x.shape[:2]
    x_conv, c["conv"] = conv1d_forward(x, p["conv1d.weight"], p["conv1d.bias"], conv_state)  # (b, l, d_inner)
    u, c["silu_x"] = silu_forward(x_conv)                                              # (b, l, d_inner)
    if selective:
        r = p["dt_proj.weight"].shape[1]
        x_dbl, c["x_proj"] = linear_forward(u, p["x_proj.weight"])                     # (b, l, r + 2n)
        dt, B, C = x_dbl[..., :r], x_dbl[..., r:r + n], x_dbl[..., r + n:]             # (b, l, r), (b, l, n) x 2
        delta_pre, c["dt_proj"] = linear_forward(dt, p["dt_proj.weight"], p["dt_proj.bias"])  # (b, l, d_inner)
    else:
        delta_pre = np.broadcast_to(p["dt_proj.bias"], (b, l, d_inner))                # one step per channel
        B = np.broadcast_to(p["B"], (b, l, n))                                         # (b, l, n), constant
        C = np.broadcast_to(p["C"], (b, l, n))
    delta, c["softplus"] = softplus_forward(delta_pre)                                 # (b, l, d_inner)
    if freeze:
        delta, B, C = _freeze(delta), _freeze(B), _freeze(C)
    A = -np.exp(p["A_log"])                                                            # (d_inner, n)
    y, h_last, c["scan"] = selective_scan_forward(u, delta, A, B, C, p["D"], h0, backend=backend, check=check)
    if gated:
        gate, c["silu_z"] = silu_forward(xz[..., d_inner:])                            # (b, l, d_inner)
        c.update(y=y, gate=gate)
        y = y * gate                                                                   # (b, l, d_inner)
    out, c["out_proj"] = linear_forward(y, p["out_proj.weight"])                       # (b, l, d_model)
    c["A"] = A
    xpad = c["conv"][0]                                                                # (b, k-1 + l, d_inner)
    return out, final_state(xpad, h_last, p["conv1d.weight"].shape[-1]), c


def mixer_backward(dout, c, dh_last=None):
    """mixer.py's backward (its derivation), with the switches':
        non-selective: ddt_proj.bias = sum_{b,l} ddelta_pre, dB = sum_{b,l} dB_t, dC likewise
        no gate:       dy = dy_gated (no dz; in_proj has only the x half)
        frozen:        ddelta_t, dB_t, dC_t <- their means over l (see _unfreeze_grad)

    Returns:
        grads: dict keyed like the parameters, dx: (b, l, d_model), dh0: (b, d_inner, n).
    """
    g = {}
    dy, g["out_proj.weight"], _ = linear_backward(dout, c["out_proj"])                 # (b, l, d_inner)
    b, l, d_inner = dy.shape
    dxz = np.empty((b, l, (2 if c["gated"] else 1) * d_inner), dy.dtype)               # d(in_proj output)
    if c["gated"]:
        dxz[..., d_inner:] = silu_backward(dy * c["y"], c["silu_z"])                   # dz
        dy = dy * c["gate"]
    du, ddelta, dA, dB, dC, g["D"], dh0 = selective_scan_backward(dy, c["scan"], dh_last)
    if c["freeze"]:
        ddelta, dB, dC = _unfreeze_grad(ddelta), _unfreeze_grad(dB), _unfreeze_grad(dC)
    g["A_log"] = dA * c["A"]                                                           # dA/dA_log = A
    ddelta_pre = softplus_backward(ddelta, c["softplus"])                              # (b, l, d_inner)
    if c["selective"]:
        ddt, g["dt_proj.weight"], g["dt_proj.bias"] = linear_backward(ddelta_pre, c["dt_proj"])  # (b, l, r)
        dx_dbl = np.concatenate([ddt, dB, dC], axis=-1)                                # (b, l, r + 2n)
        du_proj, g["x_proj.weight"], _ = linear_backward(dx_dbl, c["x_proj"])          # (b, l, d_inner)
        du += du_proj                                                                  # u feeds the scan and x_proj
    else:
        g["dt_proj.bias"] = ddelta_pre.sum(axis=(0, 1))                                # (d_inner,)
        g["B"], g["C"] = dB.sum(axis=(0, 1)), dC.sum(axis=(0, 1))                      # (n,) each
    dx_conv = silu_backward(du, c["silu_x"])                                           # (b, l, d_inner)
    dxz[..., :d_inner], g["conv1d.weight"], g["conv1d.bias"], _ = conv1d_backward(dx_conv, c["conv"])  # dx
    dx, g["in_proj.weight"], _ = linear_backward(dxz, c["in_proj"])                    # (b, l, d_model)
    return g, dx, dh0


def mixer_step(x_t, p, state, *, selective=True, gated=True):
    """One token of recurrent inference (no freeze: a mean over the sequence is not causal).

    Args:
        x_t: (b, d_model).  state: {"conv": (b, k-1, d_inner), "h": (b, d_inner, n)}.
    Returns:
        out_t: (b, d_model), the new state (fresh arrays; the old state is not modified).
    """
    d_inner, n = p["A_log"].shape
    xz = x_t @ p["in_proj.weight"].T                                                   # (b, (1|2) d_inner)
    x = xz[:, :d_inner]                                                                # (b, d_inner)
    window = np.concatenate([state["conv"], x[:, None, :]], axis=1)                    # (b, k, d_inner)
    x_conv = np.einsum("bkd,dk->bd", window, p["conv1d.weight"][:, 0, :]) + p["conv1d.bias"]
    u = silu_forward(x_conv)[0]                                                        # (b, d_inner)
    if selective:
        r = p["dt_proj.weight"].shape[1]
        x_dbl = u @ p["x_proj.weight"].T                                               # (b, r + 2n)
        dt, B, C = x_dbl[:, :r], x_dbl[:, r:r + n], x_dbl[:, r + n:]
        delta = softplus_forward(dt @ p["dt_proj.weight"].T + p["dt_proj.bias"])[0]    # (b, d_inner)
    else:
        B, C = np.broadcast_to(p["B"], (x_t.shape[0], n)), np.broadcast_to(p["C"], (x_t.shape[0], n))
        delta = np.broadcast_to(softplus_forward(p["dt_proj.bias"])[0], (x_t.shape[0], d_inner))
    A = -np.exp(p["A_log"])                                                            # (d_inner, n)
    h = np.exp(delta[:, :, None] * A) * state["h"] + delta[:, :, None] * B[:, None, :] * u[:, :, None]
    y = np.einsum("bdn,bn->bd", h, C) + p["D"] * u                                     # (b, d_inner)
    if gated:
        y = y * silu_forward(xz[:, d_inner:])[0]
    return y @ p["out_proj.weight"].T, {"conv": window[:, 1:], "h": h}
