"""Pretraining the one-layer model: two-stage (Stage I + Stage II) and the "practical" variant.
Tested in tests/test_icl_gated.py.

Two-stage pretraining, Algorithm 1 of Nishikawa et al. (ICML 2025), which paper 1 follows:
    Stage I   one gradient step on gamma from gamma0 on the squared loss over T1 prompts of
              length N1, with the MLP output weights at a tiny constant a = alpha 1 and
              weight decay lambda1 = 1 / eta1. The step is
                  gamma1 = gamma0 - eta1 (grad + lambda1 gamma0) = -eta1 grad,
              so the initialisation is forgotten and gamma1 is the (negative) gradient: a
              correlation between labels and features that is large on the features of the
              hidden subspace. gamma0 = 1, not 0: from 0 the expected gradient vanishes
              whenever the information exponent exceeds 2 (it only sees E[y phi(x)]).
    Stage II  redraw c ~ Unif[-1, 1], keep v, and fit a by ridge regression on T2 fresh
              prompts (closed form), the ridge strength chosen on a held-out quarter.
The overall size of gamma1 does not matter: the MLP input is re-normalised afterwards
(shift and scale estimated on the Stage II prompts and then frozen).

Practical variant (reviewers asked whether the two-stage algorithm matters): gamma and the
whole MLP (a, v, c) trained jointly by AdamW on the squared loss, gradients by hand.

Glossary: T1, N1 Stage I prompts and their length; T2 Stage II prompts; Q queries per
prompt; W MLP width; n_feat = dim phi.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from ..optim import AdamW
from ..validate import check_choice, check_positive_float, check_positive_int
from .features import feature_groups, hermite_features, relevant_features
from .gated import (
    GATES,
    GatedMamba,
    context_statistic,
    context_statistics,
    readout_backward,
    readout_forward,
    scalar_mlp_backward,
    scalar_mlp_forward,
)

RIDGES = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


@dataclass
class PretrainConfig:
    """Sizes of pretraining; the defaults are what the icl-theory experiment uses."""

    gate: str = "normalized"
    rho: float = 0.25          # gate temperature: s = sigmoid(y / rho + b)
    b0: float = 0.0            # gate offset, b = b0 - log N
    width: int = 256           # MLP width W: a 1-d function needs few random ReLUs
    n_queries: int = 32        # queries per prompt, sharing its context
    stage1_prompts: int = 1024   # T1
    stage1_N: int = 512          # N1
    gamma0: float = 1.0
    alpha: float = 1e-3        # Stage I output weights a = alpha 1 (tiny, so f ~ 0)
    eta1: float = 1.0          # Stage I step; lambda1 = 1 / eta1
    stage2_prompts: int = 256  # T2, per context length
    holdout: float = 0.25      # fraction of Stage II prompts that choose the ridge
    backend: str = "numpy"     # scan backend for the product gate

    def __post_init__(self):
        check_choice("gate", self.gate, GATES)
        check_positive_float("rho", self.rho)
        for name in ("width", "n_queries", "stage1_prompts", "stage1_N", "stage2_prompts"):
            check_positive_int(name, getattr(self, name))
        check_positive_float("alpha", self.alpha)
        check_positive_float("eta1", self.eta1)
        if not 0 < self.holdout < 1:
            raise ValueError(f"holdout must lie in (0, 1), got {self.holdout!r}")


def init_mlp(rng, width):
    """v ~ Unif{-1, +1}, c ~ Unif[-1, 1], a = 0 (W,) each."""
    return np.zeros(width), rng.choice([-1.0, 1.0], size=width), rng.uniform(-1.0, 1.0, size=width)


def loss_and_grads(h, phi_q, y, gamma, a, v, c, shift, scale):
    """Squared loss 0.5 mean (f - y)^2 and its gradients, model read in reverse.

    Args:
        h: (P, n_feat).  phi_q: (P, Q, n_feat).  y: (P, Q) targets.  gamma: (n_feat,).  a, v, c: (W,).
        shift, scale: the fixed normalisation of the MLP input.
    Returns:
        loss, {"gamma": (n_feat,), "a", "v", "c": (W,)}.
    """
    out, rcache = readout_forward(h, phi_q, gamma)                   # (P, Q)
    out_n = (out - shift) / scale
    f, mcache = scalar_mlp_forward(out_n, a, v, c)                   # (P, Q)
    err = f - y
    loss = 0.5 * np.mean(err ** 2)
    df = err / err.size
    dout_n, da, dv, dc = scalar_mlp_backward(df, mcache)
    _, dgamma = readout_backward(dout_n / scale, rcache)
    return loss, {"gamma": dgamma, "a": da, "v": dv, "c": dc}


def _chunks(P, Q, n_feat, max_floats=1 << 22):
    step = max(1, max_floats // (Q * n_feat))
    return [slice(lo, min(P, lo + step)) for lo in range(0, P, step)]


def stage1(task, cfg, rng, progress=None, prompts=None, h=None):
    """Stage I: gamma1 = -eta1 * dL/dgamma at gamma0 (the weight-decay trick).

    Args:
        task: SingleIndexTask.  cfg: PretrainConfig.  rng: numpy Generator.
        progress: optional callable(n) advanced per chunk.
        prompts: the T1 Stage I prompts, or None to draw them.
        h: their context statistic (T1, n_feat) for cfg.gate when already computed, or None.
    Returns:
        gamma1: (n_feat,), v: (W,) the MLP's first-layer signs (kept for Stage II),
        info: dict with the Stage I loss and how much of gamma1 lies on the hidden subspace.
    """
    if prompts is None:
        prompts = task.sample(rng, cfg.stage1_prompts, cfg.stage1_N, cfg.n_queries)
    _, v, c = init_mlp(rng, cfg.width)
    a = np.full(cfg.width, cfg.alpha)
    if h is None:
        h = context_statistic(prompts.x_context, prompts.y_context, cfg.gate, cfg.rho, cfg.b0, cfg.backend)
    n_feat = h.shape[1]
    gamma0 = np.full(n_feat, cfg.gamma0)
    chunks = _chunks(len(prompts), cfg.n_queries, n_feat)
    # the fixed normalisation of the MLP input at gamma0, from these same prompts
    outs = [readout_forward(h[sl], hermite_features(prompts.x_query[sl]), gamma0)[0] for sl in chunks]
    shift, scale = _standardise(np.concatenate(outs))
    grad = np.zeros(n_feat)
    loss = 0.0
    for sl in chunks:
        phi_q = hermite_features(prompts.x_query[sl])
        l, g = loss_and_grads(h[sl], phi_q, prompts.y_query[sl], gamma0, a, v, c, shift, scale)
        w = (sl.stop - sl.start) / len(prompts)  # chunk losses are means: weight by size
        grad += w * g["gamma"]
        loss += w * l
        if progress is not None:
            progress(1)
    lambda1 = 1.0 / cfg.eta1
    gamma1 = gamma0 - cfg.eta1 * (grad + lambda1 * gamma0)
    return gamma1, v, {"stage1_loss": float(loss), **gamma_concentration(gamma1, task)}


def stage1_streamed(task, cfgs, rngs, draw, n_chunks, progress=None):
    """Stage I for several gates over T1 prompts that arrive in chunks, never held at once.

    The Stage I gradient is a mean over prompts, so it can be accumulated chunk by chunk; but
    the MLP-input normalisation (shift, scale) at gamma0 is a mean and standard deviation over
    *all* T1 prompts and must be known before any gradient is taken. So there are two passes:
    pass 1 merges each chunk's (count, mean, sum of squared deviations) (Chan et al.'s
    parallel variance, no cancellation), pass 2 accumulates the gradient. ``draw`` is called
    twice per chunk and must return the same prompts both times (e.g. seeded by the chunk
    index). With the chunks concatenated into one batch, :func:`stage1` gives the same gamma
    to rounding (tested to 1e-12).

    Args:
        task: SingleIndexTask.  cfgs: PretrainConfigs, one per gate (any gate, rho, b0).
        rngs: one numpy Generator per cfg; each draws the MLP's (v, c) exactly as stage1 does.
        draw: callable i -> Prompts, chunk i of the Stage I prompts (i in range(n_chunks)).
        n_chunks: number of chunks.  progress: optional callable(n) advanced per chunk and pass.
    Returns:
        [(gamma1, v, info)] per cfg, as :func:`stage1`; info also holds stage1_prompts.
    """
    n_chunks = check_positive_int("n_chunks", n_chunks)
    if len(cfgs) != len(rngs) or not cfgs:
        raise ValueError(f"need one rng per config, got {len(cfgs)} configs and {len(rngs)} rngs")
    mlps = []
    for cfg, rng in zip(cfgs, rngs):
        _, v, c = init_mlp(rng, cfg.width)
        mlps.append((np.full(cfg.width, cfg.alpha), v, c))

    def statistics(prompts):
        # one context_statistics call per distinct (rho, b0, backend): the closed-form gates share a pass
        groups = {}
        for k, cfg in enumerate(cfgs):
            groups.setdefault((cfg.rho, cfg.b0, cfg.backend), []).append(k)
        hs = [None] * len(cfgs)
        for (rho, b0, backend), ks in groups.items():
            gates = list(dict.fromkeys(cfgs[k].gate for k in ks))
            out = context_statistics(prompts.x_context, prompts.y_context, gates, rho, b0, backend)
            for k in ks:
                hs[k] = out[cfgs[k].gate]
        return hs

    # pass 1: the normalisation at gamma0 over all prompts (count, mean, M2 per cfg)
    moments = [(0, 0.0, 0.0)] * len(cfgs)
    n_feat = None
    for i in range(n_chunks):
        prompts = draw(i)
        hs = statistics(prompts)
        n_feat = hs[0].shape[1]
        for sl in _chunks(len(prompts), cfgs[0].n_queries, n_feat):
            phi_q = hermite_features(prompts.x_query[sl])
            for k, cfg in enumerate(cfgs):
                out = readout_forward(hs[k][sl], phi_q, np.full(n_feat, cfg.gamma0))[0].ravel()
                chunk = (out.size, float(out.mean()), float(np.sum((out - out.mean()) ** 2)))
                moments[k] = _merge_moments(moments[k], chunk)
        if progress is not None:
            progress(1)
    norms = [(mean, math.sqrt(m2 / n) if m2 > 0 else 1.0) for n, mean, m2 in moments]
    # pass 2: the gradient at gamma0, a mean over all T1 prompts
    total = 0
    grads = [np.zeros(n_feat) for _ in cfgs]
    losses = [0.0] * len(cfgs)
    for i in range(n_chunks):
        prompts = draw(i)
        hs = statistics(prompts)
        for sl in _chunks(len(prompts), cfgs[0].n_queries, n_feat):
            phi_q = hermite_features(prompts.x_query[sl])
            n = sl.stop - sl.start
            for k, cfg in enumerate(cfgs):
                a, v, c = mlps[k]
                l, g = loss_and_grads(hs[k][sl], phi_q, prompts.y_query[sl], np.full(n_feat, cfg.gamma0), a, v, c,
                                      *norms[k])
                grads[k] += n * g["gamma"]   # chunk means, weighted by size; divided by T1 below
                losses[k] += n * l
            total += n
        if progress is not None:
            progress(1)
    result = []
    for k, cfg in enumerate(cfgs):
        gamma0 = np.full(n_feat, cfg.gamma0)
        gamma1 = gamma0 - cfg.eta1 * (grads[k] / total + gamma0 / cfg.eta1)
        result.append((gamma1, mlps[k][1], {"stage1_loss": float(losses[k] / total), "stage1_prompts": total,
                                            **gamma_concentration(gamma1, task)}))
    return result


def _merge_moments(a, b):
    """Chan et al.'s merge of (count, mean, sum of squared deviations) of two samples."""
    na, ma, sa = a
    nb, mb, sb = b
    n = na + nb
    delta = mb - ma
    return n, ma + delta * nb / n, sa + sb + delta * delta * na * nb / n


