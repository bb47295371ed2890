"""What the ``outliers`` experiment varies, shared by the runner (experiment.py) and the
reports (report.py) so that neither imports the other's module for it. Tested in
tests/test_outliers.py.
"""
from __future__ import annotations

import numpy as np

ALPHAS = np.round(np.arange(10) / 10, 1)  # test outlier fractions
SUBSETS = ("all", "mirror_trained", "mirror_held_out")
LR_SCALES = (0.3, 3.0)            # the learning-rate study, relative to --lr
MAGNITUDES = (1.0, 2.0, 3.0, 4.0)  # the test outlier magnitude study (2.0 is the default)
VAL_SETS = ("clean", "flipped", "clean_mirror_trained", "clean_mirror_held_out")  # --tune


def model_lrs(lr: float, l: int) -> dict:
    """Mamba's gate weights sum to at most 1, the linear Transformer's G = 1 sum to l, so
    its output and gradients are ~l times larger: it gets lr / l for a comparable step."""
    return {"mamba": lr, "linear": lr / l}


def model_key(model: str, scale: float) -> str:
    """Name of a trained model: "mamba", or "mamba lr x0.3" for the learning-rate study."""
    return model if scale == 1.0 else f"{model} lr x{scale:g}"
