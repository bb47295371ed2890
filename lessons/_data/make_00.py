"""Frozen reference data for lesson 00 (run from the repository root: python lessons/_data/make_00.py).

Writes lessons/_data/00_least_squares.npz: the in-context least-squares predictions for the
400 fixed prompts of lesson 00's figure (the package's linear_regression_prompts with seed 2025,
d = 4, 12 examples), used by the fallback of exercise 00.1 when a student has not solved it.
"""
from pathlib import Path

import numpy as np

from mamba_from_scratch.demo import linear_regression_prompts

OUT = Path(__file__).resolve().parent / "00_least_squares.npz"
SEED, P, N, D = 2025, 400, 12, 4          # must match lesson 00's figure cell


def main():
    tokens, targets = linear_regression_prompts(np.random.default_rng(SEED), P, N, D, dtype=np.float64)
    x = tokens[..., :-1]                                                    # (P, N, d)
    predictions = np.zeros((P, N))
    for p in range(P):
        for i in range(1, N):
            w_hat = np.linalg.lstsq(x[p, :i], targets[p, :i], rcond=None)[0]  # minimum-norm fit
            predictions[p, i] = x[p, i] @ w_hat
    np.savez_compressed(OUT, targets=targets, predictions=predictions)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
