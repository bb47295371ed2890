"""Kernel ridge baselines (against scikit-learn and brute-force leave-one-out) and the error metric."""
import numpy as np
import pytest

from mamba_from_scratch.icl.krr import kernel_matrix, krr_fit_predict, krr_predict, loo_errors
from mamba_from_scratch.icl.metrics import normalized_error, paired_difference, per_prompt_error


@pytest.mark.parametrize("kernel, sk", [(("rbf", 1.0), dict(kernel="rbf", gamma=1 / (2 * 3))),
                                        (("poly", 3), dict(kernel="poly", degree=3, gamma=1 / 3, coef0=1))])
def test_krr_matches_scikit_learn(kernel, sk):
    KernelRidge = pytest.importorskip("sklearn.kernel_ridge").KernelRidge
    rng = np.random.default_rng(0)
    X, Xq = rng.standard_normal((40, 3)), rng.standard_normal((7, 3))
    y = np.sin(X[:, 0]) + 0.1 * rng.standard_normal(40)
    pred, choice = krr_fit_predict(X, y, Xq, kernels=[kernel], ridges_rel=(0.05,))
    ref = KernelRidge(alpha=choice["ridge"], **sk).fit(X, y).predict(Xq)
    assert np.allclose(pred, ref, rtol=1e-8, atol=1e-10)


def test_closed_form_leave_one_out_equals_refitting_without_each_point():
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((15, 2)), rng.standard_normal(15)
    K = kernel_matrix(X, X, ("rbf", 0.5))
    ridges = np.array([0.01, 0.3, 2.0])
    loo, _ = loo_errors(K, y, ridges)
    for lam, got in zip(ridges, loo):
        res = []
        for i in range(15):
            keep = np.arange(15) != i
            alpha = np.linalg.solve(K[np.ix_(keep, keep)] + lam * np.eye(14), y[keep])
            res.append(y[i] - K[i, keep] @ alpha)
        assert got == pytest.approx(np.mean(np.square(res)), rel=1e-8)


def test_krr_selects_by_loo_and_learns_a_quadratic():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 200, 2))
    xq = rng.standard_normal((2, 10, 2))
    f = lambda x: x[..., 0] ** 2 - x[..., 1]
    pred, choices = krr_predict(x, f(x), xq)
    assert pred.shape == (2, 10) and len(choices) == 2
    assert all(c["kernel"][0] == "poly" for c in choices)    # a polynomial kernel fits it exactly
    assert np.mean((pred - f(xq)) ** 2) < 1e-2 * np.mean(f(xq) ** 2)
    with pytest.raises(ValueError, match="x_query"):
        krr_predict(x, f(x), xq[..., :1])


def test_normalized_error_scores_the_zero_predictor_near_one():
    rng = np.random.default_rng(3)
    target = rng.standard_normal((400, 8))
    err, se, e = normalized_error(np.zeros_like(target), target, second_moment=1.0)
    assert abs(err - 1) < 4 * se and e.shape == (400,)
    assert normalized_error(target, target)[0] == 0.0
    assert np.allclose(per_prompt_error(2 * target, target, 1.0), np.mean(target ** 2, axis=1))
    diff, dse = paired_difference(e, 0.5 * e)
    assert diff == pytest.approx(0.5 * err) and dse > 0
    with pytest.raises(ValueError, match="pred"):
        normalized_error(np.zeros((3, 2)), target)
