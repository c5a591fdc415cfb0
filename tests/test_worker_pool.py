"""The local worker pool (executors.LocalPool) as bench uses it: every architecture gets exactly one row
whichever worker dies, and when. The workers are real spawned processes; the
job they run is a stand-in that scores nothing, so the deaths can be placed
exactly (tests/test_bench.py kills a real bench run's worker from outside)."""

import os
import signal
import subprocess
import sys
import time

from epsinas_onnx.experiments import bench
from epsinas_onnx.experiments.executors import LocalPool
from epsinas_onnx.spaces import nb201
from tests.conftest import ROOT
from tests.test_cli_errors import assert_user_error


class StandInJob:
    """A row per architecture, its text for a score. kill_on_load: a file that
    the first worker to receive the job creates, then dies (SIGKILL, as the
    out-of-memory killer would while the batch arrives). kill_on: the text of an
    architecture whose worker dies while scoring it."""

    space = nb201
    device = "cpu"
    label, noun = bench.BenchJob.label, bench.BenchJob.noun
    died = bench.BenchJob.died  # the pool makes a dead worker's row with it

    def __init__(self, kill_on_load=None, kill_on=None):
        self.kill_on_load = kill_on_load
        self.kill_on = kill_on
        self.padding = bytes(4 << 20)  # a batch's worth: more than a pipe holds

    def __setstate__(self, state):
        self.__dict__.update(state)
        if self.kill_on_load is not None:
            try:
                os.close(os.open(self.kill_on_load, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return
            os.kill(os.getpid(), signal.SIGKILL)

    def run(self, arch) -> dict:
        text = nb201.format_arch(arch)
        if text == self.kill_on:
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(0.01)  # as if scoring: the other worker does not empty the list before a death is seen
        return {"arch": text, "score": 1.0, "error": None}


def run_pool(job, n: int, workers: int = 2) -> tuple[list[dict], list[str], LocalPool]:
    texts = sorted({nb201.format_arch(a) for a in nb201.sample(n, 3)})
    with LocalPool(job, workers) as pool:
        rows = list(pool.imap([nb201.parse(t) for t in texts]))
    return rows, texts, pool


def test_every_architecture_once_in_a_row_of_its_own():
    rows, texts, pool = run_pool(StandInJob(), 30)
    assert sorted(r["arch"] for r in rows) == texts
    assert all(r["error"] is None for r in rows) and pool.restarts == 0


def test_a_worker_killed_as_its_job_arrives_is_replaced_and_costs_no_row(tmp_path):
    marker = tmp_path / "killed"
    rows, texts, pool = run_pool(StandInJob(kill_on_load=str(marker)), 30)
    assert marker.exists()  # one worker did die
    assert sorted(r["arch"] for r in rows) == texts
    assert all(r["error"] is None for r in rows) and pool.restarts == 1


def test_a_worker_killed_while_scoring_costs_that_architecture_alone():
    texts = sorted({nb201.format_arch(a) for a in nb201.sample(30, 3)})
    victim = texts[len(texts) // 2]
    rows, _, pool = run_pool(StandInJob(kill_on=victim), 30)
    assert sorted(r["arch"] for r in rows) == texts  # each once, the victim too
    errors = [r for r in rows if r["error"] is not None]
    assert [r["arch"] for r in errors] == [victim]
    assert "the worker process died (signal 9) while scoring this architecture" in errors[0]["error"]
    assert pool.restarts == 1


def test_workers_that_cannot_start_give_a_one_line_error(tmp_path):
    # every worker process exits while Python starts (a broken environment)
    (tmp_path / "sitecustomize.py").write_text(
        "import os, sys\nif '--multiprocessing-fork' in sys.argv:\n    os._exit(3)\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    args = ["bench", "nb201", "--batch-size", "8", "--store", str(tmp_path / "r.sqlite"), "--no-progress",
            "--sample", "6", "--synthetic", "normal", "--workers", "2"]
    result = subprocess.run([sys.executable, "-m", "epsinas_onnx", *args], capture_output=True, text=True,
                            cwd=ROOT, env=env, timeout=120)
    assert_user_error(result, "bench worker processes ended (exit code 3) before scoring anything",
                      "--workers 1")
