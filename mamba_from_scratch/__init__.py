"""mamba_from_scratch: a hand-built Mamba in NumPy + Numba, and the in-context learning it teaches."""
from .scan import selective_scan_backward, selective_scan_forward

__version__ = "0.1.0"
__all__ = ["selective_scan_forward", "selective_scan_backward", "__version__"]
