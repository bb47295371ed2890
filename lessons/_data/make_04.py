"""Frozen reference data for lesson 04 (run from the repository root: python lessons/_data/make_04.py).

Writes lessons/_data/04_scan.npz. Every state is the package's selective scan with one state
coordinate (n = 1), B = C = 1 and D = 0, so that y_t = h_t with a_t = exp(delta_t A) and
b_t = delta_t u_t (numpy backend). For each prefix p in ("s", "p", "q") at lengths 37, 64 and
13 (c = 3 independent scans each):

- ``p_loga`` (l, c) = delta A, ``p_a`` = exp(loga), ``p_b`` (l, c) = delta u;
- ``p_Apre`` (l, c) the cumulative products of a (closed form), ``p_h`` (l, c) the states;
- ``p_g`` (l, c) an upstream gradient dL/dh_t and ``p_adj`` (l, c) the adjoint
  dL/db_t = delta_t of lesson 02, read from the package's backward as du / (B delta) with B = 1.

Fixed sizes, independent of the lesson's FAST switch; they must match the check cells of lesson 04.
"""
from pathlib import Path

import numpy as np

from mamba_from_scratch.scan import selective_scan_backward, selective_scan_forward

OUT = Path(__file__).resolve().parent / "04_scan.npz"


def problem(rng, l, c):
    """An affine scan of c independent channels of length l, its states and one adjoint."""
    u = rng.standard_normal((1, l, c))
    delta = np.log1p(np.exp(rng.standard_normal((1, l, c))))            # softplus: > 0
    A = -np.exp(rng.normal(-1.0, 0.5, (c, 1)))                          # (c, n = 1)
    ones = np.ones((1, l, 1))
    y, _, cache = selective_scan_forward(u, delta, A, ones, ones, np.zeros(c), backend="numpy")
    g = rng.standard_normal((1, l, c))                                  # dL/dy_t = dL/dh_t here
    du = selective_scan_backward(g, cache)[0]                           # du_t = delta_t * adjoint_t
    loga = (delta[0] * A[:, 0])                                         # (l, c)
    return dict(loga=loga, a=np.exp(loga), b=(delta * u)[0], Apre=np.cumprod(np.exp(loga), axis=0),
                h=y[0], g=g[0], adj=(du / delta)[0])


def main():
    rng = np.random.default_rng(404)
    arrays = {}
    for prefix, l in [("s", 37), ("p", 64), ("q", 13)]:
        arrays.update({f"{prefix}_{k}": v for k, v in problem(rng, l, 3).items()})
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
