"""Build, check, release and grade the lesson notebooks (the course machinery).

Each lesson is a pair: ``lessons/NN_title.py`` (jupytext percent format, the reviewed
source) and ``lessons/NN_title.ipynb`` (the same cells, committed with their outputs and
with nbgrader's cell metadata). The authoring rules are in ``lessons/_tools/AUTHORING.md``.

Cell tags this tool understands (on code cells):
    parameters    sizes and the fast switch (``LESSONS_FAST=1`` shrinks every size for CI)
    solution      functions whose ``### BEGIN SOLUTION`` / ``### END SOLUTION`` regions the
                  student writes; nbgrader replaces each region by a stub in the release
    check         the graded test of the solution cell before it; needs ``points=N`` (1..5)
                  and at least one ``### BEGIN HIDDEN TESTS`` / ``### END HIDDEN TESTS`` block
    mutants=a+b   (check cells) the output mutants that apply: scale, zeros, transpose
    fallback      right after a check: puts a reference in place when the check failed

Commands (run from the repository root):
    python lessons/_tools/notebooks.py build [NAMES...]          re-sync pairs, execute in full mode
    python lessons/_tools/notebooks.py check                      pairs in sync and well formed
    python lessons/_tools/notebooks.py roundtrip [NAMES...]       stub / mutants / solution, fast mode
    python lessons/_tools/notebooks.py assignments [NAMES...]     nbgrader release in build/assignments/
    python lessons/_tools/notebooks.py grade SUBMISSIONS          nbgrader autograde + score table
"""
from __future__ import annotations

import argparse
import ast
import copy
import csv
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

LESSONS_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = LESSONS_DIR.parent
DATA_DIR = LESSONS_DIR / "_data"
COURSE_ID = "mamba_from_scratch"
LESSON_GLOB = "[0-9][0-9]*_*.py"            # 00_tour.py ... 06b_training_loop.py ... 11_outliers.py
LESSON_RE = re.compile(r"^(\d\d[a-z]?)_\w+$")
MUTANTS = ("scale", "zeros", "transpose")   # the output mutants every check must catch
MAX_POINTS = 5
BEGIN_SOLUTION, END_SOLUTION = "### BEGIN SOLUTION", "### END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
# nbgrader's own stub for a solution region (ClearSolutions.code_stub for python).
CODE_STUB = "# YOUR CODE HERE\nraise NotImplementedError()"
# A failing check may fail by an assert or by calling the stub; any other error is a bug.
EXPECTED_STUDENT_ERRORS = ("AssertionError", "NotImplementedError")
PARAMETERS_LINE = 'FAST = os.environ.get("LESSONS_FAST", "0") == "1"'


# ---------------------------------------------------------------------------------------------
# Parsing the tag scheme
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Exercise:
    """One graded exercise of a lesson.

    Attributes:
        id: "NN.k", k counted from 1 in the order of the check cells (e.g. "06b.2").
        solution, check: cell indices of the solution cell and of its check cell.
        fallback: cell index of the fallback cell, or None when the lesson does not need one.
        points: the check cell's points (1..MAX_POINTS).
        mutants: the mutant names the check must catch (a subset of MUTANTS).
        functions: the plain functions of the solution cell that the check exercises.
    """
    id: str
    solution: int
    check: int
    fallback: int | None
    points: int
    mutants: tuple[str, ...]
    functions: tuple[str, ...]

    def grade_id(self, role: str) -> str:
        """nbgrader's id of one of the exercise's cells, e.g. "ex02_1-check" (nbgrader allows
        only letters, digits, "_" and "-" in a grade_id, so the "." of "02.1" becomes "_")."""
        return f"ex{self.id.replace('.', '_')}-{role}"


def exercise_of_grade_id(grade_id: str) -> str:
    """"ex02_1-check" -> "02.1"."""
    return grade_id[2:].rsplit("-", 1)[0].replace("_", ".")


def lesson_sources(names=None) -> list[Path]:
    """The lesson ``.py`` files in order, optionally only those whose stem starts with a name."""
    paths = sorted(p for p in LESSONS_DIR.glob(LESSON_GLOB) if LESSON_RE.match(p.stem))
    if names:
        paths = [p for p in paths if any(p.stem.startswith(n) for n in names)]
    return paths


def lesson_number(stem: str) -> str:
    """"06b_training_loop" -> "06b"."""
    m = LESSON_RE.match(stem)
    if not m:
        raise ValueError(f"lesson name {stem!r}: expected NN_title or NNx_title (e.g. 06b_training_loop)")
    return m.group(1)


def tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def _balanced_regions(source: str, begin: str, end: str) -> int:
    """Number of begin/end regions in ``source``; ValueError if they nest or do not close."""
    n, inside = 0, False
    for line in source.split("\n"):
        if begin in line:
            if inside:
                raise ValueError(f"nested {begin!r}")
            inside, n = True, n + 1
        elif end in line:
            if not inside:
                raise ValueError(f"{end!r} without a {begin!r} before it")
            inside = False
    if inside:
        raise ValueError(f"{begin!r} without a matching {end!r}")
    return n


