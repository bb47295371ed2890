"""``bench train-step``: one full training step against its selective scan alone.

The step: forward of a one-layer Mamba (d_model 64, expand 2, d_state 16, d_conv 4,
d_in = d_out = 1) on a (32, 64, 1) float32 batch, MSE loss, its backward, one AdamW update.
The scan inside it runs at (b 32, l 64, d_inner 128, n 16); timing that scan's forward +
backward alone says how much the rest of the model costs on top (target: step <= 1.5x scan).
A breakdown (forward / backward / optimizer) and a profile of where the step spends its
time come with it, so a slow layer shows up by name.
"""
from __future__ import annotations

import cProfile
import io
import pstats

import numpy as np

from . import common
from .scan import make_inputs

TARGET_RATIO = 1.5
B, L = 32, 64


def build(seed=0):
    from mamba_from_scratch.model import MambaConfig, init_params
    from mamba_from_scratch.optim import AdamW
    cfg = MambaConfig(d_model=64, n_layer=1, d_state=16, d_conv=4, expand=2, d_in=1, d_out=1)
    rng = np.random.default_rng(seed)
    params = init_params(cfg, rng, np.float32)
    opt = AdamW(params, lr=1e-3)
    x = rng.standard_normal((B, L, cfg.d_in)).astype(np.float32)
    target = rng.standard_normal((B, L, cfg.d_out)).astype(np.float32)
    return cfg, params, opt, x, target


def run(args):
    """Time the step, its parts and the scan alone; returns the results dict."""
    import numba

    from mamba_from_scratch.model import model_backward, model_forward
    from mamba_from_scratch.scan import selective_scan_backward, selective_scan_forward
    if args.threads:
        numba.set_num_threads(args.threads)
    res = {"machine": common.machine(), "blas_threads": common.blas_threads(),
           "threads": numba.get_num_threads(), "numba": numba.__version__, "loadavg_start": common.loadavg(), "repeats": args.repeats}
    cfg, params, opt, x, target = build()

    def forward():
        return model_forward(params, cfg, x, backend="numba")

    def loss_grad(out):
        diff = out - target                                   # (b, l, d_out)
        return float(np.mean(diff * diff)), (2.0 / diff.size) * diff

    def step():
        out, cache = forward()
        _, dout = loss_grad(out)
        grads, _ = model_backward(dout, cache)
        opt.step(params, grads)

    out, cache = forward()
    _, dout = loss_grad(out)
    grads, _ = model_backward(dout, cache)
    repeats = args.repeats
    res["step"] = common.time_calls(step, repeats)
    res["forward"] = common.time_calls(forward, repeats)
    res["backward"] = common.time_calls(lambda: model_backward(dout, cache), repeats)
    res["adamw"] = common.time_calls(lambda: opt.step(params, grads), repeats)

    scan_shape = (B, L, cfg.d_inner, cfg.d_state)
    inputs, dy = make_inputs(*scan_shape)

    def scan():
        _, _, c = selective_scan_forward(*inputs, backend="numba")
        selective_scan_backward(dy, c)

    res["scan_shape"] = scan_shape
    res["scan"] = common.time_calls(scan, repeats)
    res["ratio"] = res["step"]["median"] / res["scan"]["median"]

    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(max(3, repeats)):
        step()
    profiler.disable()
    stream = io.StringIO()
    stats = pstats.Stats(profiler, stream=stream)
    stats.sort_stats("tottime")
    top = []
    for func, (cc, nc, tt, ct, callers) in sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:10]:
        filename, line, name = func
        where = filename.split("mamba_from_scratch/")[-1] if "mamba_from_scratch" in filename else filename
        top.append({"function": f"{where}:{line}({name})", "calls": nc, "tottime_s": tt / max(3, repeats),
                    "cumtime_s": ct / max(3, repeats)})
    res["profile_top"] = top
    res["loadavg_end"] = common.loadavg()
    return res


def render(res, argv):
    m = res["machine"]
    ms = lambda t: common.fmt_ms(t["median"])
    ok = "✓" if res["ratio"] <= TARGET_RATIO else "✗"
    lines = [
        "## Training step (`bench train-step`)",
        "",
        f"Command: `{common.command_line(argv)}`  ",
        f"Machine: {m['cpu']}, {m['nproc']} cores; numba threads: {res['threads']}, BLAS threads: {res['blas_threads']}  ",
        f"Load average (1/5/15 min): start {res['loadavg_start']}, end {res['loadavg_end']}",
        "",
        "One-layer Mamba (d_model 64, expand 2, d_state 16, d_conv 4, d_in = d_out = 1), batch "
        f"({B}, {L}), float32, numba scan: forward, MSE loss backward, AdamW. "
        f"Medians of {res['repeats']} runs after a warm-up.",
        "",
        "| what | median ms | min ms | max ms |",
        "|---|---:|---:|---:|",
    ]
    for key, label in (("step", "full training step"), ("forward", "model forward"),
                       ("backward", "model backward"), ("adamw", "AdamW update"),
                       ("scan", f"scan forward+backward alone at {tuple(res['scan_shape'])}")):
        t = res[key]
        lines.append(f"| {label} | {ms(t)} | {common.fmt_ms(t['min'])} | {common.fmt_ms(t['max'])} |")
    lines += [
        "",
        f"Step / scan = **{res['ratio']:.2f}×** (target ≤ {TARGET_RATIO}× {ok}).",
        "",
        "Where a step spends its time (cProfile, own time per step, top 10):",
        "",
        "| function | calls / step | own ms / step | cumulative ms / step |",
        "|---|---:|---:|---:|",
    ]
    n_steps = max(3, res["repeats"])
    for p in res["profile_top"]:
        lines.append(f"| `{p['function']}` | {p['calls'] / n_steps:.0f} | {p['tottime_s'] * 1e3:.3f} | "
                     f"{p['cumtime_s'] * 1e3:.3f} |")
    return "\n".join(lines)

