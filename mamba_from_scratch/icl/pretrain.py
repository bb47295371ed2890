"""Pretraining the one-layer model: two-stage (Stage I + Stage II) and the "practical" variant.

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
prompt; W MLP width; D = dim phi.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..optim import AdamW
from ..validate import check_choice, check_positive_float, check_positive_int
from .features import hermite_features, relevant_features
from .gated import (GATES, GatedMamba, context_statistic, mlp_backward, mlp_forward,
                    readout_backward, readout_forward)

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
        h: (P, D).  phi_q: (P, Q, D).  y: (P, Q) targets.  gamma: (D,).  a, v, c: (W,).
        shift, scale: the fixed normalisation of the MLP input.
    Returns:
        loss, {"gamma": (D,), "a", "v", "c": (W,)}.
    """
    out, rcache = readout_forward(h, phi_q, gamma)                   # (P, Q)
    out_n = (out - shift) / scale
    f, mcache = mlp_forward(out_n, a, v, c)                          # (P, Q)
    err = f - y
    loss = 0.5 * np.mean(err ** 2)
    df = err / err.size
    dout_n, da, dv, dc = mlp_backward(df, mcache)
    _, dgamma = readout_backward(dout_n / scale, rcache)
    return loss, {"gamma": dgamma, "a": da, "v": dv, "c": dc}


def _chunks(P, Q, D, max_floats=1 << 22):
    step = max(1, max_floats // (Q * D))
    return [slice(lo, min(P, lo + step)) for lo in range(0, P, step)]


def stage1(task, cfg, rng, progress=None, prompts=None, h=None):
    """Stage I: gamma1 = -eta1 * dL/dgamma at gamma0 (the weight-decay trick).

    Args:
        task: SingleIndexTask.  cfg: PretrainConfig.  rng: numpy Generator.
        progress: optional callable(n) advanced per chunk.
        prompts: the T1 Stage I prompts, or None to draw them.
        h: their context statistic (T1, D) for cfg.gate when already computed, or None.
    Returns:
        gamma1: (D,), v: (W,) the MLP's first-layer signs (kept for Stage II),
        info: dict with the Stage I loss and how much of gamma1 lies on the hidden subspace.
    """
    if prompts is None:
        prompts = task.sample(rng, cfg.stage1_prompts, cfg.stage1_N, cfg.n_queries)
    _, v, c = init_mlp(rng, cfg.width)
    a = np.full(cfg.width, cfg.alpha)
    if h is None:
        h = context_statistic(prompts.x_context, prompts.y_context, cfg.gate, cfg.rho, cfg.b0, cfg.backend)
    D = h.shape[1]
    gamma0 = np.full(D, cfg.gamma0)
    chunks = _chunks(len(prompts), cfg.n_queries, D)
    # the fixed normalisation of the MLP input at gamma0, from these same prompts
    outs = [readout_forward(h[sl], hermite_features(prompts.x_query[sl]), gamma0)[0] for sl in chunks]
    shift, scale = _standardise(np.concatenate(outs))
    grad = np.zeros(D)
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


def gamma_concentration(gamma, task):
    """Share of |gamma|^2 on the features of the hidden subspace (constant excluded), and
    that share for a gamma spread evenly (the chance level)."""
    mask = relevant_features(task.d, task.index_set)
    g2 = gamma[1:] ** 2
    return {"gamma_mass_on_subspace": float(np.sum(gamma[mask] ** 2) / max(np.sum(g2), 1e-300)),
            "gamma_mass_chance": float(mask.sum() / (gamma.size - 1))}


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
        h: their context statistic (T2, D) for cfg.gate when already computed, or None.
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


def two_stage(task, cfg, Ns, rng, progress=None):
    """Stage I once, then Stage II at each context length in Ns.

    Returns:
        {N: GatedMamba}, and the Stage I info.
    """
    gamma, v, info = stage1(task, cfg, rng, progress)
    return {N: stage2(task, cfg, gamma, v, N, rng) for N in Ns}, info


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
    D = h.shape[1]
    params = {"gamma": np.full(D, cfg.gamma0), "a": rng.standard_normal(cfg.width) / np.sqrt(cfg.width),
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
