"""Frozen reference data for lesson 10 (run from the repository root: python lessons/_data/make_10.py).

Writes lessons/_data/10_training.npz, computed with the package's ``icl.prompts``, ``icl.train``
and ``optim`` modules:

- exercise 10.1 (the paired encoding): ``enc_x`` (3, 5, 4), ``enc_y`` (3, 5) and
  ``enc_tokens`` (3, 5, 10) = ``encode(x, y, dtype=float64)``; ``enc_x2`` (2, 3, 1),
  ``enc_y2`` (2, 3), ``enc_tokens2`` (2, 3, 4) (d = 1);
- exercise 10.2 (one training step): a float64 Mamba of ``STEP_CONFIG`` (``build_model``),
  its parameters ``p.<key>``, one batch ``step_x`` (3, 5, 3), ``step_y`` (3, 5) from
  ``sample_batch`` at step 0, Adam moments ``m.<key>`` / ``v.<key>`` after ``STEP_T - 1`` earlier
  steps (random but fixed), and the results of ``loss_and_grads`` (``step_loss``, ``g.<key>``)
  and of one ``AdamW.step`` at lr ``STEP_LR`` and weight decay ``STEP_WD``
  (``new.<key>``, ``newm.<key>``, ``newv.<key>``);
- exercise 10.3 (the link curriculum): for the He2 ``LC_CONFIG`` at steps ``LC_STEPS``,
  ``lc_z_<step>`` and ``lc_noise_<step>`` (8, 6), the index <beta, x> and the task's noise,
  and ``lc_y_<step>`` (8, 6), the labels ``sample_batch`` returns;
- exercise 10.4 (results over training seeds): for each case ``c`` of ``SEED_CASES``,
  ``ss_<c>_gaps`` (k, P), per-prompt paired gaps of k seeds on the same P prompts (seed offsets
  plus heavy-tailed Student-t noise centred per seed, so the seed means are the offsets; from
  their own random stream), and the summary computed
  with the package's ``icl.seeds`` and ``icl.metrics``: ``ss_<c>_mean`` and ``ss_<c>_seed_se``
  (``mean_se`` of the per-seed means; nan for k = 1), ``ss_<c>_prompt_se`` (each seed's
  ``paired_difference`` SE against the zero gap, averaged over seeds) and ``ss_<c>_states`` (k,)
  strings (``state`` with the context-free optimum and the zero output the same, as for He3).

Fixed sizes, independent of the lesson's FAST switch; they must match the check cells of lesson 10.
"""
from pathlib import Path

import numpy as np

from mamba_from_scratch.icl.metrics import paired_difference
from mamba_from_scratch.icl.prompts import encode, training_examples
from mamba_from_scratch.icl.seeds import mean_se, state
from mamba_from_scratch.icl.train import TrainConfig, build_model, loss_and_grads, make_task, sample_batch
from mamba_from_scratch.optim import AdamW

OUT = Path(__file__).resolve().parent / "10_training.npz"
STEP_CONFIG = dict(model="mamba", link="he1", d=3, r=2, N=4, batch=3, d_model=8, n_layer=1, d_state=4,
                   backend="numpy")
STEP_T, STEP_LR, STEP_WD = 3, 1e-2, 0.1
LC_CONFIG = dict(link="he2", d=6, r=3, N=5, batch=8, link_curriculum_steps=100)
LC_STEPS = (0, 40, 100)
# exercise 10.4: case -> (per-seed offsets, P, noise scale); case "a" is built so that the states
# by each seed's per-prompt SE are learns / collapse / worse, and by the seed SE all collapse
SEED_CASES = {"a": ((-0.3, 0.0, 0.3), 256, 0.5), "b": ((-0.25, -0.1, -0.4, 0.05, -0.2), 40, 0.3),
              "c": ((-0.2,), 30, 0.4)}


