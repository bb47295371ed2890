"""The ablated Mambas of issue 14, blocks on the one backbone, and the frozen-selection view.

    MambaNonselectiveConfig   Δ, B, C learned constants: a linear time-invariant SSM
                              (no x_proj, no dt_proj.weight; B, C: (n,); Δ = softplus(dt_proj.bias))
    MambaNoGateConfig         out_proj(y) instead of out_proj(y * silu(z)); in_proj makes only x
    FrozenSelection(cfg)      any Mamba config's model, evaluated with Δ_t, B_t, C_t replaced by
                              their means over the sequence (same parameters, same keys)

The configs are MambaConfig's fields and sizes (so a checkpoint stores them the same way)
with another ``block``: a residual block ``x + mixer(rmsnorm(x))`` whose mixer is
models/mixer_variants.py with the switches set. Everything else is the Mamba's: the
backbone, the official initialization of the parameters that remain (mixer_variants.init),
the recurrent step (``models.mamba.init_state``/``model_step`` accept these configs), and the
parameter names (``layers.{i}.norm.weight``, ``layers.{i}.mixer.*``). In a non-selective block,
``dt_rank`` is kept in the config but is not used.

Parameter counts at the ICL configuration (d_model 32, 2 layers, d_state 16, d = 16): see
tests/test_models_ablations.py and the results page.

Tests: tests/test_models_ablations.py.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..layers import rmsnorm_backward, rmsnorm_forward
from ..params import prefixed, sub_params
from . import mixer_variants
from .backbone import Block
from .mamba import MambaConfig


def switches(cfg):
    """(selective, gated) of a Mamba-family config: (True, True) for the full MambaConfig."""
    return getattr(cfg, "SELECTIVE", True), getattr(cfg, "GATED", True)


@functools.lru_cache(maxsize=None)
def variant_block(selective, gated, freeze=False) -> Block:
    """The residual block ``x + mixer(rmsnorm(x))`` with mixer_variants' switches, as a backbone Block."""
    def forward(x, p, cfg=None, state=None, backend="numba", check=True):
        """x: (b, l, d_model) -> out (b, l, d_model), state after the last token, cache."""
        xn, norm_cache = rmsnorm_forward(x, p["norm.weight"])                          # (b, l, d_model)
        m, state, mixer_cache = mixer_variants.mixer_forward(xn, sub_params(p, "mixer."), state, backend, check,
                                                             selective=selective, gated=gated, freeze=freeze)
        return x + m, state, (norm_cache, mixer_cache)

    def backward(dout, cache):
        """The residual passes dout through; the mixer branch adds its dx. Returns grads, dx."""
        norm_cache, mixer_cache = cache
        mixer_grads, dxn, _ = mixer_variants.mixer_backward(dout, mixer_cache)
        dx_branch, dnorm = rmsnorm_backward(dxn, norm_cache)
        return {"norm.weight": dnorm, **prefixed(mixer_grads, "mixer.")}, dout + dx_branch

    def param_shapes(cfg):
        return {"norm.weight": (cfg.d_model,), **prefixed(mixer_variants.param_shapes(cfg, selective, gated), "mixer.")}

    def init(cfg, rng):
        return {"norm.weight": np.ones(cfg.d_model),
                **prefixed(mixer_variants.init(cfg, rng, selective, gated), "mixer.")}

    def step(x_t, p, cfg, state):
        """One token. x_t: (b, d_model); state: {"conv", "h"}. Frozen selection has no step
        (a mean over the whole sequence is not causal), so a frozen block's step is None."""
        xn, _ = rmsnorm_forward(x_t, p["norm.weight"])
        m, state = mixer_variants.mixer_step(xn, sub_params(p, "mixer."), state, selective=selective, gated=gated)
        return x_t + m, state

    return Block(forward=forward, backward=backward, param_shapes=param_shapes, init=init,
                 step=None if freeze else step)


@dataclass(kw_only=True)
class MambaNonselectiveConfig(MambaConfig):
    """The Mamba with Δ, B and C input-independent (``--model mamba-nonselective``)."""
    SELECTIVE: ClassVar[bool] = False
    GATED: ClassVar[bool] = True

    @property
    def block(self) -> Block:
        return variant_block(False, True)


@dataclass(kw_only=True)
class MambaNoGateConfig(MambaConfig):
    """The Mamba without the y * silu(z) gate (``--model mamba-nogate``)."""
    SELECTIVE: ClassVar[bool] = True
    GATED: ClassVar[bool] = False

    @property
    def block(self) -> Block:
        return variant_block(True, False)


class FrozenSelection:
    """A Mamba-family config seen with its selection frozen, for evaluation.

    ``backbone.model_forward(params, FrozenSelection(cfg), x)`` runs cfg's model on the same
    parameters, with every block's Δ_t, B_t, C_t replaced by their means over the sequence
    (mixer_variants' ``freeze``). model_backward works too (the freeze has an exact gradient).
    Every other attribute is cfg's. It is not a model config of its own: it cannot be saved
    in a checkpoint, and it has no recurrent step.
    """

    def __init__(self, cfg):
        if not isinstance(cfg, MambaConfig):
            raise ValueError(f"selection can be frozen only in a Mamba config, got {type(cfg).__name__}")
        self.cfg = cfg

    def __getattr__(self, name):
        return getattr(self.cfg, name)

    @property
    def block(self) -> Block:
        return variant_block(*switches(self.cfg), freeze=True)

    def param_shapes(self) -> dict:
        return self.cfg.param_shapes()

    def __repr__(self):
        return f"FrozenSelection({self.cfg!r})"
