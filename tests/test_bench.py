"""bench / results: scoring a search space into the SQLite store, resuming,
listing. Small NAS-Bench-201 samples at batch 8, so the whole file runs in
about half a minute on 2 cores."""

import csv
import dataclasses
import functools
import io
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest

from epsinas_onnx.experiments import bench
from epsinas_onnx.core.options import BatchOptions, ScoringSettings
from epsinas_onnx.core.scoring.scorer import score
from epsinas_onnx.experiments.store import ResultStore, fingerprint
from epsinas_onnx.spaces import nb201
from tests.conftest import CIFAR10, ROOT, default_sigint, run_cli, run_cli_in_process
from tests.test_cli_errors import assert_user_error


def stored(path) -> list[tuple]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT arch, score, nan_reason, error, params FROM results ORDER BY arch").fetchall()


def counting_exports(monkeypatch) -> list:
    """(text, finite_check) of each architecture bench exports from here on
    (in this process: bench with one worker)."""
    exported = []
    real = nb201.to_ir  # what bench's workers export with

    @functools.wraps(real)
    def counting(arch, **kw):
        exported.append((nb201.format_arch(arch), kw.get("finite_check", False)))
        return real(arch, **kw)

    monkeypatch.setattr(nb201, "to_ir", counting)  # to_onnx's calls too
    # bench exports through the declaration (get_space reads the module's SPACE at each call),
    # an architecture at a time on the generic path (the pieces export one template per worker:
    # tests/test_nb201_pieces.py)
    monkeypatch.setattr(nb201, "SPACE", dataclasses.replace(nb201.SPACE, to_ir=counting, pieces_for=None))
    return exported


def bench_args(store, *extra):
    return ("bench", "nb201", "--batch-size", 8, "--store", store, "--no-progress", *extra)


def unique(archs):
    return sorted({nb201.format_arch(a) for a in archs})


def test_bench_scores_resumes_and_lists(tmp_path):
    store = tmp_path / "r.sqlite"
    archs = unique(nb201.sample(6, 3))
    result = run_cli(*bench_args(store, "--sample", 6, "--seed", 3, "--data", CIFAR10, "--workers", 2))
    assert result.returncode == 0, result.stderr
    assert f"nb201: {len(archs)} scored" in result.stdout
    rows = stored(store)
    assert [r[0] for r in rows] == archs
    for arch, value, reason, error, params in rows:
        assert error is None
        assert (value is None) == (reason is not None)  # NaN is stored as NULL, with its reason
        assert params == nb201.num_params(arch)
    assert any(r[1] is None for r in rows) and any(r[1] is not None for r in rows)  # seed 3 gives both

    # the stored scores are those of `score` on the same batch
    for arch, value, reason, *_ in rows[:2]:
        direct = score(nb201.to_onnx(nb201.parse(arch)), CIFAR10, (1e-7, 1.0), batch_size=8, threads=1)
        if value is None:
            assert math.isnan(direct.score) and direct.nan_reason == reason
        else:
            assert value == pytest.approx(direct.score, rel=1e-6)

    # rerun: nothing new
    again = run_cli_in_process(*bench_args(store, "--sample", 6, "--seed", 3, "--data", CIFAR10))
    assert again.returncode == 0, again.stderr
    assert "nb201: 0 scored" in again.stdout and f"{len(archs)} skipped as already stored" in again.stdout
    assert stored(store) == rows

    # the same batch from another file is the same key: nothing new either
    images = np.load(CIFAR10)["images"][:8]
    np.save(tmp_path / "same.npy", images)
    same = run_cli_in_process(*bench_args(store, "--sample", 6, "--seed", 3, "--data", tmp_path / "same.npy"))
    assert "nb201: 0 scored" in same.stdout, same.stdout + same.stderr
    # another batch is another key
    other = run_cli_in_process(*bench_args(store, "--archs", _arch_file(tmp_path, archs[:1]), "--synthetic", "grey"))
    assert "nb201: 1 scored" in other.stdout, other.stdout + other.stderr
    assert len(stored(store)) == len(archs) + 1

    listing = run_cli_in_process("results", "--store", store, "--format", "csv")
    assert listing.returncode == 0, listing.stderr
    table = list(csv.DictReader(io.StringIO(listing.stdout)))
    assert len(table) == len(archs) + 1
    assert {"space", "arch", "score", "nan_reason", "params", "seconds", "weights", "data", "config"} <= set(table[0])
    assert {r["data"] for r in table} == {_fingerprint_of_cifar8(), _fingerprint_grey8()}

    as_json = json.loads(run_cli_in_process("results", "--store", store, "--format", "json").stdout)
    assert len(as_json) == len(archs) + 1
    for row in as_json:
        assert row["weights"] == [1e-7, 1.0]
        assert (row["score"] is None) == (row["nan_reason"] is not None)
        assert row["seconds"] > 0
    table_out = run_cli_in_process("results", "--store", store, "--space", "nb101").stdout
    assert table_out == "(no rows)\n"


