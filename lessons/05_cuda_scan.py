# %% [markdown]
# # 05 · The scan on a GPU with `numba.cuda`
#
# **Goal.** Write the selective scan as CUDA kernels in Python: threads, blocks, the grid,
# shared memory and coalesced loads. First the simple layout (one thread per channel, the
# package's), then the layout of the official kernel: the threads of a block split *time*
# into chunks and combine the chunks with a block-wide scan in shared memory (lesson 04's
# operator). Run them in Numba's CUDA *simulator* when there is no GPU, for real when there
# is one, and check them against frozen reference states.
#
# **Prerequisites.** Lesson 03 (one independent recurrence per `(batch, channel)`; `prange`)
# and lesson 04 (the operator `∘` and the Hillis–Steele scan).
#
# **Run time.** About 20 seconds in the simulator (measured 21 s at load average 4 on 2 cores;
# about 3 s of compute with `LESSONS_FAST=1`). The
# simulator runs every GPU thread as a Python thread: it checks correctness, not speed, so
# the sizes here are tiny unless a real GPU is present.
#
# **Exercises.** 05.1 the launch configuration; 05.2 a first kernel (softplus) and its
# launch; 05.3 a chunked scan kernel with a block-wide scan in shared memory. In the
# simulator the check of 05.3 watches the kernel run: which thread reads and writes which
# element of global memory, and which shared arrays the block allocates.
#
# **You will use** `selective_scan_forward`/`selective_scan_backward` with `backend="cuda"`
# and the package's launch configuration `mamba_from_scratch.scan.gpu.threads_per_block`,
# outside the graded checks, to compare with.

# %% tags=["parameters"]
import os

FAST = os.environ.get("LESSONS_FAST", "0") == "1"  # CI sets LESSONS_FAST=1 to shrink every size
SEED = 0
# A real GPU needs the NVIDIA driver; without one we must switch the simulator on *before*
# numba.cuda is first imported (it reads the variable once, at import).
REAL_GPU = os.path.exists("/dev/nvidiactl") or os.path.exists("/dev/nvidia0")
if not REAL_GPU:
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
SIM_SIZES = dict(b=1, l=6, d=4, n=3) if FAST else dict(b=2, l=12, d=40, n=4)   # tiny: the simulator is slow
GPU_SIZES = dict(b=8, l=2048, d=1536, n=16)                                   # timed only on a real GPU

# %%
import math
import time

import matplotlib.pyplot as plt
import numpy as np
from numba import cuda, float64

from mamba_from_scratch.scan import selective_scan_backward, selective_scan_forward
from mamba_from_scratch.scan.gpu import threads_per_block

rng = np.random.default_rng(SEED)
_passed = {}                     # exercise id -> True once its check passed (read by the fallbacks)
REF = np.load("_data/05_scan.npz")   # frozen states of the package's scan (lessons/_data/make_05.py)
SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
plt.rcParams.update({"figure.dpi": 80, "axes.grid": True, "grid.alpha": 0.3})
print("real GPU:", REAL_GPU, "| simulator:", SIMULATOR)