def seed_case(rng, offsets, P, scale):
    """Gaps (k, P) and their summary by the package's definitions (icl/seeds.py)."""
    noise = scale * rng.standard_t(3, size=(len(offsets), P))
    gaps = np.asarray(offsets)[:, None] + noise - noise.mean(axis=1, keepdims=True)  # seed means = the offsets
    per_seed = [paired_difference(g, np.zeros(P)) for g in gaps]        # (mean, per-prompt SE) of each seed
    mean, seed_se = mean_se([m for m, _ in per_seed])
    states = [state(m, s, m, s) for m, s in per_seed]                    # He3: context-free optimum = zero output
    return gaps, dict(mean=np.array(mean), seed_se=np.array(seed_se),
                      prompt_se=np.array(np.mean([s for _, s in per_seed])), states=np.array(states))


def main():
    rng = np.random.default_rng(101)
    out = {}
    x, y = rng.standard_normal((3, 5, 4)), rng.standard_normal((3, 5))
    out.update(enc_x=x, enc_y=y, enc_tokens=encode(x, y, dtype=np.float64))
    x2, y2 = rng.standard_normal((2, 3, 1)), rng.standard_normal((2, 3))
    out.update(enc_x2=x2, enc_y2=y2, enc_tokens2=encode(x2, y2, dtype=np.float64))

    tc = TrainConfig(**STEP_CONFIG)
    cfg, params = build_model(tc, dtype=np.float64)
    xs, ys = sample_batch(tc, make_task(tc), 0)
    loss, grads, _ = loss_and_grads(params, cfg, xs, ys, tc.encoding, tc.backend)
    opt = AdamW(params, lr=STEP_LR, weight_decay=STEP_WD)
    for k in params:  # moments of STEP_T - 1 earlier steps: fixed random values of the right scale
        opt.m[k][...] = 0.01 * rng.standard_normal(params[k].shape)
        opt.v[k][...] = 1e-4 * rng.random(params[k].shape)
    opt.t = STEP_T - 1
    out.update({f"p.{k}": p.copy() for k, p in params.items()})
    out.update({f"m.{k}": opt.m[k].copy() for k in params})
    out.update({f"v.{k}": opt.v[k].copy() for k in params})
    out.update({f"g.{k}": g for k, g in grads.items()})
    out.update(step_x=xs, step_y=ys, step_loss=np.array(loss))
    opt.step(params, {k: g.copy() for k, g in grads.items()})
    out.update({f"new.{k}": p for k, p in params.items()})
    out.update({f"newm.{k}": opt.m[k] for k in params})
    out.update({f"newv.{k}": opt.v[k] for k in params})

    tc_lc = TrainConfig(**LC_CONFIG)
    task = make_task(tc_lc)
    for step in LC_STEPS:
        prompts = task.sample(np.random.default_rng([tc_lc.seed, 1, step]), tc_lc.batch, tc_lc.N, 1)
        xl, y_link = training_examples(prompts)                            # (b, N + 1, d), (b, N + 1)
        z = np.einsum("ptd,pd->pt", xl, prompts.beta)                      # (b, N + 1)
        xp, yp = sample_batch(tc_lc, task, step)
        assert np.array_equal(xl, xp)
        out.update({f"lc_z_{step}": z, f"lc_noise_{step}": y_link - task.link(z), f"lc_y_{step}": yp})

    rng_seeds = np.random.default_rng(104)                                 # its own stream: the keys above are unchanged
    for case, (offsets, P, scale) in SEED_CASES.items():
        gaps, summary = seed_case(rng_seeds, offsets, P, scale)
        out[f"ss_{case}_gaps"] = gaps
        out.update({f"ss_{case}_{k}": v for k, v in summary.items()})
    assert list(out["ss_a_states"]) == ["learns", "collapse", "worse"]
    np.savez_compressed(OUT, **out)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1024:.1f} KB), {len(params)} parameter arrays, "
          f"{sum(p.size for p in params.values())} parameters")


if __name__ == "__main__":
    main()
