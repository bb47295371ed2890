"""The backbone (models/backbone.py): every model config names a block, the stack keeps the
contract for each (states out, (grads, dx) back), and the config's type alone picks the model."""
import numpy as np
import pytest

from mamba_from_scratch.models import CONFIGS, backbone
from mamba_from_scratch.models.linear_attention import LinearTFConfig
from mamba_from_scratch.models.mamba import MambaConfig
from mamba_from_scratch.models.mamba_ablations import MambaNoGateConfig, MambaNonselectiveConfig
from mamba_from_scratch.models.softmax_attention import SoftmaxTFConfig

SMALL = {MambaConfig: dict(d_model=4, n_layer=2, d_state=3, d_in=3, d_out=2),
         MambaNonselectiveConfig: dict(d_model=4, n_layer=2, d_state=3, d_in=3, d_out=2),
         MambaNoGateConfig: dict(d_model=4, n_layer=2, d_state=3, d_in=3, d_out=2),
         LinearTFConfig: dict(d_model=4, n_layer=2, n_head=2, d_mlp=5, d_in=3, d_out=2),
         SoftmaxTFConfig: dict(d_model=4, n_layer=2, n_head=2, d_mlp=5, d_in=3, d_out=2)}


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_every_model_keeps_the_contract(cls):
    cfg = cls(**SMALL[cls])
    params = backbone.init_params(cfg, np.random.default_rng(0), np.float64)
    assert params.keys() == cfg.param_shapes().keys()
    rng = np.random.default_rng(1)
    x, dout = rng.normal(size=(2, 5, 3)), rng.normal(size=(2, 5, 2))
    out, cache = backbone.model_forward(params, cfg, x, "numpy")
    grads, dx = backbone.model_backward(dout, cache)
    assert out.shape == (2, 5, 2) and dx.shape == x.shape and grads.keys() == params.keys()
    h = rng.normal(size=(2, 5, 4))
    h_out, states, caches = backbone.blocks_forward(h, params, cfg, backend="numpy")
    assert h_out.shape == h.shape and len(states) == len(caches) == cfg.n_layer
    assert all(s is None for s in states) == (not issubclass(cls, MambaConfig))   # only the Mambas have a state
    block_grads, dh = backbone.blocks_backward(np.ones_like(h), caches, cfg)
    assert dh.shape == h.shape and set(block_grads) == {k for k in params if k.startswith("layers.")}


def test_the_config_type_picks_the_model():
    """The Transformers' parameters fit either config: the same weights under the other
    config run the other attention."""
    lin, soft = LinearTFConfig(**SMALL[LinearTFConfig]), SoftmaxTFConfig(**SMALL[SoftmaxTFConfig])
    params = backbone.init_params(lin, np.random.default_rng(2))
    x = np.random.default_rng(3).normal(size=(2, 5, 3)).astype(np.float32)
    out_l, cache_l = backbone.model_forward(params, lin, x)
    out_s, cache_s = backbone.model_forward(params, soft, x)
    assert not np.allclose(out_l, out_s)
    assert cache_l[0] is lin and cache_s[0] is soft          # the backward reads the model from the cache


def test_make_attention_wraps_any_core_in_the_four_projections():
    """The wrapper both Transformers share: with a core that returns the values unchanged the
    attention is x Wv^T Wo^T, and its backward is that product's (q and k get no gradient);
    a feature map without its backward is an error."""
    from mamba_from_scratch.models.transformer import make_attention

    def values_forward(q, k, v):
        return v, (q.transpose(0, 2, 1, 3),)                 # the cache starts with Q (b, h, l, e)

    def values_backward(do, cache):
        return np.zeros_like(do), np.zeros_like(do), do

    fwd, bwd = make_attention(values_forward, values_backward)
    rng = np.random.default_rng(4)
    p = {f"{n}_proj.weight": rng.normal(size=(4, 4)) for n in "qkv"}
    p["out_proj.weight"] = rng.normal(size=(4, 4))
    x, dout = rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 3, 4))
    out, cache = fwd(x, p, 2)
    np.testing.assert_allclose(out, x @ p["v_proj.weight"].T @ p["out_proj.weight"].T, rtol=1e-12)
    g, dx = bwd(dout, cache)
    np.testing.assert_allclose(dx, dout @ p["out_proj.weight"] @ p["v_proj.weight"], rtol=1e-12)
    assert not g["q_proj.weight"].any() and not g["k_proj.weight"].any()
    with pytest.raises(ValueError, match="feature_backward"):
        make_attention(values_forward, values_backward, feature_forward=lambda a: (a, None))
