"""Process settings that make NumPy + Numba fast on a small machine, measured, not guessed.

Three things cost more than the arithmetic in a training step here:

* **BLAS threads fighting Numba's.** A multi-threaded BLAS (OpenBLAS spins its threads
  between calls) and Numba's parallel kernels each want every core and preempt each other:
  on 2 cores one step of the 4-layer Mamba took 3.0 s with 2 BLAS threads, 0.9 s with one.
  Our matrices are small, so one BLAS thread loses little (:func:`limit_blas_threads`).
* **Page faults on every temporary.** glibc hands each freed block above 128 KiB back to the
  kernel, so every (b, l, d_inner) temporary of a step is a fresh mmap whose pages fault on
  first touch: softplus on a (32, 64, 128) float32 array took 7.0 ms instead of 1.5 ms.
  :func:`reuse_freed_memory` raises glibc's thresholds so freed arrays are reused.

* **Numba's threads spinning while they wait.** Numba's OpenMP threading layer (GNU
  libgomp) keeps a thread that reaches the end of a parallel loop spinning for a while
  before it sleeps. On a machine shared with other work, a spinning thread holds a core
  that the thread it waits for needs: icl-train's ``--full`` step on 2 threads at load
  average 6 on 2 cores took 264-280 ms with spinning, 24-37 ms with
  ``OMP_WAIT_POLICY=PASSIVE``, and about 35 ms on 1 thread (medians of 15 steps, in
  separate processes run back to back). :func:`wait_passively` sets that, unless the user
  set it; it must run before the first parallel kernel loads libgomp.

:func:`tune_process` applies all three; the training, evaluation, benchmark and demo commands
call it at start-up. Library code never changes process settings behind a caller's back.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

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


def wait_passively():
    """Let idle OpenMP threads sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE``).

    A value the user set is kept. Returns the policy in force, or None when libgomp was
    already loaded before this call (then the environment variable comes too late).
    """
    policy = os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        with open("/proc/self/maps") as maps:
            loaded = any("libgomp" in line for line in maps)
    except OSError:
        loaded = False
    return None if loaded else policy


def tune_process(blas=1):
    """One BLAS thread, reused memory and sleeping idle threads: what every compute-heavy
    command wants here."""
    wait_passively()
    limit_blas_threads(blas)
    reuse_freed_memory()
