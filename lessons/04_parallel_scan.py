# %% [markdown]
# # 04 · The parallel (associative) scan
#
# **Goal.** See why a recurrence that looks hopelessly sequential (`h_t` needs `h_{t-1}`)
# can run in `O(log l)` parallel steps: write it as a prefix "sum" under an associative
# operator, implement the Hillis–Steele and Blelloch scans in NumPy, count their work and
# depth, see that lesson 02's adjoint is the same scan run backwards, and find out when a
# parallel scan pays (a GPU) and when it does not (a 2-core CPU).
#
# **Prerequisites.** Lesson 01 (the recurrence `h_t = Ā_t h_{t-1} + B̄_t u_t`) and lesson 02
# (its adjoint `δ_t = c_t g_t + a_{t+1} δ_{t+1}`). Helpful: the idea of a prefix sum (`np.cumsum`).
#
# **Run time.** About 20 seconds (measured 15–20 s at load average 5 on 2 cores; about 1 s of
# compute with `LESSONS_FAST=1`); most of it is timing.
#
# **Exercises.** 04.1 the operator `∘`; 04.2 the Hillis–Steele scan; 04.3 Blelloch's
# work-efficient scan; 04.4 the adjoint as a reversed scan. The scans receive the operator as
# an argument, so the checks hand them a counting operator: they verify the number of
# rounds and of combines (the *method*), not only the result, against frozen reference
# states written by `lessons/_data/make_04.py` from the package's selective scan.
#
# **You will use** `mamba_from_scratch.scan.selective_scan_forward` / `selective_scan_backward`
# (backend `"numpy"`), outside the graded checks, to compare with.

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

from mamba_from_scratch.scan import selective_scan_backward, selective_scan_forward

rng = np.random.default_rng(SEED)
_passed = {}                     # exercise id -> True once its check passed (read by the fallbacks)
REF = np.load("_data/04_scan.npz")   # frozen states of the package's scan (lessons/_data/make_04.py)
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
# | work | | | total number of pairs combined by `∘` |
# | depth | | | number of rounds, when each round's `∘` run in parallel |
#
# Note the order matters: `∘` is associative but **not** commutative.
#
# ### Exercise 04.1: the operator
# Write `combine(first, second)` for pairs of arrays. It must work elementwise, so that one
# call combines many pairs at once: `first = (a1, b1)` and `second = (a2, b2)` hold arrays
# of one shape (or shapes that broadcast), and the result is the pair of arrays of `first`
# followed by `second`. The check tests associativity, the order, the identity and values.

# %% tags=["solution"]
def combine(first, second):
    """Compose two affine maps h -> a h + b: apply `first`, then `second`.

    Args:
        first: pair (a1, b1) of arrays of one shape (...).
        second: pair (a2, b2) of arrays broadcastable with the first.
    Returns:
        The pair (a, b) of the composition h -> a2 (a1 h + b1) + b2, arrays of shape (...).
    """
    ### BEGIN SOLUTION
    a1, b1 = first
    a2, b2 = second
    return a1 * a2, a2 * b1 + b2
    ### END SOLUTION

# %% tags=["check", "points=1"]
_passed["04.1"] = False
chk_rng = np.random.default_rng(41)
e = [(chk_rng.uniform(0.1, 1, (3, 4)), chk_rng.standard_normal((3, 4))) for _ in range(3)]


def as_pair(res, shape):
    """The result as two float arrays of the expected shape (a helpful message otherwise)."""
    assert isinstance(res, (tuple, list)) and len(res) == 2, "return a pair (a, b)"
    a_, b_ = (np.asarray(x, dtype=float) for x in res)
    assert a_.shape == shape and b_.shape == shape, f"both entries must have shape {shape}, got {a_.shape}, {b_.shape}"
    return a_, b_


a01, b01 = as_pair(combine(e[0], e[1]), (3, 4))
assert np.allclose(a01, e[0][0] * e[1][0], rtol=1e-12, atol=0), "the decays multiply"
h_chk = chk_rng.standard_normal((3, 4))
assert np.allclose(a01 * h_chk + b01, e[1][0] * (e[0][0] * h_chk + e[0][1]) + e[1][1], rtol=1e-12, atol=1e-14), \
    "apply e0 first, then e1: a1 h + b1 goes into the second map"
