"""The softmax-attention core (models/softmax_attention.py): the loop definition and
finite-difference gradients, the softmax's properties, large scores, one position; the same
parameters and initial weights as the linear TF, and a softmax checkpoint runs softmax attention
in a fresh process. What it shares with the linear Transformer (block and model gradients,
causality, float32, parameter counts, checkpoints, bad configs and input) is tested in
tests/test_models_transformer.py."""
import subprocess
import sys

import numpy as np

from mamba_from_scratch.checkpoint import save_checkpoint
from mamba_from_scratch.gradcheck import numerical_grad, rel_error
from mamba_from_scratch.models import linear_attention as lat
from mamba_from_scratch.models.softmax_attention import (
    SoftmaxTFConfig,
    causal_softmax_attention_backward,
    causal_softmax_attention_forward,
    init_params,
    model_forward,
)

TOL = 1e-6
# Tiny, distinct sizes: d_model 6 = 2 heads of 3, MLP 5, inputs 4, outputs 2.
CFG = SoftmaxTFConfig(d_model=6, n_layer=2, n_head=2, d_mlp=5, d_in=4, d_out=2)


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


def test_same_parameters_and_initial_weights_as_the_linear_tf():
    lcfg = lat.LinearTFConfig(**CFG.to_dict())
    assert lcfg.param_shapes() == CFG.param_shapes()
    p = init_params(CFG, np.random.default_rng(12))
    pl = lat.init_params(lcfg, np.random.default_rng(12))
    assert all(np.array_equal(p[k], pl[k]) and p[k].dtype == np.float32 for k in pl)


def test_a_softmax_checkpoint_runs_softmax_attention_in_a_fresh_process(tmp_path):
    """Its parameters are named as the linear TF's, so a mis-dispatch would run silently: the
    config's class must pick the model. A fresh interpreter loads the checkpoint and runs
    icl-train's forward; the output must be the softmax model's and not the linear one's."""
    rng = np.random.default_rng(15)            # init, then perturbed so the two attentions differ clearly
    params = {k: v + 0.3 * rng.normal(size=v.shape) for k, v in init_params(CFG, rng, dtype=np.float64).items()}
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
