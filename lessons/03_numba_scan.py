# %% [markdown]
# # 03 · Compiling the scan with Numba
#
# **Goal.** Take the selective scan from a NumPy loop to a compiled, multi-core kernel:
# `@njit`, then `@njit(parallel=True)` over channels; see what parallelises (channels) and
# what cannot (time); measure; find out why `exp` is the bottleneck inside Numba and what an
# `exp` written as plain arithmetic buys; compare with two yardsticks, the **roofline
# bound** (built from this machine's measured `fast_exp` throughput, FMA throughput and
# memory bandwidth) and the **np.exp yardstick** (the time of NumPy's own `np.exp`), the same
# two names and constructions as `docs/benchmarks.md`.
#
# **Prerequisites.** Lesson 01 (the recurrence and its loop over time). Math: how a float is
# stored (sign, exponent, mantissa: `x = m · 2^e`, so `2^k` can be written straight into the
# exponent bits), Taylor's theorem with its remainder, and Horner's rule for evaluating a
# polynomial. No Numba experience needed; the parallel scan of lesson 04 is not used here.
#
# **Run time.** About 20 seconds (15 seconds with `LESSONS_FAST=1`, mostly compilation).
#
# **Exercises.** 03.1 the parallel kernel (`prange` over `(batch, channel)`; the check
# verifies the result, `parallel=True` and a `prange` loop in the compiled kernel); 03.2 an
# `exp` by range reduction as a compiled kernel (the check verifies the accuracy and that the
# compiled LLVM IR calls no `exp`).
#
# **Timings.** This machine is shared: every timing prints the load average beside it, and
# timings taken under load (load average near or above the 2 cores) are not meaningful. The
# committed outputs were taken with the machine otherwise idle (the load average printed,
# about 1, is the notebook's own run).
#
# **You will use** `selective_scan_forward` with backends `"numpy"` and `"numba"`, and
# `mamba_from_scratch.scan.fastexp.fast_exp_array`.

# %% tags=["parameters"]
import os

FAST = os.environ.get("LESSONS_FAST", "0") == "1"  # CI sets LESSONS_FAST=1 to shrink every size
SEED = 0
BATCH = 1 if FAST else 2
LENGTH = 64 if FAST else 1024
D_INNER = 32 if FAST else 256
N_STATE = 16
EXP_SIZE = 100_000 if FAST else 4_000_000   # elements in the exp timing
BW_SIZE = 1_000_000 if FAST else 16_000_000  # float32 elements copied to measure memory bandwidth
                                             # (64 MB exceeds the caches; the fast size does not)
REPEATS = 2 if FAST else 5                   # best-of for each timing

# %%
import math
import re
import time

import matplotlib.pyplot as plt
import numba
import numpy as np
from numba import njit, prange

from mamba_from_scratch.grading import package_calls
from mamba_from_scratch.runtime import tune_process
from mamba_from_scratch.scan import selective_scan_forward
from mamba_from_scratch.scan.fastexp import fast_exp_array

# Before the first parallel kernel starts Numba's OpenMP threads: idle threads sleep instead of
# spinning (OMP_WAIT_POLICY=PASSIVE), one BLAS thread. Section 5 says what it changes.
tune_process()
rng = np.random.default_rng(SEED)
_passed = {}                     # exercise id -> True once its check passed (read by the fallbacks)
frozen = np.load("_data/03_scan.npz")   # float64 reference outputs written by _data/make_03.py
plt.rcParams.update({"figure.dpi": 80, "axes.grid": True, "grid.alpha": 0.3})
THREADS = numba.config.NUMBA_NUM_THREADS
print(f"Numba {numba.__version__}, {THREADS} threads on {os.cpu_count()} cores, "
      f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}")
print("load average (1, 5, 15 min):", os.getloadavg())


