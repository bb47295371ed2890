"""RMSNorm (Zhang & Sennrich 2019), as in Mamba: ``out = x / rms(x) * weight``.

No mean subtraction and no bias: cheaper than LayerNorm and what the official model uses.

Large inputs: x * x overflows for |x| above about 1.8e19 in float32 (1.3e154 in float64),
which would make rms(x) infinite and the output exactly 0. Rows where that happens are
normalised again with the row scaled by its largest |x| first (the result is the same
number, computed without the overflow). Only those rows pay for it: the ordinary path is
one pass, and its check looks at the (..., 1) mean, not at x.
"""
from __future__ import annotations

import numpy as np

from ..validate import check_float_array, check_positive_float

EPS = 1e-5


def _rstd(x, eps):
    """(mean(x^2) + eps)^(-1/2) over the last axis, (..., 1), without overflow in x^2."""
    with np.errstate(over="ignore"):                                    # handled just below
        ms = np.mean(x * x, axis=-1, keepdims=True)                     # (..., 1)
    if np.all(np.isfinite(ms)):
        return 1.0 / np.sqrt(ms + eps)
    # With s = max|x| >= 1 per row: mean(x^2) + eps = s^2 (mean((x/s)^2) + eps/s^2), so
    # rstd = 1 / (s sqrt(mean((x/s)^2) + eps/s^2)); (x/s)^2 <= 1 cannot overflow.
    s = np.maximum(np.max(np.abs(x), axis=-1, keepdims=True), x.dtype.type(1))  # (..., 1)
    xs = x / s
    with np.errstate(over="ignore"):                                    # s * s = inf: eps / inf = 0
        tail = eps / (s * s)
    return 1.0 / (s * np.sqrt(np.mean(xs * xs, axis=-1, keepdims=True) + tail))


def rmsnorm_forward(x, weight, eps=EPS):
    """Args:
        x: (..., d).  weight: (d,).  eps: added to mean(x^2), > 0.
    Returns:
        out: (..., d), cache.
    """
    check_float_array("x", x, finite=False)
    if x.ndim == 0:
        raise ValueError("x must have at least one dimension (..., d), got a scalar")
    check_float_array("weight", weight, shape=(x.shape[-1],), dtype=x.dtype, finite=False)
    check_positive_float("eps", eps)
    rstd = _rstd(x, eps)                                                # (..., 1)
    xhat = x * rstd                                                     # (..., d)
    return xhat * weight, (xhat, rstd, weight)


def rmsnorm_backward(dout, cache):
    """With xhat = x * rstd and rstd = (mean(x^2) + eps)^{-1/2}:
        dweight = sum over rows of dout * xhat
        dxhat   = dout * weight
        dx      = rstd * (dxhat - xhat * mean(dxhat * xhat))
    exactly (eps included), however rstd was computed; so the scaled path needs no backward
    of its own.

    Returns:
        dx: (..., d), dweight: (d,).
    """
    xhat, rstd, weight = cache
    check_float_array("dout", dout, shape=xhat.shape, dtype=xhat.dtype, finite=False)
    d = xhat.shape[-1]
    dweight = (dout * xhat).reshape(-1, d).sum(0)                       # (d,)
    dxhat = dout * weight                                               # (..., d)
    dx = rstd * (dxhat - xhat * np.mean(dxhat * xhat, axis=-1, keepdims=True))
    return dx, dweight
