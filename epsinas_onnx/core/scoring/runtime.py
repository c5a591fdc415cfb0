"""ONNX Runtime sessions: provider choice and options."""

from __future__ import annotations

import math
import os
import select
import signal
import threading
import time
import warnings

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import _pybind_state as _ort_c

from epsinas_onnx.core.errors import UserError
from epsinas_onnx.core.limits import check_threads, check_timeout

# ONNX Runtime's own logger (the default environment's: provider set-up,
# telemetry) writes coloured lines to stderr; the tool's stderr holds only its
# own lines, and a failure is reported once, as a UserError
SILENT = 4  # ORT_LOGGING_LEVEL_FATAL
ort.set_default_logger_severity(SILENT)
if hasattr(ort, "disable_telemetry_events"):
    ort.disable_telemetry_events()

DEVICES = ("auto", "cpu", "cuda")


# CUDA execution provider options. Every architecture is a new session run
# twice: cuDNN's default exhaustive algorithm search (a benchmark of every conv
# algorithm, per session) costs more than the runs; its heuristic pick is cheap.
# TF32 off: TF32 rounds conv / matmul inputs to 10 mantissa bits, and the
# score should not depend on the card (benchmarks/gpu_check.py compares with
# the CPU). cuDNN's graph API may still use TF32 unless NVIDIA_TF32_OVERRIDE=0.
CUDA_OPTIONS = {"cudnn_conv_algo_search": "HEURISTIC", "use_tf32": "0"}
CUDA_MISSING = (
    "--device cuda: the CUDA execution provider is not available in this onnxruntime "
    "(install the gpu extra: pip uninstall -y onnxruntime && pip install onnxruntime-gpu)"
)


def providers_for(device: str) -> list:
    """ONNX Runtime providers for `device`; auto is cuda when a CUDA session can
    actually be made here, else cpu."""
    available = ort.get_available_providers()
    has_cuda = "CUDAExecutionProvider" in available
    if device == "auto":
        device = "cuda" if has_cuda and cuda_problem() is None else "cpu"
    if device == "cuda":
        if not has_cuda:
            raise UserError(CUDA_MISSING)
        problem = cuda_problem()
        if problem is not None:
            raise UserError(f"--device cuda: {problem}")
        return [("CUDAExecutionProvider", dict(CUDA_OPTIONS)), "CPUExecutionProvider"]
    if device == "cpu":
        return ["CPUExecutionProvider"]
    raise UserError(f"unknown device {device!r}: choose one of {', '.join(DEVICES)}")


def _provider_name(provider) -> str:
    return provider if isinstance(provider, str) else provider[0]


def device_name(providers: list) -> str:
    return "cuda" if _provider_name(providers[0]) == "CUDAExecutionProvider" else "cpu"


_CUDA_PROBLEM: list = []  # [None or why], once per process


def cuda_problem() -> str | None:
    """None when ONNX Runtime can open a CUDA session here, else why not (one
    line). onnxruntime-gpu lists the CUDA provider even when the CUDA / cuDNN
    libraries or the GPU are missing, and then quietly runs on the CPU: a tiny
    session tells. Libraries from pip (onnxruntime-gpu[cuda,cudnn]) are loaded
    first with onnxruntime.preload_dlls."""
    if not _CUDA_PROBLEM:
        _CUDA_PROBLEM.append(_probe_cuda())
    return _CUDA_PROBLEM[0]


def _probe_cuda() -> str | None:
    import importlib.util

    from onnx import TensorProto, helper

    if hasattr(ort, "preload_dlls") and importlib.util.find_spec("nvidia") is not None:
        try:
            ort.preload_dlls()
        except Exception:  # the libraries may be found the usual way instead
            pass
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "cuda_probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    # ORT logs why the provider failed on stderr (several lines, colour codes):
    # catch them and keep the reason for one line of our own
    ort.set_default_logger_severity(3)
    with _captured_stderr() as captured:
        try:
            with warnings.catch_warnings():  # "Specified provider ... is not in available provider names"
                warnings.simplefilter("ignore")
                session = ort.InferenceSession(model.SerializeToString(), session_options(log_severity=3),
                                               providers=[("CUDAExecutionProvider", dict(CUDA_OPTIONS))])
            providers = session.get_providers()
        except Exception as exc:
            return f"ONNX Runtime cannot start its CUDA execution provider ({_ort_message(exc)})"
        finally:
            ort.set_default_logger_severity(SILENT)
    if "CUDAExecutionProvider" in providers:
        return None
    try:
        from onnxruntime.capi.build_and_package_info import cuda_version
    except ImportError:
        cuda_version = "?"
    why = _load_error(captured.get("text", ""))
    return (f"ONNX Runtime cannot start its CUDA execution provider ({why or 'no usable GPU?'}); this onnxruntime-gpu "
            f'needs CUDA {cuda_version} and cuDNN 9: pip install "onnxruntime-gpu[cuda,cudnn]" brings them')