left = as_pair(combine(combine(e[0], e[1]), e[2]), (3, 4))
right = as_pair(combine(e[0], combine(e[1], e[2])), (3, 4))
assert all(np.allclose(x, y, rtol=1e-12, atol=1e-14) for x, y in zip(left, right)), "∘ must be associative"
### BEGIN HIDDEN TESTS
ident = as_pair(combine((np.ones((3, 4)), np.zeros((3, 4))), e[2]), (3, 4))
assert all(np.allclose(x, y, rtol=1e-14, atol=0) for x, y in zip(ident, e[2])), "(1, 0) first is the identity"
ident = as_pair(combine(e[2], (np.ones((3, 4)), np.zeros((3, 4)))), (3, 4))
assert all(np.allclose(x, y, rtol=1e-14, atol=0) for x, y in zip(ident, e[2])), "(1, 0) second is the identity"
a_s, b_s = as_pair(combine((np.array([[0.5]]), np.array([[2.0]])), (np.array([[3.0]]), np.array([[-1.0]]))), (1, 1))
assert a_s[0, 0] == 1.5 and b_s[0, 0] == 5.0, "(0.5, 2) then (3, -1): h -> 3 (0.5 h + 2) - 1 = 1.5 h + 5"
### END HIDDEN TESTS
_passed["04.1"] = True
print("exercise 04.1 passed: associative, in the right order, with identity (1, 0)")

# %% tags=["fallback"]
if not _passed["04.1"]:
    def combine(first, second):
        """Stand-in for exercise 04.1: the reference operator."""
        return first[0] * second[0], second[0] * first[1] + second[1]
    print("exercise 04.1 not solved yet: the rest of the lesson uses the reference operator")

# %% [markdown]
# ## 3. The sequential scan
#
# The smallest implementation: `l - 1` combines, one after the other. Work `l`, depth `l`.
# It is vectorised over the trailing axes (independent scans: batch × channels × state). Like
# every scan below, it receives the operator as an argument: the same code then scans any
# associative operator (a prefix sum, a running max, a product of matrices, ...).

# %%
def sequential_scan(a, b, op=combine):
    """Inclusive scan along axis 0, one step at a time.

    Args:
        a, b: (l, ...) the pairs to scan.  op: the associative operator on pairs.
    Returns:
        (A_pre, h): (l, ...) each, the inclusive prefixes e_1 ∘ ... ∘ e_t.
    """
    A_pre, h = np.empty_like(a), np.empty_like(b)
    A_pre[0], h[0] = a[0], b[0]
    for t in range(1, len(a)):
        A_pre[t], h[t] = op((A_pre[t - 1], h[t - 1]), (a[t], b[t]))
    return A_pre, h


A_seq, h_seq = sequential_scan(REF["s_a"], REF["s_b"])
assert np.allclose(h_seq, REF["s_h"], rtol=1e-12, atol=1e-14)
print("sequential scan == the package's states (frozen), max |diff| =", np.abs(h_seq - REF["s_h"]).max())

# %% [markdown]
# ## 4. Hillis–Steele: depth `log₂ l`, work `l log₂ l`
#
# The simplest parallel scan (Hillis & Steele 1986). In round `k = 0, 1, 2, …` **every**
# position `t ≥ 2^k` combines the value at `t - 2^k` (first) with its own (second), all at
# once, using the values from before the round, until `2^k ≥ l`. After round `k`, position
# `t` holds `e_{t-2^{k+1}+1} ∘ … ∘ e_t`: the window doubles each round.
#
# ### Exercise 04.2: the Hillis–Steele scan
# Write `hillis_steele_scan(a, b, op)`: inclusive, along axis 0, with exactly one call of
# `op` per round (the call combines all the positions of that round as whole arrays). The
# check passes an `op` that counts its calls (the depth, which must be `ceil(log₂ l)`) and
# the pairs it combines (the work, which must be `Σ_k (l - 2^k)`), and a second associative
# operator (the same maps with the decay stored as a logarithm) to make sure yours only
# uses `op`.

