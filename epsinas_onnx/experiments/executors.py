"""Executors: who runs a job's items, one at a time each, in other processes.

A job is what every item needs (bench: the batch, weights and options; calibrate:
the batch and the weight grid), sent to each worker once; it is picklable and
follows `Job` below: `run(item)` makes an item's result and never raises for
a failure of that item alone, `died(item, error)` is the result of an item
whose worker process died while running it. An executor is a context manager
with

    size                     how many items it runs at a time
    imap(items) -> results   one result per item, in the order they finish,
                             each exactly once, a dead worker's item included

Executors never touch a results store: the driver (bench, calibrate) alone
writes what it keeps, one result at a time, so resume and exactly-once hold
for every executor. `run_job` is the one loop a driver runs its items
through (in this process, or with an executor), and `progress_bar` its one
progress bar.

    local   worker processes on this machine (LocalPool; the default)
    ray     tasks on a Ray cluster (`pip install "epsinas-onnx[ray]"`)

Ray: the job (the batch included) is sent once with ray.put; each task runs
a small chunk of items on one CPU (`threads` CPUs with --threads) and returns
their results. Ray reruns a task whose worker died (max_retries); a chunk that
still fails is split into one task per item, and an item whose own task still
fails gets the job's `died` result (as a dead local worker's item does; bench's
next run retries it). At most 2 tasks per slot are in flight, so a
400k-architecture run does not queue 400k/chunk tasks at once.
"""

from __future__ import annotations

import collections
import dataclasses
import gc
import math
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
from typing import Callable, Protocol

from epsinas_onnx.core.errors import UserError
from epsinas_onnx.core.limits import check_workers
from epsinas_onnx.core.options import RunOptions

EXECUTORS = ("local", "ray")
RAY_INSTALL = 'pip install "epsinas-onnx[ray]"'
MAX_RETRIES = 3  # Ray's reruns of a task whose worker process died
MAX_CHUNK = 16  # items per Ray task, at most (auto chunk size)
IN_FLIGHT_PER_SLOT = 2  # Ray tasks submitted per slot: one running, one queued behind it
RAY_TASKS_PER_GPU = 4  # --device cuda: concurrent tasks per GPU (num_gpus = 1/4 each; not tuned)


class Job(Protocol):
    """What an executor runs: picklable, sent to each worker once.

    label, noun: for messages ("bench worker processes ended ...", "... while
    scoring this architecture"). device, threads: what one item needs (Ray
    reserves a GPU share for "cuda" and `threads` CPUs per task)."""

    label: str
    noun: str
    device: str
    threads: int | None

    def run(self, item):
        """The item's result; a failure of this item alone is a result too."""

    def died(self, item, error: str):
        """The result of an item whose worker process died running it (`error` says how)."""


class ExecutionJob:
    """A Job whose device and threads are those of its `execution`
    (ExecutionOptions: as the workers run), a field of the dataclass using it."""

    @property
    def device(self) -> str:  # Job
        return self.execution.device

    @property
    def threads(self) -> int | None:  # Job
        return self.execution.threads


class ExecutorError(UserError):
    """The executor could not go on (the results it yielded so far stand)."""


def check_executor(name: str, address: str | None = None, chunk: int | None = None) -> None:
    """A user error, before any work, for an unknown executor, a missing Ray, or
    Ray-only options given to the local executor."""
    if name not in EXECUTORS:
        raise UserError(f"unknown executor {name!r}: choose one of {', '.join(EXECUTORS)}")
    if name == "local":
        if address is not None:
            raise UserError("--address applies to --executor ray only")
        if chunk is not None:
            raise UserError("--chunk applies to --executor ray only")
        return
    _import_ray()
    if chunk is not None and chunk < 1:
        raise UserError(f"--chunk must be at least 1, not {chunk}")


def open_executor(name: str, job, workers: int | None, *, address: str | None = None, chunk: int | None = None):
    """The executor `name` for `job`. workers: local, the number of processes;
    ray, the most tasks at a time (default: the cluster's CPUs / threads)."""
    check_executor(name, address, chunk)
    if name == "local":
        return LocalPool(job, workers or 1)
    return RayExecutor(job, workers, address=address, chunk=chunk)


def check_run_options(run: RunOptions) -> None:
    """A user error, before any work, for options no run can take."""
    check_executor(run.executor, run.address, run.chunk)
    if run.workers is not None and run.workers < 1:
        raise UserError(f"--workers must be at least 1, not {run.workers}")
    if run.executor == "local":  # a Ray cluster's CPUs are not this machine's
        check_workers(run.workers)
    if run.limit is not None and run.limit < 0:
        raise UserError(f"--limit must be at least 0, not {run.limit}")


