"""The command line, the optimizer and the schedule."""
import subprocess
import sys

import numpy as np
import pytest

from mamba_from_scratch.cli import COMMANDS, main
from mamba_from_scratch.demo import linear_regression_prompts, train
from mamba_from_scratch.models.mamba import MambaConfig
from mamba_from_scratch.optim import AdamW, clip_grad_norm, cosine_lr, default_no_decay


def test_top_level_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)
    assert main(["no-such-command"]) == 2


def test_demo_help_runs_as_a_module():
    r = subprocess.run([sys.executable, "-m", "mamba_from_scratch", "demo", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--steps" in r.stdout


def test_adamw_matches_the_formula_and_skips_decay_where_it_should():
    p = {"w.weight": np.array([1.0, -2.0]), "w.bias": np.array([0.5]), "m.A_log": np.array([0.3])}
    g = {"w.weight": np.array([0.1, 0.2]), "w.bias": np.array([-0.3]), "m.A_log": np.array([0.4])}
    opt = AdamW({k: v.copy() for k, v in p.items()}, lr=0.1, weight_decay=0.5)
    q = {k: v.copy() for k, v in p.items()}
    opt.step(q, g)
    # First Adam step: m_hat = g, v_hat = g^2, so the update is sign(g) (eps aside).
    assert np.allclose(q["w.weight"], p["w.weight"] - 0.1 * (np.sign(g["w.weight"]) + 0.5 * p["w.weight"]))
    assert np.allclose(q["w.bias"], p["w.bias"] - 0.1 * np.sign(g["w.bias"]))
    assert np.allclose(q["m.A_log"], p["m.A_log"] - 0.1 * np.sign(g["m.A_log"]))
    assert default_no_decay("layers.0.mixer.D") and default_no_decay("layers.3.norm.weight")
    assert not default_no_decay("layers.0.mixer.in_proj.weight")


def test_adamw_state_round_trip_is_exact():
    rng = np.random.default_rng(0)
    p = {"a.weight": rng.normal(size=(3, 2))}
    opt = AdamW(p, lr=0.01)
    for _ in range(3):
        opt.step(p, {"a.weight": rng.normal(size=(3, 2))})
    p2 = {"a.weight": p["a.weight"].copy()}
    opt2 = AdamW(p2, lr=0.01)
    opt2.load_state_dict(opt.state_dict())
    g = {"a.weight": rng.normal(size=(3, 2))}
    opt.step(p, g)
    opt2.step(p2, {"a.weight": g["a.weight"].copy()})
    assert np.array_equal(p["a.weight"], p2["a.weight"])


def test_clip_and_schedule():
    g = {"a": np.array([3.0, 4.0])}
    assert clip_grad_norm(g, 1.0) == 5.0 and np.allclose(g["a"], [0.6, 0.8])
    assert cosine_lr(0, 100, 1.0, warmup=10) == pytest.approx(0.1)
    assert cosine_lr(10, 100, 1.0, warmup=10) == pytest.approx(1.0)
    assert cosine_lr(100, 100, 1.0, warmup=10, lr_min=0.1) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="lr"):
        AdamW({"a": np.zeros(1)}, lr=-1.0)
    with pytest.raises(ValueError, match="max_norm"):
        clip_grad_norm(g, 0.0)


def test_demo_training_is_reproducible_and_learns_in_context():
    cfg = MambaConfig(d_model=16, n_layer=1, d_in=3, d_out=1)
    _, losses, per_pos = train(cfg, 300, 16, 12, 2, 1e-2, seed=3, backend="numpy", progress=False)
    _, losses2, _ = train(cfg, 300, 16, 12, 2, 1e-2, seed=3, backend="numpy", progress=False)
    assert np.array_equal(losses, losses2), "same seed, same loss curve"
    # Late positions have seen several examples of a 2-d problem: well below the 1.0 of predicting 0.
    assert per_pos[-4:].mean() < 0.5, per_pos
    tokens, y = linear_regression_prompts(np.random.default_rng(0), 4, 5, 2)
    assert tokens.shape == (4, 5, 3) and np.array_equal(tokens[:, 1:, -1], y[:, :-1])


def test_blas_thread_limit_takes_effect_and_is_undone():
    from mamba_from_scratch.runtime import blas_threads, limit_blas_threads
    with pytest.raises(ValueError, match="n must be"):
        limit_blas_threads(0)
    before = blas_threads()
    if before is None:
        pytest.skip("threadpoolctl finds no BLAS library behind this NumPy")
    with limit_blas_threads(1):
        assert blas_threads() == 1
    assert blas_threads() == before                 # the limit is lifted on leaving the block


def test_reuse_freed_memory_sets_the_three_malloc_thresholds(monkeypatch):
    import ctypes
    import ctypes.util

    from mamba_from_scratch import runtime

    calls, result = [], {"ok": 1}

    class FakeLibc:
        def mallopt(self, param, value):
            calls.append((param, value))
            return result["ok"]

    monkeypatch.setattr(ctypes, "CDLL", lambda name: FakeLibc())
    assert runtime.reuse_freed_memory(mmap_threshold=1 << 20, trim_threshold=2 << 20) is True
    assert calls == [(-3, 1 << 20), (-1, 2 << 20), (-2, 64 << 20)]  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, M_TOP_PAD
    result["ok"] = 0                                                 # mallopt refuses: not in effect
    assert runtime.reuse_freed_memory() is False

    def no_libc(name):
        raise OSError("no such library")
    monkeypatch.setattr(ctypes, "CDLL", no_libc)                     # no glibc (macOS, musl)
    assert runtime.reuse_freed_memory() is False
    monkeypatch.undo()
    if (ctypes.util.find_library("c") or "").startswith("libc.so"):
        assert runtime.reuse_freed_memory()                         # the real glibc accepts them