class _captured_stderr:
    """Redirect file descriptor 2 (where ORT's C++ logger writes) to a temporary
    file; the text ends up in the dict `with` gives."""

    def __enter__(self):
        import sys
        import tempfile

        self.result: dict = {}
        try:
            sys.stderr.flush()
            self.file = tempfile.TemporaryFile(mode="w+b")
            self.saved = os.dup(2)
            os.dup2(self.file.fileno(), 2)
        except (OSError, ValueError):  # no real stderr (e.g. embedded): leave it
            self.file = None
        return self.result

    def __exit__(self, *exc):
        if self.file is None:
            return False
        os.dup2(self.saved, 2)
        os.close(self.saved)
        self.file.seek(0)
        self.result["text"] = self.file.read().decode(errors="replace")
        self.file.close()
        return False


def _load_error(text: str) -> str:
    """The useful part of ORT's log about a CUDA provider that did not load."""
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    found = re.search(r"with error: ([^\n]+)", text)
    if found:
        return found.group(1).strip()[:200]
    for line in text.splitlines():
        if "CUDA" in line and ("Failed" in line or "error" in line.lower()):
            return line.split("] ")[-1].strip()[:200]
    return ""


GRAPH_OPTIMIZATION = {
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
}


# A session's own CPU arena keeps every block a run allocated for the life of
# the session, grown in powers of two: a collapsed ResNet-50 at 224x224, batch
# 256, ended its two runs holding 116 MiB, without the arena 13 MiB (its
# peak 74 MiB), at the same speed (docs/performance.md, "Real networks").
# The memory pattern still plans each run's intermediates as one block.
# (A session on the shared arena, share_cpu_arena, takes its memory there.)
CPU_MEMORY_ARENA = False


def session_options(threads: int | None = None, optimization: str = "all", log_severity: int = SILENT) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.log_severity_level = log_severity  # what ORT logs is reported once, as a UserError
    options.enable_cpu_mem_arena = CPU_MEMORY_ARENA
    options.graph_optimization_level = GRAPH_OPTIMIZATION[optimization]
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return options


_SHARED_ARENA: list = []  # registered once per process (ONNX Runtime's environment allocators)


def share_cpu_arena(options: ort.SessionOptions) -> ort.SessionOptions:
    """`options` with the session's CPU memory from one arena shared by every
    such session of the process: a new architecture's session reuses the
    pages the previous one touched instead of faulting in its own on its
    first run (NAS-Bench-101's two runs per architecture: about 20 -> 13 ms,
    benchmarks/stage_times.py; the same kernels on the same inputs, so the
    same numbers)."""
    if not _SHARED_ARENA:
        info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
        ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, -1, -1, -1))
        _SHARED_ARENA.append(info)
    options.add_session_config_entry("session.use_env_allocators", "1")
    return options


# The shared arena pays by handing one session's pages to the next: the
# process's first CPU session has none to take, so it runs without an arena
# (CPU_MEMORY_ARENA) and every later one shares. A command that makes one
# session then holds no arena: `score` of a collapsed ResNet-50 at 224x224,
# batch 256, peaks at 350 MiB, 399 on the shared arena.
_CPU_SESSION_MADE: list = []  # [True] once this process has made a CPU session


