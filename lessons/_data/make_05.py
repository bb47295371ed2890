"""Frozen reference data for lesson 05 (run from the repository root: python lessons/_data/make_05.py).

Writes lessons/_data/05_scan.npz: for exercise 05.3 (the chunked shared-memory scan kernel),
independent affine scans h_t = a_t h_{t-1} + b_t, h_0 = 0, one row per sequence, computed by
the package's selective scan (numpy backend) with one state coordinate (n = 1), B = C = 1 and
D = 0, so that y_t = h_t with a_t = exp(delta_t A) and b_t = delta_t u_t:

- ``s_a``, ``s_b``, ``s_h`` (3, 37): three sequences of length 37 (not a multiple of the block);
- ``q_a``, ``q_b``, ``q_h`` (2, 20): two sequences of length 20 (with 8 threads the last
  thread's chunk is empty);
- ``o_a``, ``o_b``, ``o_h`` (2, 1): length 1.

float64; fixed sizes, independent of the lesson's FAST switch; they must match lesson 05's checks.
"""
from pathlib import Path

import numpy as np

from mamba_from_scratch.scan import selective_scan_forward

OUT = Path(__file__).resolve().parent / "05_scan.npz"


def problem(rng, s, l):
    """s independent scans of length l as rows (s, l): a, b and the package's states h."""
    u = rng.standard_normal((1, l, s))
    delta = np.log1p(np.exp(rng.standard_normal((1, l, s))))            # softplus: > 0
    A = -np.exp(rng.normal(-1.0, 0.5, (s, 1)))                          # (s, n = 1)
    ones = np.ones((1, l, 1))
    y, _, _ = selective_scan_forward(u, delta, A, ones, ones, np.zeros(s), backend="numpy")
    a = np.exp(delta[0] * A[:, 0])                                      # (l, s)
    return dict(a=a.T.copy(), b=(delta * u)[0].T.copy(), h=y[0].T.copy())


def main():
    rng = np.random.default_rng(505)
    arrays = {}
    for prefix, (s, l) in [("s", (3, 37)), ("q", (2, 20)), ("o", (2, 1))]:
        arrays.update({f"{prefix}_{k}": v for k, v in problem(rng, s, l).items()})
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
