"""Paper 3's data model: binary in-context classification with additive outliers.

Li et al. 2025, "Can Mamba Learn In Context with Outliers?" (arXiv 2510.00399), Sec. 2.

Glossary:
    d: input dimension (30)          M1: relevant patterns mu_j (6)
    M2: irrelevant patterns nu_k (10) V: outlier patterns v_s (3)
    beta: norm of mu_j and nu_k (3)   K: noise range, kappa ~ U(-K, K) (1/2)
    kappa_a: outlier magnitude (2)   l: examples per prompt (20), L = l + 1 tokens
    b: prompts in a batch            task: an ordered pair (a, b) of relevant patterns

A task ``(a, b)`` says: an input holding ``mu_a`` has label +1, one holding ``mu_b`` has
label -1. An example is
    x = mu_j + kappa nu_k  (+ kappa_a v_s  with probability p_out),   y = +1 / -1,
and the label of an example that carries an outlier is corrupted:
    "flipped"   y -> -y
    "targeted"  y -> c, one class c in {+1, -1} drawn per prompt (all outliers say c)
    "random"    y -> a fresh fair coin
The query never carries an outlier and its label slot is 0. Tokens are
``p_i = (x_i, y_i)`` in R^(d+1), so a prompt is a (L, d+1) matrix.

Test-time outliers use new directions in the span of the training ones. The paper gives
``v'_1 = 0.7 v_1 + 0.6 v_2 - 0.4 v_3``; we complete the set with its two cyclic shifts
(our choice: the paper's other two are not in our sources).
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np

from ...validate import check_choice, check_positive_float, check_positive_int

CORRUPTIONS = ("flipped", "targeted", "random")
TASK_SPLITS = ("pairs", "ordered", "shared")

# Rows: coefficients of the test outlier directions on (v_1, v_2, v_3).
TEST_OUTLIER_MIX = np.array([[0.7, 0.6, -0.4],
                             [-0.4, 0.7, 0.6],
                             [0.6, -0.4, 0.7]])


@dataclass
class DataConfig:
    """The sampling design; defaults are the paper's unless marked "ours"."""

    d: int = 30                 # input dimension
    M1: int = 6                 # relevant patterns: the classes of the tasks
    M2: int = 10                # irrelevant patterns: the within-class noise directions
    V: int = 3                  # training outlier patterns
    beta: float = 3.0           # norm of every relevant and irrelevant pattern
    K: float = 0.5              # kappa ~ U(-K, K) scales the irrelevant pattern
    outlier_norm: float = 1.0   # ours: norm of v_s (the paper leaves it free)
    kappa_a: float = 2.0        # outlier magnitude in training prompts
    kappa_a_test: float = 2.0   # outlier magnitude in test prompts (a sensitivity knob)
    l: int = 20                 # examples per prompt, l_tr = l_ts
    task_split: str = "pairs"   # ours: how train and test tasks are kept apart (see split_tasks)
    n_test_pairs: int = 5       # ours: unordered pattern pairs held out for testing

    def validate(self):
        for name in ("d", "M1", "M2", "V", "l", "n_test_pairs"):
            check_positive_int(name, getattr(self, name))
        if self.M1 < 2:
            raise ValueError(f"M1 must be >= 2 (a task needs two relevant patterns), got {self.M1}")
        if self.M1 + self.M2 + self.V > self.d:
            raise ValueError(f"M1 + M2 + V must be <= d for orthogonal patterns, "
                             f"got {self.M1 + self.M2 + self.V} > d={self.d}")
        if self.V != 3:
            raise ValueError(f"V must be 3 (the test outlier directions mix three), got {self.V}")
        for name in ("beta", "K", "outlier_norm", "kappa_a", "kappa_a_test"):
            check_positive_float(name, getattr(self, name))
        check_choice("task_split", self.task_split, TASK_SPLITS)
        n_pairs = self.M1 * (self.M1 - 1) // 2
        if self.task_split == "pairs" and not 1 <= self.n_test_pairs < n_pairs:
            raise ValueError(f"n_test_pairs must lie in [1, {n_pairs - 1}] for M1={self.M1}, "
                             f"got {self.n_test_pairs}")
        return self


@dataclass
class Patterns:
    """The orthogonal directions of one draw of the data model."""

    mu: np.ndarray      # (M1, d) relevant patterns, norm beta
    nu: np.ndarray      # (M2, d) irrelevant patterns, norm beta
    v: np.ndarray       # (V, d) training outlier patterns, norm outlier_norm
    v_test: np.ndarray  # (V, d) test outlier patterns, in the span of v


@dataclass
class Prompts:
    """A batch of prompts and what the evaluation needs to know about them."""

    P: np.ndarray        # (b, L, d+1) tokens p_i = (x_i, y_i); the query's label slot is 0
    y_query: np.ndarray  # (b,) true label of the query, +1 / -1
    outlier: np.ndarray  # (b, l) True where the example carries an outlier
    same: np.ndarray     # (b, l) True where the example holds the query's pattern


