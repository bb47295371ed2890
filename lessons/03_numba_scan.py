# %% [markdown]
# # 03 · Compiling the scan with Numba
#
# **Goal.** Take the selective scan from a NumPy loop to a compiled, multi-core kernel:
# `@njit`, then `@njit(parallel=True)` over channels; see what parallelises (channels) and
# what cannot (time); measure; find out why `exp` is the bottleneck inside Numba and what a
# vectorisable `exp` buys; compare with the machine's limit.
#
# **Prerequisites.** Lesson 01 (the recurrence) and lesson 04's point that time is
# sequential while channels are independent. No Numba experience needed.
#
# **Run time.** About 1 minute (15 seconds with `LESSONS_FAST=1`, mostly compilation).
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
REPEATS = 2 if FAST else 5                   # best-of for each timing

# %%
import math
import time

import matplotlib.pyplot as plt
import numba
import numpy as np
from numba import njit, prange

from mamba_from_scratch.scan import selective_scan_forward
from mamba_from_scratch.scan.fastexp import fast_exp_array

rng = np.random.default_rng(SEED)
plt.rcParams.update({"figure.dpi": 80, "axes.grid": True, "grid.alpha": 0.3})
print(f"Numba {numba.__version__}, {numba.config.NUMBA_NUM_THREADS} threads on {os.cpu_count()} cores")
# Timings mean little when other programs compete for the cores: report the load with them.
print("load average (1, 5, 15 min):", os.getloadavg())


def best_time(fn, repeats=REPEATS):
    """Best wall time of `repeats` calls (the first call may compile: call fn once before)."""
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best

# %% [markdown]
# ## 1. The idea in words
#
# The NumPy reference loops over time in Python and does all `(b, d_inner, n)` work of a
# step in one vectorised call. Each step pays microseconds of interpreter overhead and
# allocates temporaries. A compiled loop pays neither: Numba translates a Python function on
# NumPy arrays into machine code with LLVM, so a triple loop runs at C speed.
#
# Then we use the cores. Time cannot be split (`h_t` needs `h_{t-1}`), but every
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
                acc = np.float32(0)
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
ns = {"numpy reference": best_time(lambda: selective_scan_forward(*inputs, backend="numpy")) / elements * 1e9,
      "@njit serial": best_time(lambda: scan_njit(*inputs)) / elements * 1e9}
for k, v in ns.items():
    print(f"{k:>20}: {v:6.2f} ns / element")

# %% [markdown]
# ## 3. Version 2: parallel over (batch, channel)
#
# ### Exercise 1: `prange` over the pairs
# Write `scan_prange`, the same computation as `scan_njit` but with one flat
# `for task in prange(b * d):` loop over `(batch, channel)` pairs, `bi = task // d`,
# `di = task % d`. Each task needs its **own** state array (allocate it inside the loop:
# a shared `h` would be a data race between threads).

# %% tags=["exercise"]
@njit(parallel=True)
def scan_prange(u, delta, A, B, C, D):
    """Parallel compiled S6 (same shapes as scan_njit)."""
    raise NotImplementedError("Exercise 1: write scan_prange")

# %% tags=["solution"]
@njit(parallel=True)
def scan_prange(u, delta, A, B, C, D):
    """Parallel compiled S6 (same shapes as scan_njit)."""
    b, l, d = u.shape
    n = A.shape[1]
    y = np.empty_like(u)
    for task in prange(b * d):
        bi, di = task // d, task % d
        h = np.zeros(n, u.dtype)                 # private to this task
        for t in range(l):
            dlt = delta[bi, t, di]
            acc = np.float32(0)
            for i in range(n):
                h[i] = math.exp(dlt * A[di, i]) * h[i] + dlt * B[bi, t, i] * u[bi, t, di]
                acc += C[bi, t, i] * h[i]
            y[bi, t, di] = acc + D[di] * u[bi, t, di]
    return y

# %% tags=["check"]
small = random_inputs(np.random.default_rng(1), 2, 9, 5, 3)
y_small, _, _ = selective_scan_forward(*small, backend="numpy")
assert np.allclose(scan_prange(*small), y_small, rtol=1e-4, atol=1e-5), "scan_prange disagrees with the reference"
assert np.allclose(scan_prange(*inputs), y_ref, rtol=1e-4, atol=1e-4)
print("exercise 1 passed: scan_prange == reference")