def gamma_concentration(gamma, task):
    """Share of |gamma|^2 on the features of the hidden subspace (constant excluded), and
    that share for a gamma spread evenly (the chance level); also split into the subspace's
    linear features (what an odd link's label transform feeds, He3) and its quadratic ones,
    squares and cross products (what an even link needs, He2 and He4)."""
    mask = relevant_features(task.d, task.index_set)
    group = feature_groups(task.d)
    total = max(float(np.sum(gamma[1:] ** 2)), 1e-300)
    return {"gamma_mass_on_subspace": float(np.sum(gamma[mask] ** 2) / total),
            "gamma_mass_chance": float(mask.sum() / (gamma.size - 1)),
            "gamma_mass_subspace_linear": float(np.sum(gamma[mask & (group == 1)] ** 2) / total),
            "gamma_mass_subspace_quadratic": float(np.sum(gamma[mask & (group >= 2)] ** 2) / total)}


def _standardise(out):
    scale = float(np.std(out))
    return float(np.mean(out)), (scale if scale > 0 else 1.0)


def ridge_solve(gram, rhs, n, ridge):
    """argmin_a |F a - y|^2 / n + ridge |a|^2 from gram = F^T F (W, W) and rhs = F^T y (W,)."""
    return np.linalg.solve(gram / n + ridge * np.eye(gram.shape[0]), rhs / n)


