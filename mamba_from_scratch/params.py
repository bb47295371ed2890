"""Parameter dicts: the one home of the helpers every model uses on them.

Parameters (and their gradients) are flat dicts keyed by the official state-dict names,
``layers.0.mixer.in_proj.weight``; a block or a layer sees its own part with the prefix
stripped (``in_proj.weight``) and hands its gradients back with it restored.

    sub_params(params, "layers.0.")     the entries under a prefix, prefix stripped
    prefixed(grads, "layers.0.")         the same keys with a prefix put back
    count_params(cfg)                    scalars of any config with ``param_shapes()``
    check_params(params, cfg)            exactly the config's keys and shapes, one float dtype, finite

Tests: tests/test_params.py.
"""
from __future__ import annotations

import math

from .validate import check_array_dict


def sub_params(params, prefix):
    """The entries of ``params`` whose key starts with ``prefix``, with the prefix stripped.

    The arrays are the same objects (views into nothing new): a block updates nothing
    through them, and a gradient written into them would be the caller's.
    """
    n = len(prefix)
    return {k[n:]: v for k, v in params.items() if k.startswith(prefix)}


def prefixed(arrays, prefix):
    """``arrays`` with ``prefix`` put in front of every key (the inverse of :func:`sub_params`)."""
    return {prefix + k: v for k, v in arrays.items()}


def count_params(cfg) -> int:
    """Number of scalar parameters of any config with ``param_shapes()``."""
    return sum(math.prod(s) for s in cfg.param_shapes().values())


def check_params(params, cfg):
    """Raise ValueError unless ``params`` has exactly the keys and shapes of ``cfg``, one
    float dtype, and no NaN or Inf. One pass over the parameters; returns their dtype.

    Works for any config with ``param_shapes()`` (every model in ``models/``).
    """
    if not hasattr(cfg, "param_shapes"):
        raise ValueError(f"cfg must be a model config such as MambaConfig, got {type(cfg).__name__}")
    return check_array_dict("params", params, cfg.param_shapes())