# %%
ns["@njit(parallel) prange"] = best_time(lambda: scan_prange(*inputs)) / elements * 1e9
print(f"{'@njit(parallel) prange':>20}: {ns['@njit(parallel) prange']:6.2f} ns / element")

# %% [markdown]
# ## 4. Why `exp` is the bottleneck
#
# Every element needs one `exp(Δ A)`. Inside an `@njit` loop, `math.exp` (and `np.exp` on a
# scalar) becomes one call to the C library's scalar `exp` per element. NumPy's own
# `np.exp` on a whole array uses SIMD code that does 8 or 16 at once. Let us time both, and
# the package's `fast_exp`: the same algorithm as a good libm (range reduction
# `x = k ln 2 + r`, a short polynomial for `e^r`, then `2^k` from the exponent bits), but
# written as plain branch-free arithmetic that LLVM can vectorise inside the loop.

# %%
@njit
def exp_loop(x):
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        out[i] = math.exp(x[i])
    return out


x_exp = -rng.uniform(0, 20, EXP_SIZE).astype(np.float32)
exp_loop(x_exp[:10])
fast_exp_array(x_exp[:10])
exp_ns = {"NumPy np.exp (SIMD)": best_time(lambda: np.exp(x_exp)) / EXP_SIZE * 1e9,
          "Numba loop, math.exp": best_time(lambda: exp_loop(x_exp)) / EXP_SIZE * 1e9,
          "Numba loop, fast_exp": best_time(lambda: fast_exp_array(x_exp)) / EXP_SIZE * 1e9}
for k, v in exp_ns.items():
    print(f"{k:>22}: {v:5.2f} ns / exp")
rel = np.abs(fast_exp_array(x_exp) / np.exp(x_exp.astype(np.float64)) - 1).max()
print(f"fast_exp largest relative error vs float64 exp: {rel:.1e} (float32 epsilon is {np.finfo(np.float32).eps:.1e})")
assert rel < 1e-6

# %% [markdown]
# ### Exercise 2: exp by range reduction
# Write the idea in NumPy, in float64: `exp_range_reduced(x)` computes `k = round(x / ln 2)`,
# `r = x - k ln 2` (so `|r| ≤ ln(2)/2`), approximates `e^r` by its Taylor series up to
# `r^12 / 12!`, and returns `np.ldexp(e^r, k)` (that is, `e^r · 2^k`). The check asks for a
# relative error below `1e-13` on `[-80, 0]`.

# %% tags=["exercise"]
def exp_range_reduced(x):
    """exp(x) for a float64 array via x = k ln2 + r and a Taylor polynomial for e^r.

    Args:
        x: float64 array.
    Returns:
        array of the same shape.
    """
    raise NotImplementedError("Exercise 2: write exp_range_reduced")

# %% tags=["solution"]
def exp_range_reduced(x):
    """exp(x) via range reduction (see the exercise)."""
    k = np.round(x / math.log(2.0))
    r = x - k * math.log(2.0)                       # |r| <= ln(2)/2 ~ 0.35
    e_r = np.ones_like(r)
    for j in range(12, 0, -1):                      # Horner: 1 + r/1 (1 + r/2 (1 + ... ))
        e_r = 1.0 + r / j * e_r
    return np.ldexp(e_r, k.astype(int))

# %% tags=["check"]
x_chk = np.linspace(-80.0, 0.0, 10_001)
got = exp_range_reduced(x_chk)
assert got.shape == x_chk.shape
assert np.max(np.abs(got / np.exp(x_chk) - 1)) < 1e-13
assert exp_range_reduced(np.array([0.0]))[0] == 1.0
print("exercise 2 passed: relative error", np.max(np.abs(got / np.exp(x_chk) - 1)))

# %% [markdown]
# ## 5. The package's kernel, and the machine's limit
#
# The package's `"numba"` backend (`scan/cpu.py`) combines the three ideas: `prange` over
# `(batch, channel)`, the state in a small local array with the loop over `n` written so it
# vectorises, and `fast_exp`. (It also keeps only one state every 32 steps for the
# backward; see lesson 02.) A useful limit for this machine: the scan cannot beat the time
# of its exps spread over all threads, even with everything else free.

