"""bench: score many architectures of a search space into the results store.

The batch is prepared once, in the driver, and shipped to the worker
processes; each worker scores one architecture at a time with ONNX Runtime on
one thread (two 1-thread processes beat one 2-thread process), and the driver,
the only writer, commits each row as it arrives (executors.run_job runs the
items; `Recorder` keeps the rows). A rerun skips what the store already holds,
so a killed or interrupted run resumes where it stopped.

Everything done per architecture is in `score_architecture`: a `Runner` makes
the architecture ready to run at any weight, and the two runs and the metric
follow. There are two runners, with the same numbers bit for bit:
`ExportRunner`, the generic path (export, rewrite, session), and
`PiecesRunner`, for a space that runs its networks piece by piece
(Space.pieces_for: NAS-Bench-201) through pieces each worker made once.
Architectures that are the same network (an exporter's `computation_class`;
NAS-Bench-201) are sent to the workers once, and the driver stores the others'
rows from that result; so are those that are the same network once every cell
input is finite (`computation_class_if_finite`), whose shared run checks that
it was (ClassPlan). What changes the score is part of the store key: the
space's `to_onnx` keywords (`export`, every default explicit) and the
ScoringSettings (options.ScoringSettings.key). Exporter options that change
only how the graph is built travel apart (`build_options`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import signal
import time
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from epsinas_onnx.core.errors import UserError
from epsinas_onnx.core.options import (BENCH_EXECUTION, ArchSelection, BatchOptions, ExecutionOptions, RunOptions,
                                       ScoringSettings)
from epsinas_onnx.core.rewriting.computation_key import computation_key
from epsinas_onnx.core.scoring.modes import check_mode, score_in_mode
from epsinas_onnx.core.scoring.scorer import batch_for, check_weights, open_session, prepare_model, rewrite_model
from epsinas_onnx.core.stop_signals import stoppable
from epsinas_onnx.core.textfile import file_status, read_text
from epsinas_onnx.experiments.executors import ExecutionJob, check_run_options, progress_bar, run_job
from epsinas_onnx.experiments.store import ResultStore, fingerprint, now, settings_key, weights_key
from epsinas_onnx.spaces.protocol import Space


class BenchInterrupted(KeyboardInterrupt):
    """Ctrl-C, SIGTERM or SIGHUP: the workers are stopped and every finished
    row is stored. `signum`: the signal (exit status 128 + signum)."""

    def __init__(self, summary: "BenchSummary", signum: int = signal.SIGINT):
        super().__init__(summary.interrupted_message())
        self.summary = summary
        self.signum = int(signum)


@dataclasses.dataclass
class BenchSummary:
    space: str
    store: str
    requested: int  # distinct architectures asked for
    duplicates: int  # repeated entries in the list, scored once
    skipped: int  # already in the store
    todo: int  # to score in this run (after --limit)
    scored: int = 0
    nan: int = 0
    errors: int = 0
    wall: float = 0.0
    arch_seconds: float = 0.0  # summed over architectures, inside the workers
    reused: int = 0  # scored without a run: the same computation as an earlier architecture
    workers: int = 1
    data: str = ""  # fingerprint
    data_description: str = ""
    warnings: list = dataclasses.field(default_factory=list)  # the rewriter's, for the first architecture
    # --proxies: per proxy, its seconds summed over the architectures (inside the workers), NaN and errors
    proxy_seconds: dict = dataclasses.field(default_factory=dict)
    proxy_nan: dict = dataclasses.field(default_factory=dict)
    proxy_errors: dict = dataclasses.field(default_factory=dict)

    @property
    def finished(self) -> int:
        return self.scored + self.errors

    def line(self) -> str:
        per_arch = f"{self.wall / self.finished:.3g} s/arch" if self.finished else "- s/arch"
        inside = f", {self.arch_seconds / self.finished:.3g} s per arch in a worker" if self.finished else ""
        errors = f"{self.errors} errors" + (" (rerun to retry them)" if self.errors else "")
        repeats = f" ({self.duplicates} repeats in the list scored once)" if self.duplicates else ""
        reused = f"; {self.reused} computed like an earlier one, not run again" if self.reused else ""
        return (
            f"{self.space}: {self.scored} scored ({self.nan} NaN{reused}), {errors}, "
            f"{self.skipped} skipped as already stored{repeats}; wall {self.wall:.1f} s, {per_arch} "
            f"({self.workers} worker{'s' if self.workers != 1 else ''}{inside}); store {self.store}"
        )

    def proxies_line(self) -> str:
        """--proxies: each proxy's seconds per architecture in a worker, beside
        epsinas's; a line of its own after line() (empty without --proxies)."""
        if not self.proxy_seconds or not self.finished:
            return ""
        parts = [f"epsinas {self.arch_seconds / self.finished:.3g}"]
        for name, seconds in self.proxy_seconds.items():
            notes = [f"{n} {what}" for n, what in ((self.proxy_nan.get(name, 0), "NaN"),
                                                   (self.proxy_errors.get(name, 0), "errors")) if n]
            parts.append(f"{name} {seconds / self.finished:.3g}" + (f" ({', '.join(notes)})" if notes else ""))
        return "seconds per architecture in a worker: " + ", ".join(parts)

    def interrupted_message(self) -> str:
        total = self.skipped + self.todo
        return f"interrupted: {self.skipped + self.finished} of {total} done; rerun the same command to resume"