# %% tags=["solution"]
def hillis_steele_scan(a, b, op):
    """Inclusive scan along axis 0 in ceil(log2 l) rounds, one call of op per round.

    Args:
        a, b: (l, ...) the pairs to scan (not modified).  op: associative operator on pairs of arrays.
    Returns:
        (A_pre, h): (l, ...) each, the inclusive prefixes.
    """
    ### BEGIN SOLUTION
    xa, xb = a.copy(), b.copy()
    offset = 1
    while offset < len(a):
        # The right-hand side is evaluated from the old values before the assignment.
        xa[offset:], xb[offset:] = op((xa[:-offset], xb[:-offset]), (xa[offset:], xb[offset:]))
        offset *= 2
    return xa, xb
    ### END SOLUTION

# %% tags=["check", "points=2"]
_passed["04.2"] = False


def _affine(first, second):
    """Reference operator of the checks: (a1, b1) then (a2, b2)."""
    return first[0] * second[0], second[0] * first[1] + second[1]


def _log_affine(first, second):
    """The same maps with the decay stored as its logarithm: (α1, b1) then (α2, b2)."""
    return first[0] + second[0], np.exp(second[0]) * first[1] + second[1]


class CountingOp:
    """Wraps an operator; counts calls (rounds) and pairs combined (work) along axis 0."""

    def __init__(self, op, channels):
        self.op, self.channels, self.calls, self.work = op, channels, 0, 0

    def __call__(self, first, second):
        self.calls += 1
        self.work += np.broadcast(np.asarray(first[0]), np.asarray(second[0])).size // self.channels
        return self.op(first, second)


def check_states(res, key, log_space):
    """Compare a scan's (A_pre, h) with the frozen states of problem `key`."""
    l, c = REF[f"{key}_a"].shape
    a_, h_ = as_pair(res, (l, c))
    a_exp = np.cumsum(REF[f"{key}_loga"], axis=0) if log_space else REF[f"{key}_Apre"]
    assert np.allclose(a_, a_exp, rtol=1e-10, atol=1e-14), f"l = {l}: the cumulative decay (first entry) is wrong"
    assert np.allclose(h_, REF[f"{key}_h"], rtol=1e-10, atol=1e-14), f"l = {l}: the states (second entry) are wrong"


def run_counted(scan, key, log_space=False, **kw):
    """Run `scan` on frozen problem `key` with a counting operator; returns (result, op)."""
    a_in = REF[f"{key}_loga"] if log_space else REF[f"{key}_a"]
    op = CountingOp(_log_affine if log_space else _affine, a_in.shape[1])
    res = scan(a_in.copy(), REF[f"{key}_b"].copy(), op, **kw)
    return res, op


for key in ("s", "p"):
    res, op = run_counted(hillis_steele_scan, key)
    check_states(res, key, log_space=False)
    l = REF[f"{key}_a"].shape[0]
    rounds = int(np.ceil(np.log2(l)))
    assert op.calls == rounds, f"l = {l}: {op.calls} calls of op, Hillis-Steele takes ceil(log2 l) = {rounds} rounds"
    work = sum(l - 2 ** k for k in range(rounds))
    assert op.work == work, f"l = {l}: {op.work} pairs combined, Hillis-Steele combines sum_k (l - 2^k) = {work}"
### BEGIN HIDDEN TESTS
res, op = run_counted(hillis_steele_scan, "q", log_space=True)
check_states(res, "q", log_space=True)
assert op.calls == 4 and op.work == 13 - 1 + 13 - 2 + 13 - 4 + 13 - 8, "l = 13, log-space operator"
one = hillis_steele_scan(REF["q_a"][:1].copy(), REF["q_b"][:1].copy(), _affine)
assert all(np.allclose(x, y, rtol=1e-14, atol=0) for x, y in zip(as_pair(one, (1, 3)), (REF["q_a"][:1], REF["q_b"][:1]))), \
    "l = 1: the scan of one element is that element"
