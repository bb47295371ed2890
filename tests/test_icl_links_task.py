"""The single-index task: Hermite links (ie, ge, context-free optimum), prompts, features."""
import math

import numpy as np
import pytest

from mamba_from_scratch.icl.features import feature_dim, hermite_features, relevant_features, weighted_feature_sum
from mamba_from_scratch.icl.links import Link, hermite_he, make_link
from mamba_from_scratch.icl.task import SingleIndexTask


def test_normalised_hermite_links_are_orthonormal_with_the_right_exponents():
    expect = {1: (1, 1), 2: (2, 2), 3: (3, 1), 4: (4, 2), 5: (5, 1), 6: (6, 2)}
    for k, (ie, ge) in expect.items():
        link = make_link(f"he{k}")
        assert (link.ie, link.ge) == (ie, ge)
        assert f"ie={ie}" in repr(link) and f"ge={ge}" in repr(link)
        assert np.allclose(link.coeffs, np.eye(k + 1)[k], atol=1e-9)
        assert link.second_moment == pytest.approx(1.0)
    assert hermite_he(3, np.array(2.0)) == pytest.approx(8 - 6)


def test_polynomial_links_report_their_exponents_from_quadrature():
    odd_mix = Link([0, 0, 0, 1, 0, 0.5])          # h3 + 0.5 h5: not even
    assert (odd_mix.ie, odd_mix.ge) == (3, 1)
    even_mix = Link([0.2, 0, 1, 0, 0.3])          # even polynomial: ge = 2
    assert (even_mix.ie, even_mix.ge) == (2, 2)
    assert even_mix.second_moment == pytest.approx(0.04 + 1 + 0.09)
    via_cli = make_link("poly:0:1:0:0.5")
    assert (via_cli.ie, via_cli.ge) == (1, 1)
    z = np.linspace(-2, 2, 7)
    assert np.allclose(via_cli(z), z + 0.5 * (z ** 3 - 3 * z) / math.sqrt(6))


@pytest.mark.parametrize("bad", ["he7", "relu", "poly:a:b", 3])
def test_unknown_links_are_a_value_error(bad):
    with pytest.raises(ValueError, match="link"):
        make_link(bad)


def test_constant_link_is_rejected():
    with pytest.raises(ValueError, match="degree >= 1"):
        Link([1.0])


@pytest.mark.parametrize("k", [1, 2, 3, 4, 6])
def test_context_free_optimum_matches_monte_carlo(k):
    """E[g(<beta, x>) | x] over beta uniform on the r-sphere, by brute force for a few x."""
    rng = np.random.default_rng(k)
    r, link = 5, make_link(f"he{k}")
    t2 = np.array([0.5, 3.0, 5.0, 9.0])
    g = rng.standard_normal((400_000, r))
    u = g[:, 0] / np.linalg.norm(g, axis=1)          # first coordinate of a uniform point on S^(r-1)
    mc = np.array([link(np.sqrt(t) * u).mean() for t in t2])
    exact = link.context_free_optimum(t2, r)
    assert np.allclose(exact, mc, atol=0.02 * max(1.0, np.abs(exact).max()))
    if k % 2:
        assert np.all(exact == 0)
    if k == 2:
        assert np.allclose(exact, (t2 / r - 1) / math.sqrt(2))


def test_prompts_have_the_documented_shapes_and_law():
    task = SingleIndexTask(d=7, r=3, link="he2", tau=0.1, seed=4)
    pr = task.sample(np.random.default_rng(0), n_prompts=5, N=11, n_queries=4)
    assert pr.x_context.shape == (5, 11, 7) and pr.y_context.shape == (5, 11)
    assert pr.x_query.shape == (5, 4, 7) and pr.y_query_clean.shape == (5, 4) and pr.beta.shape == (5, 7)
    outside = np.setdiff1d(np.arange(7), task.index_set)
    assert np.all(pr.beta[:, outside] == 0) and np.allclose(np.linalg.norm(pr.beta, axis=1), 1)
    clean = task.link(np.einsum("pnd,pd->pn", pr.x_context, pr.beta))
    assert np.allclose(np.abs(pr.y_context - clean), 0.1)   # zeta in {-tau, +tau}
    assert np.allclose(np.abs(pr.y_query - pr.y_query_clean), 0.1)
    assert np.allclose(task.oracle_predict(pr), pr.y_query_clean)
    again = task.sample(np.random.default_rng(0), 5, 11, 4)
    assert np.array_equal(again.x_context, pr.x_context)
    assert np.array_equal(SingleIndexTask(7, 3, "he2", seed=4).index_set, task.index_set)
    assert len(pr.subset(slice(1, 3))) == 2


@pytest.mark.parametrize("kwargs, match", [
    (dict(d=4, r=5, link="he2"), "r must be <= d"),
    (dict(d=4, r=2, link="he2", tau=-0.1), "tau"),
    (dict(d=0, r=1, link="he2"), "d must"),
    (dict(d=4, r=2, link="he9"), "link"),
])
def test_bad_task_arguments_are_value_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SingleIndexTask(**kwargs)


def test_bad_sample_arguments_are_value_errors():
    task = SingleIndexTask(4, 2, "he3")
    with pytest.raises(ValueError, match="N must"):
        task.sample(np.random.default_rng(0), 2, 0)
    with pytest.raises(ValueError, match="rng"):
        task.sample(0, 2, 3)


def test_features_are_orthonormal_under_the_gaussian():
    d = 3
    x = np.random.default_rng(1).standard_normal((400_000, d))
    phi = hermite_features(x)
    assert phi.shape == (400_000, feature_dim(d)) == (400_000, 1 + 3 + 3 + 3)
    assert np.allclose(phi.T @ phi / len(x), np.eye(feature_dim(d)), atol=0.02)
    assert feature_dim(32) == 561


def test_weighted_feature_sum_equals_the_explicit_sum():
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal((3, 6, 4)), rng.standard_normal((3, 6))
    assert np.allclose(weighted_feature_sum(x, w), np.einsum("pn,pnD->pD", w, hermite_features(x)))


def test_relevant_feature_mask_marks_the_subspace():
    mask = relevant_features(4, [1, 3])
    phi = hermite_features(np.arange(1.0, 5.0)[None])[0]   # x = (1, 2, 3, 4)
    # relevant features: x_1, x_3 (values 2, 4), their squares, and x_1 x_3 = 8
    assert sorted(phi[mask]) == sorted([2.0, 4.0, (4 - 1) / math.sqrt(2), (16 - 1) / math.sqrt(2), 8.0])


def test_several_weightings_at_once_equal_one_at_a_time():
    rng = np.random.default_rng(5)
    x, W = rng.standard_normal((2, 7, 3)), rng.standard_normal((3, 2, 7))
    joint = weighted_feature_sum(x, W)
    assert joint.shape == (3, 2, feature_dim(3))
    for g in range(3):
        assert np.allclose(joint[g], weighted_feature_sum(x, W[g]))