# %% [markdown]
# ## 1. The idea in words
#
# A GPU runs many thousands of threads at once. They come in **blocks** (up to 1024 threads
# that run on one streaming multiprocessor, SM, can share a small on-chip **shared memory**
# and synchronise), and the blocks form a **grid**. Threads of a block execute in groups of
# 32 (a **warp**) in lock-step, and a warp's loads are fastest when its 32 threads read 32
# *consecutive* addresses (**coalesced** access).
#
# How many threads does it take to fill a GPU? An H100 (SXM) has 132 SMs with up to 2048
# resident threads each: about **270 000** threads in flight, and it needs many of them to
# hide the latency of global memory. The simple layout for the scan is the one of the CPU:
# one thread per `(batch, channel)` pair, looping over time with its `n`-dimensional state in
# registers. A Mamba-130M layer at batch 8 has `8 × 1536 = 12 288` such pairs: under 5 % of
# what an H100 keeps resident. That is why the official kernel does more than this: each
# block takes one `(batch, channel)` pair and its threads **split time** into chunks, scanned
# in parallel and joined by a block-wide scan with lesson 04's operator (section 5 builds
# it). The package's `"cuda"` backend keeps the simple layout, which is easier to read.
#
# | CUDA name | Numba | meaning |
# |---|---|---|
# | `threadIdx.x` | `cuda.threadIdx.x` | thread index within its block |
# | `blockIdx.x, .y` | `cuda.blockIdx.x, .y` | block index within the grid |
# | `blockDim.x` | `cuda.blockDim.x` | threads per block (`tpb`) |
# | `__shared__` | `cuda.shared.array(shape, dtype)` | per-block on-chip memory (see below) |
# | `__syncthreads()` | `cuda.syncthreads()` | wait until every thread of the block is here |
# | launch | `kernel[grid, tpb](args)` | run `grid` blocks of `tpb` threads |
#
# Shared memory versus global memory, in round numbers for recent NVIDIA GPUs: a load from
# shared memory takes about 20–30 cycles, one from global memory (off-chip DRAM) about
# 400–800; shared memory's bandwidth is about an order of magnitude higher. The L1 and L2
# caches blur the difference for data that is reused, so the gain of staging data in shared
# memory by hand is real but smaller than these ratios, and it is largest for data that many
# threads of a block read (like `B_t, C_t` below) or that threads pass to each other (like
# the chunk totals of section 5).
#
# ## 2. Which thread does what
#
# The package's layout: a block holds `tpb` consecutive channels of one batch element; the
# grid is `(ceil(d_inner / tpb), b)`. Thread `threadIdx.x` of block `(blockIdx.x, blockIdx.y)`
# owns channel `blockIdx.x · tpb + threadIdx.x` of batch element `blockIdx.y`; threads past
# the last channel do nothing.
#
# ### Exercise 05.1: the launch configuration
# Write `launch_config(b, d_inner, tpb)` returning `(grid, owner)`: `grid = (blocks_x, b)` and
# `owner`, an integer array of shape `(b, d_inner, 3)` with `(blockIdx.x, blockIdx.y,
# threadIdx.x)` of the thread that owns each pair.

# %% tags=["solution"]
def launch_config(b, d_inner, tpb):
    """Grid and thread ownership of the one-thread-per-(batch, channel) layout.

    Args:
        b: batch size.  d_inner: channels.  tpb: threads per block.
    Returns:
        grid: (blocks_x, b), a tuple of ints.
        owner: (b, d_inner, 3) int array of (blockIdx.x, blockIdx.y, threadIdx.x) per pair.
    """
    ### BEGIN SOLUTION
    grid = (math.ceil(d_inner / tpb), b)
    owner = np.empty((b, d_inner, 3), dtype=int)
    channel = np.arange(d_inner)
    owner[:, :, 0] = channel // tpb             # blockIdx.x
    owner[:, :, 1] = np.arange(b)[:, None]      # blockIdx.y
    owner[:, :, 2] = channel % tpb              # threadIdx.x
    return grid, owner
    ### END SOLUTION

# %% tags=["check", "points=1", "mutants=transpose"]
# Only the transpose mutant applies: the outputs are integers (scaling or zeroing floats
# leaves them unchanged).
_passed["05.1"] = False


def check_launch(b, d, tpb):
    """The grid, and an owner array that maps every pair to its own thread, in the layout."""
    grid_, owner_ = launch_config(b, d, tpb)
    owner_ = np.asarray(owner_)
    assert tuple(grid_) == (math.ceil(d / tpb), b), f"b = {b}, d = {d}, tpb = {tpb}: grid {grid_}"
    assert owner_.shape == (b, d, 3), f"owner must have shape {(b, d, 3)}, got {owner_.shape}"
    assert len({tuple(o) for o in owner_.reshape(-1, 3)}) == b * d, "every pair needs its own thread"
    bx, by, tx = owner_[..., 0], owner_[..., 1], owner_[..., 2]
    assert np.all(bx * tpb + tx == np.arange(d)), "channel = blockIdx.x * tpb + threadIdx.x"
    assert np.all(by == np.arange(b)[:, None]), "blockIdx.y is the batch element"
    assert tx.min() >= 0 and tx.max() < tpb, "threadIdx.x is in 0..tpb-1"


check_launch(3, 100, 32)
### BEGIN HIDDEN TESTS
check_launch(2, 64, 64)
check_launch(1, 5, 128)
check_launch(4, 257, 128)
### END HIDDEN TESTS
_passed["05.1"] = True
print("exercise 05.1 passed")

# %% tags=["fallback"]
if not _passed["05.1"]:
    def launch_config(b, d_inner, tpb):
        """Stand-in for exercise 05.1: the grid only (the ownership array is not used below)."""
        return (math.ceil(d_inner / tpb), b), None
    print("exercise 05.1 not solved yet: the rest of the lesson uses the reference grid")