### END HIDDEN TESTS
_passed["04.2"] = True
print("exercise 04.2 passed: Hillis-Steele == the frozen states, ceil(log2 l) rounds, work sum_k (l - 2^k)")

# %% tags=["fallback"]
if not _passed["04.2"]:
    hillis_steele_scan = sequential_scan
    print("exercise 04.2 not solved yet: the rest of the lesson uses the sequential scan in its place "
          "(its counts in the figure below are then those of the sequential scan)")

# %% [markdown]
# ## 5. Blelloch's work-efficient scan
#
# Hillis–Steele does `l log₂ l` combines where the sequential scan does `l`: with few
# processors that is a loss. Blelloch (1990) keeps the work linear with two sweeps over a
# balanced binary tree, on an array padded with the identity `(1, 0)` to a power of two
# `size ≥ l`:
#
# * **up-sweep** (a reduction): for `stride = 1, 2, 4, …, size/2`, every block of
#   `2·stride` elements combines its left half's total (at index `left = stride - 1` of the
#   block, first) with its right half's total (at `right = 2·stride - 1`, second) into the
#   right slot. After `log₂ size` levels the last slot holds the total `e_1 ∘ … ∘ e_size`.
# * **down-sweep**: remember the total, set the root to the identity, then for
#   `stride = size/2, …, 2, 1`: each node at `right` holds its *exclusive* prefix `P`; it
#   hands `P` to its left child (slot `left`) and `P ∘ (left child's total)` to its right
#   child (slot `right`). Afterwards slot `t` holds the exclusive prefix `e_1 ∘ … ∘ e_{t-1}`.
# * **inclusive, for free**: the inclusive prefix at `t` is the exclusive prefix at `t + 1`,
#   and the last one is the total you remembered, so no extra combine is needed.
#
# Each level is **one** call of `op` on strided slices (`xa[stride-1::2*stride]` and
# `xa[2*stride-1::2*stride]`): the "processors" are the elements of that slice.
#
# ### Exercise 04.3: Blelloch's scan
# Write `blelloch_scan(a, b, op, identity)`. The check counts: at most `2 log₂ size`
# calls of `op` (one per level of the two sweeps) and at most `2 size` pairs combined
# (`≤ 2l` for a power of two), so neither the sequential loop (depth `l`) nor Hillis–Steele
# (work `l log₂ l`) passes; and the result must match the frozen states, with the affine
# operator and with its log-space version (identity `(0, 0)`).

# %% tags=["solution"]
def blelloch_scan(a, b, op, identity=(1.0, 0.0)):
    """Inclusive scan along axis 0 with Blelloch's up-sweep / down-sweep.

    Args:
        a, b: (l, ...) the pairs to scan (not modified).  op: associative operator on pairs of arrays.
        identity: the pair (a, b) with op(identity, e) == e, used to pad to a power of two.
    Returns:
        (A_pre, h): (l, ...) each, the inclusive prefixes, from at most 2 log2(size) calls of op
        that combine at most 2 size pairs in all (size = the next power of two >= l).
    """
    ### BEGIN SOLUTION
    l = len(a)
    size = 1 << max(0, (l - 1).bit_length())                 # next power of two
    pad = [(0, size - l)] + [(0, 0)] * (a.ndim - 1)
    xa = np.pad(a, pad, constant_values=identity[0])          # (size, ...)
    xb = np.pad(b, pad, constant_values=identity[1])

    stride = 1
    while stride < size:                                      # up-sweep
        right = slice(2 * stride - 1, size, 2 * stride)       # last slot of each block
        left = slice(stride - 1, size, 2 * stride)            # last slot of its left half
        xa[right], xb[right] = op((xa[left], xb[left]), (xa[right], xb[right]))
        stride *= 2

    total = (xa[-1].copy(), xb[-1].copy())                    # e_1 ∘ ... ∘ e_size
    xa[-1], xb[-1] = identity                                 # root: the empty prefix
    stride = size // 2
    while stride >= 1:                                        # down-sweep
        right = slice(2 * stride - 1, size, 2 * stride)
        left = slice(stride - 1, size, 2 * stride)
        left_total = (xa[left].copy(), xb[left].copy())
        xa[left], xb[left] = xa[right], xb[right]             # left child: parent's prefix P
        xa[right], xb[right] = op((xa[right], xb[right]), left_total)  # right: P ∘ left
        stride //= 2

    # Slot t holds e_1 ∘ ... ∘ e_{t-1}; shifting by one gives the inclusive prefixes.
    A_pre = np.concatenate([xa[1:], total[0][None]])[:l]
    h = np.concatenate([xb[1:], total[1][None]])[:l]
    return A_pre, h
    ### END SOLUTION

