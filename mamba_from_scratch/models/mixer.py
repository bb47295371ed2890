"""The Mamba mixer (the "Mamba block" of Gu & Dao 2023, Fig. 3): its NumPy definition.

Glossary (code symbol: meaning, shape):
    b: batch size          l: sequence length          d_model: residual width
    d_inner = expand * d_model                         n = d_state: SSM state size per channel
    r = dt_rank            k = d_conv
    xz: in_proj's output (b, l, 2 d_inner), split into
        x: the SSM branch (b, l, d_inner)      z: the gate branch (b, l, d_inner)
    x_conv = conv1d(x), causal and depthwise           (b, l, d_inner)
    u = silu(x_conv): the scan's input (the official code calls it x again)
    x_dbl = x_proj(u), split into dt (b, l, r), B (b, l, n), C (b, l, n)
    delta_pre = dt_proj(dt): the step size before its softplus    (b, l, d_inner)
    delta = softplus(delta_pre): the step size Δ       (b, l, d_inner)
    A = -exp(A_log): (d_inner, n)          D: the skip (d_inner,)
    y = selective_scan(u, delta, A, B, C, D)           (b, l, d_inner)
    gate = silu(z)         y_gated = y * gate          out = out_proj(y_gated)  (b, l, d_model)
    state: {"conv": the last k-1 conv inputs (b, k-1, d_inner), "h": the SSM state (b, d_inner, n)}
    A leading d means the gradient of the loss with respect to what follows (dx, ddelta).

Forward, line by line as the official ``mamba_simple.py`` (``slow_forward`` path):
    xz       = in_proj(x)                      (b, l, 2 d_inner)
    x, z     = split(xz)
    u        = silu(conv1d(x))                 causal, depthwise
    dt, B, C = split(x_proj(u))                (b, l, r), (b, l, n), (b, l, n)
    delta    = softplus(dt_proj(dt))           (b, l, d_inner)
    y        = selective_scan(u, delta, A, B, C, D)
    out      = out_proj(y * silu(z))           (b, l, d_model)
The backward is that list read bottom to top. Every step is a layer from ``layers/``.

Contract, as every model level (models/__init__.py): ``mixer_forward(x, p, state, ...) ->
(out, state, cache)`` returns the state after the last token explicitly, and
``mixer_backward(dout, cache, dh_last) -> (grads, dx, dh0)`` returns the gradients of
forward's inputs, parameters first. Parameters are a dict with the official names without
the ``layers.{i}.mixer.`` prefix (``in_proj.weight``, ``A_log``, ...).

The fast path, mixer_fused.py, computes the same with fused compiled kernels; the Mamba
block (models/mamba.py) runs this definition for ``backend="numpy"`` and the fused one for
a compiled backend. Official implementation: mamba_ssm/modules/mamba_simple.py.
Tests: tests/test_mixer.py.
"""
from __future__ import annotations

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
)
from ..scan import selective_scan_backward, selective_scan_forward


def split_state(state):
    """(conv, h) of a mixer state, or (None, None) for a sequence that starts here."""
    return (None, None) if state is None else (state["conv"], state["h"])


def final_state(xpad, h_last, k):
    """The state after the last token: the last k-1 conv inputs of the padded input
    xpad (b, k-1 + l, d_inner) (an explicit start: -(k-1) would be -0, i.e. all, for k = 1)
    and the scan's last h."""
    return {"conv": xpad[:, xpad.shape[1] - (k - 1):], "h": h_last}


def mixer_forward(x, p, state=None, backend="numpy", check=True):
    """Args:
        x: (b, l, d_model).  p: the mixer's parameters (dict).
        state: {"conv": (b, k-1, d_inner), "h": (b, d_inner, n)} before x, or None (zeros).
        backend: selective-scan backend.
        check: let the scan validate its inputs (the model passes False after checking the
            parameters and its input itself; see selective_scan_forward).
    Returns:
        out: (b, l, d_model), state: the same layout after the last token, cache.
    """
    d_inner, n = p["A_log"].shape
    r = p["dt_proj.weight"].shape[1]
    conv_state, h0 = split_state(state)
    c = {}
    xz, c["in_proj"] = linear_forward(x, p["in_proj.weight"])                          # (b, l, 2 d_inner)
    x, z = xz[..., :d_inner], xz[..., d_inner:]                                        # (b, l, d_inner) each
    x_conv, c["conv"] = conv1d_forward(x, p["conv1d.weight"], p["conv1d.bias"], conv_state)  # (b, l, d_inner)
    u, c["silu_x"] = silu_forward(x_conv)                                              # (b, l, d_inner)
    x_dbl, c["x_proj"] = linear_forward(u, p["x_proj.weight"])                         # (b, l, r + 2n)
    dt, B, C = x_dbl[..., :r], x_dbl[..., r:r + n], x_dbl[..., r + n:]                 # (b, l, r), (b, l, n) x 2
    delta_pre, c["dt_proj"] = linear_forward(dt, p["dt_proj.weight"], p["dt_proj.bias"])  # (b, l, d_inner)
    delta, c["softplus"] = softplus_forward(delta_pre)                                 # (b, l, d_inner)
    A = -np.exp(p["A_log"])                                                            # (d_inner, n)
    y, h_last, c["scan"] = selective_scan_forward(u, delta, A, B, C, p["D"], h0, backend=backend, check=check)
    gate, c["silu_z"] = silu_forward(z)                                                # (b, l, d_inner)
    y_gated = y * gate                                                                 # (b, l, d_inner)
    out, c["out_proj"] = linear_forward(y_gated, p["out_proj.weight"])                 # (b, l, d_model)
    c.update(y=y, gate=gate, A=A)
    xpad = c["conv"][0]                                                                # (b, k-1 + l, d_inner)
    return out, final_state(xpad, h_last, p["conv1d.weight"].shape[-1]), c


