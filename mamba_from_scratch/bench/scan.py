"""``bench scan``: time the selective-scan backends against the machine's roofline bound.

The yardstick is the roofline bound of ``roofline.py``, measured in the same run from this
machine's own limits: the package's ``fast_exp`` throughput, FMA throughput and memory
bandwidth. Per state element (b * l * d_inner * n of them) the forward needs 1 exp and
6 FLOP, the backward (which recomputes the states from checkpoints) 1 exp and 19 FLOP;
the bound is max(compute, bytes / bandwidth). The table reports each backend's time as a
multiple of it ("× roofline bound"); the target is forward+backward <= 3x.

A secondary column keeps the older, looser yardstick, named for what it is: the "np.exp
yardstick" prices every exp at NumPy's vectorised float32 ``np.exp`` (several times slower
than ``fast_exp``) and counts nothing else: b * l * d_inner * n * exps * t_np_exp / threads.

Compile time is reported separately, in subprocesses: "cold" compiles every kernel into an
empty cache directory; "cached" is a fresh process timing its imports and first calls with
that cache warm.
"""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import tempfile
from functools import partial

import numpy as np

from ..progress import Progress
from . import common, roofline

S1 = (8, 256, 128, 16)
S2 = (1, 4096, 256, 16)
S_GPU = (16, 2048, 1536, 16)
QUICK = (2, 128, 64, 16)
TARGET = {"forward+backward": 3.0}  # multiples of the roofline bound (issue 13, "Speed II")
DTYPES = ("float32", "float64")

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


def make_inputs(b, l, d_inner, n, seed=0, dtype=np.float32):
    """Inputs in the ranges of an initialised Mamba layer (official A and delta init)."""
    rng = np.random.default_rng(seed)
    u = rng.standard_normal((b, l, d_inner)).astype(dtype)
    delta = np.exp(rng.uniform(np.log(1e-3), np.log(1e-1), (b, l, d_inner))).astype(dtype)
    A = -np.tile(np.arange(1, n + 1, dtype=dtype), (d_inner, 1))
    B = rng.standard_normal((b, l, n)).astype(dtype)
    C = rng.standard_normal((b, l, n)).astype(dtype)
    D = np.ones(d_inner, dtype)
    dy = rng.standard_normal((b, l, d_inner)).astype(dtype)
    return (u, delta, A, B, C, D), dy


def time_backend(backend, shape, repeats, dtype="float32", baseline=None):
    """Forward and forward+backward timings of one backend at one size and dtype.

    With ``baseline`` (a package, see ``train_step.baseline_package``) the same backend of
    that package is timed too, alternating call by call; each pass then also gets
    "baseline" timings and "speedup", the median of the per-pair ratios baseline / ours.
    """
    from mamba_from_scratch import scan
    inputs, dy = make_inputs(*shape, dtype=np.dtype(dtype))
    mods = {"ours": scan}
    if baseline is not None:
        mods["baseline"] = importlib.import_module(f"{baseline.__name__}.scan")

    def fwd(mod):
        return mod.selective_scan_forward(*inputs, backend=backend)

    def fwd_bwd(mod):
        _, _, cache = mod.selective_scan_forward(*inputs, backend=backend)
        mod.selective_scan_backward(dy, cache)

    out = {}
    for pass_, fn in (("forward", fwd), ("forward+backward", fwd_bwd)):
        if baseline is None:
            out[pass_] = common.time_calls(partial(fn, scan), repeats)
            continue
        runs = {k: [] for k in mods}
        for mod in mods.values():
            fn(mod)                                            # warm-up
        for r in range(repeats):
            for key in (("ours", "baseline") if r % 2 == 0 else ("baseline", "ours")):
                runs[key].append(common.time_calls(partial(fn, mods[key]), 1, warmup=0)["runs"][0])
        out[pass_] = {**_summary(runs["ours"]), "baseline": _summary(runs["baseline"]),
                      "speedup": float(np.median(np.array(runs["baseline"]) / np.array(runs["ours"])))}
    return out


