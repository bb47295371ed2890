# %% [markdown]
# # 04 · The parallel (associative) scan
#
# **Goal.** See why a recurrence that looks hopelessly sequential (`h_t` needs `h_{t-1}`)
# can run in `O(log l)` parallel steps: write it as a prefix "sum" under an associative
# operator, implement Blelloch's scan in NumPy, count its work and depth, and find out
# when it pays (a GPU) and when it does not (a 2-core CPU).
#
# **Prerequisites.** Lesson 01 (the recurrence `h_t = Ā_t h_{t-1} + B̄_t u_t`). Helpful: the
# idea of a prefix sum (`np.cumsum`).
#
# **Run time.** About 30 seconds (3 seconds with `LESSONS_FAST=1`); most of it is timing.
#
# **You will use** `mamba_from_scratch.scan.selective_scan_forward` (backend `"numpy"`) as
# the reference the parallel scan must reproduce.

# %% tags=["parameters"]
import os

FAST = os.environ.get("LESSONS_FAST", "0") == "1"  # CI sets LESSONS_FAST=1 to shrink every size
SEED = 0
L_CHECK = 37 if FAST else 200                          # a length that is not a power of two
TIME_LENGTHS = [64, 256, 1024] if FAST else [64, 256, 1024, 4096, 16384]
TIME_CHANNELS = [1, 256] if FAST else [1, 1024]        # independent scans run side by side
REPEATS = 1 if FAST else 3                             # best-of for each timing

# %%
import time

import matplotlib.pyplot as plt
import numpy as np

from mamba_from_scratch.scan import selective_scan_forward

rng = np.random.default_rng(SEED)
plt.rcParams.update({"figure.dpi": 80, "axes.grid": True, "grid.alpha": 0.3})

# %% [markdown]
# ## 1. The idea in words
#
# Each step of the scan is an **affine map** of the state: `f_t(h) = a_t h + b_t`, with
# `a_t = exp(Δ_t A)` and `b_t = Δ_t B_t u_t`. The state after `t` steps is the composition
# `h_t = f_t(f_{t-1}(… f_1(h_0)))`. Composing two affine maps gives another affine map, and
# composition is **associative**: we may group `f_4∘f_3∘f_2∘f_1` as `(f_4∘f_3)∘(f_2∘f_1)` and
# compute both halves at the same time. That is all a parallel scan needs: the same trick
# that computes a prefix sum in `log₂ l` rounds of pairwise additions.
#
# ## 2. The operator
#
# Represent `f(h) = a h + b` by the pair `(a, b)`. Applying `(a, b)` first and `(a', b')`
# second gives `a'(a h + b) + b' = (a a') h + (a' b + b')`:
#
# $$(a, b) \circ (a', b') = (a\,a',\; a'\,b + b'), \qquad \text{identity } (1, 0).$$
#
# The inclusive prefix `E_t = e_1 ∘ e_2 ∘ … ∘ e_t` is the pair `(Π_{s≤t} a_s, h_t)`: its second
# entry is exactly the state started from `h_0 = 0` (from any `h_0`: `h_t = E_t.a · h_0 + E_t.b`).
#
# | symbol | code | shape | meaning |
# |---|---|---|---|
# | `a_t` | `a` | `(l, …)` | decay `exp(Δ_t A)`, one per step and independent scan |
# | `b_t` | `b` | `(l, …)` | input `Δ_t B_t u_t` |
# | `∘` | `combine(first, second)` | | "apply `first`, then `second`" |
# | `E_t` | `(A_pre, h)` | `(l, …)` | inclusive prefix: cumulative decay, state |
# | work | | | total number of `∘` evaluated |
# | depth | | | number of rounds, when each round's `∘` run in parallel |
#
# Note the order matters: `∘` is associative but **not** commutative.
#
# ### Exercise 1: the operator
# Write `combine(first, second)` for pairs of arrays (it must work elementwise, so that one
# call combines many pairs at once).

# %% tags=["exercise"]
def combine(first, second):
    """Compose two affine maps h -> a h + b: apply `first`, then `second`.

    Args:
        first, second: pairs (a, b) of arrays of the same (broadcastable) shape.
    Returns:
        The pair (a, b) of the composition.
    """
    raise NotImplementedError("Exercise 1: write combine")

# %% tags=["solution"]
def combine(first, second):
    """Compose two affine maps h -> a h + b: apply `first`, then `second` (see the exercise)."""
    a1, b1 = first
    a2, b2 = second
    return a1 * a2, a2 * b1 + b2

