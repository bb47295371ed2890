"""``python -m mamba_from_scratch demo``: train a small Mamba to do linear regression in context.

Each prompt has its own weight vector ``w ~ N(0, I/d)`` and examples ``y_i = <w, x_i>``. The
model reads one token per example, ``(x_i, y_{i-1})`` -- the label of the previous example
arrives with the next input -- and predicts ``y_i`` at every position. No single ``w`` fits
all prompts, so the only way below the context-free error (1.0, predicting 0) is to infer
``w`` from the earlier examples of the same prompt: in-context learning, in miniature.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from .models.mamba import MambaConfig, init_params, model_backward, model_forward
from .optim import AdamW, TrainingDiverged, clip_grad_norm, cosine_lr, nonfinite_report
from .progress import Progress
from .runtime import tune_process
from .scan import BACKENDS, resolve_backend
from .validate import check_choice, check_output_dir, check_positive_float, check_positive_int


def linear_regression_prompts(rng, b, n_examples, d, dtype=np.float32):
    """Args:
        rng: numpy Generator.  b: prompts.  n_examples: examples per prompt.  d: input dimension.
    Returns:
        tokens: (b, n_examples, d + 1) rows (x_i, y_{i-1}),  targets: (b, n_examples) y_i.
    """
    w = rng.normal(size=(b, d)) / np.sqrt(d)                      # (b, d)
    x = rng.normal(size=(b, n_examples, d))                       # (b, N, d)
    y = np.einsum("bnd,bd->bn", x, w)                             # (b, N), variance 1
    y_prev = np.concatenate([np.zeros((b, 1)), y[:, :-1]], 1)     # (b, N)
    tokens = np.concatenate([x, y_prev[..., None]], -1)           # (b, N, d + 1)
    return tokens.astype(dtype), y.astype(dtype)


def train(cfg, steps, batch, n_examples, d, lr, seed, backend="numba", progress=True):
    """Train with MSE over all positions, AdamW, warmup + cosine, clipping at norm 1.

    Returns:
        params, losses (per step), per_position (mean squared error per example index on
        held-out prompts after training).
    Raises:
        TrainingDiverged (with ``losses`` attached) at the first non-finite loss, gradient
        or parameter; the update that would spread it is not applied.
    """
    steps = check_positive_int("steps", steps)
    rng = np.random.default_rng(seed)
    params = init_params(cfg, rng)
    opt = AdamW(params, lr=lr, weight_decay=0.01)
    losses = []
    bar = Progress(steps, "demo", enabled=progress)
    for step in range(steps):
        tokens, y = linear_regression_prompts(rng, batch, n_examples, d)
        out, cache = model_forward(params, cfg, tokens, backend)
        err = out[..., 0] - y                                                   # (b, N)
        with np.errstate(over="ignore", invalid="ignore"):
            loss = float(np.mean(err ** 2))
        grads = model_backward((2.0 / err.size * err)[..., None], cache)[0] if np.isfinite(loss) else None
        bad = nonfinite_report(loss, grads)
        if bad is None:
            clip_grad_norm(grads, 1.0)
            opt.step(params, grads, lr=cosine_lr(step, steps, lr, warmup=steps // 20))
            bad = nonfinite_report(params=params)
            bad = bad and f"after the update, {bad}"
        if bad is not None:
            bar.close()
            error = TrainingDiverged(step, bad)
            error.losses = np.array(losses)
            raise error
        losses.append(loss)
        bar.set_postfix(loss=f"{loss:.3f}")
        bar.update()
    bar.close()
    tokens, y = linear_regression_prompts(np.random.default_rng(seed + 1), 512, n_examples, d)
    out, _ = model_forward(params, cfg, tokens, backend)
    per_position = np.mean((out[..., 0] - y) ** 2, axis=0)
    return params, np.array(losses), per_position


def plot(losses, per_position, d, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a0, a1) = plt.subplots(1, 2, figsize=(10, 3.8))
    window = max(1, len(losses) // 50)
    smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
    a0.plot(losses, color="0.8", lw=0.8, label="per step")
    a0.plot(np.arange(window - 1, len(losses)), smooth, color="C0", label=f"moving mean ({window})")
    a0.axhline(1.0, color="k", ls="--", lw=1, label="predict 0 (ignores context)")
    a0.set(xlabel="training step", ylabel="MSE over all positions", title="Training loss", ylim=(0, 1.5))
    a0.legend(frameon=False)
    a1.plot(np.arange(1, len(per_position) + 1), per_position, "o-", ms=3, color="C1", label="trained Mamba")
    i = np.arange(1, len(per_position) + 1)
    # Bayes-optimal error with no noise: i - 1 examples pin down i - 1 of the d directions of w.
    a1.plot(i, np.maximum(0.0, 1.0 - (i - 1) / d), color="0.4", ls=":", lw=1.2, label="Bayes optimal")
    a1.axhline(1.0, color="k", ls="--", lw=1, label="predict 0")
    a1.set(xlabel="example index i (examples seen before it: i - 1)", ylabel="MSE on held-out prompts",
           title="In-context error vs examples seen", ylim=(0, 1.5))
    a1.legend(frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m mamba_from_scratch demo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="results/demo", help="folder for loss_curve.png and metrics.json")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--examples", type=int, default=24, help="examples per prompt (sequence length)")
    ap.add_argument("--d", type=int, default=4, help="input dimension of the regression task")
    ap.add_argument("--d-model", type=int, default=32)
    ap.add_argument("--n-layer", type=int, default=2)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backend", default="numba", help="selective-scan backend: numpy, numba, cuda, auto")
    args = ap.parse_args(argv)
    # Everything is checked before training, so nothing fails after the compute is spent.
    for name in ("steps", "batch", "examples", "d", "d_model", "n_layer"):
        check_positive_int(f"--{name.replace('_', '-')}", getattr(args, name))
    if args.examples < args.d:
        raise ValueError(f"--examples must be >= --d ({args.d}): the report reads the error at example d, "
                         f"where d examples determine w; got {args.examples}")
    check_positive_float("--lr", args.lr)
    check_positive_int("--seed", args.seed, minimum=0)
    check_choice("--backend", args.backend, BACKENDS)
    resolve_backend(args.backend)
    check_output_dir("--out", args.out)

    tune_process()
    cfg = MambaConfig(d_model=args.d_model, n_layer=args.n_layer, d_in=args.d + 1, d_out=1)
    summary_path = os.path.join(args.out, "train_summary.json")
    try:
        _, losses, per_position = train(cfg, args.steps, args.batch, args.examples, args.d, args.lr,
                                        args.seed, args.backend)
    except TrainingDiverged as e:
        message = f"{e}; the demo writes no checkpoint, so nothing was saved but {summary_path}"
        with open(summary_path, "w") as f:
            json.dump({"status": "diverged", "step": e.step, "message": message, "args": vars(args),
                       "losses": e.losses.tolist()}, f, indent=1)
        print(f"training diverged: {message}", file=sys.stderr)
        return 1
    with open(summary_path, "w") as f:
        json.dump({"status": "done", "step": args.steps, "message": "", "args": vars(args)}, f, indent=1)
    png = os.path.join(args.out, "loss_curve.png")
    plot(losses, per_position, args.d, png)
    k = max(1, args.steps // 20)
    metrics = {"config": cfg.to_dict(), "args": vars(args), "loss_first": float(losses[:k].mean()),
               "loss_last": float(losses[-k:].mean()), "error_by_position": per_position.tolist()}
    with open(os.path.join(args.out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=1)
    print(f"loss: first {k} steps {metrics['loss_first']:.3f} -> last {k} steps {metrics['loss_last']:.3f} "
          f"(predicting 0 scores 1.0)")
    print(f"held-out error at example 1: {per_position[0]:.3f}, at example {args.d}: "
          f"{per_position[args.d - 1]:.3f}, at example {args.examples}: {per_position[-1]:.3f}")
    print(f"figure: {png}\nmetrics: {os.path.join(args.out, 'metrics.json')}")
    return 0
