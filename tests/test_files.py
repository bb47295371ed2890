"""files.py: atomic writes leave no temporary file, CSV tables round-trip, list parsing."""
import pytest

from mamba_from_scratch.files import atomic_write, parse_list, read_csv, write_csv


def test_atomic_write_replaces_whole_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "a.md"
    atomic_write(path, "first\n")
    atomic_write(path, "second\n")
    assert path.read_text() == "second\n" and [p.name for p in tmp_path.iterdir()] == ["a.md"]


def test_csv_round_trips_with_missing_cells_commas_and_rounding(tmp_path):
    rows = [{"a": 1, "b": 0.123456789, "c": "x,y"}, {"a": 2, "c": 'say "hi"'}]
    write_csv(tmp_path / "t.csv", rows, ["a", "b", "c"], float_format=".6g", lineterminator="\n")
    assert (tmp_path / "t.csv").read_bytes().startswith(b'a,b,c\n1,0.123457,"x,y"\n')
    back = read_csv(tmp_path / "t.csv")
    assert back == [{"a": "1", "b": "0.123457", "c": "x,y"}, {"a": "2", "b": "", "c": 'say "hi"'}]
    write_csv(tmp_path / "u.csv", rows[:1])                          # csv's default dialect, full repr
    assert (tmp_path / "u.csv").read_bytes() == b'a,b,c\r\n1,0.123456789,"x,y"\r\n'


def test_parse_list():
    assert parse_list("16, 32,,64") == [16, 32, 64] and parse_list("0.5,-3", float) == [0.5, -3.0]
    with pytest.raises(ValueError, match="--N must be comma-separated integers, got '1,x'"):
        parse_list("1,x", int, "--N")
