"""The fused mixer kernels compute exactly what the NumPy layers compute."""
import numpy as np
import pytest

from mamba_from_scratch.gradcheck import rel_error
from mamba_from_scratch.layers import conv1d_backward, conv1d_forward, silu_backward, silu_forward
from mamba_from_scratch.mixer_kernels import conv_silu_forward, gate_backward, gate_forward, silu_conv_backward


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-13), (np.float32, 2e-6)])
@pytest.mark.parametrize("l, with_state", [(1, False), (2, True), (9, True), (9, False)])
def test_conv_silu_matches_the_layers(dtype, tol, l, with_state):
    rng = np.random.default_rng(l)
    b, d, k = 2, 5, 4
    xz = rng.normal(size=(b, l, 2 * d)).astype(dtype) * 3
    x = xz[..., :d]                                   # a strided view, as in the mixer
    w, bias = rng.normal(size=(d, 1, k)).astype(dtype), rng.normal(size=d).astype(dtype)
    state = rng.normal(size=(b, k - 1, d)).astype(dtype) if with_state else None
    dxs = rng.normal(size=(b, l, d)).astype(dtype)
    xc, conv_cache = conv1d_forward(x, w, bias, state)
    xs_ref, silu_cache = silu_forward(xc)
    want = conv1d_backward(silu_backward(dxs, silu_cache), conv_cache)
    xs, cache = conv_silu_forward(x, w, bias, state)
    assert xs.dtype == dtype and rel_error(xs, xs_ref) < tol
    got = silu_conv_backward(dxs, cache)
    for name, g, r in zip(["dx", "dweight", "dbias", "dconv_state"], got, want):
        assert g.shape == r.shape and rel_error(g, r) < tol, name


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-13), (np.float32, 2e-6)])
def test_gate_matches_the_layers(dtype, tol):
    rng = np.random.default_rng(0)
    b, l, d = 3, 7, 4
    y = rng.normal(size=(b, l, d)).astype(dtype)
    xz = (rng.normal(size=(b, l, 2 * d)) * 40).astype(dtype)   # large |z|: saturated sigmoids
    z = xz[..., d:]
    dout = rng.normal(size=(b, l, d)).astype(dtype)
    gate, silu_cache = silu_forward(z)
    out, cache = gate_forward(y, xz)
    assert rel_error(out, y * gate) < tol and np.all(np.isfinite(out))
    dxz = np.full((b, l, 2 * d), np.nan, dtype)
    dy = gate_backward(dout, cache, dxz)
    assert rel_error(dy, dout * gate) < tol
    assert rel_error(dxz[..., d:], silu_backward(dout * y, silu_cache)) < tol
    assert np.all(np.isnan(dxz[..., :d])), "only the z half is written"
