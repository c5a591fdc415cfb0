"""Tables: a csv held in memory, from a user's file or one shipped in the package.

A `Table` is column names and rows of text, as the csv module reads them, plus
a name for messages. `read_csv(path)` reads a user's csv; `packaged(name)` a
table shipped in epsinas_onnx/data/ (built by tools/build_tables.py; its
sources in PROVENANCE.md there). This is the core's reader: the standard
library only, so spaces and experiments alike may use it; which table a
command takes for a space is benchmark_tables'.
"""

from __future__ import annotations

import csv
import math
import dataclasses
import gzip
import io
from importlib import resources

from epsinas_onnx.core.errors import UserError
from epsinas_onnx.core.textfile import read_text


@dataclasses.dataclass(frozen=True)
class Table:
    name: str  # what messages call it: a path, or "the packaged table x"
    columns: list[str]
    rows: list[dict[str, str]]

    def __str__(self) -> str:
        return self.name


def _parse(text: str, name: str) -> Table:
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        rows = list(reader)
    except csv.Error as exc:
        raise UserError(f"{name} is not a readable csv file ({exc})") from None
    return Table(name, list(reader.fieldnames or []), rows)


def read_csv(path) -> Table:
    """A csv file as a Table (one clear line if it is missing, not a regular
    file, not UTF-8 text or not csv: textfile.read_text)."""
    return _parse(read_text(path, "file"), str(path))


def packaged_names() -> list[str]:
    folder = resources.files("epsinas_onnx") / "data"
    return sorted(p.name[: -len(".csv.gz")] for p in folder.iterdir() if p.name.endswith(".csv.gz"))


def packaged(name: str) -> Table:
    """A table shipped in the package, by name (e.g. "nb201_accuracies")."""
    item = resources.files("epsinas_onnx") / "data" / f"{name}.csv.gz"
    if not item.is_file():
        raise UserError(f"no packaged table {name!r} (there are {', '.join(packaged_names())}): "
                        "reinstall epsinas-onnx, or give the file with --accuracies")
    return _parse(gzip.decompress(item.read_bytes()).decode("utf-8"), f"the packaged table {name}")


def as_table(source) -> Table:
    """A Table as it is, or a csv path read into one."""
    return source if isinstance(source, Table) else read_csv(source)


def pick_column(columns: list[str], candidates, what: str, source, option: str) -> str:
    """The first of `candidates` that `columns` hold ("a,b": both a and b),
    or one line naming the columns there are and the option that names one."""
    for candidate in candidates:
        if all(part in columns for part in candidate.split(",")):
            return candidate
    raise UserError(f"{source} has no {what} column ({' or '.join(candidates)}); its columns are "
                    f"{', '.join(columns)}: name one with {option}")


def number_or_nan(text) -> float:
    """A csv cell as a float: NaN for an empty or non-numeric cell."""
    try:
        return float(text) if text not in ("", None) else math.nan
    except ValueError:
        return math.nan
