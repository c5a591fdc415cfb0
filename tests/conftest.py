import contextlib
import csv
import io
import os
import signal
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
# the first 32 images of SHARED_DATA / "inputs" / "cifar10_test_1000.npz", committed (tests/data/README.md),
# so that the PyTorch reference comparisons check the score on a clone without the development data
CIFAR10 = ROOT / "tests" / "data" / "cifar10_test_32.npz"
CIFAR10_IMAGES = 32


def cifar10_batch(n: int) -> np.ndarray:
    """The first n CIFAR-10 test images, NCHW float32, CIFAR-10 normalisation."""
    if n > CIFAR10_IMAGES:
        raise ValueError(f"{CIFAR10.name} holds {CIFAR10_IMAGES} images, not {n} "
                         "(tests/data/make_cifar10_sample.py cuts it)")
    with np.load(CIFAR10) as loaded:
        images = loaded["images"][:n].astype(np.float32) / 255.0
    mean = np.array([125.3, 123.0, 113.9], dtype=np.float32) / 255.0
    std = np.array([63.0, 62.1, 66.7], dtype=np.float32) / 255.0
    return ((images - mean) / std).transpose(0, 3, 1, 2).copy()


def packaged_csv(name: str, path: Path, rows: int | None = None) -> Path:
    """A table packaged with epsinas-onnx (epsinas_onnx/data/PROVENANCE.md) written
    to `path` as a csv file, its first `rows` rows or all: the development data's
    file it was cut from, every value its text (tests/test_packaged_tables.py
    checks that beside the data), for tests that read a user's csv."""
    from epsinas_onnx.core.tables import packaged

    table = packaged(name)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, table.columns)
        writer.writeheader()
        writer.writerows(table.rows[:rows])
    return path


def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    """The installed command, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "epsinas_onnx", *map(str, args)],
        capture_output=True, text=True, cwd=cwd or ROOT, timeout=300,
    )


def run_cli_in_process(*args: str, cwd=None) -> subprocess.CompletedProcess:
    """run_cli's result (exit status, stdout, stderr) from epsinas_onnx.cli.main
    called in this process: the same command without an interpreter start-up
    and its imports per case. For error messages, options and outputs; signals,
    kills, permissions, resource limits, worker processes and anything that
    needs a fresh interpreter keep run_cli.

    What reaches the two file descriptors below Python (ONNX Runtime's own log
    lines) is captured as a subprocess's would be, and Python's warnings print
    to stderr under the interpreter's default filters, as in a command of its
    own, instead of being recorded by pytest."""
    from epsinas_onnx.cli import main

    argv = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    previous = os.getcwd()
    with _file_descriptors_captured() as below_python:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            _warnings_as_a_fresh_interpreter_shows_them()
            os.chdir(cwd or ROOT)
            try:
                code = main(argv)
            except SystemExit as stop:  # bench's interrupted exit; main returns otherwise
                code = stop.code
            finally:
                os.chdir(previous)
    fd_out, fd_err = below_python
    return subprocess.CompletedProcess(["epsinas-onnx", *argv], code, out.getvalue() + fd_out.read(),
                                       err.getvalue() + fd_err.read())


@contextlib.contextmanager
def _file_descriptors_captured():
    """fds 1 and 2 point to temporary files inside; yields the two files' text, readable after."""
    results = [io.StringIO(), io.StringIO()]
    sys.stdout.flush()
    sys.stderr.flush()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        saved = [os.dup(1), os.dup(2)]
        try:
            os.dup2(out.fileno(), 1)
            os.dup2(err.fileno(), 2)
            yield results
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            for file, result in zip((out, err), results):
                file.seek(0)
                result.write(file.read().decode("utf-8", "replace"))
                result.seek(0)


def _warnings_as_a_fresh_interpreter_shows_them() -> None:
    """The filters a fresh interpreter starts with (Python's "Default Warning
    Filter"), each warning printed to sys.stderr (pytest records them instead)."""
    warnings.resetwarnings()
    for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
        warnings.simplefilter("ignore", category)
    warnings.showwarning = _print_warning


def _print_warning(message, category, filename, lineno, file=None, line=None) -> None:
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def default_sigint() -> None:
    """Popen's preexec_fn for a child the test will Ctrl-C: a shell runs its
    background jobs with SIGINT ignored, the child would inherit that, and
    Python then installs no KeyboardInterrupt handler (a suite started with
    `&` would see the command ignore the signal)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The development data folder (../shared/data); a test that takes it skips where it is absent."""
    if not SHARED_DATA.exists():
        pytest.skip(f"needs the development data folder {SHARED_DATA}, absent here (tests/data/README.md)")
    return SHARED_DATA


def pytest_collection_modifyitems(items):
    """A test that takes the shared_data fixture (itself or through another fixture)
    carries the shared_data marker, so that `pytest -m shared_data` selects every
    test that needs the data folder (.ci/run's second step); one marked by hand
    skips without the folder as one taking the fixture does."""
    for item in items:
        if "shared_data" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.shared_data)
        elif item.get_closest_marker("shared_data") and not SHARED_DATA.exists():
            item.add_marker(pytest.mark.skip(
                reason=f"needs the development data folder {SHARED_DATA}, absent here (tests/data/README.md)"))
