"""The named random streams of every experiment. Tested in tests/test_rng.py.

Each kind of random draw has its own generator, ``np.random.default_rng([seed, TAG, ...])``,
so that adding or resizing one draw never shifts another (the training batches do not move
when the validation set grows). The tags below are the numbers every committed result was
produced with: changing one changes results, so they are named here and nowhere else.

Sequence models, ``icl-train`` / ``icl-eval`` (icl/train.py, icl/evaluate_trained.py):
    TRAIN_INIT        [seed, 0]           the model's initialisation
    TRAIN_BATCH       [seed, 1, step]     the prompts of training step ``step`` (so a resumed
                                          run draws exactly the batches it would have drawn)
    TRAIN_TASK_POOL   [seed, 2]           the finite pool of tasks (betas) of --n-tasks
    TRAIN_VALIDATION  [seed, 3]           the validation prompts
    EVAL_TEST         [seed, 4, d]        icl-eval's test prompts of the tasks of dimension d
The single-index task itself (icl/task.py):
    TASK_SUBSPACE     [task seed, 7]      the hidden coordinates I of SingleIndexTask
Paper 1's one-layer model, ``icl-theory`` (icl/theory_run.py): [seed, link index, d, r, STAGE, ...]
for every (link, d) cell of the main run, the gate ablation and the sweeps
    THEORY_STAGE1_PROMPTS   1             Stage I prompts drawn at once
    THEORY_STAGE1_MLP       2, gate       Stage I's MLP draw (v, c) of each gate
    THEORY_STAGE2_PROMPTS   3, N          Stage II prompts at context length N
    THEORY_TEST             4, N          the test prompts at N (shared by every method)
    THEORY_STAGE2_MLP       5, N, gate    Stage II's redraw of c
    THEORY_VALIDATION       6, N          the product-gate sweep's validation prompts
    THEORY_STAGE1_CHUNK     11, i         chunk i of a streamed Stage I (--stage1-chunk)
    THEORY_SWEEP_LINK0      20            the sweeps' cells use link index 20 + k for value k
and the pretraining ablation, [seed, THEORY_ABLATE = 9, ...], reusing the stage tags
(1, T1, rep), (3, N), (4, N), (5, T1, rep) and three of its own: 6 (the indicator gamma's v),
7 (its Stage II), 8 (the practical AdamW variant).
Paper 3, ``outliers`` (icl/outliers/experiment.py): one SeedSequence(seed) spawned into the
independent streams OUTLIER_STREAMS (data, split, init, train, test, val).
"""
from __future__ import annotations

import numpy as np

TRAIN_INIT = 0
TRAIN_BATCH = 1
TRAIN_TASK_POOL = 2
TRAIN_VALIDATION = 3
EVAL_TEST = 4
TASK_SUBSPACE = 7

THEORY_STAGE1_PROMPTS = 1
THEORY_STAGE1_MLP = 2
THEORY_STAGE2_PROMPTS = 3
THEORY_TEST = 4
THEORY_STAGE2_MLP = 5
THEORY_VALIDATION = 6
THEORY_STAGE1_CHUNK = 11
THEORY_ABLATE = 9
THEORY_ABLATE_INDICATOR_V = 6
THEORY_ABLATE_INDICATOR_STAGE2 = 7
THEORY_ABLATE_PRACTICAL = 8
THEORY_SWEEP_LINK0 = 20

OUTLIER_STREAMS = ("data", "split", "init", "train", "test", "val")


def stream(seed, *tags):
    """The generator of one named stream: ``default_rng([seed, *tags])`` (tags as ints)."""
    return np.random.default_rng([int(seed), *[int(t) for t in tags]])


def outlier_streams(seed):
    """{name: generator} for the outliers experiment's independent draws of one seed."""
    spawned = np.random.SeedSequence(seed).spawn(len(OUTLIER_STREAMS))
    return dict(zip(OUTLIER_STREAMS, (np.random.default_rng(s) for s in spawned)))