def _is_plain(fn: ast.FunctionDef) -> bool:
    """A function without decorators (numba @njit / cuda.jit kernels are not wrapped)."""
    return not fn.decorator_list


def exercised_functions(source: str) -> tuple[str, ...]:
    """The plain top-level functions of a solution cell that the check exercises.

    Those containing a ``### BEGIN SOLUTION`` region; when the regions all sit in decorated
    kernels (numba), the plain host functions of the cell that launch them.
    """
    tree = ast.parse(source)
    lines = source.split("\n")
    plain = [n for n in tree.body if isinstance(n, ast.FunctionDef) and _is_plain(n)]
    with_region = [n.name for n in plain
                   if any(BEGIN_SOLUTION in line for line in lines[n.lineno - 1:n.end_lineno])]
    return tuple(with_region or [n.name for n in plain])


def _tag_value(cell_tags, key: str) -> list[str]:
    return [t.split("=", 1)[1] for t in cell_tags if t.startswith(key + "=")]


def exercises(nb, lesson: str = "00") -> list[Exercise]:
    """Parse the exercises of a lesson notebook; ValueError naming the cell if malformed.

    Args:
        nb: the notebook (read by jupytext from the ``.py`` or from the ``.ipynb``).
        lesson: the lesson number ("02", "06b") used in the exercise ids.
    Returns:
        the exercises in order.

    The pattern is solution -> check -> optional fallback, with only markdown cells allowed
    between the solution and its check, and the fallback directly after its check.
    """
    where = f"lesson {lesson}"
    out: list[Exercise] = []
    pending = None          # (solution index, functions) waiting for its check
    last_check = None       # (exercise, index) of the last check, for a fallback right after it
    for i, cell in enumerate(nb.cells):
        t = tags(cell)
        src = cell.source
        if "exercise" in t:
            raise ValueError(f"{where}, cell {i}: the 'exercise' tag is gone; merge the stub into the "
                             "solution cell with ### BEGIN/END SOLUTION markers (lessons/_tools/AUTHORING.md)")
        roles = [r for r in ("solution", "check", "fallback") if r in t]
        if len(roles) > 1:
            raise ValueError(f"{where}, cell {i}: one of solution/check/fallback per cell, got {roles}")
        role = roles[0] if roles else None
        if roles and cell.cell_type != "code":
            raise ValueError(f"{where}, cell {i}: a {role!r} cell must be a code cell")
        if role != "check" and (_tag_value(t, "points") or _tag_value(t, "mutants")):
            raise ValueError(f"{where}, cell {i}: points=/mutants= tags go on check cells only")
        if cell.cell_type == "code":
            try:
                n_sol = _balanced_regions(src, BEGIN_SOLUTION, END_SOLUTION)
                n_hid = _balanced_regions(src, BEGIN_HIDDEN, END_HIDDEN)
            except ValueError as err:
                raise ValueError(f"{where}, cell {i}: {err}") from None
            if n_sol and role != "solution":
                raise ValueError(f"{where}, cell {i}: {BEGIN_SOLUTION!r} is only allowed in a cell tagged 'solution'")
            if n_hid and role != "check":
                raise ValueError(f"{where}, cell {i}: {BEGIN_HIDDEN!r} is only allowed in a cell tagged 'check'")
        if role is None:
            if cell.cell_type == "code" and pending is not None:
                raise ValueError(f"{where}, cell {i}: a code cell between the solution cell {pending[0]} and its "
                                 "check; only markdown may sit between them")
            if cell.cell_type == "code":
                last_check = None
            continue
        if role == "solution":
            if pending is not None:
                raise ValueError(f"{where}, cell {i}: a second solution cell before the check of solution cell "
                                 f"{pending[0]}")
            if not n_sol:
                raise ValueError(f"{where}, cell {i}: a solution cell needs a {BEGIN_SOLUTION!r} / "
                                 f"{END_SOLUTION!r} region")
            try:
                funcs = exercised_functions(src)
            except SyntaxError as err:
                raise ValueError(f"{where}, cell {i}: the solution cell does not parse: {err}") from None
            if not funcs:
                raise ValueError(f"{where}, cell {i}: a solution cell must define a plain (undecorated) function "
                                 "for the check to call")
            pending, last_check = (i, funcs), None
        elif role == "check":
            if pending is None:
                raise ValueError(f"{where}, cell {i}: a check cell without a solution cell before it")
            ex_id = f"{lesson}.{len(out) + 1}"
            points = _tag_value(t, "points")
            if len(points) != 1 or not points[0].isdigit() or not 1 <= int(points[0]) <= MAX_POINTS:
                raise ValueError(f"{where}, cell {i} (exercise {ex_id}): a check cell needs one tag points=N "
                                 f"with N in 1..{MAX_POINTS}, got {points or 'none'}")
            if not n_hid:
                raise ValueError(f"{where}, cell {i} (exercise {ex_id}): a check cell needs at least one "
                                 f"{BEGIN_HIDDEN!r} / {END_HIDDEN!r} block")
            # nbformat forbids commas in a tag: several mutants are "mutants=scale+zeros" or one
            # mutants= tag each.
            mutant_tags = _tag_value(t, "mutants")
            named = [m for v in mutant_tags for m in v.split("+")]
            mutants = tuple(m for m in MUTANTS if m in named) if mutant_tags else MUTANTS
            if not mutants or set(named) - set(MUTANTS):
                raise ValueError(f"{where}, cell {i}: mutants= takes names from {MUTANTS} joined by '+' "
                                 f"(e.g. mutants=scale+zeros; nbformat forbids commas in tags), got {mutant_tags}")
            if not re.search(r"_passed\[[\"']" + re.escape(ex_id) + r"[\"']\]\s*=\s*True", src):
                raise ValueError(f"{where}, cell {i}: the check of exercise {ex_id} must end with "
                                 f'_passed["{ex_id}"] = True (ids are NN.k in order)')
            ex = Exercise(ex_id, pending[0], i, None, int(points[0]), mutants, pending[1])
            out.append(ex)
            pending, last_check = None, ex
        else:  # fallback
            if last_check is None or last_check.check != i - 1:
                raise ValueError(f"{where}, cell {i}: a fallback cell must come right after its check cell")
            if not re.search(r"_passed\[[\"']" + re.escape(last_check.id) + r"[\"']\]", src):
                raise ValueError(f"{where}, cell {i}: the fallback of exercise {last_check.id} must test "
                                 f'_passed["{last_check.id}"]')
            out[-1] = Exercise(**{**last_check.__dict__, "fallback": i})
            last_check = None
    if pending is not None:
        raise ValueError(f"{where}, cell {pending[0]}: a solution cell without a check cell after it")
    return out