# %% [markdown]
# ## 3. A first kernel: the loop, one thread per pair
#
# The body is lesson 01's loop for one `(b, d)`. `cuda.local.array` gives each thread its
# own state; its size must be a compile-time constant, so we build the kernel for a given
# `n` inside a function (the package does the same, and caches one kernel per `n`).

# %%
def make_naive_kernel(n):
    @cuda.jit
    def scan_kernel(u, delta, A, B, C, D, y):
        d_inner = u.shape[2]
        di = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x   # channel
        bi = cuda.blockIdx.y                                        # batch element
        if di >= d_inner:
            return                                                  # past the last channel
        h = cuda.local.array(n, np.float32)                         # this thread's state
        for i in range(n):
            h[i] = 0.0
        for t in range(u.shape[1]):
            dlt = delta[bi, t, di]
            acc = 0.0
            for i in range(n):
                h[i] = math.exp(dlt * A[di, i]) * h[i] + dlt * B[bi, t, i] * u[bi, t, di]
                acc += C[bi, t, i] * h[i]
            y[bi, t, di] = acc + D[di] * u[bi, t, di]
    return scan_kernel


def random_inputs(rng, b, l, d, n, dtype=np.float32):
    u = rng.standard_normal((b, l, d)).astype(dtype)
    delta = np.log1p(np.exp(rng.normal(-1.0, 1.0, (b, l, d)))).astype(dtype)
    A = -np.tile(np.arange(1, n + 1, dtype=dtype), (d, 1))
    B = rng.standard_normal((b, l, n)).astype(dtype)
    C = rng.standard_normal((b, l, n)).astype(dtype)
    return u, delta, A, B, C, np.ones(d, dtype)


s = SIM_SIZES
inputs = random_inputs(rng, s["b"], s["l"], s["d"], s["n"])
y_ref, _, cache_ref = selective_scan_forward(*inputs, backend="numpy")
tpb = 32
grid, _ = launch_config(s["b"], s["d"], tpb)
y_dev = cuda.device_array(inputs[0].shape, np.float32)
t0 = time.perf_counter()
make_naive_kernel(s["n"])[grid, tpb](*[cuda.to_device(x) for x in inputs], y_dev)
t_naive = time.perf_counter() - t0
y_naive = y_dev.copy_to_host()
assert np.allclose(y_naive, y_ref, rtol=1e-4, atol=1e-5)
print(f"naive kernel == reference (grid {grid}, {tpb} threads per block, {t_naive:.2f} s incl. compile)")

# %% [markdown]
# ## 4. Memory: coalescing and shared memory
#
# At step `t` the threads of a warp (consecutive channels) read `u[bi, t, di]` for 32
# consecutive `di`. In the package's time-second layout `(b, l, d_inner)` those are 32
# consecutive addresses: one coalesced transaction. In the official channels-first layout
# `(b, d, l)` they would be `l` elements apart: 32 separate transactions. The figure shows
# the addresses a warp touches.
#
# `B_t` and `C_t` are the same for every channel of a batch element, so every thread of a
# block would load the same `2n` numbers from global memory at every step. The package's
# kernel instead has the block copy a chunk of `B, C` into **shared memory** once
# (each thread copies a few entries, then `cuda.syncthreads()`), and every thread reads it
# from there.

# %%
b_, l_, d_ = 1, 64, 128
warp = np.arange(32)                                     # channels 0..31 of one warp, at t = 5
t_fix = 5
addr_time_second = (0 * l_ + t_fix) * d_ + warp          # (b, l, d) layout
addr_channels_first = (0 * d_ + warp) * l_ + t_fix       # (b, d, l) layout
assert np.all(np.diff(addr_time_second) == 1) and np.all(np.diff(addr_channels_first) == l_)

fig, ax = plt.subplots(figsize=(8, 2.8))
ax.scatter(addr_time_second, np.ones(32), s=12, label="(b, l, d_inner): package layout, one 128-byte line")
ax.scatter(addr_channels_first, np.zeros(32), s=12, color="C3", label=f"(b, d_inner, l): stride l = {l_}, 32 lines")
ax.set_yticks([0, 1], ["channels first", "time second"])
ax.set_ylim(-0.6, 1.9)
ax.set_xlabel("element address read by the 32 threads of a warp at one time step")
ax.set_title("Coalesced vs strided loads of u[b, t, d] for one warp", fontsize=10)
ax.legend(fontsize=8, loc="upper right")
plt.tight_layout()
plt.show()

