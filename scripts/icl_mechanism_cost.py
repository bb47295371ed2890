"""Measure one training step of each issue-14 model at the grid's configuration, and extrapolate
to a whole run: `icl-train --full --N 64` (20,000 steps of batch 64, curriculum from N = 8 over
4,000 steps, validation every 1,000 steps).

    NUMBA_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE .venv/bin/python scripts/icl_mechanism_cost.py \\
        [--steps 200] [--models mamba,...] [--d 16]

A step is icl-train's: sample_batch, loss_and_grads, clip, AdamW. It is timed at step 4,000 on,
where N = 64 (l = 65 tokens), and, for the curriculum, at step 2,000, where N = 36, the mean N of
the first 4,000 steps (their N grows linearly from 8 to 64). Per run:
    4,000 t(N = 36) + 16,000 t(N = 64) + 20 validations (256 prompts at N = 64, timed once).
The median of the timed steps is used. The load average is printed before and after: on a
shared machine it is part of the number.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

from mamba_from_scratch.icl.train import (
    FULL,
    TrainConfig,
    build_model,
    loss_and_grads,
    make_task,
    sample_batch,
    validate,
    validation_set,
)
from mamba_from_scratch.optim import AdamW, clip_grad_norm
from mamba_from_scratch.params import count_params
from mamba_from_scratch.runtime import tune_process

MODELS = ("mamba", "mamba-nonselective", "mamba-nogate", "softmax-tf", "linear-tf")


def time_steps(tc, task, cfg, params, first_step, n):
    opt = AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay)
    times = []
    for s in range(first_step, first_step + n):
        t0 = time.perf_counter()
        x, y = sample_batch(tc, task, s)
        _, grads, _ = loss_and_grads(params, cfg, x, y, tc.encoding, tc.backend)
        clip_grad_norm(grads, tc.max_grad_norm)
        opt.step(params, grads, lr=tc.lr)
        times.append(time.perf_counter() - t0)
    return float(np.median(times[2:]))     # the first steps compile or warm caches


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--d", type=int, default=16)
    args = p.parse_args()
    tune_process()
    print(f"load average before: {os.getloadavg()}; NUMBA_NUM_THREADS={os.environ.get('NUMBA_NUM_THREADS')}")
    print("| model | params | step at N = 64 (ms) | step at N = 36 (ms) | validation (s) | per run (min) |")
    print("|---|---|---|---|---|---|")
    for model in args.models.split(","):
        tc = TrainConfig(model=model, link="he3", d=args.d, **{**FULL, "N": 64})
        task = make_task(tc)
        cfg, params = build_model(tc)
        t64 = time_steps(tc, task, cfg, params, tc.curriculum_steps, args.steps)
        t36 = time_steps(tc, task, cfg, params, tc.curriculum_steps // 2, max(args.steps // 2, 10))
        val = validation_set(tc, task)
        t0 = time.perf_counter()
        validate(params, cfg, tc, task, val)
        tval = time.perf_counter() - t0
        run_min = (tc.curriculum_steps * t36 + (tc.steps - tc.curriculum_steps) * t64
                   + tc.steps // tc.eval_every * tval) / 60
        print(f"| {model} | {count_params(cfg):,} | {1e3 * t64:.1f} | {1e3 * t36:.1f} | {tval:.2f} | {run_min:.1f} |",
              flush=True)
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
