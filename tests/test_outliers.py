"""Paper 3 (outliers): data model, gate as a selective scan, hand-written gradients, floor, CLI."""

import numpy as np
import pytest

from mamba_from_scratch.gradcheck import numerical_grad, rel_error
from mamba_from_scratch.icl.outliers.data import (
    TEST_OUTLIER_MIX,
    DataConfig,
    hold_out,
    make_patterns,
    mirror_seen,
    sample_prompts,
    split_tasks,
)
from mamba_from_scratch.icl.outliers.floor import clean_vote_floor, error_floor, error_floor_closed, p_no_clean_same
from mamba_from_scratch.icl.outliers.model import (
    ModelConfig,
    gates,
    hinge_backward,
    hinge_forward,
    init_params,
    model_backward,
    model_forward,
)
from mamba_from_scratch.icl.outliers.train import TrainConfig, train
from mamba_from_scratch.scan import selective_scan_forward

SMALL = DataConfig(d=8, M1=3, M2=2, V=3, l=5, n_test_pairs=1)


def small_batch(seed=0, b=4, p_out=0.5, corruption="flipped"):
    rng = np.random.default_rng(seed)
    patterns = make_patterns(SMALL, rng)
    train_tasks, _ = split_tasks(SMALL, rng)
    return sample_prompts(SMALL, patterns, train_tasks, b, p_out, corruption, rng)


def perturbed_params(model, seed=1):
    rng = np.random.default_rng(seed)
    params = init_params(ModelConfig(SMALL.d + 1, model), rng)
    return {k: v + 0.3 * rng.standard_normal(v.shape) for k, v in params.items()}


def test_patterns_orthogonal_with_the_right_norms():
    cfg = DataConfig()
    p = make_patterns(cfg, np.random.default_rng(0))
    X = np.concatenate([p.mu, p.nu, p.v])
    gram = X @ X.T
    assert np.allclose(gram - np.diag(np.diag(gram)), 0, atol=1e-12)
    assert np.allclose(np.linalg.norm(p.mu, axis=1), cfg.beta)
    assert np.allclose(np.linalg.norm(p.nu, axis=1), cfg.beta)
    assert np.allclose(np.linalg.norm(p.v, axis=1), cfg.outlier_norm)
    assert np.allclose(p.v_test[0], 0.7 * p.v[0] + 0.6 * p.v[1] - 0.4 * p.v[2])
    assert np.allclose(p.v_test @ np.concatenate([p.mu, p.nu]).T, 0, atol=1e-12)


@pytest.mark.parametrize("split", ["ordered", "pairs"])
def test_train_and_test_tasks_are_disjoint(split):
    cfg = DataConfig(task_split=split)
    assert DataConfig().task_split == "ordered"                    # the default
    train, test = split_tasks(cfg, np.random.default_rng(3))
    as_set = lambda t: {tuple(x) for x in t}
    assert not as_set(train) & as_set(test)
    assert len(train) + len(test) == cfg.M1 * (cfg.M1 - 1)
    assert len(test) == 2 * cfg.n_test_pairs
    seen = mirror_seen(test, train)
    assert np.array_equal(seen, [(b, a) in as_set(train) for a, b in test])
    if split == "pairs":  # neither order of a test pair is trained
        assert not {frozenset(x) for x in train} & {frozenset(x) for x in test}
        assert not seen.any()


def test_ordered_split_depends_on_the_seed_and_mixes_mirrors():
    cfg = DataConfig()
    tests = [split_tasks(cfg, np.random.default_rng(s))[1] for s in range(20)]
    assert len({tuple(map(tuple, t)) for t in tests}) == 20
    seen = np.concatenate([mirror_seen(t, split_tasks(cfg, np.random.default_rng(s))[0])
                           for s, t in enumerate(tests)])
    # a random 10 of 30 ordered pairs: a test task's mirror is trained with prob. 20/29
    assert 0.55 < seen.mean() < 0.85


def test_hold_out_validation_tasks_come_from_the_training_tasks():
    cfg = DataConfig()
    rng = np.random.default_rng(0)
    train, test = split_tasks(cfg, rng)
    for rule in ("ordered", "pairs"):
        fit, val = hold_out(train, rule, 3, rng)
        as_set = lambda t: {tuple(x) for x in t}
        assert as_set(fit) | as_set(val) == as_set(train) and not as_set(fit) & as_set(val)
        assert not as_set(val) & as_set(test)
    with pytest.raises(ValueError, match="n_pairs"):
        hold_out(train, "ordered", 10, rng)