def lesson_exercises(py_path: Path) -> list[Exercise]:
    return exercises(jupytext.read(py_path), lesson_number(py_path.stem))


# ---------------------------------------------------------------------------------------------
# nbgrader metadata and the student version
# ---------------------------------------------------------------------------------------------

def nbgrader_metadata(nb, lesson: str) -> list[dict]:
    """The nbgrader cell metadata of every cell, derived from the tags.

    Solution cells are ``solution: true``; check cells ``grade: true, locked: true, points``;
    every other cell (instructions, parameters, fallbacks) ``locked: true``.
    """
    exs = exercises(nb, lesson)
    role = {}
    for ex in exs:
        role[ex.solution] = (ex, "solution")
        role[ex.check] = (ex, "check")
        if ex.fallback is not None:
            role[ex.fallback] = (ex, "fallback")
    out = []
    for i in range(len(nb.cells)):
        meta = {"grade": False, "solution": False, "locked": True, "grade_id": f"cell-{i:03d}",
                "schema_version": 3}
        if i in role:
            ex, r = role[i]
            meta["grade_id"] = ex.grade_id(r)
            if r == "solution":
                meta.update(solution=True, locked=False)
            elif r == "check":
                meta.update(grade=True, points=ex.points)
        out.append(meta)
    return out


def with_nbgrader_metadata(nb, lesson: str):
    """A copy of ``nb`` carrying nbgrader's metadata and the python3 kernelspec."""
    nb = copy.deepcopy(nb)
    for cell, meta in zip(nb.cells, nbgrader_metadata(nb, lesson)):
        cell.metadata["nbgrader"] = meta
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.metadata.setdefault("language_info", {"name": "python"})
    return nb


def stub_source(source: str) -> str:
    """The student's version of a solution cell: nbgrader's own ClearSolutions on it."""
    from nbgrader.preprocessors import ClearSolutions  # lazy: only the course commands need nbgrader
    cell = nbformat.v4.new_code_cell(source)
    ClearSolutions(code_stub={"python": CODE_STUB})._replace_solution_region(cell, "python")
    return cell.source


def cell_signature(nb) -> list[tuple[str, str, tuple[str, ...]]]:
    """What must agree between the two files of a pair: cell types, sources and tags."""
    return [(c.cell_type, c.source.strip(), tuple(tags(c))) for c in nb.cells]


def pair_in_sync(py_path: Path) -> tuple[bool, str]:
    """Compare the cells of ``X.py`` with those of ``X.ipynb``; returns (ok, reason).

    Also checks that the notebook carries the nbgrader metadata the tags imply.
    """
    ipynb_path = py_path.with_suffix(".ipynb")
    if not ipynb_path.exists():
        return False, f"{ipynb_path.name} is missing (run `notebooks.py build {lesson_number(py_path.stem)}`)"
    py_nb, ipynb_nb = jupytext.read(py_path), jupytext.read(ipynb_path)
    a, b = cell_signature(py_nb), cell_signature(ipynb_nb)
    if len(a) != len(b):
        return False, f"{py_path.name} has {len(a)} cells, {ipynb_path.name} has {len(b)}"
    for i, (ca, cb) in enumerate(zip(a, b)):
        if ca != cb:
            return False, f"cell {i} differs:\n--- py\n{ca}\n--- ipynb\n{cb}"
    try:
        want = nbgrader_metadata(py_nb, lesson_number(py_path.stem))
    except ValueError as err:
        return False, str(err)
    for i, (cell, meta) in enumerate(zip(ipynb_nb.cells, want)):
        if cell.metadata.get("nbgrader") != meta:
            return False, (f"cell {i}: nbgrader metadata {cell.metadata.get('nbgrader')} in {ipynb_path.name}, "
                           f"the tags imply {meta}")
    return True, ""


