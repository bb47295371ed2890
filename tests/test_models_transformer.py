"""What both Transformers share (models/transformer.py's block, attention wrapper and typed entry
points, around the linear or the softmax attention core), tested for each: finite-difference
gradients of a block and of the model (one token and five), dout left as it was, causality,
float32 against float64, parameter counts matched with the Mamba, checkpoints (also in a fresh
process), bad configs and inputs. What is specific to a core is in
tests/test_models_linear_attention.py and tests/test_models_softmax_attention.py."""
import subprocess
import sys
from dataclasses import dataclass
from types import ModuleType

import numpy as np
import pytest

from mamba_from_scratch.checkpoint import load_checkpoint, save_checkpoint
from mamba_from_scratch.gradcheck import numerical_grad, rel_error
from mamba_from_scratch.icl.prompts import token_dim
from mamba_from_scratch.icl.train import FULL, QUICK, TrainConfig
from mamba_from_scratch.models import linear_attention as lat
from mamba_from_scratch.models import softmax_attention as sat
from mamba_from_scratch.models.backbone import Block
from mamba_from_scratch.models.mamba import MambaConfig
from mamba_from_scratch.models.transformer import matched_d_mlp
from mamba_from_scratch.params import count_params, sub_params

TOL = 1e-6
# Tiny, distinct sizes: d_model 6 = 2 heads of 3, MLP 5, inputs 4, outputs 2.
SIZES = dict(d_model=6, n_layer=2, n_head=2, d_mlp=5, d_in=4, d_out=2)


@dataclass(frozen=True)
class Transformer:
    """One of the two: its module (init_params, model_forward, model_backward), config class
    and block, and how large the q and k projections' gradients are when l = 1."""
    module: ModuleType
    config: type
    block: Block
    # 0: exactly zero, and so are their finite differences (checked like the rest);
    # > 0: below what differences resolve, so not differenced, only bounded by it.
    one_token_qk_bound: float

    @property
    def cfg(self):
        return self.config(**SIZES)


TRANSFORMERS = [
    pytest.param(Transformer(lat, lat.LinearTFConfig, lat.LINEAR_ATTENTION_BLOCK,
                             # o_1 = v_1 a / (a + eps) for a = phi(q_1).phi(k_1): q and k only
                             # enter through eps, so their gradients are O(eps), below what
                             # finite differences can resolve
                             one_token_qk_bound=1e-4), id="linear"),
    pytest.param(Transformer(sat, sat.SoftmaxTFConfig, sat.SOFTMAX_ATTENTION_BLOCK,
                             # a softmax over one score is exactly 1: q and k cannot matter
                             one_token_qk_bound=0.0), id="softmax"),
]


@pytest.fixture(params=TRANSFORMERS)
def tf(request):
    return request.param


def random_params(tf, seed):
    """Init, then perturb every parameter so no gradient is trivially zero (norms = 1, biases = 0)."""
    rng = np.random.default_rng(seed)
    p = tf.module.init_params(tf.cfg, rng, dtype=np.float64)
    return {k: v + 0.3 * rng.normal(size=v.shape) for k, v in p.items()}


def check_grads(loss, params, grads, skip=()):
    for k in params:
        if k in skip:
            continue
        err = rel_error(grads[k], numerical_grad(loss, params[k], eps=1e-5))
        assert err < TOL, f"{k}: rel error {err:.2e}"


def test_block_gradients(tf):
    rng = np.random.default_rng(4)
    cfg, p = tf.cfg, sub_params(random_params(tf, 5), "layers.1.")
    x, dout = rng.normal(size=(2, 5, 6)), rng.normal(size=(2, 5, 6))
    loss = lambda: float(np.sum(tf.block.forward(x, p, cfg)[0] * dout))
    dout_copy = dout.copy()
    grads, dx = tf.block.backward(dout, tf.block.forward(x, p, cfg)[2])
    assert np.array_equal(dout, dout_copy)                                     # dout is not written into
    assert set(grads) == set(p)
    check_grads(loss, p, grads)
    assert rel_error(dx, numerical_grad(loss, x)) < TOL


@pytest.mark.parametrize("l", [1, 5])
def test_model_gradients(tf, l):
    rng = np.random.default_rng(6)
    cfg, params = tf.cfg, random_params(tf, 7)
    x, dout = rng.normal(size=(2, l, 4)), rng.normal(size=(2, l, 2))
    loss = lambda: float(np.sum(tf.module.model_forward(params, cfg, x)[0] * dout))
    dout_copy = dout.copy()
    grads, dx = tf.module.model_backward(dout, tf.module.model_forward(params, cfg, x)[1])
    assert np.array_equal(dout, dout_copy)
    assert set(grads) == set(params)
    for k in params:
        assert grads[k].shape == params[k].shape, k
    qk = {k for k in params if "q_proj" in k or "k_proj" in k}
    one_token = l == 1
    bound = tf.one_token_qk_bound
    check_grads(loss, params, grads, skip=qk if one_token and bound else ())
    assert rel_error(dx, numerical_grad(loss, x)) < TOL
    if one_token:   # one token attends only to itself (the bound says how much q and k can matter)
        for k in qk:
            assert (np.abs(grads[k]).max() < bound) if bound else not grads[k].any(), k
    assert all(np.abs(grads[k]).max() > 1e-3 for k in grads if not (one_token and k in qk))


