"""Kernel ridge regression on one prompt's context alone: the baseline with no pretraining.
Tested in tests/test_icl_krr_metrics.py.

For each prompt, fit f(x) = sum_i alpha_i k(x_i, x) on its N context pairs,
    alpha = (K + lam I)^{-1} y,   K_ij = k(x_i, x_j),
with the kernel and lam chosen per prompt by the leave-one-out error on the context (never
on the query). LOO costs no refits: with K = U diag(ev) U^T and hat matrix
    H = K (K + lam I)^{-1} = U diag(ev / (ev + lam)) U^T,
the LOO residual of point i is (y_i - (H y)_i) / (1 - H_ii). One eigendecomposition per
kernel then scores every lam in O(N^2) each.

Kernels (``dim`` is the input dimension: d on the full x, r on the intrinsic coordinates):
    ("rbf", w)    exp(-|x - x'|^2 / (2 w dim))          w in RBF_WIDTHS (default only w = 1:
                                                         each kernel costs an eigendecomposition)
    ("poly", p)   (1 + <x, x'> / dim)^p                  p in POLY_DEGREES
Ridges: lam = rel * mean(diag K), rel in RIDGES_REL. No intercept (the links have mean 0),
so a fit matches scikit-learn's KernelRidge(alpha=lam) with the same kernel.
Cost: an N x N eigendecomposition per kernel per prompt, O(N^3); the experiment caps the
N at which it runs KRR (``--krr-max-N``) and says so.
"""
from __future__ import annotations

import numpy as np

from ..validate import check_float_array

RBF_WIDTHS = (1.0,)
POLY_DEGREES = (2, 3, 4)
RIDGES_REL = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
DEFAULT_KERNELS = tuple([("rbf", w) for w in RBF_WIDTHS] + [("poly", p) for p in POLY_DEGREES])


def kernel_matrix(X1, X2, kernel):
    """k(X1, X2) for one kernel.

    Args:
        X1: (n1, dim).  X2: (n2, dim).  kernel: ("rbf", width) or ("poly", degree).
    Returns:
        (n1, n2).
    """
    kind, param = kernel
    dim = X1.shape[-1]
    G = X1 @ X2.T                                                            # (n1, n2)
    if kind == "rbf":
        sq = np.sum(X1 ** 2, 1)[:, None] + np.sum(X2 ** 2, 1)[None, :] - 2.0 * G
        return np.exp(-np.maximum(sq, 0.0) / (2.0 * param * dim))
    if kind == "poly":
        return (1.0 + G / dim) ** param
    raise ValueError(f"kernel kind must be 'rbf' or 'poly', got {kind!r}")


def loo_errors(K, y, ridges):
    """Mean squared leave-one-out error of kernel ridge for each absolute ridge.

    Args:
        K: (N, N) kernel matrix.  y: (N,).  ridges: (R,) absolute lam values.
    Returns:
        loo: (R,), and (ev, U) the eigendecomposition for reuse.
    """
    ev, U = np.linalg.eigh(K)
    ev = np.maximum(ev, 0.0)  # K is PSD; round-off can leave tiny negative eigenvalues
    Uty = U.T @ y                                                            # (N,)
    ratio = ev[None, :] / (ev[None, :] + np.asarray(ridges)[:, None])        # (R, N)
    Hy = (ratio * Uty) @ U.T                                                 # (R, N)
    Hdiag = ratio @ (U ** 2).T                                               # (R, N)
    resid = (y - Hy) / np.maximum(1.0 - Hdiag, 1e-12)
    return np.mean(resid ** 2, axis=1), (ev, U)


def krr_fit_predict(X, y, Xq, kernels=DEFAULT_KERNELS, ridges_rel=RIDGES_REL):
    """Fit KRR on (X, y) with the kernel and ridge of smallest LOO error, predict Xq.

    Args:
        X: (N, dim).  y: (N,).  Xq: (Q, dim).
    Returns:
        pred: (Q,), choice: {"kernel", "ridge", "loo"}.
    """
    best = None
    for kernel in kernels:
        K = kernel_matrix(X, X, kernel)
        ridges = np.asarray(ridges_rel) * float(np.mean(np.diag(K)))
        loo, (ev, U) = loo_errors(K, y, ridges)
        i = int(np.argmin(loo))
        if best is None or loo[i] < best[0]:
            best = (float(loo[i]), kernel, float(ridges[i]), ev, U)
    loo, kernel, lam, ev, U = best
    alpha = U @ ((U.T @ y) / (ev + lam))                                     # (N,)
    return kernel_matrix(Xq, X, kernel) @ alpha, {"kernel": kernel, "ridge": lam, "loo": loo}


def krr_predict(x_context, y_context, x_query, kernels=DEFAULT_KERNELS, ridges_rel=RIDGES_REL,
                progress=None):
    """KRR per prompt, each fit on that prompt's context only.

    Args:
        x_context: (P, N, dim).  y_context: (P, N).  x_query: (P, Q, dim).
        progress: optional callable(n) advanced per prompt.
    Returns:
        pred: (P, Q), choices: list of P dicts (kernel, ridge, loo).
    """
    check_float_array("x_context", x_context, ndim=3)
    P, N, dim = x_context.shape
    check_float_array("y_context", y_context, shape=(P, N))
    check_float_array("x_query", x_query, shape=(P, None, dim))
    if not kernels:
        raise ValueError("kernels must list at least one kernel")
    pred = np.empty(x_query.shape[:2])
    choices = []
    for p in range(P):
        pred[p], ch = krr_fit_predict(x_context[p], y_context[p], x_query[p], kernels, ridges_rel)
        choices.append(ch)
        if progress is not None:
            progress(1)
    return pred, choices
