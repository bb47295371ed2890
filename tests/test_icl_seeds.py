"""mamba_from_scratch/icl/seeds.py and scripts/icl_mechanism_report.py on a synthetic grid of
run folders in icl-eval's format, with numbers chosen so every statistic is known by hand."""
import importlib.util
import math
import os

import numpy as np
import pytest

from mamba_from_scratch.files import write_csv
from mamba_from_scratch.icl import seeds as S

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NS = (16, 64)
ZERO = 0.8                      # the zero predictor's error on the shared prompts, every N
CF = 0.8                        # He3: the context-free optimum is the zero output


def make_run(root, model, seed, err, se=0.01, frozen_err=None, link="he3", d=16, krr=1.0):
    """One evaluated run: the model's error is err[N] with per-prompt SE se for every gap."""
    name = f"icl_{model}_{link}_d{d}_N64_s{seed}"
    folder = root / name
    folder.mkdir(parents=True)
    L = link.capitalize()
    errs = {model: err}
    if frozen_err is not None:
        errs[model + "-frozen"] = frozen_err
    base = {"krr_full": {n: krr for n in NS}, "krr_intrinsic": {n: krr + 0.1 for n in NS},
            "context_free": {n: CF for n in NS}, "zero": {n: ZERO for n in NS}}
    metrics, paired, over, half = [], [], [], []
    for method, e in {**errs, **base}.items():
        for n in NS:
            metrics.append(dict(method=method, link=L, d=d, r=8, N=n, error=e[n], stderr=0.05, n_prompts=1024,
                                n_queries=16, seed=1000))
            if method != "zero":
                over.append(dict(method=method, link=L, d=d, r=8, N=n, error=e[n] / ZERO, stderr=0.02))
        half.append(dict(method=method, link=L, d=d, N_max=64, N_half="inf", kind="gt", lo="inf", hi="inf",
                         frac_reached=0.0))
    for label, e in errs.items():
        for n in NS:
            for versus in ("context_free", "zero"):
                paired.append(dict(model=label, versus=versus, link=L, d=d, N=n, diff=e[n] - base[versus][n],
                                   stderr=se, z=(e[n] - base[versus][n]) / se))
            if label.endswith("-frozen"):
                paired.append(dict(model=label, versus=model, link=L, d=d, N=n, diff=e[n] - err[n], stderr=se / 2,
                                   z=0.0))
    for table, rows in (("metrics", metrics), ("paired", paired), ("over_zero", over), ("half_zero", half)):
        write_csv(folder / f"{table}.csv", rows)
    return folder


@pytest.fixture
def grid(tmp_path):
    root = tmp_path / "runs"
    # mamba learns in seeds 0 and 1 and collapses in seed 2; freezing costs 0.1, 0.2, 0.0
    for seed, e64, f64 in ((0, 0.4, 0.5), (1, 0.5, 0.7), (2, 0.805, 0.805)):
        make_run(root, "mamba", seed, {16: 0.7, 64: e64}, frozen_err={16: 0.75, 64: f64})
    for seed, e64 in ((0, 0.6), (1, 0.7)):
        make_run(root, "linear-tf", seed, {16: 0.9, 64: e64})
    (root / "not_a_run").mkdir()                             # ignored
    return root


def test_means_seed_se_states_and_counts(grid):
    runs = S.load_runs(grid)
    assert [r["name"] for r in runs] == [f"icl_linear-tf_he3_d16_N64_s{s}" for s in (0, 1)] + \
        [f"icl_mamba_he3_d16_N64_s{s}" for s in (0, 1, 2)]
    assert [s["state"] for r in runs if r["model"] == "mamba" for s in [S.run_summary(r)["mamba"]]] == \
        ["learns", "learns", "collapse"]                    # seed 2: +0.005 is within 2 SE of 0.8
    rows = {(r["label"], r["N"]): r for r in S.over_seeds(runs)}
    m = rows[("mamba", 64)]
    vals = np.array([0.4, 0.5, 0.805]) / ZERO
    assert m["n_seeds"] == 3 and m["seeds"] == "0 1 2"
    assert m["over_zero"] == pytest.approx(vals.mean())
    assert m["over_zero_seed_se"] == pytest.approx(vals.std(ddof=1) / math.sqrt(3))
    assert m["diff_cf"] == pytest.approx(np.mean([0.4, 0.5, 0.805]) - CF)
    assert m["diff_cf_prompt_se"] == pytest.approx(0.01) and (m["learns"], m["collapses"]) == (2, 1)
    # one seed has no seed SE
    one = S.over_seeds(runs[:1])[0]
    assert one["n_seeds"] == 1 and math.isnan(one["over_zero_seed_se"])


