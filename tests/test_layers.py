"""Every layer's hand-written backward against float64 central finite differences."""
import numpy as np
import pytest

from mamba_from_scratch.gradcheck import numerical_grad, rel_error
from mamba_from_scratch.layers import (
    conv1d_backward,
    conv1d_forward,
    linear_backward,
    linear_forward,
    rmsnorm_backward,
    rmsnorm_forward,
    sigmoid,
    silu_backward,
    silu_forward,
    softplus_backward,
    softplus_forward,
    softplus_inverse,
)

TOL = 1e-6


def check_layer(forward, backward, inputs, seed=0):
    """FD-check ``backward`` for L = sum(forward(*inputs)[0] * dout) w.r.t. every array input.

    ``backward`` returns gradients in the order of ``inputs`` (None for non-array inputs).
    """
    rng = np.random.default_rng(seed)
    out, cache = forward(*inputs)
    dout = rng.normal(size=out.shape)
    dout_copy = dout.copy()
    grads = backward(dout, cache)
    grads = grads if isinstance(grads, tuple) else (grads,)
    assert np.array_equal(dout, dout_copy), "backward must not write into dout"
    for i, (x, g) in enumerate(zip(inputs, grads)):
        if x is None:
            continue
        num = numerical_grad(lambda: float(np.sum(forward(*inputs)[0] * dout)), x)
        assert g.shape == x.shape, f"input {i}: gradient shape {g.shape} != {x.shape}"
        assert rel_error(g, num) < TOL, f"input {i}: rel error {rel_error(g, num):.2e}"


def test_linear_with_and_without_bias():
    rng = np.random.default_rng(1)
    x, w, b = rng.normal(size=(2, 5, 3)), rng.normal(size=(4, 3)), rng.normal(size=4)
    check_layer(linear_forward, linear_backward, [x, w, b])
    out, cache = linear_forward(x, w)
    assert linear_backward(np.ones_like(out), cache)[2] is None
    check_layer(lambda x, w: linear_forward(x, w), lambda d, c: linear_backward(d, c)[:2], [x, w])


def test_rmsnorm():
    rng = np.random.default_rng(2)
    check_layer(rmsnorm_forward, rmsnorm_backward, [rng.normal(size=(2, 5, 3)), rng.normal(size=3)])


def test_rmsnorm_matches_definition():
    rng = np.random.default_rng(3)
    x, w = rng.normal(size=(4, 7)), rng.normal(size=7)
    want = x / np.sqrt((x ** 2).mean(-1, keepdims=True) + 1e-5) * w
    assert np.allclose(rmsnorm_forward(x, w)[0], want, rtol=1e-14)


@pytest.mark.parametrize("scale", [1e19, 1e20, 1e30, 3e38])
def test_rmsnorm_float32_does_not_overflow_for_huge_inputs(scale):
    """x * x overflows float32 above ~1.8e19; the output must still be x / rms(x) * w, not 0."""
    rng = np.random.default_rng(7)
    x64 = rng.uniform(-1, 1, size=(3, 2, 8)) * scale / 1.0001       # stays below float32's max
    x64[0, 0] = rng.normal(size=8)                                 # an ordinary row beside them
    w64 = rng.normal(size=8)
    x, w = x64.astype(np.float32), w64.astype(np.float32)
    out, cache = rmsnorm_forward(x, w)
    x64 = x.astype(np.float64)                                     # the same numbers, no overflow
    want = x64 / np.sqrt((x64 ** 2).mean(-1, keepdims=True) + 1e-5) * w64
    assert out.dtype == np.float32 and np.all(np.isfinite(out))
    assert np.max(np.abs(out - want)) < 1e-5 * np.max(np.abs(want))
    dout = rng.normal(size=out.shape).astype(np.float32)
    dx, dw = rmsnorm_backward(dout, cache)
    dx_ref, dw_ref = rmsnorm_backward(dout.astype(np.float64), rmsnorm_forward(x64, w64)[1])
    assert rel_error(dx, dx_ref) < 1e-5 and rel_error(dw, dw_ref) < 1e-5


