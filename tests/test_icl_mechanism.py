"""Issue 14's tooling: the ablated Mambas through icl-train and icl-eval in fresh processes,
icl-eval --freeze-selection, and the N at half the zero predictor's error
(icl/sample_complexity.py)."""
import csv
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from mamba_from_scratch.icl import evaluate_trained
from mamba_from_scratch.icl.sample_complexity import first_crossing, format_half, half_zero_N, ratio_to_zero
from mamba_from_scratch.icl.train import MODELS, TrainConfig, build_model
from mamba_from_scratch.models.mamba_ablations import MambaNoGateConfig, MambaNonselectiveConfig
from mamba_from_scratch.params import count_params


def test_first_crossing_interpolates_in_log_N():
    assert first_crossing([1, 2, 4, 8], [0.9, 0.7, 0.4, 0.2]) == (pytest.approx(2 * 2 ** (2 / 3)), "at")
    assert first_crossing([1, 2, 4], [0.9, 0.5, 0.1]) == (2.0, "at")        # exactly at a grid point
    assert first_crossing([2, 4], [0.3, 0.1]) == (2.0, "le")
    assert first_crossing([2, 4], [0.9, 0.6]) == (math.inf, "gt")


def test_ratio_to_zero_is_the_ratio_of_paired_means():
    rng = np.random.default_rng(0)
    z = rng.exponential(size=4000)
    e = 0.4 * z + 0.05 * rng.normal(size=4000)
    ratio, se = ratio_to_zero(e, z)
    assert ratio == pytest.approx(e.mean() / z.mean())
    assert abs(ratio - 0.4) < 4 * se and se < 0.01       # paired: far tighter than either mean's SE
    boot = [e[i].mean() / z[i].mean() for i in (rng.integers(4000, size=4000) for _ in range(300))]
    assert se == pytest.approx(np.std(boot), rel=0.25)   # the delta method agrees with the bootstrap


def test_half_zero_N_and_its_interval():
    rng = np.random.default_rng(1)
    Ns, P = [1, 2, 4, 8, 16], 2000
    z = np.tile(rng.exponential(size=P), (len(Ns), 1))       # the zero predictor: the same at every N
    ratios = np.array([0.9, 0.8, 0.6, 0.4, 0.2])
    e = ratios[:, None] * z * rng.uniform(0.5, 1.5, size=(len(Ns), P))
    h = half_zero_N(Ns, e, z, n_boot=300)
    assert h["kind"] == "at" and 4 < h["N_half"] < 8
    assert h["lo"] <= h["N_half"] <= h["hi"] and h["hi"] - h["lo"] < 2 and h["frac_reached"] == 1
    never = half_zero_N(Ns, 0.9 * z, z, n_boot=50)
    assert never["kind"] == "gt" and math.isinf(never["N_half"]) and never["frac_reached"] == 0
    assert format_half(never).startswith("> max N")
    with pytest.raises(ValueError, match="increasing"):
        half_zero_N([4, 2], e[:2], z[:2])
    with pytest.raises(ValueError, match="shape"):
        half_zero_N(Ns, e[:3], z)


def test_ablated_models_are_built_with_fewer_parameters():
    assert {"mamba-nonselective", "mamba-nogate"} <= set(MODELS)
    counts = {}
    for model in ("mamba", "mamba-nonselective", "mamba-nogate", "softmax-tf"):
        cfg, params = build_model(TrainConfig(model=model, d=16, d_model=32, n_layer=2))
        counts[model] = count_params(cfg)
        assert sum(p.size for p in params.values()) == counts[model]
    assert isinstance(build_model(TrainConfig(model="mamba-nonselective", d=16))[0], MambaNonselectiveConfig)
    assert isinstance(build_model(TrainConfig(model="mamba-nogate", d=16))[0], MambaNoGateConfig)
    assert counts["mamba-nonselective"] < counts["mamba-nogate"] < counts["mamba"]


def test_ablations_train_and_evaluate_from_the_command_line_with_frozen_selection(tmp_path):
    """Both ablations through icl-train (fresh processes) and one icl-eval --freeze-selection:
    freezing the non-selective model changes nothing, freezing the nogate (selective) one
    changes its predictions; half_zero.csv has every method but the zero predictor and oracle."""
    run = [sys.executable, "-m", "mamba_from_scratch"]
    common = ["--d", "4", "--r", "2", "--N", "6", "--steps", "4", "--batch", "8", "--d-model", "8", "--n-layer", "1",
              "--eval-every", "4", "--ckpt-every", "2", "--n-val", "8", "--no-progress"]
    ckpts = []
    for model in ("mamba-nonselective", "mamba-nogate"):
        out = tmp_path / model
        subprocess.run(run + ["icl-train", "--model", model, "--out", str(out), "--until", "2"] + common,
                       check=True, capture_output=True, text=True)
        subprocess.run(run + ["icl-train", "--model", model, "--out", str(out), "--resume"] + common,
                       check=True, capture_output=True, text=True)
        summary = json.loads((out / "train_summary.json").read_text())
        assert summary["status"] == "done" and summary["step"] == 4
        ckpts.append(str(out / "ckpt.npz"))
    ev = tmp_path / "eval"
    subprocess.run(run + ["icl-eval", "--checkpoint", ",".join(ckpts), "--out", str(ev), "--N", "1,2,6",
                          "--n-prompts", "8", "--queries", "2", "--n-boot", "20", "--freeze-selection",
                          "--no-progress"], check=True, capture_output=True, text=True)
    with open(ev / "paired.csv") as f:
        paired = {(p["model"], p["versus"], int(p["N"])): float(p["diff"]) for p in csv.DictReader(f)}
    for n in (1, 2, 6):
        assert abs(paired["mamba-nonselective-frozen", "mamba-nonselective", n]) < 1e-6
    assert max(abs(paired["mamba-nogate-frozen", "mamba-nogate", n]) for n in (2, 6)) > 1e-6
    with open(ev / "half_zero.csv") as f:
        methods = {h["method"] for h in csv.DictReader(f)}
    assert methods == {"mamba-nonselective", "mamba-nonselective-frozen", "mamba-nogate", "mamba-nogate-frozen",
                       "krr_full", "krr_intrinsic", "context_free"}
    with open(ev / "over_zero.csv") as f:
        assert {int(r["N"]) for r in csv.DictReader(f)} == {1, 2, 6}
    assert (ev / "error_over_zero_vs_N.png").stat().st_size > 0
    assert "N at which the error first reaches half" in (ev / "table.md").read_text()
    assert json.loads((ev / "config.json").read_text())["freeze_selection"] is True


def test_freeze_selection_needs_a_mamba(tmp_path):
    out = tmp_path / "tf"
    from mamba_from_scratch.icl import train
    assert train.main(["--model", "linear-tf", "--d", "4", "--r", "2", "--N", "4", "--steps", "2", "--batch", "4",
                       "--d-model", "8", "--n-layer", "1", "--eval-every", "2", "--ckpt-every", "2", "--n-val", "4",
                       "--out", str(out), "--no-progress"]) == 0
    with pytest.raises(ValueError, match="none of the checkpoints is a Mamba"):
        evaluate_trained.main(["--checkpoint", str(out / "ckpt.npz"), "--out", str(tmp_path / "ev"),
                               "--freeze-selection", "--N", "2", "--n-prompts", "4", "--no-progress"])
