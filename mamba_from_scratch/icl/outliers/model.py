"""Paper 3's one-layer Mamba and the linear Transformer, with hand-written gradients.

Tested in tests/test_outliers.py. The model contract: ``ModelConfig``, ``init_params(cfg, rng)``,
``model_forward(params, cfg, x) -> (F, cache)``, ``model_backward(dF, cache) -> (grads, dx)``.

Glossary:
    b: prompts in a batch     L = l + 1: tokens per prompt, the query last
    x: (b, L, d1) the tokens p_1..p_L of every prompt (the example inputs x_i are their first d entries)
    d1 = d + 1: token width   m: rows of W_B and W_C (m = d1, square as in the paper)
    p_i: token (x_i, y_i)     p_q = p_L: the query token (x_query, 0)
    w: gate vector (d1,)      s_i = sigmoid(w . p_i): the gate's input-dependent step
    G_i: gate weight of example i

The one-layer Mamba (Li et al. 2025, Eq. 3 in our notation):
    F(x) = sum_{i<=L} G_i y_i p_i^T W_B^T W_C p_q,
    G_i  = s_i prod_{j=i+1}^{L} (1 - s_j),
so the query's own gate (G_L = s_L) meets a zero label and contributes nothing, while its
factor (1 - s_L) scales every example's weight (a common positive factor: it moves the
hinge loss, never the predicted sign). The linear Transformer is the same with G_i = 1.

Why this is an S6 scan: with one channel, state size m, A = -1 and delta_t = softplus(w . p_t),
the gated sum is the scan's final state h_L = sum_i G_i z_i with z_i = y_i W_B p_i, and
F = <W_C p_q, h_L>. The gate primitives (the product gate in closed form, and the scan with
the exact-ZOH-through-Euler input) are shared with paper 1's model: ``icl/gates.py``.
``method="scan"`` runs the scan and its backward; ``method="closed"`` uses the closed form
(suffix sums of log(1 - s)), which needs no loop over time. Both are checked against each
other and against finite differences.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...validate import check_choice, check_float_array, check_positive_int
from ..gates import product_gate, product_gate_scan_backward, product_gate_scan_forward

MODELS = ("mamba", "linear")
METHODS = ("closed", "scan")


@dataclass
class ModelConfig:
    """One model of paper 3: its family, size and how the gated sum is computed."""

    d1: int                   # token width d + 1 (the label is the last entry)
    model: str = "mamba"      # "mamba" (gated sum) or "linear" (the linear Transformer, G = 1)
    m: int | None = None      # rows of W_B and W_C; None: d1, square as in the paper
    delta0: float = 0.2       # the paper's initial diagonal of W_B and W_C
    method: str = "closed"    # the gated sum in closed form or through the selective scan
    backend: str = "numpy"    # selective scan backend for method="scan"

    def __post_init__(self):
        self.d1 = check_positive_int("d1", self.d1, minimum=2)
        check_choice("model", self.model, MODELS)
        self.m = self.d1 if self.m is None else check_positive_int("m", self.m, minimum=self.d1 - 1)
        check_choice("method", self.method, METHODS)

    @classmethod
    def of(cls, params: dict, method: str = "closed", backend: str = "numpy") -> "ModelConfig":
        """The config of existing parameters: the Mamba is the model with a gate vector "w"."""
        m, d1 = params["W_B"].shape
        return cls(d1, "mamba" if "w" in params else "linear", m, method=method, backend=backend)


def init_params(cfg: ModelConfig, rng: np.random.Generator) -> dict:
    """The paper's initialisation.

    The first d = d1 - 1 diagonal entries of W_B and W_C are ``cfg.delta0`` (the label row and
    column start at 0), and ``w ~ N(0, I / d1)``; the linear Transformer has no ``w``.
    Returns:
        {"W_B": (m, d1), "W_C": (m, d1)} plus {"w": (d1,)} for the Mamba.
    """
    W_B = np.zeros((cfg.m, cfg.d1))
    W_C = np.zeros((cfg.m, cfg.d1))
    idx = np.arange(cfg.d1 - 1)
    W_B[idx, idx] = cfg.delta0
    W_C[idx, idx] = cfg.delta0
    params = {"W_B": W_B, "W_C": W_C}
    if cfg.model == "mamba":
        params["w"] = rng.normal(0.0, 1.0 / np.sqrt(cfg.d1), size=cfg.d1)
    return params


def gates(x, w):
    """Gate weights in closed form (:func:`gates.product_gate` of v = x @ w), no loop over time.

    Args:
        x: (b, L, d1) tokens.  w: (d1,) gate vector.
    Returns:
        G: (b, L) gate weights, s: (b, L) steps sigmoid(w . p_i).
    """
    return product_gate(x @ w)


def model_forward(params: dict, cfg: ModelConfig, x: np.ndarray):
    """F(x) for the Mamba or the linear Transformer.

    The closed form never builds a (b, L, m) tensor: the gated label-weighted token sum
    ``r = sum_i G_i y_i p_i`` is one (d1,) vector per prompt, and
    ``F = <W_B r, W_C p_q> = sum_i G_i y_i a_i`` with the attention score
    ``a_i = p_i^T W_B^T W_C p_q``. The scan runs the state ``h_t`` (m,) through time instead.
    Args:
        params: from :func:`init_params`.  cfg: its ModelConfig.
        x: (b, L, d1) prompts, the query last with label slot 0.
    Returns:
        F: (b,) outputs, cache for :func:`model_backward`.
    """
    check_float_array("x", x, ndim=3)
    W_B, W_C = params["W_B"], params["W_C"]
    d1 = x.shape[2]
    if W_B.shape != (cfg.m, cfg.d1) or W_C.shape != W_B.shape or d1 != cfg.d1:
        raise ValueError(f"W_B and W_C must both have shape (m, d1) = {(cfg.m, cfg.d1)} and x must have d1 = "
                         f"{cfg.d1} features, got {W_B.shape}, {W_C.shape} and {x.shape}")
    if ("w" in params) != (cfg.model == "mamba"):
        raise ValueError(f"a {cfg.model!r} model's params must {'' if cfg.model == 'mamba' else 'not '}have a gate "
                         f"vector 'w', got keys {sorted(params)}")
    y = x[:, :, -1]                                        # (b, L) labels, 0 at the query
    c = x[:, -1] @ W_C.T                                   # (b, m)     W_C p_q
    if cfg.model == "mamba" and cfg.method == "scan":
        xB = x @ W_B.T                                     # (b, L, m)  W_B p_i
        z = y[..., None] * xB                              # (b, L, m)  z_i = y_i W_B p_i
        _, h, gcache = product_gate_scan_forward(x @ params["w"], z, backend=cfg.backend)  # h: (b, m)
        path = (xB, gcache)
    else:
        if cfg.model == "mamba":
            G, s = gates(x, params["w"])                   # (b, L)
        else:
            G, s = np.ones(y.shape), None                  # the linear Transformer: G = 1
        r = np.matmul((G * y)[:, None, :], x)[:, 0]        # (b, d1) r = sum_i G_i y_i p_i
        h = r @ W_B.T                                      # (b, m)  h_L = W_B r
        path = (r, G, s)
    F = np.einsum("bm,bm->b", h, c)                        # (b,)
    return F, (params, cfg, x, c, h, path)


def model_backward(dF: np.ndarray, cache):
    """Gradients of sum(dF * F) with respect to every parameter and to the tokens.

    Closed form, with ``r = sum_i G_i y_i p_i``, ``h = W_B r``, ``c = W_C p_q``, ``F = <h, c>``:
        dh = dF c, dc = dF h         dW_B = sum_b dh r^T,   dW_C = sum_b dc p_q^T
        dr = W_B^T dh                so d(G_i y_i) = <p_i, dr> and dG_i = y_i <p_i, dr> = dF y_i a_i
        dv_k = dG_k G_k (1 - s_k) - s_k sum_{i<k} dG_i G_i,   dw = sum_{b,k} dv_k p_k
    since d log G_i / dv_i = 1 - s_i and d log G_i / dv_k = -s_k for k > i.
    With method="scan" the state's gradient dh goes through the scan's adjoint instead
    (:func:`gates.product_gate_scan_backward`), giving dz_i and dv_i; z_i = y_i W_B p_i.
    The tokens get dp_i = G_i y_i dr + dv_i w (+ W_C^T dc at the query), and the label slot
    of each token adds d(G_i y_i) / dy_i = G_i <p_i, dr> (scan: <W_B p_i, dz_i>).
    Returns:
        grads with the keys and shapes of params; dx: (b, L, d1).
    """
    params, cfg, x, c, h, path = cache
    b, L, d1 = x.shape
    check_float_array("dF", dF, shape=(b,))
    W_B, W_C = params["W_B"], params["W_C"]
    y = x[:, :, -1]                                        # (b, L)
    dh = dF[:, None] * c                                   # (b, m)
    dc = dF[:, None] * h                                   # (b, m)
    grads = {}
    if cfg.model == "mamba" and cfg.method == "scan":
        xB, gcache = path
        dv, dz, _ = product_gate_scan_backward(np.zeros((b, L)), gcache, dh)  # (b, L), (b, L, m)
        dzy = dz * y[..., None]                            # (b, L, m) gradient of W_B p_i
        grads["W_B"] = dzy.reshape(b * L, -1).T @ x.reshape(b * L, d1)  # (m, d1)
        dx = dzy @ W_B                                     # (b, L, d1)
        dx[:, :, -1] += np.einsum("blm,blm->bl", dz, xB)   # z_i depends on its label y_i
    else:
        r, G, s = path
        grads["W_B"] = dh.T @ r                            # (m, d1)
        dr = dh @ W_B                                      # (b, d1)
        dGy = np.matmul(x, dr[:, :, None])[..., 0]         # (b, L) d(G_i y_i)
        dx = (G * y)[..., None] * dr[:, None, :]           # (b, L, d1)
        dx[:, :, -1] += G * dGy                            # the label slot
        if cfg.model == "mamba":
            dGG = y * dGy * G                              # (b, L) dG_i G_i
            before = np.cumsum(dGG, axis=1) - dGG          # (b, L) sum_{i<k} dG_i G_i
            dv = dGG * (1.0 - s) - s * before              # (b, L)
    grads["W_C"] = dc.T @ x[:, -1]                         # (m, d1)
    dx[:, -1] += dc @ W_C                                  # the query's c = W_C p_q
    if cfg.model == "mamba":
        grads["w"] = dv.reshape(-1) @ x.reshape(b * L, d1)  # (d1,)
        dx += dv[..., None] * params["w"]                  # v = x @ w
    grads = {k: grads[k] for k in params}                  # the order of params
    return grads, dx


def hinge_forward(F: np.ndarray, y: np.ndarray):
    """Mean hinge loss ``mean(max(0, 1 - y F))``.

    Args:
        F: (b,) outputs.  y: (b,) labels +1 / -1.
    Returns:
        loss (float), cache.
    """
    margin = 1.0 - y * F                                   # (b,)
    return float(np.maximum(margin, 0.0).mean()), (y, margin)


def hinge_backward(dloss, cache) -> np.ndarray:
    """dF = dloss * dloss/dF: -y / b where the margin is violated, else 0 (the subgradient 0
    at the kink). ``dloss`` is the upstream gradient of the loss, 1.0 for training."""
    y, margin = cache
    return dloss * np.where(margin > 0, -y, 0.0) / len(y)  # (b,)
