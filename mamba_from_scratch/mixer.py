"""The Mamba mixer (the "Mamba block" of Gu & Dao 2023, Fig. 3), forward and backward.

Glossary:
    b: batch size           l: sequence length         d_model: residual width
    d_inner = expand * d_model                         n = d_state: SSM state size
    r = dt_rank             k = d_conv
    delta: step size (softplus of dt_proj's output)    A = -exp(A_log): (d_inner, n)

Forward, line by line as in the official ``mamba_simple.py`` (``slow_forward`` path):
    xz       = in_proj(x)                      (b, l, 2 d_inner)
    x, z     = split(xz)
    x        = silu(conv1d(x))                 causal, depthwise
    dt, B, C = split(x_proj(x))                (b, l, r), (b, l, n), (b, l, n)
    delta    = softplus(dt_proj(dt))           (b, l, d_inner)
    y        = selective_scan(x, delta, A, B, C, D)
    out      = out_proj(y * silu(z))           (b, l, d_model)
The backward is that list read bottom to top. Parameters are a dict with the official
names without the ``layers.{i}.mixer.`` prefix (``in_proj.weight``, ``A_log``, ...).

With ``backend="numpy"`` every step is a NumPy layer from ``layers/`` (the readable
definition). With a compiled backend, conv + SiLU, dt_proj + softplus and the gate run as
fused kernels from ``mixer_kernels.py`` (same arithmetic, one pass each instead of several).
Official implementation: mamba_ssm/modules/mamba_simple.py.
"""
from __future__ import annotations

import numpy as np

from .layers import (conv1d_backward, conv1d_forward, linear_backward, linear_forward, silu_backward,
                     silu_forward, softplus_backward, softplus_forward)
from .mixer_kernels import (conv_silu_forward, dt_softplus_backward, dt_softplus_forward, gate_backward, gate_forward,
                            silu_conv_backward)
from .scan import resolve_backend, selective_scan_backward, selective_scan_forward


def mixer_forward(x, p, backend="numba", conv_state=None, h0=None, check=True):
    """Args:
        x: (b, l, d_model).  p: the mixer's parameters (dict).
        backend: selective-scan backend.
        conv_state: (b, k-1, d_inner) inputs preceding x, or None.  h0: (b, d_inner, n) or None.
        check: let the scan validate its inputs. :func:`model.model_forward` passes False
            after checking the parameters and x itself (see selective_scan_forward).
    Returns:
        out: (b, l, d_model), cache. ``cache["h_last"]`` and ``cache["conv_state"]`` continue
        the sequence.
    """
    d_inner = p["D"].shape[0]
    n = p["A_log"].shape[1]
    rank = p["dt_proj.weight"].shape[1]
    fused = resolve_backend(backend) != "numpy"
    c = {"fused": fused}
    xz, c["in_proj"] = linear_forward(x, p["in_proj.weight"])                          # (b, l, 2 d_inner)
    xi, z = xz[..., :d_inner], xz[..., d_inner:]                                       # (b, l, d_inner) each
    if fused:
        xs, c["conv"] = conv_silu_forward(xi, p["conv1d.weight"], p["conv1d.bias"], conv_state)
    else:
        xc, c["conv"] = conv1d_forward(xi, p["conv1d.weight"], p["conv1d.bias"], conv_state)
        xs, c["silu_x"] = silu_forward(xc)                                             # (b, l, d_inner)
    x_dbl, c["x_proj"] = linear_forward(xs, p["x_proj.weight"])                        # (b, l, r + 2n)
    dt, B, C = x_dbl[..., :rank], x_dbl[..., rank:rank + n], x_dbl[..., rank + n:]
    if fused:
        delta, c["dt_softplus"] = dt_softplus_forward(x_dbl, p["dt_proj.weight"], p["dt_proj.bias"])
    else:
        dtp, c["dt_proj"] = linear_forward(dt, p["dt_proj.weight"], p["dt_proj.bias"])  # (b, l, d_inner)
        delta, c["softplus"] = softplus_forward(dtp)                                   # (b, l, d_inner)
    A = -np.exp(p["A_log"])                                                            # (d_inner, n)
    y, h_last, c["scan"] = selective_scan_forward(xs, delta, A, B, C, p["D"], h0, backend=backend,
                                                check=check)
    if fused:
        yg, c["gate"] = gate_forward(y, xz)                                            # y * silu(z)
    else:
        gate, c["silu_z"] = silu_forward(z)                                            # (b, l, d_inner)
        yg = y * gate
        c.update(y=y, gate=gate)
    out, c["out_proj"] = linear_forward(yg, p["out_proj.weight"])                      # (b, l, d_model)
    xpad = c["conv"][0]                                                                # (b, k-1 + l, d_inner)
    # The last k-1 conv inputs (an explicit start: -(k-1) would be -0, i.e. all, for k = 1).
    c.update(A=A, h_last=h_last, conv_state=xpad[:, xpad.shape[1] - (p["conv1d.weight"].shape[-1] - 1):])
    return out, c


