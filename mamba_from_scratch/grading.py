"""What the lessons' graded checks use to tell how an answer was computed (lessons/_tools/AUTHORING.md).

A check compares the student's function with finite differences or frozen arrays; these
helpers check the *method* too: :func:`package_calls` finds a call of the package's own answer
(a one-line wrapper must not pass), :func:`code_names` lists the names a function refers to (no
``inv``, a call of your own ``encode_paired``), :func:`python_lines` counts the Python lines a
call runs (a loop over an axis runs its body once per element, an array operation once). Tests:
tests/test_grading.py and every lesson's checks (tests/test_lessons.py).
"""
from __future__ import annotations

import sys
import types

__all__ = ["code_names", "package_calls", "python_lines"]

PACKAGE = __name__.split(".")[0]   # "mamba_from_scratch"


def _unwrap(f):
    """Past a functools.wraps wrapper and a numba dispatcher, to the Python function."""
    f = getattr(f, "__wrapped__", f)
    return getattr(f, "py_func", f)


def code_names(f):
    """The global and attribute names f's code refers to, nested code (comprehensions, inner
    functions) included: ``np.linalg.inv(a)`` gives {"np", "linalg", "inv"}. For checks on
    names outside the package ("no inverse", "uses your encode_paired"); for the package's own
    functions use :func:`package_calls`, which also follows the notebook's helpers."""
    todo, names = [_unwrap(f).__code__], set()
    while todo:
        code = todo.pop()
        names |= set(code.co_names)
        todo += [k for k in code.co_consts if isinstance(k, types.CodeType)]
    return names


def package_calls(*functions, allowed=()):
    """The mamba_from_scratch functions, classes and modules that `functions` use: by name, by an
    import inside them, or through functions of the same namespace (a notebook's own helpers)
    that they call (followed, except the names in `allowed`). A check uses it to tell code the
    student wrote from a call of the package's answer."""
    found, seen, todo = set(), set(), list(functions)
    while todo:
        f = _unwrap(todo.pop())
        code = getattr(f, "__code__", None)
        if code is None or code in seen:
            continue
        seen.add(code)
        codes = [code]
        while codes:                                  # the function's code and the code nested in it
            c = codes.pop()
            codes += [k for k in c.co_consts if isinstance(k, types.CodeType)]
            found |= {k for k in c.co_consts if isinstance(k, str) and k.split(".")[0] == PACKAGE}
            for name in set(c.co_names) - set(allowed):
                obj = f.__globals__.get(name)
                origin = obj.__name__ if isinstance(obj, types.ModuleType) else getattr(obj, "__module__", None)
                if name.split(".")[0] == PACKAGE or (callable(obj) or isinstance(obj, types.ModuleType)) \
                        and str(origin).split(".")[0] == PACKAGE:
                    found.add(name)
                elif callable(obj) and getattr(_unwrap(obj), "__globals__", None) is f.__globals__:
                    todo.append(obj)
    return found


def python_lines(f, *args, **kwargs):
    """Call f(*args, **kwargs) and count the Python lines that code of f's own namespace (the
    notebook that defined it) runs meanwhile: returns (result, lines). An array operation is one
    line whatever its size; a Python loop over an axis runs its body once per element, so the
    count tells a vectorised function from a loop."""
    namespace, lines = _unwrap(f).__globals__, [0]

    def count(frame, event, arg):
        lines[0] += event == "line"
        return count

    previous = sys.gettrace()
    sys.settrace(lambda frame, event, arg: count if frame.f_globals is namespace else None)
    try:
        result = f(*args, **kwargs)
    finally:
        sys.settrace(previous)
    return result, lines[0]
