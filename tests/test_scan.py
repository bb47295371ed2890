"""The selective scan: every CPU backend against the NumPy reference, finite differences,
input validation, long sequences and the backward's memory.

The "cuda" backend has its own file (tests/test_scan_cuda.py): it runs in the CUDA simulator
in a subprocess so this file keeps the real Numba.
"""
import tracemalloc

import numpy as np
import pytest

from mamba_from_scratch.gradcheck import numerical_grad, rel_error
from mamba_from_scratch.scan import BACKENDS, cpu, gpu_available, selective_scan_backward, selective_scan_forward

GRAD_NAMES = ("du", "ddelta", "dA", "dB", "dC", "dD", "dh0")
TOL = {np.float64: 1e-10, np.float32: 1e-5}


def make_inputs(rng, b, l, d_inner, n, dtype=np.float64, with_D=True, with_h0=True):
    """Random scan inputs in the ranges a Mamba layer produces (delta from softplus, A < 0)."""
    u = rng.standard_normal((b, l, d_inner))
    delta = np.exp(rng.uniform(np.log(1e-3), np.log(2.0), (b, l, d_inner)))
    A = -np.exp(rng.uniform(-1.0, 2.5, (d_inner, n)))  # |A| from 0.37 to 12: some deltaA near 0
    B = rng.standard_normal((b, l, n))
    C = rng.standard_normal((b, l, n))
    D = rng.standard_normal(d_inner) if with_D else None
    h0 = rng.standard_normal((b, d_inner, n)) if with_h0 else None
    cast = lambda x: None if x is None else x.astype(dtype)
    return tuple(cast(x) for x in (u, delta, A, B, C, D, h0))


def run_both(backend, inputs, dy, dh_last):
    y, h_last, cache = selective_scan_forward(*inputs, backend=backend)
    grads = selective_scan_backward(dy, cache, dh_last)
    return y, h_last, grads


@pytest.fixture
def small_chunk(monkeypatch):
    """Checkpoint every 4 steps so short test sequences cross several chunk boundaries."""
    monkeypatch.setattr(cpu, "CHUNK", 4)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(2, 5, 3, 4), (2, 37, 5, 4), (1, 1, 3, 1), (3, 16, 2, 1)],
                         ids=["tiny", "l-not-multiple-of-chunk", "l1-n1", "n1"])
@pytest.mark.parametrize("with_D,with_h0,with_dh_last", [(True, True, True), (False, False, False),
                                                         (True, False, True), (False, True, False)])
def test_numba_matches_reference(dtype, shape, with_D, with_h0, with_dh_last, small_chunk):
    rng = np.random.default_rng(sum(shape) + 10 * with_D + 100 * with_h0)
    b, l, d_inner, n = shape
    inputs = make_inputs(rng, b, l, d_inner, n, dtype, with_D, with_h0)
    dy = rng.standard_normal((b, l, d_inner)).astype(dtype)
    dh_last = rng.standard_normal((b, d_inner, n)).astype(dtype) if with_dh_last else None
    y_ref, h_ref, g_ref = run_both("numpy", inputs, dy, dh_last)
    y, h, g = run_both("numba", inputs, dy, dh_last)
    tol = TOL[dtype]
    assert y.dtype == dtype and h.dtype == dtype
    assert rel_error(y, y_ref) < tol
    assert rel_error(h, h_ref) < tol
    for name, a, r in zip(GRAD_NAMES, g, g_ref):
        if name == "dD" and not with_D:
            assert a is None and r is None
            continue
        assert a.dtype == dtype and a.shape == r.shape, name
        assert rel_error(a, r) < tol, f"{name}: {rel_error(a, r):.2e}"


def test_numba_long_sequence_small_chunk(monkeypatch):
    """l = 300 with a chunk of 7: many chunks and a ragged last one."""
    monkeypatch.setattr(cpu, "CHUNK", 7)
    rng = np.random.default_rng(3)
    inputs = make_inputs(rng, 2, 300, 4, 3)
    dy = rng.standard_normal((2, 300, 4))
    dh_last = rng.standard_normal((2, 4, 3))
    y_ref, h_ref, g_ref = run_both("numpy", inputs, dy, dh_last)
    y, h, g = run_both("numba", inputs, dy, dh_last)
    assert rel_error(y, y_ref) < 1e-10 and rel_error(h, h_ref) < 1e-10
    for name, a, r in zip(GRAD_NAMES, g, g_ref):
        assert rel_error(a, r) < 1e-10, name


def test_numba_independent_of_thread_count():
    """The backward splits channels into groups by shape only; the result is bit-identical."""
    import numba
    rng = np.random.default_rng(4)
    inputs = make_inputs(rng, 1, 20, 9, 4)
    dy = rng.standard_normal((1, 20, 9))
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        _, _, g1 = run_both("numba", inputs, dy, None)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        _, _, g2 = run_both("numba", inputs, dy, None)
    finally:
        numba.set_num_threads(before)
    for name, a, r in zip(GRAD_NAMES, g1, g2):
        assert np.array_equal(a, r), name          # bit-identical: the partition is by shape


