"""phi(x): the normalised Hermite features of degree <= 2 (SPEC section 3).
Tested in tests/test_icl_gated.py.

    phi(x) = (1, x_1..x_d, (x_i^2 - 1)/sqrt 2 for i = 1..d, x_i x_j for i < j)

Under x ~ N(0, I_d) these n_feat = 1 + d + d + d(d-1)/2 features are orthonormal: E[phi phi^T] = I.
So a linear functional of phi reads off the degree-1 and degree-2 Hermite coefficients of a
function of x, which is what the one-layer model's statistic sum_j G_j y_j phi(x_j) estimates.
For d = 32, n_feat = 561.

Glossary: P prompts, N points per prompt, d inputs, n_feat = feature_dim(d).
"""
from __future__ import annotations

import math

import numpy as np

from ..validate import check_float_array, check_positive_int

SQRT2 = math.sqrt(2.0)


def feature_dim(d):
    """n_feat = 1 + 2 d + d (d - 1) / 2."""
    d = check_positive_int("d", d)
    return 1 + 2 * d + d * (d - 1) // 2


def hermite_features(x):
    """phi(x) for every row of x.

    Args:
        x: (..., d).
    Returns:
        (..., n_feat) in the order constant, linear, squares, cross products (i < j, row-major).
    """
    check_float_array("x", x)
    d = x.shape[-1]
    iu, ju = np.triu_indices(d, 1)
    return np.concatenate([
        np.ones(x.shape[:-1] + (1,), x.dtype),  # (..., 1)
        x,                                       # (..., d)
        (x * x - 1.0) / SQRT2,                   # (..., d)
        x[..., iu] * x[..., ju],                 # (..., d(d-1)/2)
    ], axis=-1)


def weighted_feature_sum(x, w):
    """sum_j w_j phi(x_j) per prompt, without materialising phi; several weightings at once.

    phi of N points in d = 32 is N x 561 floats per prompt; instead the quadratic block is
    the weighted second moment X^T diag(w) X, and the constant and linear blocks are sum w
    and X^T w. All G weightings of a prompt go through one matrix product
    X^T [diag(w_1) X, ..., diag(w_G) X], (d, N) @ (N, G d): a wider product keeps BLAS
    busier than G thin ones (about 5x faster for G = 3, d = 32).

    Args:
        x: (P, N, d).  w: (P, N), or (G, P, N) for G weightings of the same points.
    Returns:
        (P, n_feat), or (G, P, n_feat).
    """
    check_float_array("x", x, ndim=3)
    P, N, d = x.shape
    single = np.ndim(w) == 2
    W = np.asarray(w)[None] if single else np.asarray(w)
    check_float_array("w", W, shape=(None, P, N))
    G = W.shape[0]
    iu, ju = np.triu_indices(d, 1)
    s0 = W.sum(axis=2)                                   # (G, P)
    s1 = np.einsum("gpn,pnd->gpd", W, x)                 # (G, P, d)
    M = np.empty((G, P, d, d))
    for p in range(P):
        xw = x[p][:, None, :] * W[:, p, :].T[:, :, None]                   # (N, G, d)
        M[:, p] = (x[p].T @ xw.reshape(N, G * d)).reshape(d, G, d).transpose(1, 0, 2)  # X^T diag(w_g) X
    diag = (np.diagonal(M, axis1=2, axis2=3) - s0[..., None]) / SQRT2  # (G, P, d)
    out = np.concatenate([s0[..., None], s1, diag, M[:, :, iu, ju]], axis=2)  # (G, P, n_feat)
    return out[0] if single else out


def relevant_features(d, index_set):
    """Boolean mask (n_feat,) of the features that depend only on the coordinates in index_set
    (the constant excluded): the support of the ideal gamma."""
    n_feat = feature_dim(d)
    inside = np.zeros(d, bool)
    inside[np.asarray(index_set)] = True
    iu, ju = np.triu_indices(d, 1)
    mask = np.concatenate([[False], inside, inside, inside[iu] & inside[ju]])
    assert mask.size == n_feat
    return mask


def feature_groups(d):
    """Integer label (n_feat,) of each feature: 0 constant, 1 linear, 2 square, 3 cross product."""
    return np.concatenate([[0], np.full(d, 1), np.full(d, 2), np.full(d * (d - 1) // 2, 3)])