def best_time(fn, repeats=REPEATS):
    """Best wall time of `repeats` calls (the first call may compile: call fn once before)."""
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def report(label, value, unit):
    """Print one timing with the 1-minute load average beside it (timings under load mislead)."""
    print(f"{label:>30}: {value:8.3f} {unit}   (load average {os.getloadavg()[0]:.2f})")

# %% [markdown]
# ## 1. The idea in words
#
# The NumPy reference loops over time in Python and does all `(b, d_inner, n)` work of a
# step in one vectorised call. Each step pays microseconds of interpreter overhead and
# allocates temporaries. A compiled loop pays neither: Numba translates a Python function on
# NumPy arrays into machine code with LLVM, so a triple loop runs at C speed.
#
# Then we use the cores. Time cannot be split this way (`h_t` needs `h_{t-1}`), but every
# `(batch, channel)` pair runs its own recurrence, with its own state of `n` numbers that
# fit in registers. So: `prange` over the `b · d_inner` pairs, a plain loop over time inside.
#
# | symbol | code | meaning |
# |---|---|---|
# | `b, l, d, n` | `BATCH, LENGTH, D_INNER, N_STATE` | batch, time, channels, state |
# | element | | one `(b, t, d, n)` update `h = exp(Δ A) h + Δ B u`: the unit of work |
# | ns / element | | wall time divided by `b · l · d · n` |
# | `prange` | `numba.prange` | a `range` whose iterations Numba spreads over threads |
#
# ## 2. Version 1: the loop, compiled
#
# The same triple loop as lesson 01, with `@njit` on top (float32, as in training).

# %%
@njit(cache=False)
def scan_njit(u, delta, A, B, C, D):
    """Serial compiled S6.  u, delta: (b, l, d); A: (d, n); B, C: (b, l, n); D: (d,).  Returns y (b, l, d)."""
    b, l, d = u.shape
    n = A.shape[1]
    y = np.empty_like(u)
    h = np.empty(n, u.dtype)
    for bi in range(b):
        for di in range(d):
            h[:] = 0
            for t in range(l):
                acc = 0.0
                for i in range(n):
                    h[i] = math.exp(delta[bi, t, di] * A[di, i]) * h[i] + delta[bi, t, di] * B[bi, t, i] * u[bi, t, di]
                    acc += C[bi, t, i] * h[i]
                y[bi, t, di] = acc + D[di] * u[bi, t, di]
    return y


def random_inputs(rng, b, l, d, n, dtype=np.float32):
    """Mamba-like scan inputs: softplus step sizes and the official A = -(1..n)."""
    u = rng.standard_normal((b, l, d)).astype(dtype)
    delta = np.log1p(np.exp(rng.normal(-3.0, 1.0, (b, l, d)))).astype(dtype)
    A = -np.tile(np.arange(1, n + 1, dtype=dtype), (d, 1))
    B = rng.standard_normal((b, l, n)).astype(dtype)
    C = rng.standard_normal((b, l, n)).astype(dtype)
    D = np.ones(d, dtype)
    return u, delta, A, B, C, D


inputs = random_inputs(rng, BATCH, LENGTH, D_INNER, N_STATE)
elements = BATCH * LENGTH * D_INNER * N_STATE
y_ref, _, _ = selective_scan_forward(*inputs, backend="numpy")
t0 = time.perf_counter()
y1 = scan_njit(*inputs)
print(f"first call (compiles): {time.perf_counter() - t0:.2f} s")
assert np.allclose(y1, y_ref, rtol=1e-4, atol=1e-4)
ns = {"numpy reference": best_time(lambda: selective_scan_forward(*inputs, backend="numpy")) / elements * 1e9}
report("numpy reference", ns["numpy reference"], "ns / element")
ns["@njit serial"] = best_time(lambda: scan_njit(*inputs)) / elements * 1e9
report("@njit serial", ns["@njit serial"], "ns / element")