# %% tags=["check", "points=4"]
_passed["04.3"] = False
for key in ("s", "p"):
    l = REF[f"{key}_a"].shape[0]
    size = 1 << (l - 1).bit_length()
    res, op = run_counted(blelloch_scan, key)
    check_states(res, key, log_space=False)
    assert op.calls <= 2 * np.log2(size), \
        f"l = {l}: {op.calls} calls of op; the two sweeps take 2 log2(size) = {2 * int(np.log2(size))} rounds"
    assert l - 1 <= op.work <= 2 * size, \
        f"l = {l}: {op.work} pairs combined; Blelloch combines at most 2 size = {2 * size} (and a scan needs l - 1)"
### BEGIN HIDDEN TESTS
res, op = run_counted(blelloch_scan, "q", log_space=True, identity=(0.0, 0.0))
check_states(res, "q", log_space=True)
assert op.calls <= 8 and 12 <= op.work <= 32, f"l = 13, log-space operator: {op.calls} calls, work {op.work}"
res, op = run_counted(blelloch_scan, "p", log_space=True, identity=(0.0, 0.0))
check_states(res, "p", log_space=True)
assert op.calls <= 12 and op.work <= 128, "l = 64 is a power of two: work <= 2 l"
one = blelloch_scan(REF["q_a"][:1].copy(), REF["q_b"][:1].copy(), _affine)
assert all(np.allclose(x, y, rtol=1e-14, atol=0) for x, y in zip(as_pair(one, (1, 3)), (REF["q_a"][:1], REF["q_b"][:1]))), \
    "l = 1: the scan of one element is that element"
### END HIDDEN TESTS
_passed["04.3"] = True
print("exercise 04.3 passed: Blelloch == the frozen states, with logarithmic depth and linear work")

# %% tags=["fallback"]
if not _passed["04.3"]:
    def blelloch_scan(a, b, op, identity=(1.0, 0.0)):
        """Stand-in for exercise 04.3: the sequential scan (its counts are then those of a sequential scan)."""
        return sequential_scan(a, b, op)
    print("exercise 04.3 not solved yet: the rest of the lesson uses the sequential scan in its place")

# %% [markdown]
# A quick look at the structure on `l = 8` with a counting operator: the sizes of the six
# calls are the tree's levels, `4, 2, 1` going up and `1, 2, 4` coming down.

# %%
class SizeLog:
    """An operator that records how many pairs each call combines."""

    def __init__(self):
        self.sizes = []

    def __call__(self, first, second):
        self.sizes.append(np.broadcast(first[0], second[0]).size)
        return combine(first, second)


log_op = SizeLog()
blelloch_scan(np.full(8, 0.9), np.ones(8), log_op)
print("pairs combined per call of op, l = 8:", log_op.sizes)

