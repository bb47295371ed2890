"""The whole model: ``read_in -> n_layer residual Mamba blocks -> norm_f -> read_out``.

A sequence-to-sequence regressor ``(b, l, d_in) -> (b, l, d_out)``, the shape in-context
learning needs (Garg et al. 2022 use the same read-in/read-out around their backbone).

Parameters are one flat dict keyed by the official state-dict names
(``layers.0.mixer.in_proj.weight``, ``norm_f.weight``, ...) in the official layouts, so
weights exported from the PyTorch implementations load without renaming or transposing.
Gradients use the same keys and shapes.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from .block import block_backward, block_forward, block_step
from .layers import linear_backward, linear_forward, rmsnorm_backward, rmsnorm_forward, softplus_inverse
from .scan import resolve_backend
from .validate import check_array_dict, check_float_array, check_float_dtype, check_positive_float, check_positive_int


@dataclass(kw_only=True)
class MambaConfig:
    d_model: int                 # residual width; everything else scales with it
    n_layer: int                 # number of residual Mamba blocks
    d_state: int = 16            # SSM state size n per channel: the official default, enough memory for language
    d_conv: int = 4              # local conv width: sees 3 past tokens, cheap and the official default
    expand: int = 2              # d_inner = expand * d_model, like a Transformer MLP's widening
    dt_rank: int | str = "auto"  # rank of the delta projection; "auto" = ceil(d_model / 16) as official
    d_in: int                    # features per input token
    d_out: int                   # outputs per position
    dt_min: float = 1e-3         # init range of delta: 1e-3 keeps memories ~1000 steps long ...
    dt_max: float = 1e-1         # ... and 1e-1 ~10 steps, so channels start at many time scales
    dt_init_floor: float = 1e-4  # no channel starts with a step so small it never updates

    def __post_init__(self):
        for name in ("d_model", "n_layer", "d_state", "d_conv", "expand", "d_in", "d_out"):
            check_positive_int(name, getattr(self, name))
        if self.dt_rank == "auto":
            self.dt_rank = math.ceil(self.d_model / 16)
        check_positive_int("dt_rank", self.dt_rank)
        for name in ("dt_min", "dt_max", "dt_init_floor"):
            check_positive_float(name, getattr(self, name))
        if not self.dt_min <= self.dt_max:
            raise ValueError(f"dt_min must be <= dt_max, got {self.dt_min} > {self.dt_max}")
        if not self.dt_init_floor <= self.dt_max:
            # the floor is applied after sampling in [dt_min, dt_max]: above dt_max it would
            # replace every channel's step by the floor
            raise ValueError(f"dt_init_floor must be <= dt_max ({self.dt_max}), got {self.dt_init_floor}")

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def param_shapes(self) -> dict:
        """Every parameter's name and shape, in the official layouts."""
        di, n, r, k = self.d_inner, self.d_state, self.dt_rank, self.d_conv
        shapes = {"read_in.weight": (self.d_model, self.d_in), "read_in.bias": (self.d_model,)}
        for i in range(self.n_layer):
            p = f"layers.{i}."
            shapes.update({
                p + "norm.weight": (self.d_model,),
                p + "mixer.in_proj.weight": (2 * di, self.d_model),
                p + "mixer.conv1d.weight": (di, 1, k),
                p + "mixer.conv1d.bias": (di,),
                p + "mixer.x_proj.weight": (r + 2 * n, di),
                p + "mixer.dt_proj.weight": (di, r),
                p + "mixer.dt_proj.bias": (di,),
                p + "mixer.A_log": (di, n),
                p + "mixer.D": (di,),
                p + "mixer.out_proj.weight": (self.d_model, di),
            })
        shapes.update({"norm_f.weight": (self.d_model,), "read_out.weight": (self.d_out, self.d_model),
                       "read_out.bias": (self.d_out,)})
        return shapes


