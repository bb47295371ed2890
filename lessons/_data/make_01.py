"""Frozen reference data for lesson 01 (run from the repository root: python lessons/_data/make_01.py).

Writes lessons/_data/01_scan.npz with float64 inputs and the package's outputs:
- "a_*" and "h_*": two S6 problems, (b, l, d, n) = (2, 7, 3, 4) and (1, 5, 2, 6), each with
  u, delta, A, B, C, D and the package's y (b, l, d) and h_last (b, d, n) (numpy backend);
- "k_*": a time-invariant problem for d = 3 channels, n = 4, l = 9: delta (d,), A (d, n),
  B, C (n,) and the convolution kernel K (d, l), measured as the package scan's response to
  a unit impulse at t = 0.
Sizes are fixed (they do not depend on LESSONS_FAST); the file is a few KB.
"""
from pathlib import Path

import numpy as np

from mamba_from_scratch.scan import selective_scan_forward

OUT = Path(__file__).resolve().parent / "01_scan.npz"


def scan_problem(rng, b, l, d, n):
    """Mamba-like inputs (softplus steps, A = -exp(N(0, 1))) and the package's outputs."""
    u = rng.standard_normal((b, l, d))
    delta = np.log1p(np.exp(rng.standard_normal((b, l, d))))             # softplus: > 0
    A = -np.exp(rng.standard_normal((d, n)))
    B = rng.standard_normal((b, l, n))
    C = rng.standard_normal((b, l, n))
    D = rng.standard_normal(d)
    y, h_last, _ = selective_scan_forward(u, delta, A, B, C, D, backend="numpy")
    return dict(u=u, delta=delta, A=A, B=B, C=C, D=D, y=y, h_last=h_last)


def kernel_problem(rng, d, n, l):
    """K[c, k] = response of channel c at time k to a unit impulse at time 0 (no skip)."""
    delta = np.log1p(np.exp(rng.standard_normal(d)))                    # (d,)
    A = -np.exp(rng.standard_normal((d, n)))                             # (d, n)
    B, C = rng.standard_normal(n), rng.standard_normal(n)                # (n,)
    u = np.zeros((1, l, d))
    u[0, 0] = 1.0
    y, _, _ = selective_scan_forward(u, np.tile(delta, (1, l, 1)), A, np.tile(B, (1, l, 1)),
                                     np.tile(C, (1, l, 1)), backend="numpy")
    return dict(delta=delta, A=A, B=B, C=C, K=y[0].T.copy())            # K: (d, l)


def main():
    rng = np.random.default_rng(101)
    arrays = {}
    for prefix, size in [("a", (2, 7, 3, 4)), ("h", (1, 5, 2, 6))]:
        arrays.update({f"{prefix}_{k}": v for k, v in scan_problem(rng, *size).items()})
    arrays.update({f"k_{k}": v for k, v in kernel_problem(rng, 3, 4, 9).items()})
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