# ---------------------------------------------------------------- one architecture

BENCH_GRAPH_OPTIMIZATION = "none"  # many small sessions: ONNX Runtime's optimisation costs more than it saves


@dataclasses.dataclass
class BenchJob(ExecutionJob):
    """What every worker needs, sent once per worker: an executors.Job whose
    items are architectures and whose results are rows (score_architecture)."""

    label = "bench"  # executors.Job: for the executor's messages
    noun = "architecture"

    space: Space
    export: dict  # the space's to_onnx keywords, every default explicit (as the store key has them)
    scoring: ScoringSettings
    input_name: str | None
    execution: ExecutionOptions  # as the workers run: their device, threads, timeout, graph optimisation
    batch: np.ndarray
    weights: tuple
    data: str = ""  # the batch's fingerprint (store.fingerprint), as the store key has it; "": not known yet
    finite_checks: frozenset = frozenset()  # texts of the architectures run with the finite check (ClassPlan)
    proxies: tuple = ()  # other proxies computed beside epsinas (RunOptions.proxies)
    proxy_seed: int | None = None  # their draws' seed (RunOptions.proxy_seed)
    model_input: str = "input"  # the model input the batch feeds (the proxies' feeds)
    examples: int | None = None  # examples in the batch (proxies: flops per example)

    @property
    def build(self) -> dict:
        """The exporter options that build a smaller graph computing the same (build_options)."""
        return build_options(self.space, self.scoring)

    def run(self, arch) -> dict:
        row = score_architecture(self, arch, bool(self.finite_checks) and self.space.format_arch(arch) in self.finite_checks)
        if self.proxies:
            row["proxies"] = proxy_values(self, arch)
        return row

    def runner(self) -> Runner:
        """This process's runner for the job: the space's pieces where it has
        them for these settings (made on first use, kept for every architecture
        after), else the generic path."""
        if "_runner" not in self.__dict__:
            pieces = process_pieces(self)
            keyed = class_function(self.space, self.scoring) is None
            self._runner = PiecesRunner(pieces, self.execution.timeout, keyed) if pieces is not None else ExportRunner(self)
        return self._runner

    def died(self, arch, error: str) -> dict:
        """The error row of an architecture whose worker process died scoring
        it (a local worker, a Ray task): no result; the next run retries it."""
        row = {
            "arch": self.space.format_arch(arch), "score": math.nan, "nan_reason": None,
            "params": None, "seconds": 0.0, "device": self.device, "error": error,
        }
        if getattr(self, "proxies", ()):  # a job without proxies (and stand-ins that borrow this) add none
            row["proxies"] = {name: _proxy_error(error) for name in self.proxies}
        return row

    def __getstate__(self):  # a Space holds functions: send its name; each worker makes its own runner
        state = dict(self.__dict__)
        state["space"] = self.space.name
        state.pop("_runner", None)  # sessions do not pickle
        return state

    def __setstate__(self, state):
        from epsinas_onnx.spaces import get_space

        state["space"] = get_space(state["space"])
        self.__dict__.update(state)


