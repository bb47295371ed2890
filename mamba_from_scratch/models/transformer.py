"""The pre-norm Transformer block both comparison Transformers share, given an attention.

    x = x + attn(rmsnorm(x))          causal attention, n_head heads (linear or softmax)
    x = x + mlp(rmsnorm(x))           fc1 -> SiLU -> fc2
On the backbone (models/backbone.py) this has the Mamba's width (d_model), depth (n_layer),
read-in/read-out and norms; the MLP width ``d_mlp`` is chosen (:func:`matched_d_mlp`) so the
parameter counts match. The two attentions have the same parameters (q, k, v and output
projections, no biases), so the linear- and softmax-attention Transformers have the same
names, shapes and initialization: at one seed they start from identical weights.

Glossary: b batch size, l sequence length, d_model residual width, h = n_head,
e = d_head = d_model / n_head, m = d_mlp.

Contract, at every level (models/__init__.py): ``*_forward(x, p, ...) -> (out, cache)``,
``*_backward(dout, cache) -> (grads, dx)``. Parameters of a block: ``norm1.weight``,
``attn.{q,k,v,out}_proj.weight``, ``norm2.weight``, ``mlp.fc1.*``, ``mlp.fc2.*``.

Tests: tests/test_models_transformer.py (both Transformers), tests/test_models_linear_attention.py and
tests/test_models_softmax_attention.py (each attention core).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from ..layers import linear_backward, linear_forward, rmsnorm_backward, rmsnorm_forward, silu_backward, silu_forward
from ..params import count_params, prefixed, sub_params
from ..validate import check_positive_int
from . import backbone
from .backbone import Block


@dataclass(kw_only=True)
class TransformerConfig:
    """The fields of both Transformers' configs (LinearTFConfig, SoftmaxTFConfig); a config
    class of its own per attention says which block the backbone stacks."""
    d_model: int      # residual width: the Mamba's it is compared with (32 at icl-train --full)
    n_layer: int      # blocks (attention + MLP each): the Mamba's depth, so both are as deep
    n_head: int = 4   # heads of size d_model / n_head; 4 heads of 16 at d_model = 64
    d_mlp: int        # MLP hidden width: matched_d_mlp() sets it so the counts match the Mamba's
    d_in: int         # features per input token: 2 d + 2 in the paired encoding
    d_out: int        # outputs per position: 1, the prediction of y_t

    def __post_init__(self):
        for name in ("d_model", "n_layer", "n_head", "d_mlp", "d_in", "d_out"):
            check_positive_int(name, getattr(self, name))
        if self.d_model % self.n_head:
            raise ValueError(f"n_head must divide d_model, got d_model={self.d_model}, n_head={self.n_head}")

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_head

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def param_shapes(self) -> dict:
        """Every parameter's name and shape (Linear weights are (out, in))."""
        return backbone.param_shapes(self)


def matched_d_mlp(mamba_cfg) -> int:
    """The MLP width that makes a Transformer of the Mamba's d_model, n_layer, d_in and d_out
    have (as nearly as an integer allows) the Mamba's parameter count.

    Per block the transformer has 4 d_model^2 (q, k, v, out) + 2 d_model (norms) + d_model
    (fc2 bias) + m (2 d_model + 1) (fc1, fc2, fc1 bias), so m is one division away.
    """
    dm = mamba_cfg.d_model
    outside = dm * (mamba_cfg.d_in + 1) + dm + mamba_cfg.d_out * (dm + 1)   # read_in, norm_f, read_out
    per_block = (count_params(mamba_cfg) - outside) / mamba_cfg.n_layer    # a Mamba block's count
    m = (per_block - 4 * dm * dm - 3 * dm) / (2 * dm + 1)
    return max(1, round(m))


def block_param_shapes(cfg) -> dict:
    """One block's parameters (without ``layers.{i}.``); Linear weights are (out, in)."""
    dm, m = cfg.d_model, cfg.d_mlp
    return {"norm1.weight": (dm,),
            "attn.q_proj.weight": (dm, dm),
            "attn.k_proj.weight": (dm, dm),
            "attn.v_proj.weight": (dm, dm),
            "attn.out_proj.weight": (dm, dm),
            "norm2.weight": (dm,),
            "mlp.fc1.weight": (m, dm),
            "mlp.fc1.bias": (m,),
            "mlp.fc2.weight": (dm, m),
            "mlp.fc2.bias": (dm,)}


