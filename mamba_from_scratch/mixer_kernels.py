"""The mixer's elementwise work, fused and compiled: the fast path of ``mixer.py``.

Outside the scan, a training step is dominated not by its matmuls but by elementwise
passes over (b, l, d_inner) arrays: the conv's four taps, SiLU and its derivative, the
gate ``y * silu(z)``, dt_proj's product and the softplus that makes delta. Written with the
NumPy layers each is several passes over memory and a temporary per operation (softplus
alone is about ten); here each is one compiled loop, parallel over (b, l) rows and
vectorised over channels (with ``fast_exp`` and ``log1p_unit`` for float32, as in the scan).

Each kernel computes exactly what a composition of ``layers/`` functions computes (the
docstrings name it), and tests/test_mixer_kernels.py checks that, so the NumPy layers stay
the readable definition. ``mixer_forward(..., backend="numpy")`` uses the layers, any other
backend uses these kernels.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .scan.fastexp import fast_exp, log1p_unit

# No nnan/ninf: sigmoid(-100) needs exp(100) = inf to give 1 / (1 + inf) = 0.
FASTMATH = {"contract", "nsz", "arcp"}
# Rules that keep these loops vectorised (4-10x faster than otherwise): every array is
# C-contiguous (a strided view such as ``xz[..., d:]`` is passed whole, with an offset);
# constants come in as ``one`` of the array's dtype (a literal 1 would promote float32
# arithmetic to float64); weights are laid out (k, d) so the loops over channels read them
# contiguously; and no views are made inside ``prange`` (scan/cpu.py says why).
FLUSH = 32  # steps summed in the array's dtype before they are added into float64 partials


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def _conv_silu_forward_kernel(xpad, wT, bias, xs, one):
    b, l, d = xs.shape
    k = wT.shape[0]
    for row in prange(b * l):
        bi, t = row // l, row % l
        for c in range(d):                          # xc = conv1d(x), built up in xs
            xs[bi, t, c] = bias[c]
        for j in range(k):
            for c in range(d):
                xs[bi, t, c] += wT[j, c] * xpad[bi, t + j, c]
        for c in range(d):                          # silu(xc) = xc sigmoid(xc)
            xc = xs[bi, t, c]
            xs[bi, t, c] = xc / (one + fast_exp(-xc))


def conv_silu_forward(x, weight, bias, conv_state=None):
    """silu(conv1d(x)): ``conv1d_forward`` then ``silu_forward``, in one pass.

    The cache keeps only the padded input: the backward recomputes the conv's output and its
    sigmoid (a few operations per element) rather than reading two more stored arrays.

    Args:
        x: (b, l, d) (any strides).  weight: (d, 1, k).  bias: (d,).  conv_state: (b, k-1, d) or None.
    Returns:
        xs: (b, l, d), cache (xpad (b, l+k-1, d), wT (k, d), bias).
    """
    b, l, d = x.shape
    k = weight.shape[-1]
    xpad = np.empty((b, l + k - 1, d), x.dtype)
    xpad[:, :k - 1] = 0 if conv_state is None else conv_state
    xpad[:, k - 1:] = x
    wT = np.ascontiguousarray(weight[:, 0, :].T)    # (k, d): contiguous over channels
    xs = np.empty((b, l, d), x.dtype)
    _conv_silu_forward_kernel(xpad, wT, bias, xs, x.dtype.type(1))
    return xs, (xpad, wT, bias)


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def _silu_conv_backward_kernel(dxs, dxs2, xpad, wT, bias, dxz, dstate, dw_part, db_part, zero, one):
    b, l, d = dxs.shape
    k = wT.shape[0]
    for bi in prange(b):                            # one sequence per task: its partial sums are its own
        # Rows 0..k-1: dweight's terms of the current FLUSH steps, row k: dbias's (summed in
        # the array's dtype, then added into the float64 partials); row k + 1: this step's
        # xc, then d(xc); rows k + 2 ..: d(conv input) of the last k - 1 steps, a ring buffer
        # (row k + 2 + tp % (k - 1) holds padded step tp) finished as it leaves the window.
        work = np.empty((2 * k + 1, d), dxs.dtype)
        for j in range(2 * k + 1):
            for c in range(d):
                work[j, c] = zero
        for t in range(l):
            for c in range(d):                      # xc again, as the forward computed it
                work[k + 1, c] = bias[c]
            for j in range(k):
                for c in range(d):
                    work[k + 1, c] += wT[j, c] * xpad[bi, t + j, c]
            for c in range(d):                      # d(xc) = silu'(xc) (dxs + dxs2)
                xc = work[k + 1, c]
                sc = one / (one + fast_exp(-xc))
                g = (dxs[bi, t, c] + dxs2[bi, t, c]) * sc * (one + xc * (one - sc))
                work[k + 1, c] = g
                work[k, c] += g
            for j in range(k):                      # dweight terms
                for c in range(d):
                    work[j, c] += work[k + 1, c] * xpad[bi, t + j, c]
            # d(padded input)[tp] = sum_j w[j] d(xc)[tp - j]: step tp = t (j = 0) is complete now,
            # steps t + 1 .. t + k - 1 still wait for later terms.
            r0 = k + 2 + t % (k - 1) if k > 1 else k + 1
            for c in range(d):
                done = work[r0, c] + wT[0, c] * work[k + 1, c] if k > 1 else wT[0, c] * work[k + 1, c]
                if t >= k - 1:
                    dxz[bi, t - (k - 1), c] = done
                else:
                    dstate[bi, t, c] = done
                if k > 1:
                    work[r0, c] = zero
            for j in range(1, k):
                r = k + 2 + (t + j) % (k - 1)
                for c in range(d):
                    work[r, c] += wT[j, c] * work[k + 1, c]
            if t % FLUSH == FLUSH - 1 or t == l - 1:
                for j in range(k):                  # additions only (see scan/cpu.py on run-time checks)
                    for c in range(d):
                        dw_part[bi, j, c] += work[j, c]
                        work[j, c] = zero
                for c in range(d):
                    db_part[bi, c] += work[k, c]
                    work[k, c] = zero
        for tp in range(l, l + k - 1):              # the last k - 1 padded steps: terms complete
            r = k + 2 + tp % (k - 1)
            for c in range(d):
                if tp >= k - 1:
                    dxz[bi, tp - (k - 1), c] = work[r, c]
                else:
                    dstate[bi, tp, c] = work[r, c]


def silu_conv_backward(dxs, cache, dxz, dxs2=None):
    """Backward of :func:`conv_silu_forward`: ``silu_backward`` then ``conv1d_backward``.
    Writes dx straight into the x half of ``dxz`` (as :func:`gate_backward` fills the z half).

    dweight and dbias sum over (b, l); each batch element's task keeps its own partial sums
    (in float64) and NumPy adds them, so there are no races and no atomics.

    Args:
        dxs: (b, l, d) gradient of the conv's output; ``dxs2``, if given, is added to it (the
            mixer's x feeds both the scan and x_proj), saving a pass over memory.
        dxz: (b, l, 2d) C-contiguous gradient buffer of in_proj's output, or a (b, l, d)
            one for dx alone.
    Returns:
        dweight: (d, 1, k), dbias: (d,), dconv_state: (b, k-1, d).
    """
    xpad, wT, bias = cache
    k, d = wT.shape
    b = xpad.shape[0]
    dtype = xpad.dtype
    dstate = np.empty((b, k - 1, d), dtype)
    dw_part, db_part = np.zeros((b, k, d)), np.zeros((b, d))
    dxs = np.ascontiguousarray(dxs)
    dxs2 = np.zeros_like(dxs) if dxs2 is None else np.ascontiguousarray(dxs2)
    _silu_conv_backward_kernel(dxs, dxs2, xpad, wT, bias, dxz, dstate, dw_part, db_part,
                               dtype.type(0), dtype.type(1))
    dweight = dw_part.sum(0).T[:, None, :].astype(dtype)        # (d, 1, k)
    return dweight, db_part.sum(0).astype(dtype), dstate


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def _gate_forward_kernel(y, xz, out, one):
    m, d = y.shape
    for i in prange(m):
        for c in range(d):
            z = xz[i, d + c]
            out[i, c] = y[i, c] * z / (one + fast_exp(-z))


def gate_forward(y, xz):
    """``y * silu(z)``, the multiplicative gate of the Mamba block, with z = xz[..., d:].

    Args:
        y: (b, l, d) scan output.  xz: (b, l, 2d) in_proj's output, C-contiguous.
    Returns:
        out: (b, l, d), cache (y, xz); the backward recomputes sigmoid(z) rather than read it.
    """
    shape = y.shape
    d = shape[-1]
    y2, xz2 = y.reshape(-1, d), xz.reshape(-1, 2 * d)
    out = np.empty_like(y2)
    _gate_forward_kernel(y2, xz2, out, y.dtype.type(1))
    return out.reshape(shape), (y2, xz2, shape)


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def _gate_backward_kernel(dout, y, xz, dy, dxz, one):
    m, d = y.shape
    for i in prange(m):
        for c in range(d):
            z = xz[i, d + c]
            sc = one / (one + fast_exp(-z))
            dy[i, c] = dout[i, c] * z * sc                                   # silu(z)
            dxz[i, d + c] = dout[i, c] * y[i, c] * sc * (one + z * (one - sc))  # dz


def gate_backward(dout, cache, dxz):
    """Backward of :func:`gate_forward`. Writes dz straight into the z half of ``dxz``.

    Args:
        dout: (b, l, d).  dxz: (b, l, 2d) C-contiguous gradient buffer of in_proj's output.
    Returns:
        dy: (b, l, d).
    """
    y2, xz2, shape = cache
    d = shape[-1]
    dy = np.empty_like(y2)
    _gate_backward_kernel(np.ascontiguousarray(dout).reshape(-1, d), y2, xz2, dy,
                          dxz.reshape(-1, 2 * d), y2.dtype.type(1))
    return dy.reshape(shape)


# Rows per task of the kernels that sum over rows (b * l): a constant, so the partition, and
# with it the order of the partial sums, depends on the shape only (never on the thread count).
ROWS_PER_TASK = 256
# Sums over channels vectorise only when LLVM may reorder them (reassoc); without it each
# sum is one dependent chain of multiply-adds, 4 cycles per channel.
FASTMATH_SUMS = FASTMATH | {"reassoc"}


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def _dt_softplus_forward_kernel(x_dbl, WT, bias, delta, sig, zero, one):
    m, d = delta.shape
    r = WT.shape[0]
    for row in prange(m):
        for c in range(d):
            delta[row, c] = bias[c]
        for j in range(r):                          # dt_proj: r (= dt_rank, 1 to 4 here) rank-1 updates
            a = x_dbl[row, j]
            for c in range(d):
                delta[row, c] += a * WT[j, c]
        for c in range(d):                          # softplus, and its derivative sigmoid
            x = delta[row, c]
            e = fast_exp(-abs(x))                   # in (0, 1]: nothing overflows
            inv = one / (one + e)
            sig[row, c] = inv if x >= zero else e * inv
            delta[row, c] = max(x, zero) + log1p_unit(e)


def dt_softplus_forward(x_dbl, weight, bias):
    """delta = softplus(dt @ weight.T + bias) with dt = x_dbl[..., :r]: ``linear_forward`` then
    ``softplus_forward``, in one pass.

    Args:
        x_dbl: (b, l, r + 2n) x_proj's output, C-contiguous (dt is its first r columns).
        weight: (d, r) dt_proj.weight.  bias: (d,).
    Returns:
        delta: (b, l, d), cache (x_dbl as (m, r + 2n), weight, sig = sigmoid of the pre-activation).
    """
    b, l, _ = x_dbl.shape
    d, r = weight.shape
    x2 = x_dbl.reshape(b * l, -1)
    delta, sig = np.empty((b * l, d), x_dbl.dtype), np.empty((b * l, d), x_dbl.dtype)
    dtype = x_dbl.dtype.type
    _dt_softplus_forward_kernel(x2, np.ascontiguousarray(weight.T), bias, delta, sig, dtype(0), dtype(1))
    return delta.reshape(b, l, d), (x2, weight, sig)


@njit(parallel=True, fastmath=FASTMATH_SUMS, cache=True)
def _dt_softplus_backward_kernel(ddelta, sig, x_dbl, WT, zero, dx_dbl, dW_part, db_part):
    m, d = ddelta.shape
    r = WT.shape[0]
    n_tasks = dW_part.shape[0]
    for task in prange(n_tasks):
        g = np.empty(d, ddelta.dtype)              # this row's gradient of the pre-activation
        for j in range(r):
            for c in range(d):
                dW_part[task, j, c] = zero
        for c in range(d):
            db_part[task, c] = zero
        for row in range(task * ROWS_PER_TASK, min((task + 1) * ROWS_PER_TASK, m)):
            for c in range(d):
                g[c] = ddelta[row, c] * sig[row, c]
                db_part[task, c] += g[c]
            for j in range(r):
                s = zero
                for c in range(d):                 # a sum only, no stores: one vectorised path
                    s += g[c] * WT[j, c]
                dx_dbl[row, j] = s
                a = x_dbl[row, j]
                for c in range(d):
                    dW_part[task, j, c] += g[c] * a


def dt_softplus_backward(ddelta, cache, dx_dbl):
    """Backward of :func:`dt_softplus_forward`: ``softplus_backward`` then ``linear_backward``.
    Writes d(dt) straight into the dt columns of ``dx_dbl``.

    dweight and dbias sum over the b * l rows; each task of ROWS_PER_TASK rows keeps its own
    partial sums and NumPy adds them (in float64), so there are no races and no atomics.

    Args:
        ddelta: (b, l, d).  dx_dbl: (b, l, r + 2n) C-contiguous gradient buffer of x_proj's output.
    Returns:
        dweight: (d, r), dbias: (d,).
    """
    x2, weight, sig = cache
    d, r = weight.shape
    m = x2.shape[0]
    n_tasks = -(-m // ROWS_PER_TASK)
    dtype = x2.dtype
    dW_part, db_part = np.empty((n_tasks, r, d), dtype), np.empty((n_tasks, d), dtype)
    _dt_softplus_backward_kernel(np.ascontiguousarray(ddelta).reshape(m, d), sig, x2,
                                 np.ascontiguousarray(weight.T), dtype.type(0), dx_dbl.reshape(m, -1),
                                 dW_part, db_part)
    dweight = np.ascontiguousarray(dW_part.sum(0, dtype=np.float64).T).astype(dtype)
    return dweight, db_part.sum(0, dtype=np.float64).astype(dtype)
