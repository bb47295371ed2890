"""Causal depthwise 1-D convolution, Mamba's short local mixing before the scan.

Each channel c has its own kernel of width k = d_conv. Causal: output t sees inputs
t-k+1..t only, so the sequence is left-padded with k-1 values -- zeros at the start of a
sequence, or the previous k-1 inputs (the "conv state") when continuing one in step mode.

    out[b, t, c] = bias[c] + sum_j weight[c, 0, j] * xpad[b, t + j, c],
    xpad = concat(conv_state or zeros (k-1 steps), x) along time.

Same result as PyTorch's ``Conv1d(groups=d, padding=k-1)(x)[..., :l]``, the official layout.
"""
from __future__ import annotations

import numpy as np

from ..validate import check_float_array


def conv1d_forward(x, weight, bias, conv_state=None):
    """Args:
        x: (b, l, d).  weight: (d, 1, k).  bias: (d,).
        conv_state: (b, k-1, d) the inputs just before x, or None for zeros.
    Returns:
        out: (b, l, d), cache. ``cache[0]`` ends with the k-1 inputs to carry on with.
    """
    check_float_array("x", x, ndim=3, finite=False)
    b, l, d = x.shape
    check_float_array("weight", weight, ndim=3, dtype=x.dtype, finite=False)
    k = weight.shape[-1]
    if weight.shape[:2] != (d, 1) or k == 0:
        raise ValueError(f"weight must have shape (d={d}, 1, k>=1), got {weight.shape}")
    check_float_array("bias", bias, shape=(d,), dtype=x.dtype, finite=False)
    if conv_state is not None:
        check_float_array("conv_state", conv_state, shape=(b, k - 1, d), dtype=x.dtype, finite=False)
    if conv_state is None:
        conv_state = np.zeros((b, k - 1, d), x.dtype)
    xpad = np.concatenate([conv_state, x], axis=1)    # (b, l + k - 1, d)
    w = weight[:, 0, :]                               # (d, k)
    out = np.empty_like(x)
    out[...] = bias
    for j in range(k):                                # k is 4: a loop over taps, not over time
        out += w[:, j] * xpad[:, j:j + l]
    return out, (xpad, w)


def conv1d_backward(dout, cache):
    """Each tap j is a shifted elementwise product, so its gradients are too:
        dxpad[:, t + j] += weight[:, j] * dout[:, t],   dweight[:, j] = sum_{b,t} dout * xpad[:, t + j]

    Returns:
        dx: (b, l, d), dweight: (d, 1, k), dbias: (d,), dconv_state: (b, k-1, d).
    """
    xpad, w = cache
    d, k = w.shape
    b, l = xpad.shape[0], xpad.shape[1] - (k - 1)
    check_float_array("dout", dout, shape=(b, l, d), dtype=xpad.dtype, finite=False)
    dxpad = np.zeros_like(xpad)                                          # (b, l + k - 1, d)
    dweight = np.empty((d, 1, k), dout.dtype)
    dout2 = dout.reshape(-1, d)
    for j in range(k):
        dxpad[:, j:j + l] += w[:, j] * dout
        dweight[:, 0, j] = np.einsum("md,md->d", dout2, xpad[:, j:j + l].reshape(-1, d))
    dbias = dout2.sum(0)
    return dxpad[:, k - 1:], dweight, dbias, dxpad[:, :k - 1]
