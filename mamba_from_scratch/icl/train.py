"""Train a Mamba (or an ablated one), a linear-attention or a softmax-attention Transformer on in-context
single-index prompts.

    python -m mamba_from_scratch icl-train --model mamba --link he2 --d 32 --r 8 --N 64 \\
        --steps 20000 --out runs/mamba_he2_d32 [--quick] [--resume]

Every step draws fresh prompts (N context examples and one query each) from a seeded
stream, so a run of S steps of batch b pretrains on S * b tasks (``--n-tasks K`` draws the
tasks from a fixed pool of K instead, to study how many the model needs). A prompt becomes a
token sequence (prompts.py) and the loss is the mean squared error of the predictions at
every prefix length 0..N, against the noisy labels. ``--model`` names the model (MODELS);
:func:`build_model` makes its config, and the config's type is what runs: every model is
the backbone (models/backbone.py) stacking ``cfg.block``, forward and hand-written backward,
so nothing here asks which model it holds. Updates come from the package's AdamW with a
warmup + cosine schedule.

Reproducibility: the prompts of step s are drawn from ``rng.stream(seed, TRAIN_BATCH, s)``, a
stream that depends on (seed, s) only, so a resumed run sees exactly the prompts it would
have seen, and the same seed gives the same loss curve. A checkpoint (atomic write) holds
the parameters, the optimizer's moments and the training log; ``--resume`` continues from
it bit-identically.

Failure: a NaN/Inf loss or gradient, or a gradient norm ``--explode-factor`` times the
median of the recent ones, stops the run before the bad update is applied; parameters that
an update made NaN/Inf stop it right after that update. Either way nothing more is saved:
the last checkpoint on disk (written before the trouble) is kept, the message says which
one it is (or that none was written), train_summary.json records the stop, and the exit
status is 1. Options and the output folder are checked before any compute. Ctrl-C (or
SIGTERM) stops with the step reached and the ``--resume`` command (exit status 130);
leftover temporaries of a killed save are removed when a run starts or resumes.

Tests: tests/test_icl_train.py.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np

from ..checkpoint import load_checkpoint, remove_stale_temporaries, save_checkpoint
from ..models.backbone import init_params, model_backward, model_forward
from ..models.linear_attention import LinearTFConfig
from ..models.mamba import MambaConfig
from ..models.mamba_ablations import MambaNoGateConfig, MambaNonselectiveConfig
from ..models.softmax_attention import SoftmaxTFConfig
from ..models.transformer import matched_d_mlp
from ..optim import AdamW, clip_grad_norm, cosine_lr, nonfinite_report
from ..params import count_params, sub_params
from ..progress import Progress
from ..rng import TRAIN_BATCH, TRAIN_INIT, TRAIN_TASK_POOL, TRAIN_VALIDATION, stream
from ..runtime import tune_process
from ..scan import BACKENDS, resolve_backend
from ..validate import check_choice, check_number, check_output_dir, check_positive_float, check_positive_int
from .metrics import paired_difference
from .prompts import ENCODINGS, decode, encode, scatter_grad, token_dim, training_examples
from .task import SingleIndexTask

# --model: the Mamba, its two ablations (issue 14: selection removed, gate removed) and the
# two Transformers (build_model)
MODELS = ("mamba", "mamba-nonselective", "mamba-nogate", "linear-tf", "softmax-tf")
CHECKPOINT = "ckpt.npz"
RECENT_NORMS = 50  # the explosion test compares a gradient norm with the median of these


@dataclass(kw_only=True)
class TrainConfig:
    """Everything a run depends on; stored in every checkpoint."""

    model: str = "mamba"         # one of MODELS
    link: str = "he2"
    d: int = 32                  # ambient dimension
    r: int = 8                   # intrinsic dimension (paper 1, Oko et al.: 8)
    N: int = 64                  # context examples per training prompt
    tau: float = 0.1             # label noise, as SPEC section 2
    task_seed: int = 0           # draws the hidden subspace; evaluation must use the same
    seed: int = 0                # initialization and the prompt stream
    steps: int = 20000
    batch: int = 64
    lr: float = 1e-3             # peak learning rate; small models tolerate more than GPT-2's 6e-4
    warmup: int = 500            # linear warmup steps: Adam's early moments are noisy
    lr_min_frac: float = 0.1     # the cosine decays to lr * lr_min_frac
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0   # clip the global gradient norm (also logged, pre-clip)
    explode_factor: float = 1e3  # stop when a gradient norm exceeds this x the recent median
    d_model: int = 64            # width, 4 layers: about the 133k parameters of the reference
    n_layer: int = 4
    d_state: int = 16
    n_head: int = 4              # the Transformers' heads
    encoding: str = "paired"     # see prompts.py
    n_tasks: int = 0             # 0: a fresh beta for every prompt; K: a fixed pool of K betas
    curriculum_steps: int = 0    # > 0: grow N from N_start and the active dims from r over these steps
    N_start: int = 8
    link_curriculum_steps: int = 0  # > 0: labels blend from He1 into the link over these steps
    eval_every: int = 500
    n_val: int = 256             # validation prompts (seeded apart from training and test prompts)
    ckpt_every: int = 500
    log_every: int = 10          # log the mean loss over this many steps
    backend: str = "numba"       # the Mamba's selective-scan backend

    def __post_init__(self):
        check_choice("model", self.model, MODELS)
        check_choice("encoding", self.encoding, ENCODINGS)
        check_choice("backend", self.backend, BACKENDS)
        for name in ("d", "r", "N", "steps", "batch", "d_model", "n_layer", "d_state", "n_head", "N_start",
                     "eval_every", "ckpt_every", "log_every"):
            check_positive_int(name, getattr(self, name))
        # the validation gap has a standard error over prompts: it needs two of them
        check_positive_int("n_val", self.n_val, minimum=2)
        for name in ("task_seed", "seed", "warmup", "n_tasks", "curriculum_steps", "link_curriculum_steps"):
            check_positive_int(name, getattr(self, name), minimum=0)
        for name in ("lr", "max_grad_norm", "explode_factor"):
            check_positive_float(name, getattr(self, name))
        check_number("lr_min_frac", self.lr_min_frac, 0, 1, low_open=True)   # the cosine decays, never rises
        check_positive_float("weight_decay", self.weight_decay, allow_zero=True)
        check_positive_float("tau", self.tau, allow_zero=True)


# The --quick configuration: --full's model for 4,000 steps instead of 20,000, about 2 minutes
# on 2 idle cores. On He2 at d = 16 it already beats the context-free optimum (a paired gap of
# -0.12 +- 0.016 over N = 8..32 on the validation prompts, measured).
QUICK = dict(d_model=32, n_layer=2, N=32, batch=64, steps=4000, warmup=200, lr=2e-3,
             link_curriculum_steps=1500, eval_every=500, ckpt_every=500)


# The --full configuration, one per (model, link, d), each well inside 60 minutes on 2 cores.
# The 133k-parameter Mamba runs 19,600 tokens/s here, 71 min for 20,000 steps at
# N = 64, so the model is shrunk (not the steps): d_model 32 and 2 layers (22k parameters).
# N = 32 covers the evaluated context lengths (8, 16, 32) and halves the cost, so that all
# eight runs fit one working session. Two curricula make He2 and He3 learnable in this budget
# (measured; docs/results_icl_trained.md): the link curriculum (link_blend; without it 40,000
# steps learned only the context-free optimum) and Garg et al.'s curriculum over N and the
# active dimensions (schedule; without it the He3 Mamba at d = 32 collapsed to a zero output,
# read-out norm 0.03 to 0.06, for seeds 0 and 1).
FULL = dict(d_model=32, n_layer=2, N=32, batch=64, steps=20000, warmup=500, lr=2e-3,
            link_curriculum_steps=2000, curriculum_steps=4000, eval_every=1000, ckpt_every=1000)


def make_task(tc):
    return SingleIndexTask(tc.d, tc.r, tc.link, tau=tc.tau, seed=tc.task_seed)


def build_model(tc, dtype=np.float32):
    """The model's config (its type is the model: MambaConfig, MambaNonselectiveConfig,
    MambaNoGateConfig, LinearTFConfig or SoftmaxTFConfig) and freshly initialised parameters
    (seeded by tc.seed).

    The Transformers get the Mamba's width and depth and the MLP width that matches the
    Mamba's parameter count; at one seed both start from the same weights. The ablated Mambas
    get the Mamba's sizes and so fewer parameters (what they lose is the ablation).
    """
    d_in = token_dim(tc.d, tc.encoding)
    mcfg = MambaConfig(d_model=tc.d_model, n_layer=tc.n_layer, d_state=tc.d_state, d_in=d_in, d_out=1)
    transformer = dict(d_model=tc.d_model, n_layer=tc.n_layer, n_head=tc.n_head, d_mlp=matched_d_mlp(mcfg),
                       d_in=d_in, d_out=1)
    ablated = dict(d_model=tc.d_model, n_layer=tc.n_layer, d_state=tc.d_state, d_in=d_in, d_out=1)
    cfg = {"mamba": mcfg, "mamba-nonselective": MambaNonselectiveConfig(**ablated),
           "mamba-nogate": MambaNoGateConfig(**ablated), "linear-tf": LinearTFConfig(**transformer),
           "softmax-tf": SoftmaxTFConfig(**transformer)}[tc.model]
    return cfg, init_params(cfg, stream(tc.seed, TRAIN_INIT), dtype)


def predict(params, cfg, x, y, encoding="paired", backend="numba", chunk=512):
    """Predictions of y_1..y_T for example sequences, in chunks of prompts to bound memory.

    Args:
        x: (P, T, d).  y: (P, T - 1) or (P, T), the labels shown to the model.
    Returns:
        (P, T) float64 predictions; column t used the t examples before it.
    """
    dtype = params["read_in.weight"].dtype
    T = x.shape[1]
    out = np.empty((x.shape[0], T))
    for i in range(0, x.shape[0], chunk):
        tokens = encode(x[i:i + chunk], y[i:i + chunk], encoding, dtype)
        out[i:i + chunk] = decode(model_forward(params, cfg, tokens, backend)[0], T, encoding)
    return out


def schedule(tc, step):
    """(N, active dims) at this step: the curriculum, or (N, d) without one.

    Curriculum (Garg et al. 2022): start with N_start examples and only the r relevant
    coordinates switched on, and grow both linearly to (N, d) over curriculum_steps.
    """
    if tc.curriculum_steps == 0 or step >= tc.curriculum_steps:
        return tc.N, tc.d
    frac = step / tc.curriculum_steps
    n = int(round(min(tc.N_start, tc.N) + frac * (tc.N - min(tc.N_start, tc.N))))
    return n, int(round(tc.r + frac * (tc.d - tc.r)))


def link_blend(tc, step):
    """The weight lam of the target link in the labels at this step: 1 without a link curriculum.

    Link curriculum (ours, beyond the issue): the labels start as He1 (lam = 0) and blend
    linearly into the target link, y = sqrt(1 - lam) z + sqrt(lam) g(z) + noise, over
    link_curriculum_steps. He1 in context is a linear regression that the models learn fast;
    it builds the machinery a higher link needs (a state that sums label-weighted x_j and
    reads it with the query) before that link's weaker signal has to do it alone.
    """
    if tc.link_curriculum_steps == 0 or step >= tc.link_curriculum_steps:
        return 1.0
    return step / tc.link_curriculum_steps


def task_pool(tc, task):
    """The fixed pool of n_tasks betas (K, d), or None for a fresh beta per prompt."""
    if tc.n_tasks == 0:
        return None
    return task.sample(stream(tc.seed, TRAIN_TASK_POOL), tc.n_tasks, 1).beta


def sample_batch(tc, task, step, pool=None):
    """The training examples of one step: x (b, n + 1, d), y (b, n + 1) noisy labels.

    With a pool, each prompt's beta is replaced by one from the pool and its labels redrawn
    through the link, keeping the noise the task drew (noise = y - g(<beta_old, x>)).
    With a link curriculum, the labels are redrawn through the blend of link_blend (same
    x, beta and noise). With a curriculum, the inactive coordinates (outside the subspace
    and beyond the current active count) are zeroed; the labels do not depend on them.
    """
    rng = stream(tc.seed, TRAIN_BATCH, step)
    n, active = schedule(tc, step)
    prompts = task.sample(rng, tc.batch, n, 1)
    x, y = training_examples(prompts)                                           # (b, n+1, d), (b, n+1)
    lam = link_blend(tc, step)
    if pool is not None or lam < 1.0:
        z = np.einsum("ptd,pd->pt", x, prompts.beta)                            # (b, n+1)
        noise = y - task.link(z)
        if pool is not None:
            beta = pool[rng.integers(len(pool), size=tc.batch)]                 # (b, d)
            z = np.einsum("ptd,pd->pt", x, beta)
        y = np.sqrt(1.0 - lam) * z + np.sqrt(lam) * task.link(z) + noise
    if active < tc.d:
        others = np.setdiff1d(np.arange(tc.d), task.index_set)
        x[:, :, others[active - tc.r:]] = 0.0
    return x, y


def loss_and_grads(params, cfg, x, y, encoding, backend):
    """Mean squared error over all prefix positions and its gradients.

    Returns:
        loss (float), grads (dict, or None when the loss is not finite: a diverged forward
        has no gradient worth computing, and the backward rejects a NaN upstream gradient),
        pred (P, T).
    """
    P, T = y.shape
    tokens = encode(x, y, encoding, params["read_in.weight"].dtype)
    out, cache = model_forward(params, cfg, tokens, backend)
    pred = decode(out, T, encoding)                                             # (P, T)
    err = pred.astype(np.float64) - y
    with np.errstate(over="ignore", invalid="ignore"):                          # a diverged output
        loss = float(np.mean(err ** 2))
    if not math.isfinite(loss):
        return loss, None, pred
    dpred = (2.0 / err.size) * err                                              # d loss / d pred
    grads, _ = model_backward(scatter_grad(dpred.astype(out.dtype), out.shape[1], encoding), cache)
    return loss, grads, pred


def gap_window(N):
    """The prefix lengths N/4..N that the validation gap averages over, as a slice of 0..N:
    the short prefixes, where little can be learned from the context, are left out."""
    return slice(N // 4, None)


def context_free_errors(task, val):
    """Normalised squared errors (P, N + 1) of the context-free optimum on validation prompts."""
    _, _, clean, cf = val
    return (cf - clean) ** 2 / task.link.second_moment


def validate(params, cfg, tc, task, val):
    """Normalised error against the noiseless targets at every prefix length 0..N on the
    validation prompts (one forward pass each), the context-free optimum's, and their paired
    gap over the prefix lengths of gap_window.

    A single position of a few hundred prompts is too noisy to tell the two apart (He2 and
    He3 labels are heavy-tailed), so the gap averages each prompt over the window first and
    then takes the mean and standard error over prompts: negative means the context helps.

    Returns:
        err (N + 1,), cf_err (N + 1,), gap (float), gap_se (float).
    """
    x, y, clean, _ = val
    pred = predict(params, cfg, x, y, tc.encoding, tc.backend)                 # (P, N + 1)
    sq, sq_cf = (pred - clean) ** 2 / task.link.second_moment, context_free_errors(task, val)  # (P, N + 1)
    w = gap_window(tc.N)
    gap, gap_se = paired_difference(sq[:, w].mean(axis=1), sq_cf[:, w].mean(axis=1))
    return sq.mean(axis=0), sq_cf.mean(axis=0), gap, gap_se


def validation_curve(extra):
    """(steps, validation error averaged over gap_window) from an icl-train checkpoint's
    ``extra``, whose val_log rows are [step, error at prefix 0..N]."""
    val = np.asarray(extra["val_log"])
    return val[:, 0], val[:, 1:][:, gap_window(extra["train_config"]["N"])].mean(axis=1)


def validation_set(tc, task):
    """Fixed validation prompts, seeded apart from the training stream and from icl-eval's
    test prompts: examples, noiseless targets and the context-free optimum at each position."""
    prompts = task.sample(stream(tc.seed, TRAIN_VALIDATION), tc.n_val, tc.N, 1)
    x, y = training_examples(prompts)
    clean = task.link(np.einsum("ptd,pd->pt", x, prompts.beta))                # (P, N + 1)
    cf = task.link.context_free_optimum(np.sum(task.intrinsic(x) ** 2, -1), task.r)
    return x, y, clean, cf


def code_version():
    """The git commit of the package's source, or "unknown" outside a checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=os.path.dirname(os.path.abspath(__file__)), timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def train(tc, out_dir, resume=False, until=None, command=None, progress=True):
    """Run (or continue) training; checkpoints go to ``out_dir/ckpt.npz``.

    Args:
        tc: TrainConfig.  out_dir: folder for the checkpoint and logs.
        resume: continue from ``out_dir/ckpt.npz`` (its TrainConfig must equal tc).
        until: stop after this step (the schedule still runs to tc.steps), for splitting a
            run into pieces; None = tc.steps.
        command: the command line, recorded in the checkpoint.
    Returns:
        dict with "status" ("done", "paused", "diverged" or "interrupted"), "step" (steps
        completed), "message", "checkpoint" (path and step of the last checkpoint of this
        run on disk, or None), "log", "tokens_per_s", ...
    Raises:
        ValueError for a bad option, an unusable out_dir or a checkpoint that cannot be
        resumed, before any compute.
    """
    if not isinstance(tc, TrainConfig):
        raise ValueError(f"tc must be a TrainConfig, got {type(tc).__name__}")
    until = tc.steps if until is None else min(check_positive_int("until", until), tc.steps)
    resolve_backend(tc.backend)                       # cuda without a GPU: an error now, not at step 0
    check_output_dir("out_dir", out_dir)
    # Temporaries of a save that SIGKILL interrupted: one run per folder, so none is live.
    remove_stale_temporaries(out_dir)
    task = make_task(tc)
    cfg, params = build_model(tc)
    opt = AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay)
    path = os.path.join(out_dir, CHECKPOINT)
    # state that a checkpoint carries besides params and optimizer: see save()
    st = {"step": 0, "log": [], "val_log": [], "acc": 0.0, "acc_n": 0, "tokens": 0, "train_s": 0.0}
    recent = []
    saved = None  # (path, step) of the newest checkpoint of this run on disk
    gap = None  # the latest (paired gap to the context-free optimum, its SE) on validation
    if resume:
        if not os.path.exists(path):
            raise ValueError(f"resume: there is no checkpoint {path!r} to continue from; start without --resume")
        params, cfg, extra, arrays = load_checkpoint(path)
        if extra.get("train_config") != dataclasses.asdict(tc):
            raise ValueError(f"resume: the checkpoint {path!r} was written by a different configuration; "
                             f"pass the same options as the original run")
        lacking = [k for k in st if k not in extra] + [k for k in ("recent_norms",) if k not in arrays]
        if lacking:
            raise ValueError(f"resume: the checkpoint {path!r} lacks {lacking}: it was not written by icl-train")
        opt = AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay)
        try:
            opt.load_state_dict(sub_params(arrays, "opt."))
        except ValueError as e:
            raise ValueError(f"resume: checkpoint {path!r}: {e}") from None
        st = {k: extra[k] for k in st}
        recent = arrays["recent_norms"].tolist()
        saved = (path, st["step"])
    pool = task_pool(tc, task)
    val = validation_set(tc, task)
    version = code_version()  # the code this process runs, even if the checkout moves on meanwhile

    def save():
        extra = {"train_config": dataclasses.asdict(tc), **st, "code_version": version,
                 "command": command, "n_params": count_params(cfg)}
        arrays = {f"opt.{k}": v for k, v in opt.state_dict().items()}
        arrays["recent_norms"] = np.asarray(recent, np.float64)
        save_checkpoint(path, params, cfg, extra=extra, arrays=arrays)

    def on_disk():
        """What a stopped run leaves: the last good checkpoint of this run, or that there is none."""
        if saved is not None:
            return f"the last good checkpoint is {saved[0]} (step {saved[1]})"
        first = min(tc.ckpt_every, until)
        return f"no checkpoint was written (the first was due after step {first})"

    status, message = "done", ""
    bar = Progress(total=until, initial=st["step"], desc=f"{tc.model} {tc.link} d={tc.d}", enabled=progress)
    try:
        while st["step"] < until:
            step = st["step"]
            t0 = time.perf_counter()
            x, y = sample_batch(tc, task, step, pool)
            loss, grads, _ = loss_and_grads(params, cfg, x, y, tc.encoding, tc.backend)
            # A NaN/Inf gradient makes the norm NaN/Inf: the norm is the check, and the report
            # names the gradients only when it fails.
            norm = clip_grad_norm(grads, tc.max_grad_norm) if grads is not None else math.nan
            median = float(np.median(recent)) if len(recent) >= RECENT_NORMS // 2 else math.inf
            if not (math.isfinite(loss) and math.isfinite(norm)):
                bad = nonfinite_report(loss, grads) or f"gradient norm {norm} is not finite"
                status, message = "diverged", f"step {step}: {bad}"
            elif norm > tc.explode_factor * median:
                status, message = "diverged", (f"step {step}: gradient norm {norm:.3g} exceeds {tc.explode_factor:g} "
                                               f"x the recent median {median:.3g}")
            if status == "diverged":
                message += f"; stopped before updating; {on_disk()}"
                break
            recent = (recent + [norm])[-RECENT_NORMS:]
            opt.step(params, grads, lr=cosine_lr(step, tc.steps, tc.lr, tc.warmup, tc.lr * tc.lr_min_frac))
            bad = nonfinite_report(params=params)
            if bad is not None:
                status, message = "diverged", (f"step {step}: after the update, {bad} (loss {loss}, gradient "
                                               f"norm {norm:.3g}); stopped; {on_disk()}")
                break
            st["train_s"] += time.perf_counter() - t0
            st["tokens"] += x.shape[0] * (x.shape[1] if tc.encoding == "paired" else 2 * x.shape[1] - 1)
            st["step"] = step = step + 1
            st["acc"] += loss
            st["acc_n"] += 1
            if st["acc_n"] == tc.log_every:
                st["log"].append([step, st["acc"] / st["acc_n"], norm])
                st["acc"], st["acc_n"] = 0.0, 0
                bar.set_postfix(loss=f"{st['log'][-1][1]:.4f}", tok_s=f"{st['tokens'] / st['train_s']:,.0f}")
            if step % tc.eval_every == 0 or step == tc.steps:
                err, cf, *gap = validate(params, cfg, tc, task, val)
                st["val_log"].append([step] + err.tolist())
                w = gap_window(tc.N)
                bar.write(f"step {step}: val error over N = {tc.N // 4}..{tc.N}: {err[w].mean():.3f}, context-free "
                          f"optimum {cf[w].mean():.3f}, paired gap {gap[0]:+.4f} +- {gap[1]:.4f} (zero predictor 1)")
            bar.update(1)
            if step % tc.ckpt_every == 0 or step == until:
                save()
                saved = (path, step)
    except KeyboardInterrupt:
        # Nothing is saved here: the interrupt may have hit the middle of an update.
        status, message = "interrupted", f"interrupted at step {st['step']} of {until}; {on_disk()}"
    bar.close()
    if status == "done" and st["step"] < tc.steps:
        status, message = "paused", f"stopped at step {st['step']} of {tc.steps} (--until); continue with --resume"
    rate = st["tokens"] / st["train_s"] if st["train_s"] > 0 else float("nan")
    return {"status": status, "step": st["step"], "message": message, "checkpoint": saved, "log": st["log"],
            "val_log": st["val_log"], "val_gap": gap, "tokens_per_s": rate, "params": params, "cfg": cfg}


