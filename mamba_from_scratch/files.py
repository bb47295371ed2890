"""Small file helpers shared by the commands: atomic writes, CSV tables (both ways), comma-separated lists.
Tested in tests/test_files.py.

Every result file is written to a temporary name in the same folder and renamed over the
target (``os.replace`` is atomic on one filesystem), so an interrupted run never leaves a
half-written file and a re-run replaces files whole.
"""
from __future__ import annotations

import csv
import io
import os


def atomic_write(path, text):
    """Write ``text`` to ``path`` through a temporary file in the same folder."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", newline="") as f:
        f.write(text)
    os.replace(tmp, path)


def save_figure(fig, path, dpi=110):
    """``fig.savefig(path)`` through a temporary file (same format: the name ends in .png)."""
    tmp = f"{path}.tmp{os.getpid()}.png"
    fig.savefig(tmp, dpi=dpi)
    os.replace(tmp, path)


def write_csv(path, rows, columns=None, float_format=None, lineterminator="\r\n"):
    """Rows (dicts) as a CSV table with a header, written atomically.

    Args:
        rows: list of dicts; a key missing from a row is an empty cell.
        columns: the columns, in order (default: the first row's keys).
        float_format: e.g. ".6g" to round floats (default: Python's shortest repr).
        lineterminator: the csv module's default "\\r\\n"; icl-theory's tables use "\\n" (as
            committed, so re-runs reproduce them byte for byte).
    """
    columns = list(rows[0]) if columns is None else list(columns)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator=lineterminator)
    writer.writerow(columns)
    for row in rows:
        cells = [row.get(c, "") for c in columns]
        if float_format is not None:
            cells = [format(x, float_format) if isinstance(x, float) else x for x in cells]
        writer.writerow(cells)
    atomic_write(path, buf.getvalue())


def read_csv(path):
    """A CSV table with a header back as a list of dicts, every cell a string."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def parse_list(text, kind=int, name="the value"):
    """[kind(item), ...] from a comma-separated string such as "16,32, 64" (empty items are
    skipped). Raises ValueError naming ``name`` when an item is not a ``kind``."""
    try:
        return [kind(t) for t in str(text).split(",") if t.strip()]
    except ValueError:
        what = "integers" if kind is int else "numbers"
        raise ValueError(f"{name} must be comma-separated {what}, got {text!r}") from None
