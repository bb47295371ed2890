"""Frozen reference data for lesson 06b (run from the repository root: python lessons/_data/make_06b.py).

Writes lessons/_data/06b_training.npz, computed with the package's own pieces
(``optim.AdamW``, ``model.model_forward`` / ``model_backward``, ``optim.clip_grad_norm``,
``optim.cosine_lr``, ``demo.linear_regression_prompts``), all in float64 with the NumPy scan so
that the numbers do not depend on numba's fastmath or on the machine's thread count:

- ``adam_p0``, ``adam_g`` (3 steps of gradients), ``adam_p``, ``adam_m``, ``adam_v``: three AdamW
  steps on a (3, 4) array, for exercise 06b.1 (lr, betas, eps, weight decay below).
- ``loss_value``: the loss of one batch of the tiny model (parameters ~ 0.5 N(0, 1)), for exercise 06b.2.
- ``train_losses`` and ``train_final.<key>``: the loss at every step of a 12-step training run of
  the tiny model from a fixed seed, and two of its final parameters, for exercise 06b.3.

The sizes are fixed (they do not depend on the lesson's FAST switch) and must match the check
cells of lesson 06b.
"""
from pathlib import Path

import numpy as np

from mamba_from_scratch.demo import linear_regression_prompts
from mamba_from_scratch.models.mamba import MambaConfig, init_params, model_backward, model_forward
from mamba_from_scratch.optim import AdamW, clip_grad_norm, cosine_lr

OUT = Path(__file__).resolve().parent / "06b_training.npz"

# Exercise 06b.1: AdamW on one array.
ADAM_SEED, ADAM_LR, ADAM_BETAS, ADAM_EPS, ADAM_WD = 61, 1e-2, (0.9, 0.999), 1e-8, 0.1
# Exercises 06b.2 and 06b.3: a tiny model on in-context linear regression with d = 2.
TINY = dict(d_model=4, n_layer=1, d_state=2, d_in=3, d_out=1)
TRAIN_SEED, TRAIN_STEPS, TRAIN_BATCH, TRAIN_N, TRAIN_D, TRAIN_LR = 62, 12, 4, 6, 2, 1e-2
LOSS_SEED = 63
FINAL_KEYS = ("read_out.weight", "layers.0.mixer.in_proj.weight")


def reference_loss_and_grads(params, cfg, tokens, y, backend="numpy"):
    """Mean squared error over all positions and its gradients (what exercise 06b.2 asks for)."""
    out, cache = model_forward(params, cfg, tokens, backend)       # (b, l, 1)
    err = out[..., 0] - y                                           # (b, l)
    grads, _ = model_backward((2.0 / err.size * err)[..., None], cache)
    return float(np.mean(err ** 2)), grads


def reference_train(params, cfg, rng, steps, batch, n_examples, d, lr, backend="numpy"):
    """The training loop of exercise 06b.3, with the package's pieces."""
    opt = AdamW(params, lr=lr, weight_decay=0.01)
    losses = []
    for step in range(steps):
        tokens, y = linear_regression_prompts(rng, batch, n_examples, d, dtype=params["read_in.weight"].dtype)
        loss, grads = reference_loss_and_grads(params, cfg, tokens, y, backend)
        clip_grad_norm(grads, 1.0)
        opt.step(params, grads, lr=cosine_lr(step, steps, lr, warmup=max(1, steps // 10)))
        losses.append(loss)
    return np.array(losses)


def main():
    out = {}
    rng = np.random.default_rng(ADAM_SEED)
    p0 = rng.standard_normal((3, 4))
    g = rng.standard_normal((3, 3, 4)) * np.array([1.0, 1e-3, 10.0])[:, None, None]   # three gradient scales
    params = {"w": p0.copy()}
    opt = AdamW(params, lr=ADAM_LR, betas=ADAM_BETAS, eps=ADAM_EPS, weight_decay=ADAM_WD, no_decay=lambda k: False)
    ps, ms, vs = [], [], []
    for t in range(3):
        opt.step(params, {"w": g[t].copy()})
        ps.append(params["w"].copy())
        ms.append(opt.m["w"].copy())
        vs.append(opt.v["w"].copy())
    out.update(adam_p0=p0, adam_g=g, adam_p=np.array(ps), adam_m=np.array(ms), adam_v=np.array(vs))

    cfg = MambaConfig(**TINY)
    rng = np.random.default_rng(LOSS_SEED)
    params = {k: 0.5 * rng.standard_normal(v.shape) for k, v in init_params(cfg, rng, dtype=np.float64).items()}
    tokens, y = linear_regression_prompts(rng, 3, 5, TRAIN_D, dtype=np.float64)
    out["loss_value"] = np.array(reference_loss_and_grads(params, cfg, tokens, y)[0])

    rng = np.random.default_rng(TRAIN_SEED)
    params = init_params(cfg, rng, dtype=np.float64)
    out["train_losses"] = reference_train(params, cfg, rng, TRAIN_STEPS, TRAIN_BATCH, TRAIN_N, TRAIN_D, TRAIN_LR)
    for key in FINAL_KEYS:
        out[f"train_final.{key}"] = params[key]
    np.savez_compressed(OUT, **out)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1024:.1f} KB); training losses {np.round(out['train_losses'], 4)}")


if __name__ == "__main__":
    main()