# %% [markdown]
# ### Exercise 05.2: a kernel of your own
# Write a CUDA kernel `softplus_kernel(x, out)` for 1-D arrays: each thread computes one
# element `out[i] = log(1 + exp(x[i]))` with `i = cuda.grid(1)` (shorthand for
# `blockIdx.x · blockDim.x + threadIdx.x`), and does nothing when `i` is past the end. For
# `x > 0` use `x + log1p(exp(-x))` so that `exp` does not overflow, and use `log1p` in both
# branches: `log(1 + 1e-22)` is `0` in floating point, `log1p(1e-22)` is `1e-22`. Then write
# the host function `softplus_gpu(x, tpb)` that copies `x` to the device, launches enough
# blocks of `tpb` threads to cover it, and returns the result as a host array. The check runs
# your kernel by itself too, and watches `softplus_gpu` launch it.

# %% tags=["solution"]
@cuda.jit
def softplus_kernel(x, out):
    """out[i] = softplus(x[i]), one thread per element; x, out: (m,) device arrays."""
    ### BEGIN SOLUTION
    i = cuda.grid(1)
    if i < x.shape[0]:
        v = x[i]
        out[i] = v + math.log1p(math.exp(-v)) if v > 0 else math.log1p(math.exp(v))
    ### END SOLUTION


def softplus_gpu(x, tpb):
    """Softplus of a host array on the GPU.

    Args:
        x: (m,) host array.  tpb: threads per block.
    Returns:
        (m,) host array of the same dtype, softplus(x).
    """
    ### BEGIN SOLUTION
    out = cuda.device_array_like(x)
    softplus_kernel[math.ceil(x.shape[0] / tpb), tpb](cuda.to_device(x), out)
    return out.copy_to_host()
    ### END SOLUTION

# %% tags=["check", "points=1"]
_passed["05.2"] = False
x_sp = np.array([-50.0, -3.0, -0.5, 0.0, 0.5, 3.0, 50.0, 200.0, 1.0, -1.0], np.float32)
got_sp = np.asarray(softplus_gpu(x_sp, 4))                 # 3 blocks of 4 threads for 10 elements
assert got_sp.shape == x_sp.shape, f"one output per input: shape {x_sp.shape}, got {got_sp.shape}"
expected_sp = np.logaddexp(0.0, x_sp.astype(np.float64))    # the closed form, in float64
assert np.allclose(got_sp, expected_sp, rtol=1e-6, atol=1e-30), f"softplus values: {got_sp} vs {expected_sp}"
# The method: the kernel itself computes softplus, and softplus_gpu launches it.
x_k = np.linspace(-6.0, 6.0, 13)
out_k = cuda.device_array(13, np.float64)
softplus_kernel[4, 4](cuda.to_device(x_k), out_k)
assert np.allclose(out_k.copy_to_host(), np.logaddexp(0.0, x_k), rtol=1e-13, atol=1e-300), \
    "softplus_kernel itself must write out[i] = softplus(x[i]) (launched here with 4 blocks of 4 threads)"


class LaunchLog:
    """Stands in for the kernel while softplus_gpu runs: records each launch configuration."""

    def __init__(self, kernel):
        self.kernel, self.configs = kernel, []

    def __getitem__(self, config):
        self.configs.append(config)
        return self.kernel[config]


_kernel, softplus_kernel = softplus_kernel, LaunchLog(softplus_kernel)
try:
    got_logged = np.asarray(softplus_gpu(x_sp, 4))
finally:
    launches, softplus_kernel = softplus_kernel.configs, _kernel
assert launches, "softplus_gpu must compute on the device: launch softplus_kernel[blocks, tpb](...)"
assert np.allclose(got_logged, expected_sp, rtol=1e-6, atol=1e-30)
### BEGIN HIDDEN TESTS
x_h = np.linspace(-30, 30, 37)                               # float64, not a multiple of tpb
got_h = np.asarray(softplus_gpu(x_h, 8))
assert got_h.shape == (37,) and np.allclose(got_h, np.logaddexp(0.0, x_h), rtol=1e-13, atol=1e-300), "float64, m = 37"
got_t = np.asarray(softplus_gpu(np.array([1e-22, -60.0, 800.0]), 2))
assert np.allclose(got_t, [np.log(2.0) + 5e-23, np.exp(-60.0), 800.0], rtol=1e-13, atol=0), \
    "tiny, very negative and very large inputs (log1p, no overflow)"
### END HIDDEN TESTS
_passed["05.2"] = True
print("exercise 05.2 passed")

