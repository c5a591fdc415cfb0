"""Output files and the results store under hostile or careless use.

Every case runs the CLI on files made in a temporary folder and checks the
error contract: exit 1, exactly one `error:` line on stderr, no traceback, and
no file written (or an existing one left as it was). A case runs the command
in a process of its own where the process matters (another user, a resource
limit, a signal, a kill, several processes at once, a FIFO that could block),
the others in this process (conftest.run_cli_in_process: the same exit status
and output, without an interpreter start-up each).

Permissions: root ignores them, so where the suite runs as root the
read-only cases run the CLI as the unprivileged user `nobody` (uid 65534) in a
world-readable folder under /tmp; as any other user they run as that user.
A full disk is simulated without root or a tmpfs: for the store, SQLite's
`max_page_count` (the same SQLITE_FULL error a full disk gives); for output
files, /dev/full (ENOSPC on every write), the file-size limit RLIMIT_FSIZE,
and an in-process writer that fails with ENOSPC.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import os
import resource
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import pytest

from conftest import ROOT, run_cli_in_process
from epsinas_onnx.core.atomic import write_atomically
from epsinas_onnx.core.errors import UserError
from epsinas_onnx.experiments.store import ResultStore

ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
ROOT_USER = os.geteuid() == 0
NOBODY = 65534
FAST = ("--batch-size", "8", "--no-progress")  # a synthetic batch of 8: seconds per bench


def cli(*args, user=None, timeout=120, **kwargs) -> subprocess.CompletedProcess:
    """run_cli, optionally as another user (with a HOME it can write), by setpriv."""
    env = dict(os.environ)
    command = [sys.executable, "-m", "epsinas_onnx", *map(str, args)]
    if user is not None:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root, and no setpriv to drop the privileges that ignore permissions")
        env["HOME"] = kwargs.pop("home")
        command = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *command]
        if not _user_can_import(user):
            pytest.skip(f"user {user} cannot import epsinas_onnx.cli with {sys.executable} (its virtual "
                        "environment or this checkout lies in a folder only its owner can enter)")
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=timeout, env=env, **kwargs)


@functools.cache
def _user_can_import(user: str) -> bool:
    probe = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", sys.executable, "-c",
             "import epsinas_onnx.cli"]  # the CLI's dependencies too: they may lie elsewhere
    return subprocess.run(probe, capture_output=True, cwd=ROOT, timeout=60).returncode == 0


def assert_one_error(result, *fragments) -> str:
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def small_store(path: Path, rows: int = 50) -> Path:
    with ResultStore(path) as store:
        for i in range(rows):
            store.add({"space": "nb201", "arch": f"arch{i}", "weights": "[1e-07, 1.0]", "data": "d" * 16,
                       "settings": '{"x":1}', "score": 0.5 + i, "seconds": 0.1})
        store.commit()
    return path


# ---------------------------------------------------------------- bad stores


def _not_sqlite(path):
    path.write_text("hello\n" * 100)


def _truncated(path):
    small_store(path, rows=400)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _header_only(path):
    small_store(path)
    path.write_bytes(path.read_bytes()[:60])


def _other_program(path):
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE songs (title TEXT)")
    db.commit()
    db.close()


def _other_schema(path):
    small_store(path)
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    db.commit()
    db.close()


BAD_STORES = {
    "not sqlite": (_not_sqlite, "not an SQLite results store"),
    "truncated": (_truncated, "is damaged"),
    "header only": (_header_only, "is damaged"),
    "another program's database": (_other_program, "not an epsinas-onnx results store"),
    "another schema version": (_other_schema, "schema_version 2"),
}


@pytest.mark.parametrize("case", BAD_STORES)
@pytest.mark.parametrize("command", ["results", "bench"])
def test_bad_store_is_one_line_and_left_alone(tmp_path, case, command):
    make, message = BAD_STORES[case]
    store = tmp_path / "r.sqlite"
    make(store)
    before = digest(store)
    args = ("results", "--store", store) if command == "results" else (
        "bench", "nb201", "--sample", "2", "--store", store, *FAST)
    line = assert_one_error(run_cli_in_process(*args), message)
    assert str(store) in line
    assert digest(store) == before  # nothing added to it, not even tables
    assert listing(tmp_path) == ["r.sqlite"]


def test_store_that_is_a_folder(tmp_path):
    assert_one_error(run_cli_in_process("results", "--store", tmp_path), "is a directory")


# ---------------------------------------------------------------- read-only stores and folders


@pytest.fixture
def open_folder():
    """A folder an unprivileged user can reach (tmp_path's parents are root's own)."""
    with tempfile.TemporaryDirectory(prefix="epsinas-store-") as name:
        folder = Path(name)
        folder.chmod(0o755)
        home = folder / "home"
        home.mkdir()
        home.chmod(0o777)
        yield folder
        for sub in folder.rglob("*"):
            if sub.is_dir():
                sub.chmod(0o755)
        folder.chmod(0o755)


def unprivileged(folder: Path) -> dict:
    return {"user": NOBODY, "home": str(folder / "home")} if ROOT_USER else {}


def test_results_reads_a_store_in_a_read_only_folder(open_folder):
    shelf = open_folder / "shelf"
    shelf.mkdir()
    small_store(shelf / "r.sqlite")
    assert listing(shelf) == ["r.sqlite"]  # closed cleanly: no -wal, no -shm
    shelf.chmod(0o555)
    result = cli("results", "--store", shelf / "r.sqlite", "--format", "csv", **unprivileged(open_folder))
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.strip().splitlines()) == 1 + 50
    assert listing(shelf) == ["r.sqlite"]


@pytest.mark.parametrize("shm", ["kept", "gone"])
def test_read_only_folder_with_rows_pending_in_the_wal(open_folder, shm):
    """A writer killed after its commit leaves its rows in the -wal, not yet
    merged, with the -shm index beside it: SQLite reads both read-only. Without
    the -shm it cannot, and ignoring the -wal would drop rows: one line."""
    shelf = open_folder / "shelf"
    shelf.mkdir()
    small_store(shelf / "r.sqlite")
    subprocess.run([sys.executable, "-c", (
        "import os, sqlite3, sys; db = sqlite3.connect(sys.argv[1]); "
        "db.execute(\"INSERT INTO results (space, arch, weights, data, settings, created) "
        "VALUES ('nb201', 'late', '[1]', 'd', '{}', 'now')\"); db.commit(); os._exit(0)"),
        shelf / "r.sqlite"], check=True)
    assert (shelf / "r.sqlite-wal").stat().st_size > 0
    if shm == "gone":
        (shelf / "r.sqlite-shm").unlink()
    shelf.chmod(0o555)
    result = cli("results", "--store", shelf / "r.sqlite", "--format", "csv", **unprivileged(open_folder))
    if shm == "kept":
        assert result.returncode == 0, result.stderr
        assert len(result.stdout.strip().splitlines()) == 1 + 51 and "late" in result.stdout
    else:
        assert_one_error(result, "not yet merged", "make the folder writable")
        shelf.chmod(0o755)
        result = cli("results", "--store", shelf / "r.sqlite", "--format", "csv")
        assert result.returncode == 0 and "late" in result.stdout  # the rows were kept


@pytest.mark.parametrize("what", ["folder", "file"])
def test_bench_into_a_read_only_store(open_folder, what):
    shelf = open_folder / "shelf"
    shelf.mkdir()
    store = small_store(shelf / "r.sqlite")
    before = digest(store)
    if what == "folder":
        shelf.chmod(0o555)
    else:
        shelf.chmod(0o777)  # the folder writable, the file not
        store.chmod(0o444)
    line = assert_one_error(
        cli("bench", "nb201", "--sample", "2", "--store", store, *FAST, **unprivileged(open_folder)), "read-only")
    assert str(store) in line
    assert digest(store) == before
    assert listing(shelf) == ["r.sqlite"]


def test_bench_into_a_missing_folder_creates_nothing(tmp_path):
    store = tmp_path / "no" / "r.sqlite"
    assert_one_error(run_cli_in_process("bench", "nb201", "--sample", "2", "--store", store, *FAST), "does not exist")
    assert listing(tmp_path) == []


def test_bad_input_creates_no_store(tmp_path):
    assert_one_error(run_cli_in_process("bench", "nb201", "--sample", "2", "--store", tmp_path / "r.sqlite", "--data",
                         tmp_path / "absent.npz", *FAST))
    assert listing(tmp_path) == []


# ---------------------------------------------------------------- a full disk under the store

# ResultStore with SQLite's page cap: the file may grow by `extra` pages, then
# every commit fails with SQLITE_FULL, exactly as on a full disk
CAPPED_BENCH = """
import sys
from epsinas_onnx.experiments import store
from epsinas_onnx.cli import main

