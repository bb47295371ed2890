"""``bench train-step``: the in-context-learning training step, its time split and its scan.

The step is exactly ``icl-train``'s (mamba_from_scratch/icl/train.py): sample a batch of
prompts, encode them, forward, MSE loss, backward, clip the gradient norm, one AdamW update,
in float32 with the numba scan. Two configurations:

* ``icl-full``: the ``icl-train --full`` model (d_model 32, 2 layers, d_state 16, d = 32,
  N = 32: batch 64 x L 33 tokens of 66 features);
* ``133k``: the issue's reference model, d_model 64, 4 layers (about 133k parameters),
  batch 64 x L 128 (N = 127).

Each runs on 1 and on 2 numba threads (``--threads`` picks one). The split: wrappers around
the package's functions add up, per step, the time in the selective scan (forward and
backward), in the projections (every ``linear_forward`` / ``linear_backward``: in_proj,
x_proj, dt_proj, out_proj, read-in, read-out), and in the optimizer (gradient clipping and
AdamW); "elementwise" is the rest of the step (conv + SiLU, softplus, the gate, RMSNorm,
residuals, the loss, batch sampling and encoding; dt_proj's product is fused into the
softplus kernel and counted there). step / scan is the step's time over the scan's share of it.

``--baseline REV`` also times the same step with the package as it was at git revision REV
(extracted with ``git archive`` into a temporary folder and imported as ``mfs_baseline``), in
the same process, alternating the two steps; the speed-up is the median of the per-pair
ratios, which a machine shared with other work disturbs least.

Where the time goes in finer grain: each configuration is also profiled on one thread
(cProfile, own time per step of the top ``PROFILE_TOP`` functions, after the timed steps).
"""
from __future__ import annotations

import cProfile
import importlib
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from . import common

CONFIGS = {
    "icl-full": dict(d_model=32, n_layer=2, d_state=16, d=32, N=32, batch=64),
    "133k": dict(d_model=64, n_layer=4, d_state=16, d=32, N=127, batch=64),
}
PARTS = ("scan", "projections", "optimizer")
TARGET_SPEEDUP = 2.0   # issue 13: at least twice the tokens/s of the code the issue measured
PROFILE_TOP = 12


class Split:
    """Seconds spent in each part, accumulated by the wrappers of :func:`instrumented`."""

    def __init__(self):
        self.t = dict.fromkeys(PARTS, 0.0)

    def wrap(self, part, fn):
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.t[part] += time.perf_counter() - t0
        return timed


@contextmanager
def instrumented(split):
    """Route the package's scan, linear and optimizer calls through ``split``'s timers."""
    from mamba_from_scratch import optim
    from mamba_from_scratch.icl import train
    from mamba_from_scratch.models import backbone, mixer, mixer_fused
    patches = [(m, name, part) for m in (mixer, mixer_fused)
               for name, part in (("selective_scan_forward", "scan"), ("selective_scan_backward", "scan"),
                                  ("linear_forward", "projections"), ("linear_backward", "projections"))]
    patches += [(backbone, "linear_forward", "projections"), (backbone, "linear_backward", "projections"),
               (train, "clip_grad_norm", "optimizer"), (optim.AdamW, "step", "optimizer")]
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in patches]
    try:
        for obj, name, part in patches:
            setattr(obj, name, split.wrap(part, getattr(obj, name)))
        yield split
    finally:
        for obj, name, fn in saved:
            setattr(obj, name, fn)


def baseline_package(rev):
    """The package as it was at git revision ``rev``, imported as ``mfs_baseline``.

    It is extracted once per commit into the temporary directory and its kernels are compiled
    in a separate process first, as are ours (:func:`warm_caches`): Numba's freshly compiled
    code ran about 10% slower here than the same code loaded from its cache (and gave other
    bits), so both sides must run from their caches for the comparison to be fair.
    """
    if "mfs_baseline" in sys.modules:
        return sys.modules["mfs_baseline"]
    repo = Path(__file__).resolve().parents[2]
    commit = subprocess.run(["git", "-C", str(repo), "rev-parse", rev], capture_output=True, check=True,
                            text=True).stdout.strip()
    folder = Path(tempfile.gettempdir()) / f"mfs_baseline_{commit[:12]}"
    if not (folder / "mfs_baseline").is_dir():
        archive = subprocess.run(["git", "-C", str(repo), "archive", commit, "mamba_from_scratch"],
                                 capture_output=True, check=True).stdout
        staging = Path(tempfile.mkdtemp(prefix="mfs_baseline_"))
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(staging, filter="data")
        folder.mkdir(exist_ok=True)
        os.rename(staging / "mamba_from_scratch", folder / "mfs_baseline")
    warm_caches(folder)
    sys.path.insert(0, str(folder))
    return importlib.import_module("mfs_baseline")