def mixer_backward(dout, c, dh_last=None):
    """Args:
        dout: (b, l, d_model).  c: cache from :func:`mixer_forward`.
        dh_last: (b, d_inner, n) gradient of the final state, or None.
    Returns:
        dx: (b, l, d_model), grads: dict keyed like the parameters, dh0: (b, d_inner, n).
    """
    g = {}
    dyg, g["out_proj.weight"], _ = linear_backward(dout, c["out_proj"])                # (b, l, d_inner)
    b, l, d_inner = dyg.shape
    dxz = np.empty((b, l, 2 * d_inner), dyg.dtype)                                     # d(in_proj output)
    if c["fused"]:
        dy = gate_backward(dyg, c["gate"], dxz)                                        # also fills dxz's z half
    else:
        dy = dyg * c["gate"]
        dxz[..., d_inner:] = silu_backward(dyg * c["y"], c["silu_z"])                  # dz
    dxs, ddelta, dA, dB, dC, g["D"], dh0 = selective_scan_backward(dy, c["scan"], dh_last)
    g["A_log"] = dA * c["A"]                                                           # dA/dA_log = A
    if c["fused"]:
        n, rank = dB.shape[-1], c["dt_softplus"][1].shape[1]
        dx_dbl = np.empty((b, l, rank + 2 * n), dyg.dtype)                             # (b, l, r + 2n)
        dx_dbl[..., rank:rank + n], dx_dbl[..., rank + n:] = dB, dC                    # d(dt) by the kernel
        g["dt_proj.weight"], g["dt_proj.bias"] = dt_softplus_backward(ddelta, c["dt_softplus"], dx_dbl)
    else:
        ddtp = softplus_backward(ddelta, c["softplus"])
        ddt, g["dt_proj.weight"], g["dt_proj.bias"] = linear_backward(ddtp, c["dt_proj"])
        dx_dbl = np.concatenate([ddt, dB, dC], axis=-1)                                # (b, l, r + 2n)
    dxs_proj, g["x_proj.weight"], _ = linear_backward(dx_dbl, c["x_proj"])
    if c["fused"]:                                                                     # x feeds the scan and x_proj:
        g["conv1d.weight"], g["conv1d.bias"], _ = silu_conv_backward(dxs, c["conv"], dxz, dxs_proj)  # fills dxz's x half
    else:
        dxs += dxs_proj                                                                # x feeds the scan and x_proj
        dxc = silu_backward(dxs, c["silu_x"])
        dxi, g["conv1d.weight"], g["conv1d.bias"], _ = conv1d_backward(dxc, c["conv"])
        dxz[..., :d_inner] = dxi
    dx, g["in_proj.weight"], _ = linear_backward(dxz, c["in_proj"])
    return dx, g, dh0


def mixer_step(x_t, p, conv_state, h):
    """One token of recurrent inference: the scan's recurrence written out for a single step.

    Args:
        x_t: (b, d_model).  conv_state: (b, k-1, d_inner) previous conv inputs.  h: (b, d_inner, n).
    Returns:
        out_t: (b, d_model), new conv_state, new h (fresh arrays; the inputs are not modified).
    """
    d_inner = p["D"].shape[0]
    n = p["A_log"].shape[1]
    rank = p["dt_proj.weight"].shape[1]
    xz = x_t @ p["in_proj.weight"].T                                                   # (b, 2 d_inner)
    xi, z = xz[:, :d_inner], xz[:, d_inner:]
    window = np.concatenate([conv_state, xi[:, None, :]], axis=1)                     # (b, k, d_inner)
    xc = np.einsum("bkd,dk->bd", window, p["conv1d.weight"][:, 0, :]) + p["conv1d.bias"]
    xs = silu_forward(xc)[0]                                                           # (b, d_inner)
    x_dbl = xs @ p["x_proj.weight"].T                                                  # (b, r + 2n)
    dt, B, C = x_dbl[:, :rank], x_dbl[:, rank:rank + n], x_dbl[:, rank + n:]
    delta = softplus_forward(dt @ p["dt_proj.weight"].T + p["dt_proj.bias"])[0]      # (b, d_inner)
    A = -np.exp(p["A_log"])                                                            # (d_inner, n)
    h = np.exp(delta[:, :, None] * A) * h + delta[:, :, None] * B[:, None, :] * xs[:, :, None]
    y = np.einsum("bdn,bn->bd", h, C) + p["D"] * xs                                    # (b, d_inner)
    out_t = (y * silu_forward(z)[0]) @ p["out_proj.weight"].T                          # (b, d_model)
    return out_t, window[:, 1:], h
