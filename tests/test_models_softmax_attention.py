"""The softmax-attention Transformer (models/softmax_attention.py): finite-difference gradients
(core, block, model), the softmax's properties, causality, float32, parameter matching with
the Mamba, checkpoints (a softmax checkpoint runs softmax attention in a fresh process), bad
configs."""
import subprocess
import sys

import numpy as np
import pytest

from mamba_from_scratch.checkpoint import load_checkpoint, save_checkpoint
from mamba_from_scratch.gradcheck import numerical_grad, rel_error
from mamba_from_scratch.icl.prompts import token_dim
from mamba_from_scratch.icl.train import FULL, QUICK, TrainConfig
from mamba_from_scratch.models import linear_attention as lat
from mamba_from_scratch.models.mamba import MambaConfig
from mamba_from_scratch.models.softmax_attention import (
    SOFTMAX_ATTENTION_BLOCK,
    SoftmaxTFConfig,
    causal_softmax_attention_backward,
    causal_softmax_attention_forward,
    init_params,
    model_backward,
    model_forward,
)
from mamba_from_scratch.models.transformer import matched_d_mlp
from mamba_from_scratch.params import count_params, sub_params

TOL = 1e-6
# Tiny, distinct sizes: d_model 6 = 2 heads of 3, MLP 5, inputs 4, outputs 2.
CFG = SoftmaxTFConfig(d_model=6, n_layer=2, n_head=2, d_mlp=5, d_in=4, d_out=2)


def random_params(cfg, seed):
    """Init, then perturb every parameter so no gradient is trivially zero (norms = 1, biases = 0)."""
    rng = np.random.default_rng(seed)
    p = init_params(cfg, rng, dtype=np.float64)
    return {k: v + 0.3 * rng.normal(size=v.shape) for k, v in p.items()}


def check_grads(loss, params, grads):
    for k in params:
        err = rel_error(grads[k], numerical_grad(loss, params[k], eps=1e-5))
        assert err < TOL, f"{k}: rel error {err:.2e}"


def attention_loop(q, k, v):
    """The definition, one query position and one head at a time."""
    b, l, h, e = q.shape
    o = np.empty_like(v)
    for i in range(b):
        for j in range(h):
            for t in range(l):
                s = k[i, :t + 1, j] @ q[i, t, j] / np.sqrt(e)                 # (t + 1,) scores of s <= t
                w = np.exp(s - s.max())
                o[i, t, j] = (w / w.sum()) @ v[i, :t + 1, j]
    return o


def test_attention_core_matches_the_loop_and_gradients():
    rng = np.random.default_rng(0)
    b, l, h, e = 2, 5, 3, 4
    q, k, v, do = (rng.normal(size=(b, l, h, e)) for _ in range(4))
    o, cache = causal_softmax_attention_forward(q, k, v)
    assert rel_error(o, attention_loop(q, k, v)) < 1e-12
    do_copy = do.copy()
    dq, dk, dv = causal_softmax_attention_backward(do, cache)
    assert np.array_equal(do, do_copy)                                         # dout is not written into
    loss = lambda: float(np.sum(causal_softmax_attention_forward(q, k, v)[0] * do))
    for analytic, x in ((dq, q), (dk, k), (dv, v)):
        assert rel_error(analytic, numerical_grad(loss, x)) < TOL


def test_softmax_rows_sum_to_one_and_uniform_scores_give_the_running_mean():
    rng = np.random.default_rng(1)
    b, l, h, e = 2, 6, 2, 3
    q, k, v = (rng.normal(size=(b, l, h, e)) for _ in range(3))
    P = causal_softmax_attention_forward(q, k, v)[1][3]                       # (b, h, l, l)
    assert np.allclose(P.sum(-1), 1.0, rtol=0, atol=1e-14)
    assert np.all(P[..., np.triu_indices(l, 1)[0], np.triu_indices(l, 1)[1]] == 0)  # nothing from the future
    assert np.all(P[..., np.tril_indices(l)[0], np.tril_indices(l)[1]] > 0)
    # q = 0: every score is 0, each row is uniform over s <= t, o_t = the mean of v_1..v_t
    o, _ = causal_softmax_attention_forward(np.zeros_like(q), k, v)
    running_mean = np.cumsum(v, axis=1) / np.arange(1, l + 1)[None, :, None, None]
    assert rel_error(o, running_mean) < 1e-14


