"""icl/gates.py: the product gate's closed form against its definition, the normalized gate,
and the product gate run through the selective scan (forward and backward)."""
import numpy as np
import pytest

from mamba_from_scratch.gradcheck import numerical_grad, rel_error
from mamba_from_scratch.icl.gates import (
    normalized_gate,
    product_gate,
    product_gate_scan_backward,
    product_gate_scan_forward,
)
from mamba_from_scratch.layers import sigmoid


def _inputs(b=2, L=5, n=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((b, L)) * 2, rng.standard_normal((b, L, n)), rng.standard_normal((b, L, n))


def test_product_gate_is_its_definition():
    v, _, _ = _inputs()
    G, s = product_gate(v, tail=np.log(0.3))
    b, L = v.shape
    loop = np.array([[s[k, i] * np.prod(1 - s[k, i + 1:]) * 0.3 for i in range(L)] for k in range(b)])
    assert np.allclose(s, sigmoid(v), rtol=1e-15)
    assert rel_error(G, loop) < 1e-13
    G_big, _ = product_gate(np.array([[800.0, -800.0, 3.0]]))   # saturated steps: no overflow, no NaN
    s3 = sigmoid(np.array([3.0]))[0]
    assert rel_error(G_big, np.array([[1 - s3, 0.0, s3]])) < 1e-13


def test_normalized_gate_is_a_softmax_of_log_sigmoid():
    v, _, _ = _inputs(L=7)
    G = normalized_gate(v)
    s = sigmoid(v)
    assert rel_error(G, s / s.sum(axis=1, keepdims=True)) < 1e-14
    assert np.all(np.isfinite(normalized_gate(1e4 * v))) and np.allclose(normalized_gate(1e4 * v).sum(axis=1), 1)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_scan_computes_the_product_gated_sum(backend):
    v, z, C = _inputs()
    y, h, _ = product_gate_scan_forward(v, z, C, backend=backend)
    G, _ = product_gate(v)
    assert rel_error(h, np.einsum("bl,bln->bn", G, z)) < 1e-12                  # h_L = sum_i G_i z_i
    L = v.shape[1]
    for t in range(L):   # every output y_t = <C_t, h_t> with h_t the gated sum of the first t + 1 tokens
        G_t, _ = product_gate(v[:, :t + 1])
        assert rel_error(y[:, t], np.einsum("bn,bl,bln->b", C[:, t], G_t, z[:, :t + 1])) < 1e-12


def test_scan_backward_matches_finite_differences():
    v, z, C = _inputs(seed=1)
    rng = np.random.default_rng(2)
    dy, dh = rng.standard_normal(v.shape), rng.standard_normal((v.shape[0], z.shape[2]))

    def loss():
        y, h, _ = product_gate_scan_forward(v, z, C)
        return np.sum(y * dy) + np.sum(h * dh)

    dv, dz, dC = product_gate_scan_backward(dy, product_gate_scan_forward(v, z, C)[2], dh)
    for got, arr in ((dv, v), (dz, z), (dC, C)):
        assert rel_error(got, numerical_grad(loss, arr)) < 1e-7


def test_very_negative_preactivations_write_nothing():
    v = np.array([[-800.0, 0.5]])                      # softplus underflows to 0: the floor keeps u finite
    z = np.ones((1, 2, 2))
    _, h, _ = product_gate_scan_forward(v, z)
    assert np.all(np.isfinite(h)) and np.allclose(h, sigmoid(np.array([0.5]))[0])