_WARM_SCRIPT = r"""
import sys
sys.path.insert(0, sys.argv[1])
from mamba_from_scratch.bench.train_step import CONFIGS, build, make_step
import importlib
from mamba_from_scratch.bench.scan import S1, make_inputs
for package in ("mamba_from_scratch", "mfs_baseline"):
    for name in CONFIGS:
        make_step(*build(name, package), package=package)()
    scan = importlib.import_module(package + ".scan")
    for dtype in ("float32", "float64"):                     # bench scan's kernels too
        inputs, dy = make_inputs(2, 40, S1[2], S1[3], dtype=dtype)
        scan.selective_scan_backward(dy, scan.selective_scan_forward(*inputs, backend="numba")[2])
"""


def warm_caches(folder):
    """Compile (or load) every kernel of a step of both packages in a separate process."""
    subprocess.run([sys.executable, "-c", _WARM_SCRIPT, str(folder)], check=True, capture_output=True)


def build(name, package="mamba_from_scratch"):
    """icl-train's config, task, parameters and optimizer for configuration ``name``."""
    train = importlib.import_module(f"{package}.icl.train")
    AdamW = importlib.import_module(f"{package}.optim").AdamW
    c = CONFIGS[name]
    tc = train.TrainConfig(model="mamba", d=c["d"], N=c["N"], batch=c["batch"], d_model=c["d_model"],
                           n_layer=c["n_layer"], d_state=c["d_state"], steps=1000, warmup=10)
    cfg, params = train.build_model(tc)
    opt = AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay)
    return tc, cfg, params, opt, train.make_task(tc)


def make_step(tc, cfg, params, opt, task, package="mamba_from_scratch"):
    """One icl-train step (the loop body of train.train without logging and checkpoints)."""
    train = importlib.import_module(f"{package}.icl.train")
    cosine_lr = importlib.import_module(f"{package}.optim").cosine_lr
    state = {"step": 0}

    def step():
        x, y = train.sample_batch(tc, task, state["step"])
        _, grads, _ = train.loss_and_grads(params, cfg, x, y, tc.encoding, tc.backend)
        train.clip_grad_norm(grads, tc.max_grad_norm)
        opt.step(params, grads, lr=cosine_lr(state["step"], tc.steps, tc.lr, tc.warmup, tc.lr * tc.lr_min_frac))
        state["step"] += 1
        return x.shape[0] * x.shape[1]                          # tokens (paired encoding: L = N + 1)
    return step


def measure(name, threads, repeats, baseline=None):
    """Median step time, tokens/s and the time split of ``repeats`` steps on ``threads`` threads;
    with ``baseline`` (a git revision) also the baseline's steps, alternating with ours."""
    import numba
    numba.set_num_threads(threads)
    built = build(name)
    step = make_step(*built)
    step()                                                       # compile, allocate
    base_step, base_steps = None, []
    if baseline:
        package = baseline_package(baseline).__name__
        base_step = make_step(*build(name, package), package=package)
        base_step()
    split = Split()
    steps, parts = [], []
    with instrumented(split):
        for r in range(repeats):
            if base_step is not None and r % 2 == 0:             # alternate which goes first
                t0 = time.perf_counter()
                base_step()
                base_steps.append(time.perf_counter() - t0)
            before = dict(split.t)
            t0 = time.perf_counter()
            tokens = step()
            steps.append(time.perf_counter() - t0)
            parts.append({k: split.t[k] - before[k] for k in PARTS})
            if base_step is not None and r % 2 == 1:
                t0 = time.perf_counter()
                base_step()
                base_steps.append(time.perf_counter() - t0)
    med = float(np.median(steps))
    split_med = {k: float(np.median([p[k] for p in parts])) for k in PARTS}
    split_med["elementwise"] = float(np.median([s - sum(p.values()) for s, p in zip(steps, parts)]))
    c = CONFIGS[name]
    n_params = int(sum(v.size for v in built[2].values()))
    out = {"config": name, "threads": threads, "params": n_params, "tokens_per_step": tokens,
           "step": {"median": med, "min": float(min(steps)), "max": float(max(steps)), "runs": steps},
           "tokens_per_s": tokens / med, "split": split_med, "step_over_scan": med / split_med["scan"],
           "loadavg": common.loadavg(), "batch": (c["batch"], c["N"] + 1)}
    if base_steps:
        base_med = float(np.median(base_steps))
        out["baseline"] = {"rev": baseline, "median": base_med, "min": float(min(base_steps)),
                           "runs": base_steps, "tokens_per_s": tokens / base_med,
                           "speedup": float(np.median(np.array(base_steps) / np.array(steps)))}
    return out