def block_init(cfg, rng):
    """GPT-2 style initialization, with the Mamba's conventions where they overlap.

    - Linear weights: PyTorch's default U(+-1/sqrt(fan_in)); biases 0; norm weights 1.
    - attn.out_proj and mlp.fc2 (the two writes into the residual stream per block) are
      rescaled by 1/sqrt(2 n_layer), so the residual stream's variance does not grow with
      depth -- the same trick as the Mamba's out_proj (which has one write per block).
    """
    def uniform(shape, fan_in):
        return rng.uniform(-fan_in ** -0.5, fan_in ** -0.5, size=shape)

    dm, m = cfg.d_model, cfg.d_mlp
    res_scale = 1.0 / math.sqrt(2 * cfg.n_layer)
    return {"norm1.weight": np.ones(dm),
            "attn.q_proj.weight": uniform((dm, dm), dm),
            "attn.k_proj.weight": uniform((dm, dm), dm),
            "attn.v_proj.weight": uniform((dm, dm), dm),
            "attn.out_proj.weight": uniform((dm, dm), dm) * res_scale,
            "norm2.weight": np.ones(dm),
            "mlp.fc1.weight": uniform((m, dm), dm),
            "mlp.fc1.bias": np.zeros(m),
            "mlp.fc2.weight": uniform((dm, m), m) * res_scale,
            "mlp.fc2.bias": np.zeros(dm)}


def mlp_forward(x, p):
    """fc2(silu(fc1(x))).  x: (b, l, d_model) -> out: (b, l, d_model), cache."""
    a, c1 = linear_forward(x, p["fc1.weight"], p["fc1.bias"])          # (b, l, m)
    s, cs = silu_forward(a)                                            # (b, l, m)
    out, c2 = linear_forward(s, p["fc2.weight"], p["fc2.bias"])        # (b, l, d_model)
    return out, (c1, cs, c2)


def mlp_backward(dout, cache):
    """Returns grads keyed like the MLP's parameters, dx: (b, l, d_model)."""
    c1, cs, c2 = cache
    g = {}
    ds, g["fc2.weight"], g["fc2.bias"] = linear_backward(dout, c2)
    dx, g["fc1.weight"], g["fc1.bias"] = linear_backward(silu_backward(ds, cs), c1)
    return g, dx


