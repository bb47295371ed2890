"""The one-layer gated Mamba: the scan computes the product gate, gates' closed forms,
hand-written gradients against finite differences, and the two pretraining stages."""
import numpy as np
import pytest

from mamba_from_scratch.gradcheck import numerical_grad, rel_error
from mamba_from_scratch.icl.features import hermite_features
from mamba_from_scratch.icl.gated import (
    context_statistic,
    context_statistics,
    gate_weights,
    product_gate_scan,
    readout_backward,
    readout_forward,
    scalar_mlp_backward,
    scalar_mlp_forward,
)
from mamba_from_scratch.icl.pretrain import PretrainConfig, loss_and_grads, practical, stage1, stage2
from mamba_from_scratch.icl.task import SingleIndexTask
from mamba_from_scratch.layers import sigmoid


def _data(P=3, N=9, d=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((P, N, d)), rng.standard_normal((P, N)), rng


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_product_gate_scan_equals_the_closed_form_sum(backend):
    x, y, rng = _data()
    rho, b0 = 0.7, 0.5
    P, N, d = x.shape
    D = hermite_features(x).shape[-1]
    c_query = rng.standard_normal((P, D))
    h, y_q = product_gate_scan(x, y, rho, b0, c_query=c_query, backend=backend, max_bytes=2000)  # chunked
    # G_j = s_j prod_{k=j+1}^{N+1} (1 - s_k), written as a plain loop
    b = b0 - np.log(N)
    s = sigmoid(np.concatenate([y, np.zeros((P, 1))], axis=1) / rho + b)      # (P, N+1)
    G = np.empty((P, N))
    for j in range(N):
        G[:, j] = s[:, j] * np.prod(1 - s[:, j + 1:], axis=1)
    expect = np.einsum("pn,pnD->pD", G * y, hermite_features(x))
    assert np.allclose(h, expect, rtol=1e-10, atol=1e-12)
    assert np.allclose(y_q, np.sum(c_query * expect, axis=1), rtol=1e-10)
    assert np.allclose(gate_weights(y, "product", rho, b0), G, rtol=1e-10)


def test_normalized_two_channel_and_no_gate_weights():
    _, y, _ = _data(N=12)
    for gate in ("normalized", "two_channel", "none"):
        assert np.allclose(gate_weights(y, gate).sum(axis=1), 1.0)
    G = gate_weights(y, "normalized", rho=0.5, b0=-30.0)   # s ~ e^{v}: the gate is softmax(y / rho)
    soft = np.exp(y / 0.5) / np.exp(y / 0.5).sum(axis=1, keepdims=True)
    assert np.allclose(G, soft, rtol=1e-6)
    assert np.allclose(gate_weights(y, "none"), 1 / 12)
    two = gate_weights(y, "two_channel", rho=0.5)
    assert np.allclose(two, 0.5 * (gate_weights(y, "normalized", 0.5) + gate_weights(-y, "normalized", 0.5)))
    # huge labels do not overflow
    assert np.all(np.isfinite(gate_weights(1e4 * y, "normalized", 0.01)))
    with pytest.raises(ValueError, match="gate"):
        gate_weights(y, "softmax")


def test_context_statistic_of_linear_attention_is_the_mean():
    x, y, _ = _data()
    h = context_statistic(x, y, "none")
    assert np.allclose(h, np.mean(y[..., None] * hermite_features(x), axis=1))


def test_readout_and_mlp_backward_match_finite_differences():
    rng = np.random.default_rng(3)
    P, Q, D, W = 2, 3, 5, 4
    h, phi_q, gamma = rng.standard_normal((P, D)), rng.standard_normal((P, Q, D)), rng.standard_normal(D)
    dout = rng.standard_normal((P, Q))
    out, cache = readout_forward(h, phi_q, gamma)
    dh, dgamma = readout_backward(dout, cache)
    f = lambda: np.sum(readout_forward(h, phi_q, gamma)[0] * dout)
    assert rel_error(dh, numerical_grad(f, h)) < 1e-6
    assert rel_error(dgamma, numerical_grad(f, gamma)) < 1e-6

    out_n = rng.standard_normal((P, Q))
    a, v, c = rng.standard_normal(W), rng.choice([-1.0, 1.0], W), rng.uniform(-1, 1, W)
    df = rng.standard_normal((P, Q))
    _, mcache = scalar_mlp_forward(out_n, a, v, c)
    grads = scalar_mlp_backward(df, mcache)
    g = lambda: np.sum(scalar_mlp_forward(out_n, a, v, c)[0] * df)
    for got, x in zip(grads, (out_n, a, v, c)):
        assert rel_error(got, numerical_grad(g, x)) < 1e-6


def test_loss_gradients_match_finite_differences():
    rng = np.random.default_rng(4)
    P, Q, D, W = 3, 2, 6, 5
    h, phi_q, y = rng.standard_normal((P, D)), rng.standard_normal((P, Q, D)), rng.standard_normal((P, Q))
    params = {"gamma": rng.standard_normal(D), "a": rng.standard_normal(W),
              "v": rng.choice([-1.0, 1.0], W), "c": rng.uniform(-1, 1, W)}
    shift, scale = 0.3, 1.7
    loss = lambda: loss_and_grads(h, phi_q, y, params["gamma"], params["a"], params["v"], params["c"], shift, scale)[0]
    _, grads = loss_and_grads(h, phi_q, y, params["gamma"], params["a"], params["v"], params["c"], shift, scale)
    for k in params:
        assert rel_error(grads[k], numerical_grad(loss, params[k])) < 1e-6, k


def test_stage1_gamma_concentrates_on_the_hidden_subspace():
    task = SingleIndexTask(d=6, r=2, link="he3", seed=1)
    cfg = PretrainConfig(gate="normalized", stage1_prompts=256, stage1_N=256, n_queries=16, width=32, eta1=3.0)
    gamma, v, info = stage1(task, cfg, np.random.default_rng(0))
    assert gamma.shape == (1 + 6 + 6 + 15,) and v.shape == (32,)
    assert info["gamma_mass_on_subspace"] > 2 * info["gamma_mass_chance"]
    assert info["gamma_mass_subspace_linear"] + info["gamma_mass_subspace_quadratic"] == pytest.approx(
        info["gamma_mass_on_subspace"], rel=1e-12)
    # by hand: gamma = 1 on the subspace's linear features only, 3 on one irrelevant square
    from mamba_from_scratch.icl.pretrain import gamma_concentration
    g = np.zeros_like(gamma)
    g[1 + task.index_set] = 1.0
    g[1 + 6 + [j for j in range(6) if j not in task.index_set][0]] = 3.0
    c = gamma_concentration(g, task)
    assert c["gamma_mass_subspace_linear"] == pytest.approx(2 / 11) and c["gamma_mass_subspace_quadratic"] == 0.0


def test_stage1_step_equals_the_hand_gradient():
    task = SingleIndexTask(d=4, r=2, link="he2", seed=2)
    cfg = PretrainConfig(gate="none", stage1_prompts=8, stage1_N=16, n_queries=3, width=6, eta1=0.5, alpha=0.1)
    pr = task.sample(np.random.default_rng(1), 8, 16, 3)
    gamma1, v, _ = stage1(task, cfg, np.random.default_rng(2), prompts=pr)
    # recompute: same v, c draws, the same normalisation, one plain gradient over all prompts
    rng = np.random.default_rng(2)
    v2 = rng.choice([-1.0, 1.0], size=6)
    c2 = rng.uniform(-1.0, 1.0, size=6)
    assert np.array_equal(v, v2)
    h = context_statistic(pr.x_context, pr.y_context, "none")
    phi_q = hermite_features(pr.x_query)
    gamma0 = np.ones(h.shape[1])
    out = readout_forward(h, phi_q, gamma0)[0]
    _, grads = loss_and_grads(h, phi_q, pr.y_query, gamma0, np.full(6, 0.1), v2, c2, out.mean(), out.std())
    assert np.allclose(gamma1, -0.5 * grads["gamma"])


def test_stage2_and_the_gated_model_beat_linear_attention_on_he3():
    task = SingleIndexTask(d=8, r=2, link="he3", seed=0)
    test = task.sample(np.random.default_rng(7), 64, 1024, 16)
    err = {}
    for gate in ("normalized", "none"):
        cfg = PretrainConfig(gate=gate, stage1_prompts=256, stage1_N=256, stage2_prompts=64, n_queries=16, width=64)
        gamma, v, _ = stage1(task, cfg, np.random.default_rng(0))
        model = stage2(task, cfg, gamma, v, 1024, np.random.default_rng(1))
        assert model.info["ridge"] in (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
        err[gate] = np.mean((model.predict(test) - test.y_query_clean) ** 2)
    assert err["normalized"] < 0.8 * err["none"]


def test_practical_variant_lowers_its_training_loss():
    task = SingleIndexTask(d=6, r=2, link="he2", seed=0)
    cfg = PretrainConfig(gate="normalized", n_queries=8, width=16)
    model = practical(task, cfg, N=64, rng=np.random.default_rng(0), steps=60, lr=2e-2, batch=16)
    losses = model.info["losses"]
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:10])