# %% [markdown]
# ## 3. Version 2: parallel over (batch, channel)
#
# ### Exercise 03.1: `prange` over the pairs
#
# Write the kernel `_scan_prange_kernel(u, delta, A, B, C, D, y)`: the same computation as
# `scan_njit`, writing into the preallocated output `y`, with **one flat
# `for task in prange(b * d):` loop** over `(batch, channel)` pairs (`bi = task // d`,
# `di = task % d`) and the loops over time and state inside. Each task needs its **own**
# state array (allocate it inside the `prange` loop: a shared `h` would be a data race
# between threads). Then write the host function `scan_prange`, which allocates `y` and
# launches the kernel. The kernel is already decorated with `@njit(parallel=True)`; keep it.
#
# | code | shape |
# |---|---|
# | `u`, `delta`, `y` | `(b, l, d)` |
# | `A` | `(d, n)` |
# | `B`, `C` | `(b, l, n)` |
# | `D` | `(d,)` |
#
# The check runs `scan_prange` and your kernel itself in float64 against frozen reference
# outputs (`_data/03_scan.npz`, rel. error `1e-10`), and inspects what Numba compiled: the
# kernel must be `parallel=True` and contain a parallel loop that came from your `prange`
# (Numba's parfor diagnostics; a serial `range` gives none). The package's scan may not be
# called.

# %% tags=["solution"]
@njit(parallel=True)
def _scan_prange_kernel(u, delta, A, B, C, D, y):
    """Fill y (b, l, d) with the S6 output; one prange task per (batch, channel) pair."""
    ### BEGIN SOLUTION
    b, l, d = u.shape
    n = A.shape[1]
    for task in prange(b * d):
        bi, di = task // d, task % d
        h = np.zeros(n, u.dtype)                 # private to this task
        for t in range(l):
            dlt = delta[bi, t, di]
            delta_u = dlt * u[bi, t, di]
            acc = 0.0
            for i in range(n):
                h[i] = math.exp(dlt * A[di, i]) * h[i] + delta_u * B[bi, t, i]
                acc += C[bi, t, i] * h[i]
            y[bi, t, di] = acc + D[di] * u[bi, t, di]
    ### END SOLUTION


def scan_prange(u, delta, A, B, C, D):
    """Parallel compiled S6.

    Args:
        u, delta: (b, l, d).  A: (d, n).  B, C: (b, l, n).  D: (d,).  One dtype throughout.
    Returns:
        y: (b, l, d), same dtype as u.
    """
    ### BEGIN SOLUTION
    y = np.empty_like(u)
    _scan_prange_kernel(u, delta, A, B, C, D, y)
    return y
    ### END SOLUTION

# %% tags=["check", "points=3"]
_passed["03.1"] = False


def prange_loops(dispatcher, dtype):
    """Number of parallel loops that Numba built from a user prange, for the signature of `dtype`."""
    assert dispatcher.targetoptions.get("parallel"), "the kernel must be compiled with @njit(parallel=True)"
    sigs = [s for s in dispatcher.signatures if s[0].dtype == numba.from_dtype(np.dtype(dtype))]
    assert sigs, f"the kernel was never called with {dtype} arrays: scan_prange must launch it"
    diagnostics = dispatcher.get_metadata(sigs[0])["parfor_diagnostics"]
    return sum(any(p[0] == "prange" for p in pf.patterns) for pf in diagnostics.initial_parfors)


