"""Paper 3's one-layer Mamba and the linear Transformer, with hand-written gradients.

Glossary:
    b: prompts in a batch     L = l + 1: tokens per prompt, the query last
    d1 = d + 1: token width   m: rows of W_B and W_C (m = d1, square as in the paper)
    p_i: token (x_i, y_i)     p_q = p_L: the query token (x_query, 0)
    w: gate vector (d1,)      s_i = sigmoid(w . p_i): the gate's input-dependent step
    G_i: gate weight of example i

The one-layer Mamba (Li et al. 2025, Eq. 3 in our notation):
    F(P) = sum_{i<=L} G_i y_i p_i^T W_B^T W_C p_q,
    G_i  = s_i prod_{j=i+1}^{L} (1 - s_j),
so the query's own gate (G_L = s_L) meets a zero label and contributes nothing, while its
factor (1 - s_L) scales every example's weight (a common positive factor: it moves the
hinge loss, never the predicted sign). The linear Transformer is the same with G_i = 1.

Why this is an S6 scan. With one channel, state size m, A = -1 and
``delta_t = softplus(w . p_t)``: ``exp(delta_t A) = 1 / (1 + e^(w.p_t)) = 1 - s_t``, so
    h_t = (1 - s_t) h_{t-1} + s_t z_t,     z_t = y_t W_B p_t  (m,)
unrolls to ``h_L = sum_i G_i z_i`` and ``F = <W_C p_q, h_L>``. The official kernel uses Euler
for B (``delta_t B_t u_t``); feeding ``B_t = z_t`` and ``u_t = s_t / delta_t`` turns that into
the exact-ZOH input ``(1 - e^(-delta_t)) z_t = s_t z_t``. ``method="scan"`` runs exactly this
through :func:`mamba_from_scratch.scan.selective_scan_forward` and its backward;
``method="closed"`` uses the closed form (suffix sums of log(1 - s)), which needs no loop
over time. Both are checked against each other and against finite differences.
"""
from __future__ import annotations

import numpy as np

from ...scan import selective_scan_backward, selective_scan_forward
from ...validate import check_choice, check_float_array, check_positive_int

MODELS = ("mamba", "linear")
METHODS = ("closed", "scan")


