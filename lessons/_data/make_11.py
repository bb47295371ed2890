"""Frozen reference data for lesson 11 (run from the repository root: python lessons/_data/make_11.py).

Writes lessons/_data/11_gates.npz, computed with the package's ``icl.outliers.model.gates``:

- ``P`` (3, 7, 5) tokens (the last column holds +-1 labels, the query's label 0) and ``w`` (5,):
  ``G`` (3, 7) and ``s`` (3, 7), the gate weights and steps, for exercise 11.2;
- ``P_big`` (2, 9, 4) and ``w_big`` (4,), large enough that some steps saturate
  (|w . p| up to about 40), with ``G_big`` and ``s_big``.

Fixed sizes, independent of the lesson's FAST switch; they must match the check cells of lesson 11.
"""
from pathlib import Path

import numpy as np

from mamba_from_scratch.icl.outliers.model import gates

OUT = Path(__file__).resolve().parent / "11_gates.npz"
SEED = 111


def tokens(rng, b, L, d1, scale):
    """Random prompts: Gaussian inputs times scale, +-1 labels, the query's label 0."""
    P = scale * rng.standard_normal((b, L, d1))
    P[:, :, -1] = rng.choice([-1.0, 1.0], size=(b, L))
    P[:, -1, -1] = 0.0
    return P


def main():
    rng = np.random.default_rng(SEED)
    P, w = tokens(rng, 3, 7, 5, 1.0), rng.standard_normal(5)
    P_big, w_big = tokens(rng, 2, 9, 4, 6.0), 2.0 * rng.standard_normal(4)
    G, s = gates(P, w)
    G_big, s_big = gates(P_big, w_big)
    np.savez_compressed(OUT, P=P, w=w, G=G, s=s, P_big=P_big, w_big=w_big, G_big=G_big, s_big=s_big)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1024:.1f} KB)")


if __name__ == "__main__":
    main()