names = ("u", "delta", "A", "B", "C", "D")
y_a = scan_prange(*(frozen["a_" + k] for k in names))
assert np.shape(y_a) == (2, 9, 5), f"y must be (b, l, d) = (2, 9, 5), got {np.shape(y_a)}"
assert np.allclose(y_a, frozen["a_y"], rtol=1e-10, atol=1e-12), "scan_prange disagrees with the frozen reference"
assert prange_loops(_scan_prange_kernel, np.float64) >= 1, "no prange loop in the compiled kernel: use prange(b * d)"
y_kernel = np.full_like(frozen["a_u"], np.nan)
_scan_prange_kernel(*(frozen["a_" + k] for k in names), y_kernel)
assert np.allclose(y_kernel, frozen["a_y"], rtol=1e-10, atol=1e-12), "the kernel itself must fill every y[b, t, d]"
assert not package_calls(scan_prange), f"launch your kernel, not {package_calls(scan_prange)}"
### BEGIN HIDDEN TESTS
y_h = scan_prange(*(frozen["h_" + k] for k in names))
assert np.shape(y_h) == (1, 6, 4) and np.allclose(y_h, frozen["h_y"], rtol=1e-10, atol=1e-12)
y_0 = scan_prange(*(np.zeros_like(frozen["a_" + k]) if k == "u" else frozen["a_" + k] for k in names))
assert np.shape(y_0) == (2, 9, 5) and np.all(y_0 == 0), "zero input gives zero output"
### END HIDDEN TESTS
_passed["03.1"] = True
print("exercise 03.1 passed: scan_prange matches the reference and the kernel has a prange loop")

# %% tags=["fallback"]
if not _passed["03.1"]:
    def scan_prange(u, delta, A, B, C, D):
        """The package's numba backend in place of the exercise."""
        return selective_scan_forward(u, delta, A, B, C, D, backend="numba")[0]
    print("exercise 03.1 not solved yet: the rest of the lesson uses the package's numba backend")

# %%
y2 = scan_prange(*inputs)                       # compiles the float32 version
assert np.allclose(y2, y_ref, rtol=1e-4, atol=1e-4)
ns["@njit(parallel) prange"] = best_time(lambda: scan_prange(*inputs)) / elements * 1e9
report("@njit(parallel) prange", ns["@njit(parallel) prange"], "ns / element")

# %% [markdown]
# ## 4. Why `exp` is the bottleneck
#
# Every element needs one `exp(Δ A)`. Inside an `@njit` loop, `math.exp` (and `np.exp` on a
# scalar) becomes a call to the C library's `exp` per element (LLVM may group 8 of them in
# one vector intrinsic, but without a vector math library that is still 8 scalar calls).
# NumPy's own `np.exp` on a whole array uses SIMD code that does 8 or 16 at once. Let us
# time both, and the package's `fast_exp`: the same algorithm as a good libm (range
# reduction `x = k ln 2 + r`, a short polynomial for `e^r`, then `2^k` from the exponent
# bits), but written as plain branch-free arithmetic that LLVM can vectorise inside the loop.

# %%
@njit
def exp_loop(x):
    """math.exp applied element by element in a compiled loop (x: 1-D)."""
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        out[i] = math.exp(x[i])
    return out


x_exp = -rng.uniform(0, 20, EXP_SIZE).astype(np.float32)
exp_loop(x_exp[:10])
fast_exp_array(x_exp[:10])
exp_ns = {}
for label, fn in [("NumPy np.exp (SIMD)", lambda: np.exp(x_exp)),
                  ("Numba loop, math.exp", lambda: exp_loop(x_exp)),
                  ("Numba loop, fast_exp", lambda: fast_exp_array(x_exp))]:
    exp_ns[label] = best_time(fn) / EXP_SIZE * 1e9
    report(label, exp_ns[label], "ns / exp (float32, 1 thread)")
rel = np.abs(fast_exp_array(x_exp) / np.exp(x_exp.astype(np.float64)) - 1).max()
print(f"fast_exp largest relative error vs float64 exp: {rel:.1e} (float32 epsilon is {np.finfo(np.float32).eps:.1e})")
assert rel < 1e-6

