"""Plain SGD on the hinge loss for paper 3's two models, and their test error.
Tested in tests/test_outliers.py.

Each step draws a fresh batch of training prompts (training tasks, training outlier
directions, outlier probability p_a), runs every model being trained forward on that same
batch, takes the hand-written gradient of the mean hinge loss and moves each model's
parameters by ``-lr * grad``. Sharing the batch makes the Mamba-vs-linear comparison
paired (same data) and pays for the sampling once.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...optim import TrainingDiverged, cosine_lr, nonfinite_report
from ...progress import Progress
from ...validate import check_choice, check_positive_float, check_positive_int
from .data import CORRUPTIONS, DataConfig, Patterns, Prompts, sample_prompts
from .model import METHODS, MODELS, ModelConfig, hinge_backward, hinge_forward, model_backward, model_forward

SCHEDULES = ("constant", "cosine")


@dataclass
class TrainConfig:
    """SGD settings; defaults are ours (the paper does not give them) and are reported."""

    steps: int = 3000           # SGD steps, one fresh batch each
    batch: int = 64             # prompts per step
    lr: float = 0.1             # SGD step size (the Mamba's; see experiment.model_lrs)
    schedule: str = "constant"  # "constant" lr, or "cosine" decay from lr to 0 over the steps
    p_a: float = 0.6            # paper: outlier probability in training prompts
    corruption: str = "random"  # ours: training outliers get a fair-coin label (see docs)
    eval_every: int = 100       # steps between points of the training curve
    method: str = "closed"      # how the Mamba's gated sum is computed ("closed" or "scan")
    backend: str = "numpy"      # selective scan backend for method="scan"

    def validate(self):
        for name in ("steps", "batch", "eval_every"):
            check_positive_int(name, getattr(self, name))
        check_positive_float("lr", self.lr)
        check_choice("schedule", self.schedule, SCHEDULES)
        if not 0.0 <= self.p_a < 1.0:
            raise ValueError(f"p_a must lie in [0, 1), got {self.p_a!r}")
        check_choice("corruption", self.corruption, CORRUPTIONS)
        check_choice("method", self.method, METHODS)
        return self


def error_rate(F: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-prompt 0-1 error of sign(F); an exact tie F = 0 counts as half an error."""
    return np.where(F == 0, 0.5, (np.sign(F) != y).astype(float))  # (b,)


def evaluate(params: dict, prompts: Prompts, method: str = "closed") -> float:
    """Mean classification error of the model on a batch of prompts."""
    F, _ = model_forward(params, ModelConfig.of(params, method), prompts.tokens)
    return float(error_rate(F, prompts.y_query).mean())


def train(models: dict, lrs: dict, data_cfg: DataConfig, patterns: Patterns,
          train_tasks: np.ndarray, cfg: TrainConfig, rng: np.random.Generator,
          eval_sets: dict | None = None, desc: str | None = None) -> dict:
    """Train every model in ``models`` in place, all on the same batches.

    Args:
        models: {name: params} with params from :func:`model.init_params` (a Mamba's has "w").
        lrs: {name: peak SGD step size}; ``cfg.lr`` is not used here.
        train_tasks: (T, 2) task pairs to draw training prompts from.
        eval_sets: {set name: Prompts} whose error is recorded every ``eval_every`` steps.
        desc: progress bar label (None: no progress bar).
    Returns:
        {name: history} with history = {"step": [...], "loss": mean hinge loss over the last
        eval_every steps, and for each eval set "error_<set name>": [...]}.
    Raises:
        TrainingDiverged at the first non-finite loss, gradient or parameter of any model
        (its message names the model); an update with a non-finite gradient is not applied.
    """
    cfg.validate()
    if set(lrs) != set(models):
        raise ValueError(f"lrs must name the same models as models, got {sorted(lrs)} vs {sorted(models)}")
    eval_sets = eval_sets or {}
    history = {name: {"step": [], "loss": [], **{f"error_{e}": [] for e in eval_sets}} for name in models}
    window = {name: [] for name in models}
    model_cfgs = {name: ModelConfig.of(params, cfg.method, cfg.backend) for name, params in models.items()}
    bar = Progress(cfg.steps, desc, enabled=desc is not None, leave=False)
    for step in range(1, cfg.steps + 1):
        batch = sample_prompts(data_cfg, patterns, train_tasks, cfg.batch, cfg.p_a,
                               cfg.corruption, rng)
        scale = 1.0 if cfg.schedule == "constant" else cosine_lr(step - 1, cfg.steps, 1.0)
        for name, params in models.items():
            F, cache = model_forward(params, model_cfgs[name], batch.tokens)
            loss, hcache = hinge_forward(F, batch.y_query)
            grads = model_backward(hinge_backward(1.0, hcache), cache)[0] if np.isfinite(loss) else None
            bad = nonfinite_report(float(loss), grads)
            if bad is None:
                for key, g in grads.items():
                    params[key] -= scale * lrs[name] * g
                bad = nonfinite_report(params=params)
                bad = bad and f"after the update, {bad}"
            if bad is not None:
                raise TrainingDiverged(step, f"model {name!r} (lr {scale * lrs[name]:g}): {bad}")
            window[name].append(loss)
        if step % cfg.eval_every == 0 or step == cfg.steps:
            for name, params in models.items():
                hist = history[name]
                hist["step"].append(step)
                hist["loss"].append(float(np.mean(window[name])))
                window[name] = []
                for e, prompts in eval_sets.items():
                    hist[f"error_{e}"].append(evaluate(params, prompts, cfg.method))
        bar.update()
    bar.close()
    return history


__all__ = ["TrainConfig", "train", "evaluate", "error_rate", "MODELS", "SCHEDULES"]
