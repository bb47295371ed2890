"""Build, check and strip the lesson notebooks.

Each lesson is a pair: ``lessons/NN_title.py`` (jupytext percent format, the reviewed
source) and ``lessons/NN_title.ipynb`` (the same cells, committed with their outputs).

Cell tags this tool understands:
    parameters  sizes and the fast switch (``LESSONS_FAST=1`` shrinks every size for CI)
    exercise    a stub a student fills in; it raises NotImplementedError until then
    solution    the worked answer; removed from the student version
    check       asserts that fail on the stub and pass on the solution

Commands (run from the repository root):
    python lessons/_tools/notebooks.py build [NAMES...]        re-sync pairs, execute in full mode
    python lessons/_tools/notebooks.py assignments [--out DIR]  student notebooks without solutions
    python lessons/_tools/notebooks.py check                    pairs in sync and well formed
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

LESSONS_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = LESSONS_DIR.parent
TAGS = ("parameters", "exercise", "solution", "check")
# A failing check may fail by an assert or by calling the stub; any other error is a bug.
EXPECTED_STUDENT_ERRORS = ("AssertionError", "NotImplementedError")


def lesson_sources(names=None) -> list[Path]:
    """The lesson ``.py`` files in order, optionally only those whose stem starts with a name."""
    paths = sorted(p for p in LESSONS_DIR.glob("[0-9][0-9]_*.py"))
    if names:
        paths = [p for p in paths if any(p.stem.startswith(n) for n in names)]
    return paths


def tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def cell_signature(nb) -> list[tuple[str, str, tuple[str, ...]]]:
    """What must agree between the two files of a pair: cell types, sources and tags."""
    return [(c.cell_type, c.source.strip(), tuple(tags(c))) for c in nb.cells]


def pair_in_sync(py_path: Path) -> tuple[bool, str]:
    """Compare the cells of ``X.py`` with those of ``X.ipynb``; returns (ok, reason)."""
    ipynb_path = py_path.with_suffix(".ipynb")
    if not ipynb_path.exists():
        return False, f"{ipynb_path.name} is missing (run `make lessons`)"
    a = cell_signature(jupytext.read(py_path))
    b = cell_signature(jupytext.read(ipynb_path))
    if len(a) != len(b):
        return False, f"{py_path.name} has {len(a)} cells, {ipynb_path.name} has {len(b)}"
    for i, (ca, cb) in enumerate(zip(a, b)):
        if ca != cb:
            return False, f"cell {i} differs:\n--- py\n{ca}\n--- ipynb\n{cb}"
    return True, ""


def exercises(nb) -> list[tuple[int, int, int]]:
    """Indices (exercise, solution, check) of each exercise, in order.

    Raises ValueError when the tags do not follow the pattern
    exercise -> solution -> check (markdown cells may sit between them).
    """
    out, pending = [], []
    for i, cell in enumerate(nb.cells):
        t = [x for x in tags(cell) if x in ("exercise", "solution", "check")]
        if not t:
            continue
        if cell.cell_type != "code" or len(t) != 1:
            raise ValueError(f"cell {i}: exercise/solution/check tags go on code cells, one each")
        expected = ("exercise", "solution", "check")[len(pending)]
        if t[0] != expected:
            raise ValueError(f"cell {i}: found a {t[0]!r} cell where a {expected!r} cell was expected")
        pending.append(i)
        if len(pending) == 3:
            out.append(tuple(pending))
            pending = []
    if pending:
        raise ValueError(f"exercise starting at cell {pending[0]} is missing its solution or check")
    return out


def student_version(nb):
    """A copy of ``nb`` without solution cells and without outputs (checks are kept)."""
    nb = copy.deepcopy(nb)
    nb.cells = [c for c in nb.cells if "solution" not in tags(c)]
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    nb.metadata.pop("jupytext", None)
    return nb


def kernel_env(fast: bool) -> dict:
    """The kernel's environment: the inline backend (not a forced Agg) and the fast switch."""
    env = dict(os.environ)
    env.pop("MPLBACKEND", None)  # an inherited Agg would stop inline figures from showing
    env["LESSONS_FAST"] = "1" if fast else "0"
    env.setdefault("PYTHONHASHSEED", "0")
    return env


