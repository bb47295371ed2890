"""Elementwise activations: sigmoid, SiLU and softplus, each with its backward. Tested in
tests/test_layers.py.

All three are written so that large |x| neither overflows nor loses precision.
"""
from __future__ import annotations

import numpy as np

from ..validate import check_float_array


def sigmoid(x):
    """1 / (1 + e^{-x}). For x < -88 (float32) e^{-x} overflows to inf and the result is
    exactly 0, which is right, so the overflow warning is silenced rather than avoided.
    The package's one sigmoid (the gates of icl/ use it too); a scalar gives a scalar."""
    with np.errstate(over="ignore"):
        e = np.exp(-x)
    e += 1.0
    return np.reciprocal(e, out=e) if isinstance(e, np.ndarray) else 1.0 / e


def silu_forward(x):
    """SiLU (swish): ``x * sigmoid(x)``.  x: any shape -> out: same shape."""
    check_float_array("x", x, finite=False)
    s = sigmoid(x)
    return x * s, (x, s)


def silu_backward(dout, cache):
    """d/dx [x s(x)] = s + x s (1 - s)."""
    x, s = cache
    check_float_array("dout", dout, shape=x.shape, dtype=x.dtype, finite=False)
    return dout * (s * (1.0 + x * (1.0 - s)))


def softplus_forward(x):
    """softplus(x) = log(1 + e^x), computed as max(x, 0) + log1p(e^{-|x|}).

    Accurate for every x: for x = 1000 it is 1000, for x = -30 it is e^{-30}, and nothing
    overflows (the official code switches to the identity above x = 20 instead).
    NumPy's ``log1p`` is not vectorised (~4x slower than ``log``), so log1p(e) is computed
    with Goldberg's trick: with u = 1 + e rounded, log1p(e) = log(u) * e / (u - 1), exact to
    a few ulps; where u rounds to 1, log1p(e) = e to working precision.
    The cache is sigmoid(x) = 1/u (x >= 0) or e/u (x < 0), the derivative, almost free.
    Both case splits are written as arithmetic blends with a 0/1 mask: ``np.where`` on a
    random mask costs ~4 ns per element here, 20x a multiply.
    """
    check_float_array("x", x, finite=False)
    e = np.exp(-np.abs(x))
    u = 1 + e
    d = u - 1
    rounded = (d == 0).astype(x.dtype)                  # 1 where u rounded to exactly 1
    log1p_e = e * (np.log(u) / (d + rounded) + rounded)
    pos = (x >= 0).astype(x.dtype)
    return np.maximum(x, 0) + log1p_e, (e + pos * (1 - e)) / u


def softplus_backward(dout, cache):
    """d softplus(x)/dx = sigmoid(x), kept by the forward."""
    check_float_array("dout", dout, shape=cache.shape, dtype=cache.dtype, finite=False)
    return dout * cache


def softplus_inverse(y):
    """x with softplus(x) = y > 0: ``y + log(-expm1(-y))``; used to initialise dt_proj.bias."""
    return y + np.log(-np.expm1(-y))
