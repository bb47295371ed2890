"""Text generation: prefill the prompt with the full forward, then one recurrent step per token.

The prompt costs one parallel forward (the scan over l tokens), which also leaves the
recurrent state behind (the scan's last h and the last k-1 conv inputs); each new token then
costs one :func:`~mamba_from_scratch.lm.model.lm_step`, O(1) in the length so far, which is
the point of a state space model against a Transformer's growing KV cache.
"""
from __future__ import annotations

import numpy as np

from ..validate import check_float_array, check_positive_float, check_positive_int
from .model import check_lm_params, check_token_ids, lm_forward, lm_step, state_from_cache


def next_token_probs(logits, temperature=1.0, top_k=None):
    """The distribution the next token is drawn from.

    ``softmax(logits / temperature)`` over the ``top_k`` largest logits (all when None; a top_k
    above the vocabulary keeps all; logits tied with the k-th largest are all kept), zero
    elsewhere; ``temperature == 0`` is the limit, a one-hot at the argmax (the first one on a
    tie, as ``np.argmax``). The row maximum is subtracted before dividing by the temperature,
    so neither a large logit nor a tiny temperature overflows.

    Args:
        logits: (b, V) float32 or float64, finite.  temperature: >= 0.  top_k: int >= 1 or None.
    Returns:
        probs: (b, V) float64, rows summing to 1.
    """
    check_float_array("logits", logits, ndim=2)
    check_positive_float("temperature", temperature, allow_zero=True)
    if top_k is not None:
        check_positive_int("top_k", top_k)
    z = logits.astype(np.float64)                                                    # (b, V)
    if temperature == 0:
        probs = np.zeros_like(z)
        probs[np.arange(z.shape[0]), z.argmax(axis=1)] = 1.0
        return probs
    z = (z - z.max(axis=1, keepdims=True)) / temperature                             # <= 0, max exactly 0
    if top_k is not None and top_k < z.shape[1]:
        kth = np.partition(z, -top_k, axis=1)[:, -top_k][:, None]                    # k-th largest, (b, 1)
        z = np.where(z >= kth, z, -np.inf)
    p = np.exp(z)                                                                    # (b, V), the max gives 1
    return p / p.sum(axis=1, keepdims=True)


def sample_next(logits, temperature, top_k, rng):
    """Pick one token per row: greedy (argmax) at ``temperature == 0``, otherwise a draw from
    :func:`next_token_probs` by inverting its CDF with one uniform number per row.

    Args:
        logits: (b, V) float.  temperature: >= 0.  top_k: int >= 1 or None.
        rng: numpy.random.Generator.
    Returns:
        ids: (b,) int64.
    """
    if temperature == 0:
        return np.argmax(logits, axis=1).astype(np.int64)
    cdf = np.cumsum(next_token_probs(logits, temperature, top_k), axis=1)           # (b, V)
    u = rng.random(cdf.shape[0])[:, None] * cdf[:, -1:]                              # (b, 1)
    return np.minimum((cdf <= u).sum(axis=1), cdf.shape[1] - 1).astype(np.int64)


def _check_generate_args(params, cfg, input_ids, max_new_tokens, temperature, top_k, seed):
    check_lm_params(params, cfg)
    check_token_ids("input_ids", input_ids, cfg.vocab_size, 2)
    check_positive_int("max_new_tokens", max_new_tokens, minimum=0)
    check_positive_float("temperature", temperature, allow_zero=True)
    if top_k is not None:
        check_positive_int("top_k", top_k)
    check_positive_int("seed", seed, minimum=0)


def iter_generate(params, cfg, input_ids, max_new_tokens, temperature=1.0, top_k=None, seed=0,
                  stop_at_eos=True, backend="numba"):
    """Yield the new tokens one at a time (for streaming); see :func:`generate`.

    Yields:
        ids: (b,) int64, the next token of every row. The first comes after the prefill.
    """
    _check_generate_args(params, cfg, input_ids, max_new_tokens, temperature, top_k, seed)
    if max_new_tokens == 0:
        return
    rng = np.random.default_rng(seed)
    eos = cfg.eos_token_id if stop_at_eos else None
    logits, cache = lm_forward(params, cfg, input_ids, backend)                      # (b, l, V)
    state = state_from_cache(cache)
    last = logits[:, -1]                                                             # (b, V)
    del cache, logits                                                                # the activations are not needed
    done = np.zeros(input_ids.shape[0], bool)
    for t in range(max_new_tokens):
        ids = sample_next(last, temperature, top_k, rng)                             # (b,)
        if eos is not None:
            ids = np.where(done, eos, ids)                                           # finished rows keep emitting eos
            done |= ids == eos
        yield ids
        if t + 1 == max_new_tokens or done.all():
            return
        last, state = lm_step(params, cfg, ids, state)


def generate(params, cfg, input_ids, max_new_tokens, temperature=1.0, top_k=None, seed=0,
             stop_at_eos=True, backend="numba"):
    """Continue every prompt by up to ``max_new_tokens`` tokens.

    Args:
        params, cfg: from :func:`~mamba_from_scratch.lm.from_pretrained` or ``init_lm_params``.
        input_ids: integer (b, l) prompts (same length; no padding).
        max_new_tokens: >= 0.  temperature: 0 is greedy.  top_k: int or None.
        seed: seeds the sampler's numpy Generator (same seed, same text).
        stop_at_eos: stop once every row has produced ``cfg.eos_token_id`` (when it is set).
        backend: selective-scan backend for the prefill.
    Returns:
        ids: (b, l + t) int64, the prompts followed by the t <= max_new_tokens new tokens.
    """
    new = list(iter_generate(params, cfg, input_ids, max_new_tokens, temperature, top_k, seed,
                             stop_at_eos, backend))
    return np.concatenate([input_ids.astype(np.int64)] + [t[:, None] for t in new], axis=1)
