"""A GPT-2-style softmax-attention Transformer with hand-written backward.

Paper 1 places Mamba between linear Transformers (kernel-like) and nonlinear, *softmax*
Transformers (near-optimal on single-index models). This is the second comparison model:
the linear-attention Transformer (linear_attention.py) with its attention weights
phi(q).phi(k) replaced by softmax(q.k / sqrt(e)). Everything else is the same:
``read_in -> n_layer blocks -> norm_f -> read_out``, each block
    x = x + attn(rmsnorm(x))          causal softmax attention, n_head heads
    x = x + mlp(rmsnorm(x))           fc1 -> SiLU -> fc2 (linear_attention's mlp, imported)
the same parameter names and shapes, the same initialization (at one seed both start from
identical weights), and so the same MLP width :func:`matched_d_mlp` for the Mamba's count.

Glossary:
    b: batch size      l: sequence length      d_model: residual width
    h = n_head         e = d_head = d_model / n_head        m = d_mlp
    q, k, v: queries, keys, values (b, l, h, e); Q, K, V the same as (b, h, l, e)
    S: attention scores (b, h, l, l)      P: attention weights softmax(S), each row sums to 1
    t indexes the query position, s the key position; the causal mask keeps s <= t.

Causal softmax attention, per head (Vaswani et al. 2017; GPT-2's causal mask):
    S_ts = q_t . k_s / sqrt(e)   for s <= t,   -inf for s > t
    P_t  = softmax(S_t)          o_t = sum_{s <= t} P_ts v_s
Unlike the linear form, exp(q.k) does not factor into phi(q) phi(k), so no running state
carries it forward in time: the l x l matrix is the algorithm, O(l^2 e) per head. At our
prompt lengths (l <= 65) that is a few batched matrix products.

Positions: none ("NoPE"). Nothing is added to the tokens to say where they are, because
  - the paired encoding (icl/prompts.py) puts each example's x and y in one token and the
    query in the last token's own features, so no x has to find its label by position
    (the job positions do in Garg et al.'s interleaved encoding);
  - the in-context task is exchangeable in its examples: the best prediction of y_t is a
    symmetric function of the t - 1 examples before it. A learned position embedding
    would be information the model first has to learn to ignore. Without one, one layer
    of attention is exactly symmetric in the tokens s <= t (permuting them permutes the
    terms of a sum);
  - what the order does carry, how many examples there are, the causal mask already
    gives a deep model (uniform attention over s <= t averages to a 1/t signal; Haviv et
    al. 2022, Kazemnejad et al. 2023 find decoder-only Transformers without positional
    encoding learn positions and extrapolate in length better than with learned ones);
    the paired token's last feature also marks the first token;
  - there is no maximum length: a model trained with the curriculum from N = 8 can be
    evaluated at any N with no rarely-trained embedding rows;
  - the linear-attention Transformer has no positions either, so the two Transformers
    differ only in the attention weighting, and their parameter counts are equal.

Parameters are a flat dict (``layers.0.attn.q_proj.weight``, ...), ``Linear.weight`` in
the PyTorch layout ``(out, in)``; gradients use the same keys.

Backward contract: the attention core, a parameter-free layer, returns the gradients of its
inputs in forward's order, ``(dq, dk, dv)``; attention, block and model return
``(grads, dx)``, the one order issue 19 asks of every level.

Tests: tests/test_softmax_attention.py.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from . import linear_attention as lat
from .checkpoint import register_config
from .layers import linear_backward, linear_forward, rmsnorm_backward, rmsnorm_forward
from .linear_attention import count_params, matched_d_mlp  # noqa: F401  (re-exported: the counts are equal)
from .validate import check_float_array, check_positive_int


@register_config
@dataclass(kw_only=True)
class SoftmaxTFConfig:
    d_model: int      # residual width: the Mamba's it is compared with (32 at icl-train --full)
    n_layer: int      # blocks (attention + MLP each): the Mamba's depth, so both are as deep
    n_head: int = 4   # heads of e = d_model / n_head; 4 as the linear TF, e = 8 at d_model = 32
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
        return param_shapes(self)


def param_shapes(cfg: SoftmaxTFConfig) -> dict:
    """The linear-attention Transformer's parameters, name for name: the softmax has no
    parameters of its own, and with no positional embedding nothing else is added."""
    return lat.LinearTFConfig(**cfg.to_dict()).param_shapes()


def init_params(cfg: SoftmaxTFConfig, rng: np.random.Generator, dtype=np.float32):
    """The linear-attention Transformer's initialization (linear_attention.init_params), the
    same random draws in the same order: U(+-1/sqrt(fan_in)) weights, zero biases, unit norms,
    the two residual writes per block scaled by 1/sqrt(2 n_layer). At one seed the two
    Transformers start from identical weights, so a paired comparison differs only in the
    attention. At init |q.k| / sqrt(e) is about 1/3, so attention starts near uniform.

    Returns:
        dict name -> array of ``dtype``, shapes as :func:`param_shapes`.
    """
    if not isinstance(cfg, SoftmaxTFConfig):
        raise ValueError(f"cfg must be a SoftmaxTFConfig, got {type(cfg).__name__}")
    return lat.init_params(cfg, rng, dtype)


def causal_softmax_attention_forward(q, k, v):
    """Causal scaled dot-product attention, all heads at once.

        S = Q K^T / sqrt(e), -inf above the diagonal        (b, h, l, l)
        P = exp(S - rowmax(S)) / rowsum(...)                 subtracting the max changes nothing
        O = P V                                              but keeps exp from overflowing
    The diagonal is never masked, so every row has a finite max and a sum >= 1.

    Args:
        q, k, v: (b, l, h, e).
    Returns:
        o: (b, l, h, e), cache (Q, K, V, P, scale).
    """
    l, e = q.shape[1], q.shape[3]
    scale = 1.0 / math.sqrt(e)
    Q, K, V = (a.transpose(0, 2, 1, 3) for a in (q, k, v))          # (b, h, l, e) each
    causal = np.tril(np.ones((l, l), dtype=bool))                    # (l, l) s <= t
    S = np.matmul(Q, K.transpose(0, 1, 3, 2)) * scale                # (b, h, l, l)
    S = np.where(causal, S, -np.inf)                                 # masked scores: exp -> 0 exactly
    P = np.exp(S - S.max(axis=-1, keepdims=True))                    # (b, h, l, l), 1 at each row's max
    P /= P.sum(axis=-1, keepdims=True)                               # rows sum to 1
    o = np.matmul(P, V)                                              # (b, h, l, e)
    return o.transpose(0, 2, 1, 3), (Q, K, V, P, scale)


def causal_softmax_attention_backward(do, cache):
    """With O = P V, P = softmax_rows(S), S = Q K^T / sqrt(e) (+ mask):
        dV = P^T dO,   dP = dO V^T
        dS = P * (dP - rowsum(dP * P))     the softmax Jacobian diag(p) - p p^T, row by row;
                                            0 where masked, since P is 0 there
        dQ = dS K / sqrt(e),   dK = dS^T Q / sqrt(e)

    Args:
        do: (b, l, h, e).
    Returns:
        dq, dk, dv: (b, l, h, e).
    """
    Q, K, V, P, scale = cache
    dO = do.transpose(0, 2, 1, 3)                                    # (b, h, l, e)
    dV = np.matmul(P.transpose(0, 1, 3, 2), dO)                      # (b, h, l, e)
    dP = np.matmul(dO, V.transpose(0, 1, 3, 2))                      # (b, h, l, l)
    dS = P * (dP - np.sum(dP * P, axis=-1, keepdims=True))           # (b, h, l, l)
    dQ = np.matmul(dS, K) * scale                                    # (b, h, l, e)
    dK = np.matmul(dS.transpose(0, 1, 3, 2), Q) * scale              # (b, h, l, e)
    return tuple(a.transpose(0, 2, 1, 3) for a in (dQ, dK, dV))


def attention_forward(x, p, n_head):
    """Multi-head causal softmax attention with q, k, v and output projections (no biases,
    as the linear-attention Transformer).

    Args:
        x: (b, l, d_model).  p: dict with q_proj/k_proj/v_proj/out_proj ``.weight``.
    Returns:
        out: (b, l, d_model), cache.
    """
    b, l, dm = x.shape
    e = dm // n_head
    c = {}
    q, c["q"] = linear_forward(x, p["q_proj.weight"])                    # (b, l, d_model)
    k, c["k"] = linear_forward(x, p["k_proj.weight"])
    v, c["v"] = linear_forward(x, p["v_proj.weight"])
    split = (b, l, n_head, e)
    o, c["attn"] = causal_softmax_attention_forward(q.reshape(split), k.reshape(split), v.reshape(split))
    out, c["out"] = linear_forward(o.reshape(b, l, dm), p["out_proj.weight"])   # (b, l, d_model)
    return out, c


def attention_backward(dout, c):
    """The three projections read the same x, so their input gradients add.

    Returns:
        grads keyed like the attention's parameters, dx: (b, l, d_model).
    """
    g = {}
    do, g["out_proj.weight"], _ = linear_backward(dout, c["out"])        # (b, l, d_model)
    b, l, dm = do.shape
    h = c["attn"][0].shape[1]
    dq, dk, dv = causal_softmax_attention_backward(do.reshape(b, l, h, dm // h), c["attn"])
    dxq, g["q_proj.weight"], _ = linear_backward(dq.reshape(b, l, dm), c["q"])
    dxk, g["k_proj.weight"], _ = linear_backward(dk.reshape(b, l, dm), c["k"])
    dxv, g["v_proj.weight"], _ = linear_backward(dv.reshape(b, l, dm), c["v"])
    return g, dxq + dxk + dxv


def _prefixed(grads, prefix):
    return {prefix + k: v for k, v in grads.items()}


def block_forward(x, p, n_head):
    """Pre-norm block: x + attn(norm1(x)), then + mlp(norm2(.)).

    Args:
        x: (b, l, d_model).  p: the block's parameters without the ``layers.{i}.`` prefix.
    Returns:
        out: (b, l, d_model), cache.
    """
    xn, n1 = rmsnorm_forward(x, p["norm1.weight"])                       # (b, l, d_model)
    a, ca = attention_forward(xn, lat._sub(p, "attn."), n_head)
    x = x + a                                                            # new array: the input is kept
    xn2, n2 = rmsnorm_forward(x, p["norm2.weight"])
    m, cm = lat.mlp_forward(xn2, lat._sub(p, "mlp."))
    return x + m, (n1, ca, n2, cm)


def block_backward(dout, cache):
    """Each residual passes the gradient straight through and its branch adds its own.

    Returns:
        grads keyed like the block's parameters, dx: (b, l, d_model).
    """
    n1, ca, n2, cm = cache
    dxn2, gm = lat.mlp_backward(dout, cm)
    dx_mlp, dnorm2 = rmsnorm_backward(dxn2, n2)
    dmid = dout + dx_mlp                                                 # the gradient at x + a
    ga, dxn = attention_backward(dmid, ca)
    dx_attn, dnorm1 = rmsnorm_backward(dxn, n1)
    grads = {"norm1.weight": dnorm1, "norm2.weight": dnorm2, **_prefixed(ga, "attn."), **_prefixed(gm, "mlp.")}
    return grads, dmid + dx_attn


def model_forward(params, cfg, x):
    """Args:
        params: dict from :func:`init_params`.  cfg: SoftmaxTFConfig.
        x: (b, l, d_in), same dtype as the parameters.
    Returns:
        out: (b, l, d_out), cache for :func:`model_backward` (``cache[0]`` is cfg).
    """
    dtype = params["read_in.weight"].dtype
    check_float_array("x", x, ndim=3, dtype=dtype)
    if x.shape[2] != cfg.d_in or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"x must have shape (b >= 1, l >= 1, d_in={cfg.d_in}), got {x.shape}")
    resid, read_in_cache = linear_forward(x, params["read_in.weight"], params["read_in.bias"])  # (b, l, d_model)
    block_caches = []
    for i in range(cfg.n_layer):
        resid, c = block_forward(resid, lat._sub(params, f"layers.{i}."), cfg.n_head)
        block_caches.append(c)
    rn, norm_cache = rmsnorm_forward(resid, params["norm_f.weight"])
    out, read_out_cache = linear_forward(rn, params["read_out.weight"], params["read_out.bias"])  # (b, l, d_out)
    return out, (cfg, read_in_cache, block_caches, norm_cache, read_out_cache)


def model_backward(dout, cache):
    """The forward read in reverse.

    Args:
        dout: (b, l, d_out).
    Returns:
        grads: dict keyed like the parameters, dx: (b, l, d_in).
    """
    cfg, read_in_cache, block_caches, norm_cache, read_out_cache = cache
    grads = {}
    drn, grads["read_out.weight"], grads["read_out.bias"] = linear_backward(dout, read_out_cache)
    dresid, grads["norm_f.weight"] = rmsnorm_backward(drn, norm_cache)
    for i in reversed(range(cfg.n_layer)):
        g, dresid = block_backward(dresid, block_caches[i])
        grads.update(_prefixed(g, f"layers.{i}."))
    dx, grads["read_in.weight"], grads["read_in.bias"] = linear_backward(dresid, read_in_cache)
    return grads, dx