def test_prompt_labels_and_corruptions():
    cfg = DataConfig()
    rng = np.random.default_rng(0)
    patterns = make_patterns(cfg, rng)
    train, _ = split_tasks(cfg, rng)
    for corruption in ("flipped", "targeted", "random"):
        pr = sample_prompts(cfg, patterns, train, 3000, 0.4, corruption, rng)
        assert pr.tokens.shape == (3000, cfg.l + 1, cfg.d + 1)
        assert np.all(pr.tokens[:, -1, -1] == 0)                       # the query's label slot
        # the query never carries an outlier: no component along the outlier directions
        assert np.allclose(pr.tokens[:, -1, :cfg.d] @ patterns.v.T, 0, atol=1e-9)
        assert abs(pr.outlier.mean() - 0.4) < 0.01
        y = pr.tokens[:, :-1, -1]
        # clean examples with the query's pattern carry the query's label
        clean_same = pr.same & ~pr.outlier
        assert np.all(y[clean_same] == np.broadcast_to(pr.y_query[:, None], y.shape)[clean_same])
        truth = np.where(pr.same, pr.y_query[:, None], -pr.y_query[:, None])
        agree = (y == truth)[pr.outlier].mean()
        if corruption == "flipped":
            assert agree == 0.0
        else:
            assert abs(agree - 0.5) < 0.02
        if corruption == "targeted":  # all outliers of a prompt claim one class
            lo = np.where(pr.outlier, y, 2).min(axis=1)
            hi = np.where(pr.outlier, y, -2).max(axis=1)
            has = pr.outlier.any(axis=1)
            assert np.all(lo[has] == hi[has])


@pytest.mark.parametrize("test", [False, True])
def test_tokens_are_the_data_model(test):
    """Each input is mu_j + kappa nu_k (+ kappa_a v_s on outliers), read back by projection."""
    cfg = DataConfig(kappa_a_test=3.0)
    rng = np.random.default_rng(7)
    p = make_patterns(cfg, rng)
    train, _ = split_tasks(cfg, rng)
    pr = sample_prompts(cfg, p, train, 500, 0.5, "random", rng, test=test)
    x = pr.tokens[..., :cfg.d]                                          # (b, L, d)
    on_mu = x @ p.mu.T / cfg.beta**2                               # (b, L, M1) coefficients
    on_nu = x @ p.nu.T / cfg.beta**2
    on_v = x @ p.v.T / cfg.outlier_norm**2                         # (b, L, V)
    assert np.allclose(np.sort(on_mu, axis=-1)[..., :-1], 0, atol=1e-12)
    assert np.allclose(on_mu.max(axis=-1), 1)                      # exactly one relevant pattern
    task = train[pr.task]                                          # (b, 2)
    assert np.all((on_mu.argmax(-1)[..., None] == task[:, None, :]).any(-1))  # the prompt's task
    assert np.all(np.abs(on_nu).max(axis=-1) <= cfg.K + 1e-12)
    assert np.all(np.sum(np.abs(on_nu) > 1e-12, axis=-1) <= 1)     # at most one irrelevant pattern
    kappa_a, rows = (cfg.kappa_a_test, TEST_OUTLIER_MIX) if test else (cfg.kappa_a, np.eye(3))
    coef = on_v[:, :-1][pr.outlier] / kappa_a                      # (n_outliers, V)
    assert np.allclose(np.abs(coef[:, None, :] - rows[None]).sum(-1).min(axis=1), 0, atol=1e-9)
    assert np.allclose(on_v[:, :-1][~pr.outlier], 0, atol=1e-12)
    recon = on_mu @ p.mu + on_nu @ p.nu + on_v @ p.v
    assert np.allclose(recon, x, atol=1e-12)                       # nothing outside those directions


def test_test_directions_are_the_papers_and_can_be_chosen():
    cfg = DataConfig()
    rng = np.random.default_rng(3)
    p = make_patterns(cfg, rng)
    train, _ = split_tasks(cfg, rng)
    assert np.allclose(TEST_OUTLIER_MIX, [[0.7, 0.6, -0.4], [0.4, 0.7, -0.6], [-0.7, 0.5, 0.5]])
    assert np.allclose(TEST_OUTLIER_MIX.sum(axis=1), [0.9, 0.5, 0.3])
    for j in range(3):
        pr = sample_prompts(cfg, p, train, 200, 0.5, "flipped", rng, test=True, directions=[j])
        on_v = pr.tokens[:, :-1, :cfg.d] @ p.v.T / cfg.kappa_a_test     # (b, l, V)
        assert pr.outlier.any()
        assert np.allclose(on_v[pr.outlier], TEST_OUTLIER_MIX[j], atol=1e-9)