# ---------------------------------------------------------------------------------------------
# Executing lessons
# ---------------------------------------------------------------------------------------------

def kernel_env(fast: bool) -> dict:
    """The kernel's environment: the inline backend (not a forced Agg) and the fast switch."""
    env = dict(os.environ)
    env.pop("MPLBACKEND", None)  # an inherited Agg would stop inline figures from showing
    env["LESSONS_FAST"] = "1" if fast else "0"
    env.setdefault("PYTHONHASHSEED", "0")
    return env


def make_client(nb, timeout: int, path: Path = LESSONS_DIR) -> NotebookClient:
    return NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                          resources={"metadata": {"path": str(path)}})


def execute(nb, fast: bool, timeout: int = 600):
    """Execute ``nb`` in place in a fresh kernel started in lessons/."""
    make_client(nb, timeout).execute(env=kernel_env(fast))
    return nb


# Injected once into the round-trip kernel: wraps functions so that their outputs are mutated.
_MUTANT_HELPER = r'''
class _LessonMutants:
    """Rebinds functions to wrappers that mutate their outputs (lessons/_tools/notebooks.py)."""
    import dataclasses as _dc, functools as _ft, numpy as _np

    def __init__(self):
        self.saved, self.applied, self.depth = {}, False, 0

    def mutate(self, obj, kind):
        np = self._np
        if isinstance(obj, np.ndarray):
            if kind == "transpose":
                if obj.ndim >= 2:
                    self.applied = True
                    return np.ascontiguousarray(np.swapaxes(obj, -1, -2))
                return obj
            if obj.dtype.kind in "fc":
                self.applied = True
                return obj * 1.01 if kind == "scale" else np.zeros_like(obj)
            return obj
        if isinstance(obj, (bool, np.bool_, int, np.integer)):
            return obj
        if isinstance(obj, (float, complex, np.floating, np.complexfloating)):
            if kind == "transpose":
                return obj
            self.applied = True
            return type(obj)(obj * 1.01) if kind == "scale" else type(obj)(0)
        if isinstance(obj, tuple):
            items = [self.mutate(o, kind) for o in obj]
            return type(obj)(*items) if hasattr(obj, "_fields") else tuple(items)
        if isinstance(obj, list):
            return [self.mutate(o, kind) for o in obj]
        if isinstance(obj, dict):
            return type(obj)((k, self.mutate(v, kind)) for k, v in obj.items())
        if self._dc.is_dataclass(obj) and not isinstance(obj, type):
            return self._dc.replace(obj, **{f.name: self.mutate(getattr(obj, f.name), kind)
                                            for f in self._dc.fields(obj) if f.init})
        return obj

    def install(self, g, names, kind):
        self.applied = False
        for name in names:
            f = self.saved.setdefault(name, g[name])

            @self._ft.wraps(f)
            def wrapper(*args, _f=f, **kwargs):
                self.depth += 1           # only the outermost call mutates: a wrapped function
                try:                      # calling another must not transpose twice
                    out = _f(*args, **kwargs)
                finally:
                    self.depth -= 1
                return out if self.depth else self.mutate(out, kind)
            g[name] = wrapper

    def restore(self, g):
        g.update(self.saved)
        self.saved, self.depth = {}, 0

_lesson_mutants_ = _LessonMutants()
del _LessonMutants
'''


