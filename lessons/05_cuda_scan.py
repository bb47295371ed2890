# %% [markdown]
# # 05 · The scan on a GPU with `numba.cuda`
#
# **Goal.** Write the selective scan as a CUDA kernel in Python: threads, blocks, the grid,
# shared memory and coalesced loads; run it (in Numba's CUDA *simulator* when there is no
# GPU, for real when there is one) and check it against the reference.
#
# **Prerequisites.** Lesson 03 (one independent recurrence per `(batch, channel)`; `prange`)
# and lesson 04 (why a GPU wants many threads).
#
# **Run time.** About 1 minute in the simulator (20 seconds with `LESSONS_FAST=1`). The
# simulator runs every GPU thread as a Python thread: it checks correctness, not speed, so
# the sizes here are tiny unless a real GPU is present.
#
# **You will use** `selective_scan_forward`/`selective_scan_backward` with `backend="cuda"`
# and the package's launch configuration `mamba_from_scratch.scan.gpu.threads_per_block`.

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
from numba import cuda

from mamba_from_scratch.scan import selective_scan_backward, selective_scan_forward
from mamba_from_scratch.scan.gpu import threads_per_block

rng = np.random.default_rng(SEED)
plt.rcParams.update({"figure.dpi": 80, "axes.grid": True, "grid.alpha": 0.3})
print("real GPU:", REAL_GPU, "| simulator:", os.environ.get("NUMBA_ENABLE_CUDASIM") == "1")

# %% [markdown]
# ## 1. The idea in words
#
# A GPU runs thousands of threads at once. They come in **blocks** (up to 1024 threads that
# can share a small, fast **shared memory** and synchronise), and the blocks form a **grid**.
# Threads of a block execute in groups of 32 (a **warp**) in lock-step, and a warp's loads
# are fastest when its 32 threads read 32 *consecutive* addresses (**coalesced** access).
#
# For the scan the natural unit of parallel work is the same as on the CPU: one thread per
# `(batch, channel)` pair, looping over time with its `n`-dimensional state in registers.
# A Mamba layer has `b · d_inner` of them, e.g. `8 × 1536 = 12 288` threads: enough to fill
# a GPU, so no parallel scan over time is needed at this size (lesson 04).
#
# | CUDA name | Numba | meaning |
# |---|---|---|
# | `threadIdx.x` | `cuda.threadIdx.x` | thread index within its block |
# | `blockIdx.x, .y` | `cuda.blockIdx.x, .y` | block index within the grid |
# | `blockDim.x` | `cuda.blockDim.x` | threads per block (`tpb`) |
# | `__shared__` | `cuda.shared.array(shape, dtype)` | per-block memory, ~100× faster than global |
# | `__syncthreads()` | `cuda.syncthreads()` | wait until every thread of the block is here |
# | launch | `kernel[grid, tpb](args)` | run `grid` blocks of `tpb` threads |
#
# ## 2. Which thread does what
#
# The package's layout: a block holds `tpb` consecutive channels of one batch element; the
# grid is `(ceil(d_inner / tpb), b)`. Thread `threadIdx.x` of block `(blockIdx.x, blockIdx.y)`
# owns channel `blockIdx.x · tpb + threadIdx.x` of batch element `blockIdx.y`; threads past
# the last channel do nothing.
#
# ### Exercise 1: the launch configuration
# Write `launch_config(b, d_inner, tpb)` returning `(grid, owner)`: `grid = (blocks_x, b)` and
# `owner`, an integer array of shape `(b, d_inner, 3)` with `(blockIdx.x, blockIdx.y,
# threadIdx.x)` of the thread that owns each pair.

# %% tags=["exercise"]
def launch_config(b, d_inner, tpb):
    """Grid and thread ownership of the one-thread-per-(batch, channel) layout.

    Returns:
        grid: (blocks_x, b).  owner: (b, d_inner, 3) int array of (blockIdx.x, blockIdx.y, threadIdx.x).
    """
    raise NotImplementedError("Exercise 1: write launch_config")

# %% tags=["solution"]
def launch_config(b, d_inner, tpb):
    """Grid and thread ownership (see the exercise)."""
    grid = (math.ceil(d_inner / tpb), b)
    owner = np.empty((b, d_inner, 3), dtype=int)
    channel = np.arange(d_inner)
    owner[:, :, 0] = channel // tpb             # blockIdx.x
    owner[:, :, 1] = np.arange(b)[:, None]      # blockIdx.y
    owner[:, :, 2] = channel % tpb              # threadIdx.x
    return grid, owner

# %% tags=["check"]
grid_chk, owner_chk = launch_config(3, 100, 32)
assert grid_chk == (4, 3), grid_chk
assert owner_chk.shape == (3, 100, 3)
flat = {tuple(o) for o in owner_chk.reshape(-1, 3)}
assert len(flat) == 300, "every pair needs its own thread"
bx, by, tx = owner_chk[..., 0], owner_chk[..., 1], owner_chk[..., 2]
assert np.all(bx * 32 + tx == np.arange(100)) and np.all(by == np.arange(3)[:, None]) and tx.max() < 32
print("exercise 1 passed")

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
# ### Exercise 2: a kernel of your own
# Write a CUDA kernel `softplus_kernel(x, out)` for 1-D arrays: each thread computes one
# element `out[i] = log(1 + exp(x[i]))` with `i = cuda.grid(1)` (shorthand for
# `blockIdx.x · blockDim.x + threadIdx.x`), and does nothing when `i` is past the end. For
# `x > 0` use `x + log1p(exp(-x))` so that `exp` does not overflow, and use `log1p` in both
# branches: `log(1 + 1e-22)` is `0` in floating point, `log1p(1e-22)` is `1e-22`.

# %% tags=["exercise"]
@cuda.jit
def softplus_kernel(x, out):
    """out[i] = softplus(x[i]), one thread per element."""
    raise NotImplementedError("Exercise 2: write softplus_kernel")

# %% tags=["solution"]
@cuda.jit
def softplus_kernel(x, out):
    """out[i] = softplus(x[i]), one thread per element."""
    i = cuda.grid(1)
    if i < x.shape[0]:
        v = x[i]
        out[i] = v + math.log1p(math.exp(-v)) if v > 0 else math.log1p(math.exp(v))

# %% tags=["check"]
x_sp = np.array([-50.0, -3.0, -0.5, 0.0, 0.5, 3.0, 50.0, 200.0, 1.0, -1.0], np.float32)
out_sp = cuda.device_array_like(x_sp)
softplus_kernel[3, 4](cuda.to_device(x_sp), out_sp)        # 12 threads for 10 elements
expected = np.logaddexp(0.0, x_sp.astype(np.float64))
assert np.allclose(out_sp.copy_to_host(), expected, rtol=1e-6, atol=1e-30)
print("exercise 2 passed")

# %% [markdown]
# ## 5. The package's CUDA backend
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
# ## 6. Speed
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
#   the state lives in registers (`cuda.local.array` of compile-time size).
# * The time-second layout `(b, l, d_inner)` makes a warp's loads coalesced; `B_t, C_t`,
#   shared by all channels, go through shared memory once per block.
# * Gradients that sum over channels use block reductions in shared memory instead of
#   atomics, so results do not depend on scheduling.
# * The simulator checks correctness on tiny sizes; speed needs a real GPU.
#
# **Next:** lesson 06, the whole Mamba block and model.
