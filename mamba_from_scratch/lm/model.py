"""The Mamba language model: ``embeddings -> n_layer residual Mamba blocks -> norm_f -> lm_head``.

The residual stack is the package's one backbone (models/backbone.py: ``blocks_forward``,
``blocks_backward``, ``blocks_step`` over the Mamba blocks of models/mamba.py); this file
adds what a language model needs around it instead of read_in/read_out: a token embedding,
the (tied) LM head, the cross-entropy loss with its backward, and the embedding's backward
(a scatter-add). Layout and names follow transformers'
``MambaForCausalLM`` with the ``backbone.`` prefix stripped:

    embeddings.weight            (vocab, d_model)
    layers.{i}.norm.weight       (d_model,)
    layers.{i}.mixer.*           as in mixer.py
    norm_f.weight                (d_model,)
    lm_head.weight               (vocab, d_model), only when the head is not tied

With ``tie_embeddings`` (every released Mamba checkpoint) the head *is* the embedding matrix:
``logits = norm_f(h) @ embeddings.weight.T``, and the embedding's gradient is the sum of the
head's and the lookup's.

Glossary: b batch size, l sequence length, V vocab size, d_model residual width.

Precision: everything runs in the parameters' dtype, float32 or float64. The official
``residual_in_fp32`` keeps the residual stream in float32 when the weights are float16 or
bfloat16; we never hold weights below float32 (``from_pretrained`` upcasts them), so the
residual stream is always at least float32 and the flag holds by construction. It is kept
in the config so that a saved config round-trips.
Official implementation: transformers/models/mamba/modeling_mamba.py (``MambaForCausalLM``).
Tests: tests/test_lm.py.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from ..layers import rmsnorm_backward, rmsnorm_forward
from ..layers.rmsnorm import EPS as RMSNORM_EPS
from ..models.backbone import blocks_backward, blocks_forward, blocks_step
from ..models.mamba import MambaConfig, init_params
from ..validate import check_float_array, check_positive_float, check_positive_int


@dataclass(kw_only=True)
class MambaLMConfig:
    d_model: int                 # residual width (transformers: hidden_size)
    n_layer: int                 # residual blocks (num_hidden_layers)
    vocab_size: int              # rows of the embedding; the tokenizer may use fewer (padded to a multiple of 8)
    d_state: int = 16            # SSM state size n (state_size)
    d_conv: int = 4              # causal conv width (conv_kernel)
    expand: int = 2              # d_inner = expand * d_model
    dt_rank: int | str = "auto"  # time_step_rank; "auto" = ceil(d_model / 16)
    tie_embeddings: bool = True  # lm_head.weight is embeddings.weight, as in every released checkpoint
    residual_in_fp32: bool = True  # holds by construction: weights are never below float32 here
    layer_norm_epsilon: float = RMSNORM_EPS  # block.py's RMSNorm uses this fixed value
    eos_token_id: int | None = None  # generation stops after it (None: never)

    def __post_init__(self):
        for name in ("d_model", "n_layer", "vocab_size", "d_state", "d_conv", "expand"):
            check_positive_int(name, getattr(self, name))
        if self.dt_rank == "auto":
            self.dt_rank = math.ceil(self.d_model / 16)
        check_positive_int("dt_rank", self.dt_rank)
        for name in ("tie_embeddings", "residual_in_fp32"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        check_positive_float("layer_norm_epsilon", self.layer_norm_epsilon)
        if self.layer_norm_epsilon != RMSNORM_EPS:
            raise ValueError(f"layer_norm_epsilon must be {RMSNORM_EPS} (the RMSNorm of block.py), "
                             f"got {self.layer_norm_epsilon}")
        if self.eos_token_id is not None:
            check_positive_int("eos_token_id", self.eos_token_id, minimum=0)

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    def backbone(self) -> MambaConfig:
        """The same blocks as a :class:`MambaConfig` (its read-in/read-out sizes are unused)."""
        return MambaConfig(d_model=self.d_model, n_layer=self.n_layer, d_state=self.d_state,
                           d_conv=self.d_conv, expand=self.expand, dt_rank=self.dt_rank, d_in=1, d_out=1)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def param_shapes(self) -> dict:
        """Every parameter's name and shape (transformers' names without ``backbone.``)."""
        shapes = {"embeddings.weight": (self.vocab_size, self.d_model)}
        shapes.update({k: v for k, v in self.backbone().param_shapes().items()
                       if not k.startswith(("read_in.", "read_out."))})
        if not self.tie_embeddings:
            shapes["lm_head.weight"] = (self.vocab_size, self.d_model)
        return shapes


def init_lm_params(cfg: MambaLMConfig, rng: np.random.Generator, dtype=np.float32):
    """The official initialization: the backbone as :func:`mamba_from_scratch.models.mamba.init_params`,
    embeddings (and an untied head) ~ N(0, 0.02^2) as ``MambaLMHeadModel._init_weights``.

    Returns:
        params: dict keyed as :meth:`MambaLMConfig.param_shapes`, arrays of ``dtype``.
    """
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    p = {k: v for k, v in init_params(cfg.backbone(), rng, dtype).items()
         if not k.startswith(("read_in.", "read_out."))}
    p["embeddings.weight"] = (0.02 * rng.standard_normal((cfg.vocab_size, cfg.d_model))).astype(dtype)
    if not cfg.tie_embeddings:
        p["lm_head.weight"] = (0.02 * rng.standard_normal((cfg.vocab_size, cfg.d_model))).astype(dtype)
    return p


def check_lm_params(params, cfg):
    """Raise ValueError unless ``params`` has exactly the keys and shapes of ``cfg``, one float dtype."""
    if not isinstance(params, dict):
        raise ValueError(f"params must be a dict of arrays, got {type(params).__name__}")
    want = cfg.param_shapes()
    missing, extra = sorted(set(want) - set(params)), sorted(set(params) - set(want))
    if missing or extra:
        raise ValueError(f"params keys do not match the config: missing {missing[:5]}, unexpected {extra[:5]}")
    dtype = check_float_array("params['embeddings.weight']", params["embeddings.weight"]).dtype
    for name, shape in want.items():
        check_float_array(f"params[{name!r}]", params[name], shape=shape, dtype=dtype)


def check_token_ids(name, ids, vocab_size, ndim):
    """Raise ValueError unless ``ids`` is an integer array of rank ``ndim``, non-empty, in [0, vocab_size)."""
    if not isinstance(ids, np.ndarray) or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"{name} must be an integer numpy.ndarray, got "
                         f"{getattr(ids, 'dtype', type(ids).__name__)}")
    if ids.ndim != ndim or ids.size == 0:
        raise ValueError(f"{name} must be a non-empty array with {ndim} dimensions, got shape {ids.shape}")
    if ids.min() < 0 or ids.max() >= vocab_size:
        raise ValueError(f"{name} must lie in [0, {vocab_size}), got values in [{ids.min()}, {ids.max()}]")
    return ids


def embedding_forward(ids, weight):
    """A table lookup: row ``ids[i]`` of ``weight`` for every position.

    Args:
        ids: integer array (...,).  weight: (V, d).
    Returns:
        out: (..., d), cache.
    """
    return weight[ids], (ids, weight.shape, weight.dtype)


def embedding_backward(dout, cache):
    """Each row of ``weight`` receives the sum of ``dout`` over the positions that looked it up:
    ``dweight[v] = sum_{i: ids[i] = v} dout[i]``, a scatter-add (``np.add.at`` adds repeated
    indices, where ``dweight[ids] += dout`` would keep only one of them).

    Returns:
        dids: None (integer inputs have no gradient), dweight: (V, d).
    """
    ids, shape, dtype = cache
    dweight = np.zeros(shape, dtype)
    np.add.at(dweight, ids.reshape(-1), dout.reshape(-1, shape[1]))
    return None, dweight


def cross_entropy_forward(logits, targets):
    """Mean next-token cross-entropy ``L = -mean_i log softmax(logits_i)[targets_i]``.

    Args:
        logits: (..., V) float.  targets: integer array (...,) of the same leading shape.
    Returns:
        loss: Python float, cache.
    """
    check_float_array("logits", logits)
    if logits.ndim < 1 or logits.shape[:-1] != np.shape(targets) or logits.size == 0:
        raise ValueError(f"targets must have shape logits.shape[:-1] = {logits.shape[:-1]}, "
                         f"got {np.shape(targets)}")
    check_token_ids("targets", np.asarray(targets), logits.shape[-1], logits.ndim - 1)
    z = logits.reshape(-1, logits.shape[-1])                           # (m, V)
    t = np.asarray(targets).reshape(-1)                                # (m,)
    zmax = z.max(axis=1, keepdims=True)                                # shift so exp cannot overflow
    logsumexp = zmax[:, 0] + np.log(np.exp(z - zmax).sum(axis=1))     # (m,)
    loss = float(np.mean(logsumexp - z[np.arange(len(t)), t]))
    return loss, (z, t, logsumexp, logits.shape)


def cross_entropy_backward(dloss, cache):
    """``dL/dlogits_i = (softmax(logits_i) - onehot(targets_i)) / m`` for m positions.

    Args:
        dloss: scalar upstream gradient (1.0 when the loss is the objective).
    Returns:
        dlogits: same shape as the logits.
    """
    z, t, logsumexp, shape = cache
    dz = np.exp(z - logsumexp[:, None])                                # softmax, (m, V)
    dz[np.arange(len(t)), t] -= 1.0
    dz *= dloss / len(t)
    return dz.reshape(shape)


def _head_weight(params, cfg):
    return params["embeddings.weight"] if cfg.tie_embeddings else params["lm_head.weight"]


def lm_forward(params, cfg, input_ids, backend="numba"):
    """Logits for every position.

    Args:
        params: dict from :func:`init_lm_params` or :func:`~mamba_from_scratch.lm.from_pretrained`.
        cfg: MambaLMConfig.  input_ids: integer (b, l).  backend: selective-scan backend.
    Returns:
        logits: (b, l, V) in the parameters' dtype, cache for :func:`lm_backward` (and
        :func:`state_from_cache`, the recurrent state after the last token).
    """
    check_lm_params(params, cfg)
    check_token_ids("input_ids", input_ids, cfg.vocab_size, 2)
    h, emb_cache = embedding_forward(input_ids, params["embeddings.weight"])           # (b, l, d_model)
    h, states, block_caches = blocks_forward(h, params, cfg.backbone(), None, backend)  # (b, l, d_model)
    hn, norm_cache = rmsnorm_forward(h, params["norm_f.weight"])                       # (b, l, d_model)
    logits = hn @ _head_weight(params, cfg).T                                          # (b, l, V)
    return logits, (cfg, params, emb_cache, block_caches, states, norm_cache, hn)


def lm_backward(dlogits, cache):
    """The forward read in reverse; a tied head adds its gradient to the embedding's.

    Args:
        dlogits: (b, l, V) gradient of the loss w.r.t. the logits.
    Returns:
        grads: dict keyed like the parameters; dx: (b, l, d_model), the gradient w.r.t. the
        embedded input (the token ids themselves have none).
    """
    cfg, params, emb_cache, block_caches, _, norm_cache, hn = cache
    d = hn.shape[-1]
    grads = {}
    dhead = dlogits.reshape(-1, cfg.vocab_size).T @ hn.reshape(-1, d)                 # (V, d_model)
    dhn = dlogits @ _head_weight(params, cfg)                                          # (b, l, d_model)
    dh, grads["norm_f.weight"] = rmsnorm_backward(dhn, norm_cache)
    block_grads, dh = blocks_backward(dh, block_caches, cfg.backbone())
    grads.update(block_grads)
    _, demb = embedding_backward(dh, emb_cache)
    if cfg.tie_embeddings:
        grads["embeddings.weight"] = demb + dhead
    else:
        grads["embeddings.weight"], grads["lm_head.weight"] = demb, dhead
    return grads, dh


def state_from_cache(cache):
    """The recurrent state after the last token of a :func:`lm_forward` call, for :func:`lm_step`.

    The blocks' forward returns it (the scan's last h and the last k-1 conv inputs of each
    mixer), and :func:`lm_forward` keeps it, so prefill is one full forward, not l steps.

    Returns:
        state: per layer {"conv": (b, k-1, d_inner), "h": (b, d_inner, n)}, fresh arrays.
    """
    cfg, params, _, _, states, _, _ = cache
    dtype = params["embeddings.weight"].dtype
    return [{"conv": np.array(s["conv"], dtype=dtype), "h": np.array(s["h"], dtype=dtype)} for s in states]


def init_lm_state(cfg, b, dtype=np.float32):
    """The empty state (no tokens seen): zeros, as the full forward starts from."""
    return [{"conv": np.zeros((b, cfg.d_conv - 1, cfg.d_inner), dtype),
             "h": np.zeros((b, cfg.d_inner, cfg.d_state), dtype)} for _ in range(cfg.n_layer)]


def lm_step(params, cfg, token_ids, state):
    """One token of recurrent inference: O(1) work per token, the same logits as the full forward.

    Parameters are not re-validated here (that is per token; :func:`lm_forward` validates them).

    Args:
        token_ids: integer (b,).  state: from :func:`init_lm_state` or :func:`state_from_cache`.
    Returns:
        logits: (b, V), the new state (the old one is left unchanged).
    """
    check_token_ids("token_ids", token_ids, cfg.vocab_size, 1)
    if not isinstance(state, list) or len(state) != cfg.n_layer:
        raise ValueError(f"state must be a list of {cfg.n_layer} per-layer dicts, got {type(state).__name__}")
    h = params["embeddings.weight"][token_ids]                                         # (b, d_model)
    h, new_state = blocks_step(h, params, cfg.backbone(), state)
    hn, _ = rmsnorm_forward(h, params["norm_f.weight"])
    return hn @ _head_weight(params, cfg).T, new_state                                 # (b, V)
