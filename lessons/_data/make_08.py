"""Frozen reference data for lesson 08 (run from the repository root: python lessons/_data/make_08.py).

Writes lessons/_data/08_gates.npz, computed with the package's ``icl.gated`` module:

- ``gate_y`` (3, 12) labels and ``gate_G_a`` / ``gate_G_b`` (3, 12): the product-gate weights of the
  S6 recurrence with A = -1 (``gate_weights(y, "product")``) at (rho, b0) = (0.25, 0) and (0.5, 1),
  for exercise 08.1; ``gate_y_big`` (2, 7) with labels up to about 12 (saturated gates) and
  ``gate_G_big``, at (0.25, 0).
- ``lt_y`` (50,) labels and ``lt_T`` (3, 50): the normalized gate's label transform
  y sigmoid(y/rho + b) / mean(sigmoid(y/rho + b)) at the three (rho, b) of ``LT_GATES``, for
  exercise 08.2.

Fixed sizes, independent of the lesson's FAST switch; they must match the check cells of lesson 08.
"""
import math
from pathlib import Path

import numpy as np

from mamba_from_scratch.icl.gated import gate_weights
from mamba_from_scratch.layers import sigmoid

OUT = Path(__file__).resolve().parent / "08_gates.npz"
GATE_SEED, LT_SEED = 81, 82
LT_GATES = [(0.25, 0.0), (0.25, -math.log(4096)), (1.0, -2.0)]


def main():
    rng = np.random.default_rng(GATE_SEED)
    y = rng.standard_normal((3, 12)) * 2
    y_big = rng.standard_normal((2, 7)) * 6
    out = {"gate_y": y, "gate_G_a": gate_weights(y, "product", rho=0.25, b0=0.0),
           "gate_G_b": gate_weights(y, "product", rho=0.5, b0=1.0),
           "gate_y_big": y_big, "gate_G_big": gate_weights(y_big, "product", rho=0.25, b0=0.0)}
    y_lt = np.random.default_rng(LT_SEED).standard_normal(50) * 2
    T = []
    for rho, b in LT_GATES:
        s = sigmoid(y_lt / rho + b)
        T.append(y_lt * s / s.mean())
    out.update(lt_y=y_lt, lt_T=np.array(T))
    np.savez_compressed(OUT, **out)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1024:.1f} KB)")


if __name__ == "__main__":
    main()