# %% [markdown]
# ### Exercise 03.2: `exp` by range reduction, compiled, with no `exp` inside
#
# Write the kernel `_exp_kernel(x, out)` for a 1-D float64 array, computing `out[i] = e^{x[i]}`
# **without calling any `exp`** (not `math.exp`, not `np.exp`, not `np.expm1`):
#
# 1. `k = round(x / ln 2)` and `r = x - k ln 2`, so `e^x = 2^k e^r` with `|r| ≤ ln(2)/2 ≈ 0.35`;
# 2. `e^r` by its Taylor polynomial up to `r^12 / 12!`, evaluated by Horner's rule
#    (`1 + r(1 + r/2 (1 + r/3 (…)))`); the remainder is below `0.35^13 / 13! ≈ 2e-16`;
# 3. `2^k`: the float64 whose exponent bits are `k + 1023`,
#    `np.int64((k + 1023) << 52).view(np.float64)` (valid for `-1022 ≤ k ≤ 1023`).
#
# For speed, multiply rather than divide (`x · (1/ln 2)`, `r · (1/j)` with `1/j` a
# constant): a division per element is slow and blocks vectorisation. (`math.ldexp(e_r, k)`
# also gives `2^k`, and passes the check, but it is a library call per element and was
# several times slower than `math.exp` itself when this lesson was written.)
#
# Then the host function `exp_range_reduced(x)` for an array of any shape: allocate the
# output, launch the kernel on the flattened arrays, return the output in `x`'s shape. The
# check asks for a relative error below `1e-13` on `[-80, 0]`, and reads the LLVM IR that
# Numba compiled for your kernel (`_exp_kernel.inspect_llvm(...)`): no `exp` may be called.

# %% tags=["solution"]
@njit
def _exp_kernel(x, out):
    """out[i] = exp(x[i]) for 1-D float64 arrays, by range reduction and a Taylor polynomial."""
    ### BEGIN SOLUTION
    ln2, inv_ln2 = 0.6931471805599453, 1.4426950408889634
    for i in range(x.shape[0]):
        k = math.floor(x[i] * inv_ln2 + 0.5)         # round to the nearest integer
        r = x[i] - k * ln2                            # |r| <= ln(2)/2
        e_r = 1.0
        for j in range(12, 0, -1):                    # Horner: 1 + r/1 (1 + r/2 (1 + ... ))
            e_r = 1.0 + r * (1.0 / j) * e_r           # 1/j folds to a constant: no division per element
        out[i] = e_r * np.int64((np.int64(k) + 1023) << 52).view(np.float64)   # times 2^k
    ### END SOLUTION


def exp_range_reduced(x):
    """exp(x) for a float64 array of any shape, through _exp_kernel.

    Args:
        x: float64 array, values in [-700, 700].
    Returns:
        array of x's shape.
    """
    ### BEGIN SOLUTION
    x = np.ascontiguousarray(x, dtype=np.float64)
    out = np.empty_like(x)
    _exp_kernel(x.reshape(-1), out.reshape(-1))
    return out
    ### END SOLUTION

# %% tags=["check", "points=3"]
_passed["03.2"] = False


def called_exps(dispatcher):
    """Names of exp-like functions (exp, expf, expm1, llvm.exp.*) that the compiled kernel calls."""
    assert dispatcher.signatures, "the kernel was never called: exp_range_reduced must launch it"
    called = set()
    for sig in dispatcher.signatures:
        ir = dispatcher.inspect_llvm(sig)
        called |= set(re.findall(r'(?:call|declare)[^@\n]*@"?([\w.$]+)', ir))
    # Numba's own mangled functions (_ZN...) are the kernel and its helpers; their bodies are in
    # the same module, so an exp they call shows up as a call of its own.
    return sorted(n for n in called if not n.startswith("_ZN") and re.search(r"(^|[^a-z])exp", n))


