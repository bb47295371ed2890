"""icl-eval on a committed ICL III checkpoint reproduces its committed metrics (issue 14).

For a run of the grid, docs/figures/icl_mechanism/runs/<name>/config.json records what was
evaluated (checkpoint, N, prompts, seed, frozen selection). The test prompts are drawn once at
the largest N and cut shorter for smaller N, so evaluating at the largest N alone draws the same
prompts, and its rows of metrics.csv and paired.csv must come out as committed. `make test`
checks one run of each model (the first seed on disk), a full re-evaluation of every run at
every N is behind the `slow` marker.

Tolerance: the scan kernels' float32 bits differ by a few ulp between a kernel compiled in
process and one loaded from the Numba cache (docs/reliability.md), so numbers are compared
to 1e-5 relative (a changed model or prompt moves them by O(1e-2) or more).
"""
import glob
import json
import os

import pytest

from mamba_from_scratch.cli import main as cli_main
from mamba_from_scratch.files import read_csv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNS = sorted(glob.glob(os.path.join(ROOT, "docs", "figures", "icl_mechanism", "runs", "icl_*", "config.json")))
RTOL = 1e-5


def model_of(config_path):
    return json.load(open(config_path))["checkpoints"][0]["label"]


FIRST_OF_EACH = list({model_of(p): p for p in reversed(RUNS)}.values())   # the lowest seed's run of each model


def reevaluate(config_path, tmp_path, N_grid):
    cfg = json.load(open(config_path))
    ck = cfg["checkpoints"]
    argv = ["icl-eval", "--checkpoint", ",".join(os.path.join(ROOT, c["path"]) for c in ck),
            "--labels", ",".join(c["label"] for c in ck), "--N", ",".join(map(str, N_grid)),
            "--n-prompts", str(cfg["n_prompts"]), "--queries", str(cfg["n_queries"]), "--seed", str(cfg["seed"]),
            "--n-boot", "2", "--no-progress", "--out", str(tmp_path)]
    if cfg["freeze_selection"]:
        argv.append("--freeze-selection")
    assert cli_main(argv) == 0
    committed = os.path.dirname(config_path)
    for table, key in (("metrics", ("method", "N")), ("paired", ("model", "versus", "N"))):
        want = {tuple(r[k] for k in key): r for r in read_csv(os.path.join(committed, table + ".csv"))
                if int(r["N"]) in N_grid}
        got = {tuple(r[k] for k in key): r for r in read_csv(os.path.join(tmp_path, table + ".csv"))}
        assert got.keys() == want.keys(), table
        for k, w in want.items():
            for col in ("error", "stderr") if table == "metrics" else ("diff", "stderr"):
                a, b = float(got[k][col]), float(w[col])
                assert abs(a - b) <= RTOL * max(abs(b), 1e-3), f"{table} {k} {col}: {a} vs committed {b}"


@pytest.mark.skipif(not RUNS, reason="no ICL III run committed yet")
@pytest.mark.parametrize("config_path", FIRST_OF_EACH, ids=lambda p: os.path.basename(os.path.dirname(p)))
def test_committed_evaluation_reproduces_at_the_largest_N(config_path, tmp_path):
    N_max = max(json.load(open(config_path))["N"])
    reevaluate(config_path, tmp_path, [N_max])


@pytest.mark.slow
@pytest.mark.parametrize("config_path", RUNS, ids=lambda p: os.path.basename(os.path.dirname(p)))
def test_every_committed_evaluation_reproduces(config_path, tmp_path):
    reevaluate(config_path, tmp_path, json.load(open(config_path))["N"])
