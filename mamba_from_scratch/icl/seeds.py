"""Results over training seeds (issue 14 item 4): the per-run evaluations of the ICL III grid
gathered into means over seeds, their standard errors, collapse counts and comparisons.

Each run of the grid (scripts/icl_mechanism_grid.py) was evaluated on its own by ``icl-eval``
into a folder ``icl_{model}_{link}_d{d}_N{N}_s{seed}/`` holding metrics.csv, paired.csv,
over_zero.csv and half_zero.csv. Every run of one (link, d) is scored on the *same* test
prompts (seeded by (1000, d)), so the baselines (KRR, context-free, zero) must come out
identical in every folder of that (link, d); :func:`baselines` checks that they do.

Two kinds of uncertainty, reported side by side:
    seed SE     std over the k training seeds / sqrt(k) of a run-level number: how much the
                result depends on the training run (the larger source, issue 14 item 4)
    prompt SE   the per-prompt paired standard error of the same number within one run (from
                icl-eval), averaged over the seeds: how well 1024 prompts pin down one model
A model-versus-model difference across seeds uses the seed SEs of both means,
sqrt(se_a^2 + se_b^2): the seeds of two models are independent training runs. A difference
within one run (frozen selection minus the model itself) is paired by seed.

A **collapse** (the page's definition, written before the runs): a run whose error at the
largest N is within 2 per-prompt SE of the context-free optimum or of the zero output. A run
**learns** when its paired gap to the context-free optimum is below -2 per-prompt SE (a per-run
rule added after the predictions, which defined "learns" on the seed mean). :func:`state`
applies the rule at any N: the page's counts are at N = 64, seeds.csv has them at every N.

Units: :func:`over_seeds` reports the error over the zero predictor's (``over_zero*``) and the
gap to the context-free optimum in raw error units (``diff_cf*``); the report divides the gaps
by the zero predictor's error for the page.

Tests: tests/test_icl_seeds.py.
"""
from __future__ import annotations

import math
import os
import re
from collections import defaultdict

import numpy as np

from ..files import read_csv

RUN_NAME = re.compile(r"^icl_(?P<model>[a-z-]+)_(?P<link>he\d)_d(?P<d>\d+)_N(?P<N>\d+)_s(?P<seed>\d+)$")
BASELINES = ("krr_full", "krr_intrinsic", "context_free", "zero")
Z_COLLAPSE = 2.0       # "within 2 per-prompt SE"


def mean_se(values):
    """(mean, standard error of the mean) of a list; the SE is nan for fewer than 2 values."""
    v = np.asarray(values, np.float64)
    if v.size == 0:
        return math.nan, math.nan
    se = float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else math.nan
    return float(v.mean()), se


def load_runs(runs_dir):
    """Every evaluated run folder under runs_dir, as a list of dicts sorted by (link, d, model, seed):
    model, link (He2/He3), d, N (trained), seed, the folder's four tables (lists of rows) and
    eval_N, the context lengths it was evaluated at (increasing)."""
    runs = []
    for name in sorted(os.listdir(runs_dir)):
        m = RUN_NAME.match(name)
        folder = os.path.join(runs_dir, name)
        if not m or not os.path.exists(os.path.join(folder, "half_zero.csv")):
            continue
        run = dict(name=name, model=m["model"], link=m["link"].capitalize(), d=int(m["d"]), N=int(m["N"]),
                   seed=int(m["seed"]))
        for table in ("metrics", "paired", "over_zero", "half_zero"):
            run[table] = read_csv(os.path.join(folder, table + ".csv"))
        run["eval_N"] = sorted({int(r["N"]) for r in run["metrics"]})
        runs.append(run)
    runs.sort(key=lambda r: (r["link"], r["d"], r["model"], r["seed"]))
    return runs


def labels_of(run):
    """The run's evaluated labels: its model, and ``<model>-frozen`` when selection was frozen
    (icl-eval labels the checkpoint by --labels, which the grid sets to the model name)."""
    return [lab for lab in (run["model"], run["model"] + "-frozen")
            if any(r["method"] == lab for r in run["metrics"])]


def _by(rows, **keys):
    return [r for r in rows if all(str(r[k]) == str(v) for k, v in keys.items())]


def baselines(runs, tol=1e-9):
    """{(link, d): {method: {N: (error, stderr, over_zero, over_zero_se)}}} for KRR, context-free and zero, taken
    from the first run of each (link, d) after checking every other run of it has the same
    numbers (the shared test prompts). Raises ValueError if two runs disagree."""
    out = {}
    for run in runs:
        key = (run["link"], run["d"])
        table = {}
        for method in BASELINES:
            rows = {int(r["N"]): r for r in _by(run["metrics"], method=method)}
            ratio = {int(r["N"]): (float(r["error"]), float(r["stderr"])) for r in _by(run["over_zero"], method=method)}
            table[method] = {n: (float(r["error"]), float(r["stderr"])) + ratio.get(n, (math.nan, math.nan))
                             for n, r in rows.items()}
        if key not in out:
            out[key] = table
            continue
        for method, per_N in table.items():
            for n, (e, *_) in per_N.items():
                ref = out[key][method].get(n)
                if ref is not None and abs(ref[0] - e) > tol * max(1.0, abs(e)):
                    raise ValueError(f"{run['name']}: {method} at N = {n} is {e}, another run of {key} has "
                                     f"{ref[0]}: the runs were not scored on the same prompts")
    return out


