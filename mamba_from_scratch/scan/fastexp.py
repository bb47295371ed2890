"""A branch-free ``exp`` that Numba can vectorise, for the scan's hot loops.

Why: inside an ``@njit`` loop Numba lowers ``np.exp``/``math.exp`` to one scalar libm call
per element (about 1.8 ns for float32 on our machine; pip's llvmlite has no SVML vector
library and ``fastmath`` does not change that), while NumPy's own vectorised ``np.exp`` takes
about 0.34 ns. The scan evaluates ``exp(delta * A)`` for every (b, l, d_inner, n) element,
so libm's exp alone would dominate. Written out as plain arithmetic, exp becomes a short
loop body that LLVM turns into AVX instructions over the vector lanes (the scan's channels).

The method (Cephes ``expf``), for float32:
    k = round(x / ln 2)                       an integer, so exp(x) = 2^k * exp(r)
    r = x - k ln 2                            |r| <= ln(2)/2, with ln 2 split in two parts
                                              (Cody-Waite) so r is exact to float32
    exp(r) ~ 1 + r + r^2 p(r)                 p a degree-5 minimax polynomial
    2^k                                       built directly from the exponent bits
Accuracy: a few ulp over the whole float32 range (tests/test_fastexp.py measures it).
Edge cases: exp(0) is exactly 1 (k = 0, r = 0); below ln(FLT_MIN) ~ -87.34 the result is
exactly 0 (a clean underflow instead of a denormal); above 88.376 it is +inf (a little
before float32's true overflow at 88.72); never NaN for finite input.

float64 keeps libm's ``math.exp``: float64 is the precision students use for gradient
checks (1e-10 agreement with the reference), not the fast path.

``fast_exp(x)`` works in any ``@njit`` function and picks the version for ``x``'s type.
It is inlined into the caller, and Numba's on-disk cache (``cache=True``) only watches the
caller's own source file: after editing this file, delete the ``__pycache__`` folders (or
touch cpu.py) so the cached kernels are rebuilt.
``exp_reference`` is the readable version of the same algorithm in NumPy, vectorised over an
array, against which the compiled one is tested.

``log1p_unit(e)`` is log(1 + e) for 0 <= e <= 1, the other half of softplus
(softplus(x) = max(x, 0) + log1p(exp(-|x|))), vectorisable in the same way. For float32 it
sums the series log1p(e) = 2 atanh(s) = 2 (s + s^3/3 + ... + s^15/15), s = e / (2 + e) <= 1/3:
the first omitted term is below 2e-9 relative, and a small e keeps full relative precision
(log1p(e) ~ e), which log(1 + e) would lose. float64 uses libm's ``math.log1p``.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, types
from numba.extending import overload

# Cephes expf constants.
LOG2E = np.float32(1.44269504088896341)
LN2_HI = np.float32(0.693359375)        # ln 2 = LN2_HI + LN2_LO; LN2_HI has few mantissa bits,
LN2_LO = np.float32(-2.12194440e-4)     # so k * LN2_HI is exact for |k| < 2^12
P0 = np.float32(1.9875691500e-4)
P1 = np.float32(1.3981999507e-3)
P2 = np.float32(8.3334519073e-3)
P3 = np.float32(4.1665795894e-2)
P4 = np.float32(1.6666665459e-1)
P5 = np.float32(5.0000001201e-1)
# Inputs below X_MIN give 0: exp(X_MIN) is FLT_MIN, the smallest normal float32, so every
# nonzero output is a normal number (denormals are slow on x86). Inputs above X_MAX give
# +inf: there k would reach 128, whose exponent bits mean inf (exact exp overflows at
# 88.72; the scan only sees delta * A <= 0).
X_MIN = np.float32(-87.33654)
X_MAX = np.float32(88.376)


def exp_reference(x):
    """The float32 algorithm in NumPy (readable reference for the compiled version).

    Args:
        x: float32 array of any shape.
    Returns:
        float32 array of the same shape, exp(x) to a few ulp.
    """
    x = np.asarray(x, np.float32)
    xc = np.clip(x, X_MIN, X_MAX)                                   # keep 2^k a normal float
    k = np.floor(xc * LOG2E + np.float32(0.5))                      # nearest integer
    r = xc - k * LN2_HI - k * LN2_LO                                # |r| <= ln(2)/2
    p = ((((P0 * r + P1) * r + P2) * r + P3) * r + P4) * r + P5
    e_r = p * (r * r) + r + np.float32(1.0)                         # exp(r)
    two_k = ((k.astype(np.int32) + 127) << 23).view(np.float32)     # 2^k from exponent bits
    out = e_r * two_k
    out = np.where(x < X_MIN, np.float32(0.0), out)
    return np.where(x > X_MAX, np.float32(np.inf), out).astype(np.float32)


@njit(inline="always")
def _fast_exp_f32(x):
    xc = min(max(x, X_MIN), X_MAX)
    k = np.floor(xc * LOG2E + np.float32(0.5))
    r = xc - k * LN2_HI - k * LN2_LO
    p = ((((P0 * r + P1) * r + P2) * r + P3) * r + P4) * r + P5
    e_r = p * (r * r) + r + np.float32(1.0)
    two_k = np.int32((np.int32(k) + 127) << 23).view(np.float32)
    out = e_r * two_k
    out = np.float32(0.0) if x < X_MIN else out
    return np.float32(np.inf) if x > X_MAX else out


def fast_exp(x):
    """exp(x) for a float32 or float64 scalar inside ``@njit`` code (see module docstring)."""
    return math.exp(x)


@overload(fast_exp, inline="always")
def _fast_exp_overload(x):
    if x == types.float32:
        return lambda x: _fast_exp_f32(x)
    if x == types.float64:
        return lambda x: math.exp(x)
    return None


@njit(fastmath={"contract", "nsz"}, cache=True)
def fast_exp_array(x):
    """Apply the compiled ``fast_exp`` to a 1-D array (for tests and timing).

    Args:
        x: (m,) float32 or float64.
    Returns:
        (m,) same dtype.
    """
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        out[i] = fast_exp(x[i])
    return out


@njit(inline="always")
def _log1p_unit_f32(e):
    s = e / (np.float32(2.0) + e)                                   # 0 <= s <= 1/3
    s2 = s * s
    p = ((((((np.float32(1 / 15) * s2 + np.float32(1 / 13)) * s2 + np.float32(1 / 11)) * s2
            + np.float32(1 / 9)) * s2 + np.float32(1 / 7)) * s2 + np.float32(1 / 5)) * s2
         + np.float32(1 / 3)) * s2
    return np.float32(2.0) * (s + s * p)


def log1p_unit(e):
    """log(1 + e) for a float32 or float64 scalar 0 <= e <= 1 inside ``@njit`` code."""
    return math.log1p(e)


@overload(log1p_unit, inline="always")
def _log1p_unit_overload(e):
    if e == types.float32:
        return lambda e: _log1p_unit_f32(e)
    if e == types.float64:
        return lambda e: math.log1p(e)
    return None


@njit(fastmath={"contract", "nsz"}, cache=True)
def log1p_unit_array(e):
    """Apply the compiled ``log1p_unit`` to a 1-D array (for tests).

    Args:
        e: (m,) float32 or float64 in [0, 1].
    Returns:
        (m,) same dtype.
    """
    out = np.empty_like(e)
    for i in range(e.shape[0]):
        out[i] = log1p_unit(e[i])
    return out


__all__ = ["fast_exp", "fast_exp_array", "exp_reference", "log1p_unit", "log1p_unit_array", "X_MIN", "X_MAX"]
