"""The selective scan as numba.cuda kernels: the ``"cuda"`` backend.

Same math as reference.py and the same memory plan as cpu.py (checkpoints every ``CHUNK``
steps, the backward recomputes each chunk), laid out for a GPU:

* One thread per (batch, channel). A block holds ``tpb`` consecutive channels of one batch
  element (grid = (ceil(d_inner / tpb), b)); the state h lives in a per-thread local array
  of n entries. n is a compile-time constant: :func:`kernels` builds and caches one set of
  kernels per (n, dtype, tpb, chunk), so the loops over n unroll and h stays in registers.
* Coalesced loads. u, delta, dy, y are (b, l, d_inner): at a fixed t the threads of a block
  read consecutive channels, i.e. consecutive addresses. B_t and C_t (b, l, n) are the same
  for every channel of a batch element, so the block stages a chunk of them in shared
  memory once (cooperatively, contiguous) and every thread reads them from there.
* No atomics. dB_t and dC_t sum over channels: at each step the block sums its threads'
  contributions with a tree reduction in shared memory and writes one row per block into
  a (n_blocks, b * l * 2n) partial buffer; a second kernel sums over blocks. dA (sum over
  batch and time) and dD are accumulated per thread in float64 registers, written to
  (b, d_inner, ·) partials and summed over b on the host.

Host NumPy arrays in, host NumPy arrays out; the checkpoints stay on the device between
forward and backward. ``from numba import cuda`` happens only in this module, which the
dispatch imports only when the cuda backend is asked for. It also runs, slowly, in the
CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``), which is how CI checks it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numba
import numpy as np
from numba import cuda

CHUNK = 16  # steps between checkpoints; the backward keeps (CHUNK + 1) * n states per thread
MAX_TPB = 128  # most channels per block (tests lower it to get several blocks on tiny layers)


@dataclass
class Saved:
    """What the forward keeps for the backward (on the device)."""

    ckpt: object  # device array (b, n_chunks, d_inner, n): state before step c * chunk
    chunk: int


SHARED_BYTES = 48 * 1024  # static shared memory a block may use on every CUDA GPU


def shared_bytes(n, itemsize, tpb, chunk):
    """Shared memory of one backward block: B, C of a chunk and the (2n, tpb) reduction buffer."""
    return (2 * chunk * n + 2 * n * tpb) * itemsize


def threads_per_block(d_inner, n=16, itemsize=4, chunk=None):
    """Channels per block: a power of 2 (for the tree reduction) from 32 up to MAX_TPB,
    no more than d_inner needs, and small enough for the backward's shared memory.

    Raises:
        ValueError: if even 32 threads need more shared memory than a block has (n too big).
    """
    chunk = CHUNK if chunk is None else chunk
    if shared_bytes(n, itemsize, 32, chunk) > SHARED_BYTES:
        biggest = SHARED_BYTES // ((2 * chunk + 64) * itemsize)
        raise ValueError(f"A must have n = A.shape[1] (d_state) <= {biggest} for the cuda backend "
                         f"with {8 * itemsize}-bit floats, got {n}; use backend='numba'")
    tpb = 32
    while (tpb < d_inner and tpb < MAX_TPB
           and shared_bytes(n, itemsize, 2 * tpb, chunk) <= SHARED_BYTES):
        tpb *= 2
    return tpb


@lru_cache(maxsize=None)
def kernels(n, dtype_name, tpb, chunk):
    """Compile (once) the forward, backward and block-sum kernels for one configuration.

    Args:
        n: state size (compile-time constant).  dtype_name: "float32" or "float64".
        tpb: threads (channels) per block, a power of 2.  chunk: steps per checkpoint.
    Returns:
        (forward_kernel, backward_kernel, sum_blocks_kernel)
    """
    # Shapes of shared/local arrays must be compile-time constants, not expressions.
    N, N2, TPB, K, K1 = n, 2 * n, tpb, chunk, chunk + 1
    real = numba.float32 if dtype_name == "float32" else numba.float64
    f64 = numba.float64

    @cuda.jit
    def forward_kernel(u, delta, A, B, C, D, h0, y, h_last, ckpt):
        b, l, d_inner = u.shape
        bi = cuda.blockIdx.y
        tid = cuda.threadIdx.x
        di = cuda.blockIdx.x * TPB + tid
        active = di < d_inner                      # inactive threads still help stage B, C
        sB = cuda.shared.array((K, N), real)       # B_t, C_t of this chunk, shared by channels
        sC = cuda.shared.array((K, N), real)
        h = cuda.local.array(N, real)
        a = cuda.local.array(N, real)
        for i in range(N):
            h[i] = h0[bi, di, i] if active else real(0)
            a[i] = A[di, i] if active else real(0)
        d_skip = D[di] if active else real(0)
        n_chunks = (l + K - 1) // K
        for c in range(n_chunks):
            t0 = c * K
            steps = min(K, l - t0)
            cuda.syncthreads()                     # everyone is done with the previous chunk
            for idx in range(tid, steps * N, TPB):
                sB[idx // N, idx % N] = B[bi, t0 + idx // N, idx % N]
                sC[idx // N, idx % N] = C[bi, t0 + idx // N, idx % N]
            cuda.syncthreads()
            if active:
                for i in range(N):
                    ckpt[bi, c, di, i] = h[i]
                for j in range(steps):
                    t = t0 + j
                    dlt = delta[bi, t, di]
                    ut = u[bi, t, di]
                    dlt_u = dlt * ut
                    acc = real(0)
                    for i in range(N):
                        h[i] = math.exp(dlt * a[i]) * h[i] + dlt_u * sB[j, i]
                        acc += sC[j, i] * h[i]
                    y[bi, t, di] = acc + d_skip * ut
        if active:
            for i in range(N):
                h_last[bi, di, i] = h[i]

    @cuda.jit
    def backward_kernel(dy, u, delta, A, B, C, D, ckpt, dh_last,
                        du, ddelta, dBC_part, dA_part, dD_part, dh0):
        b, l, d_inner = u.shape
        bi = cuda.blockIdx.y
        blk = cuda.blockIdx.x
        tid = cuda.threadIdx.x
        di = blk * TPB + tid
        active = di < d_inner
        sB = cuda.shared.array((K, N), real)
        sC = cuda.shared.array((K, N), real)
        red = cuda.shared.array((N2, TPB), real)   # [i, thread]: dB_t (i < N), dC_t (i >= N)
        hs = cuda.local.array((K1, N), real)       # hs[j] = state before step t0 + j
        dh = cuda.local.array(N, real)                # deltaA_{t+1} * dh_{t+1}
        a = cuda.local.array(N, real)
        dA_acc = cuda.local.array(N, f64)
        for i in range(N):
            dh[i] = dh_last[bi, di, i] if active else real(0)
            a[i] = A[di, i] if active else real(0)
            dA_acc[i] = 0
        d_skip = D[di] if active else real(0)
        dD_acc = f64(0)
        n_chunks = (l + K - 1) // K
        for cc in range(n_chunks):
            c = n_chunks - 1 - cc
            t0 = c * K
            steps = min(K, l - t0)
            cuda.syncthreads()
            for idx in range(tid, steps * N, TPB):
                sB[idx // N, idx % N] = B[bi, t0 + idx // N, idx % N]
                sC[idx // N, idx % N] = C[bi, t0 + idx // N, idx % N]
            cuda.syncthreads()
            if active:                                # recompute the chunk's states
                for i in range(N):
                    hs[0, i] = ckpt[bi, c, di, i]
                for j in range(steps):
                    dlt = delta[bi, t0 + j, di]
                    dlt_u = dlt * u[bi, t0 + j, di]
                    for i in range(N):
                        hs[j + 1, i] = math.exp(dlt * a[i]) * hs[j, i] + dlt_u * sB[j, i]
            for jj in range(steps):                   # adjoint, backwards in time
                j = steps - 1 - jj
                t = t0 + j
                if active:
                    dlt = delta[bi, t, di]
                    ut = u[bi, t, di]
                    g = dy[bi, t, di]
                    sum_dA = real(0)
                    sum_dhB = real(0)
                    for i in range(N):
                        e = math.exp(dlt * a[i])      # deltaA_t: recomputing beats storing it
                        dh_t = g * sC[j, i] + dh[i]
                        red[i, tid] = dh_t * dlt * ut
                        red[N + i, tid] = g * hs[j + 1, i]
                        d_deltaA = dh_t * hs[j, i] * e
                        sum_dA += d_deltaA * a[i]
                        sum_dhB += dh_t * sB[j, i]
                        dA_acc[i] += d_deltaA * dlt
                        dh[i] = e * dh_t
                    ddelta[bi, t, di] = sum_dA + sum_dhB * ut
                    du[bi, t, di] = sum_dhB * dlt + d_skip * g
                    dD_acc += g * ut
                else:
                    for i in range(2 * N):
                        red[i, tid] = 0
                cuda.syncthreads()
                s = TPB // 2                          # tree sum over threads, all threads busy
                while s > 0:
                    for w in range(tid, 2 * N * s, TPB):
                        red[w // s, w % s] += red[w // s, w % s + s]
                    cuda.syncthreads()
                    s //= 2
                for i in range(tid, 2 * N, TPB):
                    dBC_part[blk, (bi * l + t) * 2 * N + i] = red[i, 0]
                cuda.syncthreads()                    # red[:, 0] is read before it is rewritten
        if active:
            for i in range(N):
                dh0[bi, di, i] = dh[i]
                dA_part[bi, di, i] = dA_acc[i]
            dD_part[bi, di] = dD_acc

    @cuda.jit
    def sum_blocks_kernel(part, out):
        k = cuda.grid(1)
        if k < out.shape[0]:
            acc = real(0)
            for r in range(part.shape[0]):
                acc += part[r, k]
            out[k] = acc

    return forward_kernel, backward_kernel, sum_blocks_kernel


def _grid(b, d_inner, n, dtype, chunk):
    tpb = threads_per_block(d_inner, n, np.dtype(dtype).itemsize, chunk)
    return (math.ceil(d_inner / tpb), b), tpb


def forward(u, delta, A, B, C, D, h0):
    """Run the recurrence on the GPU; keep a checkpoint every ``CHUNK`` steps (on the device).

    Args:
        u, delta: (b, l, d_inner).  A: (d_inner, n).  B, C: (b, l, n).
        D: (d_inner,) or None.  h0: (b, d_inner, n) or None (zero state).
    Returns:
        y: (b, l, d_inner), h_last: (b, d_inner, n) host arrays; saved: :class:`Saved`.
    """
    b, l, d_inner = u.shape
    n = A.shape[1]
    dtype = u.dtype
    chunk = int(CHUNK)
    grid, tpb = _grid(b, d_inner, n, dtype, chunk)
    fwd, _, _ = kernels(n, dtype.name, tpb, chunk)
    D_ = np.zeros(d_inner, dtype) if D is None else D
    h0_ = np.zeros((b, d_inner, n), dtype) if h0 is None else h0
    dev = [cuda.to_device(x) for x in (u, delta, A, B, C, D_, h0_)]
    y = cuda.device_array((b, l, d_inner), dtype)
    h_last = cuda.device_array((b, d_inner, n), dtype)
    ckpt = cuda.device_array((b, math.ceil(l / chunk), d_inner, n), dtype)
    fwd[grid, tpb](*dev, y, h_last, ckpt)
    return y.copy_to_host(), h_last.copy_to_host(), Saved(ckpt, chunk)


def backward(dy, u, delta, A, B, C, D, h0, saved, dh_last):
    """Reverse-time adjoint of :func:`forward` on the GPU, recomputing states per chunk.

    Arguments and returns are :func:`scan.cpu.backward`'s (``saved`` is this module's
    :class:`Saved`); the gradients come back as host arrays.
    """
    b, l, d_inner = u.shape
    n = A.shape[1]
    dtype = u.dtype
    grid, tpb = _grid(b, d_inner, n, dtype, saved.chunk)
    _, bwd, sum_blocks = kernels(n, dtype.name, tpb, saved.chunk)
    D_ = np.zeros(d_inner, dtype) if D is None else D
    dh_last_ = np.zeros((b, d_inner, n), dtype) if dh_last is None else dh_last
    dev = [cuda.to_device(x) for x in (dy, u, delta, A, B, C, D_)]
    du = cuda.device_array((b, l, d_inner), dtype)
    ddelta = cuda.device_array((b, l, d_inner), dtype)
    dBC_part = cuda.device_array((grid[0], b * l * 2 * n), dtype)
    dA_part = cuda.device_array((b, d_inner, n), np.float64)
    dD_part = cuda.device_array((b, d_inner), np.float64)
    dh0 = cuda.device_array((b, d_inner, n), dtype)
    bwd[grid, tpb](*dev, saved.ckpt, cuda.to_device(dh_last_),
                   du, ddelta, dBC_part, dA_part, dD_part, dh0)
    dBC = cuda.device_array(b * l * 2 * n, dtype)
    sum_blocks[math.ceil(dBC.shape[0] / 256), 256](dBC_part, dBC)
    dBC = dBC.copy_to_host().reshape(b, l, 2 * n)
    dB = np.ascontiguousarray(dBC[..., :n])
    dC = np.ascontiguousarray(dBC[..., n:])
    dA = dA_part.copy_to_host().sum(0).astype(dtype)
    dD = None if D is None else dD_part.copy_to_host().sum(0).astype(dtype)
    return du.copy_to_host(), ddelta.copy_to_host(), dA, dB, dC, dD, dh0.copy_to_host()


__all__ = ["forward", "backward", "kernels", "threads_per_block", "shared_bytes", "CHUNK", "MAX_TPB", "Saved"]
