"""The selective scan behind one function with a ``backend=`` choice.

    y, h_last, cache = selective_scan_forward(u, delta, A, B, C, D=None, h0=None, backend="numba")
    du, ddelta, dA, dB, dC, dD, dh0 = selective_scan_backward(dy, cache, dh_last=None)

Shapes: u, delta, y: (b, l, d_inner) with delta >= 0 (after softplus); A: (d_inner, n) with
A <= 0; B, C: (b, l, n); D: (d_inner,); h0, h_last: (b, d_inner, n).

delta = 0 is a valid step that changes nothing (deltaA = 1, deltaB_u = 0): in float32,
softplus of a dt_proj output below about -104 is exactly 0, and a healthy run must go on.
A negative delta (dt passed without its softplus) or a positive A (a sign error: the state
would grow like exp(delta A t) and overflow from finite inputs) is a ValueError.

Backends, a ladder from readable to fast, all checked against the first:
    "numpy"  plain loop over time (reference.py), stores every state
    "numba"  @njit(parallel=True) over (batch, channel) on the CPU (cpu.py)
    "cuda"   numba.cuda kernels, one thread per (batch, channel) (gpu.py)
    "auto"   "cuda" when a real GPU is present (the simulator does not count), else "numba"
Each backend module provides
    forward(u, delta, A, B, C, D, h0) -> (y, h_last, saved)
    backward(dy, u, delta, A, B, C, D, h0, saved, dh_last) -> (du, ddelta, dA, dB, dC, dD, dh0)
where ``saved`` is whatever that backend keeps for its backward. GPU packages are imported
only when the cuda backend is asked for.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..validate import check_choice, check_float_array

BACKENDS = ("numpy", "numba", "cuda", "auto")
_MODULES = {"numpy": "reference", "numba": "cpu", "cuda": "gpu"}


@dataclass
class ScanCache:
    """What the backward needs: the inputs, and the backend's own saved state."""

    backend: str
    u: np.ndarray
    delta: np.ndarray
    A: np.ndarray
    B: np.ndarray
    C: np.ndarray
    D: np.ndarray | None
    h0: np.ndarray | None
    saved: object


@lru_cache(maxsize=None)
def gpu_available() -> bool:
    """True when a real CUDA device is usable. The CUDA simulator is not a GPU."""
    if cuda_simulator():
        return False
    if not os.path.exists("/dev/nvidiactl") and not os.path.exists("/dev/nvidia0"):
        return False  # no driver: do not import numba.cuda just to find that out
    try:
        from numba import cuda
        return bool(cuda.is_available())
    except Exception:
        return False


def cuda_simulator() -> bool:
    """True when numba's CUDA simulator is switched on (``NUMBA_ENABLE_CUDASIM=1``)."""
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


def resolve_backend(backend: str) -> str:
    """Map ``"auto"`` to a concrete backend and reject unknown names.

    ``"cuda"`` needs a real GPU or the CUDA simulator; without either it is a ValueError here,
    before any work, rather than an error from deep inside numba's driver.
    """
    check_choice("backend", backend, BACKENDS)
    if backend == "auto":
        return "cuda" if gpu_available() else "numba"
    if backend == "cuda" and not (gpu_available() or cuda_simulator()):
        raise ValueError("backend='cuda': no CUDA GPU found; use backend='numba'")
    return backend


def _impl(backend):
    return importlib.import_module(f".{_MODULES[backend]}", __name__)


