"""The ablated Mambas (models/mamba_ablations.py, models/mixer_variants.py): float64 finite
differences of every parameter and dx, step mode, checkpoints in a fresh process, parameter
counts, the variant mixer against mixer.py's definition, and frozen selection."""
import subprocess
import sys

import numpy as np
import pytest

from mamba_from_scratch.checkpoint import load_checkpoint, save_checkpoint
from mamba_from_scratch.gradcheck import numerical_grad, rel_error
from mamba_from_scratch.layers import softplus_forward
from mamba_from_scratch.models import backbone, mixer, mixer_variants
from mamba_from_scratch.models.mamba import MambaConfig, init_state, model_forward, model_step
from mamba_from_scratch.models.mamba_ablations import FrozenSelection, MambaNoGateConfig, MambaNonselectiveConfig
from mamba_from_scratch.params import count_params, sub_params

TOL = 1e-6
SIZES = dict(d_model=3, n_layer=2, d_state=4, d_conv=3, dt_rank=2, d_in=2, d_out=5)  # d_inner 6: distinct sizes
CONFIGS = {"mamba": MambaConfig(**SIZES), "nonselective": MambaNonselectiveConfig(**SIZES),
           "nogate": MambaNoGateConfig(**SIZES)}


def random_params(cfg, seed):
    """Init, then perturb every parameter so no gradient is trivially zero; delta ~ 0.7."""
    rng = np.random.default_rng(seed)
    p = backbone.init_params(cfg, rng, dtype=np.float64)
    p = {k: v + 0.3 * rng.normal(size=v.shape) for k, v in p.items()}
    for k in p:
        if k.endswith("dt_proj.bias"):
            p[k] = 0.5 * rng.normal(size=p[k].shape)
    return p


def check_model_gradients(cfg, params, x, dout, backend):
    loss = lambda: float(np.sum(backbone.model_forward(params, cfg, x, backend)[0] * dout))
    grads, dx = backbone.model_backward(dout, backbone.model_forward(params, cfg, x, backend)[1])
    assert set(grads) == set(params)
    for k in params:
        err = rel_error(grads[k], numerical_grad(loss, params[k], eps=1e-5))
        assert err < TOL, f"{k}: rel error {err:.2e}"
    assert rel_error(dx, numerical_grad(loss, x)) < TOL


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("l", [1, 5])
@pytest.mark.parametrize("name", ["nonselective", "nogate"])
def test_ablated_model_gradients(name, l, backend):
    rng = np.random.default_rng(4)
    cfg = CONFIGS[name]
    check_model_gradients(cfg, random_params(cfg, 5), rng.normal(size=(2, l, 2)), rng.normal(size=(2, l, 5)),
                          backend)


@pytest.mark.parametrize("name", ["mamba", "nonselective", "nogate"])
def test_frozen_selection_gradients(name):
    rng = np.random.default_rng(6)
    cfg = CONFIGS[name]
    check_model_gradients(FrozenSelection(cfg), random_params(cfg, 7), rng.normal(size=(2, 5, 2)),
                          rng.normal(size=(2, 5, 5)), "numpy")


def test_parameters_that_remain():
    mamba, nonsel, nogate = (set(CONFIGS[k].param_shapes()) for k in ("mamba", "nonselective", "nogate"))
    assert mamba - nonsel == {f"layers.{i}.mixer.{n}" for i in range(2) for n in ("x_proj.weight", "dt_proj.weight")}
    assert nonsel - mamba == {f"layers.{i}.mixer.{n}" for i in range(2) for n in ("B", "C")}
    assert nogate == mamba
    assert CONFIGS["nogate"].param_shapes()["layers.0.mixer.in_proj.weight"] == (6, 3)
    # the ICL configuration (d_model 32, 2 layers, d = 16: d_in 34): counts per layer removed
    icl = dict(d_model=32, n_layer=2, d_in=34, d_out=1)
    full = count_params(MambaConfig(**icl))
    di, n, r = 64, 16, 2
    assert count_params(MambaNonselectiveConfig(**icl)) == full - 2 * ((r + 2 * n) * di + di * r - 2 * n)
    assert count_params(MambaNoGateConfig(**icl)) == full - 2 * di * 32


def test_nonselective_init():
    cfg = MambaNonselectiveConfig(d_model=16, n_layer=2, d_in=1, d_out=1)
    p = backbone.init_params(cfg, np.random.default_rng(0))
    for i in range(2):
        assert np.all(p[f"layers.{i}.mixer.B"] == 1)
        dt = softplus_forward(p[f"layers.{i}.mixer.dt_proj.bias"].astype(np.float64))[0]
        assert dt.min() >= cfg.dt_min * (1 - 1e-5) and dt.max() <= cfg.dt_max * (1 + 1e-5)
    assert not np.array_equal(p["layers.0.mixer.C"], p["layers.1.mixer.C"])