def _fingerprint_of_cifar8():
    from tests.conftest import cifar10_batch

    return fingerprint(cifar10_batch(8))


def _fingerprint_grey8():
    from epsinas_onnx.core.scoring.inputs import synthetic_images

    return fingerprint(synthetic_images("grey", [8, 3, 32, 32]))


def _arch_file(tmp_path, lines, name="archs.txt"):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def test_repeats_in_the_list_are_scored_once(tmp_path):
    archs = unique(nb201.sample(3, 1))
    path = _arch_file(tmp_path, ["# a comment", archs[0], "", *archs, archs[1]])
    store = tmp_path / "r.sqlite"
    result = run_cli_in_process(*bench_args(store, "--archs", path, "--synthetic", "normal"))
    assert result.returncode == 0, result.stderr
    assert f"{len(archs)} scored" in result.stdout and "2 repeats in the list scored once" in result.stdout
    assert [r[0] for r in stored(store)] == archs


def test_errors_are_rows_apart_from_nan_and_retried(tmp_path, monkeypatch):
    """A failing architecture is an error row (not a NaN); the next run retries it."""
    archs = unique(nb201.sample(4, 5))
    broken = archs[2]
    real = nb201.to_ir  # what bench's workers export with

    @functools.wraps(real)
    def failing(arch, **kw):
        if nb201.format_arch(arch) == broken:
            raise RuntimeError("simulated ONNX Runtime failure")
        return real(arch, **kw)

    store = tmp_path / "r.sqlite"
    options = dict(batch_options=BatchOptions(synthetic="normal", batch_size=8), store_path=store, progress=False)
    declared = nb201.SPACE  # bench exports through it (get_space reads the module's SPACE at each call)
    monkeypatch.setattr(nb201, "SPACE", dataclasses.replace(declared, to_ir=failing, pieces_for=None))  # generic path
    first = bench.run_bench("nb201", archs, **options)
    assert (first.scored, first.errors) == (len(archs) - 1, 1)
    assert "1 errors (rerun to retry them)" in first.line()
    row = [r for r in stored(store) if r[0] == broken][0]
    assert row[1] is None and row[2] is None and row[3] == "RuntimeError: simulated ONNX Runtime failure"

    monkeypatch.setattr(nb201, "SPACE", declared)
    second = bench.run_bench("nb201", archs, **options)
    assert (second.scored, second.errors, second.skipped) == (1, 0, len(archs) - 1)
    rows = stored(store)
    assert len(rows) == len(archs)
    assert all(r[3] is None for r in rows)