def test_model_differences_and_frozen_gaps(grid):
    runs = S.load_runs(grid)
    rows = S.over_seeds(runs)
    diff, se, na, nb = S.difference(rows, "mamba", "linear-tf", "He3", 16, 64)
    a, b = np.array([0.4, 0.5, 0.805]) / ZERO, np.array([0.6, 0.7]) / ZERO
    assert diff == pytest.approx(a.mean() - b.mean()) and (na, nb) == (3, 2)
    assert se == pytest.approx(math.hypot(a.std(ddof=1) / math.sqrt(3), b.std(ddof=1) / math.sqrt(2)))
    assert math.isnan(S.difference(rows, "mamba", "softmax-tf", "He3", 16, 64)[0])
    fr = S.frozen_minus_model(runs)[("mamba", "He3", 16)]
    gaps = np.array([0.1, 0.2, 0.0]) / ZERO                  # paired by seed
    assert fr["diff"] == pytest.approx(gaps.mean()) and fr["seed_se"] == pytest.approx(gaps.std(ddof=1) / math.sqrt(3))
    assert fr["prompt_se"] == pytest.approx(0.005 / ZERO) and fr["n_seeds"] == 3
    assert ("linear-tf", "He3", 16) not in S.frozen_minus_model(runs)


@pytest.mark.parametrize("t", [0.0, 0.3, 1.0, 2.0, 4.2, 9.5, 40.0])
def test_t_p_value_matches_closed_forms(t):
    # df = 1 (Cauchy) and df = 2 have closed forms; a huge df is the normal distribution
    assert S.t_two_sided_p(t, 1) == pytest.approx(1 - 2 * math.atan(t) / math.pi, rel=1e-12, abs=1e-15)
    assert S.t_two_sided_p(-t, 2) == pytest.approx(1 - t / math.sqrt(t * t + 2), rel=1e-12, abs=1e-15)
    assert S.t_two_sided_p(t, 1e7) == pytest.approx(math.erfc(t / math.sqrt(2)), rel=1e-5, abs=1e-15)


def test_t_p_value_matches_scipy_at_fractional_df():
    stats = pytest.importorskip("scipy.stats")           # scipy arrives with scikit-learn (dev extra)
    for t, df in [(4.2, 2.1), (9.5, 2.4), (1.3, 3.3), (3.0, 50.0), (0.01, 0.5), (6.0, 3.45)]:
        assert S.t_two_sided_p(t, df) == pytest.approx(2 * stats.t.sf(t, df), rel=1e-10)
    with pytest.raises(ValueError, match="df"):
        S.t_two_sided_p(1.0, 0.0)


