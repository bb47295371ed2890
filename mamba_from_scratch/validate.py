"""Input checks shared by every public function.

Bad input must fail loudly with a ``ValueError`` that names the argument and says what
was expected, never run on and return garbage. Each helper returns the array it checked
so call sites stay one line long.
"""
from __future__ import annotations

import numpy as np

FLOAT_DTYPES = (np.float32, np.float64)


def check_float_array(name, x, ndim=None, shape=None, dtype=None, finite=True):
    """Check that ``x`` is a float32/float64 ndarray of the given rank and shape.

    Args:
        name: argument name used in the error message.
        x: the value to check.
        ndim: required number of dimensions, or None.
        shape: required shape; ``None`` entries match any size.
        dtype: required dtype (e.g. the dtype of a sibling argument), or None.
        finite: reject NaN and Inf.
    Returns:
        x, unchanged.
    """
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{name} must be a numpy.ndarray, got {type(x).__name__}")
    if x.dtype.type not in FLOAT_DTYPES:
        raise ValueError(f"{name} must have dtype float32 or float64, got {x.dtype}")
    if dtype is not None and x.dtype != np.dtype(dtype):
        raise ValueError(f"{name} must have dtype {np.dtype(dtype)} like the other inputs, got {x.dtype}")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {x.shape}")
    if shape is not None:
        if len(shape) != x.ndim or any(s is not None and s != t for s, t in zip(shape, x.shape)):
            want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
            raise ValueError(f"{name} must have shape {want}, got {x.shape}")
    if finite and not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or Inf")
    return x


def check_positive_int(name, value, minimum=1):
    """Check that ``value`` is an integer >= ``minimum`` (bools are rejected)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_positive_float(name, value, allow_zero=False):
    """Check that ``value`` is a finite real number > 0 (or >= 0 with ``allow_zero``)."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    ok = ok and np.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    return float(value)


def check_choice(name, value, options):
    """Check that ``value`` is one of ``options`` and list them if not."""
    if value not in options:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, options))}; got {value!r}")
    return value