def test_one_computation_class_is_exported_and_run_once(tmp_path, monkeypatch):
    """NAS-Bench-201 architectures of one computation class (the same network up
    to its weights' values) are scored once; the others get that row's result
    with their own arch and params, and are never exported."""
    from tests.test_computation_key import OTHER, SAME_A, SAME_B

    archs = [nb201.parse(s) for s in (SAME_A, SAME_B, OTHER)]
    exported = counting_exports(monkeypatch)
    options = dict(batch_options=BatchOptions(synthetic="normal", batch_size=8), progress=False)
    summary = bench.run_bench("nb201", archs, store_path=tmp_path / "r.sqlite", **options)
    assert (summary.scored, summary.reused) == (3, 1)
    assert SAME_B not in {text for text, _ in exported}
    rows = {r[0]: r for r in stored(tmp_path / "r.sqlite")}
    a, b, other = rows[SAME_A], rows[SAME_B], rows[OTHER]
    assert b[1:4] == a[1:4] and other[1] != a[1]  # score, nan_reason, error
    assert b[4] == nb201.num_params(archs[1]) != a[4]
    # what B gives when it is run on its own, bit for bit
    alone = bench.run_bench("nb201", [archs[1]], store_path=tmp_path / "alone.sqlite", **options)
    assert alone.reused == 0 and stored(tmp_path / "alone.sqlite")[0] == b


def test_computation_classes_only_under_constant_weights():
    todo = [(arch, nb201.format_arch(arch)) for arch in nb201.all_archs()[:200]]
    plan = bench.computation_classes(nb201.SPACE, todo, {})
    scored_later = sum(map(len, plan.same.values())) + sum(map(len, plan.if_finite.values()))
    assert len(plan.to_score) + scored_later == len(todo) and plan.same
    assert bench.computation_classes(nb201.SPACE, todo, {"weight_init": "normal"}) == bench.ClassPlan(todo, {}, {})


def test_settings_and_weights_are_part_of_the_key(tmp_path):
    archs = unique(nb201.sample(2, 2))
    store = tmp_path / "r.sqlite"
    options = dict(batch_options=BatchOptions(synthetic="normal", batch_size=8), store_path=store, progress=False)
    bench.run_bench("nb201", archs, **options)
    assert bench.run_bench("nb201", archs, **options).scored == 0
    assert bench.run_bench("nb201", archs, weights=(1e-7, 1), **options).scored == 0  # same pair, other spelling
    assert bench.run_bench("nb201", archs, scoring=ScoringSettings(bn_gamma="one"), **options).scored == len(archs)
    assert bench.run_bench("nb201", archs, weights=(1e-4, 10), **options).scored == len(archs)
    assert bench.run_bench("nb201", archs, export={"resolution": 16}, **options).scored == len(archs)
    with ResultStore(store) as db:
        assert len({r["config"] for r in db.rows()}) == 4
    with pytest.raises(bench.UserError, match="does not apply"):
        bench.run_bench("nb201", archs, export={"no_such_option": 1}, **options)


# the kill and Ctrl-C tests stop a run midway: enough architectures, and a batch large enough
# (bench scores one of 8 images in a few ms), that the run is still going when the signal lands
KILL_TEST_N = 120


def _kill_test_args(store, n, workers):
    return ("bench", "nb201", "--batch-size", 256, "--store", store, "--no-progress",
            "--sample", n, "--seed", 7, "--synthetic", "normal", "--workers", workers)


def _bench_process(store, n, workers):
    return cli_process(_kill_test_args(store, n, workers))


def cli_process(args) -> subprocess.Popen:
    """An epsinas-onnx run in its own process group, as a user's shell would start it."""
    cmd = [sys.executable, "-m", "epsinas_onnx", *map(str, args)]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=default_sigint)


def ctrl_c_after_first_row(args, store, timeout) -> tuple[subprocess.Popen, str]:
    """Start a bench run, press Ctrl-C once it has stored a row; the process
    and its stderr (it is killed if it has not ended within `timeout` s)."""
    proc = cli_process(args)
    try:
        _wait_for_rows(store, proc, at_least=1)
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal signals the whole group
        _, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc, err


