"""Executors: who runs `bench`'s per-architecture scoring.

An executor is a context manager with

    size                     how many architectures it scores at a time
    imap(todo) -> rows       todo: [(arch, arch_text), ...]; yields one row
                             (bench.score_architecture's dict) per architecture,
                             in the order they finish, each exactly once

built from the one `bench._Job` (batch, weights, options) and scoring with
its `score`, i.e. bench.score_architecture. Executors never touch the results
store: the bench driver alone writes it, one committed row at a time, so
resume and exactly-once (the store's UNIQUE key) hold for every executor.

    local   worker processes on this machine (bench._Pool; the default)
    ray     tasks on a Ray cluster (`pip install "epsinas-onnx[ray]"`)

Ray: the job (the batch included) is sent once with ray.put; each task scores
a small chunk of architectures on one CPU (`threads` CPUs with --threads) and
returns its rows. Ray reruns a task whose worker died (max_retries); a chunk
that still fails is split into one task per architecture, and an architecture
whose own task still fails becomes an error row (as a dead local worker's
architecture does; the next run retries it). At most 2 tasks per slot are in
flight, so a 400k-architecture run does not queue 400k/chunk tasks at once.
"""

from __future__ import annotations

import math
import os

from epsinas_onnx.errors import UserError

EXECUTORS = ("local", "ray")
RAY_INSTALL = 'pip install "epsinas-onnx[ray]"'
MAX_RETRIES = 3  # Ray's reruns of a task whose worker process died
MAX_CHUNK = 16  # architectures per Ray task, at most (auto chunk size)
IN_FLIGHT_PER_SLOT = 2  # Ray tasks submitted per slot: one running, one queued behind it
RAY_TASKS_PER_GPU = 4  # --device cuda: concurrent tasks per GPU (num_gpus = 1/4 each; not tuned)


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
        from epsinas_onnx.bench import _Pool

        return _Pool(job, workers or 1)
    return RayExecutor(job, workers, address=address, chunk=chunk)


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


# ---------------------------------------------------------------- Ray


def _score_chunk(job, chunk: list) -> list:
    """A Ray task: [(index, arch), ...] -> [(index, row), ...]."""
    from epsinas_onnx.bench import freeze_startup_objects

    freeze_startup_objects()
    return [(index, job.score(arch)) for index, arch in chunk]


class RayExecutor:
    """Scores on a Ray cluster: the one at `address` (or RAY_ADDRESS), else the
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
        self.in_flight: dict = {}  # ObjectRef -> [(index, arch), ...]

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
        self.task = ray.remote(_score_chunk).options(**options)
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
        """--chunk, or: enough chunks for 4 per slot, at most MAX_CHUNK archs each."""
        if self.chunk:
            return self.chunk
        return max(1, min(MAX_CHUNK, math.ceil(n / (4 * self.size))))

    def imap(self, todo: list):
        """Rows in the order their chunks finish, each architecture's once."""
        ray = self.ray
        archs = [arch for arch, _ in todo]
        size = self.chunk_size(len(archs))
        queue = [[(i, archs[i]) for i in range(start, min(start + size, len(archs)))]
                 for start in range(0, len(archs), size)]
        queue.reverse()  # pop() from the end takes them in order
        pending = set(range(len(archs)))
        limit = IN_FLIGHT_PER_SLOT * self.size
        while pending:
            while queue and len(self.in_flight) < limit:
                chunk = queue.pop()
                self.in_flight[self.task.remote(self.job_ref, chunk)] = chunk
            if not self.in_flight:  # cannot happen while rows are pending: a guard against a silent loss
                raise RuntimeError(f"{len(pending)} architectures neither queued nor in flight")
            done, _ = ray.wait(list(self.in_flight), num_returns=1)
            for ref in done:
                chunk = self.in_flight.pop(ref)
                try:
                    rows = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:
                    # our own function raised: not a dead worker but a broken environment
                    # (score_architecture turns every per-architecture failure into a row)
                    raise UserError(f"a Ray task failed: {_first_line(exc)} (is the same epsinas-onnx installed "
                                    "on every node?); rerun the same command to resume") from None
                except ray.exceptions.RayError as exc:  # the worker died every time (or its node)
                    if len(chunk) > 1:  # find the architecture that kills it: one task each
                        queue.extend([item] for item in reversed(chunk))
                        continue
                    (index, arch), = chunk
                    rows = [(index, self._dead_row(arch, exc))]
                for index, row in rows:
                    if index in pending:  # never twice, whatever a retry returned
                        pending.discard(index)
                        yield row

    def _dead_row(self, arch, exc) -> dict:
        return self.job.died_row(arch, f"the Ray worker died while scoring this architecture, {1 + self.max_retries} "
                                       f"times ({type(exc).__name__}; out of memory?)")


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    # a RayTaskError's text is the remote traceback: its last line names the exception
    return (lines[-1] if lines else type(exc).__name__)[:300]
