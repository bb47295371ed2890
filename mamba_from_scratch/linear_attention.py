"""A linear-attention Transformer with hand-written backward: the baseline for the trained Mamba.

``read_in -> n_layer blocks -> norm_f -> read_out``, each block
    x = x + attn(rmsnorm(x))          causal linear attention, n_head heads
    x = x + mlp(rmsnorm(x))           fc1 -> SiLU -> fc2
so it has the Mamba's width (d_model), depth (n_layer), read-in/read-out and norms; the
MLP width ``d_mlp`` is chosen (:func:`matched_d_mlp`) so the parameter counts match.

Glossary:
    b: batch size      l: sequence length      d_model: residual width
    h = n_head         e = d_head = d_model / n_head        m = d_mlp
    q, k, v: queries, keys, values (b, l, h, e)
    phi(x) = elu(x) + 1: a positive feature map (Katharopoulos et al. 2020)

Causal linear attention, per head (Katharopoulos et al. 2020, eq. 6):
    S_t = sum_{s <= t} phi(k_s) v_s^T          (e, e)   a running sum of outer products
    z_t = sum_{s <= t} phi(k_s)                (e,)     the running sum of keys
    o_t = phi(q_t)^T S_t / (phi(q_t)^T z_t + eps)
Softmax attention would weight the values by exp(q.k); replacing it by phi(q).phi(k) lets
the sum over s be carried forward in time, so the cost is linear in l. The pair (S_t, z_t)
is a recurrent state updated with no decay and no gate: the selective scan with A = 0,
delta = 1, B_t = phi(k_t), C_t = phi(q_t) and u_t = (v_t, 1) computes exactly (S_t, z_t)
contracted with phi(q_t) (tests/test_linear_attention.py checks this against the package's
scan). :func:`causal_linear_attention_recurrent` is that loop over time. Training uses the
equivalent parallel form instead, a masked l x l matrix of weights (see
:func:`causal_linear_attention_forward` for why): at our prompt lengths it is a handful of
BLAS calls, while the scan would spend an exp per state element on a decay that is 1 here.

Parameters are a flat dict like the Mamba's (``layers.0.attn.q_proj.weight``, ...), with
``Linear.weight`` in the PyTorch layout ``(out, in)``.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from .checkpoint import register_config
from .layers import (linear_backward, linear_forward, rmsnorm_backward, rmsnorm_forward, silu_backward,
                     silu_forward)
from .model import check_params
from .validate import check_float_array, check_float_dtype, check_positive_int

EPS = 1e-6  # keeps the normaliser phi(q).z away from 0; phi > 0 so it is positive anyway


@register_config
@dataclass(kw_only=True)
class LinearTFConfig:
    d_model: int      # residual width, the same as the Mamba it is compared with
    n_layer: int      # number of blocks (attention + MLP each), the same as the Mamba's
    n_head: int = 4   # heads of size d_model / n_head; 4 heads of 16 at d_model = 64
    d_mlp: int        # MLP hidden width; matched_d_mlp() picks it to match a Mamba's size
    d_in: int         # features per input token
    d_out: int        # outputs per position

    def __post_init__(self):
        for name in ("d_model", "n_layer", "n_head", "d_mlp", "d_in", "d_out"):
            check_positive_int(name, getattr(self, name))
        if self.d_model % self.n_head:
            raise ValueError(f"n_head must divide d_model, got d_model={self.d_model}, n_head={self.n_head}")

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_head

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def param_shapes(self) -> dict:
        """Every parameter's name and shape (Linear weights are (out, in))."""
        dm, m = self.d_model, self.d_mlp
        shapes = {"read_in.weight": (dm, self.d_in), "read_in.bias": (dm,)}
        for i in range(self.n_layer):
            p = f"layers.{i}."
            shapes.update({
                p + "norm1.weight": (dm,),
                p + "attn.q_proj.weight": (dm, dm),
                p + "attn.k_proj.weight": (dm, dm),
                p + "attn.v_proj.weight": (dm, dm),
                p + "attn.out_proj.weight": (dm, dm),
                p + "norm2.weight": (dm,),
                p + "mlp.fc1.weight": (m, dm),
                p + "mlp.fc1.bias": (m,),
                p + "mlp.fc2.weight": (dm, m),
                p + "mlp.fc2.bias": (dm,),
            })
        shapes.update({"norm_f.weight": (dm,), "read_out.weight": (self.d_out, dm),
                       "read_out.bias": (self.d_out,)})
        return shapes


