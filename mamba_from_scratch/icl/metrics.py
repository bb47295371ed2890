"""The test error, normalised so the zero predictor scores about 1, with standard errors.
Tested in tests/test_icl_krr_metrics.py.

    error = mean over prompts p of  e_p,   e_p = mean_q (pred_pq - target_pq)^2 / E[g^2]

The target is the noiseless g(<beta, x_query>); dividing by the link's second moment E[g^2]
makes predicting 0 score 1 in expectation. The Q queries of one prompt share its context, so
they are not independent: the standard error is taken over prompts, std(e_p) / sqrt(P).
Two methods evaluated on the same prompts are compared by the paired difference of their
per-prompt errors, whose standard error is much smaller than either one's alone.
"""
from __future__ import annotations

import numpy as np

from ..validate import check_float_array, check_positive_float


def per_prompt_error(pred, target, second_moment=None):
    """e_p (P,): each prompt's mean squared error over its queries / E[g^2].

    Args:
        pred, target: (P, Q).  second_moment: E[g^2]; None uses mean(target^2).
    """
    check_float_array("target", target, ndim=2)
    check_float_array("pred", pred, shape=target.shape, finite=False)
    if second_moment is None:
        norm = float(np.mean(target ** 2))
    else:
        norm = check_positive_float("second_moment", second_moment)
    return np.mean((pred - target) ** 2, axis=1) / norm


def normalized_error(pred, target, second_moment=None):
    """(error, stderr, e_p): the normalised error, its standard error over prompts, and
    the per-prompt errors (for paired comparisons)."""
    e = per_prompt_error(pred, target, second_moment)
    stderr = float(np.std(e, ddof=1) / np.sqrt(e.size)) if e.size > 1 else float("nan")
    return float(np.mean(e)), stderr, e


def paired_difference(e1, e2):
    """mean(e1 - e2) and its standard error over prompts (same prompts for both)."""
    diff = np.asarray(e1) - np.asarray(e2)
    if diff.size < 2:
        raise ValueError("paired_difference needs per-prompt errors of at least 2 prompts")
    return float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(diff.size))
