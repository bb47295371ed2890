"""The selective scan (S6) in plain NumPy: the readable specification of the kernels.

Glossary (mamba-minimal's names):
    b: batch size            l: sequence length
    d: channel (d_inner)     n: state size (d_state)
    u: input of the scan (the conv output x)     delta: step size, already > 0
    deltaA = exp(delta * A)  (ZOH for A)         deltaB_u = delta * B * u  (Euler for B)

Per batch element and channel the state ``h_t in R^n`` follows
    h_t = deltaA_t * h_{t-1} + deltaB_u_t,      y_t = <C_t, h_t> + D * u_t.

This file loops over time and vectorises over (b, d, n). It stores every state for the
backward, which costs b*l*d*n memory: fine for a reference, too much for a kernel (the
compiled backends recompute states from chunk checkpoints instead).
Official implementation: ``selective_scan_ref`` in mamba_ssm/ops/selective_scan_interface.py.
"""
from __future__ import annotations

import numpy as np


def forward(u, delta, A, B, C, D, h0):
    """Run the recurrence left to right.

    Args:
        u, delta: (b, l, d_inner).  A: (d_inner, n).  B, C: (b, l, n).
        D: (d_inner,) or None.  h0: (b, d_inner, n) or None (zero state).
    Returns:
        y: (b, l, d_inner), h_last: (b, d_inner, n), hs: (b, l, d_inner, n) every state.
    """
    b, l, d_inner = u.shape
    n = A.shape[1]
    h = np.zeros((b, d_inner, n), u.dtype) if h0 is None else h0.copy()
    hs = np.empty((b, l, d_inner, n), u.dtype)
    y = np.empty_like(u)
    for t in range(l):
        deltaA = np.exp(delta[:, t, :, None] * A)                              # (b, d_inner, n)
        deltaB_u = delta[:, t, :, None] * B[:, t, None, :] * u[:, t, :, None]  # (b, d_inner, n)
        h = deltaA * h + deltaB_u                                              # (b, d_inner, n)
        hs[:, t] = h
        y[:, t] = np.einsum("bdn,bn->bd", h, C[:, t])                          # (b, d_inner)
    if D is not None:
        y += D * u
    return y, h, hs


def backward(dy, u, delta, A, B, C, D, h0, hs, dh_last):
    """Reverse-time adjoint of :func:`forward` (``hs`` is its saved states).

    Derivation (dh_t is dL/dh_t through every path; dh_{l} starts at dh_last):
        dh_t          = C_t dy_t + deltaA_{t+1} * dh_{t+1}
        dC_t          = sum_d dy_t[d] h_t[d]
        d(deltaA_t)   = dh_t * h_{t-1}  -> ddelta_t += sum_n d(deltaA_t) deltaA_t A,
                                           dA += d(deltaA_t) deltaA_t delta_t
        d(deltaB_u_t) = dh_t            -> ddelta_t += sum_n dh_t B_t u_t,
                                           dB_t = sum_d dh_t delta_t u_t, du_t = sum_n dh_t delta_t B_t
        du_t += D dy_t,  dD = sum_t dy_t u_t,  dh0 = deltaA_1 * dh_1
    Returns:
        du, ddelta, dA, dB, dC, dD (None if D is None), dh0.
    """
    b, l, d_inner = u.shape
    n = A.shape[1]
    dtype = u.dtype
    du = np.empty_like(u)
    ddelta = np.empty_like(delta)
    dB = np.empty_like(B)
    dC = np.empty_like(C)
    dA = np.zeros(A.shape, np.float64)  # sums b*l terms: accumulate in float64
    # dh_next carries deltaA_{t+1} * dh_{t+1}; at t = l it is the incoming dh_last.
    dh_next = np.zeros((b, d_inner, n), dtype) if dh_last is None else dh_last.astype(dtype, copy=True)
    for t in range(l - 1, -1, -1):
        h_prev = hs[:, t - 1] if t > 0 else (np.zeros_like(hs[:, 0]) if h0 is None else h0)
        deltaA = np.exp(delta[:, t, :, None] * A)                              # (b, d_inner, n)
        dh = dy[:, t, :, None] * C[:, t, None, :] + dh_next                    # (b, d_inner, n)
        dC[:, t] = np.einsum("bd,bdn->bn", dy[:, t], hs[:, t])
        d_deltaA = dh * h_prev * deltaA                                        # (b, d_inner, n)
        ddelta[:, t] = (d_deltaA * A).sum(-1) + np.einsum("bdn,bn->bd", dh, B[:, t]) * u[:, t]
        dA += np.einsum("bdn,bd->dn", d_deltaA, delta[:, t], dtype=np.float64)
        dB[:, t] = np.einsum("bdn,bd->bn", dh, delta[:, t] * u[:, t])
        du[:, t] = np.einsum("bdn,bn->bd", dh, B[:, t]) * delta[:, t]
        dh_next = deltaA * dh
    dD = None
    if D is not None:
        du += D * dy
        dD = np.einsum("bld,bld->d", dy, u, dtype=np.float64).astype(dtype)
    return du, ddelta, dA.astype(dtype), dB, dC, dD, dh_next