# %% [markdown]
# (No fallback is needed: nothing below uses `softplus_gpu`.)
#
# ## 5. Splitting time inside a block: a chunked scan in shared memory
#
# Now the layout of the official kernel, on the affine scan of lesson 04: `S` independent
# sequences `h_t = a_t h_{t-1} + b_t` (`h_0 = 0`) stored as rows `a, b` of shape `(S, l)`.
# **One block per sequence**, `T = blockDim.x` threads per block, and thread `j` owns the
# contiguous chunk of time steps `j·L … (j+1)·L - 1` with `L = ceil(l / T)` (the last chunks
# may be short or empty). Three phases:
#
# 1. **Chunk totals.** Thread `j` composes the maps of its chunk, `(A_j, B_j) = e_{jL} ∘ … ∘
#    e_{(j+1)L-1}` (start from the identity `(1, 0)`), reading its chunk from global memory,
#    and writes the pair into two shared arrays `sa[j], sb[j]`; then `cuda.syncthreads()`.
# 2. **Block-wide scan of the totals.** A Hillis–Steele scan (lesson 04) over the `T` pairs
#    in shared memory: in round `offset = 1, 2, 4, …` every thread `j ≥ offset` combines
#    `(sa, sb)[j - offset]` (first) with its own (second). Read both operands, then
#    `cuda.syncthreads()`, then write, then `cuda.syncthreads()` again: otherwise a thread
#    could read a neighbour's value that has already been updated in this round. Every
#    thread of the block must reach every `syncthreads()` (keep the `if j >= offset` inside).
# 3. **Rescan the chunk.** The state entering chunk `j` is `sb[j - 1]` (the inclusive prefix
#    of the chunks before it applied to `h_0 = 0`), or `0` for `j = 0`. Thread `j` runs its
#    chunk's recurrence from there and writes `h`.
#
# Each thread touches global memory only for its own chunk; everything it needs from the
# other chunks comes through shared memory. The depth is `L + log₂ T + L` steps instead of
# `l`: with `T = 128` threads on `l = 2048` steps, `16 + 7 + 16 = 39`. The official kernel
# does this with `cub::BlockScan`, chunks of a few elements per thread held in registers,
# and one such scan per state coordinate `n`.
#
# | code | shape | meaning |
# |---|---|---|
# | `a, b` | `(S, l)` | the pairs of `S` independent scans, one per block |
# | `h` | `(S, l)` | the states, written by the kernel |
# | `T` | `cuda.blockDim.x` | threads per block, at most `TPB_MAX` |
# | `L` | `ceil(l / T)` | chunk length; thread `j` owns `j·L … min((j+1)·L, l) - 1` |
# | `sa, sb` | `cuda.shared.array(TPB_MAX, float64)` | the chunk totals, then their prefixes |
#
# ### Exercise 05.3: the chunked scan kernel
# Write `chunked_scan_kernel(a, b, h)` and the host function `chunked_scan(a, b, tpb)`, which
# launches one block of `tpb` threads per row and returns `h` as a float64 host array. Index
# the global arrays with both indices at once (`a[s, t]`). In the
# simulator, the check records every global-memory access of every thread (each thread may
# read and write only its own chunk) and every `cuda.shared.array` allocation; on a real
# GPU it looks for shared memory in the kernel's PTX. Results are compared with frozen
# states of the package's scan.

# %% tags=["solution"]
TPB_MAX = 64                     # the shared arrays' size must be a compile-time constant


@cuda.jit
def chunked_scan_kernel(a, b, h):
    """h[s, t] = a[s, t] h[s, t-1] + b[s, t], h[s, -1] = 0: block s scans row s, thread j its chunk.

    Args (device arrays): a, b: (S, l) float64.  h: (S, l) float64, written.
    Launch: grid S, blockDim T <= TPB_MAX.
    """
    ### BEGIN SOLUTION
    s = cuda.blockIdx.x
    j = cuda.threadIdx.x
    T = cuda.blockDim.x
    l = a.shape[1]
    L = (l + T - 1) // T
    start = j * L
    stop = min(start + L, l)
    ca = 1.0                                            # phase 1: this chunk's total, from (1, 0)
    cb = 0.0
    for t in range(start, stop):
        cb = a[s, t] * cb + b[s, t]
        ca = ca * a[s, t]
    sa = cuda.shared.array(TPB_MAX, float64)
    sb = cuda.shared.array(TPB_MAX, float64)
    sa[j] = ca
    sb[j] = cb
    cuda.syncthreads()
    offset = 1                                          # phase 2: Hillis-Steele over the T totals
    while offset < T:
        pa = 1.0
        pb = 0.0
        if j >= offset:
            pa = sa[j - offset]
            pb = sb[j - offset]
        cuda.syncthreads()                              # everyone has read before anyone writes
        if j >= offset:
            sb[j] = sa[j] * pb + sb[j]                  # (pa, pb) first, then (sa[j], sb[j])
            sa[j] = pa * sa[j]
        cuda.syncthreads()
        offset *= 2
    hh = 0.0                                            # phase 3: rescan from the state entering the chunk
    if j > 0:
        hh = sb[j - 1]
    for t in range(start, stop):
        hh = a[s, t] * hh + b[s, t]
        h[s, t] = hh
    ### END SOLUTION


