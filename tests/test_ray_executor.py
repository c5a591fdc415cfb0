"""bench --executor ray: the same rows as the local executor, resume, and a
Ray worker that dies mid-task (retried, or isolated into one error row).

One local Ray instance (2 CPUs) for the module; 6 NAS-Bench-201 architectures
at batch 8. Skipped without Ray (`pip install "epsinas-onnx[ray]"`), except
the check that --executor ray without Ray is a one-line error."""

import os
import subprocess
import sys

import pytest

# Keep the test cluster on the loopback interface: on Linux Ray otherwise binds
# to the machine's network address. Read when ray is first imported, and
# inherited by the CLI subprocesses and Ray's own workers.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

from epsinas_onnx.experiments import bench, executors
from epsinas_onnx.core.options import BatchOptions
from epsinas_onnx.spaces import nb201
from tests.conftest import ROOT, run_cli, run_cli_in_process
from tests.test_bench import ctrl_c_after_first_row, stored, unique
from tests.test_cli_errors import assert_user_error

ARCHS = unique(nb201.sample(6, 3))  # seed 3: NaN and finite scores both
OPTIONS = dict(batch_options=BatchOptions(synthetic="normal", batch_size=8), progress=False)


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    context = ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield context.address_info["gcs_address"]
    ray.shutdown()


@pytest.fixture(scope="module")
def local_rows(tmp_path_factory):
    """What the local executor stores for ARCHS (one process)."""
    store = tmp_path_factory.mktemp("local") / "r.sqlite"
    summary = bench.run_bench("nb201", ARCHS, store_path=store, **OPTIONS)
    assert (summary.scored, summary.errors) == (len(ARCHS), 0)
    rows = stored(store)
    assert any(r[1] is None for r in rows) and any(r[1] is not None for r in rows)
    return rows


def crashing_job(crash_arch: str, marker=None):
    """A bench._Job whose worker process dies (os._exit) when it reaches
    crash_arch: once if `marker` is given (it marks the first attempt), else
    every time. A class made here is pickled by value, so Ray workers get it."""

    class CrashingJob(bench._Job):
        def run(self, arch):
            if self.space_module.format_arch(arch) == crash_arch and (marker is None or not marker.exists()):
                if marker is not None:
                    marker.touch()
                os._exit(3)
            return super().run(arch)

    return CrashingJob


