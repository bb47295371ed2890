"""The linear-attention Transformer: finite-difference gradients, causality, the running sum
= the selective scan with no decay, parameter matching, checkpoints."""
import subprocess
import sys

import numpy as np
import pytest

from mamba_from_scratch.checkpoint import load_checkpoint, save_checkpoint
from mamba_from_scratch.gradcheck import numerical_grad, rel_error
from mamba_from_scratch.models.linear_attention import (
    LINEAR_ATTENTION_BLOCK,
    LinearTFConfig,
    causal_linear_attention_backward,
    causal_linear_attention_forward,
    causal_linear_attention_recurrent,
    elu1_forward,
    init_params,
    model_backward,
    model_forward,
)
from mamba_from_scratch.models.mamba import MambaConfig
from mamba_from_scratch.models.transformer import matched_d_mlp
from mamba_from_scratch.params import count_params, sub_params
from mamba_from_scratch.scan import selective_scan_forward

TOL = 1e-6
# Tiny, distinct sizes: d_model 6 = 2 heads of 3, MLP 5, inputs 4, outputs 2.
CFG = LinearTFConfig(d_model=6, n_layer=2, n_head=2, d_mlp=5, d_in=4, d_out=2)


def random_params(cfg, seed):
    """Init, then perturb every parameter so no gradient is trivially zero (norms = 1, biases = 0)."""
    rng = np.random.default_rng(seed)
    p = init_params(cfg, rng, dtype=np.float64)
    return {k: v + 0.3 * rng.normal(size=v.shape) for k, v in p.items()}


def check_grads(loss, params, grads, skip=()):
    for k in params:
        if any(s in k for s in skip):
            continue
        err = rel_error(grads[k], numerical_grad(loss, params[k], eps=1e-5))
        assert err < TOL, f"{k}: rel error {err:.2e}"


def test_attention_core_matches_quadratic_form_and_gradients():
    rng = np.random.default_rng(0)
    b, l, h, e = 2, 5, 3, 4
    fq, fk = elu1_forward(rng.normal(size=(b, l, h, e)))[0], elu1_forward(rng.normal(size=(b, l, h, e)))[0]
    v, do = rng.normal(size=(b, l, h, e)), rng.normal(size=(b, l, h, e))
    o, cache = causal_linear_attention_forward(fq, fk, v)
    # the same thing written as masked "attention weights" phi(q_t).phi(k_s), s <= t
    w = np.einsum("bthe,bshe->bhts", fq, fk) * np.tril(np.ones((l, l)))
    ref = np.einsum("bhts,bshe->bthe", w, v) / (w.sum(-1).transpose(0, 2, 1)[..., None] + 1e-6)
    assert rel_error(o, ref) < 1e-12
    assert rel_error(o, causal_linear_attention_recurrent(fq, fk, v)) < 1e-12
    loss = lambda: float(np.sum(causal_linear_attention_forward(fq, fk, v)[0] * do))
    dfq, dfk, dv = causal_linear_attention_backward(do, cache)
    for analytic, x in ((dfq, fq), (dfk, fk), (dv, v)):
        assert rel_error(analytic, numerical_grad(loss, x)) < TOL


def test_running_sum_is_the_selective_scan_without_decay():
    """A = 0 (deltaA = 1), delta = 1, B = phi(k), C = phi(q), u = (v, 1): the scan's state is
    (S_t, z_t) and its output (num_t, den_t), the numerator and normaliser of the attention."""
    rng = np.random.default_rng(1)
    b, l, e = 3, 7, 4
    fq, fk = elu1_forward(rng.normal(size=(b, l, e)))[0], elu1_forward(rng.normal(size=(b, l, e)))[0]
    v = rng.normal(size=(b, l, e))
    u = np.concatenate([v, np.ones((b, l, 1))], axis=-1)                  # (b, l, e + 1)
    y, _, _ = selective_scan_forward(u, np.ones_like(u), np.zeros((e + 1, e)), fk, fq, backend="numpy")
    o_scan = y[..., :e] / (y[..., e:] + 1e-6)
    o, _ = causal_linear_attention_forward(fq[:, :, None], fk[:, :, None], v[:, :, None])
    assert rel_error(o[:, :, 0], o_scan) < 1e-12