def mixer_backward(dout, c, dh_last=None):
    """The forward read bottom to top. With y_gated = y * silu(z), u = silu(x_conv):
        dy_gated = dout W_out                  dy = dy_gated * silu(z)
        dz = silu'(z) * dy_gated * y           du, ddelta, dA, dB, dC, dD, dh0 = scan backward
        dA_log = dA * A                        (A = -exp(A_log))
        d(dt) = softplus'(delta_pre) ddelta W_dt            d(x_dbl) = [d(dt), dB, dC]
        du += d(x_dbl) W_x                     (u feeds the scan and x_proj)
        dx = conv1d backward(silu'(x_conv) du)              dx_input = [dx, dz] W_in

    Args:
        dout: (b, l, d_model).  c: cache from :func:`mixer_forward`.
        dh_last: (b, d_inner, n) gradient of the final state's h, or None.
    Returns:
        grads: dict keyed like the parameters, dx: (b, l, d_model), dh0: (b, d_inner, n).
    """
    g = {}
    dy_gated, g["out_proj.weight"], _ = linear_backward(dout, c["out_proj"])           # (b, l, d_inner)
    b, l, d_inner = dy_gated.shape
    dxz = np.empty((b, l, 2 * d_inner), dy_gated.dtype)                                # d(in_proj output)
    dy = dy_gated * c["gate"]                                                          # (b, l, d_inner)
    dxz[..., d_inner:] = silu_backward(dy_gated * c["y"], c["silu_z"])                 # dz
    du, ddelta, dA, dB, dC, g["D"], dh0 = selective_scan_backward(dy, c["scan"], dh_last)
    g["A_log"] = dA * c["A"]                                                           # dA/dA_log = A
    ddelta_pre = softplus_backward(ddelta, c["softplus"])                              # (b, l, d_inner)
    ddt, g["dt_proj.weight"], g["dt_proj.bias"] = linear_backward(ddelta_pre, c["dt_proj"])  # (b, l, r)
    dx_dbl = np.concatenate([ddt, dB, dC], axis=-1)                                    # (b, l, r + 2n)
    du_proj, g["x_proj.weight"], _ = linear_backward(dx_dbl, c["x_proj"])              # (b, l, d_inner)
    du += du_proj                                                                      # u feeds the scan and x_proj
    dx_conv = silu_backward(du, c["silu_x"])                                           # (b, l, d_inner)
    dxz[..., :d_inner], g["conv1d.weight"], g["conv1d.bias"], _ = conv1d_backward(dx_conv, c["conv"])  # dx
    dx, g["in_proj.weight"], _ = linear_backward(dxz, c["in_proj"])                    # (b, l, d_model)
    return g, dx, dh0


def mixer_step(x_t, p, state):
    """One token of recurrent inference: the forward above for l = 1, the scan's recurrence
    written out for a single step.

    Args:
        x_t: (b, d_model).  state: {"conv": (b, k-1, d_inner), "h": (b, d_inner, n)}.
    Returns:
        out_t: (b, d_model), the new state (fresh arrays; the old state is not modified).
    """
    d_inner, n = p["A_log"].shape
    r = p["dt_proj.weight"].shape[1]
    xz = x_t @ p["in_proj.weight"].T                                                   # (b, 2 d_inner)
    x, z = xz[:, :d_inner], xz[:, d_inner:]                                            # (b, d_inner) each
    window = np.concatenate([state["conv"], x[:, None, :]], axis=1)                    # (b, k, d_inner)
    x_conv = np.einsum("bkd,dk->bd", window, p["conv1d.weight"][:, 0, :]) + p["conv1d.bias"]
    u = silu_forward(x_conv)[0]                                                        # (b, d_inner)
    x_dbl = u @ p["x_proj.weight"].T                                                   # (b, r + 2n)
    dt, B, C = x_dbl[:, :r], x_dbl[:, r:r + n], x_dbl[:, r + n:]
    delta = softplus_forward(dt @ p["dt_proj.weight"].T + p["dt_proj.bias"])[0]        # (b, d_inner)
    A = -np.exp(p["A_log"])                                                            # (d_inner, n)
    h = np.exp(delta[:, :, None] * A) * state["h"] + delta[:, :, None] * B[:, None, :] * u[:, :, None]
    y = np.einsum("bdn,bn->bd", h, C) + p["D"] * u                                     # (b, d_inner)
    out_t = (y * silu_forward(z)[0]) @ p["out_proj.weight"].T                          # (b, d_model)
    return out_t, {"conv": window[:, 1:], "h": h}
