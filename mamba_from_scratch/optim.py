"""AdamW, global-norm gradient clipping, a warmup + cosine learning-rate schedule, and the
divergence check the training loops share.

Parameters and gradients are flat ``dict[str, np.ndarray]`` with the same keys; the
optimizer updates the parameter arrays in place so a model's dict stays the one object.
"""
from __future__ import annotations

import math

import numpy as np

from .validate import (
    FLOAT_DTYPES,
    check_float_array,
    check_number,
    check_positive_float,
    check_positive_int,
    nonfinite_keys,
)


class TrainingDiverged(RuntimeError):
    """A training loop met a NaN/Inf loss, gradient or parameter and stopped.

    Attributes: ``step`` (the step that failed) and ``message`` (what was not finite).
    """

    def __init__(self, step, message):
        super().__init__(f"step {step}: {message}")
        self.step = step
        self.message = message


def nonfinite_report(loss=None, grads=None, params=None):
    """What is not finite among a step's loss, gradients and parameters, or None if all are.

    The training loops call it every step (one pass over the gradients and parameters, no
    activations): a NaN that reached the parameters would otherwise surface later as an
    input error of some layer, and the run would end without its divergence report.
    """
    if loss is not None and not math.isfinite(loss):
        return f"loss {loss} is not finite"
    for what, arrays in (("gradient", grads), ("parameter", params)):
        bad = nonfinite_keys(arrays) if arrays is not None else []
        if bad:
            more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
            verb = f"{what} {{}} is" if len(bad) == 1 else f"{what}s {{}} are"
            return verb.format(", ".join(bad[:3]) + more) + " not finite"
    return None


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
        if not isinstance(params, dict):
            raise ValueError(f"params must be a dict of arrays keyed by name, got {type(params).__name__}")
        for k, p in params.items():
            check_float_array(f"params[{k!r}]", p)
        self.lr = check_positive_float("lr", lr)
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
            raise ValueError(f"betas must be a pair (beta1, beta2) in [0, 1), got {betas!r}")
        b1, b2 = (check_number(f"betas[{i}]", b, 0, 1, high_open=True) for i, b in enumerate(betas))
        self.betas = (b1, b2)
        self.eps = check_positive_float("eps", eps)
        self.weight_decay = check_positive_float("weight_decay", weight_decay, allow_zero=True)
        self.decay = {k: not no_decay(k) for k in params}
        self.m = {k: np.zeros(p.shape, np.float64) for k, p in params.items()}
        self.v = {k: np.zeros(p.shape, np.float64) for k, p in params.items()}
        self.t = 0

    def step(self, params, grads, lr=None):
        """Update ``params`` in place from ``grads`` (same keys). ``lr`` overrides self.lr.

        Everything is checked before anything changes: a gradient of the wrong shape or with
        a NaN is a ValueError and leaves the parameters and moments as they were.
        """
        for name, d in (("params", params), ("grads", grads)):
            if not isinstance(d, dict) or set(d) != set(self.m):
                got = sorted(set(self.m) ^ set(d)) if isinstance(d, dict) else type(d).__name__
                raise ValueError(f"{name} must be a dict with the optimizer's keys; mismatched: {got}")
        for k, g in grads.items():
            p, shape = params[k], self.m[k].shape
            # the passing case inline (every training step); check_float_array words the failure
            if not (isinstance(p, np.ndarray) and p.shape == shape and p.dtype.type in FLOAT_DTYPES
                    and isinstance(g, np.ndarray) and g.shape == shape and g.dtype.type in FLOAT_DTYPES
                    and np.isfinite(g).all()):
                check_float_array(f"params[{k!r}]", p, shape=shape, finite=False)
                check_float_array(f"grads[{k!r}]", g, shape=shape)
        lr = self.lr if lr is None else check_number("lr", lr, 0)
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
            for which in ("m", "v"):
                a = state.get(f"{which}.{k}")
                if not isinstance(a, np.ndarray) or a.shape != self.m[k].shape:
                    raise ValueError(f"optimizer state lacks the moment {which}.{k} of shape {self.m[k].shape}")
        if "t" not in state or np.shape(state["t"]) != ():
            raise ValueError("optimizer state lacks its step count t")
        for k in self.m:
            self.m[k][...] = state[f"m.{k}"]
            self.v[k][...] = state[f"v.{k}"]
        self.t = check_positive_int("optimizer state t", int(state["t"]), minimum=0)


def clip_grad_norm(grads, max_norm):
    """Scale all gradients in place so their global L2 norm is at most ``max_norm``.

    Returns the norm before clipping (to log it and to detect explosions).
    """
    max_norm = check_positive_float("max_norm", max_norm)
    if not isinstance(grads, dict):
        raise ValueError(f"grads must be a dict of arrays, got {type(grads).__name__}")
    total = math.sqrt(sum(float(np.vdot(g, g)) for g in grads.values()))
    if total > max_norm:
        scale = max_norm / (total + 1e-12)
        for g in grads.values():
            g *= scale
    return total


def cosine_lr(step, total_steps, lr_max, warmup=0, lr_min=0.0):
    """Linear warmup for ``warmup`` steps, then cosine decay from lr_max to lr_min.

    ``step`` counts from 0; past ``total_steps`` the rate stays at lr_min.
    """
    total_steps = check_positive_int("total_steps", total_steps)
    step = check_positive_int("step", step, minimum=0)
    warmup = check_positive_int("warmup", warmup, minimum=0)
    lr_max = check_number("lr_max", lr_max, 0)
    lr_min = check_number("lr_min", lr_min, 0, lr_max)
    if step < warmup:
        return lr_max * (step + 1) / warmup
    frac = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    return lr_min + 0.5 * (lr_max - lr_min) * (1 + math.cos(math.pi * frac))
