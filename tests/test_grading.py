"""mamba_from_scratch/grading.py: the lessons' method checks find a call of the package's answer
and tell a loop from an array operation."""
import functools

import numpy as np

from mamba_from_scratch.grading import code_names, package_calls, python_lines
from mamba_from_scratch.layers import silu_forward


def own_silu(x):
    return x / (1 + np.exp(-x))


def wrapper_silu(x):
    return silu_forward(x)[0]


def via_helper(x):
    return wrapper_silu(x)


def imports_inside(x):
    from mamba_from_scratch.layers import silu_forward as f
    return f(x)[0]


def looped(x):
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        out[i] = x[i] * 2
    return out


def test_package_calls_finds_direct_nested_and_imported_calls():
    assert package_calls(own_silu) == set()
    assert package_calls(wrapper_silu) == {"silu_forward"}
    assert package_calls(via_helper) == {"silu_forward"}              # followed through a helper
    assert package_calls(via_helper, allowed=("wrapper_silu",)) == set()
    assert "mamba_from_scratch.layers" in package_calls(imports_inside)
    assert package_calls(functools.wraps(wrapper_silu)(lambda x: wrapper_silu(x))) == {"silu_forward"}


def test_python_lines_counts_loop_bodies_not_array_sizes():
    _, small = python_lines(own_silu, np.ones(2))
    _, big = python_lines(own_silu, np.ones(200))
    assert small == big > 0
    out, loop_small = python_lines(looped, np.ones(2))
    _, loop_big = python_lines(looped, np.ones(20))
    assert np.array_equal(out, [2.0, 2.0]) and loop_big - loop_small == 2 * 18   # two lines per element


def inverts(a):
    return [np.linalg.inv(m) for m in a]              # the name sits in the comprehension's code


def test_code_names_sees_nested_code_and_unwraps():
    assert {"np", "linalg", "inv"} <= code_names(inverts)
    assert "inv" not in code_names(own_silu)
    assert "wrapper_silu" in code_names(functools.wraps(via_helper)(lambda x: 0)) - code_names(own_silu)
