"""The exact error floor of a same-pattern vote on test prompts with outliers.

Sampling design of a test prompt (data.py): each of the l examples independently holds
the query's pattern with probability 1/2 (its class is a fair coin) and carries an outlier
with probability alpha. Let n ~ Binomial(l, 1/2) count the examples with the query's
pattern. All n of them are outliers with probability alpha^n, so

    P(no clean example with the query's pattern) = sum_n C(l, n) 2^-l alpha^n = ((1 + alpha) / 2)^l.

What a model of our form cannot do on such a prompt. Its output is
``F = sum_i G_i y_i a_i`` with gate weights ``G_i >= 0`` (any of them, including G_i = 1)
and a bilinear score ``a_i = p_i^T W p_q``. Suppose the score is positive for an example
with the query's pattern and zero for one holding the task's other pattern (true for the
trained models on held-out pattern pairs up to the small terms we measure: no training task
relates those two patterns). Then F is a nonnegative combination of the same-pattern
examples' labels and, with no clean one among them:
    "flipped"   every such label is -y_query, so sign(F) is wrong: error 1 (n >= 1);
    "targeted"  every such label is the prompt's target class c, a fair coin independent
                of y_query: error 1/2;
    "random"    the labels are fair coins independent of y_query, and F is odd in them:
                error 1/2 by symmetry.
With n = 0 nothing carries the query's pattern and the sign is a fair coin: error 1/2.
The floor is the expected error over these prompts:

    flipped:           ((1 + alpha)/2)^l - 2^-(l+1)
    targeted, random:  ((1 + alpha)/2)^l / 2

It is not a Bayes floor: a learner that reads the other pattern's examples (their labels
say the opposite class) or tells outliers apart and inverts them could go below it. A
model trained on the same pattern pairs it is tested on does exactly the former; the
task-split study shows it.
"""
from __future__ import annotations

from math import comb

import numpy as np

from ...validate import check_choice, check_positive_int
from .data import CORRUPTIONS


def _check(alpha, l, corruption):
    l = check_positive_int("l", l)
    check_choice("corruption", corruption, CORRUPTIONS)
    alpha = np.asarray(alpha, dtype=np.float64)
    if not np.all((alpha >= 0) & (alpha <= 1)):
        raise ValueError(f"alpha must lie in [0, 1], got {alpha!r}")
    return alpha, l


def p_no_clean_same(alpha, l: int = 20):
    """Probability that no example of a test prompt is clean and holds the query's pattern.

    Args:
        alpha: scalar or array of test outlier probabilities.  l: examples per prompt.
    Returns:
        ((1 + alpha) / 2)^l, the shape of alpha.
    """
    alpha, l = _check(alpha, l, "flipped")
    return ((1.0 + alpha) / 2.0) ** l


def error_floor(alpha, l: int = 20, corruption: str = "flipped"):
    """The floor, summed term by term over n ~ Binomial(l, 1/2) same-pattern examples.

    Args:
        alpha: scalar or array of test outlier probabilities.
        l: examples per prompt.  corruption: "flipped", "targeted" or "random".
    Returns:
        expected error of a same-pattern vote on prompts with no clean same-pattern
        example, the shape of alpha.
    """
    alpha, l = _check(alpha, l, corruption)
    total = np.zeros_like(alpha)
    for n in range(l + 1):
        all_outliers = comb(l, n) * 0.5**l * alpha**n      # P(n same-pattern examples, all outliers)
        wrong = 1.0 if (corruption == "flipped" and n >= 1) else 0.5
        total = total + all_outliers * wrong
    return total


def error_floor_closed(alpha, l: int = 20, corruption: str = "flipped"):
    """The same floor in closed form (the binomial theorem applied to :func:`error_floor`)."""
    alpha, l = _check(alpha, l, corruption)
    q = ((1.0 + alpha) / 2.0) ** l
    return q - 0.5**(l + 1) if corruption == "flipped" else q / 2.0
