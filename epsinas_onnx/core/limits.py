"""Bounds on what one command may ask of the machine, and how to raise them.

A scorer of models from elsewhere must not let one option take the machine
down: thousands of ONNX Runtime threads or worker processes, or a sample list
of 10^8 architectures, each made before anything is scored. The caps are
multiples of the CPUs this process may use; an environment variable raises
each one (docs/security.md)."""

from __future__ import annotations

import os

from epsinas_onnx.core.errors import UserError

PER_CPU = 4  # threads or worker processes per CPU before the tool refuses
MAX_SAMPLE = 1_000_000  # architectures one --sample draws (the list is built in memory)
BENCH_TIMEOUT = 300.0  # seconds per ONNX Runtime run in bench (scorer runs take milliseconds to seconds)
MAX_TIMEOUT = 7 * 24 * 3600.0  # a week: the longest --timeout (past it, give 0: no limit)


def cpus() -> int:
    """The CPUs this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _cap(variable: str) -> int:
    text = os.environ.get(variable)
    if text is None:
        return PER_CPU * cpus()
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise UserError(f"{variable}={text!r} must be a whole number of at least 1")
    return value


def check_count(option: str, value: int | None, variable: str) -> None:
    """Refuse `value` of `option` above its cap, naming the variable that raises it."""
    if value is None:
        return
    cap = _cap(variable)
    if value > cap:
        where = f"the cap {variable}={cap}" if variable in os.environ else f"{PER_CPU} x the {cpus()} CPUs here ({cap})"
        raise UserError(f"{option} {value} is more than {where}; set {variable}={value} to allow it")


def check_threads(threads: int | None) -> None:
    check_count("--threads", threads, "EPSINAS_MAX_THREADS")


def check_workers(workers: int | None) -> None:
    check_count("--workers", workers, "EPSINAS_MAX_WORKERS")


def check_timeout(timeout: float | None) -> None:
    """A run's time limit in seconds: None (no limit) or a number from 0 to
    MAX_TIMEOUT; nan, infinities and negative numbers are no duration."""
    if timeout is None:
        return
    if not isinstance(timeout, (int, float)) or not 0 <= timeout <= MAX_TIMEOUT:
        raise UserError(f"--timeout {timeout!r} is not a number of seconds from 0 to {MAX_TIMEOUT:,.0f} (a week); "
                        "without a limit, give --timeout 0 (the library: timeout=None)")


def check_sample(n: int) -> None:
    if n < 1:
        raise UserError(f"--sample must be at least 1, not {n}")
    if n > MAX_SAMPLE:
        raise UserError(f"--sample {n} is more than the {MAX_SAMPLE:,} architectures one sample may draw (the list "
                        "is built in memory); use --all, or several runs with different --seed into one --store")
