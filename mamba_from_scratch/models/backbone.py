"""The one backbone of every sequence model: ``read_in -> n_layer blocks -> norm_f -> read_out``.

A sequence-to-sequence regressor ``(b, l, d_in) -> (b, l, d_out)``, the shape in-context
learning needs (Garg et al. 2022 use the same read-in/read-out around their backbone). The
block type comes from the config: ``cfg.block`` is a :class:`Block`, the block's functions.
The Mamba (models/mamba.py), the linear-attention and the softmax-attention Transformers
(models/linear_attention.py, models/softmax_attention.py) are three blocks on this one
stack; the language model (lm/model.py) puts an embedding and a tied head around the same
residual stack (:func:`blocks_forward`).

Parameters are one flat dict keyed by the official state-dict names (``read_in.weight``,
``layers.{i}.<block's names>``, ``norm_f.weight``, ``read_out.*``), ``Linear.weight`` in
the PyTorch layout ``(out, in)``. Gradients use the same keys and shapes.

Tests: tests/test_models_backbone.py.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from ..layers import linear_backward, linear_forward, rmsnorm_backward, rmsnorm_forward
from ..params import check_params, prefixed, sub_params
from ..validate import check_float_array, check_float_dtype


class Block(NamedTuple):
    """What the backbone needs of a block type (``cfg.block``).

    forward(x, p, cfg, state=None, backend="numba", check=True) -> (out, state, cache)
        x, out: (b, l, d_model); p: the block's parameters without ``layers.{i}.``; state:
        the block's recurrent state before x and after it (None for a block without one).
    backward(dout, cache) -> (grads, dx), grads keyed like p.
    param_shapes(cfg) -> {name: shape} of one block.
    init(cfg, rng) -> {name: float64 array} of one block, drawn from rng.
    step(x_t, p, cfg, state) -> (out_t, state): one token of recurrent inference, or None.
    """
    forward: Callable
    backward: Callable
    param_shapes: Callable
    init: Callable
    step: Callable | None = None


def param_shapes(cfg) -> dict:
    """Every parameter's name and shape: read_in, the blocks', norm_f, read_out."""
    shapes = {"read_in.weight": (cfg.d_model, cfg.d_in), "read_in.bias": (cfg.d_model,)}
    block_shapes = cfg.block.param_shapes(cfg)
    for i in range(cfg.n_layer):
        shapes.update(prefixed(block_shapes, f"layers.{i}."))
    shapes.update({"norm_f.weight": (cfg.d_model,), "read_out.weight": (cfg.d_out, cfg.d_model),
                   "read_out.bias": (cfg.d_out,)})
    return shapes


def init_params(cfg, rng: np.random.Generator, dtype=np.float32):
    """Read-in and read-out ~ U(+-1/sqrt(fan_in)) with zero biases (PyTorch's Linear default),
    the blocks by ``cfg.block.init`` in order, norms 1. The draws come in the order read_in,
    block 0, ..., block n_layer - 1, read_out, so a seed gives one set of weights.

    Returns:
        dict name -> array of ``dtype``, keyed as :func:`param_shapes`.
    """
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    dtype = check_float_dtype("dtype", dtype)
    dm = cfg.d_model
    p = {"read_in.weight": rng.uniform(-cfg.d_in ** -0.5, cfg.d_in ** -0.5, size=(dm, cfg.d_in)),
         "read_in.bias": np.zeros(dm)}
    for i in range(cfg.n_layer):
        p.update(prefixed(cfg.block.init(cfg, rng), f"layers.{i}."))
    p.update({"norm_f.weight": np.ones(dm),
              "read_out.weight": rng.uniform(-dm ** -0.5, dm ** -0.5, size=(cfg.d_out, dm)),
              "read_out.bias": np.zeros(cfg.d_out)})
    return {name: np.ascontiguousarray(a, dtype=dtype) for name, a in p.items()}


def blocks_forward(h, params, cfg, states=None, backend="numba", check=True):
    """The residual stack: every block in turn.

    Args:
        h: (b, l, d_model) the residual stream.  states: one state per block, or None.
    Returns:
        h: (b, l, d_model), states: each block's state after the last token, caches.
    """
    out_states, caches = [], []
    for i in range(cfg.n_layer):
        h, s, c = cfg.block.forward(h, sub_params(params, f"layers.{i}."), cfg,
                                    None if states is None else states[i], backend, check)
        out_states.append(s)
        caches.append(c)
    return h, out_states, caches


def blocks_backward(dh, caches, cfg):
    """The stack read in reverse. Returns grads (``layers.{i}.*``), dh: (b, l, d_model)."""
    grads = {}
    for i in reversed(range(cfg.n_layer)):
        g, dh = cfg.block.backward(dh, caches[i])
        grads.update(prefixed(g, f"layers.{i}."))
    return grads, dh


def blocks_step(h, params, cfg, states):
    """One token through the stack. h: (b, d_model). Returns h, the new states."""
    new_states = []
    for i in range(cfg.n_layer):
        h, s = cfg.block.step(h, sub_params(params, f"layers.{i}."), cfg, states[i])
        new_states.append(s)
    return h, new_states


def model_forward(params, cfg, x, backend="numba"):
    """Args:
        params: dict from :func:`init_params`.  cfg: a model config (its ``block``).
        x: (b, l, d_in), same dtype as the parameters.
        backend: selective-scan backend for blocks that scan (the Mamba's).
    Returns:
        out: (b, l, d_out), cache for :func:`model_backward`.

    The parameters and x are checked here (keys, shapes, dtype, finite), so the layers
    below trust them: an activation that overflows gives a non-finite output (which a
    training loop reports as divergence), not an error about an internal tensor.
    """
    dtype = check_params(params, cfg)
    check_float_array("x", x, ndim=3, dtype=dtype)
    if x.shape[2] != cfg.d_in or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"x must have shape (b >= 1, l >= 1, d_in={cfg.d_in}), got {x.shape}")
    h, read_in_cache = linear_forward(x, params["read_in.weight"], params["read_in.bias"])  # (b, l, d_model)
    h, _, block_caches = blocks_forward(h, params, cfg, None, backend, check=False)
    hn, norm_cache = rmsnorm_forward(h, params["norm_f.weight"])                           # (b, l, d_model)
    out, read_out_cache = linear_forward(hn, params["read_out.weight"], params["read_out.bias"])  # (b, l, d_out)
    return out, (cfg, read_in_cache, block_caches, norm_cache, read_out_cache)


def model_backward(dout, cache):
    """The forward read in reverse.

    Args:
        dout: (b, l, d_out) gradient of the loss w.r.t. the output.
    Returns:
        grads: dict keyed like the parameters, dx: (b, l, d_in).
    """
    if not (isinstance(cache, tuple) and len(cache) == 5 and hasattr(cache[0], "block")):
        raise ValueError("cache must be the cache returned by model_forward")
    cfg, read_in_cache, block_caches, norm_cache, read_out_cache = cache
    _, x_shape, read_out_weight, _ = read_out_cache
    check_float_array("dout", dout, shape=(*x_shape[:-1], cfg.d_out), dtype=read_out_weight.dtype)
    grads = {}
    dhn, grads["read_out.weight"], grads["read_out.bias"] = linear_backward(dout, read_out_cache)
    dh, grads["norm_f.weight"] = rmsnorm_backward(dhn, norm_cache)
    block_grads, dh = blocks_backward(dh, block_caches, cfg)
    grads.update(block_grads)
    dx, grads["read_in.weight"], grads["read_in.bias"] = linear_backward(dh, read_in_cache)
    return grads, dx