def run_job(job: Job, items: list, run: RunOptions, record: Callable[[object], None]) -> int | None:
    """Run `job` on every item once, handing each result to `record` as it
    arrives: in this process where one local worker would do, else with the
    executor run.executor (run.workers at a time; Ray: run.address, run.chunk).
    The one loop of the drivers (bench, calibrate; ablate and search through
    bench): they pass only the items they have not kept yet and keep each
    result as it comes, so an interrupted run loses none of them and a rerun
    resumes. Ctrl-C (or SIGTERM / SIGHUP under stop_signals) arrives as
    KeyboardInterrupt, once the executor has stopped its workers. Returns how
    many items ran at a time (None: there were none)."""
    if not items:
        return None
    workers = min(run.workers or 1, len(items)) if run.executor == "local" else run.workers
    if run.executor == "local" and workers <= 1:
        for item in items:
            record(job.run(item))
        return 1
    with open_executor(run.executor, job, workers, address=run.address, chunk=run.chunk) as pool:
        for result in pool.imap(items):
            record(result)
        return pool.size


def progress_bar(total: int, description: str, unit: str, enabled: bool = True):
    """The drivers' progress bar (tqdm, a context manager) on stderr; off with
    --no-progress or with nothing to do."""
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, file=sys.stderr, disable=not enabled or not total, desc=description,
                dynamic_ncols=True, smoothing=0.1)


def _import_ray(local: bool = False):
    """Ray, imported on demand. local: this process will start its own
    instance, which then stays on the loopback interface (Ray reads the
    setting when it is first imported; its workers inherit it)."""
    if local:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError:
        raise UserError(f"--executor ray needs Ray, which is not installed: {RAY_INSTALL}") from None
    return ray


# ---------------------------------------------------------------- local worker processes


class LocalPool:
    """N worker processes, each on its own pipe to the driver, which hands each
    one item at a time. Unlike multiprocessing.Pool it notices a worker that
    dies (out of memory, a crash in ONNX Runtime): that item gets the job's
    `died` result and a new worker takes over. Nothing is shared between
    workers: with one shared queue, a worker killed while it held the queue's
    lock (reading a task, sending a result) left the others waiting for ever."""

    def __init__(self, job: Job, workers: int):
        self.job = job
        self.size = workers
        self.ctx = multiprocessing.get_context("spawn")
        self.workers: dict[object, _Worker] = {}  # by the driver's end of the worker's pipe
        self.restarts = 0
        self.any_ready = False
        self.early_deaths = 0  # before they were ready: the same for all (an import failing) or one killed

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _start_worker(self) -> None:
        conn, child_conn = self.ctx.Pipe()
        # workers ignore Ctrl-C (the driver stops them): block SIGINT across the
        # start so that the child inherits the block until it has set SIG_IGN
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT}) if hasattr(signal, "pthread_sigmask") else None
        try:
            # the job (the batch: megabytes) goes down the pipe once the worker is
            # up, not with the start: multiprocessing writes the start's arguments
            # to a pipe whose read end it keeps open until done, so a worker killed
            # before it had read them all left the driver blocked in that write
            proc = self.ctx.Process(target=_worker_main, args=(child_conn,), daemon=True,
                                    name=f"epsinas-{self.job.label}-worker")
            proc.start()
        finally:
            if old is not None:
                signal.pthread_sigmask(signal.SIG_SETMASK, old)
        child_conn.close()  # the child holds the only other end now: its death reads as end of file here
        self.workers[conn] = _Worker(proc, conn)

    def imap(self, items: list):
        """Results in the order they finish."""
        items = list(items)
        waiting = collections.deque(range(len(items)))
        unfinished = len(items)
        for _ in range(min(self.size, len(items))):
            self._start_worker()
        while unfinished:
            if not self.workers:  # cannot happen: an unfinished item is waiting or with a live worker
                raise ExecutorError(f"the {self.job.label} workers stopped with {unfinished} {self.job.noun}s "
                                    "unscored; rerun the same command to resume")
            for conn in multiprocessing.connection.wait(list(self.workers)):
                worker = self.workers[conn]
                try:
                    message = conn.recv()
                except (EOFError, OSError):
                    result = self._bury(worker, items, waiting)
                    if result is not None:
                        unfinished -= 1
                        yield result
                    continue
                if message == "started":
                    _send(worker.conn, self.job)  # (fails where it has died: end of file comes next)
                    continue
                if message == "ready":  # it has the job
                    worker.ready = self.any_ready = True
                    self._hand_out(worker, items, waiting)
                    continue
                worker.task = None
                self._hand_out(worker, items, waiting)  # before the driver takes this result: the worker goes on
                unfinished -= 1
                yield message

    def _hand_out(self, worker: "_Worker", items: list, waiting) -> None:
        item = None  # no more work: exit
        if waiting:
            worker.task = waiting.popleft()
            item = items[worker.task]
        if not _send(worker.conn, item) and worker.task is not None:
            waiting.appendleft(worker.task)  # it has died before it had it: another will
            worker.task = None

    def _bury(self, worker: "_Worker", items: list, waiting):
        """A worker's pipe has closed: it exited after its last task, or died.
        The `died` result of the item it was running, if any, else None."""
        del self.workers[worker.conn]
        worker.conn.close()
        worker.process.join(timeout=5)
        code = worker.process.exitcode
        how = "no exit code" if code is None else f"signal {-code}" if code < 0 else f"exit code {code}"
        result = None
        if worker.task is not None:
            result = self.job.died(
                items[worker.task],
                f"the worker process died ({how}) while scoring this {self.job.noun} (out of memory?)")
        elif not worker.ready:
            self.early_deaths += 1
            if self.early_deaths >= self.size and not self.any_ready:  # not one got as far as asking for work
                raise ExecutorError(f"{self.job.label} worker processes ended ({how}) before scoring anything; "
                                    "rerun with --workers 1 to see why")
        if waiting:
            self.restarts += 1
            if self.restarts > 3 * self.size + 10:
                raise ExecutorError(f"{self.job.label} worker processes keep dying ({how}); "
                                    "rerun with --workers 1 to see why")
            self._start_worker()
        return result

    def close(self) -> None:
        for worker in self.workers.values():
            if worker.process.exitcode is None:
                worker.process.terminate()
        for worker in self.workers.values():
            worker.process.join(timeout=5)
            if worker.process.exitcode is None:
                worker.process.kill()
                worker.process.join(timeout=5)
            worker.conn.close()
        self.workers.clear()


