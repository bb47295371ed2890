"""icl/baselines.py: each reference predictor does what its name says."""
import numpy as np
import pytest

from mamba_from_scratch.icl.baselines import BASELINES, baseline_predict, krr_baseline
from mamba_from_scratch.icl.krr import krr_predict
from mamba_from_scratch.icl.metrics import normalized_error
from mamba_from_scratch.icl.task import SingleIndexTask


@pytest.fixture(scope="module")
def task_and_prompts():
    task = SingleIndexTask(d=5, r=2, link="he2", tau=0.0, seed=3)
    return task, task.sample(np.random.default_rng(0), 4, 24, 3)


def test_every_baseline_predicts_every_query(task_and_prompts):
    task, pr = task_and_prompts
    for method in BASELINES:
        pred = baseline_predict(method, task, pr, 8)
        assert pred.shape == pr.y_query_clean.shape and np.all(np.isfinite(pred)), method


def test_zero_oracle_and_context_free(task_and_prompts):
    task, pr = task_and_prompts
    assert np.all(baseline_predict("zero", task, pr) == 0)
    assert np.array_equal(baseline_predict("oracle", task, pr), pr.y_query_clean)   # tau = 0: exact
    assert np.array_equal(baseline_predict("context_free", task, pr), task.context_free_predict(pr))
    assert np.all(baseline_predict("krr_full", task, pr, 0) == 0)                   # no examples: 0


def test_krr_uses_the_first_n_examples_and_the_hidden_coordinates(task_and_prompts):
    task, pr = task_and_prompts
    pred, choices = krr_baseline(task, pr, 10, intrinsic=True)
    assert np.array_equal(pred, baseline_predict("krr_intrinsic", task, pr, 10))
    ref, _ = krr_predict(task.intrinsic(pr.x_context[:, :10]), pr.y_context[:, :10], task.intrinsic(pr.x_query))
    assert np.array_equal(pred, ref) and len(choices) == len(pr)
    full = baseline_predict("krr_full", task, pr)                     # n = None: the whole context
    assert np.array_equal(full, krr_predict(pr.x_context, pr.y_context, pr.x_query)[0])
    # knowing the subspace helps: on He2 with r = 2 of d = 5 the intrinsic KRR is better
    e_int = normalized_error(baseline_predict("krr_intrinsic", task, pr), pr.y_query_clean)[0]
    e_zero = normalized_error(np.zeros_like(full), pr.y_query_clean)[0]
    assert e_int < e_zero


def test_unknown_baseline_is_a_value_error(task_and_prompts):
    with pytest.raises(ValueError, match="method"):
        baseline_predict("knn", *task_and_prompts)
