"""The layer library: pure ``*_forward(...) -> (out, cache)`` / ``*_backward(dout, cache)`` pairs."""
from .activations import sigmoid, silu_backward, silu_forward, softplus_backward, softplus_forward, softplus_inverse
from .conv1d import conv1d_backward, conv1d_forward
from .linear import linear_backward, linear_forward
from .rmsnorm import rmsnorm_backward, rmsnorm_forward

__all__ = ["sigmoid", "silu_forward", "silu_backward", "softplus_forward", "softplus_backward", "softplus_inverse",
           "conv1d_forward", "conv1d_backward", "linear_forward", "linear_backward",
           "rmsnorm_forward", "rmsnorm_backward"]
