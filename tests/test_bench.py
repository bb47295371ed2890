"""The benchmark report writer: each command owns one section of docs/benchmarks.md."""
import numpy as np
import pytest

from mamba_from_scratch.bench import common
from mamba_from_scratch.bench.cli import main


def test_write_section_replaces_only_its_own(tmp_path):
    doc = tmp_path / "bench.md"
    common.write_section(doc, "scan", "scan v1", header="# Title")
    common.write_section(doc, "train_step", "step v1", header="# Title")
    common.write_section(doc, "scan", "scan v2\nsecond line", header="# ignored")
    text = doc.read_text()
    assert text.startswith("# Title\n")
    assert "scan v1" not in text and "scan v2\nsecond line" in text
    assert "step v1" in text
    assert text.index("scan v2") < text.index("step v1")        # order kept
    assert text.count("<!-- BEGIN generated: scan -->") == 1


def test_time_calls_reports_median_min_max():
    calls = []
    t = common.time_calls(lambda: calls.append(sum(range(1000))), repeats=5, warmup=2)
    assert len(calls) == 7 and len(t["runs"]) == 5
    assert t["min"] <= t["median"] <= t["max"]
    assert t["median"] == pytest.approx(float(np.median(t["runs"])))


@pytest.mark.parametrize("argv", [["scan", "--repeats", "0"], ["train-step", "--threads", "-1"]])
def test_bad_options_raise(argv):
    with pytest.raises(ValueError, match=argv[1].lstrip("-")):
        main(argv)


_WAIT_SCRIPT = r"""
import json, os, numpy as np
from mamba_from_scratch.runtime import wait_passively
first = wait_passively()                       # before any parallel kernel: takes effect
from mamba_from_scratch.scan import selective_scan_forward
u = np.ones((1, 3, 2), np.float32)
selective_scan_forward(u, u, -np.ones((2, 4), np.float32), np.ones((1, 3, 4), np.float32),
                       np.ones((1, 3, 4), np.float32))
print(json.dumps([first, os.environ["OMP_WAIT_POLICY"], wait_passively()]))
"""


@pytest.mark.parametrize("user_value", [None, "ACTIVE"])
def test_wait_passively_sets_the_policy_before_libgomp_loads(user_value):
    """Idle OpenMP threads sleep unless the user chose otherwise; after the first parallel
    kernel has loaded libgomp, the setting comes too late and the function says so (None)."""
    import json
    import os
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if user_value:
        env["OMP_WAIT_POLICY"] = user_value
    out = subprocess.run([sys.executable, "-c", _WAIT_SCRIPT], env=env, capture_output=True, text=True,
                         check=True).stdout
    first, policy, late = json.loads(out.strip().splitlines()[-1])
    want = user_value or "PASSIVE"
    assert first == want and policy == want
    assert late is None or late == want          # None where the threading layer is libgomp's
