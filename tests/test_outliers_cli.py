"""The `outliers` experiment end to end in --quick mode (about 10 s)."""
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
    err = {(r["model"], r["corruption"], float(r["alpha"])): float(r["error_mean"])
           for r in rows if r["study"] == "main"}
    # the robustness gap: flipped labels at alpha = 0.5
    assert err[("linear", "flipped", 0.5)] > 0.4
    assert err[("mamba", "flipped", 0.5)] < 0.3
    assert err[("linear", "flipped", 0.5)] - err[("mamba", "flipped", 0.5)] > 0.2
    # both classify clean prompts far better than chance
    assert err[("mamba", "flipped", 0.0)] < 0.2 and err[("linear", "flipped", 0.0)] < 0.05
    results = json.load(open(out / "results.json"))
    assert results["gate_alpha_0.3"]["mean_clean_over_outlier"] > 2
