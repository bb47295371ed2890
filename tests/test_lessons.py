"""The lessons: pairs in sync, well formed, and runnable as full and as student notebooks.

Each lesson runs once, in fast mode (LESSONS_FAST=1), in a single kernel that plays both
roles: every check cell first runs against the student's stub and must fail, then the
solution runs and the same check must pass (see lessons/_tools/notebooks.py). So this file
executes every cell a student sees and every cell of the full notebook.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest

LESSONS = Path(__file__).resolve().parent.parent / "lessons"
sys.path.insert(0, str(LESSONS / "_tools"))
import notebooks  # noqa: E402  (lessons/_tools is not a package)

SOURCES = notebooks.lesson_sources()
IDS = [p.stem for p in SOURCES]
MAX_NOTEBOOK_KB = 300


def test_there_are_lessons():
    assert len(SOURCES) >= 1, f"no lessons found in {LESSONS}"


@pytest.mark.parametrize("py_path", SOURCES, ids=IDS)
def test_pair_in_sync(py_path):
    ok, reason = notebooks.pair_in_sync(py_path)
    assert ok, f"{py_path.name}: {reason} -- run `make lessons`"


@pytest.mark.parametrize("py_path", SOURCES, ids=IDS)
def test_lesson_is_well_formed(py_path):
    nb = jupytext.read(py_path)
    opening = nb.cells[0]
    assert opening.cell_type == "markdown"
    for word in ("Goal", "Prerequisites", "Run time"):
        assert word in opening.source, f"{py_path.name}: the opening cell must state its {word}"
    params = [c for c in nb.cells if "parameters" in notebooks.tags(c)]
    assert len(params) == 1, f"{py_path.name}: expected one cell tagged 'parameters'"
    assert "LESSONS_FAST" in params[0].source
    assert len(notebooks.exercises(nb)) >= 2, f"{py_path.name}: expected at least two exercises"
    # Lessons import the package for what they reuse and never install anything.
    assert not re.search(r"^\s*[!%]\s*pip", py_path.read_text(), re.M)


@pytest.mark.parametrize("py_path", SOURCES, ids=IDS)
def test_committed_notebook_has_outputs_and_is_small(py_path):
    ipynb = py_path.with_suffix(".ipynb")
    size_kb = ipynb.stat().st_size / 1024
    assert size_kb < MAX_NOTEBOOK_KB, f"{ipynb.name} is {size_kb:.0f} KB"
    nb = nbformat.read(ipynb, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code), f"{ipynb.name} was not executed"
    assert not any(o.output_type == "error" for c in code for o in c.outputs)
    assert any("image/png" in o.get("data", {}) for c in code for o in c.outputs), \
        f"{ipynb.name} has no figure"


@pytest.mark.parametrize("py_path", SOURCES, ids=IDS)
def test_student_checks_fail_and_solutions_pass(py_path):
    nb = jupytext.read(py_path)
    records = notebooks.run_as_student(nb, fast=True, timeout=300)
    assert len(records) == len(notebooks.exercises(nb)) >= 2


def test_assignments_generator(tmp_path):
    assert notebooks.assignments(tmp_path) == 0
    for py_path in SOURCES:
        full = jupytext.read(py_path)
        student = nbformat.read(tmp_path / f"{py_path.stem}.ipynb", as_version=4)
        kinds = [t for c in student.cells for t in notebooks.tags(c)]
        assert "solution" not in kinds
        assert kinds.count("check") == kinds.count("exercise") == len(notebooks.exercises(full))
        assert len(student.cells) == len(full.cells) - len(notebooks.exercises(full))
        assert all(not c.outputs for c in student.cells if c.cell_type == "code")


def test_exercise_tags_must_follow_the_pattern():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["solution"]})]
    with pytest.raises(ValueError, match="exercise"):
        notebooks.exercises(nb)