class _Runner:
    """Executes cells one at a time in one kernel and reports how each ended."""

    def __init__(self, client: NotebookClient):
        self.client = client

    def run(self, source: str, index: int) -> tuple[str | None, str]:
        """Run ``source``; returns (error name or None, "name: value" of the error)."""
        cell = nbformat.v4.new_code_cell(source)
        self.client.allow_errors = True
        try:
            self.client.execute_cell(cell, index, store_history=False)
        finally:
            self.client.allow_errors = False
        errors = [o for o in cell.outputs if o.output_type == "error"]
        if not errors:
            return None, ""
        return errors[0].ename, f"{errors[0].ename}: {errors[0].evalue}"[:300]

    def stdout(self, source: str, index: int) -> str:
        cell = nbformat.v4.new_code_cell(source)
        self.client.execute_cell(cell, index, store_history=False)
        return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def round_trip(nb, lesson: str, fast: bool = True, timeout: int = 600) -> tuple[list[dict], list[str]]:
    """The student round trip of one lesson, in one kernel.

    Cells run in order. At each exercise: the stub version of the solution cell runs and the
    check must fail (AssertionError or NotImplementedError); then the solution runs and, for
    each mutant, each exercised function is rebound to a wrapper that mutates its outputs and
    the check must fail (any exception); then the solution runs again and the check must
    pass; then the fallback. Every other cell must run cleanly.

    Args:
        nb: the lesson notebook (from its ``.py``).
        lesson: its number ("02", "06b").
    Returns:
        (records, failures): one record per exercise ({"id", "stub", "mutants": {name: outcome}}),
        and one line per failure naming the lesson, exercise and mutant. A cell outside the
        exercises that fails raises CellExecutionError (the rest of the lesson cannot run).
    """
    exs = exercises(nb, lesson)
    by_solution = {ex.solution: ex for ex in exs}
    held = {ex.check for ex in exs} | {ex.fallback for ex in exs if ex.fallback is not None}
    client = make_client(copy.deepcopy(nb), timeout)
    runner = _Runner(client)
    records, failures = [], []
    with client.setup_kernel(env=kernel_env(fast)):
        runner.stdout(_MUTANT_HELPER, 0)
        for i, cell in enumerate(nb.cells):
            if cell.cell_type != "code" or i in held:
                continue
            if i not in by_solution:
                client.execute_cell(copy.deepcopy(cell), i)
                continue
            ex = by_solution[i]
            name = f"lesson {lesson}, exercise {ex.id}"
            check_src = nb.cells[ex.check].source
            record = {"id": ex.id, "mutants": {}}
            # 1. The untouched stub must fail its check.
            err, detail = runner.run(stub_source(cell.source), i)
            if err:
                failures.append(f"{name}: the stub cell itself fails ({detail})")
            err, detail = runner.run(check_src, ex.check)
            record["stub"] = err
            if err is None:
                failures.append(f"{name}: the check passed on the untouched stub")
            elif err not in EXPECTED_STUDENT_ERRORS:
                failures.append(f"{name}: on the stub the check failed with {detail}, expected one of "
                                f"{EXPECTED_STUDENT_ERRORS}")
            # 2. Each mutant of the solution must fail its check.
            err, detail = runner.run(cell.source, i)
            if err:
                failures.append(f"{name}: the solution cell fails ({detail})")
            for kind in ex.mutants:
                runner.stdout(f"_lesson_mutants_.install(globals(), {list(ex.functions)!r}, {kind!r})", i)
                err, detail = runner.run(check_src, ex.check)
                applied = runner.stdout("print(_lesson_mutants_.applied)", i).strip() == "True"
                runner.stdout("_lesson_mutants_.restore(globals())", i)
                if kind == "transpose" and not applied and err is None:
                    record["mutants"][kind] = "n/a (no output has ndim >= 2)"
                elif err is None and not applied:
                    record["mutants"][kind] = "not applied"
                    failures.append(f"{name}, mutant {kind}: the outputs of {', '.join(ex.functions)} hold no "
                                    f"float to mutate; restrict the check with a mutants= tag")
                elif err is None:
                    record["mutants"][kind] = "survived"
                    failures.append(f"{name}, mutant {kind}: the check passed with the outputs of "
                                    f"{', '.join(ex.functions)} mutated ({kind})")
                else:
                    record["mutants"][kind] = f"caught ({err})"
            # 3. The solution must pass its check; then the fallback runs.
            runner.run(cell.source, i)
            err, detail = runner.run(check_src, ex.check)
            record["solution"] = err
            if err is not None:
                failures.append(f"{name}: the check fails on the solution ({detail})")
            if ex.fallback is not None:
                client.execute_cell(copy.deepcopy(nb.cells[ex.fallback]), ex.fallback)
            records.append(record)
    return records, failures


def run_as_student(nb, fast: bool = True, timeout: int = 600, lesson: str = "00") -> list[dict]:
    """``round_trip`` that raises AssertionError listing every failure."""
    records, failures = round_trip(nb, lesson, fast=fast, timeout=timeout)
    assert not failures, "\n".join(failures)
    return records


def strip_volatile(nb):
    """Drop metadata that changes on every run so that re-running gives small diffs."""
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell.metadata.pop("ExecuteTime", None)
    return nb


def build(names=None, fast: bool = False) -> int:
    """Re-create each ``.ipynb`` from its ``.py`` (with nbgrader metadata) and execute it."""
    for py_path in lesson_sources(names):
        t0 = time.perf_counter()
        nb = jupytext.read(py_path)
        try:
            nb = with_nbgrader_metadata(nb, lesson_number(py_path.stem))
        except ValueError as err:
            print(f"{py_path.name}: {err}", file=sys.stderr)
            return 1
        nb.metadata.setdefault("jupytext", {})["formats"] = "ipynb,py:percent"
        try:
            execute(nb, fast=fast)
        except CellExecutionError as err:
            print(f"{py_path.name}: FAILED\n{err}", file=sys.stderr)
            return 1
        strip_volatile(nb)
        ipynb_path = py_path.with_suffix(".ipynb")
        jupytext.write(nb, ipynb_path)
        # Keep the .py byte-identical to what jupytext writes from the notebook, without the
        # nbgrader metadata (the tags say it all; the metadata is derived from them).
        py_nb = copy.deepcopy(nb)
        for cell in py_nb.cells:
            cell.metadata.pop("nbgrader", None)
        jupytext.write(py_nb, py_path, fmt="py:percent")
        size = ipynb_path.stat().st_size / 1024
        print(f"{py_path.name}: executed in {time.perf_counter() - t0:.1f} s "
              f"(load average {os.getloadavg()[0]:.1f}), {ipynb_path.name} is {size:.0f} KB")
    return 0