@dataclasses.dataclass
class _Worker:
    process: multiprocessing.Process
    conn: object  # the driver's end of its pipe
    task: int | None = None  # index of the item it is running
    ready: bool = False  # has started up, loaded the job and asked for work


def _send(conn, message) -> bool:
    """False where the worker at the other end has died."""
    try:
        conn.send(message)
        return True
    except OSError:
        return False


def _worker_main(conn) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    _die_with_parent()
    try:
        conn.send("started")
        job = conn.recv()
        freeze_startup_objects()
        conn.send("ready")
        while (item := conn.recv()) is not None:
            conn.send(job.run(item))
    except (EOFError, OSError):  # the driver is gone: nobody will read what we send
        return


_FROZEN = []


def freeze_startup_objects() -> None:
    """Once per worker process, before its first item. Each architecture
    makes and drops thousands of onnx-ir objects (cycles: nodes and values point
    at each other), so the cyclic collector runs often, and each full pass also
    walked every object the imports made; frozen, they are skipped
    (NAS-Bench-201: 63-70 -> 56-57 ms per architecture). Garbage is collected
    first: what is frozen is never freed."""
    if not _FROZEN:
        gc.collect()
        gc.freeze()
        _FROZEN.append(True)


def _die_with_parent() -> None:
    """Linux: have the kernel kill this worker when the driver dies."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


# ---------------------------------------------------------------- Ray


def _run_chunk(job, chunk: list) -> list:
    """A Ray task: [(index, item), ...] -> [(index, result), ...]."""
    freeze_startup_objects()
    return [(index, job.run(item)) for index, item in chunk]


class RayExecutor:
    """Runs on a Ray cluster: the one at `address` (or RAY_ADDRESS), else the
    one this process is already connected to, else a new local instance with
    `workers` CPUs (default: every CPU here)."""

    def __init__(self, job, workers: int | None = None, *, address: str | None = None, chunk: int | None = None,
                 max_retries: int | None = None):
        self.ray = _import_ray(local=not (address or os.environ.get("RAY_ADDRESS")))
        self.job = job
        self.workers = workers
        self.address = address
        self.chunk = chunk
        self.max_retries = MAX_RETRIES if max_retries is None else max_retries
        self.size = workers or 1
        self.started = False  # we connected (and so disconnect at the end)
        self.in_flight: dict = {}  # ObjectRef -> [(index, item), ...]

    def __enter__(self):
        ray = self.ray
        if not ray.is_initialized():
            kwargs = {"include_dashboard": False, "logging_level": "WARNING", "configure_logging": True}
            address = self.address or os.environ.get("RAY_ADDRESS")
            if address:
                kwargs["address"] = address
            elif self.workers:
                kwargs["num_cpus"] = self.workers

            try:
                ray.init(**kwargs)
            except Exception as exc:  # ConnectionError, ValueError, RuntimeError...
                where = f"the Ray cluster at {address}" if address else "a local Ray instance"
                text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise UserError(f"cannot connect to {where}: {text}") from None
            self.started = True
        elif self.address:
            raise UserError("this process is already connected to a Ray cluster; --address cannot pick another")
        threads = self.job.threads or 1
        options = {"num_cpus": threads, "max_retries": self.max_retries, "retry_exceptions": False}
        cpus = ray.cluster_resources().get("CPU", 0)
        slots = max(1, int(cpus // threads))
        if self.job.device == "cuda":
            gpus = ray.cluster_resources().get("GPU", 0)
            if not gpus:
                raise UserError("--device cuda: the Ray cluster has no GPU")
            options["num_gpus"] = 1 / RAY_TASKS_PER_GPU
            slots = min(slots, max(1, int(gpus * RAY_TASKS_PER_GPU)))
        self.size = min(slots, self.workers) if self.workers else slots
        self.task = ray.remote(_run_chunk).options(**options)
        self.job_ref = ray.put(self.job)  # the batch travels once, not once per task
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        ray = self.ray
        # No ray.cancel of the tasks in flight: force-cancelling while their
        # replies arrive crashed Ray's core worker (2.60, "Tried to complete
        # task that was not pending"). Ray ends a job's tasks itself when its
        # driver disconnects, and shutdown() below ends a cluster we started.
        self.in_flight.clear()
        if self.started and ray.is_initialized():
            ray.shutdown()
            self.started = False

    def chunk_size(self, n: int) -> int:
        """--chunk, or: enough chunks for 4 per slot, at most MAX_CHUNK items each."""
        if self.chunk:
            return self.chunk
        return max(1, min(MAX_CHUNK, math.ceil(n / (4 * self.size))))

    def imap(self, items: list):
        """Results in the order their chunks finish, each item's once."""
        ray = self.ray
        size = self.chunk_size(len(items))
        queue = [[(i, items[i]) for i in range(start, min(start + size, len(items)))]
                 for start in range(0, len(items), size)]
        queue.reverse()  # pop() from the end takes them in order
        pending = set(range(len(items)))
        limit = IN_FLIGHT_PER_SLOT * self.size
        while pending:
            while queue and len(self.in_flight) < limit:
                chunk = queue.pop()
                self.in_flight[self.task.remote(self.job_ref, chunk)] = chunk
            if not self.in_flight:  # cannot happen while items are pending: a guard against a silent loss
                raise RuntimeError(f"{len(pending)} {self.job.noun}s neither queued nor in flight")
            done, _ = ray.wait(list(self.in_flight), num_returns=1)
            for ref in done:
                chunk = self.in_flight.pop(ref)
                try:
                    results = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:
                    # our own function raised: not a dead worker but a broken environment
                    # (a job's run turns every per-item failure into a result)
                    raise UserError(f"a Ray task failed: {_first_line(exc)} (is the same epsinas-onnx installed "
                                    "on every node?); rerun the same command to resume") from None
                except ray.exceptions.RayError as exc:  # the worker died every time (or its node)
                    if len(chunk) > 1:  # find the item that kills it: one task each
                        queue.extend([entry] for entry in reversed(chunk))
                        continue
                    (index, item), = chunk
                    results = [(index, self._died(item, exc))]
                for index, result in results:
                    if index in pending:  # never twice, whatever a retry returned
                        pending.discard(index)
                        yield result

    def _died(self, item, exc):
        return self.job.died(item, f"the Ray worker died while scoring this {self.job.noun}, {1 + self.max_retries} "
                                   f"times ({type(exc).__name__}; out of memory?)")


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    # a RayTaskError's text is the remote traceback: its last line names the exception
    return (lines[-1] if lines else type(exc).__name__)[:300]
