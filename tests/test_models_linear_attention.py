"""The linear-attention core (models/linear_attention.py): the masked quadratic form, the
recurrent form and finite-difference gradients, and the running sum = the selective scan with
no decay. What it shares with the softmax Transformer (block and model gradients, causality,
parameter counts, checkpoints, bad input) is tested in tests/test_models_transformer.py."""
import numpy as np

from mamba_from_scratch.gradcheck import numerical_grad, rel_error
from mamba_from_scratch.models.linear_attention import (
    causal_linear_attention_backward,
    causal_linear_attention_forward,
    causal_linear_attention_recurrent,
    elu1_forward,
)
from mamba_from_scratch.scan import selective_scan_forward

TOL = 1e-6


def test_attention_core_matches_quadratic_form_and_gradients():
    rng = np.random.default_rng(0)
    b, l, h, e = 2, 5, 3, 4
    fq, fk = elu1_forward(rng.normal(size=(b, l, h, e)))[0], elu1_forward(rng.normal(size=(b, l, h, e)))[0]
    v, do = rng.normal(size=(b, l, h, e)), rng.normal(size=(b, l, h, e))
    o, cache = causal_linear_attention_forward(fq, fk, v)
    # the same thing written as masked "attention weights" phi(q_t).phi(k_s), s <= t
    w = np.einsum("bthe,bshe->bhts", fq, fk) * np.tril(np.ones((l, l)))
    ref = np.einsum("bhts,bshe->bthe", w, v) / (w.sum(-1).transpose(0, 2, 1)[..., None] + 1e-6)
    assert rel_error(o, ref) < 1e-12
    assert rel_error(o, causal_linear_attention_recurrent(fq, fk, v)) < 1e-12
    loss = lambda: float(np.sum(causal_linear_attention_forward(fq, fk, v)[0] * do))
    do_copy = do.copy()
    dfq, dfk, dv = causal_linear_attention_backward(do, cache)
    assert np.array_equal(do, do_copy)                                         # dout is not written into
    for analytic, x in ((dfq, fq), (dfk, fk), (dv, v)):
        assert rel_error(analytic, numerical_grad(loss, x)) < TOL


def test_running_sum_is_the_selective_scan_without_decay():
    """A = 0 (deltaA = 1), delta = 1, B = phi(k), C = phi(q), u = (v, 1): the scan's state is
    (S_t, z_t) and its output (num_t, den_t), the numerator and normaliser of the attention."""
    rng = np.random.default_rng(1)
    b, l, e = 3, 7, 4
    fq, fk = elu1_forward(rng.normal(size=(b, l, e)))[0], elu1_forward(rng.normal(size=(b, l, e)))[0]
    v = rng.normal(size=(b, l, e))
    u = np.concatenate([v, np.ones((b, l, 1))], axis=-1)                  # (b, l, e + 1)
    y, _, _ = selective_scan_forward(u, np.ones_like(u), np.zeros((e + 1, e)), fk, fq, backend="numpy")
    o_scan = y[..., :e] / (y[..., e:] + 1e-6)
    o, _ = causal_linear_attention_forward(fq[:, :, None], fk[:, :, None], v[:, :, None])
    assert rel_error(o[:, :, 0], o_scan) < 1e-12