def count_params(cfg) -> int:
    """Number of scalar parameters of any config with ``param_shapes()``."""
    return sum(math.prod(s) for s in cfg.param_shapes().values())


def matched_d_mlp(mamba_cfg) -> int:
    """The MLP width that makes a LinearTFConfig of the Mamba's d_model, n_layer, d_in and
    d_out have (as nearly as an integer allows) the Mamba's parameter count.

    Per block the transformer has 4 d_model^2 (q, k, v, out) + 2 d_model (norms) + d_model
    (fc2 bias) + m (2 d_model + 1) (fc1, fc2, fc1 bias), so m is one division away.
    """
    dm = mamba_cfg.d_model
    outside = dm * (mamba_cfg.d_in + 1) + dm + mamba_cfg.d_out * (dm + 1)   # read_in, norm_f, read_out
    per_block = (count_params(mamba_cfg) - outside) / mamba_cfg.n_layer    # a Mamba block's count
    m = (per_block - 4 * dm * dm - 3 * dm) / (2 * dm + 1)
    return max(1, round(m))


def init_params(cfg: LinearTFConfig, rng: np.random.Generator, dtype=np.float32):
    """GPT-2 style initialization, with the Mamba's conventions where they overlap.

    - Linear weights: PyTorch's default U(+-1/sqrt(fan_in)); biases 0; norm weights 1.
    - attn.out_proj and mlp.fc2 (the two writes into the residual stream per block) are
      rescaled by 1/sqrt(2 n_layer), so the residual stream's variance does not grow with
      depth -- the same trick as the Mamba's out_proj (which has one write per block).
    """
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    dtype = check_float_dtype("dtype", dtype)

    def uniform(shape, fan_in):
        return rng.uniform(-fan_in ** -0.5, fan_in ** -0.5, size=shape)

    dm, m = cfg.d_model, cfg.d_mlp
    res_scale = 1.0 / math.sqrt(2 * cfg.n_layer)
    p = {"read_in.weight": uniform((dm, cfg.d_in), cfg.d_in), "read_in.bias": np.zeros(dm)}
    for i in range(cfg.n_layer):
        pre = f"layers.{i}."
        p.update({
            pre + "norm1.weight": np.ones(dm),
            pre + "attn.q_proj.weight": uniform((dm, dm), dm),
            pre + "attn.k_proj.weight": uniform((dm, dm), dm),
            pre + "attn.v_proj.weight": uniform((dm, dm), dm),
            pre + "attn.out_proj.weight": uniform((dm, dm), dm) * res_scale,
            pre + "norm2.weight": np.ones(dm),
            pre + "mlp.fc1.weight": uniform((m, dm), dm),
            pre + "mlp.fc1.bias": np.zeros(m),
            pre + "mlp.fc2.weight": uniform((dm, m), m) * res_scale,
            pre + "mlp.fc2.bias": np.zeros(dm),
        })
    p.update({"norm_f.weight": np.ones(dm), "read_out.weight": uniform((cfg.d_out, dm), dm),
              "read_out.bias": np.zeros(cfg.d_out)})
    return {name: np.ascontiguousarray(a, dtype=dtype) for name, a in p.items()}


def elu1_forward(x):
    """phi(x) = elu(x) + 1 = x + 1 for x > 0, e^x for x <= 0: positive and smooth enough.

    x: any shape -> out: same shape, > 0.
    """
    out = np.where(x > 0, x + 1.0, np.exp(np.minimum(x, 0.0)))
    return out, (x, out)


def elu1_backward(dout, cache):
    """phi'(x) = 1 for x > 0, e^x = phi(x) for x <= 0."""
    x, out = cache
    return dout * np.where(x > 0, 1.0, out)


def causal_linear_attention_recurrent(fq, fk, v, eps=EPS):
    """The recurrent form, a loop over time carrying the state (S_t, z_t): the readable
    specification (and the form for generating one token at a time). Forward only; the
    training path uses the parallel form below, checked against this one in the tests.

    Args:
        fq, fk: (b, l, h, e) phi(q), phi(k).  v: (b, l, h, e).
    Returns:
        o: (b, l, h, e).
    """
    b, l, h, e = v.shape
    S = np.zeros((b, h, e, e), v.dtype)                              # sum phi(k_s) v_s^T so far
    z = np.zeros((b, h, e), v.dtype)                                 # sum phi(k_s) so far
    o = np.empty_like(v)
    for t in range(l):
        S += fk[:, t, :, :, None] * v[:, t, :, None, :]              # no decay, no gate: a running sum
        z += fk[:, t]
        num = np.einsum("bhi,bhij->bhj", fq[:, t], S)                # (b, h, e)
        o[:, t] = num / (np.sum(fq[:, t] * z, axis=-1, keepdims=True) + eps)
    return o


