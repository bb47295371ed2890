"""Errors relative to the zero predictor on the same prompts, and the N at which a method first
reaches half the zero predictor's error (issue 14 item 3), with a bootstrap interval.

    ratio(N)  = mean_p e_p(N) / mean_p z_p(N)     e: the method's per-prompt errors, z: the
                                                  zero predictor's, on the same P prompts
    se        = std_p(e_p - ratio z_p) / (sqrt(P) mean_p z_p)     (delta method: the ratio of
                                                  two paired means, linearised)
    N_half    = the first N where ratio(N) <= 1/2, interpolated linearly in (log N, ratio)
                between that grid point and the one before it; "<= N_0" when the first grid
                point is already there, "> N_max" when no grid point is
    interval  = the 16th and 84th percentiles of N_half over bootstrap resamples of the
                prompts (the same resample for the method and the zero predictor; the
                central 68% of a normal distribution, one standard error either side)

The zero predictor's per-prompt error is (1/Q) sum_q g(<beta, x_q>)^2 / E[g^2], the same for
every N: the queries do not change with N, only the context shown.

Tests: tests/test_icl_mechanism.py.
"""
from __future__ import annotations

import math

import numpy as np

HALF = 0.5


def ratio_to_zero(e, z):
    """(ratio, se) of a method's mean per-prompt error to the zero predictor's (same prompts).

    Args:
        e, z: (P,) per-prompt errors of the method and of the zero predictor.
    """
    e, z = np.asarray(e, np.float64), np.asarray(z, np.float64)
    ratio = e.mean() / z.mean()
    se = float(np.std(e - ratio * z, ddof=1) / (math.sqrt(e.size) * z.mean())) if e.size > 1 else math.nan
    return float(ratio), se


def first_crossing(Ns, ratios, level=HALF):
    """The first N of the (increasing) grid Ns where ratios <= level, interpolated in log N
    from the grid point before it.

    Returns:
        (N, kind): kind "at" (interpolated), "le" (the first grid point already reaches it:
        N = Ns[0]), or "gt" (never reached: N = inf).
    """
    for i, (n, r) in enumerate(zip(Ns, ratios)):
        if r <= level:
            if i == 0:
                return float(n), "le"
            n0, r0 = Ns[i - 1], ratios[i - 1]
            frac = (r0 - level) / (r0 - r)                       # r0 > level >= r, so 0 < frac <= 1
            return float(math.exp(math.log(n0) + frac * (math.log(n) - math.log(n0)))), "at"
    return math.inf, "gt"


def half_zero_N(Ns, errors, zero, n_boot=1000, seed=0):
    """N at which a method first reaches half the zero predictor's error, and its interval.

    Args:
        Ns: increasing context lengths (>= 1).
        errors: (len(Ns), P) the method's per-prompt errors at each N.
        zero: (len(Ns), P) the zero predictor's per-prompt errors on the same prompts.
        n_boot: bootstrap resamples of the P prompts.  seed: the resampling's seed.
    Returns:
        dict: N_half, kind ("at", "le", "gt"), lo, hi (16th, 84th bootstrap percentiles; a
        resample that never reaches half counts as inf), frac_reached (share of resamples
        that reach it by the last N).
    """
    Ns = [int(n) for n in Ns]
    if any(n < 1 for n in Ns) or Ns != sorted(set(Ns)):
        raise ValueError(f"Ns must be increasing context lengths >= 1, got {Ns}")
    e, z = np.asarray(errors, np.float64), np.asarray(zero, np.float64)
    if e.shape != z.shape or e.shape[0] != len(Ns):
        raise ValueError(f"errors and zero must both have shape (len(Ns)={len(Ns)}, P), got {e.shape}, {z.shape}")
    n_half, kind = first_crossing(Ns, e.mean(axis=1) / z.mean(axis=1))
    rng = np.random.default_rng(seed)
    P = e.shape[1]
    boot = np.empty(n_boot)
    for i in range(n_boot):
        idx = rng.integers(P, size=P)
        boot[i] = first_crossing(Ns, e[:, idx].mean(axis=1) / z[:, idx].mean(axis=1))[0]
    boot.sort()                                 # inf sorts last; no interpolation, which inf - inf would break
    lo, hi = boot[int(math.floor(0.16 * (n_boot - 1)))], boot[int(math.ceil(0.84 * (n_boot - 1)))]
    return {"N_half": n_half, "kind": kind, "lo": float(lo), "hi": float(hi),
            "frac_reached": float(np.mean(np.isfinite(boot)))}


def format_half(h):
    """'24.3 [19.0, 31.2]', '<= 1', '> 64 (12% of resamples reach it)' for a half_zero_N dict."""
    def fmt(v):
        return "inf" if math.isinf(v) else f"{v:.1f}"
    if h["kind"] == "gt":
        return f"> max N ({100 * h['frac_reached']:.0f}% of resamples reach it)"
    head = f"<= {fmt(h['N_half'])}" if h["kind"] == "le" else fmt(h["N_half"])
    return f"{head} [{fmt(h['lo'])}, {fmt(h['hi'])}]"
