"""The icl-theory experiment end to end (--quick) and its input checks."""
import csv
import json
import os

import pytest

from mamba_from_scratch.icl.theory import main
from mamba_from_scratch.icl.theory_report import needed_N


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


def test_needed_N_counts_only_crossings_resolved_by_3_se():
    # below by 0.3 with s.e. 0.05 (6 s.e.), the point before above by 0.3: resolved
    assert needed_N([16, 64], [0.8, 0.2], 0.5, [0.05, 0.05]) == pytest.approx(25.6)  # 16 * 4^log4(1.6)
    # the point below is only 2 s.e. below the threshold: noise, not a crossing
    assert needed_N([16, 64], [0.8, 0.4], 0.5, [0.05, 0.05]) is None
    # the point before sits within 3 s.e. above the threshold: the crossing is not located
    assert needed_N([16, 64], [0.6, 0.1], 0.5, [0.05, 0.01]) is None


def test_relative_to_zero_ratio_and_its_se_bound():
    """The ratio is mean(e) / mean(z) on the row's prompts, recovered from the CSV columns,
    and its reported s.e. bounds the delta-method s.e. sd(e - R z) / (sqrt(n) mean(z))."""
    import numpy as np

    from mamba_from_scratch.icl.metrics import paired_difference
    from mamba_from_scratch.icl.theory_report import relative_to_zero

    rng = np.random.default_rng(0)
    z = rng.lognormal(0.0, 1.0, size=64)                           # heavy-tailed zero errors
    for e in (0.05 * z + 0.01 * rng.random(64), 0.9 * z, z + 0.1 * rng.standard_normal(64)):
        dz, dzse = paired_difference(e, z)
        row = dict(error=e.mean(), stderr=e.std(ddof=1) / 8, diff_vs_zero=dz, diff_vs_zero_se=dzse)
        R, se = relative_to_zero(row)
        assert R == pytest.approx(e.mean() / z.mean())
        delta = (e - R * z).std(ddof=1) / 8 / z.mean()
        assert delta <= se + 1e-12


