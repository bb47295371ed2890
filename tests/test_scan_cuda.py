"""The "cuda" scan backend against the NumPy reference.

Without a GPU the kernels run in Numba's CUDA simulator (Python threads, one per CUDA
thread), so sizes are tiny. The simulator must be switched on before numba.cuda is first
imported, so it runs in a subprocess (``NUMBA_ENABLE_CUDASIM=1``) and the rest of the test
session keeps the real Numba. Tests marked ``gpu`` run the same comparison, and bigger
ones, on a real GPU when there is one.
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mamba_from_scratch.gradcheck import rel_error
from mamba_from_scratch.scan import gpu_available, selective_scan_backward, selective_scan_forward

TESTS_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS_DIR))
from test_scan import GRAD_NAMES, TOL, make_inputs  # noqa: E402

# (b, l, d_inner, n, with_D, with_h0, with_dh_last), run with CHUNK = 4 and MAX_TPB = 32.
SIM_CASES = [
    (2, 5, 3, 4, True, True, True),      # tiny, l not a multiple of the chunk
    (2, 9, 40, 4, True, True, True),     # two blocks of 32 channels, the second partly idle
    (1, 1, 3, 1, False, False, False),   # l = 1, n = 1, no optional inputs
    (2, 8, 5, 4, False, True, False),    # l a multiple of the chunk
]


def check_against_reference(dtype_name, cases, chunk=None, max_tpb=None, seed=0, zero_delta=False):
    """Compare cuda with numpy on each case; raise AssertionError on a mismatch.

    Runs in whatever mode numba.cuda is in (simulator or real GPU). ``zero_delta`` sets about
    a third of the steps to delta = 0 (a valid step: deltaA = 1, deltaB_u = 0).
    """
    from mamba_from_scratch.scan import gpu
    if chunk is not None:
        gpu.CHUNK = chunk
    if max_tpb is not None:
        gpu.MAX_TPB = max_tpb
    dtype = np.dtype(dtype_name).type
    rng = np.random.default_rng(seed)
    for b, l, d_inner, n, with_D, with_h0, with_dh_last in cases:
        inputs = make_inputs(rng, b, l, d_inner, n, dtype, with_D, with_h0)
        if zero_delta:
            delta = inputs[1]
            inputs = (inputs[0], np.where(rng.random(delta.shape) < 0.35, 0, delta).astype(dtype), *inputs[2:])
        dy = rng.standard_normal((b, l, d_inner)).astype(dtype)
        dh_last = rng.standard_normal((b, d_inner, n)).astype(dtype) if with_dh_last else None
        results = []
        for backend in ("numpy", "cuda"):
            y, h_last, cache = selective_scan_forward(*inputs, backend=backend)
            results.append((y, h_last, selective_scan_backward(dy, cache, dh_last)))
        (y_ref, h_ref, g_ref), (y, h, g) = results
        tol = TOL[dtype]
        label = f"{dtype_name} b={b} l={l} d={d_inner} n={n}"
        assert y.dtype == dtype and rel_error(y, y_ref) < tol, f"{label} y"
        assert rel_error(h, h_ref) < tol, f"{label} h_last"
        for name, a, r in zip(GRAD_NAMES, g, g_ref):
            if r is None:
                assert a is None, f"{label} {name} should be None"
                continue
            assert a.dtype == dtype and a.shape == r.shape, f"{label} {name}"
            assert rel_error(a, r) < tol, f"{label} {name}: {rel_error(a, r):.2e}"
        print(f"ok {label}")


def run_in_simulator(code):
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    prelude = f"import sys; sys.path.insert(0, {str(TESTS_DIR)!r}); from test_scan_cuda import *\n"
    return subprocess.run([sys.executable, "-c", prelude + code], env=env, capture_output=True,
                          text=True, timeout=900)


@pytest.mark.parametrize("dtype_name", ["float64", "float32"])
def test_cuda_backend_in_simulator(dtype_name):
    result = run_in_simulator(
        "from mamba_from_scratch.scan import gpu_available\n"
        "assert not gpu_available()  # the simulator must not count as a GPU for 'auto'\n"
        f"check_against_reference({dtype_name!r}, SIM_CASES, chunk=4, max_tpb=32)\n")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("ok ") == len(SIM_CASES)


def test_cuda_backend_accepts_delta_zero_in_simulator():
    """delta = 0 steps in the CUDA kernels: same outputs and gradients as the reference."""
    result = run_in_simulator(
        "check_against_reference('float64', SIM_CASES[:2], chunk=4, max_tpb=32, seed=5, zero_delta=True)\n"
        "check_against_reference('float32', SIM_CASES[:1], chunk=4, max_tpb=32, seed=6, zero_delta=True)\n")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("ok ") == 3


def test_cuda_module_is_not_imported_by_cpu_backends():
    code = ("import sys, numpy as np\n"
            "from mamba_from_scratch.scan import selective_scan_forward\n"
            "x = np.ones((1, 3, 2)); A = -np.ones((2, 4)); B = np.ones((1, 3, 4))\n"
            "selective_scan_forward(x, x, A, B, B, backend='numba')\n"
            "assert 'numba.cuda' not in sys.modules and 'mamba_from_scratch.scan.gpu' not in sys.modules\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr


def test_block_size_fits_shared_memory():
    """Pure launch arithmetic (no kernel runs): powers of 2, capped by the shared memory."""
    from mamba_from_scratch.scan import gpu
    assert gpu.threads_per_block(3) == 32
    assert gpu.threads_per_block(100) == 128
    assert gpu.threads_per_block(5000) == gpu.MAX_TPB
    for n, itemsize in ((16, 4), (16, 8), (64, 4), (64, 8)):
        tpb = gpu.threads_per_block(5000, n, itemsize)
        assert tpb >= 32 and tpb & (tpb - 1) == 0
        assert gpu.shared_bytes(n, itemsize, tpb, gpu.CHUNK) <= gpu.SHARED_BYTES
    with pytest.raises(ValueError, match="A must have n"):
        gpu.threads_per_block(64, n=1000, itemsize=8)


def _compile_ptx_or_skip(kernel, signature):
    from numba import cuda
    try:
        return cuda.compile_ptx(kernel.py_func, signature, device=False, cc=(8, 0))[0]
    except Exception as err:  # no NVVM/NVRTC libraries: nothing to compile with
        if "nvvm" in str(err).lower() or "nvrtc" in str(err).lower() or "libcuda" in str(err).lower():
            pytest.skip(f"no CUDA compiler libraries: {str(err).splitlines()[0][:120]}")
        raise


@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
def test_kernels_compile_to_ptx(dtype_name):
    """Real CUDA lowering, without a GPU: catches what the simulator accepts but nvcc would not
    (e.g. a shared-array shape that is an expression rather than a constant). Needs NVVM and
    NVRTC, e.g. ``pip install nvidia-cuda-nvcc-cu12 nvidia-cuda-nvrtc-cu12`` with
    CUDA_HOME=<site-packages>/nvidia/cuda_nvcc; skipped without them."""
    import numba

    from mamba_from_scratch.scan import gpu
    real, f64 = getattr(numba, dtype_name), numba.float64
    a1, a2, a3, a4 = real[::1], real[:, ::1], real[:, :, ::1], real[:, :, :, ::1]
    for n, tpb in ((1, 32), (16, 128)):
        fwd, bwd, sum_blocks = gpu.kernels(n, dtype_name, tpb, gpu.CHUNK)
        ptx = _compile_ptx_or_skip(fwd, (a3, a3, a2, a3, a3, a1, a3, a3, a3, a4))
        assert ".entry" in ptx
        ptx = _compile_ptx_or_skip(bwd, (a3, a3, a3, a2, a3, a3, a1, a4, a3, a3, a3, a2,
                                         f64[:, :, ::1], f64[:, ::1], a3))
        assert ".shared" in ptx and "bar.sync" in ptx      # staged B/C and the block reduction
        assert "atom." not in ptx                            # no atomics anywhere
        assert ".entry" in _compile_ptx_or_skip(sum_blocks, (a2, a1))


needs_gpu = pytest.mark.skipif(not gpu_available(), reason="no CUDA GPU")


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype_name", ["float64", "float32"])
def test_cuda_backend_on_gpu(dtype_name):
    cases = SIM_CASES + [(3, 300, 200, 16, True, True, True), (2, 1000, 300, 16, False, False, True)]
    check_against_reference(dtype_name, cases, seed=1)


@pytest.mark.gpu
@needs_gpu
def test_cuda_matches_numba_at_a_model_size():
    rng = np.random.default_rng(2)
    inputs = make_inputs(rng, 4, 512, 256, 16, np.float32)
    dy = rng.standard_normal((4, 512, 256)).astype(np.float32)
    out = {}
    for backend in ("numba", "cuda"):
        y, h_last, cache = selective_scan_forward(*inputs, backend=backend)
        out[backend] = (y, h_last, *selective_scan_backward(dy, cache))
    for name, a, r in zip(("y", "h_last") + GRAD_NAMES, out["cuda"], out["numba"]):
        assert rel_error(a, r) < 1e-4, name