def test_bad_pretrain_config_is_a_value_error():
    with pytest.raises(ValueError, match="gate"):
        PretrainConfig(gate="relu")
    with pytest.raises(ValueError, match="holdout"):
        PretrainConfig(holdout=1.5)
    with pytest.raises(ValueError, match="width"):
        PretrainConfig(width=0)


def test_context_statistics_of_several_gates_equal_each_alone():
    x, y, _ = _data()
    many = context_statistics(x, y, ["product", "normalized", "two_channel", "none"], 0.5, 0.1)
    for gate, h in many.items():
        assert np.allclose(h, context_statistic(x, y, gate, 0.5, 0.1))


@pytest.mark.parametrize("sizes", [(8, 8, 8, 8, 8, 8, 2), (50,)])
def test_stage1_streamed_equals_the_one_shot_stage1(sizes):
    """Streaming Stage I over chunks (two passes: normalisation, then gradient) gives the
    gamma of the one-shot Stage I on the concatenated prompts, for several gates at once."""
    from mamba_from_scratch.icl.pretrain import stage1_streamed
    from mamba_from_scratch.icl.task import Prompts

    task = SingleIndexTask(d=5, r=2, link="he3", seed=0)
    calls = []

    def draw(i):
        calls.append(i)
        return task.sample(np.random.default_rng([3, i]), sizes[i], 16, 4)

    parts = [draw(i) for i in range(len(sizes))]
    whole = Prompts(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                      ("x_context", "y_context", "x_query", "y_query", "y_query_clean", "beta")))
    cfgs = [PretrainConfig(gate="normalized", width=16, n_queries=4, stage1_N=16),
            PretrainConfig(gate="none", width=16, n_queries=4, stage1_N=16),
            PretrainConfig(gate="product", rho=2.0, b0=-3.0, width=16, n_queries=4, stage1_N=16, eta1=0.5)]
    calls.clear()
    streamed = stage1_streamed(task, cfgs, [np.random.default_rng([1, k]) for k in range(3)], draw, len(sizes))
    assert calls == list(range(len(sizes))) * 2                     # two passes, chunk by chunk
    for k, cfg in enumerate(cfgs):
        gamma, v, info = stage1(task, cfg, np.random.default_rng([1, k]), prompts=whole)
        gamma_s, v_s, info_s = streamed[k]
        assert np.array_equal(v, v_s)
        assert np.max(np.abs(gamma_s - gamma)) <= 1e-12 * np.max(np.abs(gamma))
        assert info_s["stage1_loss"] == pytest.approx(info["stage1_loss"], rel=1e-12)
        assert info_s["gamma_mass_on_subspace"] == pytest.approx(info["gamma_mass_on_subspace"], rel=1e-12)
        assert info_s["stage1_prompts"] == sum(sizes)


def test_product_gate_closed_form_statistic_equals_the_scan():
    x, y, _ = _data(P=4, N=30)
    for rho, b0 in ((0.25, 3.0), (8.0, -3.0)):
        scan = context_statistics(x, y, ["product"], rho, b0, backend="numba")["product"]
        closed = context_statistics(x, y, ["product"], rho, b0, product="closed")["product"]
        assert np.allclose(scan, closed, rtol=1e-10, atol=1e-13)
    with pytest.raises(ValueError, match="product"):
        context_statistics(x, y, ["product"], product="fast")