def test_replot_redraws_from_csvs_without_running(quick_run, tmp_path):
    import shutil

    from mamba_from_scratch.icl.theory_report import COLUMNS, write_csv

    out, _ = quick_run
    shutil.copy(os.path.join(out, "metrics.csv"), tmp_path / "metrics.csv")
    # a synthetic r sweep: KRR on the intrinsic coordinates crosses 0.5 of the zero
    # predictor's error between N = 32 and 64 at r = 2, between 64 and 128 at r = 4
    rows = []
    for r, cross in ((2, 32), (4, 64)):
        for N in (16, 32, 64, 128):
            for method, e in (("zero", 1.0), ("krr_intrinsic", 0.9 if N <= cross else 0.1),
                              ("krr_full", 1.0), ("one_layer", 1.0)):
                rows.append(dict(method=method, gate="normalized" if method == "one_layer" else "",
                                 link="He3", d=32, r=r, N=N, error=e, stderr=0.01, n_prompts=8, seed=0,
                                 diff_vs_zero=e - 1.0, diff_vs_zero_se=0.01, note=""))
    write_csv(str(tmp_path / "sweep_r_metrics.csv"), rows, COLUMNS)
    assert main(["--replot", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "error_vs_N.png").stat().st_size > 0
    assert not (tmp_path / "config.json").exists()                 # nothing of a run is written
    md = (tmp_path / "sweep_r.md").read_text()
    assert "KRR on intrinsic coords 1.00" in md                     # N needed doubles with r: slope 1
    need = {(r["method"], r["r"]): r["N_needed"] for r in csv.DictReader(open(tmp_path / "sweep_r.csv"))}
    import math
    assert float(need[("krr_intrinsic", "2")]) == pytest.approx(32 * 2 ** (math.log(1.8) / math.log(9)), rel=1e-4)
    assert need[("krr_full", "2")] == ""
    with pytest.raises(ValueError, match="replot"):
        main(["--replot", "--out", str(tmp_path / "empty")])


def _sweep_rows(path):
    rows = list(csv.DictReader(open(path)))
    for r in rows:
        for k in ("error", "ratio_to_zero"):
            r[k] = float(r[k])
    return rows


def test_product_gate_sweep_selects_on_validation_prompts_only(tmp_path):
    """The sweep writes its CSV, markdown and figure; the (rho, b0) it scores on the test
    prompts is the one of least *validation* error, and the test prompts are drawn apart."""
    out = str(tmp_path)
    assert main(["--quick", "--sweep-product-gate", "--links", "he2", "--N", "256", "--stage1-prompts", "64",
                 "--stage2-prompts", "32", "--val-prompts", "8", "--n-prompts", "8", "--sweep-rhos", "0.25,4",
                 "--sweep-b0s=-3,0", "--out", out, "--no-progress"]) == 0
    for name in ("product_gate_sweep.csv", "product_gate_sweep.md", "product_gate_sweep.png",
                 "config_sweep_product_gate.json"):
        assert os.path.getsize(os.path.join(out, name)) > 0
    rows = _sweep_rows(os.path.join(out, "product_gate_sweep.csv"))
    val = [r for r in rows if r["split"] == "validation"]
    test = {r["role"]: r for r in rows if r["split"] == "test"}
    assert len(val) == 2 * 2 * 2 + 1 and set(test) == {"product_best", "normalized_default", "normalized_best",
                                                         "none", "zero"}
    for gate, role in (("product", "product_best"), ("normalized", "normalized_best")):
        best = min((r for r in val if r["gate"] == gate), key=lambda r: r["error"])
        assert best["selected"] == "1" and sum(r["selected"] == "1" for r in val if r["gate"] == gate) == 1
        assert (test[role]["rho"], test[role]["b0"]) == (best["rho"], best["b0"])
    assert (test["normalized_default"]["rho"], test["normalized_default"]["b0"]) == ("0.25", "0")
    assert float(test["normalized_default"]["diff_vs_normalized"]) == 0.0
    assert "selective scan" in test["product_best"]["note"]
    dev = float(test["product_best"]["note"].rsplit("= ", 1)[1])
    assert dev < 1e-10                                               # the scan and the closed form agree
    os.remove(os.path.join(out, "product_gate_sweep.png"))
    assert main(["--replot", "--out", out]) == 0                    # redrawn from the CSV alone
    assert os.path.getsize(os.path.join(out, "product_gate_sweep.png")) > 0


def test_sweep_validation_prompts_are_not_the_test_prompts():
    import argparse

    import numpy as np

    from mamba_from_scratch.icl.task import SingleIndexTask
    from mamba_from_scratch.icl.theory_run import _rng, select_on_validation, sweep_prompts

    args = argparse.Namespace(seed=0, stage2_prompts=4, val_prompts=4, n_prompts=4, n_queries=2)
    task = SingleIndexTask(6, 2, "he3")
    s2, val, test = sweep_prompts(args, task, 1, 32)
    assert not np.any(np.isclose(val.x_context[:, :4], test.x_context[:, :4]))
    assert not np.any(np.isclose(val.x_context[:, :4], s2.x_context[:, :4]))
    # the test prompts are the main run's (run_cell's tag 4)
    main_test = task.sample(_rng(args, 1, 6, 2, 4, 32), 4, 32, 2)
    assert np.array_equal(main_test.x_context, test.x_context)
    rows = [dict(split="validation", gate="product", error=0.5, rho=1), dict(split="validation", gate="product",
                                                                            error=0.4, rho=2)]
    assert select_on_validation(rows)["product"]["rho"] == 2
    with pytest.raises(ValueError, match="validation"):
        select_on_validation(rows + [dict(split="test", gate="product", error=0.1, rho=4)])


def test_streamed_stage1_run_writes_its_stage1_csv(tmp_path):
    out = str(tmp_path)
    assert main(["--links", "he4", "--d", "8", "--r", "2", "--N", "64", "--gates", "normalized,none",
                 "--n-prompts", "4", "--stage1-prompts", "70", "--stage1-chunk", "32", "--stage1-N", "32",
                 "--stage2-prompts", "16", "--width", "16", "--krr-max-N", "0", "--out", out, "--no-progress"]) == 0
    rows = list(csv.DictReader(open(os.path.join(out, "metrics_stage1.csv"))))
    assert {r["gate"] for r in rows} == {"normalized", "none"}
    assert all(r["stage1_prompts"] == "70" and r["stage1_chunk"] == "32" for r in rows)
    assert "streamed in chunks of 32" in open(os.path.join(out, "table.md")).read()
    with pytest.raises(ValueError, match="stage1-chunk"):
        main(["--stage1-prompts", "1000000", "--out", out])
    with pytest.raises(ValueError, match="stage1-chunk"):
        main(["--stage1-chunk", "-1", "--out", out])