def make_attention(core_forward, core_backward, feature_forward=None, feature_backward=None):
    """Multi-head attention with q, k, v and output projections (no biases) around a
    parameter-free causal attention core, optionally with a feature map on q and k.

        q, k, v = x Wq^T, x Wk^T, x Wv^T               (b, l, d_model), split into h heads of e
        q, k    = phi(q), phi(k)                       only if a feature map is given
        o       = core(q, k, v)                        (b, l, h, e)
        out     = o Wo^T                               (b, l, d_model)

    The two Transformers differ only in the core (softmax(q.k / sqrt(e)) or phi(q).phi(k)
    with phi = elu + 1), so this wrapper is written once.

    Args:
        core_forward(q, k, v) -> (o, cache) and core_backward(do, cache) -> (dq, dk, dv),
            all (b, l, h, e); the core's cache starts with Q (b, h, l, e).
        feature_forward(x) -> (phi, cache), feature_backward(dphi, cache) -> dx: elementwise.
    Returns:
        attention_forward(x, p, n_head) -> (out, cache),
        attention_backward(dout, cache) -> (grads keyed like the attention's parameters, dx).
    """
    if (feature_forward is None) != (feature_backward is None):
        raise ValueError("feature_forward and feature_backward must be given together")

    def attention_forward(x, p, n_head):
        """x: (b, l, d_model).  p: q_proj/k_proj/v_proj/out_proj ``.weight``.
        Returns out: (b, l, d_model), cache."""
        b, l, dm = x.shape
        split = (b, l, n_head, dm // n_head)
        c = {}
        q, c["q"] = linear_forward(x, p["q_proj.weight"])                    # (b, l, d_model)
        k, c["k"] = linear_forward(x, p["k_proj.weight"])
        v, c["v"] = linear_forward(x, p["v_proj.weight"])
        q, k = q.reshape(split), k.reshape(split)                           # (b, l, h, e)
        if feature_forward is not None:
            q, c["phi_q"] = feature_forward(q)
            k, c["phi_k"] = feature_forward(k)
        o, c["attn"] = core_forward(q, k, v.reshape(split))                 # (b, l, h, e)
        out, c["out"] = linear_forward(o.reshape(b, l, dm), p["out_proj.weight"])   # (b, l, d_model)
        return out, c

    def attention_backward(dout, c):
        """The three projections read the same x, so their input gradients add.
        Returns grads keyed like the attention's parameters, dx: (b, l, d_model)."""
        g = {}
        do, g["out_proj.weight"], _ = linear_backward(dout, c["out"])        # (b, l, d_model)
        b, l, dm = do.shape
        h = c["attn"][0].shape[1]                                           # Q is (b, h, l, e)
        dq, dk, dv = core_backward(do.reshape(b, l, h, dm // h), c["attn"])
        if feature_backward is not None:
            dq = feature_backward(dq, c["phi_q"])
            dk = feature_backward(dk, c["phi_k"])
        dxq, g["q_proj.weight"], _ = linear_backward(dq.reshape(b, l, dm), c["q"])
        dxk, g["k_proj.weight"], _ = linear_backward(dk.reshape(b, l, dm), c["k"])
        dxv, g["v_proj.weight"], _ = linear_backward(dv.reshape(b, l, dm), c["v"])
        return g, dxq + dxk + dxv

    return attention_forward, attention_backward


def make_block(attention_forward, attention_backward) -> Block:
    """The pre-norm block around an attention with ``attention_forward(x, p, n_head) ->
    (out, cache)`` and ``attention_backward(dout, cache) -> (grads, dx)``."""

    def block_forward(x, p, cfg, state=None, backend=None, check=True):
        """x + attn(norm1(x)), then + mlp(norm2(.)).

        Args:
            x: (b, l, d_model).  p: the block's parameters without the ``layers.{i}.`` prefix.
            state, backend, check: unused (no recurrent state, no scan; the Block contract).
        Returns:
            out: (b, l, d_model), None (no state), cache.
        """
        xn, n1 = rmsnorm_forward(x, p["norm1.weight"])                   # (b, l, d_model)
        a, ca = attention_forward(xn, sub_params(p, "attn."), cfg.n_head)
        x = x + a                                                        # new array: the input is kept
        xn2, n2 = rmsnorm_forward(x, p["norm2.weight"])
        m, cm = mlp_forward(xn2, sub_params(p, "mlp."))
        return x + m, None, (n1, ca, n2, cm)

    def block_backward(dout, cache):
        """Each residual passes the gradient straight through and its branch adds its own.

        Returns:
            grads keyed like the block's parameters, dx: (b, l, d_model).
        """
        n1, ca, n2, cm = cache
        gm, dxn2 = mlp_backward(dout, cm)
        dx_mlp, dnorm2 = rmsnorm_backward(dxn2, n2)
        dmid = dout + dx_mlp                                             # the gradient at x + a
        ga, dxn = attention_backward(dmid, ca)
        dx_attn, dnorm1 = rmsnorm_backward(dxn, n1)
        grads = {"norm1.weight": dnorm1, "norm2.weight": dnorm2, **prefixed(ga, "attn."), **prefixed(gm, "mlp.")}
        return grads, dmid + dx_attn

    return Block(forward=block_forward, backward=block_backward, param_shapes=block_param_shapes, init=block_init)


def model_functions(config_class):
    """A Transformer's typed entry points: the backbone's ``init_params``, ``model_forward``
    and ``model_backward`` after a check that the config (or the cache's) is a ``config_class``.
    Both Transformers are the backbone over this module's block; only the class differs.

    Returns:
        init_params(cfg, rng, dtype), model_forward(params, cfg, x, backend=None),
        model_backward(dout, cache).
    """
    name = config_class.__name__

    def init_params(cfg, rng: np.random.Generator, dtype=np.float32):
        """:func:`block_init` on the backbone: U(+-1/sqrt(fan_in)) weights, zero biases, unit
        norms, the two residual writes per block scaled by 1/sqrt(2 n_layer); the same random
        draws in the same order for both Transformers.

        Returns:
            dict name -> array of ``dtype``.
        """
        if not isinstance(cfg, config_class):
            raise ValueError(f"cfg must be a {name}, got {type(cfg).__name__}")
        return backbone.init_params(cfg, rng, dtype)

    def model_forward(params, cfg, x, backend=None):
        """:func:`backbone.model_forward`: x (b, l, d_in) -> out (b, l, d_out), cache.
        ``backend`` is unused (no scan); it is there so every model has one signature."""
        if not isinstance(cfg, config_class):
            raise ValueError(f"cfg must be a {name}, got {type(cfg).__name__}")
        return backbone.model_forward(params, cfg, x)

    def model_backward(dout, cache):
        """:func:`backbone.model_backward`: returns grads (keyed like the parameters), dx (b, l, d_in)."""
        if not (isinstance(cache, tuple) and len(cache) == 5 and isinstance(cache[0], config_class)):
            raise ValueError("cache must be the cache returned by model_forward")
        return backbone.model_backward(dout, cache)

    return init_params, model_forward, model_backward