# %% tags=["check"]
e = [(rng.uniform(0.1, 1, 5), rng.standard_normal(5)) for _ in range(3)]
left = combine(combine(e[0], e[1]), e[2])
right = combine(e[0], combine(e[1], e[2]))
assert all(np.allclose(x, y) for x, y in zip(left, right)), "∘ must be associative"
h = rng.standard_normal(5)
a12, b12 = combine(e[0], e[1])
assert np.allclose(a12 * h + b12, e[1][0] * (e[0][0] * h + e[0][1]) + e[1][1]), "first e0, then e1"
assert all(np.allclose(x, y) for x, y in zip(combine((np.ones(5), np.zeros(5)), e[2]), e[2])), "identity"
print("exercise 1 passed: associative, in the right order, with identity (1, 0)")

# %% [markdown]
# ## 3. The sequential scan
#
# The smallest implementation: `l - 1` combines, one after the other. Work `l`, depth `l`.
# It is vectorised over the trailing axes (independent scans: batch × channels × state).

# %%
def sequential_scan(a, b):
    """Inclusive scan along axis 0.  a, b: (l, ...).  Returns (A_pre, h), each (l, ...)."""
    A_pre, h = np.empty_like(a), np.empty_like(b)
    A_pre[0], h[0] = a[0], b[0]
    for t in range(1, len(a)):
        A_pre[t], h[t] = combine((A_pre[t - 1], h[t - 1]), (a[t], b[t]))
    return A_pre, h

# %% [markdown]
# ## 4. Blelloch's work-efficient scan
#
# Blelloch (1990) scans a power-of-two array in two sweeps over a balanced binary tree:
#
# * **up-sweep** (a reduction): at level `d`, every block of `2^{d+1}` elements combines its
#   left half's total into its last slot; after `log₂ l` levels the last slot holds the total.
# * **down-sweep**: clear the root to the identity, then walk back down; each node hands
#   its *exclusive* prefix `P` to its left child and `P ∘ (left child's total)` to its right
#   child. After `log₂ l` levels, slot `t` holds `e_1 ∘ … ∘ e_{t-1}`; one more `∘ e_t` makes
#   it inclusive.
#
# Each level is one vectorised NumPy operation on a strided slice: the "processors" are the
# elements of that slice. Lengths that are not a power of two are padded with the identity.

# %%
def blelloch_scan(a, b, counter=None):
    """Inclusive scan along axis 0 with Blelloch's up-sweep / down-sweep.

    Args:
        a, b: (l, ...) pairs to scan.  counter: optional dict; gets "work" (number of ∘)
            and "depth" (number of rounds) added to it.
    Returns:
        (A_pre, h): (l, ...) inclusive prefixes.
    """
    l = len(a)
    size = 1 << max(0, (l - 1).bit_length())                 # next power of two
    pad = [(0, size - l)] + [(0, 0)] * (a.ndim - 1)
    xa = np.pad(a, pad, constant_values=1.0)                  # identity (1, 0) as padding
    xb = np.pad(b, pad, constant_values=0.0)
    counter = {} if counter is None else counter
    counter.setdefault("work", 0)
    counter.setdefault("depth", 0)

    stride = 1
    while stride < size:                                      # up-sweep
        right = slice(2 * stride - 1, size, 2 * stride)       # last slot of each block
        left = slice(stride - 1, size, 2 * stride)            # last slot of its left half
        xa[right], xb[right] = combine((xa[left], xb[left]), (xa[right], xb[right]))
        counter["work"] += len(range(size)[right])
        counter["depth"] += 1
        stride *= 2

    xa[-1], xb[-1] = 1.0, 0.0                                 # root: the empty prefix
    stride = size // 2
    while stride >= 1:                                        # down-sweep
        right = slice(2 * stride - 1, size, 2 * stride)
        left = slice(stride - 1, size, 2 * stride)
        left_total = (xa[left].copy(), xb[left].copy())
        xa[left], xb[left] = xa[right], xb[right]             # left child: parent's prefix P
        xa[right], xb[right] = combine((xa[right], xb[right]), left_total)  # right: P ∘ left
        counter["work"] += len(range(size)[right])
        counter["depth"] += 1
        stride //= 2

    A_pre, h = combine((xa[:l], xb[:l]), (a, b))              # exclusive -> inclusive
    counter["work"] += l
    counter["depth"] += 1
    return A_pre, h


a = rng.uniform(0.5, 1.0, (L_CHECK, 3))
b = rng.standard_normal((L_CHECK, 3))
for x, y in zip(blelloch_scan(a, b), sequential_scan(a, b)):
    assert np.allclose(x, y)
print(f"Blelloch == sequential for l = {L_CHECK}")

# %% [markdown]
# ## 5. The package's selective scan, computed in parallel
#
# Build `a = exp(Δ A)` and `b = Δ B u` for every (batch, channel, state), scan them along
# time with Blelloch, read out `y_t = C_t · h_t + D u_t`, and compare with the package.