def test_large_scores_do_not_overflow():
    """exp of a score of ~1e4 overflows float32 (and float64); the max-subtraction avoids it."""
    rng = np.random.default_rng(2)
    q, k, v = (rng.normal(size=(2, 5, 2, 3)).astype(np.float32) for _ in range(3))
    with np.errstate(over="raise", invalid="raise", divide="raise"):   # underflow to 0 is right
        o, cache = causal_softmax_attention_forward(1e4 * q, k, v)
    assert o.dtype == np.float32 and np.all(np.isfinite(o))
    assert np.allclose(cache[3].sum(-1), 1.0, atol=1e-6)
    # the weights are (nearly) one-hot on each row's largest score, s <= t
    s = np.einsum("bthe,bshe->bhts", q.astype(np.float64), k) + np.triu(np.full((5, 5), -np.inf), 1)
    assert np.array_equal(cache[3].argmax(-1), s.argmax(-1))


def test_one_position_returns_its_own_value():
    rng = np.random.default_rng(3)
    q, k, v, do = (rng.normal(size=(2, 1, 3, 4)) for _ in range(4))
    o, cache = causal_softmax_attention_forward(q, k, v)
    assert np.array_equal(o, v)
    dq, dk, dv = causal_softmax_attention_backward(do, cache)
    assert np.array_equal(dv, do) and not dq.any() and not dk.any()           # a softmax over one score is 1


def test_block_gradients():
    rng = np.random.default_rng(4)
    p = sub_params(random_params(CFG, 5), "layers.1.")
    x, dout = rng.normal(size=(2, 5, 6)), rng.normal(size=(2, 5, 6))
    block = SOFTMAX_ATTENTION_BLOCK
    loss = lambda: float(np.sum(block.forward(x, p, CFG)[0] * dout))
    grads, dx = block.backward(dout, block.forward(x, p, CFG)[2])
    assert set(grads) == set(p)
    check_grads(loss, p, grads)
    assert rel_error(dx, numerical_grad(loss, x)) < TOL


@pytest.mark.parametrize("l", [1, 5])
def test_model_gradients(l):
    rng = np.random.default_rng(6)
    params = random_params(CFG, 7)
    x, dout = rng.normal(size=(2, l, 4)), rng.normal(size=(2, l, 2))
    loss = lambda: float(np.sum(model_forward(params, CFG, x)[0] * dout))
    dout_copy = dout.copy()
    grads, dx = model_backward(dout, model_forward(params, CFG, x)[1])
    assert np.array_equal(dout, dout_copy)
    assert set(grads) == set(params)
    for k in params:
        assert grads[k].shape == params[k].shape, k
    check_grads(loss, params, grads)
    assert rel_error(dx, numerical_grad(loss, x)) < TOL
    if l == 1:   # one token attends only to itself: q and k cannot matter, exactly
        assert not any(grads[k].any() for k in grads if "q_proj" in k or "k_proj" in k)
    else:
        assert all(np.abs(grads[k]).max() > 1e-3 for k in grads)


def test_causal():
    """Changing a later token never changes an earlier output."""
    rng = np.random.default_rng(8)
    params = random_params(CFG, 9)
    x = rng.normal(size=(2, 6, 4))
    out1 = model_forward(params, CFG, x)[0]
    x[:, 4:] = rng.normal(size=(2, 2, 4))
    out2 = model_forward(params, CFG, x)[0]
    assert np.array_equal(out1[:, :4], out2[:, :4])
    assert not np.allclose(out1[:, 4:], out2[:, 4:])


def test_float32_matches_float64():
    rng = np.random.default_rng(10)
    p64 = random_params(CFG, 11)
    p32 = {k: v.astype(np.float32) for k, v in p64.items()}
    x, dout = rng.normal(size=(3, 7, 4)), rng.normal(size=(3, 7, 2))
    out64, c64 = model_forward(p64, CFG, x)
    out32, c32 = model_forward(p32, CFG, x.astype(np.float32))
    g64, dx64 = model_backward(dout, c64)
    g32, dx32 = model_backward(dout.astype(np.float32), c32)
    assert out32.dtype == dx32.dtype == np.float32
    assert all(g.dtype == np.float32 for g in g32.values())
    assert rel_error(out32, out64) < 1e-5 and rel_error(dx32, dx64) < 1e-4
    for k in g64:
        assert rel_error(g32[k], g64[k]) < 1e-4, k


