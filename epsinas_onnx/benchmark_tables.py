"""Benchmark tables: the trained results (and other proxies) per architecture.

A `Table` is a csv held in memory: column names and rows of text, as the csv
module reads them, plus a name for messages. It comes from one of three places:

    packaged(name)        a table shipped in the package (epsinas_onnx/data/,
                          built by tools/build_tables.py; PROVENANCE.md there)
    read_csv(path)        a user's own csv (--accuracies FILE)
    benchmark_files.read  an official benchmark file (--benchmark-file PATH)

`targets_table` and `side_table` pick the right one for a space, the default
being the packaged tables. Reading a table needs only the standard library.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import io
from importlib import resources

from epsinas_onnx.errors import UserError
from epsinas_onnx.textfile import read_text

PACKAGED = "packaged"  # the value of --baselines / --proxies given without a file

# the packaged tables of each space: targets (first = default), baselines, proxies
PACKAGED_TARGETS = {"nb201": ("nb201_accuracies",), "nb101": ("nb101_test_143", "nb101_naslib_500"),
                    "nlp": ("nlp_wt2_summary",)}
PACKAGED_BASELINES = {"nb201": "nb201_baselines", "nb101": "nb101_naslib_500"}
PACKAGED_PROXIES = {"nb201": "nb201_proxies", "nb101": "nb101_naslib_500"}


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


def targets_table(space: str, *, accuracies=None, benchmark_file=None, archs=None) -> Table:
    """The table of targets for `space`: the user's csv (--accuracies), an
    official benchmark file (--benchmark-file), else the packaged one. nb101
    ships two tables (test_143: test accuracy; naslib_500: validation
    accuracy); given the stored `archs` (format_arch texts) the one holding
    more of them is chosen, else test_143."""
    if accuracies is not None and benchmark_file is not None:
        raise UserError("give --accuracies FILE or --benchmark-file PATH, not both")
    if accuracies is not None:
        return read_csv(accuracies)
    if benchmark_file is not None:
        from epsinas_onnx import benchmark_files

        return benchmark_files.read(space, benchmark_file, archs)
    names = PACKAGED_TARGETS[space]
    if len(names) == 1 or archs is None:
        return packaged(names[0])
    tables = [packaged(n) for n in names]
    return max(tables, key=lambda t: len(_covered(space, t, archs)))  # max keeps the first of a tie


def _covered(space: str, table: Table, archs) -> set[str]:
    from epsinas_onnx.evaluation import ARCH_COLUMNS, _pick
    from epsinas_onnx.spaces import get_space

    module = get_space(space)
    column = _pick(table.columns, ARCH_COLUMNS[space], "architecture", table, "--arch-column")
    keys = set()
    for row in table.rows:
        try:
            keys.add(module.format_arch(module.parse(" ".join(row[c] for c in column.split(",")))))
        except UserError:
            continue
    return keys & set(archs)


def side_table(space: str, source, kind: str):
    """A --baselines / --proxies argument as a Table: None stays None, PACKAGED
    is the space's packaged table, anything else a csv path."""
    if source is None:
        return None
    if source != PACKAGED:
        return read_csv(source)
    tables = PACKAGED_BASELINES if kind == "baselines" else PACKAGED_PROXIES
    if space not in tables:
        raise UserError(f"no packaged {kind} for {space} (there are for {', '.join(tables)}): give --{kind} FILE")
    return packaged(tables[space])