# %%
def selective_scan_blelloch(u, delta, A, B, C, D):
    """S6 forward via the parallel scan.  Shapes as in the package: u, delta (b, l, d), A (d, n), B, C (b, l, n)."""
    deltaA = np.exp(delta[..., None] * A)                         # (b, l, d, n)
    deltaB_u = delta[..., None] * B[:, :, None, :] * u[..., None]  # (b, l, d, n)
    _, h = blelloch_scan(deltaA.swapaxes(0, 1), deltaB_u.swapaxes(0, 1))  # time first: (l, b, d, n)
    y = np.einsum("lbdn,bln->bld", h, C)                          # (b, l, d)
    return y + D * u


bsz, d_inner, n = 2, 3, 4
u = rng.standard_normal((bsz, L_CHECK, d_inner))
delta = np.log1p(np.exp(rng.standard_normal((bsz, L_CHECK, d_inner))))
A = -np.exp(rng.standard_normal((d_inner, n)))
B = rng.standard_normal((bsz, L_CHECK, n))
C = rng.standard_normal((bsz, L_CHECK, n))
D = rng.standard_normal(d_inner)
y_par = selective_scan_blelloch(u, delta, A, B, C, D)
y_ref, _, _ = selective_scan_forward(u, delta, A, B, C, D, backend="numpy")
assert np.allclose(y_par, y_ref, rtol=1e-10, atol=1e-12)
print("parallel scan == package scan; max |diff| =", np.abs(y_par - y_ref).max())

# %% [markdown]
# The results agree to round-off, not bit for bit: the parallel scan adds the same terms in
# a different order (floating-point addition is not associative, even though `∘` is).
#
# ## 6. Work vs depth
#
# Count the combines. The sequential scan has work = depth = `l - 1`. Blelloch has depth
# `2 log₂ l + 1` and work about `3 l` (`2 l` for the two sweeps, `l` more to turn the
# exclusive prefix into the inclusive one): a constant times the sequential work, which
# makes it *work-efficient*. The simpler **Hillis–Steele** scan (exercise 2) has depth `log₂ l` but work
# `l log₂ l`.
#
# ### Exercise 2: the Hillis–Steele scan
# In round `k = 0, 1, 2, …` every position `t ≥ 2^k` combines with position `t - 2^k`, all
# at once (using the values from before the round), until `2^k ≥ l`. Write
# `hillis_steele_scan(a, b, counter)` (inclusive, along axis 0, adding `work` and
# `depth` to `counter` like `blelloch_scan`).

# %% tags=["exercise"]
def hillis_steele_scan(a, b, counter=None):
    """Inclusive scan along axis 0 in ceil(log2 l) rounds.

    Args:
        a, b: (l, ...).  counter: optional dict to add "work" and "depth" to.
    Returns:
        (A_pre, h): (l, ...).
    """
    raise NotImplementedError("Exercise 2: write hillis_steele_scan")

# %% tags=["solution"]
def hillis_steele_scan(a, b, counter=None):
    """Inclusive scan along axis 0 in ceil(log2 l) rounds (see the exercise)."""
    counter = {} if counter is None else counter
    counter.setdefault("work", 0)
    counter.setdefault("depth", 0)
    xa, xb = a.copy(), b.copy()
    offset = 1
    while offset < len(a):
        # The right-hand side is evaluated from the old values before the assignment.
        xa[offset:], xb[offset:] = combine((xa[:-offset], xb[:-offset]), (xa[offset:], xb[offset:]))
        counter["work"] += len(a) - offset
        counter["depth"] += 1
        offset *= 2
    return xa, xb

# %% tags=["check"]
for l_chk in (1, 2, 5, 16, 37):
    a_chk, b_chk = rng.uniform(0.5, 1.0, (l_chk, 2)), rng.standard_normal((l_chk, 2))
    cnt = {}
    got = hillis_steele_scan(a_chk, b_chk, cnt)
    assert all(np.allclose(x, y) for x, y in zip(got, sequential_scan(a_chk, b_chk))), f"l={l_chk}"
    assert cnt["depth"] == int(np.ceil(np.log2(l_chk))), f"l={l_chk}: depth {cnt['depth']}"
print("exercise 2 passed: Hillis-Steele == sequential with depth ceil(log2 l)")

# %%
lengths = 2 ** np.arange(4, 17)
counts = {"sequential": [], "Hillis–Steele": [], "Blelloch": []}
for l_ in lengths:
    ones, zeros = np.ones(l_), np.zeros(l_)
    counts["sequential"].append({"work": l_ - 1, "depth": l_ - 1})
    for name, scan in [("Hillis–Steele", hillis_steele_scan), ("Blelloch", blelloch_scan)]:
        cnt = {}
        scan(ones, zeros, cnt)
        counts[name].append(cnt)
assert counts["Blelloch"][-1]["work"] <= 3 * lengths[-1]       # linear work
assert counts["Blelloch"][-1]["depth"] == 2 * 16 + 1           # logarithmic depth

fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
for name, style in zip(counts, ["k-", "C1s-", "C0o-"]):
    axes[0].loglog(lengths, [c["work"] for c in counts[name]], style, label=name, ms=4)
    axes[1].loglog(lengths, [c["depth"] for c in counts[name]], style, label=name, ms=4)
axes[0].set_title("work: total combines (what the hardware pays)")
axes[1].set_title("depth: rounds (time with unlimited processors)")
for ax in axes:
    ax.set_xlabel("sequence length l")
    ax.legend(fontsize=9)
axes[0].set_ylabel("number of ∘")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 7. When does it pay? Brent's bound and a measurement
#
# With `P` processors an algorithm of work `W` and depth `S` takes about `W / P + S` rounds
# (Brent's theorem). For one long scan, sequential costs `l`, Blelloch about `3l / P + 2 log₂ l`.
#
# * **A 2-core CPU**: `3l / 2 > l`: a loss before any overhead, and each round has overheads (synchronisation,
#   strided memory access). Worse, Mamba never runs *one* scan: it runs
#   `b × d_inner × n` independent ones (e.g. `8 × 1536 × 16 ≈ 200 000`), far more than two
#   cores can use. So the CPU backend (lesson 03) parallelises over channels and keeps the
#   sequential loop in time: it has the least work.
# * **A GPU** has thousands of threads, and on-chip memory is small and fast. The official
#   CUDA kernel gives each (batch, channel) to a thread block and splits *time* among the
#   block's threads with a block-wide parallel scan using exactly this operator: each
#   thread reads a contiguous piece of the sequence, the state stays on chip, and the depth
#   is `log` in the chunk length. Lesson 05 builds a kernel in that spirit.
#
# Let us measure our two NumPy versions on this machine, for one scan and for many side by
# side. NumPy adds a twist: each Python-level step costs microseconds of interpreter
# overhead, so a loop of `l` tiny steps is "sequential" in a way a compiled loop is not.

# %%
def best_time(fn, repeats=REPEATS):
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


timings = {}
for ch in TIME_CHANNELS:
    for l_ in TIME_LENGTHS:
        a_t = rng.uniform(0.9, 1.0, (l_, ch))
        b_t = rng.standard_normal((l_, ch))
        timings[("sequential", ch, l_)] = best_time(lambda: sequential_scan(a_t, b_t))
        timings[("Blelloch", ch, l_)] = best_time(lambda: blelloch_scan(a_t, b_t))
        print(f"channels {ch:5d}  l {l_:6d}   sequential {timings[('sequential', ch, l_)] * 1e3:8.2f} ms"
              f"   Blelloch {timings[('Blelloch', ch, l_)] * 1e3:8.2f} ms")

fig, axes = plt.subplots(1, len(TIME_CHANNELS), figsize=(10, 3.8), sharey=True)
for ax, ch in zip(axes, TIME_CHANNELS):
    for name, style in [("sequential", "k-o"), ("Blelloch", "C0-s")]:
        ax.loglog(TIME_LENGTHS, [timings[(name, ch, l_)] * 1e3 for l_ in TIME_LENGTHS], style, label=name, ms=4)
    ax.set_title(f"{ch} independent scans side by side" if ch > 1 else "one scan")
    ax.set_xlabel("sequence length l")
    ax.legend(fontsize=9)
axes[0].set_ylabel("time (ms), best of runs")
fig.suptitle(f"NumPy scans on this machine ({os.cpu_count()} cores)", fontsize=11)
plt.tight_layout()
plt.show()

# %% [markdown]
# **Reading the figure** (the numbers are this machine's; rerun to get yours). With one
# scan, the Python loop pays its per-step overhead `l` times while Blelloch pays it
# `2 log₂ l` times, so Blelloch wins by a wide margin: here NumPy's vectorisation plays the
# role of the many parallel processors. With many scans side by side, every step of the
# sequential loop already does a lot of useful vectorised work, the overhead is amortised,
# and the order flips: Blelloch's threefold work and strided memory access make it several
# times slower.
# A compiled loop (lesson 03) removes the overhead altogether, and then on a 2-core CPU
# the sequential scan over time, parallel over channels, is the right design.
#
# ## Summary
# * One step of the scan is an affine map; `(a, b) ∘ (a', b') = (a a', a' b + b')` composes
#   them, and associativity is all a parallel prefix scan needs.
# * Blelloch: work `≈ 3l`, depth `≈ 2 log₂ l`. Hillis–Steele: work `l log₂ l`, depth `log₂ l`.
#   Sequential: work = depth = `l`.
# * Time ≈ work / P + depth: parallel scans pay with many processors (a GPU), not with two
#   cores that already have thousands of independent channels to share.
#
# **Next:** lesson 05 runs the scan on a GPU with `numba.cuda`.