def sigmoid(v):
    """Logistic function, stable for large |v|."""
    e = np.exp(-np.abs(v))
    return np.where(v >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def softplus(v):
    """log(1 + e^v), stable for large |v|."""
    return np.maximum(v, 0.0) + np.log1p(np.exp(-np.abs(v)))


def init_params(d1: int, model: str, rng: np.random.Generator, m: int | None = None,
                delta0: float = 0.2) -> dict:
    """The paper's initialisation.

    The first d = d1 - 1 diagonal entries of W_B and W_C are ``delta0`` (the label row and
    column start at 0), and ``w ~ N(0, I / d1)``; the linear Transformer has no ``w``.
    Returns:
        {"W_B": (m, d1), "W_C": (m, d1)} plus {"w": (d1,)} for the Mamba.
    """
    d1 = check_positive_int("d1", d1, minimum=2)
    check_choice("model", model, MODELS)
    m = d1 if m is None else check_positive_int("m", m, minimum=d1 - 1)
    W_B = np.zeros((m, d1))
    W_C = np.zeros((m, d1))
    idx = np.arange(d1 - 1)
    W_B[idx, idx] = delta0
    W_C[idx, idx] = delta0
    params = {"W_B": W_B, "W_C": W_C}
    if model == "mamba":
        params["w"] = rng.normal(0.0, 1.0 / np.sqrt(d1), size=d1)
    return params


def gates(P, w):
    """Gate weights in closed form, no loop over time.

    ``log G_i = log s_i + sum_{j>i} log(1 - s_j)`` with ``log(1 - s_j) = -softplus(w . p_j)``:
    a reversed exclusive cumulative sum.
    Args:
        P: (b, L, d1) tokens.  w: (d1,) gate vector.
    Returns:
        G: (b, L) gate weights, s: (b, L) steps sigmoid(w . p_i).
    """
    v = P @ w                                              # (b, L)
    s = sigmoid(v)                                         # (b, L)
    log1m = -softplus(v)                                   # (b, L) log(1 - s)
    after = np.cumsum(log1m[:, ::-1], axis=1)[:, ::-1] - log1m  # (b, L) sum_{j>i} log(1 - s_j)
    return s * np.exp(after), s


def model_forward(params: dict, P: np.ndarray, method: str = "closed", backend: str = "numpy"):
    """F(P) for the Mamba (params has "w") or the linear Transformer (no "w").

    The closed form never builds a (b, L, m) tensor: the gated label-weighted token sum
    ``r = sum_i G_i y_i p_i`` is one (d1,) vector per prompt, and
    ``F = <W_B r, W_C p_q> = sum_i G_i y_i a_i`` with the attention score
    ``a_i = p_i^T W_B^T W_C p_q``. The scan runs the state ``h_t`` (m,) through time instead.
    Args:
        params: from :func:`init_params`.
        P: (b, L, d1) prompts, the query last with label slot 0.
        method: "closed" or "scan" (how the Mamba's gated sum is computed).
        backend: selective scan backend for method="scan".
    Returns:
        F: (b,) outputs, cache for :func:`model_backward`.
    """
    check_float_array("P", P, ndim=3)
    check_choice("method", method, METHODS)
    W_B, W_C = params["W_B"], params["W_C"]
    d1 = P.shape[2]
    if W_B.shape[1] != d1 or W_C.shape != W_B.shape:
        raise ValueError(f"W_B and W_C must both have shape (m, d1={d1}), got {W_B.shape} and {W_C.shape}")
    y = P[:, :, -1]                                        # (b, L) labels, 0 at the query
    c = P[:, -1] @ W_C.T                                   # (b, m)     W_C p_q
    mamba = "w" in params
    if mamba and method == "scan":
        z = y[..., None] * (P @ W_B.T)                     # (b, L, m)  z_i = y_i W_B p_i
        v = P @ params["w"]                                # (b, L)
        s = sigmoid(v)
        delta = softplus(v)[..., None]                     # (b, L, 1) one channel
        u = s[..., None] / delta                           # (b, L, 1) Euler-B times u = exact ZOH
        A = -np.ones((1, z.shape[2]))                      # (1, m)
        C = np.ascontiguousarray(np.broadcast_to(c[:, None, :], z.shape))  # (b, L, m)
        _, h_last, scan_cache = selective_scan_forward(u, delta, A, z, C, backend=backend)
        h = h_last[:, 0, :]                                # (b, m) h_L = sum_i G_i z_i
        cache = (P, params, c, h, s, scan_cache, method)
    else:
        if mamba:
            G, s = gates(P, params["w"])                   # (b, L)
        else:
            G, s = np.ones(y.shape), None                  # the linear Transformer: G = 1
        r = np.matmul((G * y)[:, None, :], P)[:, 0]        # (b, d1) r = sum_i G_i y_i p_i
        h = r @ W_B.T                                      # (b, m)  h_L = W_B r
        cache = (P, params, c, h, r, G, s, method)
    F = np.einsum("bm,bm->b", h, c)                        # (b,)
    return F, cache


def model_backward(dF: np.ndarray, cache) -> dict:
    """Gradients of sum(dF * F) with respect to every parameter.

    Closed form, with ``r = sum_i G_i y_i p_i``, ``h = W_B r``, ``c = W_C p_q``, ``F = <h, c>``:
        dh = dF c, dc = dF h         dW_B = sum_b dh r^T,   dW_C = sum_b dc p_q^T
        dr = W_B^T dh                so dG_i = y_i <p_i, dr> = dF y_i a_i
        dv_k = dG_k G_k (1 - s_k) - s_k sum_{i<k} dG_i G_i,   dw = sum_{b,k} dv_k p_k
    since d log G_i / dv_i = 1 - s_i and d log G_i / dv_k = -s_k for k > i.
    With method="scan" the state and gate gradients come from the scan's adjoint instead:
    dB -> dz_i (and dW_B = sum y_i dz_i p_i^T), dC -> dc, and (du, ddelta) -> dv through
    u = s / delta, delta = softplus(v).
    Returns:
        grads with the keys and shapes of params.
    """
    P, params, c, h = cache[:4]
    method = cache[-1]
    b, L, d1 = P.shape
    check_float_array("dF", dF, shape=(b,))
    y = P[:, :, -1]                                        # (b, L)
    mamba = "w" in params
    grads = {}
    if mamba and method == "scan":
        s, scan_cache = cache[4:6]
        dy = np.zeros((b, L, 1))
        dy[:, -1, 0] = dF                                  # only the query's output is F
        du, ddelta, _, dz, dC, _, _ = selective_scan_backward(dy, scan_cache)
        dc = dC.sum(axis=1)                                # (b, m) C was c at every step
        grads["W_B"] = (dz * y[..., None]).reshape(b * L, -1).T @ P.reshape(b * L, d1)  # (m, d1)
        v = P @ params["w"]                                # (b, L)
        delta = softplus(v)                                # (b, L)
        # u = s / delta with ds/dv = s (1 - s) and ddelta/dv = s:
        du_dv = s * ((1.0 - s) * delta - s) / delta**2     # (b, L)
        dv = du[..., 0] * du_dv + ddelta[..., 0] * s       # (b, L)
    else:
        r, G, s = cache[4:7]
        dh = dF[:, None] * c                               # (b, m)
        dc = dF[:, None] * h                               # (b, m)
        grads["W_B"] = dh.T @ r                            # (m, d1)
        if mamba:
            dr = dh @ params["W_B"]                        # (b, d1)
            dGG = y * np.matmul(P, dr[:, :, None])[..., 0] * G  # (b, L) dG_i G_i
            before = np.cumsum(dGG, axis=1) - dGG          # (b, L) sum_{i<k} dG_i G_i
            dv = dGG * (1.0 - s) - s * before              # (b, L)
    grads["W_C"] = dc.T @ P[:, -1]                         # (m, d1)
    if mamba:
        grads["w"] = dv.reshape(-1) @ P.reshape(b * L, d1)  # (d1,)
    grads = {k: grads[k] for k in params}                  # the order of params
    return grads


def hinge_forward(F: np.ndarray, y: np.ndarray):
    """Mean hinge loss ``mean(max(0, 1 - y F))``.

    Args:
        F: (b,) outputs.  y: (b,) labels +1 / -1.
    Returns:
        loss (float), cache.
    """
    margin = 1.0 - y * F                                   # (b,)
    return float(np.maximum(margin, 0.0).mean()), (y, margin)


def hinge_backward(cache) -> np.ndarray:
    """dloss/dF = -y / b where the margin is violated, else 0 (the subgradient 0 at the kink)."""
    y, margin = cache
    return np.where(margin > 0, -y, 0.0) / len(y)          # (b,)