def make_client(nb, timeout: int) -> NotebookClient:
    return NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                          resources={"metadata": {"path": str(LESSONS_DIR)}})


def execute(nb, fast: bool, timeout: int = 600):
    """Execute ``nb`` in place in a fresh kernel started in lessons/."""
    make_client(nb, timeout).execute(env=kernel_env(fast))
    return nb


def run_as_student(nb, fast: bool = True, timeout: int = 600) -> list[dict]:
    """Run the student version and the full version of ``nb`` in one kernel.

    Cells run in order with solution cells held back. At each check cell the check runs
    first on the student's stub and must fail (AssertionError or NotImplementedError),
    then the held-back solution runs and the same check must pass; every other cell must
    run cleanly. One pass thus executes every cell the student sees and every cell of
    the full notebook, for the price of one run.

    Returns one record per exercise: {"check": index, "student_error": ename}.
    Raises AssertionError when a check passes on the stub or fails on the solution.
    """
    nb = copy.deepcopy(nb)
    triples = {check: sol for _, sol, check in exercises(nb)}
    solutions = set(triples.values())
    client = make_client(nb, timeout)
    records = []
    with client.setup_kernel(env=kernel_env(fast)):
        for i, cell in enumerate(nb.cells):
            if cell.cell_type != "code" or i in solutions:
                continue
            if i in triples:
                client.allow_errors = True
                client.execute_cell(cell, i)
                client.allow_errors = False
                errors = [o for o in cell.outputs if o.output_type == "error"]
                assert errors, f"check cell {i} passed on the student's stub"
                ename = errors[0].ename
                assert ename in EXPECTED_STUDENT_ERRORS, (
                    f"check cell {i} failed on the stub with {ename}, expected one of "
                    f"{EXPECTED_STUDENT_ERRORS}: {errors[0].evalue}")
                client.execute_cell(nb.cells[triples[i]], triples[i])
                client.execute_cell(cell, i)  # raises CellExecutionError if the solution fails
                records.append({"check": i, "student_error": ename})
            else:
                client.execute_cell(cell, i)
    return records


def strip_volatile(nb):
    """Drop metadata that changes on every run so that re-running gives small diffs."""
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell.metadata.pop("ExecuteTime", None)
    return nb


def build(names=None, fast: bool = False) -> int:
    """Re-create each ``.ipynb`` from its ``.py`` and execute it in place."""
    for py_path in lesson_sources(names):
        t0 = time.perf_counter()
        nb = jupytext.read(py_path)
        nb.metadata.setdefault("jupytext", {})["formats"] = "ipynb,py:percent"
        nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
        try:
            execute(nb, fast=fast)
        except CellExecutionError as err:
            print(f"{py_path.name}: FAILED\n{err}", file=sys.stderr)
            return 1
        strip_volatile(nb)
        ipynb_path = py_path.with_suffix(".ipynb")
        jupytext.write(nb, ipynb_path)
        # Keep the .py byte-identical to what jupytext would write from the notebook.
        jupytext.write(nb, py_path, fmt="py:percent")
        size = ipynb_path.stat().st_size / 1024
        print(f"{py_path.name}: executed in {time.perf_counter() - t0:.1f} s, "
              f"{ipynb_path.name} is {size:.0f} KB")
    return 0


def assignments(out: Path, names=None) -> int:
    """Write the student notebooks (no solutions, no outputs) to ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    for py_path in lesson_sources(names):
        nb = jupytext.read(py_path)
        n = len(exercises(nb))
        nbformat.write(student_version(nb), out / f"{py_path.stem}.ipynb")
        print(f"{out / (py_path.stem + '.ipynb')}: {n} exercises")
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
    p.add_argument("names", nargs="*", help="lesson name prefixes, e.g. 01 02 (default: all)")
    p.add_argument("--fast", action="store_true", help="execute with LESSONS_FAST=1 (for a quick look)")
    p = sub.add_parser("assignments", help="write student notebooks without solutions")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "build" / "assignments")
    p.add_argument("names", nargs="*")
    sub.add_parser("check", help="exit 1 if any pair is out of sync")
    args = parser.parse_args(argv)
    if args.command == "build":
        return build(args.names, fast=args.fast)
    if args.command == "assignments":
        return assignments(args.out, args.names)
    return check()


if __name__ == "__main__":
    sys.exit(main())