def init_params(cfg: MambaConfig, rng: np.random.Generator, dtype=np.float32):
    """The official initialization (mamba_simple.py + MambaLMHeadModel._init_weights).

    - Linear and conv weights: PyTorch's default U(+-1/sqrt(fan_in)); biases of Linear 0.
    - out_proj: rescaled by 1/sqrt(n_layer) so the residual stream's variance does not grow
      with depth (GPT-2's prenorm-residual trick, as the official ``_init_weights``).
    - dt_proj.weight ~ U(+-dt_rank^-1/2); dt_proj.bias = softplus^-1(dt) with
      dt = exp(U[log dt_min, log dt_max]) floored at dt_init_floor, so that
      softplus(bias) -- the initial step size -- lies in [dt_min, dt_max].
    - A_log[d, :] = log(1..n) (S4D-real: A = -(1..n)); D = 1; norm weights 1.
    """
    if not isinstance(cfg, MambaConfig):
        raise ValueError(f"cfg must be a MambaConfig, got {type(cfg).__name__}")
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    dtype = check_float_dtype("dtype", dtype)

    def uniform(shape, bound):
        return rng.uniform(-bound, bound, size=shape)

    di, n, r, k = cfg.d_inner, cfg.d_state, cfg.dt_rank, cfg.d_conv
    p = {"read_in.weight": uniform((cfg.d_model, cfg.d_in), cfg.d_in ** -0.5),
         "read_in.bias": np.zeros(cfg.d_model)}
    for i in range(cfg.n_layer):
        pre = f"layers.{i}."
        dt = np.exp(rng.uniform(math.log(cfg.dt_min), math.log(cfg.dt_max), size=di))
        dt = np.maximum(dt, cfg.dt_init_floor)
        p.update({
            pre + "norm.weight": np.ones(cfg.d_model),
            pre + "mixer.in_proj.weight": uniform((2 * di, cfg.d_model), cfg.d_model ** -0.5),
            pre + "mixer.conv1d.weight": uniform((di, 1, k), k ** -0.5),
            pre + "mixer.conv1d.bias": uniform((di,), k ** -0.5),
            pre + "mixer.x_proj.weight": uniform((r + 2 * n, di), di ** -0.5),
            pre + "mixer.dt_proj.weight": uniform((di, r), r ** -0.5),
            pre + "mixer.dt_proj.bias": softplus_inverse(dt),
            pre + "mixer.A_log": np.log(np.tile(np.arange(1, n + 1, dtype=np.float64), (di, 1))),
            pre + "mixer.D": np.ones(di),
            pre + "mixer.out_proj.weight": uniform((cfg.d_model, di), di ** -0.5) / math.sqrt(cfg.n_layer),
        })
    p.update({"norm_f.weight": np.ones(cfg.d_model),
              "read_out.weight": uniform((cfg.d_out, cfg.d_model), cfg.d_model ** -0.5),
              "read_out.bias": np.zeros(cfg.d_out)})
    return {name: np.ascontiguousarray(a, dtype=dtype) for name, a in p.items()}


def layer_params(params, i):
    """The parameters of block i, without the ``layers.{i}.`` prefix."""
    pre = f"layers.{i}."
    return {k[len(pre):]: v for k, v in params.items() if k.startswith(pre)}


def check_params(params, cfg):
    """Raise ValueError unless ``params`` has exactly the keys and shapes of ``cfg``, one
    float dtype, and no NaN or Inf. One pass over the parameters; returns their dtype.

    Works for any config with ``param_shapes()`` (the linear-attention Transformer's too).
    """
    if not hasattr(cfg, "param_shapes"):
        raise ValueError(f"cfg must be a model config such as MambaConfig, got {type(cfg).__name__}")
    return check_array_dict("params", params, cfg.param_shapes())


def model_forward(params, cfg, x, backend="numba"):
    """Args:
        params: dict from :func:`init_params`.  cfg: MambaConfig.
        x: (b, l, d_in), same dtype as the parameters.
        backend: selective-scan backend ("numpy", "numba", "cuda", "auto").
    Returns:
        out: (b, l, d_out), cache for :func:`model_backward`.

    The parameters and x are checked here (keys, shapes, dtype, finite), so the layers
    below trust them: an activation that overflows gives a non-finite output (which a
    training loop reports as divergence), not an error about an internal tensor.
    """
    if not isinstance(cfg, MambaConfig):
        raise ValueError(f"cfg must be a MambaConfig, got {type(cfg).__name__}")
    dtype = check_params(params, cfg)
    check_float_array("x", x, ndim=3, dtype=dtype)
    if x.shape[2] != cfg.d_in or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"x must have shape (b >= 1, l >= 1, d_in={cfg.d_in}), got {x.shape}")
    resolve_backend(backend)
    h, read_in_cache = linear_forward(x, params["read_in.weight"], params["read_in.bias"])  # (b, l, d_model)
    block_caches = []
    for i in range(cfg.n_layer):
        h, c = block_forward(h, layer_params(params, i), backend, check=False)
        block_caches.append(c)
    hn, norm_cache = rmsnorm_forward(h, params["norm_f.weight"])
    out, read_out_cache = linear_forward(hn, params["read_out.weight"], params["read_out.bias"])  # (b, l, d_out)
    return out, (cfg, read_in_cache, block_caches, norm_cache, read_out_cache)


