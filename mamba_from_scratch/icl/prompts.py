"""Prompts as token sequences for a causal sequence model, so that one forward pass over a
prompt of examples (x_1, y_1), ..., (x_T, y_T) predicts every y_t from the t - 1 examples
before it (Garg et al. 2022): a prompt of N context examples plus a query trains on N + 1
predictions at once, one per prefix length 0..N.
Tested in tests/test_icl_train.py.

Glossary:
    P        prompts in a batch        T   examples per prompt (context and query, in order)
    d        input dimension           L   tokens per prompt      d_in  features per token

Two encodings:

``"paired"`` (the default): one token per example, T tokens,
    token_t = (x_t, x_{t-1}, y_{t-1}, 1)      and token_1 = (x_1, 0, 0, 0)
Token t carries the query x_t and the previous example's complete pair. The output at token
t predicts y_t; causality keeps y_t out of its view (y_t first appears in token t + 1).
Why not Garg's interleaving: it needs two tokens per example, so every step costs twice as
much for the same number of predictions, and it puts x_j and y_j in different tokens, so
a model must find out from positions which x a label belongs to. A linear-attention
Transformer has no position information (no positional encoding, no convolution) and could
not pair them at all; with the pair in one token, attention's key and value come from one
token, as in the theory (SPEC section 3). The last entry, 1 once a previous pair exists,
marks the first token, the one prediction that has no example to learn from.

``"interleaved"`` (Garg et al.'s): 2 T - 1 tokens, x-tokens and y-tokens alternating,
    (x_1, 0, 1), (0, y_1, 0), (x_2, 0, 1), (0, y_2, 0), ..., (x_T, 0, 1)
with the predictions read at the x-tokens. Offered for comparison.
"""
from __future__ import annotations

import numpy as np

from ..validate import check_choice, check_float_array

ENCODINGS = ("paired", "interleaved")


def token_dim(d, encoding="paired"):
    """Features per token: 2 d + 2 (paired) or d + 2 (interleaved)."""
    check_choice("encoding", encoding, ENCODINGS)
    return 2 * d + 2 if encoding == "paired" else d + 2


def encode(x, y, encoding="paired", dtype=np.float32):
    """Turn examples into tokens.

    Args:
        x: (P, T, d) inputs, context first and the query (if any) last.
        y: (P, T) or (P, T - 1) labels; the last example's label is never shown to the
            model (it is what the last position predicts), so it may be left out.
        encoding: "paired" or "interleaved".
    Returns:
        tokens: (P, L, d_in) with L = T (paired) or 2 T - 1 (interleaved).
    """
    check_choice("encoding", encoding, ENCODINGS)
    check_float_array("x", x, ndim=3)
    P, T, d = x.shape
    check_float_array("y", y, ndim=2)
    if y.shape[0] != P or y.shape[1] not in (T, T - 1):
        raise ValueError(f"y must have shape (P={P}, T={T}) or (P, T-1={T - 1}) to match x, got {y.shape}")
    shown = y[:, :T - 1]                                             # (P, T - 1) labels the model sees
    if encoding == "paired":
        tokens = np.zeros((P, T, 2 * d + 2), dtype)
        tokens[:, :, :d] = x                                         # the query of each token
        tokens[:, 1:, d:2 * d] = x[:, :-1]                           # the previous example's x ...
        tokens[:, 1:, 2 * d] = shown                                 # ... and its label
        tokens[:, 1:, 2 * d + 1] = 1.0
        return tokens
    tokens = np.zeros((P, 2 * T - 1, d + 2), dtype)
    tokens[:, 0::2, :d] = x                                          # x-tokens at even positions
    tokens[:, 0::2, d + 1] = 1.0
    tokens[:, 1::2, d] = shown                                       # y-tokens at odd positions
    return tokens


def prediction_positions(T, encoding="paired"):
    """The token positions whose outputs predict y_1..y_T: (T,) integers."""
    check_choice("encoding", encoding, ENCODINGS)
    return np.arange(T) if encoding == "paired" else 2 * np.arange(T)


def decode(out, T, encoding="paired"):
    """The predictions of y_1..y_T from a model's output.

    Args:
        out: (P, L, 1) model output over the tokens of :func:`encode`.
    Returns:
        (P, T) predictions; column t used the t examples before it.
    """
    return out[:, prediction_positions(T, encoding), 0]


def scatter_grad(dpred, L, encoding="paired"):
    """The adjoint of :func:`decode`: place dL/dpred (P, T) into a (P, L, 1) gradient of the
    model output, zero at the positions that predict nothing (the y-tokens)."""
    P, T = dpred.shape
    dout = np.zeros((P, L, 1), dpred.dtype)
    dout[:, prediction_positions(T, encoding), 0] = dpred
    return dout


def training_examples(prompts):
    """Context and query of sampled prompts (see ``task.Prompts``) as one example sequence.

    Uses the first query only: (x_1..x_N, x_query) and (y_1..y_N, y_query), noisy labels.
    Returns:
        x: (P, N + 1, d), y: (P, N + 1).
    """
    x = np.concatenate([prompts.x_context, prompts.x_query[:, :1]], axis=1)
    y = np.concatenate([prompts.y_context, prompts.y_query[:, :1]], axis=1)
    return x, y


def query_examples(prompts, n):
    """Every (prompt, query) pair as its own sequence: the first n context examples, then
    the query. Queries share their prompt's context (and beta).

    Returns:
        x: (P * Q, n + 1, d), y: (P * Q, n) context labels, in prompt-major order.
    """
    P, Q, d = prompts.x_query.shape
    xc = np.repeat(prompts.x_context[:, :n], Q, axis=0)              # (P Q, n, d)
    yc = np.repeat(prompts.y_context[:, :n], Q, axis=0)              # (P Q, n)
    xq = prompts.x_query.reshape(P * Q, 1, d)                        # (P Q, 1, d)
    return np.concatenate([xc, xq], axis=1), yc
