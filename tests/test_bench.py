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