def model_backward(dout, cache):
    """The forward read in reverse.

    Args:
        dout: (b, l, d_out) gradient of the loss w.r.t. the output.
    Returns:
        grads: dict keyed like the parameters, dx: (b, l, d_in).
    """
    if not (isinstance(cache, tuple) and len(cache) == 5 and isinstance(cache[0], MambaConfig)):
        raise ValueError("cache must be the cache returned by model_forward")
    cfg, read_in_cache, block_caches, norm_cache, read_out_cache = cache
    _, x_shape, read_out_weight, _ = read_out_cache
    check_float_array("dout", dout, shape=(*x_shape[:-1], cfg.d_out), dtype=read_out_weight.dtype)
    grads = {}
    dhn, grads["read_out.weight"], grads["read_out.bias"] = linear_backward(dout, read_out_cache)
    dh, grads["norm_f.weight"] = rmsnorm_backward(dhn, norm_cache)
    for i in reversed(range(cfg.n_layer)):
        dh, g = block_backward(dh, block_caches[i])
        grads.update({f"layers.{i}.{k}": v for k, v in g.items()})
    dx, grads["read_in.weight"], grads["read_in.bias"] = linear_backward(dh, read_in_cache)
    return grads, dx


def init_state(cfg, b, dtype=np.float32):
    """The recurrent state for :func:`model_step`: per layer, the last k-1 conv inputs and h."""
    check_positive_int("b", b)
    dtype = check_float_dtype("dtype", dtype)
    return [{"conv": np.zeros((b, cfg.d_conv - 1, cfg.d_inner), dtype),
             "h": np.zeros((b, cfg.d_inner, cfg.d_state), dtype)} for _ in range(cfg.n_layer)]


def model_step(params, cfg, x_t, state):
    """One token of recurrent inference: O(1) work per token, same outputs as the full forward.

    Args:
        x_t: (b, d_in).  state: from :func:`init_state` or a previous step.
    Returns:
        out_t: (b, d_out), the new state (the old one is left unchanged).
    """
    if not isinstance(cfg, MambaConfig):
        raise ValueError(f"cfg must be a MambaConfig, got {type(cfg).__name__}")
    dtype = check_params(params, cfg)
    check_float_array("x_t", x_t, shape=(None, cfg.d_in), dtype=dtype)
    check_state(state, cfg, x_t.shape[0], dtype)
    h = x_t @ params["read_in.weight"].T + params["read_in.bias"]                       # (b, d_model)
    new_state = []
    for i in range(cfg.n_layer):
        h, s = block_step(h, layer_params(params, i), state[i])
        new_state.append(s)
    hn, _ = rmsnorm_forward(h, params["norm_f.weight"])
    return hn @ params["read_out.weight"].T + params["read_out.bias"], new_state


def check_state(state, cfg, b, dtype):
    """Raise ValueError unless ``state`` is a recurrent state for ``b`` sequences (init_state's
    layout: one {"conv": (b, k-1, d_inner), "h": (b, d_inner, n)} per layer), finite."""
    if not isinstance(state, (list, tuple)) or len(state) != cfg.n_layer:
        got = (f"a {type(state).__name__} of length {len(state)}" if isinstance(state, (list, tuple))
               else type(state).__name__)
        raise ValueError(f"state must be a list of {cfg.n_layer} per-layer dicts (from init_state), got {got}")
    shapes = {"conv": (b, cfg.d_conv - 1, cfg.d_inner), "h": (b, cfg.d_inner, cfg.d_state)}
    for i, s in enumerate(state):
        if not isinstance(s, dict) or set(s) != set(shapes):
            raise ValueError(f"state[{i}] must be a dict with keys 'conv' and 'h', got "
                             f"{sorted(s) if isinstance(s, dict) else type(s).__name__}")
        for key, shape in shapes.items():
            check_float_array(f"state[{i}][{key!r}]", s[key], shape=shape, dtype=dtype)