def test_outlier_positions_farthest_random_closest():
    cfg = DataConfig()
    rng = np.random.default_rng(4)
    p = make_patterns(cfg, rng)
    train, _ = split_tasks(cfg, rng)
    k = 7                                                          # round(0.35 * 20)
    fq = sample_prompts(cfg, p, train, 300, 0.35, "flipped", rng, test=True, position="fq")
    cq = sample_prompts(cfg, p, train, 300, 0.35, "flipped", rng, test=True, position="cq")
    r = sample_prompts(cfg, p, train, 3000, 0.35, "flipped", rng, test=True, position="r")
    first = np.arange(cfg.l) < k
    assert np.all(fq.outlier == first) and np.all(cq.outlier == first[::-1])
    assert np.all(r.outlier.sum(axis=1) == k)
    # random positions: every position is an outlier with probability k / l
    assert np.abs(r.outlier.mean(axis=0) - k / cfg.l).max() < 4 * np.sqrt(0.35 * 0.65 / 3000)
    # the outlier examples carry an outlier component, the others none
    on_v = cq.tokens[:, :-1, :cfg.d] @ p.v.T
    assert np.all(np.abs(on_v[cq.outlier]).sum(-1) > 0.1) and np.allclose(on_v[~cq.outlier], 0, atol=1e-12)


def test_gate_is_a_selective_scan_with_exact_zoh():
    """h_t = (1 - s_t) h_{t-1} + s_t z_t is the S6 scan with A = -1, delta = softplus(w.p)."""
    pr = small_batch()
    params = perturbed_params("mamba")
    x, w = pr.tokens, params["w"]
    G, s = gates(x, w)
    # the closed form against the definition G_i = s_i prod_{j>i} (1 - s_j)
    L = x.shape[1]
    G_loop = np.array([[s[b, i] * np.prod(1 - s[b, i + 1:]) for i in range(L)] for b in range(len(x))])
    assert np.allclose(G, G_loop, rtol=1e-12, atol=0)
    # the package's scan: d_inner = 1 channel, state = z_i = y_i W_B p_i
    z = x[:, :, -1:] * (x @ params["W_B"].T)                     # (b, L, m)
    v = x @ w
    delta = np.log1p(np.exp(v))[..., None]                       # softplus
    c = x[:, -1] @ params["W_C"].T
    C = np.ascontiguousarray(np.broadcast_to(c[:, None], z.shape))
    _, h_last, _ = selective_scan_forward(s[..., None] / delta, delta, -np.ones((1, z.shape[2])),
                                          z, C, backend="numpy")
    assert np.allclose(h_last[:, 0], np.einsum("bl,blm->bm", G, z), rtol=1e-12, atol=1e-14)
    F_closed, _ = model_forward(params, ModelConfig.of(params, "closed"), x)
    F_scan, _ = model_forward(params, ModelConfig.of(params, "scan"), x)
    assert np.allclose(F_closed, F_scan, rtol=1e-12, atol=1e-14)
    assert np.allclose(F_closed, np.einsum("bm,bm->b", h_last[:, 0], c))


@pytest.mark.parametrize("model,method", [("mamba", "closed"), ("mamba", "scan"), ("linear", "closed")])
def test_gradients_match_finite_differences(model, method):
    """Every parameter's gradient and the tokens' (labels and the query included)."""
    pr = small_batch(seed=2)
    params = perturbed_params(model)
    cfg = ModelConfig(SMALL.d + 1, model, method=method)
    x = pr.tokens.copy()
    dF = np.random.default_rng(5).standard_normal(len(x))
    _, cache = model_forward(params, cfg, x)
    grads, dx = model_backward(dF, cache)
    assert list(grads) == list(params) and dx.shape == x.shape
    loss = lambda: np.sum(model_forward(params, cfg, x)[0] * dF)
    for key, value in params.items():
        assert rel_error(grads[key], numerical_grad(loss, value)) < 1e-6, key
    assert rel_error(dx, numerical_grad(loss, x)) < 1e-6


def test_closed_and_scan_backward_agree():
    pr = small_batch(seed=4, b=6)
    params = perturbed_params("mamba", seed=3)
    dF = np.random.default_rng(6).standard_normal(6)
    g1, dx1 = model_backward(dF, model_forward(params, ModelConfig.of(params, "closed"), pr.tokens)[1])
    g2, dx2 = model_backward(dF, model_forward(params, ModelConfig.of(params, "scan"), pr.tokens)[1])
    for key in params:
        assert np.allclose(g1[key], g2[key], rtol=1e-9, atol=1e-12)
    assert np.allclose(dx1, dx2, rtol=1e-9, atol=1e-12)