def test_rmsnorm_huge_inputs_finite_differences():
    """float64 rows where x * x overflows take the scaled path: its backward against central
    differences with a step relative to |x| (a fixed 1e-6 would vanish next to 1e160)."""
    rng = np.random.default_rng(8)
    x = rng.normal(size=(2, 3, 5)) * 1e160
    w = rng.normal(size=5)
    with np.errstate(over="ignore"):
        assert not np.all(np.isfinite(np.mean(x * x, -1)))         # the ordinary path would overflow
    out, cache = rmsnorm_forward(x, w)
    dout = rng.normal(size=out.shape)
    dx, dw = rmsnorm_backward(dout, cache)
    loss = lambda: float(np.sum(rmsnorm_forward(x, w)[0] * dout))
    num_dx = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        old, step = x[idx], 1e-6 * abs(x[idx])
        x[idx] = old + step
        plus = loss()
        x[idx] = old - step
        minus = loss()
        x[idx] = old
        num_dx[idx] = (plus - minus) / (2 * step)
    assert rel_error(dx, num_dx) < 1e-6
    assert rel_error(dw, numerical_grad(loss, w)) < 1e-6


def test_silu_and_softplus():
    rng = np.random.default_rng(4)
    check_layer(silu_forward, silu_backward, [rng.normal(size=(2, 5, 3)) * 3])
    check_layer(softplus_forward, softplus_backward, [rng.normal(size=(2, 5, 3)) * 3])


def test_softplus_is_stable_for_large_inputs():
    x = np.array([-1000.0, -50.0, 0.0, 50.0, 1000.0])
    y, _ = softplus_forward(x)
    assert np.all(np.isfinite(y))
    assert y[-1] == 1000.0 and y[3] == 50.0 and abs(y[2] - np.log(2)) < 1e-15
    assert 0 < y[1] < 1e-21 and y[0] == 0.0
    assert np.array_equal(sigmoid(np.array([-1000.0, 1000.0])), [0.0, 1.0])
    assert sigmoid(0.5) == sigmoid(np.array([0.5]))[0] and sigmoid(-1000.0) == 0.0   # scalars too
    dt = np.array([1e-4, 1e-3, 0.05, 0.1, 3.0])
    assert np.allclose(softplus_forward(softplus_inverse(dt))[0], dt, rtol=1e-12)


@pytest.mark.parametrize("l", [1, 2, 6])  # l = 1 and l < d_conv are the edge cases
def test_conv1d(l):
    rng = np.random.default_rng(5)
    b, d, k = 2, 3, 4
    x, w, bias = rng.normal(size=(b, l, d)), rng.normal(size=(d, 1, k)), rng.normal(size=d)
    state = rng.normal(size=(b, k - 1, d))
    check_layer(conv1d_forward, conv1d_backward, [x, w, bias, state])
    check_layer(lambda x, w, bias: conv1d_forward(x, w, bias),
                lambda dout, c: conv1d_backward(dout, c)[:3], [x, w, bias])


def test_conv1d_matches_a_direct_causal_convolution():
    rng = np.random.default_rng(6)
    b, l, d, k = 2, 7, 3, 4
    x, w, bias = rng.normal(size=(b, l, d)), rng.normal(size=(d, 1, k)), rng.normal(size=d)
    out, _ = conv1d_forward(x, w, bias)
    want = np.zeros_like(out)
    for t in range(l):
        for j in range(k):
            src = t - (k - 1) + j       # PyTorch Conv1d(padding=k-1) is a cross-correlation
            if src >= 0:
                want[:, t] += w[:, 0, j] * x[:, src]
    assert np.allclose(out, want + bias, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("dtype, ulps", [(np.float32, 8), (np.float64, 4)])
def test_softplus_is_accurate_over_the_whole_range(dtype, ulps):
    x = np.linspace(-80, 80, 400_001).astype(dtype)
    got = softplus_forward(x)[0]
    assert got.dtype == dtype
    want = np.logaddexp(0, x.astype(np.float64))
    assert np.max(np.abs(got - want) / want) < ulps * np.finfo(dtype).eps
    assert np.all(got > 0), "softplus(x) > 0 for every x in this range (underflow to 0 starts below -104)"
