"""The Mamba mixer (models/mixer.py, the definition; models/mixer_fused.py, the fast path):
float64 finite differences of both, including the state in and out; the fused composition
equals the definition; the returned state continues the sequence; one step equals the forward."""
import numpy as np
import pytest

from mamba_from_scratch.gradcheck import numerical_grad, rel_error
from mamba_from_scratch.models import mixer, mixer_fused
from mamba_from_scratch.models.mamba import MambaConfig, init_params
from mamba_from_scratch.params import sub_params

TOL = 1e-6
IMPLS = {"definition": (mixer, "numpy"), "fused": (mixer_fused, "numba")}


def mixer_params(cfg, seed, dtype=np.float64):
    """Block 0's mixer parameters, perturbed so no gradient is trivially zero, delta ~ 0.7."""
    rng = np.random.default_rng(seed)
    p = sub_params(init_params(cfg, rng, dtype=np.float64), "layers.0.mixer.")
    p = {k: v + 0.3 * rng.normal(size=v.shape) for k, v in p.items()}
    p["dt_proj.bias"] = 0.5 * rng.normal(size=p["dt_proj.bias"].shape)
    return {k: v.astype(dtype) for k, v in p.items()}


# Tiny, distinct sizes so that a swapped axis fails loudly: d_inner 6, n 4, rank 2, k 3.
CFG = MambaConfig(d_model=3, n_layer=1, d_state=4, d_conv=3, dt_rank=2, d_in=2, d_out=5)


# l = 1 and l < d_conv are edge cases
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("l", [1, 2, 5])
def test_gradients_including_states(impl, l):
    module, backend = IMPLS[impl]
    rng = np.random.default_rng(l)
    p = mixer_params(CFG, 1)
    x = rng.normal(size=(2, l, 3))
    state = {"conv": rng.normal(size=(2, 2, 6)), "h": rng.normal(size=(2, 6, 4))}
    dout, dh_last = rng.normal(size=(2, l, 3)), rng.normal(size=(2, 6, 4))

    def loss():
        out, s, _ = module.mixer_forward(x, p, state, backend)
        return float(np.sum(out * dout) + np.sum(s["h"] * dh_last))

    _, _, cache = module.mixer_forward(x, p, state, backend)
    dout_copy = dout.copy()
    grads, dx, dh0 = module.mixer_backward(dout, cache, dh_last)
    assert np.array_equal(dout, dout_copy), "dout is not written into"
    assert set(grads) == set(p)
    for k in p:
        err = rel_error(grads[k], numerical_grad(loss, p[k], eps=1e-5))
        assert err < TOL, f"{k}: rel error {err:.2e}"
    assert rel_error(dx, numerical_grad(loss, x, eps=1e-5)) < TOL
    assert rel_error(dh0, numerical_grad(loss, state["h"], eps=1e-5)) < TOL


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
@pytest.mark.parametrize("with_state", [False, True])
def test_fused_equals_the_definition(dtype, tol, with_state):
    """Same inputs, one random upstream gradient through both, every output compared."""
    rng = np.random.default_rng(11)
    cfg = MambaConfig(d_model=8, n_layer=1, d_state=4, d_in=3, d_out=2)
    p = mixer_params(cfg, 12, dtype)
    x = rng.normal(size=(3, 37, 8)).astype(dtype)
    state = ({"conv": rng.normal(size=(3, 3, 16)).astype(dtype), "h": rng.normal(size=(3, 16, 4)).astype(dtype)}
             if with_state else None)
    dout, dh_last = rng.normal(size=(3, 37, 8)).astype(dtype), rng.normal(size=(3, 16, 4)).astype(dtype)
    out_ref, s_ref, c_ref = mixer.mixer_forward(x, p, state, "numpy")
    out, s, c = mixer_fused.mixer_forward(x, p, state, "numba")
    assert out.dtype == dtype and rel_error(out, out_ref) < tol
    assert rel_error(s["h"], s_ref["h"]) < tol and np.array_equal(s["conv"], s_ref["conv"])
    g_ref, dx_ref, dh0_ref = mixer.mixer_backward(dout, c_ref, dh_last)
    g, dx, dh0 = mixer_fused.mixer_backward(dout, c, dh_last)
    assert list(g) == list(g_ref), "the same gradients in the same order"
    assert rel_error(dx, dx_ref) < tol and rel_error(dh0, dh0_ref) < tol
    for k in g_ref:
        assert g[k].dtype == dtype and rel_error(g[k], g_ref[k]) < tol, k


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("d_conv", [1, 3])
def test_returned_state_continues_the_sequence(impl, d_conv):
    """Two halves with the state the first returns equal one pass (k = 1 included)."""
    module, backend = IMPLS[impl]
    rng = np.random.default_rng(13)
    cfg = MambaConfig(d_model=3, n_layer=1, d_state=4, d_conv=d_conv, dt_rank=2, d_in=2, d_out=5)
    p = mixer_params(cfg, 14)
    x = rng.normal(size=(2, 7, 3))
    full, s_full, _ = module.mixer_forward(x, p, None, backend)
    first, s, _ = module.mixer_forward(x[:, :4], p, None, backend)
    assert s["conv"].shape == (2, d_conv - 1, 6) and s["h"].shape == (2, 6, 4)
    second, s2, _ = module.mixer_forward(x[:, 4:], p, s, backend)
    assert np.max(np.abs(np.concatenate([first, second], 1) - full)) < 1e-12
    assert np.max(np.abs(s2["h"] - s_full["h"])) < 1e-12 and np.array_equal(s2["conv"], s_full["conv"])


def test_step_equals_the_forward():
    rng = np.random.default_rng(15)
    p = mixer_params(CFG, 16)
    x = rng.normal(size=(2, 6, 3))
    full, s_full, _ = mixer.mixer_forward(x, p)
    state = {"conv": np.zeros((2, 2, 6)), "h": np.zeros((2, 6, 4))}
    outs = []
    for t in range(6):
        out_t, state = mixer.mixer_step(x[:, t], p, state)
        outs.append(out_t)
    assert np.max(np.abs(np.stack(outs, 1) - full)) < 1e-12
    assert np.max(np.abs(state["h"] - s_full["h"])) < 1e-12 and np.allclose(state["conv"], s_full["conv"])
