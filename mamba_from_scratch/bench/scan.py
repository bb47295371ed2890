"""``bench scan``: time the selective-scan backends against an exp-count bound.

The yardstick. Every state element (b * l * d_inner * n of them) needs one exp(delta * A)
in the forward, and the backward (which recomputes the states from checkpoints) one more.
With t_exp the time of one float32 exp in NumPy's vectorised ``np.exp`` (measured in the
same run), the bound is

    bound = b * l * d_inner * n * exps * t_exp / threads,   exps = 1 (forward), 2 (fwd + bwd)

i.e. the time the exps alone would take at NumPy's speed, spread over the threads. The
table reports each backend's time as a multiple of it.

Compile time is reported separately, in subprocesses: "cold" compiles every kernel into an
empty cache directory; "cached" is a fresh process timing its imports and first calls with
that cache warm.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from tqdm import tqdm

from . import common

S1 = (8, 256, 128, 16)
S2 = (1, 4096, 256, 16)
S_GPU = (16, 2048, 1536, 16)
QUICK = (2, 128, 64, 16)
TARGET = {"forward": 12.0, "forward+backward": 10.0}  # multiples of the bound (the "Speed" issue)

_COMPILE_SCRIPT = r"""
import time
t0 = time.perf_counter()
import json, sys
import numpy as np
from mamba_from_scratch.scan import selective_scan_forward, selective_scan_backward
t_import = time.perf_counter() - t0
times = {}
for dtype in sys.argv[1].split(","):
    rng = np.random.default_rng(0)
    u = rng.standard_normal((2, 5, 3)).astype(dtype)
    A = -np.ones((3, 4), dtype)
    B = rng.standard_normal((2, 5, 4)).astype(dtype)
    t = time.perf_counter()
    y, h, cache = selective_scan_forward(u, np.abs(u) + 0.1, A, B, B, np.ones(3, dtype), backend="numba")
    selective_scan_backward(y, cache)
    times[dtype] = time.perf_counter() - t