x_chk = np.linspace(-80.0, 0.0, 50 * 201).reshape(50, 201)
got = exp_range_reduced(x_chk)
assert np.shape(got) == (50, 201), f"the output must have x's shape (50, 201), got {np.shape(got)}"
err = np.max(np.abs(got / np.exp(x_chk) - 1))
assert err < 1e-13, f"largest relative error {err:.1e}, expected < 1e-13"
assert exp_range_reduced(np.array([0.0]))[0] == 1.0, "exp(0) must be exactly 1"
out_k = np.empty(x_chk.size)
_exp_kernel(x_chk.reshape(-1), out_k)
assert np.max(np.abs(out_k / np.exp(x_chk.reshape(-1)) - 1)) < 1e-13, "_exp_kernel itself must compute exp"
bad = called_exps(_exp_kernel)
assert not bad, f"the compiled kernel calls {bad}: compute e^r with the polynomial and 2^k from the exponent bits"
### BEGIN HIDDEN TESTS
x_h = np.random.default_rng(5).uniform(-80.0, 0.0, (3, 7, 11))
got = exp_range_reduced(x_h)
assert np.shape(got) == (3, 7, 11) and np.max(np.abs(got / np.exp(x_h) - 1)) < 1e-13
k_h = np.arange(-100, 1)
got = exp_range_reduced(-k_h * math.log(2.0) * -1.0)          # exp(k ln 2) = 2^k
assert np.max(np.abs(got / np.exp(k_h * math.log(2.0)) - 1)) < 1e-13
got = exp_range_reduced(np.linspace(0.0, 5.0, 101))           # positive arguments too
assert np.max(np.abs(got / np.exp(np.linspace(0.0, 5.0, 101)) - 1)) < 1e-13
assert not called_exps(_exp_kernel)
### END HIDDEN TESTS
_passed["03.2"] = True
print(f"exercise 03.2 passed: relative error {err:.1e}, and the compiled kernel calls no exp")

# %% tags=["fallback"]
if not _passed["03.2"]:
    def exp_range_reduced(x):
        """NumPy's exp in place of the exercise (the timing below then times np.exp)."""
        return np.exp(np.asarray(x, dtype=np.float64))
    print("exercise 03.2 not solved yet: the rest of the lesson uses np.exp")

# %% [markdown]
# What the arithmetic version buys, in float64 (one thread; the load is printed):

# %%
x_exp64 = x_exp.astype(np.float64)
exp_range_reduced(x_exp64[:10])
report("float64 Numba loop, math.exp", best_time(lambda: exp_loop(x_exp64)) / EXP_SIZE * 1e9, "ns / exp")
report("float64 exp_range_reduced", best_time(lambda: exp_range_reduced(x_exp64)) / EXP_SIZE * 1e9, "ns / exp")

# %% [markdown]
# ## 5. The package's kernel, and two yardsticks
#
# The package's `"numba"` backend (`scan/cpu.py`) combines the three ideas, arranged for the
# vector lanes: `prange` over `(batch, block of 32 adjacent channels)`, the block's state in a
# small local `(n, 32)` array whose innermost loops run over the 32 channels, so the
# **channels** sit in the vector lanes (a fixed trip count LLVM vectorises whole, whatever `n`
# is; vectorising over `n` instead leaves `n = 16` to a scalar
# remainder loop and needs a horizontal sum per channel and step), and `fast_exp`. (It also
# keeps only one state every 32 steps for the backward; see lesson 02. The module's docstring
# says why the arrays are blocked `(.., n_blocks, 32)`.)
#
# How fast could the forward be on this machine? Two yardsticks, named as in
# `docs/benchmarks.md`:
#
# * **roofline bound**: what the machine's measured throughputs allow. Per state element
#   the forward does 1 exp and about 6 floating-point operations (the `Δ·A` product, the two
#   multiply-adds of `h = Ā h + (Δu) B` and `acc += C h`), and per `(b, t, d)` it moves
#   `u, Δ, y` (plus `B, C` per `(b, t)`) through memory. With `t_exp` the `fast_exp` time per
#   element in a tight loop, `F` the measured FMA-loop rate in FLOP/s per thread, and `W` the
#   measured memory bandwidth: compute = `E (t_exp + 6/F) / threads`, memory = `bytes / W`,
#   and the bound is the larger of the two (they overlap). No real kernel reaches it; the
#   distance to it is what could still be won.
# * **np.exp yardstick**: `E · t_np.exp / threads`, the time of the `E` exps at NumPy's own
#   vectorised float32 `np.exp`. It is easy to measure and was the benchmark's first
#   yardstick, but NumPy's `np.exp` is slower here than `fast_exp`, so a kernel can beat it:
#   it is not a bound.

