"""The Mamba mixer's fast path: mixer.py's definition composed from fused compiled kernels.

Same signature, same arithmetic, same returns as :func:`models.mixer.mixer_forward` /
:func:`models.mixer.mixer_backward` (names as in that module's glossary); three steps of
the definition run as one kernel each from ``mixer_kernels.py``:
    u = silu(conv1d(x))                conv_silu_forward / silu_conv_backward
    delta = softplus(dt_proj(dt))      dt_softplus_forward / dt_softplus_backward
    y_gated = y * silu(z)              gate_forward / gate_backward
The backward kernels write straight into their consumers' buffers (dxz's two halves,
x_dbl's gradient) instead of returning arrays to copy. tests/test_mixer.py checks that this
composition equals the definition (float64 tightly, float32 to the kernels' tolerances).
Tests: tests/test_mixer.py, tests/test_mixer_kernels.py (the kernels alone).
"""
from __future__ import annotations

import numpy as np

from ..layers import linear_backward, linear_forward
from ..mixer_kernels import (
    conv_silu_forward,
    dt_softplus_backward,
    dt_softplus_forward,
    gate_backward,
    gate_forward,
    silu_conv_backward,
)
from ..scan import selective_scan_backward, selective_scan_forward
from .mixer import final_state, split_state


def mixer_forward(x, p, state=None, backend="numba", check=True):
    """:func:`models.mixer.mixer_forward` with fused kernels; ``backend`` is the scan's.

    Returns:
        out: (b, l, d_model), state after the last token, cache.
    """
    d_inner, n = p["A_log"].shape
    r = p["dt_proj.weight"].shape[1]
    conv_state, h0 = split_state(state)
    c = {}
    xz, c["in_proj"] = linear_forward(x, p["in_proj.weight"])                          # (b, l, 2 d_inner)
    u, c["conv"] = conv_silu_forward(xz[..., :d_inner], p["conv1d.weight"], p["conv1d.bias"], conv_state)
    x_dbl, c["x_proj"] = linear_forward(u, p["x_proj.weight"])                         # (b, l, r + 2n)
    B, C = x_dbl[..., r:r + n], x_dbl[..., r + n:]                                     # (b, l, n) each
    delta, c["dt_softplus"] = dt_softplus_forward(x_dbl, p["dt_proj.weight"], p["dt_proj.bias"])  # (b, l, d_inner)
    A = -np.exp(p["A_log"])                                                            # (d_inner, n)
    y, h_last, c["scan"] = selective_scan_forward(u, delta, A, B, C, p["D"], h0, backend=backend, check=check)
    y_gated, c["gate"] = gate_forward(y, xz)                                           # y * silu(z)
    out, c["out_proj"] = linear_forward(y_gated, p["out_proj.weight"])                 # (b, l, d_model)
    c["A"] = A
    xpad = c["conv"][0]                                                                # (b, k-1 + l, d_inner)
    return out, final_state(xpad, h_last, p["conv1d.weight"].shape[-1]), c


def mixer_backward(dout, c, dh_last=None):
    """:func:`models.mixer.mixer_backward` with fused kernels (its derivation).

    Returns:
        grads: dict keyed like the parameters, dx: (b, l, d_model), dh0: (b, d_inner, n).
    """
    g = {}
    dy_gated, g["out_proj.weight"], _ = linear_backward(dout, c["out_proj"])           # (b, l, d_inner)
    b, l, d_inner = dy_gated.shape
    dxz = np.empty((b, l, 2 * d_inner), dy_gated.dtype)                                # d(in_proj output)
    dy = gate_backward(dy_gated, c["gate"], dxz)                                       # also fills dxz's z half
    du, ddelta, dA, dB, dC, g["D"], dh0 = selective_scan_backward(dy, c["scan"], dh_last)
    g["A_log"] = dA * c["A"]                                                           # dA/dA_log = A
    n, r = dB.shape[-1], c["dt_softplus"][1].shape[1]
    dx_dbl = np.empty((b, l, r + 2 * n), dy_gated.dtype)                               # (b, l, r + 2n)
    dx_dbl[..., r:r + n], dx_dbl[..., r + n:] = dB, dC                                 # d(dt) by the kernel
    g["dt_proj.weight"], g["dt_proj.bias"] = dt_softplus_backward(ddelta, c["dt_softplus"], dx_dbl)
    du_proj, g["x_proj.weight"], _ = linear_backward(dx_dbl, c["x_proj"])              # (b, l, d_inner)
    # u feeds the scan and x_proj: the kernel adds du_proj to du and fills dxz's x half
    g["conv1d.weight"], g["conv1d.bias"], _ = silu_conv_backward(du, c["conv"], dxz, du_proj)
    dx, g["in_proj.weight"], _ = linear_backward(dxz, c["in_proj"])                    # (b, l, d_model)
    return g, dx, dh0
