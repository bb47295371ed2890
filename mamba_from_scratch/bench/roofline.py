"""The machine's own limits, measured in the same run as the scan: the roofline bound.

Three micro-benchmarks, each a tight compiled loop:

* ``exp``: the package's ``fast_exp`` (the exp the scan kernels call) over a 4 KiB array,
  out[i] = fast_exp(x[i]), repeated. For float64 ``fast_exp`` is libm's scalar ``math.exp``,
  so the float64 bound prices that.
* ``fma``: ``v = (v * a + b) * a + b`` over 128 independent lanes held in L1, the dependent
  chains interleaved so the FMA units, not their latency, set the pace. 2 FLOP per FMA.
* ``bandwidth``: a parallel copy of a 128 MiB array (read + write bytes per second).

exp and FMA run on one thread and are multiplied by the thread count (perfect scaling: the
tightest bound, and one that other processes' load on the other core does not inflate); the
best of the repeats is taken, since slower runs measure the load, not the machine.

The scan's roofline bound at a size with E = b * l * d_inner * n state elements is

    compute = E * (exps * t_exp + flops / flop_rate)        (exp and FMAs share the FP units)
    memory  = bytes / bandwidth
    bound   = max(compute, memory)

with the counts per state element read off the kernels' loop bodies in scan/cpu.py
(a multiply or add is 1 FLOP, an FMA 2; the exp's own arithmetic is in t_exp):

    forward:   1 exp,  6 FLOP   delta*A; h = e*h + (delta u)*B (mul + FMA); y += C*h (FMA)
    backward:  1 exp, 19 FLOP   the forward's 6 again (state recomputation, with dC += dy*h
                                in place of y += C*h), then the adjoint: dh_t = dy*C + dh,
                                dB += dh_t*(delta u), dh_t*h*deltaA (2 muls), sum dA_bar*A,
                                sum dh_t*B, dA += dA_bar*delta (5 FMA), dh = deltaA*dh_t (mul)

The issue that asked for this bound estimated ~24 FLOP backward; counting the kernel gives 19,
which makes the bound a little tighter. Bytes are each (b, l, *) input read once and each
output written once (plus the forward's checkpoints); at n = 16 memory is never the limit.
"""
from __future__ import annotations

import time

import numba
import numpy as np
from numba import njit, prange

from ..scan.fastexp import fast_exp

FLOPS = {"forward": 6, "backward": 19}
EXPS = {"forward": 1, "backward": 1}
_FASTMATH = {"contract", "nsz"}   # no reassoc: the repeats must not be folded together
_LANES = 128                      # independent FMA chains (8 AVX-512 / 16 AVX2 float32 vectors)


@njit(fastmath=_FASTMATH, cache=True)
def _exp_loop(x, reps, out):
    """out = fast_exp(x), reps times over an L1/L2-resident (m,) array."""
    m = x.shape[0]
    for _ in range(reps):
        for i in range(m):
            out[i] = fast_exp(x[i])


@njit(fastmath=_FASTMATH, cache=True)
def _fma_loop(v, reps, a, b):
    """v <- (v * a + b) * a + b, reps times; v: (_LANES,) independent chains."""
    for _ in range(reps):
        for i in range(v.shape[0]):
            v[i] = (v[i] * a + b) * a + b


@njit(parallel=True, cache=True)
def _copy(src, dst):
    n = src.shape[0]
    for i in prange(n):
        dst[i] = src[i]


def _best(fn, repeats):
    fn()                                                       # compile / warm up
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def measure(dtype, repeats=5, threads=None):
    """Measure exp and FMA throughput and memory bandwidth on all Numba threads.

    Best of ``repeats`` (the machine's capability: slower runs are other processes' load).

    Args:
        dtype: np.float32 or np.float64.  repeats: timed runs.  threads: tasks (default:
            numba.get_num_threads()).
    Returns:
        dict: t_exp (seconds per exp, all threads together), flop_rate (FLOP/s, all threads),
        bandwidth (bytes/s), and the raw sizes.
    """
    dtype = np.dtype(dtype)
    tasks = numba.get_num_threads() if threads is None else threads
    rng = np.random.default_rng(0)
    m, reps = 1024, 2000
    x = rng.uniform(-10.0, 0.0, m).astype(dtype)                # the scan's delta * A range
    out = np.empty_like(x)
    t_exp = _best(lambda: _exp_loop(x, reps, out), repeats) / (m * reps) / tasks
    lanes = np.full(_LANES, 0.5, dtype)
    fma_reps = 50_000
    a, b = dtype.type(0.999), dtype.type(1e-3)                 # a fixed point near 1: no overflow
    t_fma = _best(lambda: _fma_loop(lanes, fma_reps, a, b), repeats)
    flop_rate = 4.0 * _LANES * fma_reps / t_fma * tasks        # 2 FMAs of 2 FLOP per lane and repeat
    src = np.ones(1 << 24, np.float64)                         # 128 MiB
    dst = np.empty_like(src)
    t_copy = _best(lambda: _copy(src, dst), repeats)
    return {"dtype": dtype.name, "tasks": tasks, "t_exp": t_exp, "flop_rate": flop_rate,
            "bandwidth": 2.0 * src.nbytes / t_copy}


def scan_bytes(shape, itemsize, pass_):
    """Bytes a pass must move at least: inputs read once, outputs written once.

    Args:
        shape: (b, l, d_inner, n).  itemsize: 4 or 8.  pass_: "forward" or "forward+backward".
    """
    b, l, d, n = shape
    bld, bln = b * l * d, b * l * n
    fwd = (2 * bld + 2 * bln + bld) * itemsize + b * -(-l // 32) * d * n * itemsize
    if pass_ == "forward":
        return fwd
    bwd = (3 * bld + 2 * bln + 2 * bld + 2 * bln) * itemsize   # dy, u, delta, B, C in; du, ddelta, dB, dC out
    return fwd + bwd


def bound(shape, itemsize, pass_, machine):
    """The roofline bound (seconds) of one scan pass at ``shape`` (see module docstring).

    Args:
        shape: (b, l, d_inner, n).  itemsize: bytes per element.
        pass_: "forward" or "forward+backward".  machine: a :func:`measure` result.
    Returns:
        dict with compute_s, memory_s, bound_s and the counts used.
    """
    elements = int(np.prod(shape))
    passes = ["forward"] if pass_ == "forward" else ["forward", "backward"]
    exps = sum(EXPS[p] for p in passes)
    flops = sum(FLOPS[p] for p in passes)
    compute = elements * (exps * machine["t_exp"] + flops / machine["flop_rate"])
    memory = scan_bytes(shape, itemsize, pass_) / machine["bandwidth"]
    return {"exps": exps, "flops": flops, "compute_s": compute, "memory_s": memory,
            "bound_s": max(compute, memory)}
