"""rng.py: the named streams are exactly the seeds every committed result was drawn with."""
import numpy as np

from mamba_from_scratch import rng as R
from mamba_from_scratch.icl.task import SingleIndexTask

# The literal tags the code used before the streams were named (issue 19); changing one of
# them changes every result drawn from that stream.
BEFORE = {
    (R.TRAIN_INIT,): [0], (R.TRAIN_BATCH, 17): [1, 17], (R.TRAIN_TASK_POOL,): [2],
    (R.TRAIN_VALIDATION,): [3], (R.EVAL_TEST, 16): [4, 16], (R.TASK_SUBSPACE,): [7],
    (3, 16, 8, R.THEORY_STAGE1_PROMPTS): [3, 16, 8, 1], (0, 16, 8, R.THEORY_STAGE1_MLP, 1): [0, 16, 8, 2, 1],
    (0, 16, 8, R.THEORY_STAGE2_PROMPTS, 256): [0, 16, 8, 3, 256], (0, 16, 8, R.THEORY_TEST, 256): [0, 16, 8, 4, 256],
    (0, 16, 8, R.THEORY_STAGE2_MLP, 256, 2): [0, 16, 8, 5, 256, 2],
    (0, 16, 8, R.THEORY_VALIDATION, 256): [0, 16, 8, 6, 256], (0, 16, 8, R.THEORY_STAGE1_CHUNK, 3): [0, 16, 8, 11, 3],
    (R.THEORY_ABLATE, R.THEORY_ABLATE_INDICATOR_V): [9, 6], (R.THEORY_ABLATE, R.THEORY_ABLATE_INDICATOR_STAGE2): [9, 7],
    (R.THEORY_ABLATE, R.THEORY_ABLATE_PRACTICAL): [9, 8], (R.THEORY_SWEEP_LINK0 + 1,): [21],
}


def test_named_streams_draw_what_the_literal_tags_drew():
    for seed in (0, 5):
        for tags, literal in BEFORE.items():
            got = R.stream(seed, *tags).integers(2**62, size=4)
            assert np.array_equal(got, np.random.default_rng([seed, *literal]).integers(2**62, size=4)), tags
            assert R.stream(np.int64(seed), *map(np.int64, tags)).integers(2**62) == got[0]   # numpy ints too


def test_outlier_streams_are_the_spawned_seed_sequence():
    streams = R.outlier_streams(3)
    assert list(streams) == ["data", "split", "init", "train", "test", "val"]
    spawned = np.random.SeedSequence(3).spawn(6)
    for g, s in zip(streams.values(), spawned):
        assert g.random() == np.random.default_rng(s).random()


def test_a_task_subspace_is_frozen():
    # SingleIndexTask(d=32, r=8, seed=0).index_set as drawn before the streams were named
    assert SingleIndexTask(32, 8, "he3", seed=0).index_set.tolist() == FROZEN_SUBSPACE


FROZEN_SUBSPACE = [1, 6, 15, 16, 19, 21, 23, 31]
