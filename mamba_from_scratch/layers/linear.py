"""Linear layer: ``out = x @ weight.T + bias`` with PyTorch's ``(out, in)`` weight layout.

Inputs may have any leading shape ``(..., in)``; they are flattened to one matrix so that
each product is a single BLAS call.
"""
from __future__ import annotations

from ..validate import check_float_array


def linear_forward(x, weight, bias=None):
    """Args:
        x: (..., in).  weight: (out, in).  bias: (out,) or None.
    Returns:
        out: (..., out), cache.
    """
    # Shapes and dtypes only (no pass over x): this runs on every activation of a step.
    check_float_array("x", x, finite=False)
    check_float_array("weight", weight, ndim=2, dtype=x.dtype, finite=False)
    if x.ndim == 0 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"x must have shape (..., in={weight.shape[1]}) to match weight {weight.shape}, "
                         f"got {x.shape}")
    if bias is not None:
        check_float_array("bias", bias, shape=(weight.shape[0],), dtype=x.dtype, finite=False)
    x2 = x.reshape(-1, x.shape[-1])                   # (m, in)
    out = x2 @ weight.T                               # (m, out)
    if bias is not None:
        out += bias
    return out.reshape(*x.shape[:-1], weight.shape[0]), (x2, x.shape, weight, bias is not None)


def linear_backward(dout, cache):
    """dx = dout W,  dW = dout^T x,  db = sum(dout).

    Returns:
        dx: (..., in), dweight: (out, in), dbias: (out,) or None.
    """
    x2, x_shape, weight, has_bias = cache
    check_float_array("dout", dout, shape=(*x_shape[:-1], weight.shape[0]), dtype=weight.dtype, finite=False)
    dout2 = dout.reshape(-1, weight.shape[0])         # (m, out)
    dx = (dout2 @ weight).reshape(x_shape)            # (..., in)
    dweight = dout2.T @ x2                            # (out, in)
    dbias = dout2.sum(0) if has_bias else None        # (out,)
    return dx, dweight, dbias