def test_welch_and_the_comparison_rows(grid):
    # equal SEs and seed counts: df = 2 (n - 1); one seed or two collapses: no test
    diff, se, t, df, p = S.welch(1.0, 0.3, 3, 0.2, 0.4, 3)
    assert (diff, se, t) == pytest.approx((0.8, 0.5, 1.6))
    assert df == pytest.approx(0.25 ** 2 / (0.3 ** 4 / 2 + 0.4 ** 4 / 2))
    assert p == pytest.approx(S.t_two_sided_p(1.6, df))
    assert S.welch(0.5, 0.1, 3, 0.5, 0.1, 3)[3] == pytest.approx(4.0)
    assert math.isnan(S.welch(1.0, math.nan, 1, 0.2, 0.4, 3)[4])
    assert math.isnan(S.welch(1.0, 0.0, 3, 1.0, 0.0, 3)[4])
    rows = S.over_seeds(S.load_runs(grid))
    comp = S.comparisons(rows, [("mamba", "linear-tf"), ("mamba", "softmax-tf")], ["mamba"])
    got = [c for c in comp if c["N"] == 64]
    assert len(got) == 1 and (got[0]["kind"], got[0]["a"], got[0]["b"]) == ("models", "mamba", "linear-tf")
    diff, se, *_ = S.difference(rows, "mamba", "linear-tf", "He3", 16, 64)
    assert (got[0]["diff"], got[0]["se"], got[0]["n_a"], got[0]["n_b"]) == pytest.approx((diff, se, 3, 2))
    a, b = np.array([0.4, 0.5, 0.805]) / ZERO, np.array([0.6, 0.7]) / ZERO      # the grid's N = 64 errors
    va, vb = a.var(ddof=1) / 3, b.var(ddof=1) / 2
    df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 1)
    assert got[0]["df"] == pytest.approx(df)
    assert got[0]["p"] == pytest.approx(S.t_two_sided_p((a.mean() - b.mean()) / math.sqrt(va + vb), df))
    assert not any(c["kind"] == "d32_minus_d16" for c in comp)      # the grid has no d = 32 run yet
    for seed, e in ((0, 0.7), (1, 0.76)):
        make_run(grid, "mamba", seed, {16: 0.8, 64: e}, d=32)
    rows = S.over_seeds(S.load_runs(grid))
    dgap = [c for c in S.comparisons(rows, [], ["mamba"]) if c["N"] == 64]
    assert len(dgap) == 1 and (dgap[0]["d_a"], dgap[0]["d_b"], dgap[0]["n_a"], dgap[0]["n_b"]) == (32, 16, 2, 3)
    assert dgap[0]["diff"] == pytest.approx(0.73 / ZERO - a.mean())


def test_runs_scored_on_different_prompts_are_refused(grid):
    make_run(grid, "softmax-tf", 0, {16: 0.7, 64: 0.6}, krr=1.2)      # its KRR differs: other prompts
    with pytest.raises(ValueError, match="same prompts"):
        S.baselines(S.load_runs(grid))


def test_state_thresholds():
    assert S.state(-0.05, 0.02, -0.05, 0.02) == "learns"
    assert S.state(-0.03, 0.02, -0.03, 0.02) == "collapse"           # within 2 SE of context-free
    assert S.state(-0.3, 0.02, 0.01, 0.02) == "collapse"             # He2: at the zero output
    assert S.state(0.3, 0.02, 0.3, 0.02) == "worse"


def test_report_writes_tables_figures_and_the_page_section(grid, tmp_path):
    spec = importlib.util.spec_from_file_location("report", os.path.join(REPO, "scripts", "icl_mechanism_report.py"))
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    page = tmp_path / "page.md"
    page.write_text("before\n<!-- seeds:begin -->\nold\n<!-- seeds:end -->\nafter\n")
    out = tmp_path / "out"
    assert report.main(["--runs-dir", str(grid), "--out", str(out), "--page", str(page)]) == 0
    text = page.read_text()
    assert text.startswith("before\n<!-- seeds:begin -->\n####") and text.endswith("<!-- seeds:end -->\nafter\n")
    assert "old" not in text and "| mamba | 0 1 2 |" in text and "| 2 / 1 |" in text
    for f in ("seeds.csv", "runs.csv", "differences.csv", "error_over_zero_vs_N.png", "gap_to_context_free.png",
              "seeds.md"):
        assert (out / f).stat().st_size > 0
    fig, ax = report.plt.subplots()
    ax.set_ylim(0, 1)                          # an off-scale value is marked on the edge it crosses
    assert not report.off_scale(ax, 0, 0.5, (0, 1), "k") and not ax.lines
    assert report.off_scale(ax, 0, 12.8, (0, 1), "k") and ax.lines[-1].get_ydata()[0] == 1
    assert report.off_scale(ax, 1, -3.0, (0, 1), "k", left=True) and ax.lines[-1].get_ydata()[0] == 0
    assert [t.get_text() for t in ax.texts] == ["+12.8", "-3.0"]
    report.plt.close(fig)
    page.write_text("no markers\n")
    with pytest.raises(ValueError, match="seeds:begin"):
        report.main(["--runs-dir", str(grid), "--out", str(out), "--page", str(page)])