def chunked_scan(a, b, tpb):
    """Scan the rows of a, b with chunked_scan_kernel, one block of tpb threads per row.

    Args:
        a, b: (S, l) float64 host arrays.  tpb: threads per block, 1..TPB_MAX.
    Returns:
        h: (S, l) float64 host array.
    """
    ### BEGIN SOLUTION
    h = cuda.device_array(a.shape, np.float64)
    chunked_scan_kernel[a.shape[0], tpb](cuda.to_device(np.ascontiguousarray(a, np.float64)),
                                         cuda.to_device(np.ascontiguousarray(b, np.float64)), h)
    return h.copy_to_host()
    ### END SOLUTION

# %% tags=["check", "points=5"]
_passed["05.3"] = False
import sys
import threading
import traceback

from numba.core import types as numba_types
from numba.np import numpy_support


class KernelWatch:
    """In the simulator: record, per thread, global reads/writes of (S, l) arrays and shared allocations."""

    def __init__(self, shape):
        from numba.cuda.simulator import kernelapi
        from numba.cuda.simulator.cudadrv import devicearray
        self.shape, self.reads, self.writes, self.shared = shape, [], [], []
        self._api, self._da = kernelapi.FakeCUDAShared, devicearray.FakeCUDAArray
        self._orig = (self._api.array, self._da.__getitem__, self._da.__setitem__)

    def _who(self):
        th = threading.current_thread()
        return (th.blockIdx.x, th.threadIdx.x) if hasattr(th, "threadIdx") else None

    def __enter__(self):
        watch, (orig_shared, orig_get, orig_set) = self, self._orig

        def shared_array(api, shape, dtype, alignment=None):
            watch.shared.append((watch._who(), shape))
            if shape == 0 or alignment is not None:
                return orig_shared(api, shape, dtype, alignment)
            # The simulator keys a block's shared arrays by the calling line; key them the same way.
            caller = traceback.extract_stack(sys._getframe())[-2][0:2]
            if caller not in api._allocations:
                np_dtype = numpy_support.as_dtype(dtype) if isinstance(dtype, numba_types.Type) else dtype
                api._allocations[caller] = np.empty(shape, np_dtype)
            return api._allocations[caller]

        def getitem(arr, idx):
            who = watch._who()
            if who is not None and arr._ary.shape == watch.shape:
                watch.reads.append((who, idx))
            return orig_get(arr, idx)

        def setitem(arr, idx, val):
            who = watch._who()
            if who is not None and arr._ary.shape == watch.shape:
                watch.writes.append((who, idx))
            return orig_set(arr, idx, val)

        self._api.array, self._da.__getitem__, self._da.__setitem__ = shared_array, getitem, setitem
        return self

    def __exit__(self, *exc):
        self._api.array, self._da.__getitem__, self._da.__setitem__ = self._orig


def check_chunked(key, tpb):
    """Run chunked_scan on frozen problem `key` with tpb threads; check result and method."""
    a_, b_, h_ref = REF[f"{key}_a"], REF[f"{key}_b"], REF[f"{key}_h"]
    S, l = a_.shape
    if SIMULATOR:
        with KernelWatch((S, l)) as watch:
            h_ = np.asarray(chunked_scan(a_.copy(), b_.copy(), tpb))
    else:
        h_ = np.asarray(chunked_scan(a_.copy(), b_.copy(), tpb))
    assert h_.shape == (S, l), f"h must have shape {(S, l)}, got {h_.shape}"
    assert np.allclose(h_, h_ref, rtol=1e-10, atol=1e-14), f"(S, l) = {(S, l)}, tpb = {tpb}: the states are wrong"
    if not SIMULATOR:                                   # a real GPU: shared memory must appear in the PTX
        ptx = "".join(chunked_scan_kernel.inspect_asm().values())
        assert ".shared" in ptx, "the kernel must use cuda.shared.array"
        return
    L = -(-l // tpb)
    for kind, accesses in (("read", watch.reads), ("wrote", watch.writes)):
        for (blk, thr), idx in accesses:
            assert isinstance(idx, tuple) and len(idx) == 2, f"index the (S, l) arrays as x[s, t], got x[{idx!r}]"
            s_, t_ = (int(i) for i in idx)
            assert blk == s_ and thr == t_ // L, (f"thread {thr} of block {blk} {kind} element {(s_, t_)}: block s "
                                                  f"owns row s, thread j the steps j*L..(j+1)*L-1, L = {L}")
    assert {idx for _, idx in watch.writes} == {(s_, t_) for s_ in range(S) for t_ in range(l)}, "write every h[s, t]"
    users = {who for who, _ in watch.shared}
    assert len(users) == S * tpb, "every thread of every block must take part (allocate the shared arrays)"
    sizes = [int(np.prod(shape)) for _, shape in watch.shared]
    assert max(sizes) >= tpb, "the block's shared arrays must hold one chunk total per thread"