@dataclasses.dataclass
class ReadyArch:
    """One architecture ready to run at any weight (Runner.ready)."""

    outputs: Callable  # weight -> (scored output, the space's finite check output or None)
    device: Callable[[], str]  # where it ran (called after the runs)
    key: str | None = None  # its computation key (the same key computes the same), where the runner makes one


class Runner(Protocol):
    """How a worker runs an architecture. Both runners give the same outputs
    bit for bit (tests/test_nb201_pieces.py)."""

    computed: dict | None  # results by computation key, filled by score_architecture; None: no keys

    def ready(self, arch, finite_check: bool) -> ReadyArch:
        """`arch` ready to run; with finite_check, also the space's check that every cell input is finite."""


class ExportRunner:
    """The generic path: each architecture exported, rewritten, and run in a
    session of its own, opened at its first run. With keys (where the driver
    does not group by computation class), an architecture whose rewritten graph
    computes exactly what an earlier one's did takes that result, with no
    session and no run."""

    def __init__(self, job: BenchJob, keyed: bool | None = None):
        self.job = job
        keyed = class_function(job.space, job.scoring) is None if keyed is None else keyed
        self.computed = {} if keyed else None

    def ready(self, arch, finite_check: bool) -> ReadyArch:
        job = self.job
        extra = {"finite_check": True} if finite_check else {}
        # the exporter's onnx-ir model itself (no protobuf round trip), rewritten in place
        staged = rewrite_model(job.space.to_ir(arch, **job.export, **job.build, **extra), job.scoring, job.input_name,
                               in_place=True)
        key = computation_key(staged.rewritten.model, staged.output) if self.computed is not None and not extra else None
        names = [staged.output] + ([job.space.finite_check_output] if finite_check else [])
        session = functools.cache(lambda: open_session(staged, job.execution))

        def outputs(weight: float):
            scored, *check = session().run_outputs(job.batch, weight, names)
            return scored, (check[0] if check else None)

        return ReadyArch(outputs, lambda: session().device, key)


class PiecesRunner:
    """The space's network run piece by piece (Space.pieces_for), with
    sessions made once per worker; CPU only. keyed (where the driver does not
    group by computation class): an architecture whose pieces' computation key
    (the pieces' computation_key) is an earlier one's takes that result."""

    def __init__(self, pieces, timeout: float | None, keyed: bool = False):
        self.pieces = pieces
        self.timeout = timeout  # bounds all the pieces of one architecture at one weight together
        self.computed = {} if keyed else None

    def ready(self, arch, finite_check: bool) -> ReadyArch:
        key = self.pieces.computation_key(arch) if self.computed is not None and not finite_check else None
        return ReadyArch(lambda w: self.pieces.output(arch, w, finite_check=finite_check, timeout=self.timeout),
                         lambda: "cpu", key)


def score_architecture(job: BenchJob, arch, finite_check: bool = False, runner: Runner | None = None) -> dict:
    """Score one architecture: ready it (job.runner(), unless `runner`), run it
    at the weights the mode needs, take the metric.

    Returns a row: arch (format_arch), score (NaN is a result, with nan_reason),
    error (None, or why the architecture could not be scored at all), params,
    seconds, device, reused (not stored), finite (with finite_check: whether
    every cell input was finite in every run, else None). Never raises for a
    per-architecture failure; a run past execution.timeout is an error row."""
    runner = runner or job.runner()
    start = time.perf_counter()
    value, reason, error, device, reused, finite = math.nan, None, None, job.device, False, None
    try:
        ready = runner.ready(arch, finite_check)
        if ready.key is not None and ready.key in runner.computed:
            value, reason, device = runner.computed[ready.key]
            reused = True
        else:
            # a run skipped by the mode is skipped for every architecture of the same key too
            value, reason, finite = score_runs(job.space, ready.outputs, job.weights, job.scoring.mode, finite_check)
            device = ready.device()
            if ready.key is not None:
                runner.computed[ready.key] = (value, reason, device)
    except Exception as exc:  # an architecture that fails is a row with an error, not a NaN
        error = error_text(exc)
    return {
        "arch": job.space.format_arch(arch), "score": float(value), "nan_reason": reason, "error": error,
        "params": num_params(job.space, arch, job.export), "seconds": time.perf_counter() - start,
        "device": device, "reused": reused, "finite": finite,
    }