# %% [markdown]
# ## 6. Lesson 02's adjoint is the same scan, run backwards
#
# Lesson 02 found the gradient of a loss `L` with respect to the states by a recurrence that
# runs from the end of the sequence to the start:
#
# $$\delta_t = c_t g_t + a_{t+1}\,\delta_{t+1}, \qquad \delta_{l+1} = 0 .$$
#
# Read it with time reversed, `s = l - t`: `δ'_s = a'_s δ'_{s-1} + b'_s` with
# `b'_s = c_{l-s} g_{l-s}` and `a'_s = a_{l-s+1}` (and `a'_0` multiplies `δ'_{-1} = 0`, so any
# value does). That is the forward recurrence again: the backward pass is one more scan with
# the same operator, on reversed and shifted inputs, so everything above (Blelloch's depth
# `2 log₂ l`, the GPU kernel of lesson 05) applies to training too. The official CUDA
# kernel's backward runs exactly such a reversed block-wide scan.
#
# ### Exercise 04.4: the adjoint by a scan
# Write `adjoint_by_scan(a, cg, scan)`: given `a` (the decays `a_1..a_l`) and `cg` (the
# products `c_t g_t`), both `(l, c)`, return `δ` `(l, c)` with **one** call of
# `scan(a', b')`, which returns the inclusive prefixes `(A_pre, h)` of its inputs (no loop
# over time in your code). The check passes a scan that counts its calls, compares `δ` with the
# adjoint read from the package's backward (frozen), and passes a scan whose states are all
# doubled: your `δ` must double with them (it must be the scan's result, not computed beside it).

# %% tags=["solution"]
def adjoint_by_scan(a, cg, scan):
    """The adjoint delta_t = cg_t + a_{t+1} delta_{t+1} (delta_{l+1} = 0) by one reversed scan.

    Args:
        a: (l, c) decays a_1..a_l.  cg: (l, c) the products c_t g_t.
        scan: a function scan(a, b) -> (A_pre, h) of (l, c) arrays, the inclusive prefixes.
    Returns:
        delta: (l, c), the gradient of L with respect to h_t (and to b_t).
    """
    ### BEGIN SOLUTION
    a_rev = np.concatenate([np.ones_like(a[:1]), a[1:][::-1]])   # a'_s = a_{l-s+1}; a'_0 is unused
    _, h_rev = scan(a_rev, cg[::-1].copy())                       # (l, c): delta in reversed time
    return h_rev[::-1].copy()
    ### END SOLUTION

# %% tags=["check", "points=2"]
_passed["04.4"] = False


def counted_scan(calls):
    """A reference inclusive scan (sequential, affine) that appends the shape of each call to `calls`."""
    def scan(a_, b_):
        calls.append(np.shape(a_))
        return sequential_scan(np.asarray(a_, dtype=float), np.asarray(b_, dtype=float), _affine)
    return scan


for key in ("s", "p"):
    l, c = REF[f"{key}_a"].shape
    calls = []
    adj = np.asarray(adjoint_by_scan(REF[f"{key}_a"].copy(), REF[f"{key}_g"].copy(), counted_scan(calls)), dtype=float)
    assert len(calls) == 1 and calls[0] == (l, c), f"call scan exactly once, on (l, c) arrays; calls: {calls}"
    assert adj.shape == (l, c), f"delta must have shape {(l, c)}, got {adj.shape}"
    assert np.allclose(adj, REF[f"{key}_adj"], rtol=1e-10, atol=1e-13), f"l = {l}: delta differs from the package's adjoint"
# The method: delta must come out of the scan. A scan that returns every state doubled must give
# a doubled delta (a loop that computes delta itself and calls scan for show would not).
doubled = lambda a_, b_: (lambda r: (r[0], 2.0 * r[1]))(counted_scan([])(a_, b_))
adj2 = np.asarray(adjoint_by_scan(REF["s_a"].copy(), REF["s_g"].copy(), doubled), dtype=float)
assert np.allclose(adj2, 2.0 * REF["s_adj"], rtol=1e-10, atol=1e-13), \
    "delta must be read from the scan's result: with a scan whose states are doubled, delta must double"
### BEGIN HIDDEN TESTS
calls = []
adj = np.asarray(adjoint_by_scan(REF["q_a"].copy(), REF["q_g"].copy(), counted_scan(calls)), dtype=float)
assert len(calls) == 1 and adj.shape == (13, 3) and np.allclose(adj, REF["q_adj"], rtol=1e-10, atol=1e-13), "l = 13"
calls = []
last = np.asarray(adjoint_by_scan(REF["q_a"][:1].copy(), REF["q_g"][:1].copy(), counted_scan(calls)), dtype=float)
assert last.shape == (1, 3) and np.allclose(last, REF["q_g"][:1], rtol=1e-14, atol=0), "l = 1: delta_1 = c_1 g_1"
### END HIDDEN TESTS
_passed["04.4"] = True
print("exercise 04.4 passed: the adjoint is one reversed scan")

