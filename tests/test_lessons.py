"""The lessons as a course: pairs in sync, well formed, checks that catch wrong answers, nbgrader.

Every lesson runs in fast mode (LESSONS_FAST=1):
- once in a single kernel for the student round trip (lessons/_tools/notebooks.py
  ``round_trip``): each check must fail on the untouched stub and on three mutants of the
  solution (outputs scaled by 1.01, zeroed, transposed), then pass on the solution;
- twice under nbgrader: ``generate_assignment`` writes the release, then ``autograde``
  grades the solution notebook (full marks) and the untouched release (zero marks, and the
  lesson must still run to its end thanks to the fallbacks).
The nbgrader runs start in the background when the first round trip starts, so the two
kinds of run share the cores.
"""
from __future__ import annotations

import re
import subprocess
import sys
import threading
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
    assert "06b_training_loop" in IDS or not (LESSONS / "06b_training_loop.py").exists()


@pytest.mark.parametrize("py_path", SOURCES, ids=IDS)
def test_pair_in_sync(py_path):
    ok, reason = notebooks.pair_in_sync(py_path)
    build = f"python lessons/_tools/notebooks.py build {notebooks.lesson_number(py_path.stem)}"
    assert ok, f"{py_path.name}: {reason} -- run `{build}`"


@pytest.mark.parametrize("py_path", SOURCES, ids=IDS)
def test_lesson_is_well_formed(py_path):
    nb = jupytext.read(py_path)
    opening = nb.cells[0]
    assert opening.cell_type == "markdown"
    for word in ("Goal", "Prerequisites", "Run time"):
        assert word in opening.source, f"{py_path.name}: the opening cell must state its {word}"
    params = [c for c in nb.cells if "parameters" in notebooks.tags(c)]
    assert len(params) == 1, f"{py_path.name}: expected one cell tagged 'parameters'"
    assert notebooks.PARAMETERS_LINE in params[0].source, \
        f"{py_path.name}: the parameters cell must read {notebooks.PARAMETERS_LINE}"
    exs = notebooks.exercises(nb, notebooks.lesson_number(py_path.stem))  # ValueError names the bad cell
    assert len(exs) >= 2, f"{py_path.name}: expected at least two exercises, found {len(exs)}"
    for ex in exs:
        check = nb.cells[ex.check].source
        assert 1 <= ex.points <= notebooks.MAX_POINTS
        assert notebooks.BEGIN_HIDDEN in check and notebooks.END_HIDDEN in check
        assert "_passed = {}" in "".join(c.source for c in nb.cells[:ex.solution]), \
            f"{py_path.name}: define _passed = {{}} in the imports cell, before exercise {ex.id}"
    # Lessons import the package for what they reuse and never install anything.
    assert not re.search(r"^\s*[!%]\s*pip", py_path.read_text(), re.M)


def test_readme_maps_every_lesson():
    readme = (LESSONS / "README.md").read_text()
    missing = [p.stem for p in SOURCES if f"]({p.stem}.ipynb)" not in readme]
    assert not missing, f"lessons/README.md does not link {missing}"


@pytest.mark.parametrize("py_path", SOURCES, ids=IDS)
def test_committed_notebook_has_outputs_and_is_small(py_path):
    ipynb = py_path.with_suffix(".ipynb")
    assert ipynb.exists(), f"{ipynb.name} is missing"
    size_kb = ipynb.stat().st_size / 1024
    assert size_kb < MAX_NOTEBOOK_KB, f"{ipynb.name} is {size_kb:.0f} KB"
    nb = nbformat.read(ipynb, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code), f"{ipynb.name} was not executed"
    assert not any(o.output_type == "error" for c in code for o in c.outputs)
    assert any("image/png" in o.get("data", {}) for c in code for o in c.outputs), \
        f"{ipynb.name} has no figure"


# --- nbgrader, in the background --------------------------------------------------------------

