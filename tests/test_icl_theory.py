"""The icl-theory experiment end to end (--quick) and its input checks."""
import csv
import json
import os

import pytest

from mamba_from_scratch.icl.theory import main, needed_N


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("icl_theory"))
    assert main(["--quick", "--out", out, "--no-progress"]) == 0
    with open(os.path.join(out, "metrics.csv")) as f:
        rows = list(csv.DictReader(f))
    return out, rows


def test_quick_run_writes_every_output(quick_run):
    out, rows = quick_run
    for name in ("metrics.csv", "config.json", "error_vs_N.png", "table.md"):
        assert os.path.getsize(os.path.join(out, name)) > 0
    assert not [f for f in os.listdir(out) if ".tmp" in f]
    need = {"method", "gate", "link", "d", "r", "N", "error", "stderr", "n_prompts", "seed"}
    assert need <= set(rows[0])
    methods = {(r["method"], r["gate"]) for r in rows}
    assert {("one_layer", "normalized"), ("one_layer", "none"), ("zero", ""), ("krr_full", ""),
            ("krr_intrinsic", ""), ("context_free", "")} <= methods
    assert json.load(open(os.path.join(out, "config.json")))["quick"] is True


def test_quick_run_separates_the_gate_from_linear_attention_on_he3(quick_run, capsys):
    """At the largest N the normalized gate beats linear attention by > 5 standard errors
    (paired over the same prompts), while linear attention stays within 3 of the zero predictor."""
    _, rows = quick_run
    N = max(int(r["N"]) for r in rows)
    at = {(r["method"], r["gate"]): r for r in rows if int(r["N"]) == N and r["link"] == "He3"}
    gated, linear = at[("one_layer", "normalized")], at[("one_layer", "none")]
    gap = float(linear["diff_vs_zero"]) - float(gated["diff_vs_zero"])
    # the paired standard error of (linear - gated) is at most the sum of the two paired s.e.
    se = float(linear["diff_vs_zero_se"]) + float(gated["diff_vs_zero_se"])
    assert gap > 5 * se
    assert abs(float(linear["diff_vs_zero"])) < 3 * float(linear["diff_vs_zero_se"]) + 1e-12
    assert float(gated["error"]) < 0.8


def test_rerun_into_the_same_out_replaces_files_whole(quick_run, tmp_path):
    out, _ = quick_run
    before = open(os.path.join(out, "metrics.csv")).read()
    assert main(["--quick", "--out", out, "--no-progress", "--N", "64", "--n-prompts", "4",
                 "--stage1-prompts", "16", "--stage2-prompts", "8"]) == 0
    after = open(os.path.join(out, "metrics.csv")).read()
    assert after != before and after.endswith("\n") and ",64," in after


@pytest.mark.parametrize("argv, match", [
    (["--links", "he9"], "link"),
    (["--r", "40"], "r must"),
    (["--N", "0"], "--N"),
    (["--tau", "-1"], "tau"),
    (["--gates", "softmax"], "gate"),
    (["--n-prompts", "1"], "n-prompts"),
])
def test_bad_arguments_are_value_errors(argv, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        main(argv + ["--out", str(tmp_path), "--quick"])


def test_needed_N_interpolates_log_log():
    assert needed_N([16, 64], [0.8, 0.2], 0.4) == pytest.approx(32.0)
    assert needed_N([16, 64], [0.8, 0.6], 0.5) is None
    assert needed_N([16, 64], [0.3, 0.2], 0.5) == 16.0