def stage2(task, cfg, gamma, v, N, rng, ridges=RIDGES, prompts=None, h=None):
    """Stage II at context length N: normalise the Mamba output, redraw c, ridge-fit a.

    Args:
        prompts: the T2 Stage II prompts, or None to draw them (several gates can share them).
        h: their context statistic (T2, n_feat) for cfg.gate when already computed, or None.
    Returns:
        GatedMamba, with info holding the chosen ridge and its hold-out error.
    """
    N = check_positive_int("N", N)
    if prompts is None:
        prompts = task.sample(rng, cfg.stage2_prompts, N, cfg.n_queries)
    elif prompts.x_context.shape[1] != N:
        raise ValueError(f"prompts must have context length N={N}, got {prompts.x_context.shape[1]}")
    if h is None:
        h = context_statistic(prompts.x_context, prompts.y_context, cfg.gate, cfg.rho, cfg.b0, cfg.backend)
    out = readout_forward(h, hermite_features(prompts.x_query), gamma)[0]  # (T2, Q)
    shift, scale = _standardise(out)
    c = rng.uniform(-1.0, 1.0, size=cfg.width)
    F = np.maximum(((out - shift) / scale)[..., None] * v + c, 0.0)        # (T2, Q, W)
    n_fit = max(1, int(round(len(prompts) * (1 - cfg.holdout))))
    if n_fit >= len(prompts):
        raise ValueError(f"stage2_prompts={cfg.stage2_prompts} is too few to hold out {cfg.holdout:.0%}")
    Ffit, yfit = F[:n_fit].reshape(-1, cfg.width), prompts.y_query[:n_fit].ravel()
    Fho, yho = F[n_fit:].reshape(-1, cfg.width), prompts.y_query[n_fit:].ravel()
    # normal equations once; each ridge is then one W x W solve
    gram_fit, rhs_fit = Ffit.T @ Ffit, Ffit.T @ yfit
    scores = [float(np.mean((Fho @ ridge_solve(gram_fit, rhs_fit, len(yfit), lam) - yho) ** 2))
              for lam in ridges]
    best = int(np.argmin(scores))
    a = ridge_solve(gram_fit + Fho.T @ Fho, rhs_fit + Fho.T @ yho, len(yfit) + len(yho), ridges[best])
    return GatedMamba(cfg.gate, gamma, a, v, c, cfg.rho, cfg.b0, shift, scale, cfg.backend,
                      info={"ridge": ridges[best], "holdout_mse": scores[best], "N": N})