class _Graded:
    """The nbgrader round trip of the selected lessons, run in two threads (one course
    directory per student; the time goes into nbgrader subprocesses and their kernels)."""

    def __init__(self, root: Path, stems: list[str]):
        self.stems, self.results, self.errors = stems, {}, {}
        self.threads = [threading.Thread(target=self._run, args=(root / student, student), daemon=True)
                        for student in ("solution", "release")]
        for thread in self.threads if stems else []:
            thread.start()

    def _run(self, root, student):
        try:
            self.results[student] = notebooks.nbgrader_round_trip(root, self.stems, students=(student,))
        except Exception as err:  # reported by every nbgrader test
            self.errors[student] = err

    def get(self):
        """(score rows, autograded errors, nbgrader failures) of both students, merged."""
        for thread in self.threads if self.stems else []:
            thread.join()
        if self.errors:
            raise next(iter(self.errors.values()))
        rows, errors, failed = [], {}, {}
        for r, e, f in self.results.values():
            rows += r
            errors.update(e)
            failed.update(f)
        return rows, errors, failed


@pytest.fixture(scope="module")
def graded(request, tmp_path_factory):
    """Starts the nbgrader round trip of the lessons whose nbgrader test is selected."""
    selected = sorted({item.callspec.params["py_path"].stem for item in request.session.items
                       if item.originalname == "test_nbgrader_round_trip" and hasattr(item, "callspec")})
    well_formed = []
    for stem in selected:
        try:
            notebooks.lesson_exercises(LESSONS / f"{stem}.py")
            well_formed.append(stem)
        except ValueError:
            pass  # test_lesson_is_well_formed says why; the nbgrader test of this lesson fails below
    return _Graded(tmp_path_factory.mktemp("course"), well_formed)


@pytest.mark.parametrize("py_path", SOURCES, ids=IDS)
def test_stub_mutants_and_solution(py_path, graded):
    """Each check fails on the stub and on every mutant, and passes on the solution."""
    nb = jupytext.read(py_path)
    records, failures = notebooks.round_trip(nb, notebooks.lesson_number(py_path.stem), fast=True, timeout=300)
    assert not failures, f"{py_path.name}:\n" + "\n".join(failures)
    assert len(records) == len(notebooks.exercises(nb, notebooks.lesson_number(py_path.stem))) >= 2


@pytest.mark.parametrize("py_path", SOURCES, ids=IDS)
def test_nbgrader_round_trip(py_path, graded):
    """nbgrader grades the solution notebook full marks and the untouched release zero, and
    the release runs to its end (only the graded checks fail, the fallbacks carry the rest)."""
    stem = py_path.stem
    exs = notebooks.lesson_exercises(py_path)
    rows, errors, failed = graded.get()
    assert stem not in failed, f"{stem}: {failed.get(stem)}"
    assert ("release", stem) in errors, f"{stem} was not graded (malformed? see test_lesson_is_well_formed)"
    rows = [r for r in rows if r["lesson"] == stem]
    got = {(r["student"], r["exercise"]): (r["score"], r["max_score"]) for r in rows}
    for ex in exs:
        assert got.get(("solution", ex.id)) == (ex.points, ex.points), \
            f"{stem}: the solution notebook scored {got.get(('solution', ex.id))} on exercise {ex.id}"
        assert got.get(("release", ex.id)) == (0, ex.points), \
            f"{stem}: the untouched release scored {got.get(('release', ex.id))} on exercise {ex.id}"
    assert errors[("solution", stem)] == [], f"{stem}: cells fail in the solution notebook under nbgrader"
    checks = {ex.grade_id("check") for ex in exs}
    bad = [e for e in errors[("release", stem)] if e[1] not in checks or e[2].split(":")[0] not in
           notebooks.EXPECTED_STUDENT_ERRORS]
    assert not bad, f"{stem}: in the untouched release these cells fail (a fallback is missing?): {bad}"
    assert {e[1] for e in errors[("release", stem)]} == checks


# --- the parser and the mutants on small synthetic lessons -------------------------------------