# %% tags=["fallback"]
if not _passed["04.4"]:
    def adjoint_by_scan(a, cg, scan):
        """Stand-in for exercise 04.4: the adjoint recurrence of lesson 02, run as a loop."""
        delta = np.empty_like(cg)
        delta[-1] = cg[-1]
        for t in range(len(cg) - 2, -1, -1):
            delta[t] = cg[t] + a[t + 1] * delta[t + 1]
        return delta
    print("exercise 04.4 not solved yet: the rest of the lesson uses lesson 02's loop in its place")

# %% [markdown]
# With Blelloch as the scan, the whole backward of a long scan has logarithmic depth. Compare
# with the package's backward on a fresh problem (`n = 1, B = C = 1, D = 0`, so that
# `du_t = Δ_t δ_t`): not graded, just the two ways side by side.

# %%
l_adj, c_adj = 50, 4
u_adj = rng.standard_normal((1, l_adj, c_adj))
delta_adj = np.log1p(np.exp(rng.standard_normal((1, l_adj, c_adj))))
A_adj = -np.exp(rng.standard_normal((c_adj, 1)))
ones_adj = np.ones((1, l_adj, 1))
_, _, cache_adj = selective_scan_forward(u_adj, delta_adj, A_adj, ones_adj, ones_adj, np.zeros(c_adj), backend="numpy")
g_adj = rng.standard_normal((1, l_adj, c_adj))
du_pkg = selective_scan_backward(g_adj, cache_adj)[0]
a_adj = np.exp(delta_adj[0] * A_adj[:, 0])                                   # (l, c)
adj_par = adjoint_by_scan(a_adj, g_adj[0], lambda a_, b_: blelloch_scan(a_, b_, combine))
print("reversed Blelloch scan vs package backward: max |diff| =",
      np.abs(adj_par * delta_adj[0] - du_pkg[0]).max())

# %% [markdown]
# ## 7. The package's selective scan, computed in parallel
#
# Build `a = exp(Δ A)` and `b = Δ B u` for every (batch, channel, state), scan them along
# time with Blelloch, read out `y_t = C_t · h_t + D u_t`, and compare with the package.

# %%
def selective_scan_blelloch(u, delta, A, B, C, D):
    """S6 forward via the parallel scan.  Shapes as in the package: u, delta (b, l, d), A (d, n), B, C (b, l, n)."""
    deltaA = np.exp(delta[..., None] * A)                         # (b, l, d, n)
    deltaB_u = delta[..., None] * B[:, :, None, :] * u[..., None]  # (b, l, d, n)
    _, h = blelloch_scan(deltaA.swapaxes(0, 1), deltaB_u.swapaxes(0, 1), combine)  # time first: (l, b, d, n)
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
# ## 8. Work vs depth
#
# Count the combines with a counting operator. The sequential scan has work = depth =
# `l - 1`. Blelloch has depth `2 log₂ l` and work `2(l - 1)` for a power of two: a constant
# times the sequential work, which makes it *work-efficient*. Hillis–Steele has depth
# `log₂ l` but work `l log₂ l`.

# %%
class Counter:
    """An affine operator that counts its calls (depth) and the pairs it combines (work)."""

    def __init__(self):
        self.calls, self.work = 0, 0

    def __call__(self, first, second):
        self.calls += 1
        self.work += np.broadcast(first[0], second[0]).size
        return combine(first, second)


lengths = 2 ** np.arange(4, 13 if FAST else 17)
counts = {"sequential": [], "Hillis–Steele": [], "Blelloch": []}
for l_ in lengths:
    ones, zeros = np.ones(l_), np.zeros(l_)
    for name, scan in [("sequential", sequential_scan), ("Hillis–Steele", hillis_steele_scan),
                       ("Blelloch", blelloch_scan)]:
        cnt = Counter()
        scan(ones, zeros, cnt)
        counts[name].append({"work": cnt.work, "depth": cnt.calls})
