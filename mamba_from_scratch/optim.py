"""AdamW, global-norm gradient clipping and a warmup + cosine learning-rate schedule.

Parameters and gradients are flat ``dict[str, np.ndarray]`` with the same keys; the
optimizer updates the parameter arrays in place so a model's dict stays the one object.
"""
from __future__ import annotations

import math

import numpy as np

from .validate import check_positive_float, check_positive_int


def default_no_decay(key: str) -> bool:
    """Keys that take no weight decay: biases, norm gains, and the SSM's ``A_log`` and ``D``
    (decaying A_log towards 0 would pull every channel's decay rate to exp(-1); the
    official training excludes them with ``_no_weight_decay``)."""
    last = key.rsplit(".", 1)[-1]
    return last in ("bias", "A_log", "D") or "norm" in key


class AdamW:
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019).

        m = b1 m + (1 - b1) g,   v = b2 v + (1 - b2) g^2
        p -= lr * (m_hat / (sqrt(v_hat) + eps) + wd * p)

    Moments are kept in float64 so that float32 training does not lose small updates.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01,
                 no_decay=default_no_decay):
        self.lr = check_positive_float("lr", lr)
        b1, b2 = betas
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise ValueError(f"betas must lie in [0, 1), got {betas!r}")
        self.betas = (float(b1), float(b2))
        self.eps = check_positive_float("eps", eps)
        self.weight_decay = check_positive_float("weight_decay", weight_decay, allow_zero=True)
        self.decay = {k: not no_decay(k) for k in params}
        self.m = {k: np.zeros(p.shape, np.float64) for k, p in params.items()}
        self.v = {k: np.zeros(p.shape, np.float64) for k, p in params.items()}
        self.t = 0

    def step(self, params, grads, lr=None):
        """Update ``params`` in place from ``grads`` (same keys). ``lr`` overrides self.lr."""
        if set(grads) != set(self.m):
            missing = sorted(set(self.m) ^ set(grads))
            raise ValueError(f"grads must have the optimizer's keys; mismatched: {missing[:5]}")
        lr = self.lr if lr is None else lr
        b1, b2 = self.betas
        self.t += 1
        c1, c2 = 1 - b1 ** self.t, 1 - b2 ** self.t
        for k, g in grads.items():
            m, v, p = self.m[k], self.v[k], params[k]
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * np.square(g, dtype=np.float64)
            update = (m / c1) / (np.sqrt(v / c2) + self.eps)
            if self.decay[k] and self.weight_decay:
                update += self.weight_decay * p
            p -= (lr * update).astype(p.dtype)

    def state_dict(self):
        """Flat arrays for a checkpoint: ``m.<key>``, ``v.<key>`` and the step count."""
        out = {f"m.{k}": a for k, a in self.m.items()}
        out.update({f"v.{k}": a for k, a in self.v.items()})
        out["t"] = np.array(self.t)
        return out

    def load_state_dict(self, state):
        """Restore from :meth:`state_dict` output (exactly, for bit-identical resumes)."""
        for k in self.m:
            if f"m.{k}" not in state or state[f"m.{k}"].shape != self.m[k].shape:
                raise ValueError(f"optimizer state lacks a moment of shape {self.m[k].shape} for {k!r}")
            self.m[k][...] = state[f"m.{k}"]
            self.v[k][...] = state[f"v.{k}"]
        self.t = int(state["t"])


def clip_grad_norm(grads, max_norm):
    """Scale all gradients in place so their global L2 norm is at most ``max_norm``.

    Returns the norm before clipping (to log it and to detect explosions).
    """
    max_norm = check_positive_float("max_norm", max_norm)
    total = math.sqrt(sum(float(np.vdot(g, g)) for g in grads.values()))
    if total > max_norm:
        scale = max_norm / (total + 1e-12)
        for g in grads.values():
            g *= scale
    return total


def cosine_lr(step, total_steps, lr_max, warmup=0, lr_min=0.0):
    """Linear warmup for ``warmup`` steps, then cosine decay from lr_max to lr_min."""
    total_steps = check_positive_int("total_steps", total_steps)
    if step < warmup:
        return lr_max * (step + 1) / warmup
    frac = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    return lr_min + 0.5 * (lr_max - lr_min) * (1 + math.cos(math.pi * frac))
