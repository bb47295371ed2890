"""Paper 3's data model: binary in-context classification with additive outliers.
Tested in tests/test_outliers.py.

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

Test-time outliers use new directions in the span of the training ones, the paper's three:
``v'_1 = 0.7 v_1 + 0.6 v_2 - 0.4 v_3``, ``v'_2 = 0.4 v_1 + 0.7 v_2 - 0.6 v_3`` and
``v'_3 = -0.7 v_1 + 0.5 v_2 + 0.5 v_3``. Their coefficient sums are 0.9, 0.5 and 0.3 (the
paper's bound L = 0.3 is the smallest); a gate trained on outliers along v_1, v_2, v_3 alike
sees about ``sum * kappa_a`` of a test outlier, so v'_3 is the hardest to damp.

Where outliers sit: by default each example carries one independently with probability
p_out. ``position`` instead places exactly ``round(p_out l)`` of them on the examples
farthest from the query ("fq", the first ones), at random ("r") or closest to it ("cq",
the last ones), as in the paper's Table 1.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np

from ...validate import check_choice, check_positive_float, check_positive_int

CORRUPTIONS = ("flipped", "targeted", "random")
TASK_SPLITS = ("ordered", "pairs", "shared")
POSITIONS = ("fq", "r", "cq")    # outliers farthest from the query, at random, closest to it

# Rows: the paper's test outlier directions v'_1, v'_2, v'_3 on (v_1, v_2, v_3).
TEST_OUTLIER_MIX = np.array([[0.7, 0.6, -0.4],
                             [0.4, 0.7, -0.6],
                             [-0.7, 0.5, 0.5]])
DIRECTION_NAMES = ("v1'", "v2'", "v3'")


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
    task_split: str = "ordered" # how train and test tasks are kept apart (see split_tasks)
    n_test_pairs: int = 5       # ours: held out for testing: 2 n ordered pairs ("ordered")
                                # or n unordered pairs, i.e. the same 2 n tasks ("pairs")

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
        if self.task_split != "shared" and not 1 <= self.n_test_pairs < n_pairs:
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

    def token_basis(self) -> np.ndarray:
        """(M1 + M2 + V + 1, d + 1): the rows mu, nu, v (label slot 0) and the label unit
        vector e_d. Every token is a combination of these rows (test outliers too, being in
        the span of v), so a batch of prompts is one coefficient tensor times this matrix."""
        X = np.concatenate([self.mu, self.nu, self.v])                # (n, d)
        basis = np.zeros((len(X) + 1, X.shape[1] + 1))
        basis[:-1, :-1] = X
        basis[-1, -1] = 1.0
        return basis


@dataclass
class Prompts:
    """A batch of prompts and what the evaluation needs to know about them."""

    tokens: np.ndarray   # (b, L, d+1) tokens p_i = (x_i, y_i); the query's label slot is 0
    y_query: np.ndarray  # (b,) true label of the query, +1 / -1
    outlier: np.ndarray  # (b, l) True where the example carries an outlier
    same: np.ndarray     # (b, l) True where the example holds the query's pattern
    task: np.ndarray     # (b,) row of the tasks array each prompt was drawn from


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
    """Split the M1 (M1 - 1) ordered pattern pairs into training and test tasks.

    A task is an ordered pair (a, b): "mu_a means +1, mu_b means -1". Its mirror (b, a) uses
    the same two patterns with the labels swapped, which an in-context learner reads off the
    prompt anyway, so how mirrors are split decides what "unseen task" means:
    "ordered"  (default; the paper's and the issue's reading: tasks are ordered pairs and
               train/test are disjoint sets of them) ``2 n_test_pairs`` ordered pairs drawn
               at random are the test tasks. A test task's mirror is usually a training task
               (then its two patterns were seen together in training), sometimes a test task
               too (then they never were).
    "pairs"    (stricter) ``n_test_pairs`` unordered pairs {a, b} are held out with both
               orders, so no training task ever shows a test task's two patterns together.
    "shared"   train and test on every ordered pair (a control, not a held-out test).
    Returns:
        train, test: (T_train, 2) and (T_test, 2) integer arrays of (a, b) pattern indices.
    """
    cfg.validate()
    pairs = np.array(list(combinations(range(cfg.M1), 2)))   # (M1 (M1-1)/2, 2)
    ordered = np.concatenate([pairs, pairs[:, ::-1]])        # (M1 (M1-1), 2)
    if cfg.task_split == "shared":
        return ordered, ordered
    return hold_out(ordered, cfg.task_split, cfg.n_test_pairs, rng)


def hold_out(tasks: np.ndarray, rule: str, n_pairs: int, rng: np.random.Generator):
    """Hold out tasks by the rule of :func:`split_tasks`: ``2 n_pairs`` ordered pairs
    ("ordered"), or every task of ``n_pairs`` unordered pairs ("pairs"; 2 n_pairs tasks
    when both orders are among ``tasks``).

    Used twice: on all ordered pairs for the test tasks, and on the training tasks for the
    validation tasks that choose hyperparameters (the test tasks stay untouched).
    Args:
        tasks: (T, 2) ordered pairs.  rule: "ordered" or "pairs" (see :func:`split_tasks`).
    Returns:
        kept, held: (T - T_held, 2) and (T_held, 2) integer arrays, each in the order of ``tasks``.
    """
    check_choice("rule", rule, ("ordered", "pairs"))
    tasks = np.asarray(tasks)
    if rule == "ordered":
        if not 1 <= 2 * n_pairs < len(tasks):
            raise ValueError(f"n_pairs must lie in [1, {(len(tasks) - 1) // 2}] to hold out 2 n_pairs "
                             f"of {len(tasks)} tasks, got {n_pairs}")
        held = np.zeros(len(tasks), dtype=bool)
        held[rng.permutation(len(tasks))[:2 * n_pairs]] = True
    else:
        unordered = sorted({tuple(sorted(t)) for t in tasks.tolist()})
        if not 1 <= n_pairs < len(unordered):
            raise ValueError(f"n_pairs must lie in [1, {len(unordered) - 1}] for {len(unordered)} "
                             f"pattern pairs, got {n_pairs}")
        chosen = {unordered[i] for i in rng.permutation(len(unordered))[:n_pairs]}
        held = np.array([tuple(sorted(t)) in chosen for t in tasks.tolist()])
    return tasks[~held], tasks[held]


def mirror_seen(tasks: np.ndarray, train_tasks: np.ndarray) -> np.ndarray:
    """(T,) True where the mirror (b, a) of task (a, b) is among ``train_tasks``."""
    seen = {tuple(t) for t in np.asarray(train_tasks).tolist()}
    return np.array([(b, a) in seen for a, b in np.asarray(tasks).tolist()], dtype=bool)


def sample_prompts(cfg: DataConfig, patterns: Patterns, tasks: np.ndarray, b: int,
                   p_out: float, corruption: str, rng: np.random.Generator,
                   test: bool = False, directions=None, position: str | None = None) -> Prompts:
    """Draw ``b`` prompts of ``l`` examples and one query, all vectorised over the batch.

    Each token is written as coefficients on the rows of :meth:`Patterns.token_basis`
    (1 on its relevant pattern, kappa on its irrelevant one, the outlier's magnitude on the
    outlier directions, its label on e_d), then one matrix product makes the tokens.
    Args:
        tasks: (T, 2) ordered pattern pairs to draw each prompt's task from.
        p_out: probability that an example carries an outlier (p_a in training, alpha at test).
        corruption: what an outlier example's label becomes: "flipped", "targeted", "random".
        test: use the test outlier directions ``v_test`` and magnitude ``kappa_a_test``.
        directions: indices of the outlier directions to draw from (of v_test when ``test``,
            else of v), uniformly; None: all V.
        position: None: each example carries an outlier independently with probability
            p_out. "fq" / "r" / "cq": exactly round(p_out l) examples carry one, the first
            (farthest from the query), a uniformly random subset, or the last (closest).
    Returns:
        Prompts with tokens: (b, l+1, d+1).
    """
    b = check_positive_int("b", b)
    check_choice("corruption", corruption, CORRUPTIONS)
    if not 0.0 <= p_out <= 1.0:
        raise ValueError(f"p_out must lie in [0, 1], got {p_out!r}")
    tasks = np.asarray(tasks)
    if tasks.ndim != 2 or tasks.shape[1] != 2 or len(tasks) == 0:
        raise ValueError(f"tasks must have shape (T>=1, 2), got {tasks.shape}")
    if position is not None:
        check_choice("position", position, POSITIONS)
    dirs = np.arange(cfg.V) if directions is None else np.asarray(directions)
    if dirs.ndim != 1 or len(dirs) == 0 or not np.issubdtype(dirs.dtype, np.integer) \
            or dirs.min() < 0 or dirs.max() >= cfg.V:
        raise ValueError(f"directions must be a non-empty list of indices in [0, {cfg.V}), "
                         f"got {directions!r}")
    l, L, M1, M2 = cfg.l, cfg.l + 1, cfg.M1, cfg.M2
    task_idx = rng.integers(len(tasks), size=b)                     # (b,)
    task = tasks[task_idx]                                          # (b, 2)
    y = 2.0 * rng.integers(2, size=(b, L)) - 1.0                    # (b, L) true labels
    pat = np.where(y > 0, task[:, :1], task[:, 1:])                 # (b, L) relevant pattern index
    kappa = rng.uniform(-cfg.K, cfg.K, size=(b, L))                 # (b, L)
    k = rng.integers(M2, size=(b, L))                               # (b, L) irrelevant pattern index
    if position is None:
        outlier = rng.random((b, l)) < p_out                        # (b, l); never the query
    else:
        n_out = int(round(p_out * l))
        if position == "r":  # rank of a uniform draw: a random n_out-subset per prompt
            rank = np.argsort(np.argsort(rng.random((b, l)), axis=1), axis=1)
        else:  # "fq": positions 0.. (farthest from the query); "cq": positions ..l-1
            rank = np.broadcast_to(np.arange(l) if position == "fq" else np.arange(l)[::-1], (b, l))
        outlier = rank < n_out                                      # (b, l)
    s = dirs[rng.integers(len(dirs), size=(b, l))]                  # (b, l) outlier direction

    y_obs = y[:, :l].copy()                                         # (b, l) labels in the prompt
    if corruption == "flipped":
        y_obs = np.where(outlier, -y_obs, y_obs)
    elif corruption == "targeted":
        c = 2.0 * rng.integers(2, size=(b, 1)) - 1.0                # (b, 1) the one class outliers claim
        y_obs = np.where(outlier, c, y_obs)
    else:
        coin = 2.0 * rng.integers(2, size=(b, l)) - 1.0
        y_obs = np.where(outlier, coin, y_obs)

    n = M1 + M2 + cfg.V
    coef = np.zeros((b, L, n + 1))                                  # (b, L, n+1) on token_basis()
    rows, cols = np.arange(b)[:, None], np.arange(L)[None, :]
    coef[rows, cols, pat] = 1.0
    coef[rows, cols, M1 + k] = kappa
    # v'_s = sum_t MIX[s, t] v_t: a test outlier is a combination of the training rows
    mix, kappa_a = (TEST_OUTLIER_MIX, cfg.kappa_a_test) if test else (np.eye(cfg.V), cfg.kappa_a)
    coef[:, :l, M1 + M2:n] = (kappa_a * outlier)[..., None] * mix[s]  # (b, l, V)
    coef[:, :l, n] = y_obs                                          # the query's label slot stays 0
    tokens = (coef.reshape(b * L, n + 1) @ patterns.token_basis()).reshape(b, L, cfg.d + 1)
    same = pat[:, :l] == pat[:, l:]                                 # (b, l)
    return Prompts(tokens, y[:, l].copy(), outlier, same, task_idx)