def test_block_gradients():
    rng = np.random.default_rng(2)
    p = sub_params(random_params(CFG, 3), "layers.1.")
    x, dout = rng.normal(size=(2, 5, 6)), rng.normal(size=(2, 5, 6))
    block = LINEAR_ATTENTION_BLOCK
    loss = lambda: float(np.sum(block.forward(x, p, CFG)[0] * dout))
    grads, dx = block.backward(dout, block.forward(x, p, CFG)[2])
    assert set(grads) == set(p)
    check_grads(loss, p, grads)
    assert rel_error(dx, numerical_grad(loss, x)) < TOL


@pytest.mark.parametrize("l", [1, 5])
def test_model_gradients(l):
    rng = np.random.default_rng(4)
    params = random_params(CFG, 5)
    x, dout = rng.normal(size=(2, l, 4)), rng.normal(size=(2, l, 2))
    loss = lambda: float(np.sum(model_forward(params, CFG, x)[0] * dout))
    grads, dx = model_backward(dout, model_forward(params, CFG, x)[1])
    assert set(grads) == set(params)
    for k in params:
        assert grads[k].shape == params[k].shape, k
    # With one token, o_1 = v_1 a / (a + eps) for a = phi(q_1).phi(k_1): q and k only enter
    # through eps, so their gradients are O(eps) and below what differences can resolve.
    skip = ("q_proj", "k_proj") if l == 1 else ()
    check_grads(loss, params, grads, skip)
    for k in params:
        if any(s in k for s in skip):
            assert np.abs(grads[k]).max() < 1e-4, k
    assert rel_error(dx, numerical_grad(loss, x)) < TOL


def test_causal():
    """Changing a later token never changes an earlier output."""
    rng = np.random.default_rng(6)
    params = random_params(CFG, 7)
    x = rng.normal(size=(2, 6, 4))
    out1 = model_forward(params, CFG, x)[0]
    x[:, 4:] = rng.normal(size=(2, 2, 4))
    out2 = model_forward(params, CFG, x)[0]
    assert np.array_equal(out1[:, :4], out2[:, :4])
    assert not np.allclose(out1[:, 4:], out2[:, 4:])


def test_parameter_count_matches_the_mamba():
    mamba = MambaConfig(d_model=64, n_layer=4, d_in=66, d_out=1)
    tf = LinearTFConfig(d_model=64, n_layer=4, d_mlp=matched_d_mlp(mamba), d_in=66, d_out=1)
    n_m, n_t = count_params(mamba), count_params(tf)
    # one more unit of MLP width adds 2 d_model + 1 = 129 parameters per block, 516 in all
    assert abs(n_m - n_t) <= 2 * 516, (n_m, n_t)


def test_checkpoint_roundtrip(tmp_path):
    params = init_params(CFG, np.random.default_rng(8))
    save_checkpoint(tmp_path / "tf.npz", params, CFG, extra={"step": 3})
    p2, cfg2, extra, _ = load_checkpoint(tmp_path / "tf.npz")
    assert cfg2 == CFG and extra == {"step": 3}
    assert all(np.array_equal(params[k], p2[k]) for k in params)
    # a fresh interpreter that never imported linear_attention can load it too
    code = ("import sys; from mamba_from_scratch.checkpoint import load_checkpoint; "
            "print(type(load_checkpoint(sys.argv[1])[1]).__name__)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "tf.npz")], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "LinearTFConfig"


def test_bad_input_is_a_value_error():
    params = init_params(CFG, np.random.default_rng(9))
    with pytest.raises(ValueError, match="x must have shape"):
        model_forward(params, CFG, np.zeros((2, 3, 5), np.float32))
    with pytest.raises(ValueError, match="n_head must divide d_model"):
        LinearTFConfig(d_model=6, n_layer=1, n_head=4, d_mlp=3, d_in=1, d_out=1)
