"""Benchmark tables: the trained results (and other proxies) per architecture.

A `Table` is a csv held in memory: column names and rows of text, as the csv
module reads them, plus a name for messages. It comes from one of three places:

    tables.packaged(name) a table shipped in the package (epsinas_onnx/data/,
                          built by tools/build_tables.py; PROVENANCE.md there)
    tables.read_csv(path) a user's own csv (--accuracies FILE)
    benchmark_files.read  an official benchmark file (--benchmark-file PATH)

`targets_table` and `side_table` pick the right one for a space, the default
being the packaged tables the space declares (protocol.Space: target_tables,
baselines_table, proxies_table). Reading a table needs only the standard library.
"""

from __future__ import annotations

from epsinas_onnx.core.errors import UserError
from epsinas_onnx.core.tables import Table, packaged, read_csv  # the reader, in the core: spaces read packaged tables too

PACKAGED = "packaged"  # the value of --baselines / --proxies given without a file


def targets_table(space: str, *, accuracies=None, benchmark_file=None, archs=None) -> Table:
    """The table of targets for `space`: the user's csv (--accuracies), an
    official benchmark file (--benchmark-file), else the packaged one. Where
    the space ships several (nb101: test_143, test accuracy; naslib_500,
    validation accuracy), given the stored `archs` (format_arch texts) the
    one holding more of them is chosen, else the first."""
    if accuracies is not None and benchmark_file is not None:
        raise UserError("give --accuracies FILE or --benchmark-file PATH, not both")
    if accuracies is not None:
        return read_csv(accuracies)
    if benchmark_file is not None:
        from epsinas_onnx.experiments import benchmark_files

        return benchmark_files.read(space, benchmark_file, archs)
    from epsinas_onnx.spaces import get_space

    names = get_space(space).target_tables
    if not names:
        raise UserError(f"no packaged table of targets for {space}: give --accuracies FILE")
    if len(names) == 1 or archs is None:
        return packaged(names[0])
    tables = [packaged(n) for n in names]
    return max(tables, key=lambda t: len(_covered(space, t, archs)))  # max keeps the first of a tie


def _covered(space: str, table: Table, archs) -> set[str]:
    from epsinas_onnx.core.tables import pick_column
    from epsinas_onnx.spaces import get_space

    module = get_space(space)
    column = pick_column(table.columns, module.arch_columns, "architecture", table, "--arch-column")
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
    from epsinas_onnx.spaces import SPACES, get_space

    def table_of(name: str) -> str | None:
        module = get_space(name)
        return module.baselines_table if kind == "baselines" else module.proxies_table

    if table_of(space) is None:
        having = [name for name in SPACES if table_of(name) is not None]
        raise UserError(f"no packaged {kind} for {space} (there are for {', '.join(having)}): give --{kind} FILE")
    return packaged(table_of(space))