# %%
@njit(fastmath=True)
def fma_loop(x, a, b, reps):
    """x = a x + b, elementwise, reps times over a small in-cache array: 2 FLOP per element and rep."""
    for _ in range(reps):
        for i in range(x.shape[0]):
            x[i] = a * x[i] + b
    return x


x_fma = np.ones(1024, np.float32)
fma_loop(x_fma, np.float32(0.999), np.float32(0.001), 1)
reps = 2_000 if FAST else 20_000
t_fma = best_time(lambda: fma_loop(x_fma, np.float32(0.999), np.float32(0.001), reps))
flops_per_s = 2 * x_fma.size * reps / t_fma                          # F, one thread
report("FMA loop (1 thread)", flops_per_s / 1e9, "GFLOP/s")
src_bw = np.ones(BW_SIZE, np.float32)
dst_bw = np.empty_like(src_bw)
bandwidth = 2 * src_bw.nbytes / best_time(lambda: np.copyto(dst_bw, src_bw))   # W: bytes read + written
report("memory copy (1 thread)", bandwidth / 1e9, "GB/s")

selective_scan_forward(*random_inputs(rng, 1, 4, 2, N_STATE), backend="numba")  # compile (or load the cache)
y_pkg, _, _ = selective_scan_forward(*inputs, backend="numba")
assert np.allclose(y_pkg, y_ref, rtol=1e-4, atol=1e-4)
ns["package numba"] = best_time(lambda: selective_scan_forward(*inputs, backend="numba")) / elements * 1e9
report("package numba", ns["package numba"], "ns / element")
numba.set_num_threads(1)
ns_one_thread = best_time(lambda: selective_scan_forward(*inputs, backend="numba")) / elements * 1e9
numba.set_num_threads(THREADS)
report("package numba, 1 thread", ns_one_thread, "ns / element")

bytes_fwd = 4 * (3 * BATCH * LENGTH * D_INNER + 2 * BATCH * LENGTH * N_STATE)   # float32 u, delta, y, B, C
compute_ns = (exp_ns["Numba loop, fast_exp"] + 6 / flops_per_s * 1e9) / THREADS  # per element
memory_ns = bytes_fwd / bandwidth / elements * 1e9
roofline = max(compute_ns, memory_ns)
np_exp_yardstick = exp_ns["NumPy np.exp (SIMD)"] / THREADS
print(f"roofline bound: compute {compute_ns:.3f} ns, memory {memory_ns:.3f} ns per element -> {roofline:.3f} ns")
print(f"np.exp yardstick: {np_exp_yardstick:.3f} ns per element")
print(f"package: {ns['package numba'] / roofline:.1f}x the roofline bound, "
      f"{ns['package numba'] / np_exp_yardstick:.2f}x the np.exp yardstick; "
      f"compiled serial vs NumPy {ns['numpy reference'] / ns['@njit serial']:.1f}x; "
      f"load average now {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")

fig, ax = plt.subplots(figsize=(7.5, 4.4))
names_bar = list(ns) + ["package numba, 1 thread"]
values = list(ns.values()) + [ns_one_thread]
bars = ax.barh(names_bar, values, color=["0.6", "C0", "C1", "C2", "C2"])
ax.axvline(roofline, color="red", ls="--", lw=1, label="roofline bound (fast_exp, FMA, bandwidth)")
ax.axvline(np_exp_yardstick, color="0.3", ls=":", lw=1, label="np.exp yardstick (not a bound)")
ax.legend(loc="upper center", bbox_to_anchor=(0.45, -0.2), ncol=2, fontsize=8)   # below the axes
for bar, v in zip(bars, values):
    ax.text(v * 1.1, bar.get_y() + bar.get_height() / 2, f"{v:.2f}", va="center", fontsize=9)
