"""The results store: one SQLite row per scored architecture.

A row's key is (space, arch, weights, data, settings):

    space     the search space ("nb201", ...)
    arch      the architecture in the space's own encoding (format_arch)
    weights   the weight pair as JSON, e.g. "[1e-07, 1.0]"
    data      fingerprint of the exact batch (`fingerprint`): the same batch
              read from another path is the same key, another batch is not
    settings  canonical JSON of the options that change the score (`settings_key`)

The key is UNIQUE, so rerunning a bench never duplicates a row. A row holds
either a result (`score`, NULL for NaN, with `nan_reason`) or an `error` (the
architecture could not be scored: not a result, retried by the next run).

Only one process writes (the bench driver); WAL mode lets `results` and
`evaluate` read while a bench runs.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import sqlite3
from pathlib import Path

import numpy as np

from epsinas_onnx.errors import UserError

SCHEMA_VERSION = 1

KEY = ("space", "arch", "weights", "data", "settings")
# columns in listing order
COLUMNS = (
    "space", "arch", "score", "nan_reason", "error", "params", "seconds",
    "weights", "data", "settings", "data_description", "device", "created",
)

_CREATE = """
CREATE TABLE IF NOT EXISTS results (
    id               INTEGER PRIMARY KEY,
    space            TEXT NOT NULL,
    arch             TEXT NOT NULL,
    weights          TEXT NOT NULL,
    data             TEXT NOT NULL,
    settings         TEXT NOT NULL,
    score            REAL,
    nan_reason       TEXT,
    error            TEXT,
    params           INTEGER,
    seconds          REAL,
    data_description TEXT,
    device           TEXT,
    created          TEXT NOT NULL,
    UNIQUE (space, arch, weights, data, settings)
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def fingerprint(array: np.ndarray) -> str:
    """sha256 of the batch's dtype, shape and bytes (C order), first 16 hex digits."""
    array = np.ascontiguousarray(array)
    digest = hashlib.sha256()
    digest.update(array.dtype.str.encode())
    digest.update(json.dumps(list(array.shape)).encode())
    digest.update(array.tobytes())
    return digest.hexdigest()[:16]


def weights_key(weights) -> str:
    """The weight pair as canonical JSON: 1e-7 and 0.0000001 give the same key."""
    return json.dumps([float(w) for w in weights])


def settings_key(settings: dict) -> str:
    """Canonical JSON (sorted keys, no spaces) of a settings dict; None values
    ("the model decides") are left out. bench makes every other default explicit,
    so a key reads the same whether an option was given at its default or not."""
    return json.dumps(_drop_none(settings), sort_keys=True, separators=(",", ":"))


def _drop_none(value):
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, tuple):
        return [_drop_none(v) for v in value]
    return value


def config_id(weights: str, data: str, settings: str) -> str:
    """A short name of one (weights, data, settings) combination, for choosing
    among several in one store."""
    return hashlib.sha256(f"{weights}\n{data}\n{settings}".encode()).hexdigest()[:8]


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


class ResultStore:
    """The SQLite file of bench results. `create=False` refuses a missing file."""

    def __init__(self, path, create: bool = True):
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise UserError(f"results store not found: {self.path} (run `epsinas-onnx bench ... --store {self.path}` first)")
        if create and not self.path.parent.is_dir():
            raise UserError(f"cannot create the results store {self.path}: folder {self.path.parent} does not exist")
        try:
            self.db = sqlite3.connect(self.path, timeout=60)
            self.db.row_factory = sqlite3.Row
            self.db.execute("PRAGMA busy_timeout = 60000")
            if create:
                self.db.execute("PRAGMA journal_mode = WAL")
                # WAL + NORMAL: a commit survives a killed process (not a power cut) without an fsync each
                self.db.execute("PRAGMA synchronous = NORMAL")
                self.db.executescript(_CREATE)
                self.db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                self.db.commit()
            else:
                tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                if "results" not in tables:
                    raise UserError(f"{self.path} is not an epsinas-onnx results store (it has no results table)")
        except sqlite3.DatabaseError as exc:
            raise UserError(f"{self.path} is not a readable results store ({exc})") from None

    def close(self) -> None:
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---------------------------------------------------------------- writing

    def done(self, space: str, weights: str, data: str, settings: str) -> set[str]:
        """The archs that already have a result (errors excluded: they are retried)."""
        rows = self.db.execute(
            "SELECT arch FROM results WHERE space = ? AND weights = ? AND data = ? AND settings = ? AND error IS NULL",
            (space, weights, data, settings),
        )
        return {r[0] for r in rows}

    def add(self, row: dict) -> None:
        """Insert one row; never a duplicate key. A result replaces an earlier error
        row of the same key; anything else already stored is kept as it is."""
        score = row.get("score")
        if score is not None and math.isnan(score):
            score = None
        values = {
            "space": row["space"], "arch": row["arch"], "weights": row["weights"], "data": row["data"],
            "settings": row["settings"], "score": score, "nan_reason": row.get("nan_reason"),
            "error": row.get("error"), "params": row.get("params"), "seconds": row.get("seconds"),
            "data_description": row.get("data_description"), "device": row.get("device"),
            "created": row.get("created") or now(),
        }
        names = ", ".join(values)
        marks = ", ".join(f":{k}" for k in values)
        updates = ", ".join(f"{k} = excluded.{k}" for k in values if k not in KEY)
        self.db.execute(
            f"INSERT INTO results ({names}) VALUES ({marks}) "
            f"ON CONFLICT ({', '.join(KEY)}) DO UPDATE SET {updates} WHERE results.error IS NOT NULL",
            values,
        )

    def commit(self) -> None:
        self.db.commit()

    # ---------------------------------------------------------------- reading

    def rows(self, space: str | None = None) -> list[dict]:
        """Every row (of one space), oldest first, with its `config` id."""
        query = f"SELECT {', '.join(COLUMNS)} FROM results"
        args: tuple = ()
        if space is not None:
            query += " WHERE space = ?"
            args = (space,)
        out = []
        for r in self.db.execute(query + " ORDER BY id", args):
            row = dict(r)
            row["config"] = config_id(row["weights"], row["data"], row["settings"])
            row["score"] = float("nan") if row["score"] is None and row["error"] is None else row["score"]
            out.append(row)
        return out

    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