def score_runs(space: Space, outputs, weights, mode: str, finite_check: bool):
    """The score in `mode` from outputs(w) -> (scored output, the space's
    finite check or None): (score, nan_reason, finite: whether every check
    run passed, None without finite_check)."""
    checks = []

    def run(w):
        scored, check = outputs(w)
        if check is not None:
            checks.append(space.finite_check_passed(check))
        return scored

    value, reason, _, _ = score_in_mode(mode, weights, run)
    return value, reason, (all(checks) if finite_check else None)


def num_params(space: Space, arch, export: dict) -> int | None:
    """The parameter count (with the 10-class head), None where it cannot be had."""
    try:
        return int(space.num_params(arch, **space.num_params_kwargs(export)))
    except Exception:
        return None


# the pieces this process made last and what they were made for: a search scores a
# few architectures per run_bench call, in one process, and should not make them each time
_PIECES_MADE: dict[tuple, object] = {}


def process_pieces(job: BenchJob):
    """This process's pieces for `job` (Space.pieces_for), None where the space has none or they do not apply."""
    if job.space.pieces_for is None:
        return None
    # a Ray task unpickles the job anew: the fingerprint run_bench computed saves hashing the batch again
    key = (job.space.name, repr(sorted(job.export.items())), job.scoring, job.input_name,
           job.data or fingerprint(job.batch), job.execution)
    if key not in _PIECES_MADE:
        _PIECES_MADE.clear()  # one set at a time: their sessions hold memory
        try:
            _PIECES_MADE[key] = job.space.pieces_for(job.export, job.scoring, job.batch, job.execution, job.input_name)
        except Exception:  # the generic path then reports, per architecture, what fails
            _PIECES_MADE[key] = None
    return _PIECES_MADE[key]


# ---------------------------------------------------------------- computation classes


@dataclasses.dataclass
class ClassPlan:
    """Which architectures to run, and which take another's result.

    same: text of a scored architecture -> the architectures that compute
    exactly what it does (equal `computation_class`). if_finite: text of a
    scored architecture -> one architecture of each other exact class that
    computes the same provided every cell input is finite (equal
    `computation_class_if_finite`); the scored one is run with the space's
    finite check, and where the check fails they are run themselves."""

    to_score: list
    same: dict
    if_finite: dict


def computation_classes(space: Space, todo: list, scoring: ScoringSettings) -> ClassPlan:
    """Split `todo` ([(arch, text), ...]) into the architectures to score and
    those that take an earlier one's result without being exported.

    Only for a space whose exporter names its classes (NAS-Bench-201), and only
    under constant weights: the class says two networks are the same up to
    their weights' values, which the random-weight ablations tell apart. The
    finite-input classes hold only with zero biases too (a dropped term is
    0 only if BN's beta is)."""
    exact = class_function(space, scoring)
    if exact is None:
        return ClassPlan(todo, {}, {})
    exact_reps, same = _group(todo, exact)
    coarse = finite_class_function(space, scoring)
    if coarse is None:
        return ClassPlan(exact_reps, same, {})
    to_score, if_finite = _group(exact_reps, coarse)
    return ClassPlan(to_score, same, if_finite)