def test_all_switches_on_is_mixer_definition():
    """mixer_variants with selective, gated, not frozen is mixer.py, forward and backward."""
    rng = np.random.default_rng(8)
    p = sub_params(random_params(CONFIGS["mamba"], 9), "layers.0.mixer.")
    x, dout = rng.normal(size=(2, 7, 3)), rng.normal(size=(2, 7, 3))
    state = {"conv": rng.normal(size=(2, 2, 6)), "h": rng.normal(size=(2, 6, 4))}
    dh_last = rng.normal(size=(2, 6, 4))
    out_ref, st_ref, c_ref = mixer.mixer_forward(x, p, state)
    out, st, c = mixer_variants.mixer_forward(x, p, state)
    assert rel_error(out, out_ref) < 1e-14
    assert rel_error(st["h"], st_ref["h"]) < 1e-14 and np.array_equal(st["conv"], st_ref["conv"])
    g_ref, dx_ref, dh0_ref = mixer.mixer_backward(dout, c_ref, dh_last)
    g, dx, dh0 = mixer_variants.mixer_backward(dout, c, dh_last)
    assert set(g) == set(g_ref) and all(rel_error(g[k], g_ref[k]) < 1e-13 for k in g)
    assert rel_error(dx, dx_ref) < 1e-13 and rel_error(dh0, dh0_ref) < 1e-13


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("name", ["nonselective", "nogate"])
def test_step_mode_equals_full_forward(name, backend):
    rng = np.random.default_rng(10)
    cfg = CONFIGS[name]
    params = random_params(cfg, 11)
    x = rng.normal(size=(3, 9, 2))
    full, _ = model_forward(params, cfg, x, backend)
    state, steps = init_state(cfg, 3, np.float64), []
    for t in range(9):
        out_t, state = model_step(params, cfg, x[:, t], state)
        steps.append(out_t)
    assert np.max(np.abs(np.stack(steps, 1) - full)) < 1e-12


def test_freezing_changes_a_selective_model_and_not_a_nonselective_one():
    rng = np.random.default_rng(12)
    x = rng.normal(size=(3, 11, 2))
    for name in ("mamba", "nogate", "nonselective"):
        cfg = CONFIGS[name]
        params = random_params(cfg, 13)
        out = backbone.model_forward(params, cfg, x, "numpy")[0]
        frozen = backbone.model_forward(params, FrozenSelection(cfg), x, "numpy")[0]
        if name == "nonselective":
            assert rel_error(frozen, out) < 1e-13
        else:
            assert rel_error(frozen, out) > 1e-2, name
    with pytest.raises(ValueError, match="Mamba config"):
        FrozenSelection(object())


def test_frozen_selection_uses_the_mean_over_the_sequence():
    """A one-token sequence's mean is the token's own Δ, B, C: freezing changes nothing;
    and each sequence of a batch is frozen on its own (not over the batch)."""
    rng = np.random.default_rng(14)
    cfg = CONFIGS["mamba"]
    params = random_params(cfg, 15)
    x = rng.normal(size=(2, 1, 2))
    assert rel_error(backbone.model_forward(params, FrozenSelection(cfg), x, "numpy")[0],
                     backbone.model_forward(params, cfg, x, "numpy")[0]) < 1e-13
    x = rng.normal(size=(2, 6, 2))
    both = backbone.model_forward(params, FrozenSelection(cfg), x, "numpy")[0]
    alone = backbone.model_forward(params, FrozenSelection(cfg), x[1:], "numpy")[0]
    assert rel_error(both[1:], alone) < 1e-13


@pytest.mark.parametrize("name", ["nonselective", "nogate"])
def test_checkpoint_loads_in_a_fresh_process(tmp_path, name):
    cfg = CONFIGS[name]
    params = random_params(cfg, 16)
    x = np.random.default_rng(17).normal(size=(2, 5, 2))
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, params, cfg, extra={"step": 1})
    np.save(tmp_path / "x.npy", x)
    code = ("import sys, numpy as np\n"
            "from mamba_from_scratch.checkpoint import load_checkpoint\n"
            "from mamba_from_scratch.models.backbone import model_forward\n"
            "p, cfg, extra, _ = load_checkpoint(sys.argv[1])\n"
            "print(type(cfg).__name__)\n"
            "np.save(sys.argv[3], model_forward(p, cfg, np.load(sys.argv[2]), 'numpy')[0])\n")
    run = subprocess.run([sys.executable, "-c", code, str(path), str(tmp_path / "x.npy"), str(tmp_path / "out.npy")],
                         capture_output=True, text=True, check=True)
    assert run.stdout.strip() == type(cfg).__name__
    assert np.array_equal(np.load(tmp_path / "out.npy"), backbone.model_forward(params, cfg, x, "numpy")[0])
    loaded, cfg2, _, _ = load_checkpoint(path)
    assert type(cfg2) is type(cfg) and cfg2 == cfg
    with pytest.raises(ValueError, match="must be one of the model configs"):
        save_checkpoint(tmp_path / "frozen.npz", params, FrozenSelection(cfg))
