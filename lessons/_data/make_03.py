"""Frozen reference data for lesson 03 (run from the repository root: python lessons/_data/make_03.py).

Writes lessons/_data/03_scan.npz: two float64 S6 problems, "a" at (b, l, d, n) = (2, 9, 5, 3)
and "h" at (1, 6, 4, 7), each with u, delta, A, B, C, D and the package's reference output y
(numpy backend), used by lesson 03's check of the parallel kernel. Fixed sizes, a few KB.
"""
from pathlib import Path

import numpy as np

from mamba_from_scratch.scan import selective_scan_forward

OUT = Path(__file__).resolve().parent / "03_scan.npz"


def scan_problem(rng, b, l, d, n):
    """Mamba-like inputs (softplus steps, official A = -(1..n)) and the package's y."""
    u = rng.standard_normal((b, l, d))
    delta = np.log1p(np.exp(rng.normal(-1.0, 1.0, (b, l, d))))
    A = -np.tile(np.arange(1, n + 1, dtype=np.float64), (d, 1))
    B = rng.standard_normal((b, l, n))
    C = rng.standard_normal((b, l, n))
    D = rng.standard_normal(d)
    y, _, _ = selective_scan_forward(u, delta, A, B, C, D, backend="numpy")
    return dict(u=u, delta=delta, A=A, B=B, C=C, D=D, y=y)


def main():
    rng = np.random.default_rng(303)
    arrays = {}
    for prefix, size in [("a", (2, 9, 5, 3)), ("h", (1, 6, 4, 7))]:
        arrays.update({f"{prefix}_{k}": v for k, v in scan_problem(rng, *size).items()})
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
