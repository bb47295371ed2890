"""Faults leave nothing broken, and a healthy run is never stopped by a valid value (issue 12).

* delta = 0 (float32 softplus underflow) is a valid step: the model runs and trains on.
* Forced divergence of each model (Mamba, linear-attention Transformer) stops the run with
  a message naming what is on disk, writes train_summary.json, and keeps a loadable last
  good checkpoint (or says that none was written); the demo and outliers do the same
  without checkpoints.
* SIGKILL mid-run: --resume continues bit-identically and no temporary is left behind.
* SIGINT: the step reached and the --resume command, exit status 130, no traceback.
The thread-count determinism of checkpoints is tests/test_determinism.py.
"""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from mamba_from_scratch import demo
from mamba_from_scratch.checkpoint import load_checkpoint, remove_stale_temporaries, save_checkpoint
from mamba_from_scratch.icl import train
from mamba_from_scratch.icl.outliers import experiment
from mamba_from_scratch.models import mixer_fused
from mamba_from_scratch.models.mamba import MambaConfig, init_params, model_backward, model_forward
from mamba_from_scratch.optim import AdamW

TINY = dict(d=4, r=2, N=6, batch=4, steps=12, d_model=8, n_layer=1, d_state=4, n_head=2, warmup=2,
            eval_every=6, ckpt_every=4, log_every=2, n_val=8, backend="numpy")


def argv_of(config):
    return [f"--{k.replace('_', '-')}={v}" for k, v in config.items()]


# ---------------------------------------------------------------- delta = 0 is valid

def scan_deltas(cache):
    """The delta every block's scan saw, from model_forward's cache."""
    return [mixer_cache["scan"].delta for _, _, mixer_cache in cache[2]]


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_dt_bias_far_below_zero_gives_delta_zero_and_runs(backend):
    """The issue's repro: dt_proj.bias = -110 makes float32 softplus exactly 0."""
    cfg = MambaConfig(d_model=8, n_layer=2, d_state=4, d_in=3, d_out=1)
    params = init_params(cfg, np.random.default_rng(0))
    params["layers.0.mixer.dt_proj.bias"][:] = -110
    x = np.random.default_rng(1).normal(size=(2, 9, 3)).astype(np.float32)
    out, cache = model_forward(params, cfg, x, backend)
    assert np.all(scan_deltas(cache)[0] == 0)                     # every step of layer 0 is a no-op
    grads, dx = model_backward(np.ones_like(out), cache)
    assert np.all(np.isfinite(out)) and np.all(np.isfinite(dx))
    assert all(np.all(np.isfinite(g)) for g in grads.values())


def test_float32_dt_underflow_trains_on(tmp_path, monkeypatch):
    """The issue's run (lr 0.3) met delta = 0 at step 52 and died; it must train on."""
    zeros = []
    real = mixer_fused.selective_scan_forward          # icl-train runs the fused mixer (numba)

    def spy(u, delta, *args, **kwargs):
        zeros.append(int(np.sum(delta == 0)))
        return real(u, delta, *args, **kwargs)

    monkeypatch.setattr(mixer_fused, "selective_scan_forward", spy)
    tc = train.TrainConfig(d=4, r=2, N=8, steps=400, batch=8, d_model=8, n_layer=2, d_state=4, lr=0.3, warmup=100,
                           eval_every=1000, ckpt_every=1000, n_val=16)
    result = train.train(tc, tmp_path, until=70, progress=False)
    assert result["status"] == "paused" and result["step"] == 70, result["message"]
    assert sum(z > 0 for z in zeros) >= 5, "the run never met delta = 0: the test lost its point"
    params, _, extra, _ = load_checkpoint(tmp_path / "ckpt.npz")
    assert extra["step"] == 70 and all(np.all(np.isfinite(v)) for v in params.values())


# ---------------------------------------------------------------- divergence

@pytest.mark.filterwarnings("ignore::RuntimeWarning")   # the overflow that the test provokes
@pytest.mark.parametrize("model", ["mamba", "linear-tf"])
def test_forced_divergence_keeps_the_last_good_checkpoint(tmp_path, capsys, model):
    """lr 1e6 from the first step: step 0's update is written (checkpoint every step), the
    forward of step 1 overflows, and the run stops before updating."""
    out = tmp_path / model
    config = {**TINY, "model": model, "lr": 1e6, "warmup": 0, "ckpt_every": 1}
    assert train.main([f"--out={out}", "--no-progress", *argv_of(config)]) == 1
    summary = json.loads((out / "train_summary.json").read_text())
    path = str(out / "ckpt.npz")
    assert summary["status"] == "diverged" and summary["step"] == 1
    assert summary["checkpoint"] == {"path": path, "step": 1}
    assert "not finite" in summary["message"] and f"the last good checkpoint is {path} (step 1)" in summary["message"]
    assert capsys.readouterr().err.startswith("training diverged: step 1: ")
    params, cfg, extra, _ = load_checkpoint(path)
    assert extra["step"] == 1 and all(np.all(np.isfinite(v)) for v in params.values())
    assert not [p for p in os.listdir(out) if p.startswith(".tmp-")]