# %%
selective_scan_forward(*random_inputs(rng, 1, 4, 2, N_STATE), backend="numba")  # compile (or load the cache)
y_pkg, _, _ = selective_scan_forward(*inputs, backend="numba")
assert np.allclose(y_pkg, y_ref, rtol=1e-4, atol=1e-4)
ns["package numba"] = best_time(lambda: selective_scan_forward(*inputs, backend="numba")) / elements * 1e9
threads = numba.config.NUMBA_NUM_THREADS
numba.set_num_threads(1)
ns_one_thread = best_time(lambda: selective_scan_forward(*inputs, backend="numba")) / elements * 1e9
numba.set_num_threads(threads)
limit = exp_ns["Numba loop, fast_exp"] / threads
for k, v in ns.items():
    print(f"{k:>24}: {v:7.3f} ns / element")
print(f"{'package, 1 thread':>24}: {ns_one_thread:7.3f} ns / element")
print(f"{'limit: fast_exp / threads':>24}: {limit:7.3f} ns / element")
print(f"speed-ups: compiled serial vs NumPy {ns['numpy reference'] / ns['@njit serial']:.1f}x, "
      f"package vs compiled serial {ns['@njit serial'] / ns['package numba']:.1f}x; "
      f"package is {ns['package numba'] / limit:.0f}x the exp-only limit; "
      f"load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")

fig, ax = plt.subplots(figsize=(7.5, 3.8))
names = list(ns) + ["package, 1 thread"]
values = list(ns.values()) + [ns_one_thread]
bars = ax.barh(names, values, color=["0.6", "C0", "C1", "C2", "C2"])
ax.axvline(limit, color="red", ls="--", lw=1, label="limit: the exps alone, all threads")
ax.legend(loc="lower right", fontsize=9)
for bar, v in zip(bars, values):
    ax.text(v * 1.1, bar.get_y() + bar.get_height() / 2, f"{v:.2f}", va="center", fontsize=9)
ax.set_xscale("log")
ax.set_xlim(limit / 2, max(values) * 6)  # room on the right for the labels and the legend
ax.set_xlabel("ns per (b, t, d, n) element, forward pass (log scale; lower is better)")
ax.set_title(f"Scan forward, float32, b={BATCH} l={LENGTH} d={D_INNER} n={N_STATE}, {threads} threads "
             f"(load avg {os.getloadavg()[0]:.1f})", fontsize=10)
ax.invert_yaxis()
plt.tight_layout()
plt.show()

# %% [markdown]
# **Reading the figure.** These are this machine's numbers at the moment the notebook ran;
# rerun to get yours. What to look for:
# * compiled serial vs NumPy: the interpreter overhead and temporaries of the NumPy loop;
# * `prange` vs serial: at most the number of cores, and much less when the cores are busy
#   with other programs (a `prange` waits for its slowest thread, so a parallel loop suffers
#   more from a loaded machine than a serial one; compare "package, 1 thread");
# * the package vs `prange`: mostly the vectorisable `exp` (the exp table above shows the
#   gap between `math.exp` and `fast_exp` alone);
# * the red line: the time of the exps alone, spread over all threads. The distance
#   between it and the package is everything else: loads and stores of `u, Δ, B, C, y`, the
#   multiply-adds, and the checkpoints kept for the backward.
#
# On 2 cores the remaining factor can only come from doing less work or moving less
# memory; more parallel hardware is the other way out (lesson 05).
#
# ## Summary
# * `@njit` compiles the triple loop; `@njit(parallel=True)` with `prange` over
#   `(batch, channel)` spreads independent recurrences over cores; time stays a loop.
# * Each task needs private state; shared buffers are data races.
# * Inside Numba, `exp` is a scalar library call per element; writing it as branch-free
#   arithmetic (range reduction + polynomial) lets LLVM vectorise it.
# * Measure in ns per element and compare with a limit you can explain.
#
# **Next:** lesson 04, the parallel scan over time.
