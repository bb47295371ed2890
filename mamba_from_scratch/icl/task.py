"""The Gaussian single-index in-context regression task (SPEC section 2).
Tested in tests/test_icl_links_task.py.

Glossary:
    d        ambient dimension of the inputs x
    r        intrinsic dimension: beta lives in an r-dim coordinate subspace S_r
    I        the r coordinates spanning S_r, drawn once from the task's seed
    P        number of prompts in a batch          N  context examples per prompt
    Q        queries per prompt; they share the prompt's context and beta
    g        the link;  y = g(<beta, x>) + zeta, zeta ~ Unif{-tau, +tau}

One prompt: draw beta uniform on the unit sphere of S_r, then N context pairs (x_i, y_i)
and Q query points x with x ~ N(0, I_d). A model sees the N pairs and one query at a time
and predicts that query's label; errors are measured against the noiseless g(<beta, x>).
Evaluating Q queries per context is Q independent test prompts that happen to share their
context, which makes the error estimate much less noisy for the same cost.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..rng import TASK_SUBSPACE, stream
from ..validate import check_positive_float, check_positive_int
from .links import make_link


@dataclass
class Prompts:
    """A batch of prompts. Shapes: x_context (P, N, d), y_context (P, N), x_query (P, Q, d),
    y_query (P, Q) noisy labels (training targets), y_query_clean (P, Q) noiseless
    g(<beta, x>) (test targets), beta (P, d)."""

    x_context: np.ndarray
    y_context: np.ndarray
    x_query: np.ndarray
    y_query: np.ndarray
    y_query_clean: np.ndarray
    beta: np.ndarray

    def __len__(self):
        return self.x_context.shape[0]

    def subset(self, idx):
        """The prompts at ``idx`` (a slice or an index array)."""
        return Prompts(*(getattr(self, f)[idx] for f in
                         ("x_context", "y_context", "x_query", "y_query", "y_query_clean", "beta")))


class SingleIndexTask:
    """Gaussian single-index prompts with a coordinate-aligned hidden subspace.

    Args:
        d: ambient dimension.  r: intrinsic dimension, 1 <= r <= d.
        link: a :class:`Link` or a name (``"he3"``, ``"poly:0:1:0:0.5"``).
        tau: label noise amplitude, >= 0.
        seed: draws the index set I (the subspace is fixed for the whole task).
    """

    def __init__(self, d, r, link, tau=0.1, seed=0):
        self.d = check_positive_int("d", d)
        self.r = check_positive_int("r", r)
        if self.r > self.d:
            raise ValueError(f"r must be <= d (the subspace lives in R^d), got r={r}, d={d}")
        self.link = make_link(link)
        self.tau = check_positive_float("tau", tau, allow_zero=True)
        self.seed = check_positive_int("seed", seed, minimum=0)
        rng = stream(self.seed, TASK_SUBSPACE)
        self.index_set = np.sort(rng.choice(self.d, size=self.r, replace=False))  # (r,)

    def sample(self, rng, n_prompts, N, n_queries=1):
        """Draw a batch of prompts.

        Args:
            rng: numpy.random.Generator.  n_prompts: P.  N: context length.  n_queries: Q.
        Returns:
            :class:`Prompts`.
        """
        if not isinstance(rng, np.random.Generator):
            raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        P = check_positive_int("n_prompts", n_prompts)
        N = check_positive_int("N", N)
        Q = check_positive_int("n_queries", n_queries)
        g = rng.standard_normal((P, self.r))
        beta = np.zeros((P, self.d))
        beta[:, self.index_set] = g / np.linalg.norm(g, axis=1, keepdims=True)   # (P, d)
        x_context = rng.standard_normal((P, N, self.d))                           # (P, N, d)
        x_query = rng.standard_normal((P, Q, self.d))                             # (P, Q, d)
        y_context = self.link(np.einsum("pnd,pd->pn", x_context, beta)) + self._noise(rng, (P, N))
        y_query_clean = self.link(np.einsum("pqd,pd->pq", x_query, beta))
        y_query = y_query_clean + self._noise(rng, (P, Q))
        return Prompts(x_context, y_context, x_query, y_query, y_query_clean, beta)

    def _noise(self, rng, shape):
        return self.tau * (2.0 * rng.integers(0, 2, size=shape) - 1.0)  # Unif{-tau, +tau}

    def intrinsic(self, x):
        """The coordinates of x in the hidden subspace: (..., d) -> (..., r)."""
        return x[..., self.index_set]

    def context_free_predict(self, prompts):
        """E[g(<beta, x>) | x_query], beta ~ the prior: the best prediction that ignores
        the context (knowing the subspace). Returns (P, Q)."""
        norm_sq = np.sum(self.intrinsic(prompts.x_query) ** 2, axis=-1)
        return self.link.context_free_optimum(norm_sq, self.r)

    def oracle_predict(self, prompts):
        """g(<beta, x_query>): knows beta and g, error 0 against the noiseless target."""
        return self.link(np.einsum("pqd,pd->pq", prompts.x_query, prompts.beta))

    def __repr__(self):
        return (f"SingleIndexTask(d={self.d}, r={self.r}, link={self.link!r}, tau={self.tau}, "
                f"I={self.index_set.tolist()})")
