"""How the commands print rows: an aligned table, json or csv."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path


def render(rows: list[dict], fmt: str, single: bool = False) -> str:
    if fmt == "json":
        clean = [{k: _json_value(v) for k, v in row.items()} for row in rows]
        return json.dumps(clean[0] if single else clean, indent=2) + "\n"
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else [], lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _text(v) for k, v in row.items()})
        return buffer.getvalue()
    if single and rows:
        width = max(len(k) for k in rows[0])
        return "".join(f"{k:<{width}}  {_text(v)}\n" for k, v in rows[0].items())
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
    cells = [[_text(row.get(c)) for c in columns] for row in rows]
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
