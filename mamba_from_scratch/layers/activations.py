"""Elementwise activations: sigmoid, SiLU and softplus, each with its backward.

All three are written so that large |x| neither overflows nor loses precision.
"""
from __future__ import annotations

import numpy as np


def sigmoid(x):
    """1 / (1 + e^{-x}), via tanh so that no exp can overflow."""
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def silu_forward(x):
    """SiLU (swish): ``x * sigmoid(x)``.  x: any shape -> out: same shape."""
    s = sigmoid(x)
    return x * s, (x, s)


def silu_backward(dout, cache):
    """d/dx [x s(x)] = s + x s (1 - s)."""
    x, s = cache
    return dout * (s * (1.0 + x * (1.0 - s)))


def softplus_forward(x):
    """softplus(x) = log(1 + e^x), computed as max(x, 0) + log1p(e^{-|x|}).

    Exact for every x: for x = 1000 it is 1000, for x = -1000 it is e^{-1000} ~ 0, and
    nothing overflows (the official code switches to the identity above x = 20 instead).
    """
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x))), x


def softplus_backward(dout, cache):
    """d softplus(x)/dx = sigmoid(x)."""
    return dout * sigmoid(cache)


def softplus_inverse(y):
    """x with softplus(x) = y > 0: ``y + log(-expm1(-y))``; used to initialise dt_proj.bias."""
    return y + np.log(-np.expm1(-y))
