"""Timing and reporting helpers shared by the benchmarks.

Every number in docs/benchmarks.md comes from here: medians over repeated runs after a
warm-up call, with min and max beside them, and the machine's state (CPU, thread count,
load average) recorded at the start and the end, because on a shared machine the load
decides the numbers as much as the code does.
"""
from __future__ import annotations

import os
import platform
import re
import shlex
import sys
import time
from pathlib import Path

import numpy as np

BEGIN = "<!-- BEGIN generated: {name} -->"
END = "<!-- END generated: {name} -->"


def time_calls(fn, repeats, warmup=1):
    """Call ``fn()`` ``warmup`` times untimed, then ``repeats`` times timed.

    Returns:
        dict with median, min, max (seconds) and the list of runs.
    """
    for _ in range(warmup):
        fn()
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t)
    return {"median": float(np.median(runs)), "min": float(min(runs)), "max": float(max(runs)),
            "runs": [float(r) for r in runs]}


def numpy_exp_time(repeats, size=1 << 22):
    """Seconds per float32 exp of NumPy's vectorised ``np.exp`` on a large array (median).

    The inputs lie in [-10, 0], where the scan's delta * A lives.
    """
    x = np.random.default_rng(0).uniform(-10.0, 0.0, size).astype(np.float32)
    out = np.empty_like(x)
    t = time_calls(lambda: np.exp(x, out=out), repeats)
    return {key: (val / size if key != "runs" else [r / size for r in val]) for key, val in t.items()}


def loadavg():
    """The 1, 5 and 15 minute load averages, or None where /proc is missing."""
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


def machine():
    """CPU model name and core count, from /proc/cpuinfo where available."""
    model = platform.processor() or platform.machine()
    try:
        found = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        if found:
            model = found.group(1).strip()
    except OSError:
        pass
    return {"cpu": model, "nproc": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__}


from ..runtime import blas_threads, limit_blas_threads, reuse_freed_memory, wait_passively  # noqa: E402,F401  (re-exported for the bench modules)


def threading():
    """Numba's threading layer and the OpenMP wait policy, as a phrase for the reports."""
    import numba
    try:
        layer = numba.threading_layer()
    except ValueError:                                  # no parallel kernel has run yet
        layer = "not started"
    return f"Numba threading layer: {layer}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}"


def command_line(argv):
    return "python -m mamba_from_scratch bench " + " ".join(shlex.quote(a) for a in argv)


def fmt_ms(seconds):
    return f"{seconds * 1e3:.3g}" if seconds < 1 else f"{seconds * 1e3:.0f}"


def write_section(path, name, text, header):
    """Replace (or append) the section ``name`` of a markdown file, keeping the others.

    Args:
        path: the markdown file; created with ``header`` if missing.
        name: section id used in the BEGIN/END marker comments.
        text: the section's new markdown.
        header: the file's opening text when it has to be created.
    """
    path = Path(path)
    begin, end = BEGIN.format(name=name), END.format(name=name)
    block = f"{begin}\n{text.rstrip()}\n{end}\n"
    doc = path.read_text() if path.exists() else header.rstrip() + "\n\n"
    if begin in doc and end in doc:
        before, rest = doc.split(begin, 1)
        after = rest.split(end, 1)[1].lstrip("\n")
        doc = before + block + ("\n" + after if after else "")
    else:
        doc = doc.rstrip() + "\n\n" + block
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc)


def progress(msg):
    print(msg, file=sys.stderr, flush=True)