def make_session(model_bytes: bytes, providers: list[str], threads: int | None = None,
                 optimization: str = "all", shared_arena: bool = False,
                 what: str = "the rewritten model") -> ort.InferenceSession:
    """shared_arena: a CPU session shares the process's arena even as its
    first (a network run piece by piece, whose sessions all run again and
    again: without an arena each run of TransNAS-Bench-101's stem at 256x256
    faults in its buffers anew, 190 ms against 70). what: the model, as an
    error names it."""
    check_threads(threads)
    options = session_options(threads, optimization)
    cpu = _provider_name(providers[0]) == "CPUExecutionProvider"
    if cpu and (_CPU_SESSION_MADE or shared_arena):
        share_cpu_arena(options)
    try:
        session = ort.InferenceSession(model_bytes, options, providers=providers)
    except Exception as exc:  # ORT raises its own exception types per failure
        raise UserError(f"ONNX Runtime cannot load {what}: {_ort_message(exc)}") from None
    if cpu and not _CPU_SESSION_MADE:
        _CPU_SESSION_MADE.append(True)
    wanted = _provider_name(providers[0])
    if wanted != "CPUExecutionProvider" and wanted not in session.get_providers():  # ORT fell back quietly
        raise UserError(f"ONNX Runtime could not use {wanted} for this model (it fell back to the CPU)")
    return session


class RunTimeout(UserError):
    """An ONNX Runtime run stopped at its time limit (--timeout)."""


def run_outputs(session: ort.InferenceSession, outputs: list[str], feeds: dict,
                timeout: float | None = None, shrink_arena: bool = False) -> list[np.ndarray]:
    """session.run, stopped by ONNX Runtime's terminate flag (between nodes, and
    between a Loop's iterations) after `timeout` seconds (RunTimeout) or on
    Ctrl-C / SIGTERM (KeyboardInterrupt), which Python could otherwise act on
    only once the run returned: see _Watchdog. shrink_arena: at the end of the
    run, the CPU arena (the process's shared one included) gives the regions
    it no longer uses back to the system, so that one large run does not stay
    resident for the rest of the process (ONNX Runtime's arena shrinkage)."""
    options = ort.RunOptions()
    options.log_severity_level = SILENT
    if shrink_arena:
        options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    with _WATCHDOG.watching(options, timeout) as run:
        try:
            return session.run(outputs, feeds, options)
        except Exception as exc:
            raise _run_error(exc, run, timeout) from None


class WatchedRuns:
    """Many runs under one deadline and one Ctrl-C watch, for a network run
    piece by piece (one session per piece): `timeout` bounds the whole span,
    as run_outputs bounds one run. The values stay ONNX Runtime's own (raw
    OrtValues: `cpu_value`, and what `first_output` returns), so one piece's
    output feeds the next without a copy.

        with WatchedRuns(timeout) as runs:
            y = runs.first_output(session, ("x",), (x_value,), "y")

    Runs go through run_with_ortvaluevector, the binding without per-call
    conversions: run_with_ort_values spends about 50 us per call wrapping its
    output list, 5x what a small piece's run takes (about 10 us)."""

    def __init__(self, timeout: float | None = None):
        self.timeout = timeout
        self.options = ort.RunOptions()
        self.options.log_severity_level = SILENT
        self._watching = _WATCHDOG.watching(self.options, timeout)

    def __enter__(self) -> WatchedRuns:
        self._run = self._watching.__enter__()
        return self

    def __exit__(self, *exc):
        return self._watching.__exit__(*exc)

    def first_output(self, session: ort.InferenceSession, input_names: tuple[str, ...], values: tuple,
                     output_name: str):
        feeds = _ort_c.OrtValueVector()
        for value in values:
            feeds.push_back(value)
        fetches = _ort_c.OrtValueVector()
        try:
            session.run_with_ortvaluevector(self.options, input_names, feeds, [output_name], fetches, _CPU_DEVICES)
        except Exception as exc:
            raise _run_error(exc, self._run, self.timeout) from None
        return fetches[0]


# run_with_ortvaluevector's argument types live in the binding module itself
_CPU_DEVICES = [_ort_c.OrtDevice(_ort_c.OrtDevice.cpu(), _ort_c.OrtDevice.default_memory(), 0)]


def cpu_value(array: np.ndarray):
    """A raw ONNX Runtime value over `array`'s memory, not a copy: the caller
    keeps `array` alive as long as the value (WatchedRuns feeds)."""
    return _ort_c.OrtValue.ortvalue_from_numpy(array, _CPU_DEVICES[0])


