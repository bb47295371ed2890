"""Frozen reference data for lesson 06 (run from the repository root: python lessons/_data/make_06.py).

Writes lessons/_data/06_conv.npz for exercise 06.5 (the convolution in step mode), computed with
the package's ``layers.conv1d_forward`` (float64) on a sequence that continues a carried state:

- ``a_x`` (2, 9, 6) the tokens, ``a_w`` (6, 1, 4) the depthwise weights, ``a_b`` (6,) the bias,
  ``a_state`` (2, 3, 6) the k - 1 inputs before the first token, ``a_out`` (2, 9, 6) the outputs
  of the full causal convolution started from that state, ``a_last`` (2, 3, 6) the state after
  the last token;
- ``b_*`` the same with (b, l, d, k) = (1, 5, 3, 2).

Fixed sizes, independent of the lesson's FAST switch; they must match the check cells of lesson 06.
"""
from pathlib import Path

import numpy as np

from mamba_from_scratch.layers import conv1d_forward

OUT = Path(__file__).resolve().parent / "06_conv.npz"


def problem(rng, b, l, d, k):
    """A causal depthwise conv continued from a random state: inputs and the package's outputs."""
    x = rng.standard_normal((b, l, d))
    w = rng.standard_normal((d, 1, k))
    bias = rng.standard_normal(d)
    state = rng.standard_normal((b, k - 1, d))
    out, cache = conv1d_forward(x, w, bias, conv_state=state)
    xpad = cache[0]                                                     # (b, k - 1 + l, d)
    return dict(x=x, w=w, b=bias, state=state, out=out, last=xpad[:, xpad.shape[1] - (k - 1):].copy())


def main():
    rng = np.random.default_rng(606)
    arrays = {}
    for prefix, size in [("a", (2, 9, 6, 4)), ("b", (1, 5, 3, 2))]:
        arrays.update({f"{prefix}_{key}": v for key, v in problem(rng, *size).items()})
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
