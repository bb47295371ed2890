"""The fused mixer kernels compute exactly what the NumPy layers compute."""
import numpy as np
import pytest

from mamba_from_scratch.gradcheck import rel_error
from mamba_from_scratch.layers import (
    conv1d_backward,
    conv1d_forward,
    linear_backward,
    linear_forward,
    silu_backward,
    silu_forward,
    softplus_backward,
    softplus_forward,
)
from mamba_from_scratch.mixer_kernels import (
    ROWS_PER_TASK,
    conv_silu_forward,
    dt_softplus_backward,
    dt_softplus_forward,
    gate_backward,
    gate_forward,
    silu_conv_backward,
)


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-13), (np.float32, 2e-6)])
@pytest.mark.parametrize("l, with_state, k", [(1, False, 4), (2, True, 4), (9, True, 4), (9, False, 4),
                                             (5, True, 1), (5, True, 2), (3, True, 6)])
def test_conv_silu_matches_the_layers(dtype, tol, l, with_state, k):
    rng = np.random.default_rng(l + 10 * k)
    b, d = 2, 5
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
    dxz = np.full((b, l, 2 * d), np.nan, dtype)
    got = silu_conv_backward(dxs, cache, dxz)
    for name, g, r in zip(["dx", "dweight", "dbias", "dconv_state"], (dxz[..., :d], *got), want):
        assert g.shape == r.shape and rel_error(g, r) < tol, name
    assert np.all(np.isnan(dxz[..., d:])), "only the x half is written"
    half = rng.normal(size=(b, l, d)).astype(dtype)                 # dxs2 is added to dxs
    dx_sum = np.empty((b, l, d), dtype)
    got = silu_conv_backward(dxs - half, cache, dx_sum, half)
    for name, g, r in zip(["dx", "dweight", "dbias", "dconv_state"], (dx_sum, *got), want):
        assert rel_error(g, r) < 10 * tol, name


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


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-13), (np.float32, 2e-6)])
@pytest.mark.parametrize("b, l", [(2, 5), (3, ROWS_PER_TASK - 1)], ids=["one-task", "several-tasks"])
def test_dt_softplus_matches_the_layers(dtype, tol, b, l):
    """delta = softplus(dt_proj(dt)) and its backward, against linear + softplus layers, with
    pre-activations from -1000 to 1000 (saturated both ways) and exact zeros."""
    rng = np.random.default_rng(l)
    r, n, d = 3, 4, 6
    x_dbl = rng.normal(size=(b, l, r + 2 * n)).astype(dtype)
    w = rng.normal(size=(d, r)).astype(dtype)
    bias = rng.normal(size=d).astype(dtype)
    x_dbl[0, :3, :r] = [[1000, 0, 0], [-1000, 0, 0], [0, 0, 0]]    # rows of pre-activation w[:, 0] * +-1000 + bias
    w[0], bias[0] = (1, 0, 0), 0                                    # channel 0: exactly 1000, -1000, 0
    dt = x_dbl[..., :r]
    dtp, lin_cache = linear_forward(dt, w, bias)
    want, sp_cache = softplus_forward(dtp)
    delta, cache = dt_softplus_forward(x_dbl, w, bias)
    assert delta.dtype == dtype and delta.shape == (b, l, d) and np.all(np.isfinite(delta))
    assert rel_error(delta, want) < tol
    assert delta[0, 0, 0] == 1000 and delta[0, 1, 0] < 1e-30 and delta[0, 2, 0] == dtype(np.log(2))
    ddelta = rng.normal(size=(b, l, d)).astype(dtype)
    ddt, dw_want, db_want = linear_backward(softplus_backward(ddelta, sp_cache), lin_cache)
    dx_dbl = np.full((b, l, r + 2 * n), np.nan, dtype)
    dw, db = dt_softplus_backward(ddelta, cache, dx_dbl)
    assert rel_error(dx_dbl[..., :r], ddt) < tol
    assert np.all(np.isnan(dx_dbl[..., r:])), "only the dt columns are written"
    assert dw.dtype == dtype and dw.shape == (d, r) and rel_error(dw, dw_want) < tol
    assert db.dtype == dtype and db.shape == (d,) and rel_error(db, db_want) < tol
