"""The exact error floor of a same-pattern vote on test prompts with outliers.
Tested in tests/test_outliers.py.

Sampling design of a test prompt (data.py): each of the l examples independently holds
the query's pattern with probability 1/2 (its class is a fair coin) and carries an outlier
with probability alpha. Let n ~ Binomial(l, 1/2) count the examples with the query's
pattern. All n of them are outliers with probability alpha^n, so

    P(no clean example with the query's pattern) = sum_n C(l, n) 2^-l alpha^n = ((1 + alpha) / 2)^l.

What a model of our form cannot do on such a prompt. Its output is
``F = sum_i G_i y_i a_i`` with gate weights ``G_i >= 0`` (any of them, including G_i = 1)
and a bilinear score ``a_i = p_i^T W p_q``. Suppose the score is positive for an example
with the query's pattern and zero for one holding the task's other pattern: the mechanism
the paper describes (attention picks the query's pattern, the gate damps outliers). Our
trained models only approximate it: their cross score is negative on pattern pairs seen
in training and positive on new pairs (measured in the docs). Then F is a nonnegative combination of the same-pattern
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

It is not a Bayes floor, nor a bound on every model of this form: a model that reads the
other pattern's examples (negative cross score: their labels name the opposite class) can
go below it, and so does one trained on tasks whose two patterns it saw together (with the
default "ordered" split, every test task whose mirror (b, a) was trained). For such a model
:func:`clean_vote_floor` is the matching reference: it is forced wrong only when every
example is an outlier, probability alpha^l (0.012 at alpha = 0.8, l = 20). Neither floor
binds a model that could tell outliers apart and invert their labels.
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


def clean_vote_floor(alpha, l: int = 20, corruption: str = "flipped"):
    """A lower reference: the floor of a vote that reads the clean examples of *both* patterns.

    A model whose cross score is negative (example of the other pattern, whose label names
    the other class, votes against it: the right way round) and whose gate silences every
    outlier is only forced wrong when all l examples are outliers, probability alpha^l; then
    every vote is an outlier's: wrong under flipped labels, a fair coin otherwise.
    Returns:
        alpha^l (flipped) or alpha^l / 2 (targeted, random), the shape of alpha.
    """
    alpha, l = _check(alpha, l, corruption)
    return alpha**l if corruption == "flipped" else alpha**l / 2.0