def profile(name, repeats):
    """Own time per step of the top PROFILE_TOP functions over ``repeats`` steps on one thread."""
    import pstats

    import numba
    numba.set_num_threads(1)
    step = make_step(*build(name))
    step()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(repeats):
        step()
    profiler.disable()
    stats = pstats.Stats(profiler).stats
    top = []
    by_own_time = sorted(stats.items(), key=lambda kv: -kv[1][2])
    for (filename, line, func), (_, calls, own, cum, _) in by_own_time[:PROFILE_TOP]:
        where = filename.split("mamba_from_scratch/")[-1] if "mamba_from_scratch" in filename else "~"
        top.append({"function": f"{where}:{line}({func})", "calls_per_step": calls / repeats,
                    "own_s": own / repeats, "cum_s": cum / repeats})
    return top


def run(args):
    """Both configurations on 1 and 2 threads (or ``--threads``); returns the results dict."""
    import numba
    threads = [args.threads] if args.threads else sorted({1, min(2, numba.config.NUMBA_NUM_THREADS)})
    res = {"machine": common.machine(), "blas_threads": common.blas_threads(), "numba": numba.__version__,
           "loadavg_start": common.loadavg(), "repeats": args.repeats, "rows": [], "baseline": args.baseline}
    for name in CONFIGS:
        for th in threads:
            common.progress(f"train-step {name}, {th} thread(s)...")
            res["rows"].append(measure(name, th, args.repeats, args.baseline))
    res["profile"] = {}
    for name in CONFIGS:
        common.progress(f"train-step {name}: profile on 1 thread...")
        res["profile"][name] = profile(name, max(3, args.repeats // 3))
    res["threading"] = common.threading()
    res["loadavg_end"] = common.loadavg()
    return res


def render(res, argv):
    m = res["machine"]
    ms = common.fmt_ms
    lines = [
        "## Training step (`bench train-step`)",
        "",
        f"Command: `{common.command_line(argv)}`  ",
        f"Machine: {m['cpu']}, {m['nproc']} cores; Numba {res['numba']}, BLAS threads: {res['blas_threads']}, "
        f"{res['threading']}  ",
        f"Load average (1/5/15 min): start {res['loadavg_start']}, end {res['loadavg_end']}",
        "",
        "icl-train's step (sample, encode, forward, MSE, backward, clip, AdamW; float32, numba scan), "
        f"medians of {res['repeats']} steps after a warm-up. icl-full = the `icl-train --full` model "
        "(d_model 32, 2 layers, batch 64 × L 33); 133k = d_model 64, 4 layers, batch 64 × L 128. "
        "The split is timed inside the step: scan = selective-scan forward + backward, projections = every "
        "linear layer forward + backward, optimizer = clipping + AdamW, elementwise = the rest "
        "(conv + SiLU, softplus, gate, RMSNorm, residuals, loss, batch sampling).",
        "",
        "| config | params | threads | step ms (min, max) | tokens/s | scan ms | projections ms | "
        "elementwise ms | optimizer ms | step / scan | load (1 min) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in res["rows"]:
        s, sp = r["step"], r["split"]
        lines.append(f"| {r['config']} | {r['params']:,} | {r['threads']} | {ms(s['median'])} "
                     f"({ms(s['min'])}, {ms(s['max'])}) | {r['tokens_per_s']:,.0f} | {ms(sp['scan'])} | "
                     f"{ms(sp['projections'])} | {ms(sp['elementwise'])} | {ms(sp['optimizer'])} | "
                     f"{r['step_over_scan']:.2f} | {r['loadavg'][0] if r['loadavg'] else '?'} |")
    if res.get("baseline"):
        lines += [
            "",
            f"Against the package at git revision `{res['baseline']}`, timed in the same process, the two "
            "steps alternating (same configuration, seed and threads). Speed-up = median over the pairs of "
            f"baseline step / our step (target ≥ {TARGET_SPEEDUP:g}×).",
            "",
            "| config | threads | baseline step ms (min) | baseline tokens/s | our step ms (min) | our tokens/s "
            "| speed-up |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in res["rows"]:
            bl, s = r["baseline"], r["step"]
            mark = " ✓" if bl["speedup"] >= TARGET_SPEEDUP else " ✗"
            lines.append(f"| {r['config']} | {r['threads']} | {ms(bl['median'])} ({ms(bl['min'])}) | "
                         f"{bl['tokens_per_s']:,.0f} | {ms(s['median'])} ({ms(s['min'])}) | {r['tokens_per_s']:,.0f} | "
                         f"{bl['speedup']:.2f}×{mark} |")
    for name, top in res.get("profile", {}).items():
        lines += ["", f"Where a {name} step spends its time on 1 thread (cProfile, own time per step, top {len(top)}):",
                  "", "| function | calls / step | own ms / step | cumulative ms / step |", "|---|---:|---:|---:|"]
        lines += [f"| `{t['function']}` | {t['calls_per_step']:g} | {t['own_s'] * 1e3:.2f} | {t['cum_s'] * 1e3:.2f} |"
                  for t in top]
    return "\n".join(lines)
