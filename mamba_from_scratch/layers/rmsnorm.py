"""RMSNorm (Zhang & Sennrich 2019), as in Mamba: ``out = x / rms(x) * weight``.

No mean subtraction and no bias: cheaper than LayerNorm and what the official model uses.
"""
from __future__ import annotations

import numpy as np

EPS = 1e-5


def rmsnorm_forward(x, weight, eps=EPS):
    """Args:
        x: (..., d).  weight: (d,).
    Returns:
        out: (..., d), cache.
    """
    rstd = 1.0 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)  # (..., 1)
    xhat = x * rstd                                                     # (..., d)
    return xhat * weight, (xhat, rstd, weight)


def rmsnorm_backward(dout, cache):
    """With xhat = x * rstd and rstd = (mean(x^2) + eps)^{-1/2}:
        dweight = sum over rows of dout * xhat
        dxhat   = dout * weight
        dx      = rstd * (dxhat - xhat * mean(dxhat * xhat))

    Returns:
        dx: (..., d), dweight: (d,).
    """
    xhat, rstd, weight = cache
    d = xhat.shape[-1]
    dweight = (dout * xhat).reshape(-1, d).sum(0)                       # (d,)
    dxhat = dout * weight                                               # (..., d)
    dx = rstd * (dxhat - xhat * np.mean(dxhat * xhat, axis=-1, keepdims=True))
    return dx, dweight
