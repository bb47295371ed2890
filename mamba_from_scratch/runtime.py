"""Process settings that make NumPy + Numba fast on a small machine, measured, not guessed.

Two things cost more than the arithmetic in a training step here:

* **BLAS threads fighting Numba's.** A multi-threaded BLAS (OpenBLAS spins its threads
  between calls) and Numba's parallel kernels each want every core and preempt each other:
  on 2 cores one step of the 4-layer Mamba took 3.0 s with 2 BLAS threads, 0.9 s with one.
  Our matrices are small, so one BLAS thread loses little (:func:`limit_blas_threads`).
* **Page faults on every temporary.** glibc hands each freed block above 128 KiB back to the
  kernel, so every (b, l, d_inner) temporary of a step is a fresh mmap whose pages fault on
  first touch: softplus on a (32, 64, 128) float32 array took 7.0 ms instead of 1.5 ms.
  :func:`reuse_freed_memory` raises glibc's thresholds so freed arrays are reused.

:func:`tune_process` applies both; the training, evaluation, benchmark and demo commands
call it at start-up. Library code never changes process settings behind a caller's back.
"""
from __future__ import annotations

import ctypes
import ctypes.util

from threadpoolctl import threadpool_info, threadpool_limits

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3


def blas_threads():
    """Threads of the BLAS library NumPy uses, or None if it cannot be told."""
    counts = [lib["num_threads"] for lib in threadpool_info() if lib.get("user_api") == "blas"]
    return counts[0] if counts else None


def limit_blas_threads(n=1):
    """Limit NumPy's BLAS to ``n`` threads for the rest of the process."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1 (BLAS threads), got {n!r}")
    return threadpool_limits(limits=n, user_api="blas")


def reuse_freed_memory(mmap_threshold=32 << 20, trim_threshold=256 << 20):
    """Keep freed arrays below ``mmap_threshold`` bytes in the heap for reuse (glibc only).

    Returns True if the settings took effect, False where there is no glibc (macOS, musl).
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold) and mallopt(_M_TRIM_THRESHOLD, trim_threshold)
                and mallopt(_M_TOP_PAD, 64 << 20))


def tune_process(blas=1):
    """One BLAS thread and reused memory: what every compute-heavy command wants here."""
    limit_blas_threads(blas)
    reuse_freed_memory()