extra = int(sys.argv.pop(1))
opened = store.ResultStore.__init__

def capped(self, *args, **kwargs):
    opened(self, *args, **kwargs)
    pages = self.db.execute("PRAGMA page_count").fetchone()[0]
    self.db.execute(f"PRAGMA max_page_count = {pages + extra}")

store.ResultStore.__init__ = capped
sys.exit(main(sys.argv[1:]))
"""


def stored_archs(store: Path, **where) -> list[str]:
    db = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        query = "SELECT arch FROM results WHERE error IS NULL"
        for column, value in where.items():
            query += f" AND {column} = '{value}'"
        return [r[0] for r in db.execute(query)]
    finally:
        db.close()


def expected_archs(n: int, seed: int = 0) -> set[str]:
    from epsinas_onnx.spaces import nb201

    return {nb201.format_arch(a) for a in nb201.sample(n, seed)}


def test_full_disk_keeps_rows_and_a_rerun_resumes(tmp_path):
    store = tmp_path / "r.sqlite"
    args = ("bench", "nb201", "--sample", "30", "--store", store, *FAST)
    small_store(store, rows=0)
    full = subprocess.run([sys.executable, "-c", CAPPED_BENCH, "2", *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)
    assert_one_error(full, "is full", "rows so far are kept", "rerun the same command to resume")
    kept = stored_archs(store)
    assert 0 < len(kept) < len(expected_archs(30))  # some rows, then the disk was full
    resumed = cli(*args, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{len(kept)} skipped as already stored" in resumed.stdout
    final = stored_archs(store)
    assert sorted(final) == sorted(expected_archs(30))  # every architecture exactly once


# ---------------------------------------------------------------- two benches on one store


def test_concurrent_benches_on_one_store(tmp_path):
    """Three drivers at once on a new store: two of one configuration, one of
    another. No error, no lock message; each configuration has each
    architecture exactly once."""
    store = tmp_path / "r.sqlite"
    runs = [("--weights", "1e-7", "1"), ("--weights", "1e-7", "1"), ("--weights", "1e-5", "1")]
    procs = [subprocess.Popen([sys.executable, "-m", "epsinas_onnx", "bench", "nb201", "--sample", "12", "--store",
                               str(store), *FAST, *weights], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for weights in runs]
    outputs = [p.communicate(timeout=300) for p in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err
        assert "locked" not in err and "Traceback" not in err
    want = sorted(expected_archs(12))
    db = sqlite3.connect(store)
    configs = db.execute("SELECT weights, COUNT(*), COUNT(DISTINCT arch) FROM results GROUP BY weights").fetchall()
    assert db.execute("SELECT COUNT(*) FROM results WHERE error IS NOT NULL").fetchone()[0] == 0
    db.close()
    assert sorted(configs) == [("[1e-05, 1.0]", len(want), len(want)), ("[1e-07, 1.0]", len(want), len(want))]
    assert sorted(stored_archs(store, weights="[1e-07, 1.0]")) == want
    assert sorted(stored_archs(store, weights="[1e-05, 1.0]")) == want


# ---------------------------------------------------------------- signals


def _wait_for_rows(store: Path, proc: subprocess.Popen, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if store.exists():
            try:
                n = len(stored_archs(store))
            except sqlite3.Error:
                n = 0
            if n:
                return n
        time.sleep(0.05)
    raise AssertionError(f"no row stored in {timeout} s (exit {proc.poll()})")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_stop_signal_is_like_ctrl_c(tmp_path, signum):
    store = tmp_path / "r.sqlite"
    # a batch of 256, not FAST's 8: the run must still be going when the signal lands
    args = ("bench", "nb201", "--sample", "120", "--store", store, "--workers", "2", "--batch-size", "256",
            "--no-progress")
    proc = subprocess.Popen([sys.executable, "-m", "epsinas_onnx", *map(str, args)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_rows(store, proc)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, err
    assert err.strip().splitlines() == [err.strip()]  # one line
    assert err.startswith("interrupted: ") and "rerun the same command to resume" in err
    kept = stored_archs(store)
    assert kept
    if signum == signal.SIGTERM:
        resumed = cli(*args, timeout=300)
        assert resumed.returncode == 0, resumed.stderr
        assert sorted(stored_archs(store)) == sorted(expected_archs(120))


# ---------------------------------------------------------------- output files


def export(out, in_process=True, **kwargs):
    """export in this process; in a process of its own where it runs as another
    user, under a limit (cli's options) or could block (in_process=False)."""
    if in_process and not kwargs:
        return run_cli_in_process("export", "nb201", ARCH, "-o", out)
    return cli("export", "nb201", ARCH, "-o", out, **kwargs)


def test_export_into_a_missing_folder(tmp_path):
    assert_one_error(export(tmp_path / "no" / "m.onnx"), "does not exist")
    assert listing(tmp_path) == []


def test_export_into_a_read_only_folder(open_folder):
    shelf = open_folder / "shelf"
    shelf.mkdir()
    (shelf / "m.onnx").write_bytes(b"the old model")
    shelf.chmod(0o555)
    assert_one_error(export(shelf / "m.onnx", **unprivileged(open_folder)), "permission denied")
    assert listing(shelf) == ["m.onnx"]
    assert (shelf / "m.onnx").read_bytes() == b"the old model"


def test_export_past_the_file_size_limit_leaves_nothing(tmp_path):
    def limit():  # 100 kB, the model is about 3 MB; an ignored SIGXFSZ makes the write fail with EFBIG
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    (tmp_path / "m.onnx").write_bytes(b"the old model")
    assert_one_error(export(tmp_path / "m.onnx", preexec_fn=limit), "ulimit -f")
    assert listing(tmp_path) == ["m.onnx"]
    assert (tmp_path / "m.onnx").read_bytes() == b"the old model"


def test_export_to_dev_full_is_one_line():
    assert_one_error(export("/dev/full"), "/dev/full", "disk is full")
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


def test_export_to_stdout_writes_the_model_there():
    result = subprocess.run([sys.executable, "-m", "epsinas_onnx", "export", "nb201", ARCH, "-o", "/dev/stdout"],
                            capture_output=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    model = onnx.load_from_string(result.stdout)
    assert model.graph.node
    assert os.path.islink("/dev/stdout") or stat.S_ISCHR(os.stat("/dev/stdout").st_mode)


def test_export_to_a_device_writes_it_in_place(tmp_path):
    """As root a rename over /dev/null would replace the machine's /dev/null,
    so the test makes a null device of its own; as a user, /dev/null itself."""
    if ROOT_USER:
        device = tmp_path / "null"
        os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    else:
        device = Path("/dev/null")
    result = export(device)
    assert result.returncode == 0, result.stderr
    assert stat.S_ISCHR(os.stat(device).st_mode)  # still the device
    if ROOT_USER:
        assert listing(tmp_path) == ["null"]


def test_export_to_a_fifo_writes_through_it(tmp_path):
    fifo = tmp_path / "pipe.onnx"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    result = export(fifo, in_process=False)
    reader.join(timeout=60)
    assert result.returncode == 0, result.stderr
    assert onnx.load_from_string(received[0]).graph.node
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert listing(tmp_path) == ["pipe.onnx"]


def test_export_through_a_symlink_replaces_its_target_and_keeps_the_link(tmp_path):
    (tmp_path / "real.onnx").write_bytes(b"old")
    (tmp_path / "real.onnx").chmod(0o640)
    (tmp_path / "link.onnx").symlink_to("real.onnx")
    result = export(tmp_path / "link.onnx")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "link.onnx").is_symlink()
    assert onnx.load(tmp_path / "real.onnx").graph.node
    assert stat.S_IMODE(os.stat(tmp_path / "real.onnx").st_mode) == 0o640  # the target's mode kept
    assert listing(tmp_path) == ["link.onnx", "real.onnx"]


def test_export_through_a_symlink_into_a_missing_folder(tmp_path):
    (tmp_path / "link.onnx").symlink_to(tmp_path / "gone" / "m.onnx")
    assert_one_error(export(tmp_path / "link.onnx"), "does not exist")
    assert listing(tmp_path) == ["link.onnx"]


def test_rewrite_into_a_missing_folder(tmp_path):
    model = tmp_path / "m.onnx"
    assert export(model).returncode == 0
    assert_one_error(run_cli_in_process("rewrite", model, "-o", tmp_path / "no" / "r.onnx"), "does not exist")
    assert listing(tmp_path) == ["m.onnx"]


# ---------------------------------------------------------------- the atomic writer itself (in process)


def test_temp_file_is_private_unpredictable_and_synced_before_the_rename(tmp_path, monkeypatch):
    target = tmp_path / "out.onnx"
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me")
    # the old writer's predictable name, planted as a symlink by "another user"
    (tmp_path / f".out.onnx.tmp{os.getpid()}").symlink_to(victim)
    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append("replace"), real_replace(a, b))[1])

    def write(f):
        info = os.fstat(f.fileno())
        assert stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600
        temps = [p for p in tmp_path.iterdir() if p.name.startswith(".out.onnx.") and p.name.endswith(".tmp")]
        assert len(temps) == 1 and not temps[0].is_symlink()
        f.write(b"new contents")

    write_atomically(target, write)
    assert target.read_bytes() == b"new contents"
    assert victim.read_bytes() == b"keep me"
    assert calls.index("fsync") < calls.index("replace")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask


@pytest.mark.parametrize("failure", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()])
def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path, failure):
    target = tmp_path / "out.npz"
    target.write_bytes(b"old")

    def write(f):
        f.write(b"half")
        raise failure

    expected = UserError if isinstance(failure, OSError) else KeyboardInterrupt
    with pytest.raises(expected) as caught:
        write_atomically(target, write)
    if expected is UserError:
        assert "disk is full" in str(caught.value)
    assert target.read_bytes() == b"old"
    assert listing(tmp_path) == ["out.npz"]


def test_calibrate_cache_through_a_symlink(tmp_path):
    from epsinas_onnx.experiments.calibrate import Outputs

    (tmp_path / "cache").mkdir()
    (tmp_path / "cache.npz").symlink_to(tmp_path / "cache" / "outputs.npz")
    outputs = Outputs(weights=[1.0], names=["a"], arrays={"a": np.ones((1, 3), np.float32)}, errors={},
                      fingerprint="f", batch_description="b", settings="s")
    outputs.save(tmp_path / "cache.npz")
    assert (tmp_path / "cache.npz").is_symlink()
    with np.load(tmp_path / "cache" / "outputs.npz") as data:
        assert data["out0"].tolist() == [[1.0, 1.0, 1.0]]
    assert listing(tmp_path / "cache") == ["outputs.npz"]


def test_stop_signals_raise_once_and_restore_the_handlers():
    from epsinas_onnx.core.stop_signals import StopSignal, stop_signals_as_interrupt

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(StopSignal) as caught:
        with stop_signals_as_interrupt():
            with stop_signals_as_interrupt():  # nested (the bench command, then run_bench): one handler
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)  # the handler raises here, at once
    assert caught.value.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before
