"""Unchanged across refactors (to ulp noise, see RTOL): every committed checkpoint, the softmax Transformer, the
language model and three icl-train steps per model give the arrays frozen in
tests/data/model_reference.npz (written by tests/data/make_model_reference.py from the code
before the models/ refactor of issue 19)."""
import glob
import os
import tempfile

import numpy as np
import pytest

from mamba_from_scratch.checkpoint import load_checkpoint
from mamba_from_scratch.icl import train as icl_train
from mamba_from_scratch.lm.model import MambaLMConfig, init_lm_params, lm_backward, lm_forward, state_from_cache
from mamba_from_scratch.models import softmax_attention as sat
from mamba_from_scratch.models.backbone import model_backward, model_forward

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REF = np.load(os.path.join(ROOT, "tests", "data", "model_reference.npz"))
CHECKPOINTS = sorted(p for p in glob.glob(os.path.join(ROOT, "docs", "checkpoints", "*.npz"))
                     if any(k.startswith(os.path.basename(p)[:-4] + "/") for k in REF.files))  # the 9 frozen ones
assert len(CHECKPOINTS) == 9, CHECKPOINTS


def fixed_input(cfg, seed=0, b=3, l=9):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(b, l, cfg.d_in)).astype(np.float32), rng.normal(size=(b, l, cfg.d_out)).astype(np.float32)


# How close "unchanged" must be, relative to the array's scale (its largest |entry|). Bit
# identity held when the refactor landed (commit 0150cf4, both sides loading the scan from the
# Numba cache); but the compiled scan's float bits differ by a few ulp between a kernel compiled
# in the running process and the same kernel loaded from the cache, and between CPUs
# (docs/reliability.md), and CI starts from a cold cache on whatever machine it gets. Measured
# on a cold cache: at most 5.2e-6 of the scale (icl_mamba_he2_d32's gradients), the training
# steps 6e-8. A change of behaviour (a wrong sign, scale or index) moves an array by O(1) of
# its scale; the three training steps get more room because AdamW's m / sqrt(v) can turn ulp
# noise in a near-zero gradient into a step of up to lr.
RTOL = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-9}
RTOL_TRAIN = 1e-3


def same(key, got, rtol=None):
    want = REF[key]
    assert got.dtype == want.dtype and got.shape == want.shape, key
    rtol = RTOL[want.dtype] if rtol is None else rtol
    err = np.abs(got.astype(np.float64) - want).max(initial=0.0)
    scale = np.abs(want.astype(np.float64)).max(initial=0.0)
    assert err <= rtol * max(scale, 1e-30), f"{key}: max |diff| {err:.3g}, scale {scale:.3g}, rtol {rtol:g}"


def expect_grads(prefix, grads, rtol=None):
    keys = {k[len(prefix):] for k in REF.files if k.startswith(prefix)}
    assert set(grads) == keys
    for k, g in grads.items():
        same(prefix + k, g, rtol)


@pytest.mark.parametrize("path", CHECKPOINTS, ids=lambda p: os.path.basename(p)[:-4])
def test_committed_checkpoint_outputs_and_gradients_are_unchanged(path):
    name = os.path.basename(path)[:-4]
    params, cfg, _, _ = load_checkpoint(path)
    x, dout = fixed_input(cfg)
    backends = [k.split("/")[1] for k in REF.files if k.startswith(name + "/") and k.endswith("/out")]
    assert backends
    for backend in backends:
        out, cache = model_forward(params, cfg, x, backend)
        same(f"{name}/{backend}/out", out)
        expect_grads(f"{name}/{backend}/grad/", model_backward(dout, cache)[0])


def test_softmax_tf_is_unchanged():
    cfg = sat.SoftmaxTFConfig(d_model=8, n_layer=2, n_head=2, d_mlp=12, d_in=5, d_out=2)
    params = sat.init_params(cfg, np.random.default_rng(1))
    x, dout = fixed_input(cfg)
    out, cache = sat.model_forward(params, cfg, x)
    same("softmax-tf/out", out)
    expect_grads("softmax-tf/grad/", sat.model_backward(dout, cache)[0])


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_language_model_is_unchanged(backend):
    cfg = MambaLMConfig(d_model=8, n_layer=2, vocab_size=16)
    params = init_lm_params(cfg, np.random.default_rng(2))
    ids = np.random.default_rng(3).integers(0, 16, size=(2, 7))
    logits, cache = lm_forward(params, cfg, ids, backend)
    same(f"lm/{backend}/logits", logits)
    grads, dx = lm_backward(np.random.default_rng(4).normal(size=logits.shape).astype(np.float32), cache)
    same(f"lm/{backend}/dx", dx)
    expect_grads(f"lm/{backend}/grad/", grads)
    for i, s in enumerate(state_from_cache(cache)):
        same(f"lm/{backend}/state/{i}/conv", s["conv"])
        same(f"lm/{backend}/state/{i}/h", s["h"])


@pytest.mark.parametrize("model", ["mamba", "linear-tf"])
def test_three_training_steps_are_unchanged(model):
    tc = icl_train.TrainConfig(**{**icl_train.QUICK, "model": model, "steps": 3, "d": 8, "N": 8, "batch": 4,
                                  "eval_every": 100, "ckpt_every": 100, "n_val": 4})
    with tempfile.TemporaryDirectory() as tmp:
        result = icl_train.train(tc, tmp, progress=False)
    same(f"train/{model}/log", np.asarray(result["log"] or [[0, 0, 0]], np.float64), RTOL_TRAIN)
    expect_grads(f"train/{model}/params/", result["params"], RTOL_TRAIN)