# ---------------------------------------------------------------------------------------------
# nbgrader: the course directory, the release and autograding
# ---------------------------------------------------------------------------------------------

NBGRADER_CONFIG = '''\
# Written by lessons/_tools/notebooks.py: an nbgrader course holding the lessons.
c = get_config()
c.CourseDirectory.root = {root!r}
c.CourseDirectory.course_id = {course!r}
c.CourseDirectory.db_url = "sqlite:///" + {db!r}
c.ClearSolutions.code_stub = {{"python": {stub!r}}}
c.GenerateAssignment.create_assignment = True
c.Autograde.create_student = True
c.Execute.timeout = {timeout}          # seconds per cell (nbgrader runs on after a failed cell)
'''


def data_files(py_path: Path) -> list[Path]:
    """The ``lessons/_data`` files a lesson loads: those it names, and those of its number."""
    text = py_path.read_text()
    named = set(re.findall(r"_data/([\w.\-]+)", text))
    number = lesson_number(py_path.stem)
    return sorted(p for p in DATA_DIR.glob("*") if p.is_file() and not p.name.startswith("make_")
                  and (p.name in named or p.name.startswith(number + "_")))


def make_course(root: Path, names=None, timeout: int = 600, skipped: dict | None = None) -> list[str]:
    """Write an nbgrader course: ``nbgrader_config.py`` and ``source/<lesson>/<lesson>.ipynb``.

    Args:
        root: the course directory (created; an existing ``source/`` is replaced).
        names: lesson name prefixes (default: all lessons).
        timeout: nbgrader's limit per cell, in seconds.
        skipped: if given, malformed lessons are left out and recorded here as
            {stem: reason}; otherwise a malformed lesson raises ValueError.
    Returns:
        the assignment ids (lesson stems) written.
    """
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    (root / "nbgrader_config.py").write_text(NBGRADER_CONFIG.format(
        root=str(root), course=COURSE_ID, db=str(root / "gradebook.db"), stub=CODE_STUB, timeout=timeout))
    shutil.rmtree(root / "source", ignore_errors=True)
    ids = []
    for py_path in lesson_sources(names):
        try:
            nb = with_nbgrader_metadata(jupytext.read(py_path), lesson_number(py_path.stem))
        except ValueError as err:
            if skipped is None:
                raise
            skipped[py_path.stem] = str(err)
            continue
        nb.metadata.pop("jupytext", None)
        src = root / "source" / py_path.stem
        (src / "_data").mkdir(parents=True)
        nbformat.write(nb, src / f"{py_path.stem}.ipynb")
        for f in data_files(py_path):
            shutil.copy(f, src / "_data" / f.name)
        ids.append(py_path.stem)
    return ids


def _bin_on_path() -> None:
    """nbgrader's gradebook runs the ``alembic`` script: make this interpreter's bin/ findable."""
    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")


def nbgrader(root: Path, *args: str, fast: bool = True) -> subprocess.CompletedProcess:
    """Run ``nbgrader ARGS`` in the course directory (the kernel inherits the fast switch)."""
    _bin_on_path()
    cmd = [sys.executable, "-m", "nbgrader", *args]
    return subprocess.run(cmd, cwd=root, env=kernel_env(fast), capture_output=True, text=True)


def _log_about(proc: subprocess.CompletedProcess, aid: str, lines: int = 25) -> str:
    """nbgrader's error lines, those about ``aid`` first, for a one-lesson failure message."""
    log = (proc.stdout + proc.stderr).splitlines()
    errors = [line for line in log if "ERROR" in line or "Error" in line]
    about = [line for line in errors if aid in line] or errors
    return "\n".join(about[-lines:])


def generate_all(root: Path, ids: list[str]) -> dict[str, str]:
    """``nbgrader generate_assignment "*"`` (one process for all lessons, much faster than one
    each); returns {lesson: why} for the lessons whose release was not written."""
    proc = nbgrader(root, "generate_assignment", "*", "--force")
    return {aid: f"nbgrader generate_assignment failed (exit {proc.returncode}):\n{_log_about(proc, aid)}"
            for aid in ids if not (root / "release" / aid / f"{aid}.ipynb").is_file()}


def release(root: Path, names=None, skipped: dict | None = None) -> list[str]:
    """``nbgrader generate_assignment`` of the lessons: the student release in ``root/release``.

    ``skipped`` as in ``make_course``; a lesson nbgrader rejects raises RuntimeError."""
    ids = make_course(root, names, skipped=skipped)
    failed = generate_all(root, ids)
    if failed:
        raise RuntimeError("\n".join(failed.values()))
    return ids