def make_patterns(cfg: DataConfig, rng: np.random.Generator) -> Patterns:
    """Draw M1 + M2 + V orthonormal directions (QR of a Gaussian matrix) and scale them."""
    cfg.validate()
    n = cfg.M1 + cfg.M2 + cfg.V
    Q, _ = np.linalg.qr(rng.standard_normal((cfg.d, n)))  # (d, n), orthonormal columns
    mu = cfg.beta * Q[:, :cfg.M1].T                        # (M1, d)
    nu = cfg.beta * Q[:, cfg.M1:cfg.M1 + cfg.M2].T         # (M2, d)
    v = cfg.outlier_norm * Q[:, cfg.M1 + cfg.M2:].T        # (V, d)
    return Patterns(mu, nu, v, TEST_OUTLIER_MIX @ v)


def split_tasks(cfg: DataConfig, rng: np.random.Generator):
    """Split the ordered pattern pairs into training and test tasks.

    "pairs"   (default) hold out ``n_test_pairs`` unordered pairs {a, b}; both orders of a
              held-out pair are test tasks, so no test task shares its two patterns with
              any training task.
    "ordered" hold out ordered pairs at random (a third of them): a test task (a, b) may
              have its mirror (b, a) among the training tasks.
    "shared"  train and test on every ordered pair (a control, not a held-out test).
    Returns:
        train, test: (T_train, 2) and (T_test, 2) integer arrays of (a, b) pattern indices.
    """
    cfg.validate()
    pairs = np.array(list(combinations(range(cfg.M1), 2)))   # (M1 (M1-1)/2, 2)
    ordered = np.concatenate([pairs, pairs[:, ::-1]])        # (M1 (M1-1), 2)
    if cfg.task_split == "shared":
        return ordered, ordered
    if cfg.task_split == "ordered":
        perm = rng.permutation(len(ordered))
        n_test = len(ordered) // 3
        return ordered[np.sort(perm[n_test:])], ordered[np.sort(perm[:n_test])]
    perm = rng.permutation(len(pairs))
    test_pairs, train_pairs = pairs[perm[:cfg.n_test_pairs]], pairs[perm[cfg.n_test_pairs:]]
    both = lambda p: np.concatenate([p, p[:, ::-1]])
    return both(train_pairs), both(test_pairs)


def sample_prompts(cfg: DataConfig, patterns: Patterns, tasks: np.ndarray, b: int,
                   p_out: float, corruption: str, rng: np.random.Generator,
                   test: bool = False) -> Prompts:
    """Draw ``b`` prompts of ``l`` examples and one query, all vectorised over the batch.

    Args:
        tasks: (T, 2) ordered pattern pairs to draw each prompt's task from.
        p_out: probability that an example carries an outlier (p_a in training, alpha at test).
        corruption: what an outlier example's label becomes: "flipped", "targeted", "random".
        test: use the test outlier directions ``v_test`` and magnitude ``kappa_a_test``.
    Returns:
        Prompts with P: (b, l+1, d+1).
    """
    b = check_positive_int("b", b)
    check_choice("corruption", corruption, CORRUPTIONS)
    if not 0.0 <= p_out <= 1.0:
        raise ValueError(f"p_out must lie in [0, 1], got {p_out!r}")
    tasks = np.asarray(tasks)
    if tasks.ndim != 2 or tasks.shape[1] != 2 or len(tasks) == 0:
        raise ValueError(f"tasks must have shape (T>=1, 2), got {tasks.shape}")
    l, L, d = cfg.l, cfg.l + 1, cfg.d
    task = tasks[rng.integers(len(tasks), size=b)]                  # (b, 2)
    y = rng.choice(np.array([-1.0, 1.0]), size=(b, L))              # (b, L) true labels
    pat = np.where(y > 0, task[:, :1], task[:, 1:])                 # (b, L) relevant pattern index
    kappa = rng.uniform(-cfg.K, cfg.K, size=(b, L))                 # (b, L)
    k = rng.integers(cfg.M2, size=(b, L))                           # (b, L) irrelevant pattern index
    x = patterns.mu[pat] + kappa[..., None] * patterns.nu[k]        # (b, L, d)

    outlier = rng.random((b, l)) < p_out                            # (b, l); never the query
    s = rng.integers(cfg.V, size=(b, l))                            # (b, l) outlier direction
    v, kappa_a = (patterns.v_test, cfg.kappa_a_test) if test else (patterns.v, cfg.kappa_a)
    x[:, :l] += (kappa_a * outlier)[..., None] * v[s]               # (b, l, d)

    y_obs = y[:, :l].copy()                                         # (b, l) labels in the prompt
    if corruption == "flipped":
        y_obs = np.where(outlier, -y_obs, y_obs)
    elif corruption == "targeted":
        c = rng.choice(np.array([-1.0, 1.0]), size=(b, 1))          # (b, 1) the one class outliers claim
        y_obs = np.where(outlier, c, y_obs)
    else:
        coin = rng.choice(np.array([-1.0, 1.0]), size=(b, l))
        y_obs = np.where(outlier, coin, y_obs)

    P = np.empty((b, L, d + 1))                                     # (b, L, d+1)
    P[..., :d] = x
    P[:, :l, d] = y_obs
    P[:, l, d] = 0.0                                                # the query's label is what we ask for
    same = pat[:, :l] == pat[:, l:]                                 # (b, l)
    return Prompts(P, y[:, l].copy(), outlier, same)
