"""The `outliers` experiment end to end in --quick mode (about 10 s), and --tune --quick."""
import csv
import json

from mamba_from_scratch.cli import main


def test_outliers_quick_mamba_beats_linear_at_half_flipped(tmp_path):
    out = tmp_path / "outliers"
    assert main(["outliers", "--out", str(out), "--quick"]) == 0
    for name in ("metrics.csv", "table.md", "results.json", "fig_error_vs_alpha.png",
                 "fig_training.png", "fig_gates.png", "fig_sensitivity.png"):
        assert (out / name).stat().st_size > 0, name
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    err = {(r["model"], r["corruption"], r["subset"], float(r["alpha"])): float(r["error_mean"])
           for r in rows if r["study"] == "main"}
    # the robustness gap: flipped labels at alpha = 0.5, on all test tasks
    assert err[("linear", "flipped", "all", 0.5)] > 0.4
    assert err[("mamba", "flipped", "all", 0.5)] < 0.2
    assert err[("linear", "flipped", "all", 0.5)] - err[("mamba", "flipped", "all", 0.5)] > 0.3
    # both classify clean prompts far better than chance; the test tasks whose mirror was
    # trained are solved exactly by the Mamba (seed 0 has such tasks)
    assert err[("mamba", "flipped", "all", 0.0)] < 0.1 and err[("linear", "flipped", "all", 0.0)] < 0.05
    assert err[("mamba", "flipped", "mirror_trained", 0.0)] < 0.01
    results = json.load(open(out / "results.json"))
    assert results["gate_alpha_0.3"]["mean_clean_over_outlier"] > 2
    assert results["data_config"]["task_split"] == "ordered"
    # where the outliers sit: the recency-weighted gate reads the examples next to the query,
    # so outliers there hurt the Mamba most; the linear Transformer's G = 1 cannot tell
    pos = {(r["model"], r["position"]): float(r["error_mean"]) for r in rows
           if (r["study"], r["corruption"], r["subset"], r["alpha"]) == ("position", "flipped", "all", "0.5")}
    assert pos[("mamba", "cq")] > pos[("mamba", "r")] + 0.2 > pos[("mamba", "fq")] + 0.2
    assert abs(pos[("linear", "cq")] - pos[("linear", "r")]) < 0.1
    dirs = {r["direction"] for r in rows if r["study"] == "direction"}
    assert dirs == {"v1'", "v2'", "v3'"} and {r["direction"] for r in rows if r["study"] == "main"} == {"all"}
    sens = {(r["study"], r["setting"]) for r in rows}
    assert ("lr", "0.15") in sens and ("test_magnitude", "2 (default)") in sens


def test_outliers_tune_quick_uses_validation_tasks(tmp_path):
    out = tmp_path / "tune"
    assert main(["outliers", "--tune", "--quick", "--out", str(out), "--n-test", "500"]) == 0
    rows = list(csv.DictReader(open(out / "tune.csv")))
    assert {(int(r["steps"]), float(r["lr"])) for r in rows} == {(300, 0.015), (600, 0.015),
                                                                 (300, 0.05), (600, 0.05)}
    assert all(0 <= float(r["val_clean"]) <= 1 and 0 <= float(r["val_flipped"]) <= 1 for r in rows)
    assert (out / "fig_tune.png").stat().st_size > 0 and "Best score" in (out / "tune.md").read_text()
