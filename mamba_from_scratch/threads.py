"""How many threads NumPy's BLAS may use next to Numba's parallel kernels.

On a small machine a multi-threaded BLAS (OpenBLAS spins its threads between calls) and
Numba's parallel kernels each want every core and preempt each other: measured on 2 cores,
one training step of the 4-layer Mamba took 3.0 s with 2 BLAS threads and 0.9 s with one.
The matrices of our models are small enough that one BLAS thread loses little, so the
training, evaluation and benchmark commands call :func:`limit_blas_threads` at start-up.
"""
from __future__ import annotations

from threadpoolctl import threadpool_info, threadpool_limits


def blas_threads():
    """Threads of the BLAS library NumPy uses, or None if it cannot be told."""
    counts = [lib["num_threads"] for lib in threadpool_info() if lib.get("user_api") == "blas"]
    return counts[0] if counts else None


def limit_blas_threads(n=1):
    """Limit NumPy's BLAS to ``n`` threads for the rest of the process."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1 (BLAS threads), got {n!r}")
    return threadpool_limits(limits=n, user_api="blas")
