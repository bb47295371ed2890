"""Parameter-dict helpers (params.py): sub-dict by prefix, prefixing, counting, checking."""
import numpy as np
import pytest

from mamba_from_scratch.models.mamba import MambaConfig, init_params
from mamba_from_scratch.params import check_params, count_params, prefixed, sub_params


def test_sub_params_and_prefixed_are_inverse():
    p = {"layers.0.a": np.zeros(1), "layers.0.mixer.b": np.ones(2), "layers.10.a": np.zeros(3), "norm_f.w": np.ones(1)}
    sub = sub_params(p, "layers.0.")
    assert list(sub) == ["a", "mixer.b"] and sub["mixer.b"] is p["layers.0.mixer.b"]   # no copies, no "layers.10."
    assert prefixed(sub, "layers.0.") == {k: v for k, v in p.items() if k.startswith("layers.0.")}
    assert sub_params(p, "nothing.") == {}


def test_count_and_check():
    cfg = MambaConfig(d_model=4, n_layer=2, d_state=3, d_in=2, d_out=1)
    params = init_params(cfg, np.random.default_rng(0), np.float64)
    assert count_params(cfg) == sum(v.size for v in params.values())
    assert check_params(params, cfg) == np.float64
    with pytest.raises(ValueError, match="params keys do not match"):
        check_params({k: v for k, v in params.items() if k != "norm_f.weight"}, cfg)
    with pytest.raises(ValueError, match="cfg must be a model config"):
        check_params(params, {"d_model": 4})