def run_summary(run, N=None):
    """One run's numbers at context length N (default: the largest evaluated), per label.

    Returns:
        {label: dict(error, over_zero, diff_cf, se_cf, diff_zero, se_zero, N_half, lo, hi, kind,
        state)} where diff_* are paired differences to the context-free optimum and to the zero
        output with their per-prompt SE, and state is "learns", "collapse" or "worse" (see the
        module docstring).
    """
    N = run["eval_N"][-1] if N is None else N
    out = {}
    for label in labels_of(run):
        m = _by(run["metrics"], method=label, N=N)[0]
        oz = _by(run["over_zero"], method=label, N=N)[0]
        cf = _by(run["paired"], model=label, versus="context_free", N=N)[0]
        zr = _by(run["paired"], model=label, versus="zero", N=N)[0]
        hz = _by(run["half_zero"], method=label)[0]
        s = dict(error=float(m["error"]), over_zero=float(oz["error"]), over_zero_se=float(oz["stderr"]),
                 diff_cf=float(cf["diff"]), se_cf=float(cf["stderr"]), diff_zero=float(zr["diff"]),
                 se_zero=float(zr["stderr"]), N_half=float(hz["N_half"]), lo=float(hz["lo"]), hi=float(hz["hi"]),
                 kind=hz["kind"])
        s["state"] = state(s["diff_cf"], s["se_cf"], s["diff_zero"], s["se_zero"])
        out[label] = s
    return out


def state(diff_cf, se_cf, diff_zero, se_zero):
    """"collapse" if within Z_COLLAPSE per-prompt SE of the context-free optimum or of the zero
    output, else "learns" if below the context-free optimum, else "worse" (above it)."""
    near = lambda diff, se: abs(diff) <= Z_COLLAPSE * se
    if near(diff_cf, se_cf) or near(diff_zero, se_zero):
        return "collapse"
    return "learns" if diff_cf < 0 else "worse"


def over_seeds(runs):
    """Rows (one per label, link, d, N) of the seed means: n_seeds, seeds, the error over the zero
    predictor's (mean, seed SE), the paired gap to the context-free optimum (mean, seed SE, prompt
    SE averaged over seeds) and the per-seed values of that gap."""
    groups = defaultdict(list)
    for run in runs:
        for N in run["eval_N"]:
            for label, s in run_summary(run, N).items():
                groups[(label, run["link"], run["d"], N)].append((run["seed"], s))
    rows = []
    for (label, link, d, N), items in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][0], kv[0][3])):
        seeds = [sd for sd, _ in items]
        oz, oz_se = mean_se([s["over_zero"] for _, s in items])
        gap, gap_se = mean_se([s["diff_cf"] for _, s in items])
        rows.append(dict(label=label, link=link, d=d, N=N, n_seeds=len(seeds), seeds=" ".join(map(str, seeds)),
                         over_zero=oz, over_zero_seed_se=oz_se,
                         over_zero_prompt_se=float(np.mean([s["over_zero_se"] for _, s in items])),
                         diff_cf=gap, diff_cf_seed_se=gap_se,
                         diff_cf_prompt_se=float(np.mean([s["se_cf"] for _, s in items])),
                         per_seed_diff_cf=" ".join(f"{s['diff_cf']:.4f}" for _, s in items),
                         collapses=sum(s["state"] == "collapse" for _, s in items),
                         learns=sum(s["state"] == "learns" for _, s in items)))
    return rows


def difference(rows, a, b, link, d, N):
    """Seed mean of label a minus seed mean of label b at (link, d, N), with sqrt(se_a^2 + se_b^2)
    from the two seed SEs (independent training runs), in units of the zero predictor's error.
    Returns (diff, se, n_a, n_b); nan where a label has no run."""
    pick = {r["label"]: r for r in rows if r["link"] == link and r["d"] == d and r["N"] == N}
    if a not in pick or b not in pick:
        return math.nan, math.nan, pick.get(a, {}).get("n_seeds", 0), pick.get(b, {}).get("n_seeds", 0)
    diff, se, *_ = _welch_rows(pick[a], pick[b])
    return diff, se, pick[a]["n_seeds"], pick[b]["n_seeds"]


def t_two_sided_p(t, df):
    """Two-sided p-value of Student's t distribution with df > 0 (real) degrees of freedom:
    P(|T| >= |t|) = I_x(df/2, 1/2) with x = df / (df + t^2), the regularized incomplete beta
    function. For df = 1 this is 1 - 2 atan|t| / pi, for df = 2 it is 1 - |t| / sqrt(t^2 + 2)."""
    if not df > 0:
        raise ValueError(f"df must be > 0, got {df}")
    if math.isnan(t):
        return math.nan
    return _betainc(df / 2.0, 0.5, df / (df + t * t))