def test_same_parameters_and_initial_weights_as_the_linear_tf():
    lcfg = lat.LinearTFConfig(**CFG.to_dict())
    assert lcfg.param_shapes() == CFG.param_shapes()
    p = init_params(CFG, np.random.default_rng(12))
    pl = lat.init_params(lcfg, np.random.default_rng(12))
    assert all(np.array_equal(p[k], pl[k]) and p[k].dtype == np.float32 for k in pl)


@pytest.mark.parametrize("preset", [FULL, QUICK], ids=["full", "quick"])
@pytest.mark.parametrize("d", [16, 32])
def test_parameter_count_within_10_percent_of_the_mamba(preset, d):
    tc = TrainConfig(**preset, d=d)
    d_in = token_dim(tc.d, tc.encoding)
    mamba = MambaConfig(d_model=tc.d_model, n_layer=tc.n_layer, d_state=tc.d_state, d_in=d_in, d_out=1)
    tf = SoftmaxTFConfig(d_model=tc.d_model, n_layer=tc.n_layer, n_head=tc.n_head, d_mlp=matched_d_mlp(mamba),
                         d_in=d_in, d_out=1)
    n_m, n_t = count_params(mamba), count_params(tf)
    assert abs(n_t - n_m) <= 0.1 * n_m, (n_m, n_t)
    # matched_d_mlp is within one unit of MLP width, 2 d_model + 1 parameters per block
    assert abs(n_t - n_m) <= tc.n_layer * (2 * tc.d_model + 1), (n_m, n_t)


def test_checkpoint_roundtrip(tmp_path):
    params = init_params(CFG, np.random.default_rng(13))
    save_checkpoint(tmp_path / "tf.npz", params, CFG, extra={"step": 3})
    p2, cfg2, extra, _ = load_checkpoint(tmp_path / "tf.npz")
    assert type(cfg2) is SoftmaxTFConfig and cfg2 == CFG and extra == {"step": 3}
    assert all(np.array_equal(params[k], p2[k]) for k in params)


def test_a_softmax_checkpoint_runs_softmax_attention_in_a_fresh_process(tmp_path):
    """Its parameters are named as the linear TF's, so a mis-dispatch would run silently: the
    config's class must pick the model. A fresh interpreter loads the checkpoint and runs
    icl-train's forward; the output must be the softmax model's and not the linear one's."""
    params = random_params(CFG, 15)
    save_checkpoint(tmp_path / "tf.npz", params, CFG)
    x = np.random.default_rng(16).normal(size=(2, 5, 4))
    np.save(tmp_path / "x.npy", x)
    code = ("import sys, numpy as np; from mamba_from_scratch.checkpoint import load_checkpoint; "
            "from mamba_from_scratch.icl.train import model_forward; "
            "p, cfg, _, _ = load_checkpoint(sys.argv[1]); "
            "np.save(sys.argv[3], model_forward(p, cfg, np.load(sys.argv[2]))[0]); print(type(cfg).__name__)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "tf.npz"), str(tmp_path / "x.npy"),
                          str(tmp_path / "out.npy")], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "SoftmaxTFConfig"
    got = np.load(tmp_path / "out.npy")
    assert np.array_equal(got, model_forward(params, CFG, x)[0])
    linear = lat.model_forward(params, lat.LinearTFConfig(**CFG.to_dict()), x)[0]
    assert np.abs(got - linear).max() > 1e-3


@pytest.mark.parametrize("field, value, match", [
    ("d_model", 0, "d_model must be an integer >= 1"),
    ("n_layer", 0, "n_layer must be an integer >= 1"),
    ("n_head", -1, "n_head must be an integer >= 1"),
    ("n_head", 4, "n_head must divide d_model"),
    ("d_mlp", 2.5, "d_mlp must be an integer >= 1"),
    ("d_in", 0, "d_in must be an integer >= 1"),
    ("d_out", True, "d_out must be an integer >= 1"),
])
def test_bad_config_is_a_value_error(field, value, match):
    with pytest.raises(ValueError, match=match):
        SoftmaxTFConfig(**{**CFG.to_dict(), field: value})


def test_bad_input_is_a_value_error():
    params = init_params(CFG, np.random.default_rng(14))
    with pytest.raises(ValueError, match="x must have shape"):
        model_forward(params, CFG, np.zeros((2, 3, 5), np.float32))
    with pytest.raises(ValueError, match="x must have shape"):
        model_forward(params, CFG, np.zeros((2, 0, 4), np.float32))
    with pytest.raises(ValueError, match="cfg must be a SoftmaxTFConfig"):
        init_params(lat.LinearTFConfig(**CFG.to_dict()), np.random.default_rng(0))