def _run_error(exc: Exception, run: "_Run", timeout: float | None) -> BaseException:
    """What a failed run raises: KeyboardInterrupt for a stop signal,
    RunTimeout past the deadline, else a UserError with ORT's first line."""
    if run.interrupted:
        return KeyboardInterrupt()
    if run.timed_out:
        return RunTimeout(f"the model ran for more than {timeout:g} s and was stopped (--timeout {timeout:g}); "
                          "a Loop that never ends? If it is only slow, raise --timeout")
    return UserError(f"ONNX Runtime failed to run the model: {_ort_message(exc)}")


class _Run:
    def __init__(self, options, deadline: float):
        self.options, self.deadline = options, deadline
        self.timed_out = self.interrupted = False


class _Watchdog:
    """One daemon thread per process that sets RunOptions.terminate on the
    ONNX Runtime runs in flight: at their deadline, and when SIGINT, SIGTERM
    or SIGHUP arrives. Python runs a signal handler only in the main thread
    between bytecodes, so during session.run (minutes, for a long Loop) a
    Ctrl-C would wait; the C-level handler does write the signal number to the
    wakeup fd (signal.set_wakeup_fd), set during each run in the main thread,
    and this thread reads it at once. After the run Python's own handler runs
    as usual (KeyboardInterrupt for SIGINT)."""

    STOP_SIGNALS = {int(getattr(signal, n)) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n)}

    def __init__(self):
        self.lock = threading.Lock()
        self.runs: set[_Run] = set()
        self.wake_at = math.inf  # when the thread next looks at the deadlines
        self.thread = None

    def _start(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        os.set_blocking(self.write_fd, False)  # set_wakeup_fd needs it
        self.thread = threading.Thread(target=self._loop, name="epsinas-onnx-watchdog", daemon=True)
        self.thread.start()

    # the longest the thread sleeps before it looks at the deadlines again: a
    # far deadline is never one select() could not take (an OverflowError would end the thread)
    MAX_SLEEP = 60.0

    def watching(self, options, timeout: float | None) -> "_Watching":
        check_timeout(timeout)  # nan would make the thread spin, 1e300 overflow select()
        return _Watching(self, _Run(options, math.inf if timeout is None else time.monotonic() + timeout))

    def add(self, run: _Run) -> None:
        with self.lock:
            if self.thread is None:
                self._start()
            self.runs.add(run)
            poke = run.deadline < self.wake_at
        if poke:  # the thread sleeps past this deadline: wake it to recompute
            self._poke()

    def remove(self, run: _Run) -> None:
        with self.lock:
            self.runs.discard(run)

    def _poke(self) -> None:
        try:
            os.write(self.write_fd, b"\0")
        except BlockingIOError:  # the pipe is full of pokes: the thread will wake anyway
            pass

    def _loop(self) -> None:
        while True:
            with self.lock:
                self.wake_at = min((r.deadline for r in self.runs), default=math.inf)
                wait = None if self.wake_at == math.inf else min(max(0.0, self.wake_at - time.monotonic()), self.MAX_SLEEP)
            ready, _, _ = select.select([self.read_fd], [], [], wait)
            signals = set()
            if ready:
                try:
                    signals = set(os.read(self.read_fd, 512))
                except BlockingIOError:
                    pass
            now = time.monotonic()
            with self.lock:
                for run in self.runs:
                    if signals & self.STOP_SIGNALS:
                        run.interrupted = True
                        run.options.terminate = True
                    elif run.deadline <= now:
                        run.timed_out = True
                        run.options.terminate = True


class _Watching:
    """The span of one run: registered with the watchdog, and in the main
    thread the watchdog's pipe as Python's wakeup fd (another's put back after)."""

    def __init__(self, watchdog: _Watchdog, run: _Run):
        self.watchdog, self.run, self.previous = watchdog, run, None

    def __enter__(self) -> _Run:
        self.watchdog.add(self.run)
        if threading.current_thread() is threading.main_thread():
            try:
                previous = signal.set_wakeup_fd(self.watchdog.write_fd, warn_on_full_buffer=False)
            except (ValueError, OSError):
                previous = None
            if previous not in (None, -1):  # someone else's (an event loop): leave it theirs
                signal.set_wakeup_fd(previous)
            else:
                self.previous = previous
        return self.run

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.set_wakeup_fd(self.previous)
        self.watchdog.remove(self.run)
        return False


_WATCHDOG = _Watchdog()


def _ort_message(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    # ORT prefixes messages with "[ONNXRuntimeError] : 10 : INVALID_GRAPH : ..."; keep what follows.
    return line.split(" : ")[-1][:400]
