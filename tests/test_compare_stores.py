"""benchmarks/compare_stores.py: the check that a change left a whole store's results as they were."""

import sqlite3

from benchmarks.compare_stores import main

ROW = ("nb201", "a", "[1e-07, 1.0]", "d", "{}")


def _store(path, rows):
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE results (space, arch, weights, data, settings, score, nan_reason, error, params)")
        db.executemany("INSERT INTO results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    return str(path)


def test_equal_stores_pass_and_one_bit_fails(tmp_path, capsys):
    same = _store(tmp_path / "a.sqlite", [(*ROW, 0.5, None, None, 10), (*ROW[:1], "b", *ROW[2:], None, "constant", None, 10)])
    copy = _store(tmp_path / "b.sqlite", [(*ROW, 0.5, None, None, 10), (*ROW[:1], "b", *ROW[2:], None, "constant", None, 10)])
    assert main([same, copy]) == 0
    nudged = _store(tmp_path / "c.sqlite", [(*ROW, 0.5000000000000001, None, None, 10),
                                            (*ROW[:1], "b", *ROW[2:], None, "constant", None, 10)])
    assert main([same, nudged]) == 1
    assert main([same, nudged, "--tolerance", "1e-9"]) == 0
    assert "a: score" in capsys.readouterr().out


def test_a_missing_row_or_other_reason_fails(tmp_path):
    full = _store(tmp_path / "a.sqlite", [(*ROW, None, "constant", None, 10), (*ROW[:1], "b", *ROW[2:], 0.1, None, None, 3)])
    short = _store(tmp_path / "b.sqlite", [(*ROW, None, "constant", None, 10)])
    other = _store(tmp_path / "c.sqlite", [(*ROW, None, "zero", None, 10), (*ROW[:1], "b", *ROW[2:], 0.1, None, None, 3)])
    assert main([full, short]) == 1
    assert main([full, other]) == 1