ax.set_xscale("log")
ax.set_xlim(min(roofline, np_exp_yardstick) / 2, max(values) * 8)   # room for the labels and the legend
ax.set_xlabel("ns per (b, t, d, n) element, forward pass (log scale; lower is better)")
ax.set_title(f"Scan forward, float32, b={BATCH} l={LENGTH} d={D_INNER} n={N_STATE}, {THREADS} threads "
             f"(load avg {os.getloadavg()[0]:.1f})", fontsize=10)
ax.invert_yaxis()
plt.tight_layout()
plt.show()

# %% [markdown]
# **Reading the figure.** These are this machine's numbers at the moment the notebook ran,
# with the load average in the title and beside every timing above (about 1 in the committed
# run: the notebook itself keeps a core busy). On a machine shared with other jobs (load
# average at or above the 2 cores) they are not meaningful: an earlier run at load average 4,
# without `tune_process`, had `prange` no faster than the serial loop and the package slower on
# 2 threads than on 1. That was the load and the spinning threads (below), not the method. What
# each comparison measures, and what bounds it:
# * compiled serial vs NumPy: the interpreter overhead and temporaries that the NumPy loop
#   pays at every step, against a compiled loop that still calls the library `exp` per
#   element;
# * `prange` vs serial, and the package on 2 threads vs 1: the gain from the cores, at most
#   their number (2 here), and only when they are free (a `prange` waits for its slowest
#   thread, so a parallel loop suffers more from a busy core than a serial one and can
#   even be slower under load). How the threads wait matters as much. Without the
#   `tune_process()` of the imports cell, OpenMP's default applies (a thread that finishes its
#   share spins for a while, then sleeps), and in a Jupyter kernel on this 2-core machine the
#   package's kernel took 0.85 ns per element on 2 threads against 0.46 on one, at load
#   average 1. With `OMP_WAIT_POLICY=PASSIVE` (sleep at once, what `tune_process` sets) it took
#   0.26, and 0.25 with `ACTIVE` (spin all the time); in a plain Python process the default
#   took 0.26 too. So it is the default's spin-then-sleep inside a Jupyter kernel that costs;
#   we measured it, we did not find out why. Under real load `PASSIVE` matters more: a thread
#   spinning on a shared core takes it from the thread it waits for (`runtime.py`);
# * the package vs `prange`: mostly the arithmetic `exp` (the exp table above shows the gap
#   between `math.exp` and `fast_exp` alone) and the loops vectorised over blocks of 32
#   channels;
# * the red line, the roofline bound: a kernel doing this work with `fast_exp` cannot go
#   below it (up to timing noise); the package's distance to it
#   is what could still be won (loads and stores, the loop structure, the checkpoints kept
#   for the backward);
# * the dotted line, the np.exp yardstick: a kernel using `fast_exp` can sit below it when
#   `fast_exp` is faster than NumPy's `np.exp` (as the exp table measured here); that is why
#   it is a yardstick and not a bound.
#
# ## Summary
# * `@njit` compiles the triple loop; `@njit(parallel=True)` with `prange` over
#   `(batch, channel)` spreads independent recurrences over cores; time stays a loop.
# * Each task needs private state; shared buffers are data races.
# * Inside Numba, `exp` is a library call per element; writing it as arithmetic (range
#   reduction + polynomial + exponent bits) lets LLVM vectorise it. You can check what was
#   compiled: `targetoptions`, the parfor diagnostics, `inspect_llvm`.
# * Measure in ns per element, print the load beside every timing, and compare with a bound
#   you can explain (the roofline bound), not only with a yardstick.
#
# **Next:** lesson 04, the parallel scan over time.