def _nb(*cells):
    """A notebook from (tags, source) pairs; a None tag list makes a markdown cell."""
    nb = nbformat.v4.new_notebook()
    for t, src in cells:
        nb.cells.append(nbformat.v4.new_markdown_cell(src) if t is None else nbformat.v4.new_code_cell(src))
        if t is not None:
            nb.cells[-1].metadata["tags"] = t      # set after: new_code_cell would reject a comma
    return nb


SOLUTION = ("def double(x):\n    \"\"\"2 x.\"\"\"\n    ### BEGIN SOLUTION\n    return 2 * x\n"
            "    ### END SOLUTION\n")
CHECK = ('_passed["00.1"] = False\nassert np.allclose(double(np.eye(2) + [[0, 1], [0, 0]]), '
         '[[2, 2], [0, 2]], rtol=1e-9)\n### BEGIN HIDDEN TESTS\nassert double(1.5) == 3.0\n'
         '### END HIDDEN TESTS\n_passed["00.1"] = True\n')
FALLBACK = 'if not _passed["00.1"]:\n    double = lambda x: 2 * x\n'


@pytest.mark.parametrize("cells, message", [
    ([(["solution"], "x = 1\n")], "BEGIN SOLUTION"),
    ([(["check", "points=2"], CHECK)], "without a solution"),
    ([(["solution"], SOLUTION)], "without a check"),
    ([(["solution"], SOLUTION), (["check"], CHECK)], "points=N"),
    ([(["solution"], SOLUTION), (["check", "points=9"], CHECK)], "points=N"),
    ([(["solution"], SOLUTION), (["check", "points=2"], CHECK.split("### BEGIN")[0] + '_passed["00.1"] = True')],
     "HIDDEN TESTS"),
    ([(["solution"], SOLUTION), (["check", "points=2", "mutants=flip"], CHECK)], "mutants="),
    ([(["solution"], SOLUTION), (["check", "points=2", "mutants=scale,zeros"], CHECK)], "commas"),
    ([(["solution"], SOLUTION), (["check", "points=2"], CHECK.replace('"00.1"', '"00.7"'))], "00.1"),
    ([(["solution"], SOLUTION), ([], "y = 2\n"), (["check", "points=2"], CHECK)], "between"),
    ([(["solution"], SOLUTION), (["check", "points=2"], CHECK), ([], "y = 2"), (["fallback"], FALLBACK)],
     "right after"),
    ([(["exercise"], "def double(x):\n    raise NotImplementedError\n")], "exercise"),
    ([([], SOLUTION)], "only allowed in a cell tagged 'solution'"),
    ([(["solution"], SOLUTION.replace("    ### END SOLUTION\n", ""))], "matching"),
])
def test_malformed_lessons_are_clear_errors(cells, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        notebooks.exercises(_nb(*cells), "00")


def test_parser_and_nbgrader_metadata():
    nb = _nb((None, "# intro"), (["solution"], SOLUTION), (None, "now check"),
             (["check", "points=3", "mutants=scale+zeros"], CHECK), (["fallback"], FALLBACK))
    (ex,) = notebooks.exercises(nb, "00")
    assert (ex.id, ex.solution, ex.check, ex.fallback, ex.points) == ("00.1", 1, 3, 4, 3)
    assert ex.mutants == ("scale", "zeros") and ex.functions == ("double",)
    meta = notebooks.nbgrader_metadata(nb, "00")
    assert meta[1] == {"grade": False, "solution": True, "locked": False, "grade_id": "ex00_1-solution",
                       "schema_version": 3}
    assert meta[3] == {"grade": True, "solution": False, "locked": True, "points": 3,
                       "grade_id": "ex00_1-check", "schema_version": 3}
    assert all(m["locked"] and not m["grade"] and not m["solution"] for m in (meta[0], meta[2], meta[4]))
    assert len({m["grade_id"] for m in meta}) == len(meta)
    from nbgrader.nbgraderformat import MetadataValidator
    MetadataValidator().validate_nb(notebooks.with_nbgrader_metadata(nb, "00"))


def test_exercised_functions_skip_kernels():
    src = ("@njit\ndef _kernel(x):\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION\n\n"
           "def helper(x):\n    return x\n\ndef launch(x):\n    return _kernel(x)\n")
    assert notebooks.exercised_functions(src) == ("helper", "launch")
    assert notebooks.exercised_functions(SOLUTION + "\ndef other(x):\n    return x\n") == ("double",)


def test_stub_is_nbgraders():
    assert notebooks.stub_source(SOLUTION) == ('def double(x):\n    """2 x."""\n    # YOUR CODE HERE\n'
                                               '    raise NotImplementedError()\n')


def test_round_trip_catches_a_weak_check():
    """A check with a 5% tolerance and no shape test lets the scale and transpose mutants through."""
    weak = CHECK.replace("rtol=1e-9", "rtol=0.05").replace("[[2, 2], [0, 2]]", "[[2, 1], [1, 2]]").replace(
        "np.eye(2) + [[0, 1], [0, 0]]", "np.eye(2) + 0.5 * (1 - np.eye(2))").replace(
        "double(1.5) == 3.0", "abs(double(1.5) - 3.0) < 0.1")
    nb = _nb((["parameters"], "import numpy as np\n_passed = {}"), (["solution"], SOLUTION),
             (["check", "points=1"], weak), (["fallback"], FALLBACK))
    records, failures = notebooks.round_trip(nb, "00", timeout=60)
    assert records[0]["stub"] == "NotImplementedError" and records[0]["solution"] is None
    assert records[0]["mutants"]["zeros"].startswith("caught")
    assert records[0]["mutants"]["scale"] == records[0]["mutants"]["transpose"] == "survived"
    assert len(failures) == 2 and all("exercise 00.1, mutant" in f for f in failures)
    nb.cells[2].source = CHECK
    records, failures = notebooks.round_trip(nb, "00", timeout=60)
    assert failures == [] and all(v.startswith("caught") for v in records[0]["mutants"].values())


def test_cli_bad_input_exits_2(tmp_path):
    tool = LESSONS / "_tools" / "notebooks.py"
    proc = subprocess.run([sys.executable, str(tool), "grade", str(tmp_path / "nope")], capture_output=True,
                          text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "submissions" in proc.stderr
    proc = subprocess.run([sys.executable, str(tool), "grade", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2 and "no <student>/NN_title.ipynb" in proc.stderr


def test_grade_command(tmp_path):
    """`notebooks.py grade` (what `make grade` runs) on two students of lesson 00, in both layouts."""
    py_path = notebooks.lesson_sources(["00_"])[0]
    full = notebooks.with_nbgrader_metadata(jupytext.read(py_path), "00")
    stub = notebooks.with_nbgrader_metadata(jupytext.read(py_path), "00")
    for ex in notebooks.exercises(stub, "00"):
        stub.cells[ex.solution].source = notebooks.stub_source(stub.cells[ex.solution].source)
    (tmp_path / "subs" / "ada").mkdir(parents=True)
    (tmp_path / "subs" / "bob" / py_path.stem).mkdir(parents=True)
    nbformat.write(full, tmp_path / "subs" / "ada" / f"{py_path.stem}.ipynb")
    nbformat.write(stub, tmp_path / "subs" / "bob" / py_path.stem / f"{py_path.stem}.ipynb")
    proc = subprocess.run([sys.executable, str(LESSONS / "_tools" / "notebooks.py"), "grade",
                           str(tmp_path / "subs"), "--course", str(tmp_path / "course")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    total = sum(ex.points for ex in notebooks.exercises(full, "00"))
    assert re.search(rf"{py_path.stem}\s+ada\s+total\s+{total} / {total}", proc.stdout), proc.stdout
    assert re.search(rf"{py_path.stem}\s+bob\s+total\s+0 / {total}", proc.stdout), proc.stdout
    rows = (tmp_path / "course" / "grades.csv").read_text().splitlines()
    assert rows[0] == "lesson,student,exercise,score,max_score" and len(rows) == 1 + 2 * len(
        notebooks.exercises(full, "00"))
