"""Are two results stores the same results? Row by row, bit for bit.

    python benchmarks/compare_stores.py BEFORE.sqlite AFTER.sqlite [--tolerance 4.8e-7]

Rows are matched on their key (space, arch, weights, data, settings); for each
pair the score is compared as float64 bits (NaN equal to NaN), and nan_reason,
error and params as values. Timing columns (seconds, created) and the device
are not results and are ignored. Prints one summary line, then up to 10
differences; exit 0 when every row of either store has an equal partner, 1
otherwise. --tolerance allows an absolute score difference (the NaN set must
still match), for a change that reorders a float sum on purpose.
"""

from __future__ import annotations

import argparse
import math
import sqlite3
import struct
import sys

KEY = ("space", "arch", "weights", "data", "settings")
COMPARED = ("score", "nan_reason", "error", "params")


def read_rows(path: str) -> dict[tuple, dict]:
    # read-only: a comparison must never create or change a store
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        db.row_factory = sqlite3.Row
        rows = db.execute(f"SELECT {', '.join(KEY + COMPARED)} FROM results").fetchall()
    return {tuple(row[k] for k in KEY): dict(row) for row in rows}


def score_bits(value) -> bytes | None:
    if value is None:  # SQLite stores a NaN REAL as NULL
        return None
    return b"nan" if math.isnan(value) else struct.pack("<d", value)


def differences(before: dict, after: dict, tolerance: float) -> list[str]:
    found = []
    for key in sorted(before.keys() - after.keys()):
        found.append(f"only in the first: {key[:2]}")
    for key in sorted(after.keys() - before.keys()):
        found.append(f"only in the second: {key[:2]}")
    for key in sorted(before.keys() & after.keys()):
        a, b = before[key], after[key]
        for column in COMPARED:
            if column == "score":
                same = score_bits(a[column]) == score_bits(b[column])
                if not same and tolerance and None not in (a[column], b[column]):
                    same = abs(a[column] - b[column]) <= tolerance
            else:
                same = a[column] == b[column]
            if not same:
                found.append(f"{key[1]}: {column} {a[column]!r} != {b[column]!r}")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first")
    parser.add_argument("second")
    parser.add_argument("--tolerance", type=float, default=0.0, help="absolute score difference allowed (default 0: bitwise)")
    args = parser.parse_args(argv)
    before, after = read_rows(args.first), read_rows(args.second)
    found = differences(before, after, args.tolerance)
    nan = sum(r["score"] is None or math.isnan(r["score"]) for r in before.values())
    how = f"within {args.tolerance:g}" if args.tolerance else "bitwise"
    print(f"{len(before)} rows vs {len(after)} rows ({nan} NaN in the first): "
          f"{'equal ' + how if not found else f'{len(found)} differences'}")
    for line in found[:10]:
        print(f"  {line}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