def build_parser():
    p = argparse.ArgumentParser(prog="python -m mamba_from_scratch icl-train",
                                description="Train a Mamba or a linear- or softmax-attention Transformer on in-context "
                                            "single-index prompts (checkpoints in OUT/ckpt.npz).")
    defaults = TrainConfig()
    p.add_argument("--model", choices=MODELS, default=defaults.model)
    p.add_argument("--link", default=defaults.link, help="he1..he6 or poly:c0:c1:... (default he2)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--quick", action="store_true", help=f"small model and run: {QUICK}")
    p.add_argument("--full", action="store_true", help=f"the committed runs' configuration: {FULL}")
    p.add_argument("--resume", action="store_true", help="continue from OUT/ckpt.npz bit-identically")
    p.add_argument("--until", type=int, default=None,
                   help="stop after this step, keeping the schedule of --steps (resume later)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    for f in dataclasses.fields(TrainConfig):
        if f.name in ("model", "link"):
            continue
        flag = "--" + f.name.replace("_", "-")
        p.add_argument(flag, type=type(f.default), default=None, help=f"default {f.default}")
    return p


def config_from_args(args):
    """TrainConfig from parsed options: defaults, then --quick's or --full's, then explicit options."""
    values = {"model": args.model, "link": args.link}
    if args.quick and args.full:
        raise ValueError("--quick and --full are alternatives; pass one of them")
    if args.quick:
        values.update(QUICK)
    if args.full:
        values.update(FULL)
    for f in dataclasses.fields(TrainConfig):
        v = getattr(args, f.name, None)
        if f.name not in ("model", "link") and v is not None:
            values[f.name] = v
    return TrainConfig(**values)


def _sigterm_as_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None):
    args = build_parser().parse_args(argv)
    tc = config_from_args(args)
    check_output_dir("--out", args.out)
    tune_process()
    words = list(sys.argv[1:] if argv is None else argv)
    command = "python -m mamba_from_scratch icl-train " + shlex.join(words)
    resume_command = "python -m mamba_from_scratch icl-train " + shlex.join(
        words if "--resume" in words else words + ["--resume"])
    # SIGTERM (a scheduler's stop) ends the run like Ctrl-C: a message, not a silent death.
    previous = signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    try:
        result = train(tc, args.out, resume=args.resume, until=args.until, command=command,
                       progress=not args.no_progress)
    finally:
        signal.signal(signal.SIGTERM, previous)
    summary = {k: result[k] for k in ("status", "step", "message", "tokens_per_s")}
    summary.update(checkpoint=None if result["checkpoint"] is None else
                   {"path": result["checkpoint"][0], "step": result["checkpoint"][1]},
                   train_config=dataclasses.asdict(tc), n_params=count_params(result["cfg"]),
                   final_loss=result["log"][-1][1] if result["log"] else None,
                   val_error_at_N=result["val_log"][-1][1:] if result["val_log"] else None,
                   val_gap_to_context_free=result["val_gap"])
    with open(os.path.join(args.out, "train_summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    if result["status"] == "diverged":
        print(f"training diverged: {result['message']}", file=sys.stderr)
        return 1
    if result["status"] == "interrupted":
        again = (f"continue with: {resume_command}" if result["checkpoint"] is not None
                 else f"start again with: {command}")
        print(f"{result['message']}; {again}", file=sys.stderr)
        return 130
    print(f"{result['status']} at step {result['step']}; {result['tokens_per_s']:,.0f} tokens/s; "
          f"checkpoint {os.path.join(args.out, CHECKPOINT)}" + (f" ({result['message']})" if result["message"] else ""))
    return 0
