"""The gates of the in-context-learning models, and the S6 scan that computes the product gate.

Shared by paper 1's one-layer model (``gated.py``) and paper 3's outliers model
(``outliers/model.py``); tested in ``tests/test_gates.py``.

Glossary:
    b, L    prompts, tokens per prompt (the last token is the query)
    n       size of the scan's state (one channel)
    v       gate pre-activation of each token, (b, L)
    s       gate step s_i = sigmoid(v_i), (b, L)
    G       weight token i keeps at the last token, (b, L)
    z       the vector token i writes into the state, (b, L, n)
    h       the scan's state; h_L = sum_i G_i z_i

The product gate, G_i = s_i prod_{j>i} (1 - s_j), is what the selective scan (S6) computes
with one channel, A = -1 and delta_i = softplus(v_i): the decay exp(delta_i A) =
1 / (1 + e^{v_i}) = 1 - s_i, so
    h_i = (1 - s_i) h_{i-1} + s_i z_i    unrolls to    h_L = sum_i G_i z_i.
Exact ZOH through Euler: the official kernel discretises B by Euler (it adds delta_i B_i u_i);
feeding B_i = z_i and u_i = s_i / delta_i turns that into the exact-ZOH input
(1 - e^{-delta_i}) z_i = s_i z_i. (:func:`product_gate_scan_forward`; its backward carries the scan's
(du, ddelta) back to dv through u = s / delta and delta = softplus(v).)

The normalized gate, G_i = s_i / sum_j s_j, about softmax(v): the product gate's weights
without the erasure of earlier tokens by one large step.
"""
from __future__ import annotations

import numpy as np

from ..layers.activations import sigmoid, softplus_forward
from ..scan import selective_scan_backward, selective_scan_forward

# softplus(v) > 0 mathematically; this floor keeps delta so in floating point for v << 0
# (u = s / delta would otherwise be 0 / 0).
DELTA_FLOOR = 1e-300


def softplus(v):
    """log(1 + e^v), without the backward's cache (layers.activations.softplus_forward)."""
    return softplus_forward(v)[0]


def product_gate(v, tail=0.0):
    """The product gate in closed form, no loop over time.

    ``log G_i = log s_i + sum_{j>i} log(1 - s_j) + tail`` with ``log(1 - s_j) = -softplus(v_j)``:
    a reversed exclusive cumulative sum.

    Args:
        v: (b, L) gate pre-activations.
        tail: log of a common factor from tokens after the last one given (the one-layer
            model's query, whose keep factor is 1 - sigmoid(b)); 0 when v covers every token.
    Returns:
        G: (b, L) gate weights.  s: (b, L) steps sigmoid(v).
    """
    s = sigmoid(v)                                                      # (b, L)
    log_keep = -softplus(v)                                             # (b, L) log(1 - s)
    after = np.cumsum(log_keep[:, ::-1], axis=1)[:, ::-1] - log_keep    # (b, L) sum_{j>i} log(1 - s_j)
    return s * np.exp(after + tail), s


def normalized_gate(v):
    """G_i = s_i / sum_j s_j per row of v (b, L), with log-sigmoid shifted by its max so a large
    v cannot overflow. Returns G: (b, L)."""
    log_s = -np.logaddexp(0.0, -v)                                      # (b, L) log sigmoid(v)
    w = np.exp(log_s - log_s.max(axis=1, keepdims=True))
    return w / w.sum(axis=1, keepdims=True)


def product_gate_scan_forward(v, z, C=None, backend="numpy"):
    """The product-gated sum run through the package's selective scan (one channel, A = -1).

    Args:
        v: (b, L) gate pre-activations.  z: (b, L, n) the vector each token writes.
        C: (b, L, n) the scan's readout at each step, or None (zeros).
        backend: selective scan backend.
    Returns:
        y: (b, L) the scan's outputs <C_i, h_i>.  h: (b, n) final state sum_i G_i z_i.
        cache for :func:`product_gate_scan_backward`.
    """
    delta, s = softplus_forward(v)                                      # (b, L), s = sigmoid(v)
    delta = np.maximum(delta, DELTA_FLOOR)[..., None]                   # (b, L, 1) one channel
    u = s[..., None] / delta                                            # (b, L, 1) Euler-B times u = exact ZOH
    A = -np.ones((1, z.shape[2]))                                       # (d_inner=1, n)
    if C is None:
        C = np.zeros_like(z)
    y, h_last, scan_cache = selective_scan_forward(u, delta, A, z, C, backend=backend)
    return y[..., 0], h_last[:, 0, :], (s, delta[..., 0], scan_cache)


def product_gate_scan_backward(dy, cache, dh=None):
    """Gradients of :func:`product_gate_scan_forward` with respect to v, z and C.

    The scan's adjoint gives du, ddelta, dB = dz and dC; then, with u = s / delta,
    ds/dv = s (1 - s) and ddelta/dv = s:
        du/dv = (s (1 - s) delta - s^2) / delta^2,    dv = du du/dv + ddelta s.
    Args:
        dy: (b, L) gradient of the outputs.  dh: (b, n) gradient of the final state, or None.
    Returns:
        dv: (b, L), dz: (b, L, n), dC: (b, L, n).
    """
    s, delta, scan_cache = cache
    dh_last = None if dh is None else dh[:, None, :]
    du, ddelta, _, dz, dC, _, _ = selective_scan_backward(dy[..., None], scan_cache, dh_last)
    du_dv = s * ((1.0 - s) * delta - s) / delta**2                      # (b, L)
    dv = du[..., 0] * du_dv + ddelta[..., 0] * s                        # (b, L)
    return dv, dz, dC