def causal_linear_attention_forward(fq, fk, v, eps=EPS):
    """The parallel form: an l x l matrix of weights phi(q_t).phi(k_s), masked to s <= t.

        W = tril(phi(Q) phi(K)^T)     (b, h, l, l)
        o = (W V) / (W 1 + eps)
    Summing row t of W V over s <= t is the running sum S_t contracted with phi(q_t), so
    this equals the recurrent form. It costs O(l^2 e) per head instead of O(l e^2), but as
    a few batched matrix products it is faster in NumPy at our lengths (l <= 129, e = 16)
    than a loop over time, and np.cumsum along time is slower still (a strided sum).

    Args:
        fq, fk: (b, l, h, e) phi(q), phi(k), positive.  v: (b, l, h, e) values.
    Returns:
        o: (b, l, h, e), cache.
    """
    l = v.shape[1]
    Q, K, V = (a.transpose(0, 2, 1, 3) for a in (fq, fk, v))        # (b, h, l, e) each
    mask = np.tril(np.ones((l, l), v.dtype))                         # (l, l) s <= t
    W = np.matmul(Q, K.transpose(0, 1, 3, 2)) * mask                 # (b, h, l, l)
    num = np.matmul(W, V)                                            # (b, h, l, e)
    den = W.sum(-1, keepdims=True) + eps                             # (b, h, l, 1)
    o = num / den                                                    # (b, h, l, e)
    return o.transpose(0, 2, 1, 3), (Q, K, V, W, num, den, mask)


def causal_linear_attention_backward(do, cache):
    """With o = num / den, num = W V, den = W 1 + eps, W = tril(Q K^T):
        dnum = do / den,   dden = -sum(do * num, over e) / den^2
        dW   = (dnum V^T + dden 1^T) masked to s <= t
        dV   = W^T dnum,   dQ = dW K,   dK = dW^T Q

    Args:
        do: (b, l, h, e).
    Returns:
        dfq, dfk, dv: (b, l, h, e).
    """
    Q, K, V, W, num, den, mask = cache
    dO = do.transpose(0, 2, 1, 3)                                    # (b, h, l, e)
    dnum = dO / den                                                  # (b, h, l, e)
    dden = -np.sum(dO * num, axis=-1, keepdims=True) / den ** 2      # (b, h, l, 1)
    dW = (np.matmul(dnum, V.transpose(0, 1, 3, 2)) + dden) * mask    # (b, h, l, l)
    dV = np.matmul(W.transpose(0, 1, 3, 2), dnum)                    # (b, h, l, e)
    dQ = np.matmul(dW, K)                                            # (b, h, l, e)
    dK = np.matmul(dW.transpose(0, 1, 3, 2), Q)                      # (b, h, l, e)
    return tuple(a.transpose(0, 2, 1, 3) for a in (dQ, dK, dV))


def attention_forward(x, p, n_head):
    """Multi-head causal linear attention with q, k, v and output projections (no biases).

    Args:
        x: (b, l, d_model).  p: dict with q_proj/k_proj/v_proj/out_proj ``.weight``.
    Returns:
        out: (b, l, d_model), cache.
    """
    b, l, dm = x.shape
    e = dm // n_head
    c = {}
    q, c["q"] = linear_forward(x, p["q_proj.weight"])                    # (b, l, d_model)
    k, c["k"] = linear_forward(x, p["k_proj.weight"])
    v, c["v"] = linear_forward(x, p["v_proj.weight"])
    fq, c["phi_q"] = elu1_forward(q.reshape(b, l, n_head, e))           # (b, l, h, e)
    fk, c["phi_k"] = elu1_forward(k.reshape(b, l, n_head, e))
    o, c["attn"] = causal_linear_attention_forward(fq, fk, v.reshape(b, l, n_head, e))
    out, c["out"] = linear_forward(o.reshape(b, l, dm), p["out_proj.weight"])   # (b, l, d_model)
    return out, c