def check_scan_inputs(u, delta, A, B, C, D=None, h0=None):
    """Validate shapes, dtypes and values of the scan's inputs (ValueError on failure)."""
    check_float_array("u", u, ndim=3)
    b, l, d_inner = u.shape
    if l == 0 or b == 0 or d_inner == 0:
        raise ValueError(f"u must have b, l, d_inner >= 1, got shape {u.shape}")
    dtype = u.dtype
    check_float_array("delta", delta, shape=(b, l, d_inner), dtype=dtype)
    if not np.all(delta >= 0):
        raise ValueError(f"delta must be >= 0 everywhere (pass softplus(dt), not dt); "
                         f"its minimum is {delta.min():.3g}")
    check_float_array("A", A, ndim=2, dtype=dtype)
    if A.shape[0] != d_inner or A.shape[1] == 0:
        raise ValueError(f"A must have shape (d_inner={d_inner}, n>=1), got {A.shape}")
    if not np.all(A <= 0):
        raise ValueError(f"A must be <= 0 everywhere (A = -exp(A_log)); a positive A makes the "
                         f"state grow without bound; its maximum is {A.max():.3g}")
    n = A.shape[1]
    check_float_array("B", B, shape=(b, l, n), dtype=dtype)
    check_float_array("C", C, shape=(b, l, n), dtype=dtype)
    if D is not None:
        check_float_array("D", D, shape=(d_inner,), dtype=dtype)
    if h0 is not None:
        check_float_array("h0", h0, shape=(b, d_inner, n), dtype=dtype)


def selective_scan_forward(u, delta, A, B, C, D=None, h0=None, backend="numba", check=True):
    """S6 forward: ``h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t``, ``y_t = C_t h_t + D u_t``.

    Args:
        u: (b, l, d_inner) input.  delta: (b, l, d_inner) step sizes, >= 0.
        A: (d_inner, n), <= 0 (negative for a decaying state).  B, C: (b, l, n).
        D: (d_inner,) skip, or None.  h0: (b, d_inner, n) initial state, or None (zeros).
        backend: one of "numpy", "numba", "cuda", "auto".
        check: validate the inputs (:func:`check_scan_inputs`). The Mamba mixer passes False:
            it builds delta = softplus(.) >= 0 and A = -exp(A_log) <= 0 itself, from
            parameters that model_forward has checked, so the only thing a check could still
            find is an activation that overflowed, and that must reach the loss as a
            non-finite value (which the training loops report as divergence), not be
            reported as a bad input of an internal function.
    Returns:
        y: (b, l, d_inner), h_last: (b, d_inner, n), cache for :func:`selective_scan_backward`.
    """
    backend = resolve_backend(backend)
    if check:
        check_scan_inputs(u, delta, A, B, C, D, h0)
    args = [np.ascontiguousarray(a) if a is not None else None for a in (u, delta, A, B, C, D, h0)]
    y, h_last, saved = _impl(backend).forward(*args)
    return y, h_last, ScanCache(backend, *args, saved)


def selective_scan_backward(dy, cache, dh_last=None):
    """S6 backward (reverse-time adjoint; see reference.backward for the derivation).

    Args:
        dy: (b, l, d_inner) upstream gradient of y.
        cache: from :func:`selective_scan_forward`.
        dh_last: (b, d_inner, n) upstream gradient of h_last, or None.
    Returns:
        du, ddelta: (b, l, d_inner); dA: (d_inner, n); dB, dC: (b, l, n);
        dD: (d_inner,) or None when the forward had no D; dh0: (b, d_inner, n).
    """
    if not isinstance(cache, ScanCache):
        raise ValueError("cache must be the ScanCache returned by selective_scan_forward")
    u = cache.u
    check_float_array("dy", dy, shape=u.shape, dtype=u.dtype)
    if dh_last is not None:
        check_float_array("dh_last", dh_last, shape=(u.shape[0], u.shape[2], cache.A.shape[1]), dtype=u.dtype)
        dh_last = np.ascontiguousarray(dh_last)
    return _impl(cache.backend).backward(
        np.ascontiguousarray(dy), cache.u, cache.delta, cache.A, cache.B, cache.C, cache.D,
        cache.h0, cache.saved, dh_last)


__all__ = ["selective_scan_forward", "selective_scan_backward", "ScanCache", "BACKENDS",
           "resolve_backend", "gpu_available", "cuda_simulator", "check_scan_inputs"]