@pytest.mark.parametrize("model", ["mamba", "linear-tf"])
def test_divergence_before_any_checkpoint_says_none_was_written(tmp_path, model):
    """lr 1e39 overflows float32 in the very first update: the parameters, not the loss, go
    non-finite; nothing is saved and the message says so instead of naming a missing file."""
    out = tmp_path / model
    config = {**TINY, "model": model, "lr": 1e39, "warmup": 0, "ckpt_every": 5}
    with np.errstate(over="ignore"):
        assert train.main([f"--out={out}", "--no-progress", *argv_of(config)]) == 1
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["status"] == "diverged" and summary["step"] == 0 and summary["checkpoint"] is None
    assert "after the update, parameters" in summary["message"]
    assert "no checkpoint was written (the first was due after step 5)" in summary["message"]
    assert not (out / "ckpt.npz").exists()


def test_demo_divergence_writes_its_summary(tmp_path, capsys):
    with np.errstate(over="ignore"):
        rc = demo.main(["--out", str(tmp_path), "--lr", "1e39", "--steps", "3", "--backend", "numpy",
                        "--d-model", "8"])
    assert rc == 1
    summary = json.loads((tmp_path / "train_summary.json").read_text())
    assert summary["status"] == "diverged" and summary["step"] == 0
    assert "the demo writes no checkpoint" in summary["message"]
    assert "training diverged: step 0: after the update" in capsys.readouterr().err


def test_outliers_divergence_writes_its_summary(tmp_path):
    with np.errstate(over="ignore", invalid="ignore"):
        rc = experiment.main(["--quick", "--lr", "1e300", "--steps", "3", "--n-test", "10", "--out", str(tmp_path)])
    assert rc == 1
    summary = json.loads((tmp_path / "train_summary.json").read_text())
    assert summary["status"] == "diverged" and "model 'mamba'" in summary["message"]
    assert "not finite" in summary["message"] and not (tmp_path / "results.json").exists()


def test_outliers_quick_honours_explicit_flags():
    quick = experiment.parse_args(["--quick"])
    assert (quick.seeds, quick.steps, quick.n_test, quick.sens_seeds) == (1, 1000, 1000, 1)
    mixed = experiment.parse_args(["--quick", "--steps", "7", "--n-test", "20", "--seeds", "2"])
    assert (mixed.seeds, mixed.steps, mixed.n_test, mixed.sens_seeds) == (2, 7, 20, 1)
    full = experiment.parse_args([])
    assert (full.seeds, full.steps, full.n_test, full.sens_seeds) == (10, 1000, 4000, 5)


def test_adamw_rejects_a_nan_gradient_without_touching_anything():
    params = {"w": np.ones(3), "b": np.zeros(2)}
    opt = AdamW(params, lr=0.1)
    with pytest.raises(ValueError, match=r"grads\['b'\] contains NaN"):
        opt.step(params, {"w": np.ones(3), "b": np.array([1.0, np.nan])})
    assert opt.t == 0 and np.array_equal(params["w"], np.ones(3)) and not np.any(opt.m["w"])


# ---------------------------------------------------------------- temporaries, kill, interrupt

def test_stale_temporaries_are_removed_on_start_and_resume(tmp_path):
    (tmp_path / ".tmp-killed1.npz").write_bytes(b"PK\x03\x04 half a zip")
    (tmp_path / "keep.npz").write_bytes(b"not ours")
    tc = train.TrainConfig(**{**TINY, "steps": 4})
    train.train(tc, tmp_path, until=2, progress=False)
    assert sorted(os.listdir(tmp_path)) == ["ckpt.npz", "keep.npz"]
    (tmp_path / ".tmp-killed2.npz").write_bytes(b"")
    assert train.train(tc, tmp_path, resume=True, progress=False)["status"] == "done"
    assert sorted(os.listdir(tmp_path)) == ["ckpt.npz", "keep.npz"]
    assert remove_stale_temporaries(tmp_path) == []