def test_causal(tf):
    """Changing a later token never changes an earlier output."""
    rng = np.random.default_rng(8)
    cfg, params = tf.cfg, random_params(tf, 9)
    x = rng.normal(size=(2, 6, 4))
    out1 = tf.module.model_forward(params, cfg, x)[0]
    x[:, 4:] = rng.normal(size=(2, 2, 4))
    out2 = tf.module.model_forward(params, cfg, x)[0]
    assert np.array_equal(out1[:, :4], out2[:, :4])
    assert not np.allclose(out1[:, 4:], out2[:, 4:])


def test_float32_matches_float64(tf):
    rng = np.random.default_rng(10)
    cfg, p64 = tf.cfg, random_params(tf, 11)
    p32 = {k: v.astype(np.float32) for k, v in p64.items()}
    x, dout = rng.normal(size=(3, 7, 4)), rng.normal(size=(3, 7, 2))
    out64, c64 = tf.module.model_forward(p64, cfg, x)
    out32, c32 = tf.module.model_forward(p32, cfg, x.astype(np.float32))
    g64, dx64 = tf.module.model_backward(dout, c64)
    g32, dx32 = tf.module.model_backward(dout.astype(np.float32), c32)
    assert out32.dtype == dx32.dtype == np.float32
    assert all(g.dtype == np.float32 for g in g32.values())
    assert rel_error(out32, out64) < 1e-5 and rel_error(dx32, dx64) < 1e-4
    for k in g64:
        assert rel_error(g32[k], g64[k]) < 1e-4, k


@pytest.mark.parametrize("preset", [{}, FULL, QUICK], ids=["default", "full", "quick"])
@pytest.mark.parametrize("d", [16, 32])
def test_parameter_count_within_10_percent_of_the_mamba(tf, preset, d):
    """At icl-train's sizes (the default at d = 32: d_model 64, 4 layers, 66 inputs)."""
    tc = TrainConfig(**preset, d=d)
    d_in = token_dim(tc.d, tc.encoding)
    mamba = MambaConfig(d_model=tc.d_model, n_layer=tc.n_layer, d_state=tc.d_state, d_in=d_in, d_out=1)
    cfg = tf.config(d_model=tc.d_model, n_layer=tc.n_layer, n_head=tc.n_head, d_mlp=matched_d_mlp(mamba),
                    d_in=d_in, d_out=1)
    n_m, n_t = count_params(mamba), count_params(cfg)
    assert abs(n_t - n_m) <= 0.1 * n_m, (n_m, n_t)
    # matched_d_mlp is within one unit of MLP width, 2 d_model + 1 parameters per block
    assert abs(n_t - n_m) <= tc.n_layer * (2 * tc.d_model + 1), (n_m, n_t)


def test_checkpoint_roundtrip(tf, tmp_path):
    cfg = tf.cfg
    params = tf.module.init_params(cfg, np.random.default_rng(13))
    save_checkpoint(tmp_path / "tf.npz", params, cfg, extra={"step": 3})
    p2, cfg2, extra, _ = load_checkpoint(tmp_path / "tf.npz")
    assert type(cfg2) is tf.config and cfg2 == cfg and extra == {"step": 3}
    assert p2.keys() == params.keys() and all(np.array_equal(params[k], p2[k]) for k in params)
    # a fresh interpreter that never imported the model's module can load it too
    code = ("import sys; from mamba_from_scratch.checkpoint import load_checkpoint; "
            "print(type(load_checkpoint(sys.argv[1])[1]).__name__)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "tf.npz")], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == tf.config.__name__


@pytest.mark.parametrize("field, value, match", [
    ("d_model", 0, "d_model must be an integer >= 1"),
    ("n_layer", 0, "n_layer must be an integer >= 1"),
    ("n_head", -1, "n_head must be an integer >= 1"),
    ("n_head", 4, "n_head must divide d_model"),
    ("d_mlp", 2.5, "d_mlp must be an integer >= 1"),
    ("d_in", 0, "d_in must be an integer >= 1"),
    ("d_out", True, "d_out must be an integer >= 1"),
])
def test_bad_config_is_a_value_error(tf, field, value, match):
    with pytest.raises(ValueError, match=match):
        tf.config(**{**SIZES, field: value})


def test_bad_input_is_a_value_error(tf):
    """Inputs of the wrong width or length, and the other Transformer's config."""
    params = tf.module.init_params(tf.cfg, np.random.default_rng(14))
    with pytest.raises(ValueError, match="x must have shape"):
        tf.module.model_forward(params, tf.cfg, np.zeros((2, 3, 5), np.float32))
    with pytest.raises(ValueError, match="x must have shape"):
        tf.module.model_forward(params, tf.cfg, np.zeros((2, 0, 4), np.float32))
    other = sat.SoftmaxTFConfig if tf.config is lat.LinearTFConfig else lat.LinearTFConfig
    with pytest.raises(ValueError, match=f"cfg must be a {tf.config.__name__}"):
        tf.module.init_params(other(**SIZES), np.random.default_rng(0))
    with pytest.raises(ValueError, match=f"cfg must be a {tf.config.__name__}"):
        tf.module.model_forward(params, other(**SIZES), np.zeros((2, 3, 4), np.float32))
