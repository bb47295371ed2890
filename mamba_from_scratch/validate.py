"""Input checks shared by every public function.

Bad input must fail loudly with a ``ValueError`` that names the argument and says what
was expected, never run on and return garbage. Each helper returns the array it checked
so call sites stay one line long.
"""
from __future__ import annotations

import os
import tempfile

import numpy as np

FLOAT_DTYPES = (np.float32, np.float64)


def check_float_array(name, x, ndim=None, shape=None, dtype=None, finite=True):
    """Check that ``x`` is a float32/float64 ndarray of the given rank and shape.

    Args:
        name: argument name used in the error message.
        x: the value to check.
        ndim: required number of dimensions, or None.
        shape: required shape (a tuple); ``None`` entries match any size.
        dtype: required dtype (e.g. the dtype of a sibling argument), or None.
        finite: reject NaN and Inf.
    Returns:
        x, unchanged.

    It runs on every activation of a training step, so the passing path is a handful of
    comparisons (about a microsecond) plus, with ``finite``, one ``isfinite`` pass.
    """
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{name} must be a numpy.ndarray, got {type(x).__name__}")
    if x.dtype.type not in FLOAT_DTYPES:
        raise ValueError(f"{name} must have dtype float32 or float64, got {x.dtype}")
    if dtype is not None and x.dtype != dtype:
        raise ValueError(f"{name} must have dtype {np.dtype(dtype)} like the other inputs, got {x.dtype}")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {x.shape}")
    if shape is not None and x.shape != shape:
        if len(shape) != x.ndim or any(s is not None and s != t for s, t in zip(shape, x.shape)):
            want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
            raise ValueError(f"{name} must have shape {want}, got {x.shape}")
    if finite and not np.isfinite(x).all():
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


def check_float_dtype(name, dtype):
    """Check that ``dtype`` is float32 or float64 and return it as a numpy dtype."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise ValueError(f"{name} must be float32 or float64, got {dtype!r}") from None
    if dt.type not in FLOAT_DTYPES:
        raise ValueError(f"{name} must be float32 or float64, got {dt}")
    return dt


def check_number(name, value, low=None, high=None, low_open=False, high_open=False):
    """Check that ``value`` is a finite real number in the interval from ``low`` to ``high``.

    ``low_open``/``high_open`` exclude the end points; ``None`` leaves a side unbounded.
    """
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    ok = ok and bool(np.isfinite(value))
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        left = "-inf" if low is None else f"{low:g}"
        right = "inf" if high is None else f"{high:g}"
        interval = ("(" if low_open or low is None else "[") + f"{left}, {right}" + (
            ")" if high_open or high is None else "]")
        raise ValueError(f"{name} must be a finite number in {interval}, got {value!r}")
    return float(value)


def check_array_dict(name, arrays, shapes, finite=True):
    """Check a flat dict of parameters (or gradients) against the expected names and shapes.

    Every entry must be a float32/float64 ndarray of its shape, all of one dtype, and (with
    ``finite``) free of NaN and Inf. The cost is one pass over the parameters, never over
    activations.

    Args:
        name: what the dict is called in messages ("params", "grads").
        arrays: the dict to check.
        shapes: {key: shape} that it must match exactly (no missing, no extra keys).
        finite: reject NaN and Inf.
    Returns:
        the common dtype.
    """
    if not isinstance(arrays, dict):
        raise ValueError(f"{name} must be a dict of arrays keyed by parameter name, got {type(arrays).__name__}")
    if arrays.keys() != shapes.keys():
        missing, extra = sorted(set(shapes) - set(arrays)), sorted(set(arrays) - set(shapes))
        raise ValueError(f"{name} keys do not match the config: missing {missing[:5]}, unexpected {extra[:5]}")
    dtype = None
    for key, shape in shapes.items():
        a = arrays[key]
        # the passing case inline (this runs on every forward); check_float_array words the failure
        if not (isinstance(a, np.ndarray) and a.shape == shape and a.dtype.type in FLOAT_DTYPES
                and (dtype is None or a.dtype == dtype) and (not finite or np.isfinite(a).all())):
            check_float_array(f"{name}[{key!r}]", a, shape=shape, dtype=dtype, finite=finite)
        dtype = a.dtype
    return dtype


def nonfinite_keys(arrays):
    """The keys of a dict of arrays whose values contain NaN or Inf (for divergence reports)."""
    return [k for k, a in arrays.items() if not np.isfinite(a).all()]


def check_output_dir(name, path):
    """Check, before any compute, that ``path`` is (or can be made) a writable folder.

    Creates the folder and writes then removes a probe file in it, so a read-only folder,
    a path that is a file, or a parent that cannot be created fails now and not after the
    training it was meant to save.
    """
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{name} {path!r} is a file, not a folder")
    try:
        os.makedirs(path, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".tmp-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ValueError(f"{name} {path!r} is not a writable folder ({e.strerror or e})") from None
    return path
