"""Finite-difference gradient checking, the verdict on every hand-written backward.

The recipe (cs231n's): pick a random upstream gradient ``dout``, define the scalar
``L = sum(f(x) * dout)``, and compare the analytic ``dL/dx`` from the backward with central
differences ``(L(x + eps) - L(x - eps)) / (2 eps)``, one coordinate at a time, in float64.
A random ``dout`` (not all ones) makes a swapped or mis-summed axis show up.
"""
from __future__ import annotations

import numpy as np


def numerical_grad(f, x, eps=1e-6):
    """Central-difference gradient of the scalar function ``f()`` w.r.t. the array ``x``.

    ``x`` is perturbed in place and restored, so ``f`` should read it by reference.

    Args:
        f: callable with no arguments returning a float.
        x: float64 ndarray that ``f`` depends on.
    Returns:
        grad: same shape as x.
    """
    grad = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        old = x[idx]
        x[idx] = old + eps
        f_plus = f()
        x[idx] = old - eps
        f_minus = f()
        x[idx] = old
        grad[idx] = (f_plus - f_minus) / (2 * eps)
    return grad


def rel_error(a, b):
    """max |a - b| / max(|a|, |b|): a relative error that is meaningful for tiny entries too."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(np.abs(a).max(initial=0.0), np.abs(b).max(initial=0.0))
    return 0.0 if scale == 0 else float(np.abs(a - b).max() / scale)
