"""The reference predictors every in-context learner is scored against, on the same prompts.
Used by ``icl-theory`` (theory.py) and ``icl-eval`` (evaluate_trained.py); tested in
tests/test_baselines.py.

    zero           predicts 0 (normalised error about 1)
    context_free   E[g(<beta, x>) | x]: the best prediction that ignores the context
    krr_full       kernel ridge regression on the prompt's context, full x in R^d
    krr_intrinsic  the same on the r hidden coordinates (knows the subspace)
    oracle         knows beta and g (error 0 against the noiseless target)
"""
from __future__ import annotations

import numpy as np

from ..validate import check_choice
from .krr import krr_predict

BASELINES = ("krr_full", "krr_intrinsic", "context_free", "zero", "oracle")


def baseline_predict(method, task, prompts, n=None):
    """A baseline's prediction for every query of ``prompts`` from its first n context examples.

    Args:
        method: one of BASELINES.  task: the SingleIndexTask the prompts come from.
        prompts: task.Prompts with x_query (P, Q, d).  n: context examples used (None: all).
    Returns:
        pred: (P, Q).
    """
    check_choice("method", method, BASELINES)
    P, Q = prompts.y_query_clean.shape
    if method == "zero":
        return np.zeros((P, Q))
    if method == "oracle":
        return task.oracle_predict(prompts)
    if method == "context_free":
        return task.context_free_predict(prompts)
    return krr_baseline(task, prompts, n, intrinsic=method == "krr_intrinsic")[0]


def krr_baseline(task, prompts, n=None, intrinsic=False):
    """KRR on each prompt's first n context examples (None: all), on the full x or on the r
    hidden coordinates.

    Returns:
        pred: (P, Q).  choices: per prompt, the (kernel, ridge, loo) that leave-one-out chose;
        None when n = 0 (no examples: KRR predicts 0).
    """
    if n == 0:
        return np.zeros(prompts.y_query_clean.shape), None
    xc, xq = prompts.x_context[:, :n], prompts.x_query
    if intrinsic:
        xc, xq = task.intrinsic(xc), task.intrinsic(xq)
    return krr_predict(xc, prompts.y_context[:, :n], xq)