def submit(root: Path, student: str, assignment: str, notebook: Path) -> None:
    """Place ``notebook`` as ``student``'s submission of ``assignment`` (nbgrader's layout)."""
    dest = root / "submitted" / student / assignment
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    shutil.copy(notebook, dest / f"{assignment}.ipynb")


def autograde(root: Path, fast: bool = True) -> dict[tuple[str, str], str]:
    """``nbgrader autograde "*"`` of every submission in ``root/submitted``.

    Returns:
        {(student, lesson): why} for the submissions nbgrader did not grade.
    """
    shutil.rmtree(root / "autograded", ignore_errors=True)
    proc = nbgrader(root, "autograde", "*", "--force", fast=fast)
    return {(sub.parent.name, sub.name): f"nbgrader autograde failed (exit {proc.returncode}):\n"
            f"{_log_about(proc, sub.name)}"
            for sub in sorted((root / "submitted").glob("*/*"))
            if not (root / "autograded" / sub.parent.name / sub.name / f"{sub.name}.ipynb").is_file()}


def scores(root: Path) -> list[dict]:
    """Per-exercise scores read from the course's gradebook.

    Returns:
        rows {"lesson", "student", "exercise", "score", "max_score"}, in lesson order.
    """
    from nbgrader.api import Gradebook, MissingEntry
    _bin_on_path()
    rows = []
    with Gradebook(f"sqlite:///{root.resolve() / 'gradebook.db'}", COURSE_ID) as gb:
        for assignment in sorted(gb.assignments, key=lambda a: a.name):
            for student in sorted(gb.students, key=lambda s: s.id):
                try:
                    sub = gb.find_submission_notebook(assignment.name, assignment.name, student.id)
                except MissingEntry:
                    continue
                for grade in sorted(sub.grades, key=lambda g: g.name):
                    if not grade.name.endswith("-check"):
                        continue
                    rows.append({"lesson": assignment.name, "student": student.id,
                                 "exercise": exercise_of_grade_id(grade.name),
                                 "score": float(grade.score), "max_score": float(grade.max_score)})
    return rows


def score_table(rows: list[dict]) -> str:
    """The rows as a text table, with a total per lesson and student."""
    lines = [f"{'lesson':<26} {'student':<16} {'exercise':<9} {'score':>11}"]
    key = None
    total = maximum = 0.0

    def flush():
        if key is not None:
            lines.append(f"{key[0]:<26} {key[1]:<16} {'total':<9} {total:>5g} / {maximum:<3g}")
    for r in rows:
        if (r["lesson"], r["student"]) != key:
            flush()
            key, total, maximum = (r["lesson"], r["student"]), 0.0, 0.0
        total += r["score"]
        maximum += r["max_score"]
        lines.append(f"{r['lesson']:<26} {r['student']:<16} {r['exercise']:<9} "
                     f"{r['score']:>5g} / {r['max_score']:<3g}")
    flush()
    return "\n".join(lines)


def autograded_errors(root: Path, student: str, assignment: str) -> list[tuple[int, str, str]]:
    """The cells of an autograded notebook that ended in an error.

    Returns:
        (cell index, grade_id, "ename: evalue") per failed code cell, and
        (cell index, grade_id, "not executed") per code cell nbgrader did not run.
    """
    nb = nbformat.read(root / "autograded" / student / assignment / f"{assignment}.ipynb", as_version=4)
    out = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        gid = cell.metadata.get("nbgrader", {}).get("grade_id", "")
        first = next((line for line in cell.source.splitlines() if line.strip()), "")[:80]
        gid = f"{gid} ({first})" if not gid.startswith("ex") else gid
        errors = [o for o in cell.outputs if o.output_type == "error"]
        if errors:
            out.append((i, gid, f"{errors[0].ename}: {errors[0].evalue}"[:300]))
        elif cell.execution_count is None and cell.source.strip():
            out.append((i, gid, "not executed"))
    return out


def nbgrader_round_trip(root: Path, names=None, students=("solution", "release")) -> tuple[list[dict], dict, dict]:
    """Release the lessons, then autograde the solution notebooks and the untouched release.

    Students ``solution`` (the source notebooks, solutions in) and ``release`` (what a student
    downloads, untouched) are graded in fast mode. A lesson nbgrader cannot process is
    reported and does not stop the others.

    Args:
        root: the course directory to create.
        names: lesson name prefixes (default: all).
        students: which of the two to grade (two course directories graded at the same time
            share the cores better than one grading both).
    Returns:
        (score rows, {(student, lesson): autograded_errors(...)}, {lesson: nbgrader's error}).
    """
    if set(students) - {"solution", "release"}:
        raise ValueError(f"students: expected a subset of ('solution', 'release'), got {students}")
    ids = make_course(root, names)
    failed = generate_all(root, ids)
    for aid in ids:
        if aid not in failed:
            for student in students:
                folder = "source" if student == "solution" else "release"
                submit(root, student, aid, root / folder / aid / f"{aid}.ipynb")
    for (student, aid), why in autograde(root, fast=True).items():
        failed.setdefault(aid, f"{student}: {why}")
    errors = {(s, aid): autograded_errors(root, s, aid) for s in students for aid in ids if aid not in failed}
    return scores(root), errors, failed


