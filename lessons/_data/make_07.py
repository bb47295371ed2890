"""Frozen reference data for lesson 07 (run from the repository root: python lessons/_data/make_07.py).

Writes lessons/_data/07_hermite.npz, computed with the package's ``icl.links`` module:

- ``table_z`` (3, 5) points and ``table_h`` (9, 3, 5): the normalized Hermite polynomials
  h_k = He_k / sqrt(k!), k = 0..8, at those points, for exercise 07.1.
- ``mc_est``, ``mc_se`` (5,): the Monte Carlo estimate of c_k = E[g(z) h_k(z)] and its standard
  error for g = 0.6 h_1 + 0.8 h_3, k = 0..4, each from ``default_rng(k).standard_normal(200_000)``
  (exercise 07.2); ``mc_he3_est``, ``mc_he3_se``: the same for He3, k = 3, n = 1000, seed 11.

Fixed sizes, independent of the lesson's FAST switch; they must match the check cells of lesson 07.
"""
import math
from pathlib import Path

import numpy as np

from mamba_from_scratch.icl.links import hermite_he, make_link

OUT = Path(__file__).resolve().parent / "07_hermite.npz"
TABLE_SEED, TABLE_DEGREE = 71, 8
MC_LINK, MC_N = "poly:0:0.6:0:0.8", 200_000


def mc(g, k, n, rng):
    """The estimator of exercise 07.2: one draw of n standard normals, population std."""
    z = rng.standard_normal(n)
    prod = g(z) * hermite_he(k, z) / math.sqrt(math.factorial(k))
    return prod.mean(), prod.std() / math.sqrt(n)


def main():
    z = np.random.default_rng(TABLE_SEED).standard_normal((3, 5)) * 2
    table = np.stack([hermite_he(k, z) / math.sqrt(math.factorial(k)) for k in range(TABLE_DEGREE + 1)])
    g = make_link(MC_LINK)
    est, se = zip(*(mc(g, k, MC_N, np.random.default_rng(k)) for k in range(5)))
    est3, se3 = mc(make_link("he3"), 3, 1000, np.random.default_rng(11))
    np.savez_compressed(OUT, table_z=z, table_h=table, mc_est=np.array(est), mc_se=np.array(se),
                        mc_he3_est=np.array(est3), mc_he3_se=np.array(se3))
    print(f"wrote {OUT} ({OUT.stat().st_size / 1024:.1f} KB)")


if __name__ == "__main__":
    main()