check_chunked("s", 8)                                   # l = 37: chunks of 5, the last one short
### BEGIN HIDDEN TESTS
check_chunked("q", 8)                                   # l = 20: chunks of 3, the last thread's is empty
check_chunked("s", 4)
check_chunked("o", 2)                                   # l = 1
### END HIDDEN TESTS
_passed["05.3"] = True
print("exercise 05.3 passed: the chunked shared-memory scan matches the frozen states")

# %% tags=["fallback"]
if not _passed["05.3"]:
    def chunked_scan(a, b, tpb):
        """Stand-in for exercise 05.3: the recurrence on the host (no kernel)."""
        h = np.empty_like(a, dtype=np.float64)
        acc = np.zeros(a.shape[0])
        for t in range(a.shape[1]):
            acc = a[:, t] * acc + b[:, t]
            h[:, t] = acc
        return h
    print("exercise 05.3 not solved yet: the rest of the lesson uses a host loop in its place")

# %% [markdown]
# With the kernel, the whole S6 forward: `a = exp(Δ A)` and `b = Δ B u` for every
# `(batch, channel, state)` as the rows, the chunked scan, then `y_t = C_t · h_t + D u_t` on
# the host. It must agree with the package's `"numpy"` reference (not graded).

# %%
def selective_scan_chunked(u, delta, A, B, C, D, tpb):
    """S6 forward with chunked_scan over time.  u, delta: (b, l, d).  A: (d, n).  B, C: (b, l, n).  D: (d,)."""
    bsz, l, d = u.shape
    n = A.shape[1]
    deltaA = np.exp(delta[..., None] * A)                                   # (b, l, d, n)
    deltaB_u = delta[..., None] * B[:, :, None, :] * u[..., None]           # (b, l, d, n)
    rows = lambda x: x.transpose(0, 2, 3, 1).reshape(bsz * d * n, l)        # (b d n, l): one row per scan
    h = chunked_scan(rows(deltaA), rows(deltaB_u), 4).reshape(bsz, d, n, l)  # (b, d, n, l)
    return np.einsum("bdnl,bln->bld", h, C) + D * u


s = SIM_SIZES
inputs64 = random_inputs(rng, s["b"], s["l"], s["d"], s["n"], dtype=np.float64)
y_chunk = selective_scan_chunked(*inputs64, tpb=4)
y_ref64, _, _ = selective_scan_forward(*inputs64, backend="numpy")
print("chunked kernel S6 vs package (numpy): max |diff| =", np.abs(y_chunk - y_ref64).max())
assert np.allclose(y_chunk, y_ref64, rtol=1e-10, atol=1e-12)

# %% [markdown]
# What the simulator saw: for one frozen problem (`S = 3` rows of `l = 37` steps, 8 threads
# per block), the thread that wrote each `h[s, t]` (left), and the number of sequential steps
# on the longest path, chunked versus one thread per row, as `l` grows with `T = 128` (right).

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.4), gridspec_kw={"width_ratios": [1.6, 1]})
if SIMULATOR and _passed["05.3"]:
    with KernelWatch(REF["s_a"].shape) as watch_fig:
        chunked_scan(REF["s_a"], REF["s_b"], 8)
    writer = np.full(REF["s_a"].shape, -1)
    for (_, thr), (s_, t_) in watch_fig.writes:
        writer[s_, t_] = thr
    im = axes[0].imshow(writer, aspect="auto", cmap=plt.get_cmap("tab10", 8), vmin=-0.5, vmax=7.5,
                        interpolation="nearest")
    axes[0].set_yticks(range(writer.shape[0]), [f"block {i}" for i in range(writer.shape[0])])
    axes[0].set_xlabel("time step t")
    axes[0].set_title("threadIdx.x that wrote h[s, t] (recorded in the simulator)", fontsize=10)
    fig.colorbar(im, ax=axes[0], ticks=range(8), label="thread")