def find_submissions(folder: Path, stems: list[str]) -> dict[tuple[str, str], Path]:
    """Student notebooks in ``folder``: ``<student>/<lesson>.ipynb`` or nbgrader's
    ``<student>/<lesson>/<lesson>.ipynb``; returns {(student, lesson): path}."""
    found = {}
    for student_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        for stem in stems:
            for cand in (student_dir / f"{stem}.ipynb", student_dir / stem / f"{stem}.ipynb"):
                if cand.is_file():
                    found[student_dir.name, stem] = cand
                    break
    return found


def grade(submissions: Path, course: Path, fast: bool = True) -> int:
    """Autograde a folder of student notebooks with nbgrader and print the score table."""
    stems = [p.stem for p in lesson_sources()]
    found = find_submissions(submissions, stems)
    if not found:
        raise ValueError(f"submissions: no <student>/NN_title.ipynb notebooks in {submissions} "
                         f"(lessons: {', '.join(stems)})")
    shutil.rmtree(course, ignore_errors=True)       # a fresh gradebook for every grading run
    release(course, sorted({stem for _, stem in found}))
    for (student, stem), path in found.items():
        submit(course, student, stem, path)
    for (student, stem), why in autograde(course, fast=fast).items():
        print(f"{student}/{stem}: not graded: {why}", file=sys.stderr)
    rows = scores(course)
    print(score_table(rows))
    with open(course / "grades.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["lesson", "student", "exercise", "score", "max_score"])
        writer.writeheader()
        writer.writerows(rows)
    print(f"graded notebooks with feedback in {course / 'autograded'}; scores in {course / 'grades.csv'}")
    return 0


def check() -> int:
    bad = 0
    for py_path in lesson_sources():
        ok, reason = pair_in_sync(py_path)
        if not ok:
            bad += 1
            print(f"{py_path.name}: out of sync: {reason}", file=sys.stderr)
    return 1 if bad else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python lessons/_tools/notebooks.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("build", help="re-sync each pair from its .py and execute the notebook")
    p.add_argument("names", nargs="*", help="lesson name prefixes, e.g. 01 02 06b (default: all)")
    p.add_argument("--fast", action="store_true", help="execute with LESSONS_FAST=1 (for a quick look)")
    p = sub.add_parser("roundtrip", help="stub / mutants / solution round trip in fast mode")
    p.add_argument("names", nargs="*")
    p = sub.add_parser("assignments", help="nbgrader release (solutions and hidden tests stripped)")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "build" / "assignments",
                   help="the nbgrader course directory (release in OUT/release/)")
    p.add_argument("names", nargs="*")
    p = sub.add_parser("grade", help="nbgrader autograde of SUBMISSIONS/<student>/NN_title.ipynb")
    p.add_argument("submissions", type=Path)
    p.add_argument("--course", type=Path, default=REPO_ROOT / "build" / "grading",
                   help="the nbgrader course directory to grade in (replaced)")
    p.add_argument("--full", action="store_true", help="run the lessons in full mode (default: LESSONS_FAST=1)")
    sub.add_parser("check", help="exit 1 if any pair is out of sync")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            return build(args.names, fast=args.fast)
        if args.command == "roundtrip":
            bad = 0
            for py_path in lesson_sources(args.names):
                t0 = time.perf_counter()
                records, failures = round_trip(jupytext.read(py_path), lesson_number(py_path.stem))
                for line in failures:
                    print(line, file=sys.stderr)
                bad += bool(failures)
                print(f"{py_path.name}: {len(records)} exercises, {len(failures)} failures, "
                      f"{time.perf_counter() - t0:.1f} s (load average {os.getloadavg()[0]:.1f})")
            return 1 if bad else 0
        if args.command == "assignments":
            skipped = {}
            ids = release(args.out, args.names, skipped=skipped)
            for aid in ids:
                exs = lesson_exercises(LESSONS_DIR / (aid + ".py"))
                print(f"{args.out / 'release' / aid / (aid + '.ipynb')}: {len(exs)} exercises, "
                      f"{sum(ex.points for ex in exs)} points")
            for stem, reason in skipped.items():
                print(f"{stem}: left out of the release: {reason}", file=sys.stderr)
            return 1 if skipped else 0
        if args.command == "grade":
            if not args.submissions.is_dir():
                raise ValueError(f"submissions: expected a folder of <student>/NN_title.ipynb, "
                                 f"got {args.submissions}")
            return grade(args.submissions, args.course, fast=not args.full)
        return check()
    except (ValueError, RuntimeError) as err:
        print(f"notebooks.py {args.command}: {str(err).splitlines()[0]}", file=sys.stderr)
        if isinstance(err, RuntimeError):
            print("\n".join(str(err).splitlines()[1:]), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
