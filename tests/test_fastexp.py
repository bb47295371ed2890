"""The vectorisable exp (and softplus's log1p) of the compiled kernels: accuracy over the float32 range."""
import math

import numpy as np
from numba import njit

from mamba_from_scratch.scan.fastexp import X_MAX, X_MIN, exp_reference, fast_exp, fast_exp_array, log1p_unit_array


def ulp_error(approx, x):
    """|approx - exp(x)| in units of the float32 spacing at exp(x) (exp(x) from float64)."""
    exact = np.exp(x.astype(np.float64))
    spacing = np.spacing(exact.astype(np.float32)).astype(np.float64)
    return np.abs(approx.astype(np.float64) - exact) / spacing


def test_accuracy_over_the_whole_normal_range():
    """Every output that is a normal float32 is within 2 ulp of the exact exp."""
    x = np.linspace(X_MIN, X_MAX, 4_000_001, dtype=np.float32)
    # The scan mostly sees delta * A in [-1e3, 0]: sample small magnitudes densely too.
    x = np.concatenate([x, -np.logspace(-30, 3, 200_001).astype(np.float32)])
    x = x[x >= X_MIN]
    approx = fast_exp_array(x)
    err = ulp_error(approx, x)
    assert err.max() <= 2.0, f"max ulp error {err.max():.2f}"
    exact = np.exp(x.astype(np.float64))
    assert np.max(np.abs(approx - exact) / exact) < 2.5e-7


def test_compiled_matches_numpy_reference():
    """The njit version and the readable NumPy version are the same algorithm (<= 1 ulp apart:
    the compiled one may fuse multiply-adds)."""
    x = np.random.default_rng(0).uniform(-100.0, 90.0, 200_000).astype(np.float32)
    a = fast_exp_array(x)
    r = exp_reference(x)
    both_finite = np.isfinite(r) & (r > 0)
    assert np.array_equal(np.isfinite(a), np.isfinite(r))
    assert np.array_equal(a == 0, r == 0)
    spacing = np.spacing(r[both_finite])
    assert np.max(np.abs(a[both_finite] - r[both_finite]) / spacing) <= 1.0


def test_exact_at_zero_and_clean_saturation():
    x = np.array([0.0, -0.0, X_MIN, -87.4, -88.0, -103.0, -1e3, -1e30, -3.4e38, X_MAX, 88.5, 1e30],
                 np.float32)
    y = fast_exp_array(x)
    assert y[0] == 1.0 and y[1] == 1.0                       # exactly 1: deltaA = 1 when delta*A = 0
    assert y[2] >= np.finfo(np.float32).tiny                  # smallest normal, not a denormal
    assert np.all(y[3:9] == 0.0)                              # clean underflow, no denormals
    assert np.isfinite(y[9]) and y[9] > 1e38
    assert np.all(np.isposinf(y[10:]))
    assert not np.any(np.isnan(y))


def test_no_nan_and_monotone_for_any_finite_input():
    rng = np.random.default_rng(1)
    x = np.sort(np.concatenate([rng.uniform(-1e4, 1e2, 100_000),
                                -np.logspace(-38, 38, 10_000)]).astype(np.float32))
    y = fast_exp_array(x)
    assert not np.any(np.isnan(y))
    assert np.all(y >= 0)
    assert np.all(y[1:] >= y[:-1])   # exp is increasing; so is the approximation, across range cuts


def test_float64_uses_libm():
    """float64 (gradient checks) keeps the correctly rounded-ish libm exp."""
    x = np.random.default_rng(2).uniform(-700, 700, 10_000)
    assert np.array_equal(fast_exp_array(x), np.array([math.exp(v) for v in x]))


def test_usable_from_any_njit_function():
    @njit
    def f(x32, x64):
        return fast_exp(x32), fast_exp(x64)

    a, b = f(np.float32(-1.5), -1.5)
    assert float(np.float32(a)) == a          # the float32 path ran (Numba boxes it as a float)
    assert abs(a - math.exp(-1.5)) < 2e-7 and b == math.exp(-1.5)


def test_log1p_unit_accuracy():
    """log1p on [0, 1] (softplus's log1p(exp(-|x|))): within 2 ulp for every e that fast_exp
    can return (0 or a normal float32), relative precision kept for tiny e, exact at 0."""
    e = np.concatenate([np.linspace(0, 1, 2_000_001), np.logspace(-37.9, 0, 200_001),
                        [0.0, np.finfo(np.float32).tiny, 1.0]]).astype(np.float32)
    got = log1p_unit_array(e).astype(np.float64)
    exact = np.log1p(e.astype(np.float64))
    assert got[-3] == 0.0 and got[-1] == np.float32(np.log(2.0))
    nz = e > 0
    ulps = np.abs(got - exact)[nz] / np.spacing(exact[nz].astype(np.float32)).astype(np.float64)
    assert ulps.max() <= 2.0, f"max ulp error {ulps.max():.2f}"
    e64 = e[nz].astype(np.float64)                                        # float64: libm's log1p
    assert np.max(np.abs(log1p_unit_array(e64) - np.log1p(e64)) / np.log1p(e64)) <= 2.3e-16
