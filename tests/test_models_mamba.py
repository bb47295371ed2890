"""The Mamba (models/mamba.py): the residual block and the whole model: gradients, step mode,
init, checkpoints. The mixer's own tests are in tests/test_mixer.py."""
import numpy as np
import pytest

from mamba_from_scratch.checkpoint import load_checkpoint, save_checkpoint
from mamba_from_scratch.gradcheck import numerical_grad, rel_error
from mamba_from_scratch.layers import softplus_forward
from mamba_from_scratch.models.mamba import (
    MambaConfig,
    block_backward,
    block_forward,
    init_params,
    init_state,
    model_backward,
    model_forward,
    model_step,
)
from mamba_from_scratch.params import sub_params

TOL = 1e-6
# Tiny, distinct sizes so that a swapped axis fails loudly: d_inner 6, n 4, rank 2, k 3.
CFG = MambaConfig(d_model=3, n_layer=2, d_state=4, d_conv=3, dt_rank=2, d_in=2, d_out=5)


def random_params(cfg, seed):
    """Init, then perturb every parameter so no gradient is trivially zero (D = 1, norms = 1...)."""
    rng = np.random.default_rng(seed)
    p = init_params(cfg, rng, dtype=np.float64)
    p = {k: v + 0.3 * rng.normal(size=v.shape) for k, v in p.items()}
    for k in p:  # delta ~ 0.7 rather than ~0.01, so the scan's gradients are not all tiny
        if k.endswith("dt_proj.bias"):
            p[k] = 0.5 * rng.normal(size=p[k].shape)
    return p


def check_grads(loss, params, grads, keys=None):
    # eps 1e-5: some gradients (dt_proj at small delta) are ~1e-4 of the loss, and a smaller
    # step would drown them in round-off; truncation error at 1e-5 is still ~1e-10.
    for k in keys or params:
        num = numerical_grad(loss, params[k], eps=1e-5)
        err = rel_error(grads[k], num)
        assert err < TOL, f"{k}: rel error {err:.2e}"


def test_block_gradients():
    rng = np.random.default_rng(2)
    p = sub_params(random_params(CFG, 3), "layers.1.")
    x, dout = rng.normal(size=(2, 5, 3)), rng.normal(size=(2, 5, 3))
    loss = lambda: float(np.sum(block_forward(x, p, CFG, None, "numpy")[0] * dout))
    grads, dx = block_backward(dout, block_forward(x, p, CFG, None, "numpy")[2])
    check_grads(loss, p, grads)
    assert rel_error(dx, numerical_grad(loss, x)) < TOL


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("l", [1, 5])
def test_model_gradients(l, backend):
    rng = np.random.default_rng(4)
    params = random_params(CFG, 5)
    x, dout = rng.normal(size=(2, l, 2)), rng.normal(size=(2, l, 5))
    loss = lambda: float(np.sum(model_forward(params, CFG, x, backend)[0] * dout))
    grads, dx = model_backward(dout, model_forward(params, CFG, x, backend)[1])
    assert set(grads) == set(params)
    check_grads(loss, params, grads)
    assert rel_error(dx, numerical_grad(loss, x)) < TOL


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_step_mode_equals_full_forward(backend):
    rng = np.random.default_rng(6)
    params = random_params(CFG, 7)
    x = rng.normal(size=(3, 9, 2))
    full, _ = model_forward(params, CFG, x, backend)
    state = init_state(CFG, 3, np.float64)
    steps = []
    for t in range(9):
        out_t, state = model_step(params, CFG, x[:, t], state)
        steps.append(out_t)
    assert np.max(np.abs(np.stack(steps, 1) - full)) < 1e-12


def test_init_matches_the_official_recipe():
    cfg = MambaConfig(d_model=64, n_layer=3, d_in=1, d_out=1)
    p = init_params(cfg, np.random.default_rng(0))
    assert set(p) == set(cfg.param_shapes())
    assert all(p[k].shape == s and p[k].dtype == np.float32 for k, s in cfg.param_shapes().items())
    assert cfg.dt_rank == 4 and cfg.d_inner == 128
    for i in range(3):
        dt = softplus_forward(p[f"layers.{i}.mixer.dt_proj.bias"].astype(np.float64))[0]
        assert dt.min() >= cfg.dt_min * (1 - 1e-5) and dt.max() <= cfg.dt_max * (1 + 1e-5)
        assert np.allclose(np.exp(p[f"layers.{i}.mixer.A_log"]), np.arange(1, 17), rtol=1e-6)
        assert np.all(p[f"layers.{i}.mixer.D"] == 1)
    same = init_params(cfg, np.random.default_rng(0))
    assert all(np.array_equal(p[k], same[k]) for k in p), "same seed, same numbers"


