"""Results do not depend on the thread count (issue 12, defect 3).

The numba backward splits channels into groups and sums per-group partials of dB, dC; the
partition depends on the shape only, so 1 and 2 threads (and 16, on a machine that has them)
give bit-identical gradients and bit-identical training checkpoints. Numba caps
``NUMBA_NUM_THREADS`` at the core count, so the subprocess tests use what the machine allows
(1 and ``numba.config.NUMBA_NUM_THREADS``) and skip where that is 1.

Each subprocess comparison runs its command once first, untimed and unchecked, to fill
Numba's on-disk cache: the scan kernels compiled in a process and the same kernels loaded
from the cache give different bits (docs/reliability.md, "Compiled in this process or loaded
from the cache"), and on a cold cache (a fresh clone, CI) the 1-thread run would compile and
the 2-thread run load, so the test would compare cold with warm, not 1 thread with 2.
"""
import json
import os
import subprocess
import sys

import numba
import numpy as np
import pytest

from mamba_from_scratch.scan import cpu, selective_scan_backward, selective_scan_forward

MAX_THREADS = numba.config.NUMBA_NUM_THREADS
needs_two = pytest.mark.skipif(MAX_THREADS < 2, reason="one core: numba allows only one thread")

_SCAN_SCRIPT = r"""
import sys, numpy as np, numba
from mamba_from_scratch.scan import selective_scan_forward, selective_scan_backward
rng = np.random.default_rng(3)
out = {}
for dtype in ("float32", "float64"):
    for b, l, d, n in ((1, 70, 32, 4), (3, 40, 48, 16)):
        u = rng.standard_normal((b, l, d)).astype(dtype)
        delta = np.exp(rng.uniform(-7, 0.7, (b, l, d))).astype(dtype)
        A = -np.exp(rng.uniform(-1, 2.5, (d, n))).astype(dtype)
        B, C = (rng.standard_normal((b, l, n)).astype(dtype) for _ in range(2))
        D = rng.standard_normal(d).astype(dtype)
        dy = rng.standard_normal((b, l, d)).astype(dtype)
        y, h, cache = selective_scan_forward(u, delta, A, B, C, D, backend="numba")
        grads = selective_scan_backward(dy, cache, h)
        for name, g in zip(("y", "h", "du", "ddelta", "dA", "dB", "dC", "dD", "dh0"), (y, h, *grads)):
            out[f"{dtype}-{b}-{name}"] = g
np.savez(sys.argv[1], threads=numba.get_num_threads(), **out)
"""


def _scan_inputs(rng, b, l, d, n, dtype):
    u = rng.standard_normal((b, l, d)).astype(dtype)
    delta = np.exp(rng.uniform(-7, 0.7, (b, l, d))).astype(dtype)
    A = -np.exp(rng.uniform(-1, 2.5, (d, n))).astype(dtype)
    B, C = (rng.standard_normal((b, l, n)).astype(dtype) for _ in range(2))
    D = rng.standard_normal(d).astype(dtype)
    return u, delta, A, B, C, D


def test_partition_depends_on_shape_only(monkeypatch):
    """n_channel_groups reads no thread count: the same shape gives the same partition."""
    before = cpu.n_channel_groups(1, 256)
    monkeypatch.setattr(numba, "get_num_threads", lambda: 16)
    assert cpu.n_channel_groups(1, 256) == before
    assert cpu.n_channel_groups(1, 256) == 256 // cpu.MIN_GROUP
    assert cpu.n_channel_groups(64, 128) == 1                   # b alone gives enough tasks
    assert cpu.n_channel_groups(1, 5) == 1


@needs_two
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scan_bit_identical_with_set_num_threads(dtype):
    """Within one process: numba.set_num_threads(1) vs the maximum, identical bits."""
    rng = np.random.default_rng(5)
    inputs = _scan_inputs(rng, 1, 70, 64, 16, dtype)             # b = 1: 4 channel groups
    dy = rng.standard_normal((1, 70, 64)).astype(dtype)
    before = numba.get_num_threads()
    results = []
    try:
        for threads in (1, MAX_THREADS):
            numba.set_num_threads(threads)
            y, h, cache = selective_scan_forward(*inputs, backend="numba")
            results.append((y, h, *selective_scan_backward(dy, cache, h)))
    finally:
        numba.set_num_threads(before)
    for one, many in zip(*results):
        assert one.dtype == many.dtype and np.array_equal(one, many)


def _env(threads):
    return dict(os.environ, NUMBA_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS="1",
                OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


@needs_two
def test_scan_bit_identical_across_processes(tmp_path):
    """NUMBA_NUM_THREADS=1 vs 2 in fresh processes: every output and gradient bit-identical."""
    files = {}
    subprocess.run([sys.executable, "-c", _SCAN_SCRIPT, str(tmp_path / "warm_cache.npz")], env=_env(1),
                   check=True, capture_output=True, text=True)        # fill the cache (see the docstring)
    for threads in (1, 2):
        files[threads] = tmp_path / f"scan_{threads}.npz"
        subprocess.run([sys.executable, "-c", _SCAN_SCRIPT, str(files[threads])], env=_env(threads),
                       check=True, capture_output=True, text=True)
    one, two = np.load(files[1]), np.load(files[2])
    assert int(one["threads"]) == 1 and int(two["threads"]) == 2
    names = [k for k in one.files if k != "threads"]
    assert len(names) == 36
    different = [k for k in names if not np.array_equal(one[k], two[k])]
    assert not different, different


@needs_two
def test_icl_train_checkpoints_bit_identical(tmp_path):
    """A short Mamba icl-train run on 1 and on 2 threads writes identical checkpoints.

    Batch 2 and d_inner 32: the partition by thread count this replaces gave 2 channel groups
    on 1 thread and 4 on 2, and 66 of 77 arrays differed. The metadata may differ only in
    the wall-clock time, the output folder named in the command and the git commit (others
    may commit between the two runs)."""
    arrays = {}
    for threads in ("warm", 1, 2):                                    # "warm": fill the cache first
        out = tmp_path / f"run_{threads}"
        cmd = [sys.executable, "-m", "mamba_from_scratch", "icl-train", "--out", str(out), "--no-progress",
               "--d", "8", "--r", "2", "--N", "16", "--steps", "12", "--batch", "2", "--warmup", "2",
               "--d-model", "16", "--n-layer", "2", "--d-state", "4", "--eval-every", "6",
               "--n-val", "16", "--ckpt-every", "6"]
        subprocess.run(cmd, env=_env(1 if threads == "warm" else threads), check=True, capture_output=True, text=True)
        if threads == "warm":
            continue
        with np.load(out / "ckpt.npz") as f:
            arrays[threads] = {k: f[k] for k in f.files}
        meta = json.loads(str(arrays[threads].pop("meta")))
        extra = meta.pop("extra")
        assert extra.pop("command").count(str(out)) == 1      # differs by the --out folder only
        extra.pop("train_s")                                  # wall-clock time
        extra.pop("code_version")                             # the checkout may move between the runs
        arrays[threads]["meta"] = json.dumps({**meta, "extra": extra}, sort_keys=True)
    assert arrays[1].keys() == arrays[2].keys() and len(arrays[1]) > 10
    different = [k for k in arrays[1] if not np.array_equal(arrays[1][k], arrays[2][k])]
    assert not different, different
