# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-dev

.PHONY: demo lint test test-all bench lessons assignments grade clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e ".[dev,lessons]"
	touch $(STAMP)

# The main job in small: a Mamba trained in context by hand-written backprop, then paper 1's
# headline (gated one-layer Mamba vs linear attention vs kernels) at --quick sizes.
demo: $(STAMP)
	MPLBACKEND=Agg $(PY) -m mamba_from_scratch demo --out results/demo
	MPLBACKEND=Agg $(PY) -m mamba_from_scratch icl-theory --quick --out results/icl_theory_quick
	@echo "Figures and results: results/demo/ (loss_curve.png, metrics.json) and results/icl_theory_quick/ (error_vs_N.png, metrics.csv, table.md)"

# The linter over the package, the tests, the scripts and the lessons' .py sources (rules and
# the reasons for each ignore: [tool.ruff] in pyproject.toml, which also says why `ruff format`
# is not enforced).
lint: $(STAMP)
	$(PY) -m ruff check .

# The whole suite: the linter, then unit tests, the CUDA kernels under the simulator, and the
# lessons in fast mode.
test: lint
	MPLBACKEND=Agg $(PY) -m pytest -q

# Also the slow experiment checks.
test-all: $(STAMP)
	MPLBACKEND=Agg $(PY) -m pytest -q -m ""

bench: $(STAMP)
	$(PY) -m mamba_from_scratch bench scan
	$(PY) -m mamba_from_scratch bench train-step

# Re-create each lesson notebook from its jupytext .py and execute it in full mode.
lessons: $(STAMP)
	$(PY) lessons/_tools/notebooks.py build

# The nbgrader release (solutions and hidden tests stripped, cells locked), made by
# `nbgrader generate_assignment` in the course directory build/assignments/: the student
# notebooks are build/assignments/release/NN_title/NN_title.ipynb (with their _data/).
assignments: $(STAMP)
	$(PY) lessons/_tools/notebooks.py assignments --out build/assignments

# Grade students' notebooks with `nbgrader autograde`: SUBMISSIONS holds one folder per
# student with that student's NN_title.ipynb files. Prints the score table per lesson and
# exercise; the graded notebooks and grades.csv land in build/grading/.
#   make grade SUBMISSIONS=path/to/submissions
grade: $(STAMP)
	@test -n "$(SUBMISSIONS)" || { echo "usage: make grade SUBMISSIONS=dir (dir/<student>/NN_title.ipynb)"; exit 2; }
	$(PY) lessons/_tools/notebooks.py grade "$(SUBMISSIONS)" --course build/grading

clean:
	rm -rf $(VENV) build results .pytest_cache