def _raise_in_savez(real):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    return interrupted


def _raise_after_replace(real):
    def replaced_then_interrupted(src, dst):
        real(src, dst)
        raise KeyboardInterrupt
    return replaced_then_interrupted


@pytest.mark.parametrize("target, attr, make, kept_step", [
    # an exception (Ctrl-C) inside the write: the old file stays whole, no temporary remains
    (np, "savez", _raise_in_savez, 1),
    # Ctrl-C landing right after os.replace (seen in a fresh-clone run of the SIGINT test below):
    # the new checkpoint is in place, the temporary is gone, and the interrupt itself propagates
    # (not a FileNotFoundError from cleaning up a temporary that no longer exists)
    (os, "replace", _raise_after_replace, 2),
], ids=["inside_the_write", "just_after_the_rename"])
def test_interrupted_save_keeps_one_whole_checkpoint(tmp_path, monkeypatch, target, attr, make, kept_step):
    cfg = MambaConfig(d_model=4, n_layer=1, d_in=2, d_out=1)
    params = init_params(cfg, np.random.default_rng(0))
    save_checkpoint(tmp_path / "c.npz", params, cfg, extra={"step": 1})
    monkeypatch.setattr(target, attr, make(getattr(target, attr)))
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "c.npz", params, cfg, extra={"step": 2})
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "c.npz")[2]["step"] == kept_step and os.listdir(tmp_path) == ["c.npz"]


RUN = dict(TINY, steps=1500, ckpt_every=10, eval_every=500)


def icl_train(out, *extra, **change):
    return [sys.executable, "-m", "mamba_from_scratch", "icl-train", f"--out={out}", "--no-progress",
            *argv_of({**RUN, **change}), *extra]


def wait_for_step(path, step, proc, timeout=120):
    """Poll the checkpoint until it records at least ``step`` (writes are atomic, so every
    read sees a whole file)."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        assert proc.poll() is None, "the run ended before it could be stopped"
        if os.path.exists(path) and load_checkpoint(path)[2]["step"] >= step:
            return
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint at step {step} after {timeout} s")


def test_sigkill_then_resume_is_bit_identical_and_leaves_no_temporary(tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    subprocess.run(icl_train(full), check=True, capture_output=True, timeout=300)
    proc = subprocess.Popen(icl_train(killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_step(killed / "ckpt.npz", 30, proc)
    finally:
        proc.kill()                                           # SIGKILL: no handler runs
        proc.wait()
    assert load_checkpoint(killed / "ckpt.npz")[2]["step"] < RUN["steps"]
    # what a kill inside save_checkpoint leaves (the kill's timing cannot be chosen)
    (killed / ".tmp-abcd1234.npz").write_bytes((killed / "ckpt.npz").read_bytes()[:1000])
    subprocess.run(icl_train(killed, "--resume"), check=True, capture_output=True, timeout=300)
    assert sorted(os.listdir(killed)) == ["ckpt.npz", "train_summary.json"]
    with np.load(full / "ckpt.npz") as a, np.load(killed / "ckpt.npz") as b:
        assert a.files == b.files
        meta_a, meta_b = (json.loads(str(f["meta"])) for f in (a, b))
        different = [k for k in a.files if k != "meta" and not np.array_equal(a[k], b[k])]
    assert not different, different
    for meta in (meta_a, meta_b):
        meta["extra"].pop("train_s")                          # wall-clock time
        meta["extra"].pop("command")                          # --out and --resume differ
        meta["extra"].pop("code_version")                     # the checkout may move between the runs
    assert meta_a == meta_b


def test_sigint_prints_the_step_and_the_resume_command(tmp_path):
    out = tmp_path / "run"
    # A shell without job control starts background jobs with SIGINT ignored, and a child
    # inherits that (Python then installs no KeyboardInterrupt handler): give the run the
    # default disposition, as a terminal's Ctrl-C would find it.
    proc = subprocess.Popen(icl_train(out, steps=10**6), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        wait_for_step(out / "ckpt.npz", 10, proc)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["checkpoint"]["step"] >= 10
    line = stderr.strip().splitlines()[-1]
    assert line.startswith(f"interrupted at step {summary['step']} of {10**6}; the last good checkpoint is "
                           f"{out / 'ckpt.npz'} (step {summary['checkpoint']['step']}); continue with: ")
    assert line.endswith(" --resume") and f"--out={out}" in line
    assert not [p for p in os.listdir(out) if p.startswith(".tmp-")]