def _group(todo: list, classify) -> tuple[list, dict]:
    """The first architecture of each class, and the others by the first's text."""
    first: dict[str, str] = {}  # class -> text of the architecture scored for it
    others: dict[str, list] = {}
    firsts = []
    for arch, text in todo:
        name = classify(arch)
        if name in first:
            others[first[name]].append((arch, text))
        else:
            first[name] = text
            others[text] = []
            firsts.append((arch, text))
    return firsts, {text: rows for text, rows in others.items() if rows}


def class_function(space: Space, scoring: ScoringSettings):
    """The space's computation_class where it holds for these settings, else None."""
    if scoring.random_weights:
        return None
    return space.computation_class


def build_options(space: Space, scoring: ScoringSettings) -> dict:
    """Exporter options for bench that build a smaller graph computing the
    same under these settings: tied parameters (one initialiser per kind and
    shape, GraphBuilder.tied_parameter) under constant weights, where every
    layer's parameters hold the same values anyway; the rewrite then has a few
    initialisers to handle instead of hundreds (NAS-Bench-201: 33 -> 25 ms of
    Python per architecture; NAS-Bench-101: no longer draws millions of
    placeholder numbers per cell; the same rewritten graph: tests/test_computation_key.py)."""
    if scoring.random_weights:
        return {}
    return {"tied": True} if space.ir_takes_tied else {}


def finite_class_function(space: Space, scoring: ScoringSettings):
    """The space's computation_class_if_finite where it holds for these settings, else None."""
    if class_function(space, scoring) is None or scoring.bias == "w":
        return None
    return space.computation_class_if_finite


def follower_row(job: BenchJob, row: dict, arch, text: str) -> dict:
    """`row`'s result for another architecture of the same computation class
    (an error too: rerun, the class is tried again)."""
    start = time.perf_counter()
    params = num_params(job.space, arch, job.export)
    error = row["error"] and f"{row['error']} (while scoring {row['arch']}, which computes the same)"
    return {**row, "arch": text, "params": params, "error": error, "seconds": time.perf_counter() - start,
            "reused": True}


def _proxy_keys(names: tuple, seed: int | None, export: dict, input_name: str | None) -> dict[str, str]:
    """The store key's settings of each requested proxy: the export options and what its value depends on."""
    if not names:
        return {}
    from epsinas_onnx.proxies import registry

    options = proxy_options(seed)
    return {name: settings_key({"export": dict(export), "input_name": input_name, "proxy": name,
                                "options": registry.get(name).settings(options)})
            for name in names}


def proxy_options(seed: int | None):
    """The proxies.ProxyOptions of RunOptions.proxy_seed (None: its default)."""
    from epsinas_onnx.proxies.proxy import ProxyOptions

    return ProxyOptions() if seed is None else ProxyOptions(seed=seed)


def proxy_values(job: BenchJob, arch) -> dict:
    """Every requested proxy of `arch` (epsinas_onnx.proxies.engine), as the
    proxies table stores them; an exception is an error for each, a run that
    would not fit in memory an error for its proxy; both retried by the next run."""
    from epsinas_onnx.proxies import engine
    from epsinas_onnx.proxies.proxy import Context

    context = Context(job.batch, job.model_input, proxy_options(job.proxy_seed), job.examples)
    # the exporter's untied graph, one fresh copy per architecture; full width, ONNX Runtime's full optimisation
    execution = ExecutionOptions(device=job.device, threads=job.threads, timeout=job.execution.timeout)
    try:
        results = engine.compute_on(lambda: job.space.to_ir(arch, **job.export), job.proxies, context, execution)
    except Exception as exc:  # an architecture that fails is an error row, not a NaN
        return {name: _proxy_error(error_text(exc)) for name in job.proxies}
    return {name: {"value": r.value, "nan_reason": r.nan_reason, "seconds": r.seconds, "error": r.error}
            for name, r in results.items()}


def _proxy_error(error: str) -> dict:
    return {"value": math.nan, "nan_reason": None, "seconds": 0.0, "error": error}


def error_text(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [""])[0][:500]
    return text if isinstance(exc, UserError) else f"{type(exc).__name__}: {text}"