def attention_backward(dout, c):
    """Returns dx: (b, l, d_model), grads keyed like the attention's parameters."""
    g = {}
    do, g["out_proj.weight"], _ = linear_backward(dout, c["out"])        # (b, l, d_model)
    b, l, dm = do.shape
    h = c["attn"][0].shape[1]
    dfq, dfk, dv = causal_linear_attention_backward(do.reshape(b, l, h, dm // h), c["attn"])
    dq = elu1_backward(dfq, c["phi_q"]).reshape(b, l, dm)
    dk = elu1_backward(dfk, c["phi_k"]).reshape(b, l, dm)
    dxq, g["q_proj.weight"], _ = linear_backward(dq, c["q"])
    dxk, g["k_proj.weight"], _ = linear_backward(dk, c["k"])
    dxv, g["v_proj.weight"], _ = linear_backward(dv.reshape(b, l, dm), c["v"])
    return dxq + dxk + dxv, g


def mlp_forward(x, p):
    """fc2(silu(fc1(x))).  x: (b, l, d_model) -> out: (b, l, d_model)."""
    a, c1 = linear_forward(x, p["fc1.weight"], p["fc1.bias"])          # (b, l, m)
    s, cs = silu_forward(a)
    out, c2 = linear_forward(s, p["fc2.weight"], p["fc2.bias"])        # (b, l, d_model)
    return out, (c1, cs, c2)


def mlp_backward(dout, cache):
    """Returns dx: (b, l, d_model), grads keyed like the MLP's parameters."""
    c1, cs, c2 = cache
    g = {}
    ds, g["fc2.weight"], g["fc2.bias"] = linear_backward(dout, c2)
    dx, g["fc1.weight"], g["fc1.bias"] = linear_backward(silu_backward(ds, cs), c1)
    return dx, g


def _sub(p, prefix):
    return {k[len(prefix):]: v for k, v in p.items() if k.startswith(prefix)}


def block_forward(x, p, n_head):
    """Pre-norm block: x + attn(norm1(x)), then + mlp(norm2(.)).

    Args:
        x: (b, l, d_model).  p: the block's parameters without the ``layers.{i}.`` prefix.
    Returns:
        out: (b, l, d_model), cache.
    """
    xn, n1 = rmsnorm_forward(x, p["norm1.weight"])
    a, ca = attention_forward(xn, _sub(p, "attn."), n_head)
    x = x + a
    xn2, n2 = rmsnorm_forward(x, p["norm2.weight"])
    m, cm = mlp_forward(xn2, _sub(p, "mlp."))
    return x + m, (n1, ca, n2, cm)


def block_backward(dout, cache):
    """Each residual passes the gradient straight through and its branch adds its own.

    Returns:
        dx: (b, l, d_model), grads keyed like the block's parameters.
    """
    n1, ca, n2, cm = cache
    dxn2, gm = mlp_backward(dout, cm)
    dx_mlp, dnorm2 = rmsnorm_backward(dxn2, n2)
    dmid = dout + dx_mlp
    dxn, ga = attention_backward(dmid, ca)
    dx_attn, dnorm1 = rmsnorm_backward(dxn, n1)
    grads = {"norm1.weight": dnorm1, "norm2.weight": dnorm2,
             **{f"attn.{k}": v for k, v in ga.items()}, **{f"mlp.{k}": v for k, v in gm.items()}}
    return dmid + dx_attn, grads


def model_forward(params, cfg, x):
    """Args:
        params: dict from :func:`init_params`.  cfg: LinearTFConfig.
        x: (b, l, d_in), same dtype as the parameters.
    Returns:
        out: (b, l, d_out), cache for :func:`model_backward`.
    """
    if not isinstance(cfg, LinearTFConfig):
        raise ValueError(f"cfg must be a LinearTFConfig, got {type(cfg).__name__}")
    dtype = check_params(params, cfg)              # keys, shapes, one float dtype, finite
    check_float_array("x", x, ndim=3, dtype=dtype)
    if x.shape[2] != cfg.d_in or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"x must have shape (b >= 1, l >= 1, d_in={cfg.d_in}), got {x.shape}")
    h, read_in_cache = linear_forward(x, params["read_in.weight"], params["read_in.bias"])  # (b, l, d_model)
    block_caches = []
    for i in range(cfg.n_layer):
        h, c = block_forward(h, _sub(params, f"layers.{i}."), cfg.n_head)
        block_caches.append(c)
    hn, norm_cache = rmsnorm_forward(h, params["norm_f.weight"])
    out, read_out_cache = linear_forward(hn, params["read_out.weight"], params["read_out.bias"])  # (b, l, d_out)
    return out, (cfg, read_in_cache, block_caches, norm_cache, read_out_cache)


def model_backward(dout, cache):
    """The forward read in reverse.

    Args:
        dout: (b, l, d_out).
    Returns:
        grads: dict keyed like the parameters, dx: (b, l, d_in).
    """
    if not (isinstance(cache, tuple) and len(cache) == 5 and isinstance(cache[0], LinearTFConfig)):
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