def test_training_on_shared_batches_learns_and_is_reproducible():
    cfg = DataConfig(d=12, M1=3, M2=4, V=3, l=8, n_test_pairs=1)
    rng = np.random.default_rng(0)
    patterns = make_patterns(cfg, rng)
    tasks, _ = split_tasks(cfg, rng)
    histories = []
    for _ in range(2):
        models = {m: init_params(ModelConfig(cfg.d + 1, m), np.random.default_rng(1)) for m in ("mamba", "linear")}
        clean = sample_prompts(cfg, patterns, tasks, 500, 0.0, "flipped", np.random.default_rng(2))
        tc = TrainConfig(steps=200, batch=32, schedule="cosine", eval_every=50)
        histories.append(train(models, {"mamba": 0.05, "linear": 0.05 / cfg.l}, cfg, patterns, tasks,
                               tc, np.random.default_rng(3), {"clean": clean}))
    h = histories[0]["mamba"]
    assert h["step"] == [50, 100, 150, 200]
    assert h["loss"][-1] < h["loss"][0] and h["error_clean"][-1] < 0.1
    assert histories[0] == histories[1]                            # seeded end to end
    with pytest.raises(ValueError, match="lrs"):
        train(models, {"mamba": 0.1}, cfg, patterns, tasks, tc, rng)
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(schedule="step").validate()


def test_hinge_gradient():
    rng = np.random.default_rng(0)
    F, y = rng.standard_normal(7) * 2, rng.choice([-1.0, 1.0], 7)
    loss, cache = hinge_forward(F, y)
    dF = hinge_backward(0.7, cache)                                # the upstream gradient scales dF
    eps = 1e-7
    num = np.array([(hinge_forward(F + eps * e, y)[0] - hinge_forward(F - eps * e, y)[0]) / (2 * eps)
                    for e in np.eye(7)])
    assert np.allclose(dF, 0.7 * num, atol=1e-6)
    assert loss == pytest.approx(np.maximum(0, 1 - y * F).mean())


def test_init_is_the_papers():
    params = init_params(ModelConfig(31, "mamba"), np.random.default_rng(0))
    assert np.allclose(np.diag(params["W_B"])[:30], 0.2) and params["W_B"][30, 30] == 0
    assert np.count_nonzero(params["W_C"]) == 30
    assert params["w"].shape == (31,)
    assert "w" not in init_params(ModelConfig(31, "linear"), np.random.default_rng(0))


def test_floor_exact_and_closed_form_agree_and_match_sampling():
    alphas = np.linspace(0, 1, 11)
    for c in ("flipped", "targeted", "random"):
        assert np.allclose(error_floor(alphas, 20, c), error_floor_closed(alphas, 20, c), rtol=1e-12, atol=1e-15)
    assert error_floor(0.8, 20, "flipped") == pytest.approx(0.9**20 - 0.5**21)
    assert 0.11 < float(error_floor(0.8)) < 0.13
    # Monte Carlo: the share of sampled test prompts with no clean example of the query's pattern
    cfg = DataConfig()
    rng = np.random.default_rng(1)
    patterns = make_patterns(cfg, rng)
    _, test = split_tasks(cfg, rng)
    pr = sample_prompts(cfg, patterns, test, 40000, 0.8, "flipped", rng, test=True)
    share = (~(pr.same & ~pr.outlier).any(axis=1)).mean()
    p = float(p_no_clean_same(0.8, 20))
    assert abs(share - p) < 4 * np.sqrt(p * (1 - p) / 40000)
    # the lower reference: no clean example at all
    share = pr.outlier.all(axis=1).mean()
    p = float(clean_vote_floor(0.8, 20))
    assert p == pytest.approx(0.8**20) and clean_vote_floor(0.8, 20, "random") == pytest.approx(p / 2)
    assert abs(share - p) < 4 * np.sqrt(p * (1 - p) / 40000)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="corruption"):
        small_batch(corruption="swapped")
    with pytest.raises(ValueError, match="p_out"):
        small_batch(p_out=1.5)
    rng = np.random.default_rng(0)
    patterns = make_patterns(SMALL, rng)
    tasks, _ = split_tasks(SMALL, rng)
    with pytest.raises(ValueError, match="position"):
        sample_prompts(SMALL, patterns, tasks, 2, 0.5, "flipped", rng, position="near")
    for bad in ([3], [], [0.5]):
        with pytest.raises(ValueError, match="directions"):
            sample_prompts(SMALL, patterns, tasks, 2, 0.5, "flipped", rng, directions=bad)
    with pytest.raises(ValueError, match="alpha"):
        error_floor(1.2)
    with pytest.raises(ValueError, match="task_split"):
        DataConfig(task_split="none").validate()
    with pytest.raises(ValueError, match="method"):
        ModelConfig(SMALL.d + 1, "mamba", method="fft")
    with pytest.raises(ValueError, match="gate vector"):
        model_forward(perturbed_params("linear"), ModelConfig(SMALL.d + 1, "mamba"), small_batch().tokens)
