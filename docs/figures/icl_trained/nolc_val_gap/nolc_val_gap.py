"""Re-derive the validation gap of the no-link-curriculum control (results_icl_trained.md):
docs/checkpoints/icl_mamba_he2_d16_nolc.npz, 20,000 steps, --link-curriculum-steps 0.

Two ways:
  1. from the checkpoint's stored validation log (val_log rows are [step, error at prefix 0..N]):
     the window mean of the last row minus the context-free optimum's window mean on the same
     validation prompts (the log stores no per-prompt errors, so no s.e. from it alone);
  2. by re-evaluating the checkpoint with icl-train's own validate() on its validation prompts
     (train_config's seed, stream TRAIN_VALIDATION): the paired gap and its s.e., as icl-train
     printed it at the last step.
Run:  python docs/figures/icl_trained/nolc_val_gap/nolc_val_gap.py > docs/figures/icl_trained/nolc_val_gap/nolc_val_gap.txt
"""
import dataclasses

import numpy as np

from mamba_from_scratch.checkpoint import load_checkpoint
from mamba_from_scratch.icl import train as T

CKPT = "docs/checkpoints/icl_mamba_he2_d16_nolc.npz"
params, cfg, extra, _ = load_checkpoint(CKPT)
tc_dict = extra["train_config"]
tc = T.TrainConfig(**{f.name: tc_dict[f.name] for f in dataclasses.fields(T.TrainConfig) if f.name in tc_dict})
task = T.make_task(tc)
val = T.validation_set(tc, task)
w = T.gap_window(tc.N)
print(f"checkpoint: {CKPT}, step {extra['step']}, link_curriculum_steps {tc.link_curriculum_steps}, "
      f"n_val {tc.n_val}, window prefixes {tc.N // 4}..{tc.N}")
print(f"command that trained it: {extra.get('command')}")

last = np.asarray(extra["val_log"][-1])
cf = T.context_free_errors(task, val).mean(axis=0)                     # (N + 1,)
print(f"1. stored val_log, step {int(last[0])}: model {last[1:][w].mean():.4f}, context-free "
      f"{cf[w].mean():.4f}, gap {last[1:][w].mean() - cf[w].mean():+.4f}")

err, cf_err, gap, gap_se = T.validate(params, cfg, tc, task, val)
print(f"2. re-evaluated: model {err[w].mean():.4f} (stored log {last[1:][w].mean():.4f}, "
      f"max |difference| per prefix {np.max(np.abs(err - last[1:])):.1e}), context-free {cf_err[w].mean():.4f}, "
      f"paired gap {gap:+.4f} +- {gap_se:.4f} ({gap / gap_se:+.1f} s.e.)")