print(f"l = {lengths[-1]}:", {name: c[-1] for name, c in counts.items()})
if _passed["04.3"]:                                                        # (the fallback is sequential)
    assert counts["Blelloch"][-1]["work"] == 2 * (lengths[-1] - 1)         # linear work
    assert counts["Blelloch"][-1]["depth"] == 2 * np.log2(lengths[-1])     # logarithmic depth

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
# ## 9. When does it pay? Brent's bound and a measurement
#
# With `P` processors an algorithm of work `W` and depth `S` takes about `W / P + S` rounds
# (Brent's theorem). For one long scan, sequential costs `l`, Blelloch about `2l / P + 2 log₂ l`.
#
# * **A 2-core CPU**: `2l / 2 = l`: no gain before any overhead, and each round has overheads (synchronisation,
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
def best_time(fn, *args, repeats=REPEATS):
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(*args)
        best = min(best, time.perf_counter() - t0)
    return best


timings = {}
for ch in TIME_CHANNELS:
    for l_ in TIME_LENGTHS:
        a_t = rng.uniform(0.9, 1.0, (l_, ch))
        b_t = rng.standard_normal((l_, ch))
        timings[("sequential", ch, l_)] = best_time(sequential_scan, a_t, b_t)
        timings[("Blelloch", ch, l_)] = best_time(blelloch_scan, a_t, b_t, combine)
        print(f"channels {ch:5d}  l {l_:6d}   sequential {timings[('sequential', ch, l_)] * 1e3:8.2f} ms"
              f"   Blelloch {timings[('Blelloch', ch, l_)] * 1e3:8.2f} ms   (load average {os.getloadavg()[0]:.1f})")

fig, axes = plt.subplots(1, len(TIME_CHANNELS), figsize=(10, 3.8), sharey=True)
for ax, ch in zip(axes, TIME_CHANNELS):
    for name, style in [("sequential", "k-o"), ("Blelloch", "C0-s")]:
        ax.loglog(TIME_LENGTHS, [timings[(name, ch, l_)] * 1e3 for l_ in TIME_LENGTHS], style, label=name, ms=4)
    ax.set_title(f"{ch} independent scans side by side" if ch > 1 else "one scan")
    ax.set_xlabel("sequence length l")
    ax.legend(fontsize=9)
axes[0].set_ylabel("time (ms), best of runs")
fig.suptitle(f"NumPy scans on this machine ({os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f})",
             fontsize=11)
plt.tight_layout()
plt.show()

# %% [markdown]
# **Reading the figure** (the numbers are this machine's; rerun to get yours). With one
# scan, the Python loop pays its per-step overhead `l` times while Blelloch pays it
# `2 log₂ l` times, so Blelloch wins by a wide margin: here NumPy's vectorisation plays the
# role of the many parallel processors. With many scans side by side, every step of the
# sequential loop already does a lot of useful vectorised work, the overhead is amortised,
# and the order flips: Blelloch's twofold work and strided memory access make it several
# times slower.
# A compiled loop (lesson 03) removes the overhead altogether, and then on a 2-core CPU
# the sequential scan over time, parallel over channels, is the right design.
#
# ## Summary
# * One step of the scan is an affine map; `(a, b) ∘ (a', b') = (a a', a' b + b')` composes
#   them, and associativity is all a parallel prefix scan needs.
# * Blelloch: work `2(l - 1)`, depth `2 log₂ l` (`l` a power of two). Hillis–Steele: work `l log₂ l`, depth `log₂ l`.
#   Sequential: work = depth = `l - 1`.
# * The backward pass (lesson 02's adjoint) is the same scan on reversed inputs.
# * Time ≈ work / P + depth: parallel scans pay with many processors (a GPU), not with two
#   cores that already have thousands of independent channels to share.
#
# **Next:** lesson 05 runs the scan on a GPU with `numba.cuda`.