print(json.dumps({"import_s": t_import, "first_call_s": times, "total_s": time.perf_counter() - t0}))
"""


def make_inputs(b, l, d_inner, n, seed=0):
    """float32 inputs in the ranges of an initialised Mamba layer (official A and delta init)."""
    rng = np.random.default_rng(seed)
    u = rng.standard_normal((b, l, d_inner)).astype(np.float32)
    delta = np.exp(rng.uniform(np.log(1e-3), np.log(1e-1), (b, l, d_inner))).astype(np.float32)
    A = -np.tile(np.arange(1, n + 1, dtype=np.float32), (d_inner, 1))
    B = rng.standard_normal((b, l, n)).astype(np.float32)
    C = rng.standard_normal((b, l, n)).astype(np.float32)
    D = np.ones(d_inner, np.float32)
    dy = rng.standard_normal((b, l, d_inner)).astype(np.float32)
    return (u, delta, A, B, C, D), dy


def time_backend(backend, shape, repeats):
    """Forward and forward+backward timings of one backend at one size."""
    from mamba_from_scratch.scan import selective_scan_backward, selective_scan_forward
    inputs, dy = make_inputs(*shape)

    def fwd():
        return selective_scan_forward(*inputs, backend=backend)

    def fwd_bwd():
        _, _, cache = selective_scan_forward(*inputs, backend=backend)
        selective_scan_backward(dy, cache)

    return {"forward": common.time_calls(fwd, repeats), "forward+backward": common.time_calls(fwd_bwd, repeats)}


def compile_times():
    """Cold compile of all numba kernels (float32 + float64), then a cached start."""
    with tempfile.TemporaryDirectory() as cache_dir:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
        out = {}
        for label, dtypes in (("cold", "float32,float64"), ("cached", "float32"),
                              ("cached_both", "float32,float64")):
            run = subprocess.run([sys.executable, "-c", _COMPILE_SCRIPT, dtypes], env=env,
                                 capture_output=True, text=True, check=True)
            out[label] = json.loads(run.stdout.strip().splitlines()[-1])
    return out


def backward_memory(shape):
    """Extra memory of the numba backward at ``shape`` (float32), by array sizes and traced."""
    import tracemalloc

    from mamba_from_scratch.scan import cpu, selective_scan_backward, selective_scan_forward
    b, l, d_inner, n = shape
    inputs, dy = make_inputs(*shape)
    _, _, cache = selective_scan_forward(*inputs, backend="numba")
    selective_scan_backward(dy, cache)
    tracemalloc.start()
    grads = selective_scan_backward(dy, cache)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    outputs = sum(g.nbytes for g in grads if g is not None)
    extra = cpu.backward_extra_bytes(b, l, d_inner, n)
    return {"all_states_bytes": b * l * d_inner * n * 4, "checkpoint_bytes": cache.saved.ckpt.nbytes,
            "outputs_bytes": outputs, "scratch_bytes_computed": extra["partials"] + extra["per_thread"],
            "traced_peak_minus_outputs_bytes": peak - outputs}


def run(args):
    """Run the scan benchmark; returns the results dict (also written as JSON/markdown)."""
    import numba

    from mamba_from_scratch.scan import gpu_available
    if args.threads:
        numba.set_num_threads(args.threads)
    threads = numba.get_num_threads()
    repeats = args.repeats
    shapes = [QUICK] if args.quick else [S1, S2]
    backends = ["numpy", "numba"] + (["cuda"] if gpu_available() else [])
    if gpu_available() and not args.quick:
        shapes.append(S_GPU)
    res = {"machine": common.machine(), "blas_threads": common.blas_threads(), "threads": threads,
           "numba": numba.__version__, "loadavg_start": common.loadavg(), "repeats": repeats, "quick": args.quick,
           "gpu": gpu_available()}
    res["t_exp"] = common.numpy_exp_time(repeats)
    t_exp = res["t_exp"]["median"]
    rows = []
    jobs = [(s, bk) for s in shapes for bk in backends if not (s == S_GPU and bk == "numpy")]
    for shape, backend in tqdm(jobs, desc="bench scan", file=sys.stderr):
        timings = time_backend(backend, shape, repeats)
        elements = int(np.prod(shape))
        for pass_, t in timings.items():
            exps = 1 if pass_ == "forward" else 2
            bound = elements * exps * t_exp / threads
            rows.append({"shape": shape, "backend": backend, "pass": pass_, **t,
                         "ns_per_element": t["median"] / elements * 1e9, "bound_s": bound,
                         "x_bound": t["median"] / bound})
    res["rows"] = rows
    common.progress("compile times (subprocesses)...")
    res["compile"] = compile_times()
    res["backward_memory"] = {"shape": S2 if not args.quick else QUICK,
                              **backward_memory(S2 if not args.quick else QUICK)}
    res["loadavg_end"] = common.loadavg()
    return res


def render(res, argv):
    """The markdown section for docs/benchmarks.md."""
    m = res["machine"]
    t_exp = res["t_exp"]
    lines = [
        "## Selective scan (`bench scan`)",
        "",
        f"Command: `{common.command_line(argv)}`  ",
        f"Machine: {m['cpu']}, {m['nproc']} cores; Python {m['python']}, NumPy {m['numpy']}, "
        f"Numba {res['numba']}; numba threads: {res['threads']}, BLAS threads: {res['blas_threads']}  ",
        f"Load average (1/5/15 min): start {res['loadavg_start']}, end {res['loadavg_end']}  ",
        f"Real GPU present: {'yes' if res['gpu'] else 'no (the CUDA backend is verified in the CUDA simulator only; no GPU timings)'}",
        "",
        f"t_exp (NumPy float32 `np.exp`, 4M elements in [-10, 0]): median {t_exp['median'] * 1e9:.3f} ns "
        f"(min {t_exp['min'] * 1e9:.3f}, max {t_exp['max'] * 1e9:.3f}).  ",
        f"Bound = b·l·d_inner·n × exps × t_exp / threads, exps = 1 forward, 2 forward+backward. "
        f"Targets: forward ≤ {TARGET['forward']:g}× bound, forward+backward ≤ {TARGET['forward+backward']:g}× bound.  ",
        f"float32, official init (A = -(1..n), delta in [1e-3, 1e-1]); medians of {res['repeats']} runs after a warm-up.",
        "",
        "| size (b, l, d_inner, n) | backend | pass | median ms | min ms | max ms | ns / element | bound ms | × bound |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in res["rows"]:
        mark = ""
        if r["backend"] != "numpy":
            mark = " ✓" if r["x_bound"] <= TARGET[r["pass"]] else " ✗"
        lines.append(f"| {tuple(r['shape'])} | {r['backend']} | {r['pass']} | {common.fmt_ms(r['median'])} | "
                     f"{common.fmt_ms(r['min'])} | {common.fmt_ms(r['max'])} | {r['ns_per_element']:.2f} | "
                     f"{common.fmt_ms(r['bound_s'])} | {r['x_bound']:.2f}{mark} |")
    speedups = []
    by_key = {(tuple(r["shape"]), r["backend"], r["pass"]): r["median"] for r in res["rows"]}
    for (shape, backend, pass_), t in by_key.items():
        if backend == "numba" and (shape, "numpy", pass_) in by_key:
            speedups.append(f"{shape} {pass_}: {by_key[(shape, 'numpy', pass_)] / t:.1f}×")
    c = res["compile"]
    mem = res["backward_memory"]
    mib = lambda x: f"{x / 2**20:.2f} MiB"
    lines += [
        "",
        "numba speed-up over the NumPy reference: " + "; ".join(speedups) + ".",
        "",
        "Compile time (separate processes, `NUMBA_CACHE_DIR` in a fresh temporary directory):",
        f"- cold, all four kernels (forward + backward, float32 + float64) compiled from scratch: "
        f"first calls {c['cold']['first_call_s']['float32']:.1f} s (float32) + "
        f"{c['cold']['first_call_s']['float64']:.1f} s (float64); process total {c['cold']['total_s']:.1f} s",
        f"- cached, import + first float32 forward+backward in a fresh process: {c['cached']['total_s']:.2f} s "
        f"(imports {c['cached']['import_s']:.2f} s, first call {c['cached']['first_call_s']['float32']:.2f} s); "
        f"both dtypes: {c['cached_both']['total_s']:.2f} s",
        "",
        f"Backward memory at {tuple(mem['shape'])} (float32), numba backend:",
        f"- all states, as the NumPy reference stores them: {mib(mem['all_states_bytes'])}",
        f"- checkpoints kept by the forward: {mib(mem['checkpoint_bytes'])}",
        f"- backward scratch besides its outputs ({mib(mem['outputs_bytes'])}): "
        f"{mib(mem['scratch_bytes_computed'])} computed from the arrays it allocates "
        f"(partial sums, per-thread chunk buffers); NumPy-side allocations traced by tracemalloc: "
        f"{mib(mem['traced_peak_minus_outputs_bytes'])}",
    ]
    return "\n".join(lines)