# ---------------------------------------------------------------- the architecture list


PACKAGED_PREFIX = "packaged:"


def _packaged_archs(space: Space, name: str) -> list:
    from epsinas_onnx.core.tables import packaged
    from epsinas_onnx.core.tables import pick_column

    table = packaged(name)
    column = pick_column(table.columns, (*space.arch_columns, "arch_str"), "architecture", table, "--archs")
    archs = []
    for line, row in enumerate(table.rows, start=2):
        try:
            archs.append(space.parse(" ".join(row[c] for c in column.split(","))))
        except UserError as exc:
            raise UserError(f"{table}, line {line}: {exc} (is it a table of {space.name}?)") from None
    return archs


def load_arch_file(space: Space, path) -> list:
    """Architectures from a file: one per line in the space's own encoding
    (blank lines and lines starting with '#' skipped); for nb101 also the csv
    files of the benchmark, for nlp wt2_summary.csv (the space's read_csv_archs);
    "packaged:NAME" is the architecture column
    of a table shipped with the package (benchmark_tables), in its order."""
    if str(path).startswith(PACKAGED_PREFIX):
        return _packaged_archs(space, str(path)[len(PACKAGED_PREFIX):])
    path = Path(path)
    if file_status(path, "architecture file") is None:
        raise UserError(f"architecture file not found: {path} (check the path)")
    if path.suffix == ".csv" and space.read_csv_archs is not None:
        return space.read_csv_archs(path)
    archs = []
    for number, line in enumerate(read_text(path, "architecture file").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            archs.append(space.parse(line))
        except UserError as exc:
            raise UserError(f"{path}, line {number}: {exc}") from None
    if not archs:
        raise UserError(f"{path} holds no architectures")
    return archs


def _unique(space: Space, archs) -> tuple[list, list[str]]:
    """Parse strings, drop repeats (same format_arch), keep the first order."""
    seen: dict[str, object] = {}
    for arch in archs:
        if isinstance(arch, str):
            arch = space.parse(arch)
        else:
            space.validate(arch)
        seen.setdefault(space.format_arch(arch), arch)
    return list(seen.values()), list(seen)


def selected_archs(space: Space, selection: ArchSelection, offers_all: bool = False) -> list:
    """The architectures `selection` names (--all where the command offers
    it, --sample N with --seed, or --archs FILE); UserError unless exactly one is given."""
    from epsinas_onnx.core.limits import check_sample

    chosen = sum([selection.everything, selection.sample is not None, selection.arch_file is not None])
    if chosen != 1:
        raise UserError(f"give exactly one of {'--all, ' if offers_all else ''}--sample N or --archs FILE")
    if selection.everything:
        if not space.enumerable:
            raise UserError(f"{space.name} cannot be enumerated here; use --sample N or --archs FILE")
        return space.all_archs()
    if selection.sample is not None:
        check_sample(selection.sample)
        return space.sample(selection.sample, selection.seed)
    return load_arch_file(space, selection.arch_file)


# ---------------------------------------------------------------- the driver


@stoppable
def run_bench(space_name: str, archs, weights=None, *, batch: BatchOptions = BatchOptions(),
              scoring: ScoringSettings = ScoringSettings(), execution: ExecutionOptions = BENCH_EXECUTION,
              export: dict | None = None, run: RunOptions = RunOptions()) -> BenchSummary:
    """Score `archs` (architectures or their strings) of space `space_name` into the store run.store.

    weights: default the space's reference pair. export: keyword arguments of
    the space's to_onnx; scoring: what is computed (both are part of the
    store key, with every default made explicit: ScoringSettings.key; a key
    names the mode only where it is not the reference, so stores written
    before modes existed keep their keys); batch: the batch fed; execution:
    device, threads per worker, timeout (seconds each ONNX Runtime run may
    take, None: no limit; an architecture past it is an error row, retried by
    the next run). Architectures already stored under the same key are
    skipped; run.limit caps how many are scored in this run. Raises
    BenchInterrupted on Ctrl-C, SIGTERM or SIGHUP (finished rows are stored),
    UserError on bad input.

    run.executor: "local" (run.workers processes, default 1) or "ray" (a Ray
    cluster: the one at run.address, else RAY_ADDRESS, else a local instance;
    run.workers caps the tasks at a time, default the cluster's CPUs;
    run.chunk architectures per task); see executors.py. The driver alone
    writes the store either way.
    run.proxies: names of other proxies (epsinas_onnx/proxies) computed for
    every architecture beside epsinas and stored in the store's proxies table,
    each under its own key (export options, its settings from a
    proxies.ProxyOptions of run.proxy_seed); an architecture is done when
    epsinas and every one of them are stored."""
    from epsinas_onnx.spaces import get_space

    space = get_space(space_name)
    weights = check_weights(weights if weights is not None else space.reference_weights)
    check_mode(scoring.mode, weights)
    export = {k: v for k, v in (export or {}).items() if v is not None}
    space.check_export_options(export)
    # explicit defaults: the key is the same whether an option was given at its default or left out
    export = {**space.export_defaults, **export}
    check_run_options(run)
    listed = list(archs)
    unique, texts = _unique(space, listed)
    if not unique:
        raise UserError("no architectures to score")

    # an existing store is checked before any work (a bad one fails at once);
    # a new one is created only once the input has proved good
    store = ResultStore(run.store) if file_status(run.store, "the results store") is not None else None
    try:
        # the batch, once: shaped by the first architecture's model. On Ray the
        # driver need not have the workers' GPU: --device cuda probes on the CPU
        probe_device = "cpu" if run.executor == "ray" and execution.device == "cuda" else execution.device
        probe = prepare_model(space.to_onnx(unique[0], **export), scoring,
                              dataclasses.replace(execution, device=probe_device), batch.input_name)
        fed = batch_for(probe, batch)
        key = {
            "space": space_name, "weights": weights_key(weights), "data": fingerprint(fed.array),
            "settings": settings_key(scoring.key(export, batch.input_name)),
        }
        if store is None:
            store = ResultStore(run.store)
        done = store.done(key["space"], key["weights"], key["data"], key["settings"])
        proxy_keys = _proxy_keys(run.proxies, run.proxy_seed, export, batch.input_name)
        if proxy_keys:
            store.ensure_proxies()
            for name, proxy_key in proxy_keys.items():
                done = done & store.proxies_done(key["space"], key["data"], proxy_key, name)
        todo = [(arch, text) for arch, text in zip(unique, texts) if text not in done]
        if run.limit is not None:
            todo = todo[:run.limit]
        summary = BenchSummary(
            space=space_name, store=str(run.store), requested=len(unique), duplicates=len(listed) - len(unique),
            skipped=len(done.intersection(texts)), todo=len(todo), workers=min(run.workers or 1, max(len(todo), 1)),
            data=key["data"], data_description=fed.description, warnings=list(probe.rewritten.warnings),
        )
        job_device = "cuda" if probe_device != execution.device else probe.device
        workers_run = dataclasses.replace(execution, device=job_device, graph_optimization=BENCH_GRAPH_OPTIMIZATION)
        job = BenchJob(space, export, scoring, batch.input_name, workers_run, fed.array, weights, data=key["data"],
                       proxies=tuple(proxy_keys), proxy_seed=run.proxy_seed, model_input=probe.input_spec.name,
                       examples=batch.batch_size)
        summary.proxy_seconds = {name: 0.0 for name in proxy_keys}
        key["proxy_settings"] = proxy_keys
        _score_all(job, todo, store, key, summary, run)
        _check_kept(store, key, [text for _, text in todo], summary)
    finally:
        if store is not None:
            store.close()
    return summary


def _check_kept(store: ResultStore, key: dict, texts: list[str], summary: BenchSummary) -> None:
    """The summary counts what the store keeps: the file is still where it was
    opened, and holds a row for every architecture this run stored one for
    (read back; a trigger or another program could have removed them)."""
    store.check_still_there()
    kept = store.kept(key, texts)
    if kept < summary.finished:
        raise UserError(f"the results store {store.path} holds {kept} of the {summary.finished} rows this run "
                        "wrote: something else (a trigger, another program) removed the others; "
                        "rerun the command into a store nothing else changes")


def _score_all(job: BenchJob, todo: list, store: ResultStore, key: dict, summary: BenchSummary,
               run: RunOptions) -> None:
    """Score `todo` ([(arch, text), ...]) one computation class at a time
    (executors.run_job), each row stored as it arrives (Recorder);
    BenchInterrupted on a stop signal."""
    start = time.perf_counter()
    # the classes say two networks compute the same under constant weights; the proxies' random weights
    # and their reads of every layer (dead edges too) tell them apart: each architecture runs itself
    plan = computation_classes(job.space, todo, job.scoring) if not job.proxies else ClassPlan(todo, {}, {})
    job.finite_checks = frozenset(plan.if_finite)
    summary.workers = min(summary.workers, max(len(plan.to_score), 1))
    with progress_bar(len(todo), f"bench {summary.space}", "arch", run.progress) as bar:
        recorder = Recorder(job, plan, store, key, summary, bar)
        try:
            summary.workers = run_job(job, [arch for arch, _ in plan.to_score], run, recorder.record) or summary.workers
            if recorder.unproven:  # rare: a check failed (or its architecture did); each runs as its own class
                run_job(job, [arch for arch, _ in recorder.unproven], run, recorder.record)
        except KeyboardInterrupt as stop:
            summary.wall = time.perf_counter() - start
            raise BenchInterrupted(summary, getattr(stop, "signum", signal.SIGINT)) from None
        finally:
            summary.wall = time.perf_counter() - start


class Recorder:
    """The driver's side of a run: each row stored and committed as it
    arrives, with the rows of the architectures that take its result
    (`plan`), and counted in the summary and on the progress bar."""

    def __init__(self, job: BenchJob, plan: ClassPlan, store: ResultStore, key: dict, summary: BenchSummary, bar):
        self.job = job
        self.plan = plan
        self.store = store
        self.key = key
        self.summary = summary
        self.bar = bar
        self.unproven: list = []  # if_finite architectures whose check failed: run them after the others

    def record(self, row: dict) -> None:
        """A scored architecture's row, and those of the architectures that compute the same."""
        self.store_row(row)
        for arch, text in self.plan.same.pop(row["arch"], ()):
            self.store_row(follower_row(self.job, row, arch, text))
        conditional = self.plan.if_finite.pop(row["arch"], ())
        if row.get("finite"):
            for arch, text in conditional:
                self.record(follower_row(self.job, row, arch, text))  # with the rows of its own exact class
        else:
            self.unproven.extend(conditional)

    def store_row(self, row: dict) -> None:
        summary, key = self.summary, self.key
        created = now()
        epsinas_key = {k: v for k, v in key.items() if k != "proxy_settings"}
        self.store.add({**row, **epsinas_key, "data_description": summary.data_description, "created": created})
        for name, value in (row.get("proxies") or {}).items():
            self.store.add_proxy({**value, "space": key["space"], "arch": row["arch"], "data": key["data"],
                                  "settings": key["proxy_settings"][name], "proxy": name, "created": created})
            summary.proxy_seconds[name] = summary.proxy_seconds.get(name, 0.0) + (value.get("seconds") or 0.0)
            if value.get("error"):
                summary.proxy_errors[name] = summary.proxy_errors.get(name, 0) + 1
            elif value.get("value") is None or math.isnan(value["value"]):
                summary.proxy_nan[name] = summary.proxy_nan.get(name, 0) + 1
        self.store.commit()
        if row["error"] is not None:
            summary.errors += 1
        else:
            summary.scored += 1
            summary.nan += math.isnan(row["score"])
            summary.reused += bool(row.get("reused"))
        summary.arch_seconds += row["seconds"]
        self.bar.update(1)
        self.bar.set_postfix(nan=summary.nan, errors=summary.errors, refresh=False)
