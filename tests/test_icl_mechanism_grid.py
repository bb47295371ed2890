"""scripts/icl_mechanism_grid.py on a tiny grid: it resumes a partial run, writes the final
checkpoint without optimizer state under the issue's name, evaluates it (with frozen selection
for a Mamba), reports states, and skips finished runs when started again."""
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np

from mamba_from_scratch.checkpoint import load_checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ("--d-model 8 --n-layer 1 --steps 4 --batch 8 --eval-every 4 --ckpt-every 2 --n-val 8 --r 2 "
        "--curriculum-steps 2 --link-curriculum-steps 2 --N-start 2")


def load_driver():
    spec = importlib.util.spec_from_file_location("grid", os.path.join(REPO, "scripts", "icl_mechanism_grid.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_grid_driver_resumes_finalises_evaluates_and_skips(tmp_path, capsys):
    grid = load_driver()
    dirs = ["--runs-dir", str(tmp_path / "runs"), "--checkpoint-dir", str(tmp_path / "ckpt"),
            "--eval-dir", str(tmp_path / "eval")]
    # --d takes the grid's d; with r = 2 every d works, and N = 6 keeps it tiny
    opts = dirs + ["--models", "mamba-nonselective", "--links", "he3", "--ds", "16", "--seeds", "1", "--N", "6",
                   "--eval-N", "2,6", "--n-prompts", "8", "--train-args", TINY]
    name = "icl_mamba-nonselective_he3_d16_N6_s1"
    run_dir = tmp_path / "runs" / name
    # a partial run (2 of 4 steps), as a killed session leaves it
    subprocess.run([sys.executable, "-m", "mamba_from_scratch", "icl-train", "--full", "--N", "6", "--model",
                    "mamba-nonselective", "--link", "he3", "--d", "16", "--seed", "1", "--out", str(run_dir),
                    "--no-progress", "--until", "2"] + TINY.split(), check=True, capture_output=True, cwd=REPO)
    assert grid.main(opts + ["--status"]) == 0
    assert f"| `{name}` | partial (step 2) |" in capsys.readouterr().out
    assert grid.main(opts) == 0
    final = tmp_path / "ckpt" / f"{name}.npz"
    params, cfg, extra, arrays = load_checkpoint(final)
    assert arrays == {} and extra["step"] == 4 and type(cfg).__name__ == "MambaNonselectiveConfig"
    assert extra["command"].endswith("--resume")              # the driver resumed the partial run
    # the resumed run equals the run's own last checkpoint (the optimizer state dropped only)
    full_params, *_ = load_checkpoint(run_dir / "ckpt.npz")
    assert all(np.array_equal(params[k], full_params[k]) for k in params)
    ev = tmp_path / "eval" / name
    assert (ev / "metrics.csv").exists() and json.loads((ev / "config.json").read_text())["freeze_selection"]
    assert not (run_dir / "driver.lock").exists()
    capsys.readouterr()
    mtime = os.path.getmtime(final)
    assert grid.main(opts) == 0                                # everything done: nothing is redone
    assert "0 runs to do" in capsys.readouterr().out and os.path.getmtime(final) == mtime
    assert grid.main(opts + ["--status"]) == 0
    assert f"| `{name}` | evaluated |" in capsys.readouterr().out


def test_grid_order_puts_every_he3_run_first_then_seeds_in_order():
    grid = load_driver()
    runs = grid.grid(grid.build_parser().parse_args([]))
    assert len(runs) == len(set(runs)) == 5 * 2 * 2 * 3
    assert runs[0] == ("mamba-nonselective", "he3", 16, 0)
    assert {r[1] for r in runs[:30]} == {"he3"} and [r[3] for r in runs[:30]] == sorted(r[3] for r in runs[:30])
    assert runs[-1] == ("linear-tf", "he2", 32, 2)