# ---------------------------------------------------------------- finite differences

@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_finite_differences(backend, monkeypatch):
    monkeypatch.setattr(cpu, "CHUNK", 2)  # l = 5: chunks [0, 2), [2, 4), [4, 5)
    rng = np.random.default_rng(5)
    b, l, d_inner, n = 2, 5, 3, 4
    inputs = list(make_inputs(rng, b, l, d_inner, n))
    inputs[1] = np.exp(rng.uniform(np.log(0.05), np.log(0.8), (b, l, d_inner)))  # delta +- eps stays > 0
    dy = rng.standard_normal((b, l, d_inner))
    dh_last = rng.standard_normal((b, d_inner, n))

    def loss():
        y, h_last, _ = selective_scan_forward(*inputs, backend=backend)
        return float(np.sum(y * dy) + np.sum(h_last * dh_last))

    _, _, cache = selective_scan_forward(*inputs, backend=backend)
    grads = selective_scan_backward(dy, cache, dh_last)
    for name, x, g in zip(GRAD_NAMES, inputs, grads):
        num = numerical_grad(loss, x)
        err = rel_error(g, num)
        assert err < 1e-6, f"{backend} {name}: rel error {err:.2e}"


# ---------------------------------------------------------------- delta = 0

def zero_some_deltas(rng, delta):
    """delta with about a third of its entries exactly 0 (softplus underflow in float32)."""
    return np.where(rng.random(delta.shape) < 0.35, 0, delta).astype(delta.dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_delta_zero_is_a_step_that_changes_nothing(dtype, small_chunk):
    """delta = 0: deltaA = 1 and deltaB_u = 0, so h_t = h_{t-1}; numba agrees with numpy."""
    rng = np.random.default_rng(21)
    inputs = list(make_inputs(rng, 2, 11, 3, 4, dtype))
    inputs[1] = zero_some_deltas(rng, inputs[1])
    inputs[1][0, 3:6, 1] = 0                                       # a run of zero steps
    dy = rng.standard_normal((2, 11, 3)).astype(dtype)
    y_ref, h_ref, g_ref = run_both("numpy", inputs, dy, None)
    y, h, g = run_both("numba", inputs, dy, None)
    _, _, cache = selective_scan_forward(*inputs, backend="numpy")
    hs = cache.saved                                               # (b, l, d_inner, n) every state
    for t in (3, 4, 5):                                            # zero steps: the state stays h_2
        assert np.array_equal(hs[0, t, 1], hs[0, 2, 1])
    names = ("y", "h_last") + GRAD_NAMES
    for name, a, r in zip(names, (y, h, *g), (y_ref, h_ref, *g_ref), strict=True):
        assert np.all(np.isfinite(a)), name
        assert rel_error(a, r) < TOL[dtype], f"{name}: {rel_error(a, r):.2e}"


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_finite_differences_at_delta_zero(backend, monkeypatch):
    """Every gradient, ddelta included, is right where delta = 0.

    The scan is analytic in delta through 0 (exp(delta A), delta B u), so the derivative at
    delta = 0 is the central difference of that extension; the loss below turns the input
    check off only so that delta - eps (< 0) can be evaluated."""
    monkeypatch.setattr(cpu, "CHUNK", 2)
    rng = np.random.default_rng(22)
    b, l, d_inner, n = 2, 5, 3, 4
    inputs = list(make_inputs(rng, b, l, d_inner, n))
    inputs[1] = zero_some_deltas(rng, inputs[1])
    assert np.sum(inputs[1] == 0) >= 5
    dy = rng.standard_normal((b, l, d_inner))
    dh_last = rng.standard_normal((b, d_inner, n))

    def loss():
        y, h_last, _ = selective_scan_forward(*inputs, backend=backend, check=False)
        return float(np.sum(y * dy) + np.sum(h_last * dh_last))

    _, _, cache = selective_scan_forward(*inputs, backend=backend)
    grads = selective_scan_backward(dy, cache, dh_last)
    for name, x, g in zip(GRAD_NAMES, inputs, grads):
        num = numerical_grad(loss, x)
        err = rel_error(g, num)
        assert err < 1e-6, f"{backend} {name}: rel error {err:.2e}"


# ---------------------------------------------------------------- input validation

def _good(rng=None):
    return list(make_inputs(rng or np.random.default_rng(6), 2, 5, 3, 4))


@pytest.mark.parametrize("index,bad,name", [
    (0, np.zeros((2, 5)), "u"),                      # wrong ndim
    (1, np.ones((2, 4, 3)), "delta"),                # mismatched shape
    (2, -np.ones((3, 4, 1)), "A"),                   # wrong ndim
    (2, -np.ones((4, 4)), "A"),                      # d_inner mismatch
    (3, np.ones((2, 5, 5)), "B"),                    # n mismatch
    (4, np.ones((2, 5)), "C"),                       # wrong ndim
    (5, np.ones(4), "D"),                            # wrong length
    (6, np.ones((2, 3, 5)), "h0"),                   # wrong n
    (0, np.ones((2, 5, 3), np.int64), "u"),          # integer dtype
    (3, np.ones((2, 5, 4), np.float32), "B"),        # mixed dtypes
    (0, np.full((2, 5, 3), np.nan), "u"),            # NaN
    (4, np.full((2, 5, 4), np.inf), "C"),            # Inf
    (1, -np.ones((2, 5, 3)), "delta"),               # delta must be >= 0
    (2, np.ones((3, 4)), "A"),                       # A must be <= 0
    (0, np.ones((2, 0, 3)), "u"),                    # l = 0
])
def test_bad_input_raises_naming_argument(index, bad, name):
    args = _good()
    args[index] = bad
    with pytest.raises(ValueError, match=name):
        selective_scan_forward(*args, backend="numpy")


@pytest.mark.skipif(gpu_available(), reason="a real GPU is present")
def test_cuda_without_a_gpu_says_so():
    with pytest.raises(ValueError, match=r"backend='cuda': no CUDA GPU found; use backend='numba'"):
        selective_scan_forward(*_good(), backend="cuda")


def test_unknown_backend_lists_options():
    with pytest.raises(ValueError, match="backend") as info:
        selective_scan_forward(*_good(), backend="torch")
    for option in BACKENDS:
        assert repr(option) in str(info.value)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_bad_upstream_gradients(backend):
    args = _good()
    _, _, cache = selective_scan_forward(*args, backend=backend)
    with pytest.raises(ValueError, match="dy"):
        selective_scan_backward(np.ones((2, 5, 4)), cache)
    with pytest.raises(ValueError, match="dy"):
        selective_scan_backward(np.ones((2, 5, 3), np.float32), cache)
    with pytest.raises(ValueError, match="dh_last"):
        selective_scan_backward(np.ones((2, 5, 3)), cache, dh_last=np.ones((2, 3, 5)))
    with pytest.raises(ValueError, match="cache"):
        selective_scan_backward(np.ones((2, 5, 3)), cache=(1, 2))


# ---------------------------------------------------------------- long sequences, memory

def test_long_sequence_stays_finite():
    """l = 100_000 with the official A init and delta in its init range: no overflow, no NaN."""
    rng = np.random.default_rng(7)
    b, l, d_inner, n = 1, 100_000, 2, 4
    u = rng.standard_normal((b, l, d_inner)).astype(np.float32)
    delta = np.exp(rng.uniform(np.log(1e-3), np.log(1e-1), (b, l, d_inner))).astype(np.float32)
    A = -np.tile(np.arange(1, n + 1, dtype=np.float32), (d_inner, 1))  # -exp(log(1..n))
    B = rng.standard_normal((b, l, n)).astype(np.float32)
    C = rng.standard_normal((b, l, n)).astype(np.float32)
    y, h_last, cache = selective_scan_forward(u, delta, A, B, C, backend="numba")
    grads = selective_scan_backward(rng.standard_normal((b, l, d_inner)).astype(np.float32), cache)
    for x in (y, h_last, *[g for g in grads if g is not None]):
        assert np.all(np.isfinite(x))
    # The state is a decaying sum of O(1) inputs: it stays O(1), not growing with l.
    assert np.max(np.abs(h_last)) < 10


def test_numba_backward_memory_is_chunked():
    """No (b, l, d_inner, n) array: checkpoints are 1/CHUNK of it, the backward's scratch less."""
    rng = np.random.default_rng(8)
    b, l, d_inner, n = 2, 512, 64, 16
    inputs = make_inputs(rng, b, l, d_inner, n, np.float32)
    full = b * l * d_inner * n * 4                                 # bytes of all states
    _, _, cache = selective_scan_forward(*inputs, backend="numba")
    assert cache.saved.ckpt.nbytes <= full / cpu.CHUNK + b * d_inner * n * 4
    dy = rng.standard_normal((b, l, d_inner)).astype(np.float32)
    outputs = 2 * dy.nbytes + 2 * b * l * n * 4 + (d_inner * n + d_inner + b * d_inner * n) * 4
    selective_scan_backward(dy, cache)  # compile outside the traced region
    tracemalloc.start()  # NumPy reports its allocations to tracemalloc, and so do numba's worker threads'
    selective_scan_backward(dy, cache)  # per-task scratch (measured: one task's on 2 threads, none on 1)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    extra = cpu.backward_extra_bytes(b, l, d_inner, n)
    bound = outputs + extra["partials"] + extra["per_thread"] + 64 * 1024
    assert peak < bound, (peak, outputs, extra)  # the accounting holds
    assert extra["partials"] + extra["per_thread"] < full / 4
