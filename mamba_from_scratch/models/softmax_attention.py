"""A GPT-2-style softmax-attention Transformer with hand-written backward.

Paper 1 places Mamba between linear Transformers (kernel-like) and nonlinear, *softmax*
Transformers (near-optimal on single-index models). This is the second comparison model:
the linear-attention Transformer (linear_attention.py) with its attention weights
phi(q).phi(k) replaced by softmax(q.k / sqrt(e)). Everything else is the same:
``read_in -> n_layer blocks -> norm_f -> read_out``, each block
    x = x + attn(rmsnorm(x))          causal softmax attention, n_head heads
    x = x + mlp(rmsnorm(x))           fc1 -> SiLU -> fc2
is models/transformer.py's block, shared with the linear-attention Transformer: the same
parameter names and shapes, the same initialization (at one seed both start from identical
weights), and so the same MLP width ``transformer.matched_d_mlp`` for the Mamba's count. The
stack is the backbone's (models/backbone.py). The config class, SoftmaxTFConfig, is what
selects this attention: its ``block`` is this module's, so a checkpoint of it loads as a
softmax Transformer even though its parameters are named as the linear one's.

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

Backward contract (models/__init__.py): the attention core, a parameter-free layer, returns
the gradients of its inputs in forward's order, ``(dq, dk, dv)``; attention, block and
model return ``(grads, dx)``, the one order of every level.

Tests: tests/test_models_softmax_attention.py (the core), tests/test_models_transformer.py (the model).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .transformer import TransformerConfig, make_attention, make_block, model_functions


@dataclass(kw_only=True)
class SoftmaxTFConfig(TransformerConfig):
    """The Transformer of models/transformer.py with causal softmax attention; no positional
    encoding, so its parameters are the linear-attention Transformer's, name for name."""

    @property
    def block(self):
        """The block type the backbone stacks."""
        return SOFTMAX_ATTENTION_BLOCK


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


# multi-head attention: the q, k, v, out projections of models/transformer.py around this
# core (no biases, no feature map)
attention_forward, attention_backward = make_attention(causal_softmax_attention_forward,
                                                       causal_softmax_attention_backward)

SOFTMAX_ATTENTION_BLOCK = make_block(attention_forward, attention_backward)


# the typed entry points (models/__init__.py's contract); each checks the config is a
# SoftmaxTFConfig. The initialization is the linear-attention Transformer's, so at one seed the
# two start from identical weights and a paired comparison differs only in the attention. At
# init |q.k| / sqrt(e) is about 1/3, so attention starts near uniform.
init_params, model_forward, model_backward = model_functions(SoftmaxTFConfig)