else:
    axes[0].text(0.5, 0.5, "recorded only in the simulator\n(with exercise 05.3 solved)", ha="center", va="center")
    axes[0].set_axis_off()
ls_ = 2 ** np.arange(7, 15)
T_ = 128
L_ = np.ceil(ls_ / T_)
axes[1].loglog(ls_, ls_, "k-o", ms=4, label="one thread per row: l")
axes[1].loglog(ls_, 2 * L_ + np.log2(T_), "C0-s", ms=4, label=f"chunked, T = {T_}: 2 ceil(l/T) + log2 T")
axes[1].set_xlabel("sequence length l")
axes[1].set_ylabel("sequential steps (depth)")
axes[1].legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 6. The package's CUDA backend
#
# `backend="cuda"` runs `scan/gpu.py`: the layout above with `tpb =
# threads_per_block(d_inner)`, `B, C` staged in shared memory, checkpoints every 16 steps
# for the backward, and block-level tree reductions (no atomics) for the gradients that sum
# over channels. Forward **and** backward must match the reference.

# %%
y_cuda, h_cuda, cache_cuda = selective_scan_forward(*inputs, backend="cuda")
assert np.allclose(y_cuda, y_ref, rtol=1e-4, atol=1e-5)
dy = rng.standard_normal(y_ref.shape).astype(np.float32)
grads_cuda = selective_scan_backward(dy, cache_cuda)
grads_ref = selective_scan_backward(dy, cache_ref)
names = ["du", "ddelta", "dA", "dB", "dC", "dD", "dh0"]
for name, g_c, g_r in zip(names, grads_cuda, grads_ref):
    err = np.abs(g_c - g_r).max() / (np.abs(g_r).max() + 1e-12)
    print(f"{name:>7}: max |cuda - numpy| / max |numpy| = {err:.1e}")
    assert err < 1e-4
print(f"threads per block for d_inner = {s['d']}: {threads_per_block(s['d'])}")

# %% [markdown]
# ## 7. Speed
#
# In the simulator, timing means nothing (Python threads). On a real GPU the next cell times
# the package's CUDA backend against the Numba CPU backend at the size of a Mamba-130M layer
# (`b = 8, l = 2048, d_inner = 1536, n = 16`); without one it says so and skips. Host-device
# copies are included, as in the package's API (host arrays in, host arrays out).

# %%
if REAL_GPU:
    big = random_inputs(rng, *GPU_SIZES.values())
    times = {}
    for backend in ("cuda", "numba"):
        selective_scan_forward(*big, backend=backend)               # compile, warm up
        best = np.inf
        for _ in range(3):
            t0 = time.perf_counter()
            selective_scan_forward(*big, backend=backend)
            best = min(best, time.perf_counter() - t0)
        times[backend] = best
        print(f"{backend:>6}: {best * 1e3:8.1f} ms forward")
else:
    print("No GPU here: the kernels were checked in the simulator above; for real timings run this")
    print("notebook on a machine with an NVIDIA GPU (and `pip install \"numba-cuda[cu12]\"`).")

# %% [markdown]
# ## Summary
# * One thread per `(batch, channel)`, blocks of consecutive channels, grid `(ceil(d/tpb), b)`;
#   the state lives in registers (`cuda.local.array` of compile-time size). Simple, but a
#   Mamba layer has only ~12k such pairs, a few percent of the ~270k threads an H100 keeps
#   resident.
# * The official layout splits time inside a block: each thread scans a chunk, a block-wide
#   scan of the chunk totals in shared memory (lesson 04's operator, with `syncthreads`
#   between reads and writes) gives each chunk its entering state, and each thread rescans
#   its chunk. Depth `2L + log₂ T` instead of `l`.
# * The time-second layout `(b, l, d_inner)` makes a warp's loads coalesced; `B_t, C_t`,
#   shared by all channels, go through shared memory once per block (latency ~20–30 cycles
#   instead of ~400–800, though caches narrow the gap for reused data).
# * Gradients that sum over channels use block reductions in shared memory instead of
#   atomics, so results do not depend on scheduling.
# * The simulator checks correctness on tiny sizes, and lets a test watch which thread
#   touches which element; speed needs a real GPU.
#
# **Next:** lesson 06, the whole Mamba block and model.