def test_long_sequence_stays_finite():
    cfg = MambaConfig(d_model=8, n_layer=2, d_in=1, d_out=1)
    params = init_params(cfg, np.random.default_rng(0), dtype=np.float32)
    x = np.random.default_rng(1).normal(size=(1, 100_000, 1)).astype(np.float32)
    out, _ = model_forward(params, cfg, x, "numba")
    assert np.all(np.isfinite(out))


def test_checkpoint_round_trip(tmp_path):
    params = random_params(CFG, 8)
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, params, CFG, extra={"step": 3}, arrays={"m": np.arange(4.0)})
    loaded, cfg, extra, arrays = load_checkpoint(path)
    assert cfg == CFG and extra == {"step": 3} and np.array_equal(arrays["m"], np.arange(4.0))
    assert set(loaded) == set(params) and all(np.array_equal(loaded[k], params[k]) for k in params)
    assert not [f for f in tmp_path.iterdir() if f.name.startswith(".tmp")]


def test_checkpoint_with_wrong_keys_or_shapes_is_rejected(tmp_path):
    params = random_params(CFG, 9)
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, params, CFG)
    with np.load(path) as f:
        data = dict(f)
    bad = dict(data)
    del bad["params/norm_f.weight"]
    np.savez(tmp_path / "missing.npz", **bad)
    with pytest.raises(ValueError, match="norm_f.weight"):
        load_checkpoint(tmp_path / "missing.npz")
    bad = dict(data)
    bad["params/read_in.bias"] = np.zeros(7)
    np.savez(tmp_path / "shape.npz", **bad)
    with pytest.raises(ValueError, match="read_in.bias"):
        load_checkpoint(tmp_path / "shape.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(2))
    with pytest.raises(ValueError, match="not a checkpoint"):
        load_checkpoint(tmp_path / "other.npz")
    with pytest.raises(ValueError, match="params keys"):
        save_checkpoint(tmp_path / "x.npz", {"a": np.zeros(1)}, CFG)


@pytest.mark.parametrize("kwargs, name", [
    (dict(d_model=0), "d_model"), (dict(n_layer=-1), "n_layer"), (dict(d_state=2.5), "d_state"),
    (dict(dt_rank="big"), "dt_rank"), (dict(dt_min=0.5, dt_max=0.1), "dt_min"), (dict(dt_min=-1.0), "dt_min"),
])
def test_bad_config_is_rejected(kwargs, name):
    base = dict(d_model=4, n_layer=1, d_in=1, d_out=1)
    with pytest.raises(ValueError, match=name):
        MambaConfig(**{**base, **kwargs})


def test_bad_model_input_is_rejected():
    params = random_params(CFG, 10)
    with pytest.raises(ValueError, match="x must have shape"):
        model_forward(params, CFG, np.zeros((2, 3, 4)), "numpy")
    with pytest.raises(ValueError, match="x must have 3 dimensions"):
        model_forward(params, CFG, np.zeros((3, 2)), "numpy")
    with pytest.raises(ValueError, match="x must have dtype"):
        model_forward(params, CFG, np.zeros((2, 3, 2), np.float32), "numpy")
    with pytest.raises(ValueError, match="x contains NaN"):
        model_forward(params, CFG, np.full((2, 3, 2), np.nan), "numpy")
    with pytest.raises(ValueError, match="x must have shape"):
        model_forward(params, CFG, np.zeros((2, 0, 2)), "numpy")
    with pytest.raises(ValueError, match="backend must be one of"):
        model_forward(params, CFG, np.zeros((2, 3, 2)), "torch")
    with pytest.raises(ValueError, match="rng"):
        init_params(CFG, 0)


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_fused_mixer_equals_the_numpy_layers(dtype, tol):
    """The compiled path (fused kernels + numba scan) against the NumPy layers, both passes."""
    rng = np.random.default_rng(11)
    cfg = MambaConfig(d_model=8, n_layer=1, d_state=4, d_in=3, d_out=2)
    params = {k: v.astype(dtype) for k, v in random_params(cfg, 12).items()}
    x = rng.normal(size=(3, 37, 3)).astype(dtype)
    dout = rng.normal(size=(3, 37, 2)).astype(dtype)
    out_ref, cache_ref = model_forward(params, cfg, x, "numpy")
    out, cache = model_forward(params, cfg, x, "numba")
    assert rel_error(out, out_ref) < tol
    g_ref, dx_ref = model_backward(dout, cache_ref)
    g, dx = model_backward(dout, cache)
    assert rel_error(dx, dx_ref) < tol
    for k in g_ref:
        assert g[k].dtype == dtype and rel_error(g[k], g_ref[k]) < tol, k
