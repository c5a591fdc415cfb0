"""The results store: one SQLite row per scored architecture.

A row's key is (space, arch, weights, data, settings):

    space     the search space ("nb201", ...)
    arch      the architecture in the space's own encoding (format_arch)
    weights   the weight pair as JSON, e.g. "[1e-07, 1.0]"
    data      fingerprint of the exact batch (`fingerprint`): the same batch
              read from another path is the same key, another batch is not
    settings  canonical JSON of the options that change the score (`settings_key`)

The key is UNIQUE, so rerunning a bench never duplicates a row. An existing
file is a store of this version when its tables are exactly what _CREATE
makes (columns, UNIQUE keys, no triggers: `schema`), and its rows' weights
and settings are the JSON bench writes (`rows` checks them). A row holds
either a result (`score`, NULL for NaN, with `nan_reason`) or an `error` (the
architecture could not be scored: not a result, retried by the next run).

`bench --proxies` keeps the other proxies' values in a second table,
`proxies`, one row per (space, arch, data, settings, proxy): `settings` is the
canonical JSON of the export options and what the proxy's value depends on
(epsinas_onnx/proxies: its initialisation, batch, seed), `data` the batch's
fingerprint as above; a row holds `value` (NULL for NaN, with `nan_reason`) or
an `error`, and the seconds the proxy took. A store written before the table
existed gets it from the first `bench --proxies` (ensure_proxies); readers that
do not know it ignore it (the schema version is unchanged). A store with or
without it is a store; where it is there, it must be what _CREATE_PROXIES makes,
checked as the other tables are.

A bench driver writes its rows (its workers never touch the file); WAL mode
lets `results` and `evaluate` read while a bench runs, and another bench
write at the same time.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import math
import os
import sqlite3
import stat
import time
from pathlib import Path

import numpy as np

from epsinas_onnx.core.errors import UserError
from epsinas_onnx.core.textfile import NOT_REGULAR, file_status, open_regular_file

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
_CREATE_PROXIES = """
CREATE TABLE IF NOT EXISTS proxies (
    id         INTEGER PRIMARY KEY,
    space      TEXT NOT NULL,
    arch       TEXT NOT NULL,
    data       TEXT NOT NULL,
    settings   TEXT NOT NULL,
    proxy      TEXT NOT NULL,
    value      REAL,
    nan_reason TEXT,
    error      TEXT,
    seconds    REAL,
    created    TEXT NOT NULL,
    UNIQUE (space, arch, data, settings, proxy)
)
"""
PROXY_KEY = ("space", "arch", "data", "settings", "proxy")

NOT_THIS_VERSION = "move it aside or give --store another file"


REQUIRED_TABLES = ("results", "meta")
OPTIONAL_TABLES = ("proxies",)  # made by the first bench --proxies (ensure_proxies)


def schema(db: sqlite3.Connection) -> dict:
    """What makes a file a store: each table's columns (name, type, NOT NULL,
    default, primary key), its UNIQUE keys (their columns), and the triggers.
    An optional table the file lacks is absent from the result."""
    present = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    found = {}
    for table in REQUIRED_TABLES + tuple(t for t in OPTIONAL_TABLES if t in present):
        columns = [tuple(r[1:]) for r in db.execute(f"PRAGMA table_info({table})")]
        unique = sorted(tuple(c[2] for c in db.execute(f"PRAGMA index_info('{index[1]}')"))
                        for index in db.execute(f"PRAGMA index_list({table})") if index[2])
        found[table] = {"columns": columns, "unique": unique}
    found["triggers"] = sorted(r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'"))
    return found


def _expected_schema() -> dict:
    """The schema _CREATE and _CREATE_PROXIES make, read back from an empty database in memory."""
    db = sqlite3.connect(":memory:")
    try:
        db.executescript(_CREATE + ";" + _CREATE_PROXIES)
        return schema(db)
    finally:
        db.close()


def schema_difference(found: dict, expected: dict) -> str | None:
    """What in `found` differs from `expected` (schema), in words, or None.
    An optional table is compared only where `found` has it."""
    if found["triggers"]:
        return f"it has triggers ({', '.join(found['triggers'])}), which change what is stored"
    for table in REQUIRED_TABLES + tuple(t for t in OPTIONAL_TABLES if t in found):
        have, want = found[table], expected[table]
        names = [c[0] for c in have["columns"]]
        missing = [c[0] for c in want["columns"] if c[0] not in names]
        extra = [n for n in names if n not in {c[0] for c in want["columns"]}]
        if missing or extra:
            parts = ([f"no column {', '.join(missing)}"] if missing else []) + \
                    ([f"columns {', '.join(extra)} it should not have"] if extra else [])
            return f"its {table} table has {' and '.join(parts)}"
        if have["columns"] != want["columns"]:
            return f"its {table} table's columns are declared otherwise (types, NOT NULL, keys)"
        if have["unique"] != want["unique"]:
            keys = "; ".join(f"UNIQUE ({', '.join(k)})" for k in want["unique"])
            return f"its {table} table lacks the key {keys}"
    return None


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
    """The SQLite file of bench results. `create=False` (`results`, `evaluate`)
    refuses a missing file and never writes: where the file or its folder is
    not writable it opens the store read-only, so such a store is still readable.

    Several processes may write one store at once (two benches, the same or
    other configurations): WAL mode, a busy timeout and the UNIQUE key keep
    every row exactly once. Every SQLite failure (not a database, damaged,
    read-only, a full disk, another schema) is a UserError naming the file."""

    BUSY_SECONDS = 60

    def __init__(self, path, create: bool = True):
        self.path = Path(path)
        self.db = None
        self.identity = None  # (device, inode) of the file opened: check_still_there
        status = file_status(self.path, "the results store")
        if status is not None and stat.S_ISDIR(status.st_mode):
            raise UserError(f"the results store {self.path} is not a file: give --store a file name")
        if status is not None and not stat.S_ISREG(status.st_mode):
            raise UserError(f"the results store {self.path} {NOT_REGULAR}: give --store a file name")
        if not create and status is None:
            raise UserError(f"results store not found: {self.path} (run `epsinas-onnx bench ... --store {self.path}` first)")
        parent = file_status(self.path.parent, "the results store's folder")
        if create and (parent is None or not stat.S_ISDIR(parent.st_mode)):
            raise UserError(f"cannot create the results store {self.path}: folder {self.path.parent} does not exist")
        if create and not (os.access(self.path.parent, os.W_OK) and (status is None or self._writable())):
            # checked first: SQLite would open it read-only and leave -wal / -shm files beside it
            raise UserError(f"cannot write the results store {self.path}: it or its folder is read-only "
                            "(make both writable, or give --store another file)")
        if status is not None:  # a regular file now, on the descriptor (a FIFO swapped in would block SQLite)
            with open_regular_file(self.path, "the results store", kind=": give --store a file name"):
                pass
        try:
            self.db = sqlite3.connect(self.path, timeout=self.BUSY_SECONDS) if create or self._writable() \
                else self._connect_read_only()
            self.db.row_factory = sqlite3.Row
            if create:
                self._create_tables()
            self._check()
            if create:
                self._use_wal()
            info = os.stat(self.path)
            self.identity = (info.st_dev, info.st_ino)
        except sqlite3.Error as exc:
            self.close()
            raise self._error(exc) from None
        except UserError:
            self.close()
            raise
        except OSError as exc:  # the file gone between SQLite's open and the stat
            self.close()
            raise UserError(f"cannot open the results store {self.path}: {exc.strerror or exc}") from None

    def _writable(self) -> bool:
        """Where the file and its folder are writable, a reader opens it as a writer
        would, so that the last one to close it tidies away its -wal and -shm files."""
        return os.access(self.path, os.W_OK) and os.access(self.path.parent, os.W_OK)

    def _connect_read_only(self) -> sqlite3.Connection:
        uri = self.path.resolve().as_uri() + "?mode=ro"
        db = sqlite3.connect(uri, uri=True, timeout=self.BUSY_SECONDS)
        try:
            db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
            return db
        except sqlite3.OperationalError:
            # a WAL store in a folder this user cannot write: SQLite cannot make the
            # shared-memory file beside it, so open it as an immutable file. Nobody
            # can be writing it then, but rows still in its -wal would be missed
            db.close()
        wal = Path(f"{self.path}-wal")
        if wal.exists() and wal.stat().st_size > 0:
            raise UserError(f"{self.path} has rows not yet merged from {wal.name} and its folder is read-only: "
                            f"make the folder writable once (any `epsinas-onnx results` then merges them), "
                            f"or copy both files to a folder you can write")
        return sqlite3.connect(uri + "&immutable=1", uri=True)

    def _create_tables(self) -> None:
        """The tables of a new (or empty) file, safe against another process doing the same."""
        self.db.execute(f"PRAGMA busy_timeout = {self.BUSY_SECONDS * 1000}")
        self.db.execute("BEGIN IMMEDIATE")  # one process at a time looks and creates
        if not self._tables():
            for statement in _CREATE.split(";"):
                if statement.strip():
                    self.db.execute(statement)
            self.db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        self.db.commit()

    def _use_wal(self) -> None:
        """WAL mode (once the file has proved to be a store: another file is left as it was)."""
        deadline = time.monotonic() + self.BUSY_SECONDS
        while True:  # switching to WAL takes a lock that the busy timeout does not always wait for
            try:
                self.db.execute("PRAGMA journal_mode = WAL")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        # WAL + NORMAL: a commit survives a killed process (not a power cut) without an fsync each
        self.db.execute("PRAGMA synchronous = NORMAL")

    def _tables(self) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}

    def _check(self) -> None:
        """A store of this schema, undamaged."""
        tables = self._tables()
        if not {"results", "meta"} <= tables:
            what = f"its tables are {', '.join(sorted(tables))}" if tables else "it is empty"
            raise UserError(f"{self.path} is an SQLite file but not an epsinas-onnx results store ({what}): "
                            "give --store another file")
        version = self.db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if version is None or version[0] != str(SCHEMA_VERSION):
            found = "no schema_version" if version is None else f"schema_version {version[0]}"
            raise UserError(f"{self.path} is a results store of another epsinas-onnx version ({found}; this one "
                            f"reads {SCHEMA_VERSION}): use the version that wrote it, or give --store a new file")
        difference = schema_difference(schema(self.db), _expected_schema())
        if difference is not None:  # changed by hand or by another program: no rerun would fix it
            raise UserError(f"{self.path} is not a results store of this version ({difference}): {NOT_THIS_VERSION}")
        problem = self.db.execute("PRAGMA quick_check(1)").fetchone()[0]
        if problem != "ok":
            raise UserError(f"{self.path} is damaged ({problem}): restore it from a copy or give --store a new file "
                            f"(`sqlite3 {self.path} .recover` may save its rows)")

    def _error(self, exc: sqlite3.Error) -> UserError:
        """One line for a failing SQLite call: what is wrong with the store, and the fix."""
        name = getattr(exc, "sqlite_errorname", "")  # Python 3.11+
        text = str(exc)
        if name == "SQLITE_FULL" or "disk is full" in text:
            return UserError(f"the disk under the results store {self.path} is full: the rows so far are kept; "
                             "free some space and rerun the same command to resume")
        if name.startswith("SQLITE_READONLY") or "readonly" in text:
            return UserError(f"cannot write the results store {self.path}: it or its folder is read-only "
                             "(make both writable, or give --store another file)")
        if name == "SQLITE_NOTADB" or "not a database" in text:
            return UserError(f"{self.path} is not an SQLite results store (file is not a database): "
                             "give --store another file, or move this one away")
        if name == "SQLITE_CORRUPT" or "malformed" in text:
            return UserError(f"{self.path} is damaged ({text}): restore it from a copy or give --store a new file")
        if name == "SQLITE_BUSY" or "locked" in text:
            return UserError(f"the results store {self.path} stayed locked by another process for "
                             f"{self.BUSY_SECONDS} s: wait for it to finish, or give --store another file")
        if name == "SQLITE_CANTOPEN" or "unable to open" in text:
            return UserError(f"cannot open the results store {self.path} ({text}): check the file and its folder's permissions")
        return UserError(f"the results store {self.path} failed ({text}): rerun the same command to resume")

    @contextlib.contextmanager
    def _sqlite_errors(self):
        try:
            yield
        except sqlite3.Error as exc:
            raise self._error(exc) from None

    def close(self) -> None:
        if self.db is not None:
            try:
                self.db.close()
            except sqlite3.Error:
                pass  # what was committed is in the file (or its -wal) already
            self.db = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---------------------------------------------------------------- writing

    def done(self, space: str, weights: str, data: str, settings: str) -> set[str]:
        """The archs that already have a result (errors excluded: they are retried)."""
        with self._sqlite_errors():
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
        with self._sqlite_errors():
            self.db.execute(
                f"INSERT INTO results ({names}) VALUES ({marks}) "
                f"ON CONFLICT ({', '.join(KEY)}) DO UPDATE SET {updates} WHERE results.error IS NOT NULL",
                values,
            )

    def commit(self) -> None:
        with self._sqlite_errors():
            self.db.commit()

    # ---------------------------------------------------------------- reading

    def _select(self, query: str, space: str | None) -> list:
        """The rows of `query` (a SELECT of one table), of one space where given, oldest first."""
        args: tuple = ()
        if space is not None:
            query += " WHERE space = ?"
            args = (space,)
        with self._sqlite_errors():
            return self.db.execute(query + " ORDER BY id", args).fetchall()

    def rows(self, space: str | None = None) -> list[dict]:
        """Every row (of one space), oldest first, with its `config` id; a row
        whose weights or settings are not what bench writes is one line."""
        out = []
        for r in self._select(f"SELECT id, {', '.join(COLUMNS)} FROM results", space):
            row = dict(r)
            self._check_row(row.pop("id"), row)
            row["config"] = config_id(row["weights"], row["data"], row["settings"])
            row["score"] = float("nan") if row["score"] is None and row["error"] is None else row["score"]
            out.append(row)
        return out

    def _check_row(self, row_id: int, row: dict) -> None:
        """weights: a JSON list of numbers; settings: a JSON object (weights_key, settings_key)."""
        for column, valid, what in (
            ("weights", lambda v: isinstance(v, list) and all(isinstance(w, (int, float)) for w in v),
             "a JSON list of numbers"),
            ("settings", lambda v: isinstance(v, dict), "a JSON object"),
        ):
            text = row[column]
            try:
                ok = isinstance(text, str) and valid(json.loads(text))
            except (ValueError, RecursionError):
                ok = False
            if not ok:
                shown = repr(text)[:60] + ("..." if len(repr(text)) > 60 else "")
                raise UserError(f"{self.path}: row {row_id} holds {column} {shown}, not {what} as bench writes: "
                                f"another program changed the store; delete that row, or {NOT_THIS_VERSION}")

    def kept(self, key: dict, archs) -> int:
        """How many of `archs` have a row (a result or an error) under `key`
        (space, weights, data, settings), read back from the file."""
        wanted = set(archs)
        with self._sqlite_errors():
            rows = self.db.execute(
                "SELECT arch FROM results WHERE space = ? AND weights = ? AND data = ? AND settings = ?",
                (key["space"], key["weights"], key["data"], key["settings"]),
            )
            return sum(r[0] in wanted for r in rows)

    def check_still_there(self) -> None:
        """A UserError if the file opened is no longer at its path (deleted or
        replaced while open: SQLite goes on writing the file it holds, which
        nobody can open again)."""
        try:
            info = os.stat(self.path)
            here = (info.st_dev, info.st_ino)
        except OSError:
            here = None
        if here != self.identity:
            what = "deleted" if here is None else "replaced by another file"
            raise UserError(f"the results store {self.path} was {what} while this command wrote it: the rows it "
                            "wrote are lost with it; rerun the command (into a store that stays where it is)")

    def count(self) -> int:
        with self._sqlite_errors():
            return self.db.execute("SELECT COUNT(*) FROM results").fetchone()[0]

    # ---------------------------------------------------------------- the proxies' table

    def has_proxies(self) -> bool:
        return "proxies" in self._tables()

    def ensure_proxies(self) -> None:
        """The proxies' table, made where a store lacks it (nothing else changes)."""
        with self._sqlite_errors():
            self.db.execute(_CREATE_PROXIES)
            self.db.commit()

    def proxies_done(self, space: str, data: str, settings: str, proxy: str) -> set[str]:
        """The archs with a value (NaN included) of `proxy` under this key; errors are retried."""
        if not self.has_proxies():
            return set()
        with self._sqlite_errors():
            rows = self.db.execute(
                "SELECT arch FROM proxies WHERE space = ? AND data = ? AND settings = ? AND proxy = ? "
                "AND error IS NULL", (space, data, settings, proxy))
            return {r[0] for r in rows}

    def add_proxy(self, row: dict) -> None:
        """Insert one proxy value; a value replaces an earlier error of the same key, nothing else is replaced."""
        value = row.get("value")
        if value is not None and math.isnan(value):
            value = None
        values = {"space": row["space"], "arch": row["arch"], "data": row["data"], "settings": row["settings"],
                  "proxy": row["proxy"], "value": value, "nan_reason": row.get("nan_reason"),
                  "error": row.get("error"), "seconds": row.get("seconds"), "created": row.get("created") or now()}
        names = ", ".join(values)
        marks = ", ".join(f":{k}" for k in values)
        updates = ", ".join(f"{k} = excluded.{k}" for k in values if k not in PROXY_KEY)
        with self._sqlite_errors():
            self.db.execute(
                f"INSERT INTO proxies ({names}) VALUES ({marks}) "
                f"ON CONFLICT ({', '.join(PROXY_KEY)}) DO UPDATE SET {updates} WHERE proxies.error IS NOT NULL",
                values,
            )

    def proxy_rows(self, space: str | None = None) -> list[dict]:
        """Every proxy row (of one space), oldest first; value NaN for a NaN result."""
        if not self.has_proxies():
            return []
        out = []
        for r in self._select("SELECT space, arch, data, settings, proxy, value, nan_reason, error, seconds, created "
                              "FROM proxies", space):
            row = dict(r)
            row["value"] = float("nan") if row["value"] is None and row["error"] is None else row["value"]
            out.append(row)
        return out

    def spaces(self) -> list[str]:
        with self._sqlite_errors():
            return sorted(r[0] for r in self.db.execute("SELECT DISTINCT space FROM results"))
