"""The residual block: ``x + mixer(rmsnorm(x))`` (pre-norm, as in the official ``Block``).

The official block fuses the residual add into the next norm for speed; the arithmetic
is the same. Parameters are the block's own (``norm.weight``, ``mixer.*``) without the
``layers.{i}.`` prefix.
"""
from __future__ import annotations

from .layers import rmsnorm_backward, rmsnorm_forward
from .mixer import mixer_backward, mixer_forward, mixer_step


def _mixer_params(p):
    return {k[6:]: v for k, v in p.items() if k.startswith("mixer.")}


def block_forward(x, p, backend="numba", check=True):
    """Args:
        x: (b, l, d_model).  p: the block's parameters.
        check: passed to :func:`mixer_forward` (False once the model has checked its inputs).
    Returns:
        out: (b, l, d_model), cache.
    """
    xn, norm_cache = rmsnorm_forward(x, p["norm.weight"])
    m, mixer_cache = mixer_forward(xn, _mixer_params(p), backend, check=check)
    return x + m, (norm_cache, mixer_cache)


def block_backward(dout, cache):
    """The residual passes dout straight through; the mixer branch adds its own dx.

    Returns:
        dx: (b, l, d_model), grads: dict keyed like the block's parameters.
    """
    norm_cache, mixer_cache = cache
    dxn, mixer_grads, _ = mixer_backward(dout, mixer_cache)
    dx_branch, dnorm = rmsnorm_backward(dxn, norm_cache)
    grads = {"norm.weight": dnorm, **{f"mixer.{k}": v for k, v in mixer_grads.items()}}
    return dout + dx_branch, grads


def block_step(x_t, p, state):
    """One token through the block. x_t: (b, d_model); state: {"conv": ..., "h": ...}."""
    xn, _ = rmsnorm_forward(x_t, p["norm.weight"])
    m, conv, h = mixer_step(xn, _mixer_params(p), state["conv"], state["h"])
    return x_t + m, {"conv": conv, "h": h}