def _summary(runs):
    return {"median": float(np.median(runs)), "min": float(min(runs)), "max": float(max(runs)), "runs": runs}


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
    t_np_exp = res["t_exp"]["median"]
    common.progress("machine limits (fast_exp, FMA, bandwidth)...")
    res["roofline"] = {dt: roofline.measure(dt, repeats=max(3, repeats)) for dt in DTYPES}
    rows = []
    # The NumPy reference only in float32 (it is the readable ladder's first rung, and slow).
    jobs = [(s, bk, dt) for s in shapes for dt in DTYPES for bk in backends
            if not (s == S_GPU and bk == "numpy") and not (bk == "numpy" and dt != "float32")]
    bar = Progress(len(jobs), "bench scan", every=1)
    baseline = None
    if args.baseline:
        from .train_step import baseline_package
        common.progress(f"baseline package at {args.baseline} (extract, compile in a separate process)...")
        baseline = baseline_package(args.baseline)
        res["baseline"] = args.baseline
    for shape, backend, dtype in jobs:
        bar.set_postfix(size=shape, backend=backend, dtype=dtype)
        timings = time_backend(backend, shape, repeats, dtype, baseline if backend == "numba" else None)
        elements = int(np.prod(shape))
        for pass_, t in timings.items():
            exps = 1 if pass_ == "forward" else 2
            np_bound = elements * exps * t_np_exp / threads
            rf = roofline.bound(shape, np.dtype(dtype).itemsize, pass_, res["roofline"][dtype])
            rows.append({"shape": shape, "backend": backend, "dtype": dtype, "pass": pass_, **t,
                         "ns_per_element": t["median"] / elements * 1e9,
                         "roofline": rf, "x_roofline": t["median"] / rf["bound_s"],
                         "x_roofline_min": t["min"] / rf["bound_s"],
                         "np_exp_bound_s": np_bound, "x_np_exp": t["median"] / np_bound})
        bar.update()
    bar.close()
    res["rows"] = rows
    common.progress("compile times (subprocesses)...")
    res["compile"] = compile_times()
    res["backward_memory"] = {"shape": S2 if not args.quick else QUICK,
                              **backward_memory(S2 if not args.quick else QUICK)}
    res["threading"] = common.threading()
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
        f"Numba {res['numba']}; numba threads: {res['threads']}, BLAS threads: {res['blas_threads']}; "
        f"{res.get('threading', '')}  ",
        f"Load average (1/5/15 min): start {res['loadavg_start']}, end {res['loadavg_end']}  ",
        "Real GPU present: " + ("yes" if res["gpu"]
                                else "no (the CUDA backend is verified in the CUDA simulator only; no GPU timings)"),
        "",
        "Machine limits measured in this run (one thread's best, times the thread count):",
        "",
        "| dtype | fast_exp ns / exp | FMA GFLOP/s | copy bandwidth GB/s |",
        "|---|---:|---:|---:|",
    ]
    for dt, mach in res["roofline"].items():
        lines.append(f"| {dt} | {mach['t_exp'] * 1e9:.3f} | {mach['flop_rate'] / 1e9:.1f} | "
                     f"{mach['bandwidth'] / 1e9:.1f} |")
    lines += [
        "",
        "Roofline bound = max(E·(exps·t_exp + FLOP / FMA rate), bytes / bandwidth), E = b·l·d_inner·n; "
        f"forward {roofline.EXPS['forward']} exp + {roofline.FLOPS['forward']} FLOP per element, "
        f"forward+backward {roofline.EXPS['forward'] + roofline.EXPS['backward']} exps + "
        f"{roofline.FLOPS['forward'] + roofline.FLOPS['backward']} FLOP (counted from the kernels' loop bodies: "
        "`mamba_from_scratch/bench/roofline.py`). "
        f"Target: forward+backward ≤ {TARGET['forward+backward']:g}× the roofline bound.  ",
        f"np.exp yardstick (secondary): NumPy float32 `np.exp` at {t_exp['median'] * 1e9:.3f} ns "
        f"(min {t_exp['min'] * 1e9:.3f}, max {t_exp['max'] * 1e9:.3f}) per exp, exps only, / threads.  ",
        f"Official init (A = -(1..n), delta in [1e-3, 1e-1]); medians of {res['repeats']} runs after a warm-up. "
        "× roofline bound is the median over the bound (the verdict); the min over the bound beside it is "
        "what the kernel does when no other process takes its core (the bound itself is a best-of).",
        "",
        "| size (b, l, d_inner, n) | dtype | backend | pass | median ms | min ms | max ms | ns / element "
        "| roofline bound ms | × roofline bound | × bound (min) | np.exp yardstick ms | × np.exp yardstick |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in res["rows"]:
        mark = ""
        if r["backend"] != "numpy" and r["pass"] in TARGET:
            mark = " ✓" if r["x_roofline"] <= TARGET[r["pass"]] else " ✗"
        lines.append(f"| {tuple(r['shape'])} | {r['dtype']} | {r['backend']} | {r['pass']} | "
                     f"{common.fmt_ms(r['median'])} | {common.fmt_ms(r['min'])} | {common.fmt_ms(r['max'])} | "
                     f"{r['ns_per_element']:.2f} | {common.fmt_ms(r['roofline']['bound_s'])} | "
                     f"{r['x_roofline']:.2f}{mark} | {r['x_roofline_min']:.2f} | "
                     f"{common.fmt_ms(r['np_exp_bound_s'])} | {r['x_np_exp']:.2f} |")
    speedups = []
    by_key = {(tuple(r["shape"]), r["backend"], r["pass"]): r["median"] for r in res["rows"]
              if r["dtype"] == "float32"}
    for (shape, backend, pass_), t in by_key.items():
        if backend == "numba" and (shape, "numpy", pass_) in by_key:
            speedups.append(f"{shape} {pass_}: {by_key[(shape, 'numpy', pass_)] / t:.1f}×")
    c = res["compile"]
    mem = res["backward_memory"]
    mib = lambda x: f"{x / 2**20:.2f} MiB"
    if res.get("baseline"):
        lines += ["", f"numba backend against the package at git revision `{res['baseline']}` (same inputs, "
                  "the two called alternately in one process; speed-up = median of the per-pair ratios):", "",
                  "| size (b, l, d_inner, n) | dtype | pass | baseline median ms (min) | our median ms (min) "
                  "| speed-up |",
                  "|---|---|---|---:|---:|---:|"]
        for r in res["rows"]:
            if "baseline" in r:
                lines.append(f"| {tuple(r['shape'])} | {r['dtype']} | {r['pass']} | "
                             f"{common.fmt_ms(r['baseline']['median'])} ({common.fmt_ms(r['baseline']['min'])}) | "
                             f"{common.fmt_ms(r['median'])} ({common.fmt_ms(r['min'])}) | {r['speedup']:.2f}× |")
    lines += [
        "",
        "numba speed-up over the NumPy reference (float32): " + "; ".join(speedups) + ".",
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
