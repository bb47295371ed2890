"""The selective scan compiled for the CPU with Numba: the ``"numba"`` backend.

Same math as reference.py (read that first), organised for speed and memory:

* Parallel over (batch, block of channels). Every (b, d) pair runs its own independent
  recurrence. The kernels split d_inner into blocks of ``BLOCK`` adjacent channels (d_inner
  is padded with zeros up to a multiple of BLOCK) and ``prange`` over the b * n_blocks
  (batch, block) pairs, looping over time inside. A block's state is an (n, BLOCK) local
  array, and every innermost loop runs over the BLOCK channels: the channels sit in the
  vector lanes. BLOCK is a constant, so LLVM knows the trip count and vectorises every such
  loop whole, whatever n is (vectorising over n instead left n = 16 to a scalar remainder
  loop, and needed a horizontal sum per channel and step for y, ddelta and du).
* A vectorisable exp. ``np.exp`` in Numba is a scalar libm call per element; the scan does
  one per (b, l, d_inner, n) element, so the kernels use ``fastexp.fast_exp`` instead.
* Checkpoints, not every state. The forward keeps h only at the start of every chunk of
  ``CHUNK`` steps: (b, ceil(l / CHUNK), d_inner, n) instead of the reference's
  (b, l, d_inner, n). The backward walks the chunks from last to first, recomputes the
  chunk's states (and their deltaA) from its checkpoint into a (CHUNK + 1, n, BLOCK) local
  buffer, then runs the adjoint backwards through it. One extra exp per element, CHUNK times
  less memory. (h_{t-1} is never recovered as (h_t - deltaB_u_t) / deltaA_t: deltaA
  underflows to 0 for large delta * |A| and that division gives inf/NaN.)
* No races without atomics. dB_t and dC_t sum over channels, dA over batch and time. Each
  parallel task of the backward owns a group of blocks of one batch element and accumulates
  dB, dC into its own slice of a (n_groups, b, l, n) partial buffer, and dA, dD into its own
  (b, ., block) rows of float64 partial buffers; NumPy sums the partials afterwards. The
  result does not depend on how tasks are scheduled onto threads, and the partition (how many
  groups) depends on the shape only, so results are bit-identical on any thread count.
* The same bits whatever the addresses. LLVM guards a vectorised loop with run-time overlap
  checks where it cannot prove that its arrays do not overlap, and falls back to a scalar copy
  of the loop (another summation order, other bits) when a check fails. So the kernels create
  no views inside ``prange`` (Numba then declares the array arguments ``noalias``), keep
  each task's scratch in one local array (checks between its rows depend on the shape only),
  and move into the separate float64 accumulators with additions only, which give the same
  bits vectorised or not.

Arrays inside the kernels are "blocked": channel d = k * BLOCK + c is index (k, c), e.g. u as
(b, l, n_blocks, BLOCK), a free reshape of the padded (b, l, d_pad). Indexing the lane c
as the last index, not as k * BLOCK + c, keeps the loads contiguous: Numba's handling of
negative indices hides the stride of a computed index from LLVM, which then gathers.

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

CHUNK = 32  # steps between checkpoints: memory / CHUNK; backward buffers (2 CHUNK + 1) * n * BLOCK
# Channels per vector block: the kernels' innermost loops run over BLOCK adjacent channels, a
# trip count known at compile time, so LLVM vectorises them whole (4 AVX2 vectors of float32)
# and no state size n is too short to vectorise. d_inner is padded up to a multiple of BLOCK.
BLOCK = 32
# Backward partition, by shape only (never by thread count: the order of the partial sums
# of dB, dC must not change with the machine, or the same seed trains differently on 1 and
# 16 threads). Aim for MIN_TASKS tasks (enough to balance 16 threads), with at least
# MIN_GROUP channels (one block) per task so the (n_groups, b, l, n) partial buffers stay small.
MIN_TASKS = 32
MIN_GROUP = BLOCK
# reassoc lets LLVM vectorise the sums over channels; contract allows FMA. No nnan/ninf: the
# exp saturates to 0 / inf by comparisons that those flags would let LLVM delete.
FASTMATH = {"reassoc", "contract", "nsz", "arcp"}


@dataclass
class Saved:
    """What the forward keeps for the backward: states at chunk starts, padded inputs."""

    ckpt: np.ndarray  # (b, n_chunks, n, nb, BLOCK): ckpt[:, c] = the state before step c * chunk
    chunk: int
    padded: tuple     # u, delta (b, l, nb, BLOCK), A.T (n, nb, BLOCK), D (nb, BLOCK): blocked and padded


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def _forward_kernel(u, delta, AT, B, C, D, h0, chunk, y, h_last, ckpt):
    """Fill y, h_last and ckpt. Blocked arrays (see the module docstring): u, delta, y
    (b, l, nb, BLOCK); AT (n, nb, BLOCK); D (nb, BLOCK); h0, h_last (b, n, nb, BLOCK);
    ckpt (b, n_chunks, n, nb, BLOCK). B, C: (b, l, n)."""
    b, l, nb, _ = u.shape
    n = AT.shape[0]
    for task in prange(b * nb):
        bi = task // nb
        k = task % nb
        work = np.empty((n + 1, BLOCK), u.dtype)                # rows 0..n-1: h[i, c]; row n: y_t
        for i in range(n):
            for c in range(BLOCK):
                work[i, c] = h0[bi, i, k, c]
        for t in range(l):
            if t % chunk == 0:
                for i in range(n):
                    for c in range(BLOCK):
                        ckpt[bi, t // chunk, i, k, c] = work[i, c]
            for c in range(BLOCK):
                work[n, c] = D[k, c] * u[bi, t, k, c]
            for i in range(n):
                Bi = B[bi, t, i]
                Ci = C[bi, t, i]
                for c in range(BLOCK):
                    dlt = delta[bi, t, k, c]
                    hv = fast_exp(dlt * AT[i, k, c]) * work[i, c] + (dlt * u[bi, t, k, c]) * Bi
                    work[i, c] = hv
                    work[n, c] += Ci * hv
            for c in range(BLOCK):
                y[bi, t, k, c] = work[n, c]
        for i in range(n):
            for c in range(BLOCK):
                h_last[bi, i, k, c] = work[i, c]


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def _backward_kernel(dy, u, delta, AT, B, C, D, ckpt, dh_last, chunk, n_groups, zero,
                     du, ddelta, dB_part, dC_part, dA_part, dD_part, dh0):
    """Fill du, ddelta, dh0 and the partial sums; blocked arrays as in :func:`_forward_kernel`,
    dB_part, dC_part (n_groups, b, l, n), dA_part (b, n, nb, BLOCK), dD_part (b, nb, BLOCK).

    Per (b, d) pair, walking t from l-1 down to 0, with dh holding deltaA_{t+1} * dh_{t+1}:
        dh_t      = C_t dy_t + dh
        d_deltaA  = dh_t * h_{t-1} * deltaA_t      (gradient w.r.t. delta_t A, through the exp)
        ddelta_t  = sum_n d_deltaA A + (sum_n dh_t B_t) u_t
        du_t      = (sum_n dh_t B_t) delta_t + D dy_t
        dA       += d_deltaA delta_t,   dB_t += dh_t delta_t u_t,   dh <- deltaA_t * dh_t
    and dC_t += dy_t h_t while recomputing the states (it needs no adjoint). A task runs this
    for BLOCK channels at a time, one per vector lane, for each block of its group in turn."""
    b, l, nb, _ = u.shape
    n = AT.shape[0]
    n_chunks = ckpt.shape[1]
    per_group = (nb + n_groups - 1) // n_groups         # blocks per task
    # Rows of the scratch array: the chunk's states hs[j] = h_{t0 + j - 1} (chunk + 1 rows),
    # deltaA[j] = exp(delta_{t0 + j} A) (chunk rows), dh, this chunk's share of dA, and three
    # rows of which only [., 0, :] is used, per channel: sum_n d_deltaA A, sum_n dh_t B_t and
    # this chunk's share of dD.
    HS, DA, DH, DAC = 0, chunk + 1, 2 * chunk + 1, 2 * chunk + 2
    SUM_DA, SUM_DHB, DDC = 2 * chunk + 3, 2 * chunk + 4, 2 * chunk + 5
    for task in prange(b * n_groups):
        bi = task // n_groups
        g = task % n_groups
        work = np.empty((2 * chunk + 6, n, BLOCK), u.dtype)
        acc64 = np.empty((n + 1, BLOCK), np.float64)    # dA (rows 0..n-1) and dD (row n) over all l
        for k in range(g * per_group, min((g + 1) * per_group, nb)):
            for i in range(n):
                for c in range(BLOCK):
                    work[DH, i, c] = dh_last[bi, i, k, c]
            for i in range(n + 1):
                for c in range(BLOCK):
                    acc64[i, c] = 0.0
            for ck in range(n_chunks - 1, -1, -1):
                t0 = ck * chunk
                t1 = min(t0 + chunk, l)
                # Recompute the chunk's states from its checkpoint; dC_t needs only h_t.
                for i in range(n):
                    for c in range(BLOCK):
                        work[HS, i, c] = ckpt[bi, ck, i, k, c]
                for t in range(t0, t1):
                    j = t - t0
                    for i in range(n):
                        Bi = B[bi, t, i]
                        s = zero
                        for c in range(BLOCK):
                            dlt = delta[bi, t, k, c]
                            e = fast_exp(dlt * AT[i, k, c])
                            work[DA + j, i, c] = e
                            hv = e * work[HS + j, i, c] + (dlt * u[bi, t, k, c]) * Bi
                            work[HS + j + 1, i, c] = hv
                            s += dy[bi, t, k, c] * hv
                        dC_part[g, bi, t, i] += s
                # Adjoint through the chunk, backwards in time.
                for i in range(n):
                    for c in range(BLOCK):
                        work[DAC, i, c] = zero
                for c in range(BLOCK):
                    work[DDC, 0, c] = zero
                for t in range(t1 - 1, t0 - 1, -1):
                    j = t - t0
                    for c in range(BLOCK):
                        work[SUM_DA, 0, c] = zero
                        work[SUM_DHB, 0, c] = zero
                    for i in range(n):
                        Bi = B[bi, t, i]
                        Ci = C[bi, t, i]
                        s = zero
                        for c in range(BLOCK):
                            dlt = delta[bi, t, k, c]
                            dh_t = dy[bi, t, k, c] * Ci + work[DH, i, c]
                            s += dh_t * (dlt * u[bi, t, k, c])
                            d_deltaA = dh_t * work[HS + j, i, c] * work[DA + j, i, c]
                            work[SUM_DA, 0, c] += d_deltaA * AT[i, k, c]
                            work[SUM_DHB, 0, c] += dh_t * Bi
                            work[DAC, i, c] += d_deltaA * dlt
                            work[DH, i, c] = work[DA + j, i, c] * dh_t
                        dB_part[g, bi, t, i] += s
                    for c in range(BLOCK):
                        ut = u[bi, t, k, c]
                        dyt = dy[bi, t, k, c]
                        ddelta[bi, t, k, c] = work[SUM_DA, 0, c] + work[SUM_DHB, 0, c] * ut
                        du[bi, t, k, c] = work[SUM_DHB, 0, c] * delta[bi, t, k, c] + D[k, c] * dyt
                        work[DDC, 0, c] += dyt * ut
                # Into the float64 totals: additions only, so a vectorised and a scalar
                # version of these loops give the same bits (see the module docstring).
                for i in range(n):
                    for c in range(BLOCK):
                        acc64[i, c] += work[DAC, i, c]
                for c in range(BLOCK):
                    acc64[n, c] += work[DDC, 0, c]
            for i in range(n):
                for c in range(BLOCK):
                    dh0[bi, i, k, c] = work[DH, i, c]
                    dA_part[bi, i, k, c] = acc64[i, c]
            for c in range(BLOCK):
                dD_part[bi, k, c] = acc64[n, c]


def padded_channels(d_inner):
    """d_inner rounded up to a multiple of BLOCK: the kernels' channel count."""
    return -(-d_inner // BLOCK) * BLOCK


def _blocked(x, dp):
    """(..., d) -> (..., dp // BLOCK, BLOCK), zero-padded to dp channels (a view if d == dp)."""
    if x.shape[-1] != dp:
        padded = np.zeros((*x.shape[:-1], dp), x.dtype)
        padded[..., :x.shape[-1]] = x
        x = padded
    return np.ascontiguousarray(x).reshape(*x.shape[:-1], dp // BLOCK, BLOCK)


def _unblocked(x, d_inner):
    """(..., nb, BLOCK) -> (..., d_inner), dropping the padding (no copy if there is none)."""
    x = x.reshape(*x.shape[:-2], -1)
    return x if x.shape[-1] == d_inner else np.ascontiguousarray(x[..., :d_inner])


def _state_blocked(h, b, d_inner, n, dp, dtype):
    """A (b, d_inner, n) state (or None: zeros) as the kernels' (b, n, nb, BLOCK)."""
    out = np.zeros((b, n, dp), dtype)
    if h is not None:
        out[:, :, :d_inner] = h.transpose(0, 2, 1)
    return out.reshape(b, n, dp // BLOCK, BLOCK)


def _state_unblocked(h, d_inner):
    """The kernels' (b, n, nb, BLOCK) state as (b, d_inner, n)."""
    b, n = h.shape[:2]
    return np.ascontiguousarray(h.reshape(b, n, -1)[:, :, :d_inner].transpose(0, 2, 1))


def forward(u, delta, A, B, C, D, h0):
    """Run the recurrence; keep a checkpoint every ``CHUNK`` steps.

    Padded channels (beyond d_inner, up to a multiple of BLOCK) have u = delta = A = 0 and a
    zero state, so they stay 0 and add nothing to dB, dC.

    Args:
        u, delta: (b, l, d_inner).  A: (d_inner, n).  B, C: (b, l, n).
        D: (d_inner,) or None.  h0: (b, d_inner, n) or None (zero state).
    Returns:
        y: (b, l, d_inner), h_last: (b, d_inner, n), saved: :class:`Saved`.
    """
    b, l, d_inner = u.shape
    n = A.shape[1]
    dtype = u.dtype
    dp = padded_channels(d_inner)
    chunk = int(CHUNK)
    n_chunks = math.ceil(l / chunk)
    u_, delta_ = _blocked(u, dp), _blocked(delta, dp)                  # (b, l, nb, BLOCK)
    AT = _blocked(A.T, dp)                                             # (n, nb, BLOCK)
    D_ = _blocked(np.zeros(d_inner, dtype) if D is None else D, dp)    # (nb, BLOCK)
    y = np.empty_like(u_)
    h_last = np.empty((b, n, dp // BLOCK, BLOCK), dtype)
    ckpt = np.empty((b, n_chunks, n, dp // BLOCK, BLOCK), dtype)
    _forward_kernel(u_, delta_, AT, B, C, D_, _state_blocked(h0, b, d_inner, n, dp, dtype), chunk,
                    y, h_last, ckpt)
    return _unblocked(y, d_inner), _state_unblocked(h_last, d_inner), Saved(ckpt, chunk, (u_, delta_, AT, D_))


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
    dp = padded_channels(d_inner)
    u_, delta_, AT, D_ = saved.padded
    n_groups = n_channel_groups(b, d_inner)
    du = np.empty_like(u_)
    ddelta = np.empty_like(u_)
    dB_part = np.zeros((n_groups, b, l, n), dtype)
    dC_part = np.zeros((n_groups, b, l, n), dtype)
    dA_part = np.empty((b, n, dp // BLOCK, BLOCK), np.float64)
    dD_part = np.empty((b, dp // BLOCK, BLOCK), np.float64)
    dh0 = np.empty((b, n, dp // BLOCK, BLOCK), dtype)
    _backward_kernel(_blocked(dy, dp), u_, delta_, AT, B, C, D_, saved.ckpt,
                     _state_blocked(dh_last, b, d_inner, n, dp, dtype), saved.chunk, n_groups,
                     dtype.type(0), du, ddelta, dB_part, dC_part, dA_part, dD_part, dh0)
    dB = dB_part[0] if n_groups == 1 else dB_part.sum(0)
    dC = dC_part[0] if n_groups == 1 else dC_part.sum(0)
    dA = np.ascontiguousarray(_unblocked(dA_part.sum(0), d_inner).T).astype(dtype)   # (d_inner, n)
    dD = None if D is None else _unblocked(dD_part.sum(0), d_inner).astype(dtype)
    return (_unblocked(du, d_inner), _unblocked(ddelta, d_inner), dA, dB, dC, dD,
            _state_unblocked(dh0, d_inner))


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
        scratch on the NumPy side: dB/dC partials beyond one copy, dA/dD float64 partials,
        the blocked dh_last and dh0, and the padded dy, du, ddelta when d_inner is not a
        multiple of BLOCK), and "per_thread" (each task's scratch, times the thread count).
    """
    item = np.dtype(dtype).itemsize
    chunk = CHUNK if chunk is None else chunk
    dp = padded_channels(d_inner)
    n_groups = n_channel_groups(b, d_inner)
    ckpt = b * math.ceil(l / chunk) * n * dp * item
    # dB, dC partials: (n_groups, b, l, n) each, summed into new arrays (none for one group).
    partials = 2 * n_groups * b * l * n * item if n_groups > 1 else 0
    partials += (b * n * dp + b * dp + n * dp + dp) * 8      # dA, dD partials and their sums
    partials += 2 * b * n * dp * item                         # dh_last and dh0, blocked
    if dp != d_inner:
        partials += 3 * b * l * dp * item                     # dy, du, ddelta padded
    per_thread = ((2 * chunk + 6) * n * BLOCK * item + (n + 1) * BLOCK * 8) * numba.get_num_threads()
    return {"checkpoints": ckpt, "partials": partials, "per_thread": per_thread}


__all__ = ["forward", "backward", "CHUNK", "BLOCK", "Saved", "backward_extra_bytes", "n_channel_groups",
           "padded_channels", "MIN_TASKS", "MIN_GROUP"]