def _wait_for_rows(store, proc, at_least, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"bench ended before it was stopped: {proc.communicate()}"
        if store.exists():
            try:
                with sqlite3.connect(store, timeout=5) as db:
                    if db.execute("SELECT COUNT(*) FROM results").fetchone()[0] >= at_least:
                        return
            except sqlite3.OperationalError:  # the table is not there yet
                pass
        time.sleep(0.05)
    raise AssertionError("bench stored no rows in time")


def test_sigkill_midway_then_resume_stores_every_arch_once(tmp_path):
    n = KILL_TEST_N
    archs = unique(nb201.sample(n, 7))
    store = tmp_path / "r.sqlite"
    proc = _bench_process(store, n, workers=2)
    try:
        _wait_for_rows(store, proc, at_least=2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its workers, no chance to clean up
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    killed_at = len(stored(store))
    assert 2 <= killed_at < len(archs), "the run was not stopped midway"

    resumed = run_cli(*_kill_test_args(store, n, workers=2))
    assert resumed.returncode == 0, resumed.stderr
    assert f"{killed_at} skipped as already stored" in resumed.stdout
    assert f"nb201: {len(archs) - killed_at} scored" in resumed.stdout
    rows = stored(store)
    assert [r[0] for r in rows] == archs  # every architecture exactly once
    assert all(r[3] is None for r in rows)


def test_ctrl_c_stops_cleanly_and_keeps_rows(tmp_path):
    store = tmp_path / "r.sqlite"
    proc, err = ctrl_c_after_first_row(_kill_test_args(store, KILL_TEST_N, workers=2), store, timeout=30)
    assert proc.returncode == 130, err
    done = len(stored(store))
    total = len(unique(nb201.sample(KILL_TEST_N, 7)))
    assert err.strip().splitlines()[-1] == f"interrupted: {done} of {total} done; rerun the same command to resume"
    assert "Traceback" not in err
    survivors = subprocess.run(["pgrep", "-g", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert all(not _is_worker(pid) for pid in survivors)  # the workers are gone


def _is_worker(pid: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"spawn_main" in f.read()
    except OSError:
        return False


def test_bad_input(tmp_path):
    assert_user_error(run_cli_in_process("results", "--store", tmp_path / "absent.sqlite"), "results store not found")
    assert_user_error(run_cli_in_process("bench", "nb999", "--sample", 2), "nb999")
    assert_user_error(run_cli_in_process("bench", "nb201", "--sample", 2, "--all"), "exactly one of")
    bad = _arch_file(tmp_path, ["|none~0|+|none~0|none~1|+|none~0|none~1|none~2|", "|conv~0|"])
    assert_user_error(run_cli_in_process("bench", "nb201", "--archs", bad, "--store", tmp_path / "r.sqlite"), "line 2")
    not_a_store = tmp_path / "notes.sqlite"
    not_a_store.write_text("hello\n" * 100)
    assert_user_error(run_cli_in_process("results", "--store", not_a_store), "not an SQLite results store")


def _workers_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _is_worker(entry):
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parent = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if parent == pid:
                found.append(int(entry))
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_dead_worker_costs_one_error_row_and_the_run_goes_on(tmp_path):
    store = tmp_path / "r.sqlite"
    proc = _bench_process(store, KILL_TEST_N, workers=2)
    try:
        _wait_for_rows(store, proc, at_least=1)
        workers = _workers_of(proc.pid)
        assert len(workers) == 2
        os.kill(workers[0], signal.SIGKILL)  # as the out-of-memory killer would
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err
    total = len(unique(nb201.sample(KILL_TEST_N, 7)))
    rows = stored(store)
    assert len(rows) == total
    errors = [r for r in rows if r[3] is not None]
    # one architecture, 0 when it died between two; with those of its computation class
    assert len({nb201.computation_class(nb201.parse(r[0])) for r in errors}) <= 1
    assert all("worker process died (signal 9)" in r[3] for r in errors)
    assert f"{len(errors)} errors" in out

    retried = run_cli(*_kill_test_args(store, KILL_TEST_N, workers=1))
    assert f"nb201: {len(errors)} scored" in retried.stdout, retried.stderr
    assert all(r[3] is None for r in stored(store)) and len(stored(store)) == total
