"""A linear-attention Transformer with hand-written backward: the baseline for the trained Mamba.

``read_in -> n_layer blocks -> norm_f -> read_out``, each block
    x = x + attn(rmsnorm(x))          causal linear attention, n_head heads
    x = x + mlp(rmsnorm(x))           fc1 -> SiLU -> fc2
so it has the Mamba's width (d_model), depth (n_layer), read-in/read-out and norms; the
MLP width ``d_mlp`` is chosen (:func:`matched_d_mlp`) so the parameter counts match.

Glossary:
    b: batch size      l: sequence length      d_model: residual width
    h = n_head         e = d_head = d_model / n_head        m = d_mlp
    q, k, v: queries, keys, values (b, l, h, e)
    phi(x) = elu(x) + 1: a positive feature map (Katharopoulos et al. 2020)

Causal linear attention, per head (Katharopoulos et al. 2020, eq. 6):
    S_t = sum_{s <= t} phi(k_s) v_s^T          (e, e)   a running sum of outer products
    z_t = sum_{s <= t} phi(k_s)                (e,)     the running sum of keys
    o_t = phi(q_t)^T S_t / (phi(q_t)^T z_t + eps)
Softmax attention would weight the values by exp(q.k); replacing it by phi(q).phi(k) lets
the sum over s be carried forward in time, so the cost is linear in l. The pair (S_t, z_t)
is a recurrent state updated with no decay and no gate: the selective scan with A = 0,
delta = 1, B_t = phi(k_t), C_t = phi(q_t) and u_t = (v_t, 1) computes exactly (S_t, z_t)
contracted with phi(q_t) (tests/test_linear_attention.py checks this against the package's
scan). :func:`causal_linear_attention_recurrent` is that loop over time. Training uses the
equivalent parallel form instead, a masked l x l matrix of weights (see
:func:`causal_linear_attention_forward` for why): at our prompt lengths it is a handful of
BLAS calls, while the scan would spend an exp per state element on a decay that is 1 here.

The block around the attention (pre-norm residuals, the MLP, the initialization) is
models/transformer.py's, shared with the softmax-attention Transformer; the stack is the
backbone's (models/backbone.py). Parameters are a flat dict like the Mamba's
(``layers.0.attn.q_proj.weight``, ...), with ``Linear.weight`` in the PyTorch layout ``(out, in)``.
Contract (models/__init__.py): every backward returns ``(grads, dx)``; the parameter-free
attention core returns the gradients of its inputs in forward's order.

Tests: tests/test_models_linear_attention.py (the core), tests/test_models_transformer.py (the model).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .transformer import TransformerConfig, make_attention, make_block, model_functions

EPS = 1e-6  # keeps the normaliser phi(q).z away from 0; phi > 0 so it is positive anyway


@dataclass(kw_only=True)
class LinearTFConfig(TransformerConfig):
    """The Transformer of models/transformer.py with causal linear attention."""

    @property
    def block(self):
        """The block type the backbone stacks."""
        return LINEAR_ATTENTION_BLOCK


def elu1_forward(x):
    """phi(x) = elu(x) + 1 = x + 1 for x > 0, e^x for x <= 0: positive and smooth enough.

    x: any shape -> out: same shape, > 0.
    """
    out = np.where(x > 0, x + 1.0, np.exp(np.minimum(x, 0.0)))
    return out, (x, out)


def elu1_backward(dout, cache):
    """phi'(x) = 1 for x > 0, e^x = phi(x) for x <= 0."""
    x, out = cache
    return dout * np.where(x > 0, 1.0, out)


