"""How the commands print: their own lines (`say`), and rows as an aligned
table, json or csv (`show_rows`).

Every value from a file (a tensor name, a file name, a stored text) is
printed escaped (errors.printable) wherever a person reads it: lines, the
table, csv on a terminal. csv and json written to a pipe or a file are the
data itself: csv's quoting keeps a newline inside its field, json escapes
control characters as \\u001b, and neither is passed through click's
stripping of escape sequences, so reading them back gives the stored text.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from pathlib import Path

import click

from epsinas_onnx.core.errors import printable


def say(text: str, err: bool = False) -> None:
    """One line of the tool's own, values from files in it escaped."""
    click.echo(printable(text), err=err)


def warn(text: str) -> None:
    say(f"warning: {text}", err=True)


def show_rows(rows: list[dict], fmt: str, single: bool = False) -> None:
    """Rows on stdout (see the module docstring)."""
    terminal = sys.stdout.isatty()
    click.echo(render(rows, fmt, single, escape=terminal or fmt == "table"), nl=False, color=True)


def render(rows: list[dict], fmt: str, single: bool = False, escape: bool = True) -> str:
    """The rows as text; escape: a csv's fields escaped (a table's always are)."""
    if fmt == "json":
        clean = [{k: _json_value(v) for k, v in row.items()} for row in rows]
        return json.dumps(clean[0] if single else clean, indent=2) + "\n"
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else [], lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: printable(_text(v)) if escape else _text(v) for k, v in row.items()})
        return buffer.getvalue()
    if single and rows:
        width = max(len(k) for k in rows[0])
        return "".join(f"{k:<{width}}  {printable(_text(v))}\n" for k, v in rows[0].items())
    return table(rows)


def top64_text(hits, out_of: int, std: float | None = None) -> str:
    """top-64/top-5 % in the one form every command prints: hits/out_of (out_of
    is 64, or fewer where fewer were scored); a mean over draws keeps its
    decimals and its std."""
    if isinstance(hits, float) and math.isnan(hits):
        return "nan"
    text = f"{hits:g}/{out_of}"
    return text if std is None else f"{text} \u00b1 {std:.2g}"


def table(rows: list[dict]) -> str:
    if not rows:
        return "(no rows)\n"
    columns = list(rows[0])
    cells = [[printable(_text(row.get(c))) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in cells]
    return "\n".join(lines) + "\n"


def _json_value(v):
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, tuple):
        return list(v)
    return v


def _text(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.6g}"
    if isinstance(v, (list, tuple)):
        return " ".join(_text(x) for x in v) if not all(isinstance(x, str) for x in v) else "; ".join(v)
    return str(v)


def write_atomically(path: Path, payload: bytes) -> None:
    """Write `payload` to `path` whole or not at all."""
    from epsinas_onnx.core import atomic

    atomic.write_atomically(path, lambda f: f.write(payload))
