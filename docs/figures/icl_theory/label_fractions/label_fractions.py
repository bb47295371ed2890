"""Claim 2's numbers: how many context labels reset the product gate's state at N = 4096.

With s_k = sigmoid(y_k / rho + b0 - log N), a label with y_k / rho + b0 > log N drives s_k past
1/2 and multiplies every earlier token's weight by 1 - s_k < 1/2. At the main run's gate
(rho = 0.25, b0 = 0) that is y > rho log N = 2.079 at N = 4096. This script measures the
fraction of such labels, y = g(<beta, x>) + Unif{-tau, +tau}, tau = 0.1, two ways:
  1. exactly: P(g(z) + zeta > t) for z ~ N(0, 1) from the real roots of g(z) = t -/+ tau;
  2. by Monte Carlo on the task's own prompts (SingleIndexTask.sample, d = 16, r = 8,
     64 prompts x N = 4096, seed 0), with the mean and min count per context.
Run:  python docs/figures/icl_theory/label_fractions/label_fractions.py > docs/figures/icl_theory/label_fractions/label_fractions.csv
"""
import math

import numpy as np

from mamba_from_scratch.icl.links import make_link
from mamba_from_scratch.icl.task import SingleIndexTask

RHO, B0, N, TAU = 0.25, 0.0, 4096, 0.1
T = RHO * (math.log(N) - B0)


def exact_fraction(link, t):
    """P(g(z) > t) for z ~ N(0,1), g a polynomial: sum the Gaussian mass where g - t > 0."""
    poly = np.polynomial.hermite_e.HermiteE(  # g in the probabilists' basis: c_k / sqrt(k!)
        [c / math.sqrt(math.factorial(k)) for k, c in enumerate(link.coeffs)]).convert(
            kind=np.polynomial.Polynomial)
    roots = np.sort([r.real for r in (poly - t).roots() if abs(r.imag) < 1e-12])
    edges = np.concatenate([[-np.inf], roots, [np.inf]])
    Phi = lambda v: 0.5 * (1 + math.erf(v / math.sqrt(2))) if np.isfinite(v) else (1.0 if v > 0 else 0.0)
    total = 0.0
    for a, b in zip(edges[:-1], edges[1:]):
        mid = (a + b) / 2 if np.isfinite(a) and np.isfinite(b) else (b - 1 if np.isfinite(b) else (a + 1 if np.isfinite(a) else 0.0))
        if poly(mid) > t:
            total += Phi(b) - Phi(a)
    return total


print("link,threshold_y,exact_fraction,mc_fraction,mc_labels,mean_count_per_context,min_count_per_context")
for name in ("he2", "he3", "he4"):
    link = make_link(name)
    exact = 0.5 * (exact_fraction(link, T - TAU) + exact_fraction(link, T + TAU))  # zeta = +/- tau
    task = SingleIndexTask(16, 8, name, tau=TAU, seed=0)
    p = task.sample(np.random.default_rng([0, 15]), 64, N)
    over = p.y_context > T                                   # (64, N)
    counts = over.sum(axis=1)
    print(f"{name},{T:.4f},{exact:.5f},{over.mean():.5f},{over.size},{counts.mean():.1f},{counts.min()}")