def causal_linear_attention_recurrent(fq, fk, v, eps=EPS):
    """The recurrent form, a loop over time carrying the state (S_t, z_t): the readable
    specification (and the form for generating one token at a time). Forward only; the
    training path uses the parallel form below, checked against this one in the tests.

    Args:
        fq, fk: (b, l, h, e) phi(q), phi(k).  v: (b, l, h, e).
    Returns:
        o: (b, l, h, e).
    """
    b, l, h, e = v.shape
    S = np.zeros((b, h, e, e), v.dtype)                              # sum phi(k_s) v_s^T so far
    z = np.zeros((b, h, e), v.dtype)                                 # sum phi(k_s) so far
    o = np.empty_like(v)
    for t in range(l):
        S += fk[:, t, :, :, None] * v[:, t, :, None, :]              # no decay, no gate: a running sum
        z += fk[:, t]
        num = np.einsum("bhi,bhij->bhj", fq[:, t], S)                # (b, h, e)
        o[:, t] = num / (np.sum(fq[:, t] * z, axis=-1, keepdims=True) + eps)
    return o


def causal_linear_attention_forward(fq, fk, v, eps=EPS):
    """The parallel form: an l x l matrix of weights phi(q_t).phi(k_s), masked to s <= t.

        W = tril(phi(Q) phi(K)^T)     (b, h, l, l)
        o = (W V) / (W 1 + eps)
    Summing row t of W V over s <= t is the running sum S_t contracted with phi(q_t), so
    this equals the recurrent form. It costs O(l^2 e) per head instead of O(l e^2), but as
    a few batched matrix products it is faster in NumPy at our lengths (l <= 129, e = 16)
    than a loop over time, and np.cumsum along time is slower still (a strided sum).

    Args:
        fq, fk: (b, l, h, e) phi(q), phi(k), positive.  v: (b, l, h, e) values.
    Returns:
        o: (b, l, h, e), cache.
    """
    l = v.shape[1]
    Q, K, V = (a.transpose(0, 2, 1, 3) for a in (fq, fk, v))        # (b, h, l, e) each
    mask = np.tril(np.ones((l, l), v.dtype))                         # (l, l) s <= t
    W = np.matmul(Q, K.transpose(0, 1, 3, 2)) * mask                 # (b, h, l, l)
    num = np.matmul(W, V)                                            # (b, h, l, e)
    den = W.sum(-1, keepdims=True) + eps                             # (b, h, l, 1)
    o = num / den                                                    # (b, h, l, e)
    return o.transpose(0, 2, 1, 3), (Q, K, V, W, num, den, mask)


def causal_linear_attention_backward(do, cache):
    """With o = num / den, num = W V, den = W 1 + eps, W = tril(Q K^T):
        dnum = do / den,   dden = -sum(do * num, over e) / den^2
        dW   = (dnum V^T + dden 1^T) masked to s <= t
        dV   = W^T dnum,   dQ = dW K,   dK = dW^T Q

    Args:
        do: (b, l, h, e).
    Returns:
        dfq, dfk, dv: (b, l, h, e).
    """
    Q, K, V, W, num, den, mask = cache
    dO = do.transpose(0, 2, 1, 3)                                    # (b, h, l, e)
    dnum = dO / den                                                  # (b, h, l, e)
    dden = -np.sum(dO * num, axis=-1, keepdims=True) / den ** 2      # (b, h, l, 1)
    dW = (np.matmul(dnum, V.transpose(0, 1, 3, 2)) + dden) * mask    # (b, h, l, l)
    dV = np.matmul(W.transpose(0, 1, 3, 2), dnum)                    # (b, h, l, e)
    dQ = np.matmul(dW, K)                                            # (b, h, l, e)
    dK = np.matmul(dW.transpose(0, 1, 3, 2), Q)                      # (b, h, l, e)
    return tuple(a.transpose(0, 2, 1, 3) for a in (dQ, dK, dV))


# multi-head attention: the q, k, v, out projections of models/transformer.py around this
# core, with phi on the queries and keys
attention_forward, attention_backward = make_attention(
    causal_linear_attention_forward, causal_linear_attention_backward, elu1_forward, elu1_backward)

LINEAR_ATTENTION_BLOCK = make_block(attention_forward, attention_backward)


# the typed entry points (models/__init__.py's contract); each checks the config is a LinearTFConfig
init_params, model_forward, model_backward = model_functions(LinearTFConfig)
