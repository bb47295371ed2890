"""Frozen reference data for lesson 09 (run from the repository root: python lessons/_data/make_09.py).

Writes lessons/_data/09_stage1.npz, computed with the package's ``icl.pretrain`` module:

- exercise 09.1 (the Stage I loss and its gradient in gamma), from ``pretrain.loss_and_grads``:
  ``s1_h`` (4, 10) context statistics, ``s1_phi`` (4, 3, 10) query features (Hermite features
  of d = 3 Gaussian queries), ``s1_y`` (4, 3) labels, ``s1_gamma`` (10,), ``s1_a``, ``s1_v``,
  ``s1_c`` (12,) the MLP, ``s1_shift_scale`` (2,), and the results ``s1_loss`` () and
  ``s1_dgamma`` (10,);
- exercise 09.2 (the ridge fit), from ``pretrain.ridge_solve``: ``rd_F`` (50, 8) random ReLU
  features, ``rd_y`` (50,), ``rd_lam`` (3,) and ``rd_a`` (3, 8), one fit per ridge.

Fixed sizes, independent of the lesson's FAST switch; they must match the check cells of lesson 09.
"""
from pathlib import Path

import numpy as np

from mamba_from_scratch.icl.features import hermite_features
from mamba_from_scratch.icl.pretrain import loss_and_grads, ridge_solve

OUT = Path(__file__).resolve().parent / "09_stage1.npz"
SEED = 91


def main():
    rng = np.random.default_rng(SEED)
    P, Q, d, W = 4, 3, 3, 12
    phi = hermite_features(rng.standard_normal((P, Q, d)))                 # (P, Q, D), D = 10 at d = 3
    D = phi.shape[-1]
    h = rng.standard_normal((P, D))
    y = rng.standard_normal((P, Q))
    gamma = 1.0 + 0.3 * rng.standard_normal(D)
    a = 0.5 * rng.standard_normal(W)                                      # not tiny: every term matters
    v = rng.choice([-1.0, 1.0], size=W)
    c = rng.uniform(-1.0, 1.0, size=W)
    shift, scale = 0.2, 1.7
    loss, grads = loss_and_grads(h, phi, y, gamma, a, v, c, shift, scale)
    F = np.maximum(rng.standard_normal((50, 1)) * rng.choice([-1.0, 1.0], 8) + rng.uniform(-1, 1, 8), 0.0)
    y_r = rng.standard_normal(50)
    lams = np.array([1e-4, 0.01, 1.0])
    a_r = np.array([ridge_solve(F.T @ F, F.T @ y_r, 50, lam) for lam in lams])
    np.savez_compressed(OUT, s1_h=h, s1_phi=phi, s1_y=y, s1_gamma=gamma, s1_a=a, s1_v=v, s1_c=c,
                        s1_shift_scale=np.array([shift, scale]), s1_loss=np.array(loss),
                        s1_dgamma=grads["gamma"], rd_F=F, rd_y=y_r, rd_lam=lams, rd_a=a_r)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1024:.1f} KB)")


if __name__ == "__main__":
    main()
