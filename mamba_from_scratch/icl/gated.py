"""Paper 1's one-layer gated Mamba, in our construction of it (SPEC section 3).
Tested in tests/test_icl_gated.py.

Glossary:
    P, N, Q     prompts, context examples per prompt, queries per prompt
    d, n_feat   input dimension, number of features n_feat = feature_dim(d) = dim phi
    phi(x)      normalised Hermite features of degree <= 2 (features.py), (n_feat,)
    s_j         gate of token j: sigmoid(y_j / rho + b),  b = b0 - log N
    G_j         the weight token j keeps at the query (the gated attention score)
    h           the context statistic sum_j G_j y_j phi(x_j), (P, n_feat): the scan's final state
    gamma       diagonal of W_B^T W_C restricted to phi (the trainable part), (n_feat,)
    out         Mamba(Z) = h^T (gamma * phi(x_query)), the scalar fed to the MLP, (P, Q)
    a, v, c     the ReLU MLP f = sum_k a_k relu(v_k * out_n + c_k), width W
    shift, scale   fixed normalisation out_n = (out - shift) / scale, estimated on
                   pretraining prompts so the MLP sees an O(1) input at every N

Why a gate helps: with G_j = 1/N (linear attention) h estimates E[y phi(x)], the degree <= 2
Hermite coefficients of g(<beta, x>), which vanish for He3 and He4 (information exponent > 2).
A gate that depends on y_j multiplies y_j by a nonlinear function of itself; the transformed
label T(y) = G(y) y has nonzero degree-1 or degree-2 coefficients (generative exponent <= 2),
so h points towards beta (or beta beta^T) and the query's readout recovers <beta, x>.

Gates (``gate=``):
    "product"     G_j = s_j prod_{k=j+1}^{N+1} (1 - s_k): exactly what S6 computes with
                  A = -1, delta_l = softplus(y_l / rho + b) and exact ZOH for B, because
                  exp(-softplus(v)) = 1 - sigmoid(v). Computed by the package's scan.
    "normalized"  G_j = s_j / sum_k s_k, about softmax(y / rho): the product gate's weights
                  without the erasure of earlier tokens by one large |y|.
    "two_channel" (G_j(+y) + G_j(-y)) / 2 with normalized gates w = +1/rho and -1/rho sharing
                  gamma: T(y) becomes y cosh(y / rho) / Z, odd, so the useless even part of
                  the label transform is removed for odd links.
    "none"        G_j = 1/N: linear attention.
Where this departs from paper 1: the normalized and two-channel gates are our additions (the
exact product gate fails on heavy-tailed labels, see the docs); the gate (rho, b0) is fixed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..validate import check_choice, check_float_array, check_positive_float
from .features import feature_dim, hermite_features, weighted_feature_sum
from .gates import normalized_gate, product_gate, product_gate_scan_forward, softplus

GATES = ("product", "normalized", "two_channel", "none")


def gate_bias(b0, N):
    """b = b0 - log N: each s_j is about e^{b0} / N, so the total weight the gate keeps,
    sum_j G_j, stays O(1) as N grows instead of drifting to 0 or 1."""
    return b0 - math.log(N)


def gate_weights(y_context, gate, rho=0.25, b0=0.0):
    """The attention weights G (P, N) in closed form.

    For "product" this is the formula the scan implements (used to check the scan),
    :func:`gates.product_gate`. The query token has y = 0, so its own factor is 1 - sigmoid(b).

    Args:
        y_context: (P, N) labels.  gate: one of GATES.  rho > 0, b0: the fixed gate.
    Returns:
        G: (P, N).
    """
    check_choice("gate", gate, GATES)
    check_float_array("y_context", y_context, ndim=2)
    rho = check_positive_float("rho", rho)
    P, N = y_context.shape
    b = gate_bias(b0, N)
    if gate == "none":
        return np.full((P, N), 1.0 / N)
    if gate == "product":
        query_keep = -softplus(np.array(b, dtype=float))                     # log(1 - sigmoid(b))
        return product_gate(y_context / rho + b, tail=query_keep)[0]         # (P, N)
    if gate == "normalized":
        return normalized_gate(y_context / rho + b)
    return 0.5 * (normalized_gate(y_context / rho + b) + normalized_gate(-y_context / rho + b))


def product_gate_scan(x_context, y_context, rho=0.25, b0=0.0, c_query=None, backend="numpy",
                      max_bytes=1 << 26):
    """The product-gated statistic run as a selective scan: one channel, state h in R^n_feat.

    Tokens l = 1..N are the context, token N+1 the query (label 0). Through
    :func:`gates.product_gate_scan_forward` with gate pre-activation v_l = y_l / rho + b and
    z_l = y_l phi(x_l) (0 at the query), C_{N+1} = c_query: delta_l = softplus(v_l), A = -1,
    B_l = z_l, u_l = s_l / delta_l (exact ZOH through Euler), so the scan adds s_l z_l and
    decays h by e^{-delta_l} = 1 - s_l:
        h_{N+1} = sum_j s_j prod_{k=j+1}^{N+1} (1 - s_k) y_j phi(x_j).
    The numpy reference stores every state, so prompts go through in chunks of at most
    ``max_bytes`` of states.

    Args:
        x_context: (P, N, d).  y_context: (P, N).  rho, b0: the gate.
        c_query: (P, n_feat) the query's C (e.g. gamma * phi(x_query)), or None (zeros).
        backend: the scan backend.
    Returns:
        h: (P, n_feat) final state.  y_query: (P,) the scan's output at the query, <C_{N+1}, h>.
    """
    check_float_array("x_context", x_context, ndim=3)
    P, N, d = x_context.shape
    check_float_array("y_context", y_context, shape=(P, N))
    rho = check_positive_float("rho", rho)
    b = gate_bias(b0, N)
    n_feat = feature_dim(d)                                                  # the state size, dim phi
    if c_query is not None:
        check_float_array("c_query", c_query, shape=(P, n_feat))
    chunk = max(1, int(max_bytes // (8 * (N + 1) * n_feat)))
    h = np.empty((P, n_feat))
    y_out = np.empty(P)
    for lo in range(0, P, chunk):
        sl = slice(lo, min(P, lo + chunk))
        p = sl.stop - sl.start
        y_all = np.concatenate([y_context[sl], np.zeros((p, 1))], axis=1)  # (p, N+1) the query's label is 0
        z = np.zeros((p, N + 1, n_feat))
        z[:, :N] = y_context[sl, :, None] * hermite_features(x_context[sl])  # (p, N+1, n_feat)
        C = np.zeros((p, N + 1, n_feat))
        if c_query is not None:
            C[:, N] = c_query[sl]
        y_scan, h[sl], _ = product_gate_scan_forward(y_all / rho + b, z, C, backend=backend)
        y_out[sl] = y_scan[:, N]
    return h, y_out


def context_statistic(x_context, y_context, gate, rho=0.25, b0=0.0, backend="numpy"):
    """h = sum_j G_j y_j phi(x_j) for every prompt, (P, n_feat).

    "product" runs the selective scan; the others are a weighted sum (BLAS matrix products).
    """
    check_choice("gate", gate, GATES)
    if gate == "product":
        return product_gate_scan(x_context, y_context, rho, b0, backend=backend)[0]
    G = gate_weights(y_context, gate, rho, b0)                               # (P, N)
    return weighted_feature_sum(x_context, G * y_context)


def context_statistics(x_context, y_context, gates, rho=0.25, b0=0.0, backend="numpy", product="scan"):
    """h for several gates on the same prompts: {gate: (P, n_feat)}. The closed-form gates share
    one pass over the data (weighted_feature_sum with G weightings).

    ``product="scan"`` runs the product gate through the package's selective scan (the exact
    S6 computation); ``product="closed"`` uses its closed-form weights :func:`gate_weights`
    instead, the same numbers to rounding (tested) at a fraction of the cost, for sweeps.
    """
    for gate in gates:
        check_choice("gate", gate, GATES)
    check_choice("product", product, ("scan", "closed"))
    out = {}
    closed = [g for g in gates if g != "product" or product == "closed"]
    if closed:
        W = np.stack([gate_weights(y_context, g, rho, b0) * y_context for g in closed])  # (G, P, N)
        out.update(zip(closed, weighted_feature_sum(x_context, W)))
    if "product" in gates and product == "scan":
        out["product"] = product_gate_scan(x_context, y_context, rho, b0, backend=backend)[0]
    return {g: out[g] for g in gates}


def readout_forward(h, phi_q, gamma):
    """out = h^T (gamma * phi(x_query)) for every query.

    Args:
        h: (P, n_feat) context statistic.  phi_q: (P, Q, n_feat) query features.  gamma: (n_feat,).
    Returns:
        out: (P, Q), cache.
    """
    out = np.einsum("pd,pqd->pq", h * gamma, phi_q)                          # (P, Q)
    return out, (h, phi_q, gamma)


def readout_backward(dout, cache):
    """Gradients of :func:`readout_forward` (phi_q is data and gets none).

        dh_p = sum_q dout_pq gamma * phi_q,   dgamma = sum_{p,q} dout_pq h_p * phi_pq
    Returns:
        dh: (P, n_feat), dgamma: (n_feat,).
    """
    h, phi_q, gamma = cache
    hq = np.einsum("pq,pqd->pd", dout, phi_q)                                # (P, n_feat)
    return hq * gamma, np.einsum("pd,pd->d", hq, h)


def scalar_mlp_forward(out_n, a, v, c):
    """The two-layer ReLU MLP on the scalar: f = sum_k a_k relu(v_k out_n + c_k).

    Args:
        out_n: (P, Q) normalised Mamba output.  a, v, c: (W,).
    Returns:
        f: (P, Q), cache.
    """
    pre = out_n[..., None] * v + c                                           # (P, Q, W)
    act = np.maximum(pre, 0.0)
    return act @ a, (out_n, a, v, pre, act)


def scalar_mlp_backward(df, cache):
    """Gradients of :func:`scalar_mlp_forward`.

        da = sum df * act,  dpre = df a [pre > 0],  dout_n = dpre . v,
        dv = sum dpre * out_n,  dc = sum dpre
    Returns:
        dout_n: (P, Q), da, dv, dc: (W,).
    """
    out_n, a, v, pre, act = cache
    da = np.einsum("pq,pqw->w", df, act)
    dpre = df[..., None] * a * (pre > 0)                                     # (P, Q, W)
    return dpre @ v, da, np.einsum("pqw,pq->w", dpre, out_n), dpre.sum(axis=(0, 1))


@dataclass
class GatedMamba:
    """A pretrained one-layer model: gate, gamma, normalisation and MLP.

    Attributes:
        gate, rho, b0: the fixed gate.  gamma: (n_feat,).  shift, scale: out_n = (out - shift) / scale.
        a, v, c: (W,) MLP weights.  backend: scan backend for the product gate.
    """

    gate: str
    gamma: np.ndarray
    a: np.ndarray
    v: np.ndarray
    c: np.ndarray
    rho: float = 0.25
    b0: float = 0.0
    shift: float = 0.0
    scale: float = 1.0
    backend: str = "numpy"
    info: dict = field(default_factory=dict)

    def mamba_output(self, prompts, h=None):
        """out (P, Q) before normalisation; ``h`` may be passed when already computed."""
        if h is None:
            h = context_statistic(prompts.x_context, prompts.y_context, self.gate, self.rho, self.b0, self.backend)
        return readout_forward(h, hermite_features(prompts.x_query), self.gamma)[0]

    def predict(self, prompts, h=None):
        """The model's prediction for every query, (P, Q)."""
        out_n = (self.mamba_output(prompts, h) - self.shift) / self.scale
        return scalar_mlp_forward(out_n, self.a, self.v, self.c)[0]