def _betainc(a, b, x):
    """Regularized incomplete beta I_x(a, b) for 0 <= x <= 1: the continued fraction of
    Abramowitz & Stegun 26.5.8, evaluated by the modified Lentz method, on the side of the
    symmetry I_x(a, b) = 1 - I_{1-x}(b, a) where it converges fast."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1.0) / (a + b + 2.0):
        return 1.0 - _betainc(b, a, 1.0 - x)
    log_front = a * math.log(x) + b * math.log1p(-x) - (math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b))
    tiny = 1e-300
    f, c, dd = 1.0, 1.0, 0.0                 # f = 1 / (1 + d1 / (1 + d2 / (1 + ...)))
    for i in range(0, 400):
        m = i // 2
        if i == 0:
            num = 1.0
        elif i % 2 == 0:                     # d_{2m} = m (b - m) x / ((a + 2m - 1)(a + 2m))
            num = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        else:                                # d_{2m+1} = -(a + m)(a + b + m) x / ((a + 2m)(a + 2m + 1))
            num = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        dd = 1.0 + num * dd
        dd = 1.0 / (dd if abs(dd) > tiny else tiny)
        c = 1.0 + num / c
        c = c if abs(c) > tiny else tiny
        f *= c * dd
        if abs(1.0 - c * dd) < 1e-15:
            break
    return math.exp(log_front) * (f - 1.0) / a


def welch(mean_a, se_a, n_a, mean_b, se_b, n_b):
    """Welch's unequal-variance comparison of two seed means from their seed SEs.

    Returns (diff, se, t, df, p): diff = mean_a - mean_b, se = sqrt(se_a^2 + se_b^2), t = diff / se,
    the Welch-Satterthwaite degrees of freedom (se_a^2 + se_b^2)^2 / (se_a^4/(n_a-1) + se_b^4/(n_b-1))
    and the two-sided p of t under Student's t with those df. nan where either side has fewer than
    2 seeds or both SEs are 0 (a difference of two collapses)."""
    diff = mean_a - mean_b
    va, vb = se_a * se_a, se_b * se_b
    se = math.sqrt(va + vb) if not (math.isnan(va) or math.isnan(vb)) else math.nan
    if n_a < 2 or n_b < 2 or not se > 0:
        return diff, se, math.nan, math.nan, math.nan
    df = (va + vb) ** 2 / (va * va / (n_a - 1) + vb * vb / (n_b - 1))
    t = diff / se
    return diff, se, t, df, t_two_sided_p(t, df)


def _welch_rows(ra, rb):
    """:func:`welch` of two rows of :func:`over_seeds` (their error over the zero predictor's)."""
    return welch(ra["over_zero"], ra["over_zero_seed_se"], ra["n_seeds"],
                 rb["over_zero"], rb["over_zero_seed_se"], rb["n_seeds"])


def comparisons(rows, pairs, models):
    """Every model-against-model difference (``pairs`` of labels, at each (link, d, N)) and every
    d = 32 minus d = 16 difference (each of ``models`` at each (link, N)) of the seed means of the
    error over the zero predictor's, with :func:`welch`'s SE, t, df and p. Rows for seeds.csv's
    companion, differences.csv; a comparison with a label missing is left out."""
    pick = {(r["label"], r["link"], r["d"], r["N"]): r for r in rows}
    out = []

    def add(kind, a, b, ka, kb):
        ra, rb = pick.get(ka), pick.get(kb)
        if ra is None or rb is None:
            return
        diff, se, t, df, p = _welch_rows(ra, rb)
        out.append(dict(kind=kind, a=a, b=b, link=ka[1], d_a=ka[2], d_b=kb[2], N=ka[3], diff=diff, se=se,
                        t=t, df=df, p=p, n_a=ra["n_seeds"], n_b=rb["n_seeds"]))

    keys = sorted({(r["link"], r["d"], r["N"]) for r in rows})
    for a, b in pairs:
        for link, d, N in keys:
            add("models", a, b, (a, link, d, N), (b, link, d, N))
    for model in models:
        for link, N in sorted({(k[0], k[2]) for k in keys}):
            add("d32_minus_d16", model, model, (model, link, 32, N), (model, link, 16, N))
    return out


def frozen_minus_model(runs, N=None):
    """Per (model, link, d): the paired-by-seed mean of (frozen error - the model's own error) over
    the zero predictor's error, its seed SE, and the per-prompt SE of that gap averaged over the
    seeds (from paired.csv, where icl-eval compares the two on the same prompts)."""
    groups = defaultdict(list)
    for run in runs:
        label = run["model"] + "-frozen"
        if label not in labels_of(run):
            continue
        n = run["eval_N"][-1] if N is None else N
        p = _by(run["paired"], model=label, versus=run["model"], N=n)[0]
        zero = float(_by(run["metrics"], method="zero", N=n)[0]["error"])
        groups[(run["model"], run["link"], run["d"])].append((float(p["diff"]) / zero, float(p["stderr"]) / zero))
    out = {}
    for key, items in groups.items():
        m, se = mean_se([g for g, _ in items])
        out[key] = dict(diff=m, seed_se=se, prompt_se=float(np.mean([s for _, s in items])), n_seeds=len(items))
    return out