def practical(task, cfg, N, rng, steps=300, lr=1e-2, batch=32, progress=None):
    """The practical variant: gamma and the MLP trained jointly by AdamW at context length N.

    Starts from gamma = gamma0, v, c as in Stage I and a ~ N(0, 1/W) (a = 0 would give gamma
    no gradient). The MLP input normalisation is estimated once at the start and frozen.

    Returns:
        GatedMamba with info["losses"] the training loss per step.
    """
    steps = check_positive_int("steps", steps)
    _, v, c = init_mlp(rng, cfg.width)
    probe = task.sample(rng, batch, N, cfg.n_queries)
    h = context_statistic(probe.x_context, probe.y_context, cfg.gate, cfg.rho, cfg.b0, cfg.backend)
    n_feat = h.shape[1]
    params = {"gamma": np.full(n_feat, cfg.gamma0), "a": rng.standard_normal(cfg.width) / np.sqrt(cfg.width),
              "v": v, "c": c}
    shift, scale = _standardise(readout_forward(h, hermite_features(probe.x_query), params["gamma"])[0])
    opt = AdamW(params, lr=lr, weight_decay=0.0)
    losses = []
    for _ in range(steps):
        pr = task.sample(rng, batch, N, cfg.n_queries)
        h = context_statistic(pr.x_context, pr.y_context, cfg.gate, cfg.rho, cfg.b0, cfg.backend)
        loss, grads = loss_and_grads(h, hermite_features(pr.x_query), pr.y_query, params["gamma"],
                                     params["a"], params["v"], params["c"], shift, scale)
        opt.step(params, grads)
        losses.append(float(loss))
        if progress is not None:
            progress(1)
    return GatedMamba(cfg.gate, params["gamma"], params["a"], params["v"], params["c"], cfg.rho, cfg.b0,
                      shift, scale, cfg.backend, info={"losses": losses, "N": N, "config": asdict(cfg)})