def test_without_ray_executor_ray_is_one_line_error(tmp_path):
    store = tmp_path / "r.sqlite"
    code = ("import sys; sys.modules['ray'] = None\n"  # as if Ray were not installed
            "from epsinas_onnx.cli import main\n"
            f"sys.exit(main(['bench', 'nb201', '--sample', '2', '--store', {str(store)!r}, '--executor', 'ray']))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert_user_error(result, "--executor ray", 'pip install "epsinas-onnx[ray]"')
    assert not store.exists()


def test_ray_only_options_are_refused_by_the_local_executor(tmp_path):
    store = tmp_path / "r.sqlite"
    assert_user_error(run_cli_in_process("bench", "nb201", "--sample", 2, "--store", store, "--address", "auto"),
                      "--address applies to --executor ray only")
    assert_user_error(run_cli_in_process("bench", "nb201", "--sample", 2, "--store", store, "--chunk", 2),
                      "--chunk applies to --executor ray only")
    assert not store.exists()


def test_ray_stores_what_local_stores_and_resumes(ray_cluster, local_rows, tmp_path):
    store = tmp_path / "r.sqlite"
    first = bench.run_bench("nb201", ARCHS, store_path=store, executor="ray", chunk=2, limit=3, **OPTIONS)
    assert (first.scored + first.errors, first.errors, first.workers) == (3, 0, 2)
    assert len(stored(store)) == 3
    second = bench.run_bench("nb201", ARCHS, store_path=store, executor="ray", chunk=2, **OPTIONS)
    assert (second.skipped, second.scored, second.errors) == (3, len(ARCHS) - 3, 0)
    # deterministic: the very same values, NaN rows (NULL + reason) included
    assert stored(store) == local_rows
    third = bench.run_bench("nb201", ARCHS, store_path=store, executor="ray", **OPTIONS)
    assert (third.skipped, third.scored) == (len(ARCHS), 0)
    assert stored(store) == local_rows


def test_cli_executor_ray_on_a_running_cluster(ray_cluster, local_rows, tmp_path):
    """The command line, connecting to the module's cluster with --address,
    resuming what the local executor started in the same store."""
    store = tmp_path / "r.sqlite"
    bench.run_bench("nb201", ARCHS[:2], store_path=store, **OPTIONS)  # two rows from the local executor
    archs = tmp_path / "archs.txt"
    archs.write_text("\n".join(ARCHS) + "\n")
    result = run_cli("bench", "nb201", "--archs", archs, "--synthetic", "normal", "--batch-size", 8, "--store", store,
                     "--no-progress", "--executor", "ray", "--address", ray_cluster, "--chunk", 3)
    assert result.returncode == 0, result.stderr
    assert f"nb201: {len(ARCHS) - 2} scored" in result.stdout and "2 skipped as already stored" in result.stdout
    assert "(2 workers" in result.stdout
    assert stored(store) == local_rows


def test_worker_killed_mid_task_is_retried_and_every_arch_stored_once(ray_cluster, local_rows, tmp_path, monkeypatch):
    marker = tmp_path / "crashed-once"
    monkeypatch.setattr(bench, "_Job", crashing_job(ARCHS[3], marker))
    store = tmp_path / "r.sqlite"
    summary = bench.run_bench("nb201", ARCHS, store_path=store, executor="ray", chunk=2, **OPTIONS)
    assert marker.exists()  # the first attempt at ARCHS[3]'s chunk killed its worker
    assert (summary.scored, summary.errors) == (len(ARCHS), 0)
    assert stored(store) == local_rows  # every arch once, the same values


def test_worker_that_always_dies_costs_one_error_row(ray_cluster, local_rows, tmp_path, monkeypatch):
    """The chunk fails every retry, is split into one task per architecture,
    and only the killer becomes an error row; a rerun retries it."""
    monkeypatch.setattr(executors, "MAX_RETRIES", 1)
    monkeypatch.setattr(bench, "_Job", crashing_job(ARCHS[1]))
    store = tmp_path / "r.sqlite"
    summary = bench.run_bench("nb201", ARCHS, store_path=store, executor="ray", chunk=3, **OPTIONS)
    assert (summary.scored, summary.errors) == (len(ARCHS) - 1, 1)
    rows = stored(store)
    assert [r[0] for r in rows] == ARCHS
    (error_row,) = [r for r in rows if r[3] is not None]
    assert error_row[0] == ARCHS[1] and error_row[1] is None
    assert error_row[3].startswith("the Ray worker died while scoring this architecture, 2 times")
    assert [r for r in rows if r[0] != ARCHS[1]] == [r for r in local_rows if r[0] != ARCHS[1]]

    monkeypatch.undo()
    again = bench.run_bench("nb201", ARCHS, store_path=store, executor="ray", **OPTIONS)
    assert (again.skipped, again.scored, again.errors) == (len(ARCHS) - 1, 1, 0)
    assert stored(store) == local_rows


def test_ctrl_c_stops_a_ray_run_and_the_rerun_resumes(ray_cluster, tmp_path):
    """Ctrl-C: the tasks in flight are cancelled, every finished row is kept,
    and the same command resumes (on the module's cluster, via --address)."""
    store = tmp_path / "r.sqlite"
    # a batch of 256: with 8 images the 100 architectures may all be scored before the signal lands
    args = ["bench", "nb201", "--sample", 100, "--seed", 7, "--synthetic", "normal", "--batch-size", 256, "--store", store,
            "--no-progress", "--executor", "ray", "--address", ray_cluster, "--chunk", 1]
    proc, err = ctrl_c_after_first_row(args, store, timeout=60)
    assert proc.returncode == 130, err
    done = len(stored(store))
    total = len(unique(nb201.sample(100, 7)))
    assert 1 <= done < total, "the run was not stopped midway"
    assert err.strip().splitlines()[-1] == f"interrupted: {done} of {total} done; rerun the same command to resume"
    assert "Traceback" not in err

    resumed = run_cli(*args)
    assert resumed.returncode == 0, resumed.stderr
    assert f"nb201: {total - done} scored" in resumed.stdout and f"{done} skipped as already stored" in resumed.stdout
    assert [r[0] for r in stored(store)] == unique(nb201.sample(100, 7))  # every architecture exactly once
