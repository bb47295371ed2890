"""The selective scan compiled for the CPU with Numba: the ``"numba"`` backend.

Same math as reference.py (read that first), organised for speed and memory:

* Parallel over (batch, channel). Every (b, d) pair runs its own independent recurrence, so
  the kernels ``prange`` over the flattened b * d_inner pairs (b = 1 still gives d_inner
  tasks) and loop over time inside, with the state h in a small local array of size n.
  The loops over n are written so LLVM vectorises them (AVX over the state dimension).
* A vectorisable exp. ``np.exp`` in Numba is a scalar libm call per element; the scan does
  one per (b, l, d_inner, n) element, so the kernels use ``fastexp.fast_exp`` instead.
* Checkpoints, not every state. The forward keeps h only at the start of every chunk of
  ``CHUNK`` steps: (b, ceil(l / CHUNK), d_inner, n) instead of the reference's
  (b, l, d_inner, n). The backward walks the chunks from last to first, recomputes the
  chunk's states (and their deltaA) from its checkpoint into a (CHUNK + 1, n) local buffer,
  then runs the adjoint backwards through it. One extra exp per element, CHUNK times less
  memory. (h_{t-1} is never recovered as (h_t - deltaB_u_t) / deltaA_t: deltaA underflows
  to 0 for large delta * |A| and that division gives inf/NaN.)
* No races without atomics. dB_t and dC_t sum over channels, dA over batch and time. Each
  parallel task owns a group of channels of one batch element and accumulates dB, dC into
  its own slice of a (n_groups, b, l, n) partial buffer, and dA, dD into its own (b, d)
  rows of float64 partial buffers; NumPy sums the partials afterwards. The result does not
  depend on how tasks are scheduled onto threads, and the partition (how many channel
  groups) depends on the shape only, so results are bit-identical on any thread count.

Glossary: b batch, l length, d = d_inner channels, n = d_state; deltaA = exp(delta * A),
deltaB_u = delta * B * u; a leading ``d`` means a gradient.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np
from numba import njit, prange

from .fastexp import fast_exp

CHUNK = 32  # steps between checkpoints: memory / CHUNK; backward buffers (2 CHUNK + 1) * n
# Backward partition, by shape only (never by thread count: the order of the partial sums
# of dB, dC must not change with the machine, or the same seed trains differently on 1 and
# 16 threads). Aim for MIN_TASKS tasks (enough to balance 16 threads), with at least
# MIN_GROUP channels per task so the (n_groups, b, l, n) partial buffers stay small.
MIN_TASKS = 32
MIN_GROUP = 16
# reassoc lets LLVM vectorise the sums over n; contract allows FMA. No nnan/ninf: the
# exp saturates to 0 / inf by comparisons that those flags would let LLVM delete.
FASTMATH = {"reassoc", "contract", "nsz", "arcp"}


@dataclass
class Saved:
    """What the forward keeps for the backward: states at chunk starts."""

    ckpt: np.ndarray  # (b, n_chunks, d_inner, n): ckpt[:, c] = the state before step c * chunk
    chunk: int


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def _forward_kernel(u, delta, A, B, C, D, h0, chunk, zero, y, h_last, ckpt):
    """Fill y (b, l, d), h_last (b, d, n) and ckpt (b, n_chunks, d, n); D, h0 are arrays."""
    b, l, d_inner = u.shape
    n = A.shape[1]
    for task in prange(b * d_inner):
        bi = task // d_inner
        di = task % d_inner
        h = h0[bi, di].copy()                                   # (n,) this pair's state
        for t in range(l):
            if t % chunk == 0:
                ckpt[bi, t // chunk, di] = h
            dlt = delta[bi, t, di]
            dlt_u = dlt * u[bi, t, di]
            acc = zero
            for i in range(n):
                h[i] = fast_exp(dlt * A[di, i]) * h[i] + dlt_u * B[bi, t, i]
                acc += C[bi, t, i] * h[i]
            y[bi, t, di] = acc + D[di] * u[bi, t, di]
        h_last[bi, di] = h


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def _backward_kernel(dy, u, delta, A, B, C, D, ckpt, dh_last, chunk, n_groups, zero,
                     du, ddelta, dB_part, dC_part, dA_part, dD_part, dh0):
    """Fill du, ddelta (b, l, d), dh0 (b, d, n) and the partial sums (see module docstring).

    Per (b, d) pair, walking t from l-1 down to 0, with dh holding deltaA_{t+1} * dh_{t+1}:
        dh_t      = C_t dy_t + dh
        d_deltaA  = dh_t * h_{t-1} * deltaA_t      (gradient w.r.t. delta_t A, through the exp)
        ddelta_t  = sum_n d_deltaA A + (sum_n dh_t B_t) u_t
        du_t      = (sum_n dh_t B_t) delta_t + D dy_t
        dA       += d_deltaA delta_t,   dB_t += dh_t delta_t u_t,   dh <- deltaA_t * dh_t
    and dC_t += dy_t h_t while recomputing the states (it needs no adjoint)."""
    b, l, d_inner = u.shape
    n = A.shape[1]
    n_chunks = ckpt.shape[1]
    group = (d_inner + n_groups - 1) // n_groups
    for task in prange(b * n_groups):
        bi = task // n_groups
        g = task % n_groups
        hs = np.empty((chunk + 1, n), u.dtype)      # hs[j] = h_{t0 + j - 1}: the chunk's states
        deltaA = np.empty((chunk, n), u.dtype)      # deltaA[j] = exp(delta_{t0 + j} A)
        dA_chunk = np.empty(n, u.dtype)             # this chunk's share of dA (<= chunk terms)
        dB_acc = dB_part[g, bi]                     # (l, n) this task's slice: no other writer
        dC_acc = dC_part[g, bi]                     # (l, n)
        for di in range(g * group, min((g + 1) * group, d_inner)):
            dh = dh_last[bi, di].copy()             # (n,)
            dA_acc = np.zeros(n, np.float64)        # (n,) float64: sums over all b * l terms
            dD_acc = 0.0
            for c in range(n_chunks - 1, -1, -1):
                t0 = c * chunk
                t1 = min(t0 + chunk, l)
                # Recompute the chunk's states from its checkpoint; dC_t needs only h_t.
                hs[0] = ckpt[bi, c, di]
                for t in range(t0, t1):
                    j = t - t0
                    dlt = delta[bi, t, di]
                    dlt_u = dlt * u[bi, t, di]
                    dyt = dy[bi, t, di]
                    for i in range(n):
                        deltaA[j, i] = fast_exp(dlt * A[di, i])
                        hs[j + 1, i] = deltaA[j, i] * hs[j, i] + dlt_u * B[bi, t, i]
                        dC_acc[t, i] += dyt * hs[j + 1, i]
                # Adjoint through the chunk, backwards in time.
                dA_chunk[:] = zero
                for t in range(t1 - 1, t0 - 1, -1):
                    j = t - t0
                    dlt = delta[bi, t, di]
                    ut = u[bi, t, di]
                    dyt = dy[bi, t, di]
                    dlt_u = dlt * ut
                    sum_dA = zero
                    sum_dhB = zero
                    for i in range(n):
                        dh_t = dyt * C[bi, t, i] + dh[i]
                        dB_acc[t, i] += dh_t * dlt_u
                        d_deltaA = dh_t * hs[j, i] * deltaA[j, i]
                        sum_dA += d_deltaA * A[di, i]
                        sum_dhB += dh_t * B[bi, t, i]
                        dA_chunk[i] += d_deltaA * dlt
                        dh[i] = deltaA[j, i] * dh_t
                    ddelta[bi, t, di] = sum_dA + sum_dhB * ut
                    du[bi, t, di] = sum_dhB * dlt + D[di] * dyt
                    dD_acc += dyt * ut
                for i in range(n):
                    dA_acc[i] += dA_chunk[i]
            dh0[bi, di] = dh
            dA_part[bi, di] = dA_acc
            dD_part[bi, di] = dD_acc


def forward(u, delta, A, B, C, D, h0):
    """Run the recurrence; keep a checkpoint every ``CHUNK`` steps.

    Args:
        u, delta: (b, l, d_inner).  A: (d_inner, n).  B, C: (b, l, n).
        D: (d_inner,) or None.  h0: (b, d_inner, n) or None (zero state).
    Returns:
        y: (b, l, d_inner), h_last: (b, d_inner, n), saved: :class:`Saved`.
    """
    b, l, d_inner = u.shape
    n = A.shape[1]
    dtype = u.dtype
    chunk = int(CHUNK)
    n_chunks = math.ceil(l / chunk)
    y = np.empty_like(u)
    h_last = np.empty((b, d_inner, n), dtype)
    ckpt = np.empty((b, n_chunks, d_inner, n), dtype)
    D_ = np.zeros(d_inner, dtype) if D is None else D
    h0_ = np.zeros((b, d_inner, n), dtype) if h0 is None else h0
    _forward_kernel(u, delta, A, B, C, D_, h0_, chunk, dtype.type(0), y, h_last, ckpt)
    return y, h_last, Saved(ckpt, chunk)


def backward(dy, u, delta, A, B, C, D, h0, saved, dh_last):
    """Reverse-time adjoint of :func:`forward`, recomputing states chunk by chunk.

    Args:
        dy: (b, l, d_inner).  u, delta, A, B, C, D, h0: the forward's inputs.
        saved: the forward's :class:`Saved`.  dh_last: (b, d_inner, n) or None.
    Returns:
        du, ddelta: (b, l, d_inner); dA: (d_inner, n); dB, dC: (b, l, n);
        dD: (d_inner,) or None when D is None; dh0: (b, d_inner, n).
    """
    b, l, d_inner = u.shape
    n = A.shape[1]
    dtype = u.dtype
    n_groups = n_channel_groups(b, d_inner)
    du = np.empty_like(u)
    ddelta = np.empty_like(u)
    dB_part = np.zeros((n_groups, b, l, n), dtype)
    dC_part = np.zeros((n_groups, b, l, n), dtype)
    dA_part = np.empty((b, d_inner, n), np.float64)
    dD_part = np.empty((b, d_inner), np.float64)
    dh0 = np.empty((b, d_inner, n), dtype)
    D_ = np.zeros(d_inner, dtype) if D is None else D
    dh_last_ = np.zeros((b, d_inner, n), dtype) if dh_last is None else dh_last
    _backward_kernel(dy, u, delta, A, B, C, D_, saved.ckpt, dh_last_, saved.chunk, n_groups,
                     dtype.type(0), du, ddelta, dB_part, dC_part, dA_part, dD_part, dh0)
    dB = dB_part[0] if n_groups == 1 else dB_part.sum(0)
    dC = dC_part[0] if n_groups == 1 else dC_part.sum(0)
    dA = dA_part.sum(0).astype(dtype)
    dD = None if D is None else dD_part.sum(0).astype(dtype)
    return du, ddelta, dA, dB, dC, dD, dh0


def n_channel_groups(b, d_inner):
    """How many channel groups the backward splits d_inner into (tasks = b * groups).

    A function of the shape only: the thread count must not change the summation order.
    """
    want = math.ceil(MIN_TASKS / b)
    return max(1, min(math.ceil(d_inner / MIN_GROUP), want))


def backward_extra_bytes(b, l, d_inner, n, dtype=np.float32, chunk=None):
    """Bytes the backward allocates besides its outputs, and the forward's checkpoints.

    Args:
        b, l, d_inner, n: scan sizes.  dtype: float32 or float64.  chunk: default CHUNK.
    Returns:
        dict with "checkpoints" (kept from forward to backward), "partials" (backward
        scratch: dB/dC partials beyond one copy, dA/dD float64 partials, None-replacements),
        and "per_thread" (chunk buffers, times the thread count).
    """
    item = np.dtype(dtype).itemsize
    chunk = CHUNK if chunk is None else chunk
    n_groups = n_channel_groups(b, d_inner)
    ckpt = b * math.ceil(l / chunk) * d_inner * n * item
    # dB, dC partials: (n_groups, b, l, n) each, summed into new arrays (none for one group).
    partials = 2 * n_groups * b * l * n * item if n_groups > 1 else 0
    partials += (b * d_inner * n + b * d_inner) * 8           # dA, dD partials
    partials += b * d_inner * n * item + d_inner * item       # zero dh_last and D if None
    per_thread = ((2 * chunk + 2) * n * item + 2 * n * 8) * numba.get_num_threads()
    return {"checkpoints": ckpt, "partials": partials, "per_thread": per_thread}


__all__ = ["forward", "backward", "CHUNK", "Saved", "backward_extra_bytes", "n_channel_groups",
           "MIN_TASKS", "MIN_GROUP"]
