"""bench: score many architectures of a search space into the results store.

The batch is prepared once, in the driver, and shipped to the worker
processes; each worker scores one architecture at a time with ONNX Runtime on
one thread (two 1-thread processes beat one 2-thread process), and the driver,
the only writer, commits each row as it arrives. A rerun skips what the store
already holds, so a killed or interrupted run resumes where it stopped.

Everything done per architecture is in `score_architecture`: export, rewrite,
two runs, the metric; or, for a space that runs its networks piece by piece
(Space.pieces_for: NAS-Bench-201), the two runs through pieces each worker
made once, with the same numbers bit for bit. Architectures that are the same network (an exporter's
`computation_class`; NAS-Bench-201) are sent to the workers once, and the
driver stores the others' rows from that result; so are those that are the
same network once every cell input is finite (`computation_class_if_finite`),
whose shared run checks that it was (ClassPlan). Options that change the
score travel in two dicts that are part of the store key: `export` (keyword
arguments of the space's `to_onnx`, e.g. resolution) and `settings` (keyword
arguments of `scorer.prepare_model`, e.g. bn_gamma; a new prepare_model
option passes through unchanged). Exporter options that change only how the
graph is built travel apart (`build_options`).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import signal
import sys
import time
from pathlib import Path

import numpy as np

from epsinas_onnx.core.errors import UserError
from epsinas_onnx.experiments.executors import check_executor, open_executor
from epsinas_onnx.core.rewriting.computation_key import computation_key
from epsinas_onnx.core.scoring.modes import DEFAULT_MODE, check_mode, score_in_mode
from epsinas_onnx.core.scoring.scorer import (
    check_weights, batch_for, open_session, prepare_model, rewrite_model,
)
from epsinas_onnx.core.limits import BENCH_TIMEOUT, check_workers
from epsinas_onnx.core.options import BatchOptions, ExecutionOptions, ScoringSettings
from epsinas_onnx.core.textfile import file_status, read_text
from epsinas_onnx.core.stop_signals import stoppable
from epsinas_onnx.experiments.store import ResultStore, fingerprint, now, settings_key, weights_key

DEFAULT_STORE = "epsinas_results.sqlite"
# a bench runs many architectures side by side: one thread per worker (two 1-thread
# processes beat one 2-thread one), and a run that hangs becomes an error row
BENCH_EXECUTION = ExecutionOptions(threads=1, timeout=BENCH_TIMEOUT)


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
            + self.proxies_line()
        )

    def proxies_line(self) -> str:
        """--proxies: each proxy's seconds per architecture in a worker, beside epsinas's."""
        if not self.proxy_seconds or not self.finished:
            return ""
        parts = [f"epsinas {self.arch_seconds / self.finished:.3g}"]
        for name, seconds in self.proxy_seconds.items():
            notes = [f"{n} {what}" for n, what in ((self.proxy_nan.get(name, 0), "NaN"),
                                                   (self.proxy_errors.get(name, 0), "errors")) if n]
            parts.append(f"{name} {seconds / self.finished:.3g}" + (f" ({', '.join(notes)})" if notes else ""))
        return "\nseconds per architecture in a worker: " + ", ".join(parts)

    def interrupted_message(self) -> str:
        total = self.skipped + self.todo
        return f"interrupted: {self.skipped + self.finished} of {total} done; rerun the same command to resume"


# ---------------------------------------------------------------- one architecture

BENCH_GRAPH_OPTIMIZATION = "none"  # measured in benchmarks/speed_nb201.py


def score_architecture(space_module, arch, batch: np.ndarray, weights, *, export: dict, settings: dict,
                       device: str = "cpu", threads: int | None = 1, param_kwargs: dict | None = None,
                       computed: dict | None = None, finite_check: bool = False, build: dict | None = None,
                       timeout: float | None = None, mode: str = DEFAULT_MODE, pieces=None) -> dict:
    """Score one architecture: export -> rewrite -> session -> both weights -> metric
    (with `pieces`: both weights through them -> metric).

    Returns a row: arch (format_arch), score (NaN is a result, with nan_reason),
    error (None, or why the architecture could not be scored at all), params,
    seconds, device, reused (not stored). Never raises for a per-architecture failure.

    computed: results by computation_key for this batch, weights and device
    (filled here): an architecture whose rewritten graph computes exactly what
    an earlier one's did gets that result without a session or a run.

    finite_check: export with the space's finite check (see
    `computation_classes`) and say in the row's "finite" whether it passed at
    the weights run (otherwise "finite" is None). build: more keyword
    arguments of the exporter that change how the graph is built but not
    what it computes under `settings` (`build_options`); not part of the key.
    timeout: seconds each ONNX Runtime run may take; past it the row is an
    error saying so.
    mode: the scoring mode (modes.py), part of the key where it is not the reference.
    pieces: the space's piecewise runner for these options (Space.pieces_for),
    which computes what export -> rewrite -> session would, bit for bit, with
    sessions made once per worker; None: the generic path."""
    start = time.perf_counter()
    arch_text = space_module.format_arch(arch)
    value, reason, error, used_device, reused, finite = math.nan, None, None, device, False, None
    try:
        if pieces is not None:
            value, reason, finite = _score_runs(
                space_module, lambda w: pieces.output(arch, w, finite_check=finite_check, timeout=timeout),
                weights, mode, finite_check)
            used_device = "cpu"
        else:
            value, reason, used_device, reused, finite = _score_generic(
                space_module, arch, batch, weights, export=export, settings=settings, device=device, threads=threads,
                computed=computed, finite_check=finite_check, build=build, timeout=timeout, mode=mode)
    except Exception as exc:  # an architecture that fails is a row with an error, not a NaN
        error = _error_text(exc)
    return {
        "arch": arch_text, "score": float(value), "nan_reason": reason, "error": error,
        "params": _num_params(space_module, arch, param_kwargs), "seconds": time.perf_counter() - start,
        "device": used_device, "reused": reused, "finite": finite,
    }


def _score_generic(space_module, arch, batch, weights, *, export, settings, device, threads, computed, finite_check,
                   build, timeout, mode):
    """score_architecture's export -> rewrite -> session -> runs, with its
    keyword arguments: (score, nan_reason, device, reused, finite)."""
    value, reason, used_device, reused, finite = math.nan, None, device, False, None
    extra = {"finite_check": True} if finite_check else {}
    # the exporter's onnx-ir model itself (no protobuf round trip), rewritten in place
    staged = rewrite_model(space_module.to_ir(arch, **export, **(build or {}), **extra), in_place=True, **settings)
    key = computation_key(staged.rewritten.model, staged.output) if computed is not None and not extra else None
    if key is not None and key in computed:
        value, reason, used_device = computed[key]
        reused = True
    else:
        # many small sessions: ONNX Runtime's graph optimisation costs more than it saves
        prepared = open_session(staged, device=device, threads=threads, graph_optimization=BENCH_GRAPH_OPTIMIZATION,
                                timeout=timeout)
        used_device = prepared.device
        names = [prepared.output] + ([space_module.finite_check_output] if finite_check else [])

        def outputs(w):
            scored, *check = prepared.run_outputs(batch, w, names)
            return scored, (check[0] if check else None)

        # a run skipped by score_runs is skipped for every member of the class too
        value, reason, finite = _score_runs(space_module, outputs, weights, mode, finite_check)
        if key is not None:
            computed[key] = (value, reason, used_device)
    return value, reason, used_device, reused, finite


def _score_runs(space_module, outputs, weights, mode: str, finite_check: bool):
    """The score in `mode` from outputs(w) -> (scored output, the space's
    finite check or None): (score, nan_reason, finite: whether every check
    run passed, None without finite_check)."""
    checks = []

    def run(w):
        scored, check = outputs(w)
        if check is not None:
            checks.append(space_module.finite_check_passed(check))
        return scored

    value, reason, _, _ = score_in_mode(mode, weights, run)
    return value, reason, (all(checks) if finite_check else None)


def _num_params(space_module, arch, param_kwargs: dict | None) -> int | None:
    try:
        return int(space_module.num_params(arch, **(param_kwargs or {})))
    except Exception:
        return None


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


def computation_classes(space_module, todo: list, settings: dict) -> ClassPlan:
    """Split `todo` ([(arch, text), ...]) into the architectures to score and
    those that take an earlier one's result without being exported.

    Only for a space whose exporter names its classes (NAS-Bench-201), and only
    under constant weights: the class says two networks are the same up to
    their weights' values, which the random-weight ablations tell apart. The
    finite-input classes hold only with zero biases too (a dropped term is
    0 only if BN's beta is)."""
    exact = class_function(space_module, settings)
    if exact is None:
        return ClassPlan(todo, {}, {})
    exact_reps, same = _group(todo, exact)
    coarse = finite_class_function(space_module, settings)
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


def class_function(space_module, settings: dict):
    """The space's computation_class where it holds for these settings, else None."""
    if settings.get("weight_init") not in (None, "constant"):
        return None
    return space_module.computation_class


def build_options(space_module, settings: dict) -> dict:
    """Exporter options for bench that build a smaller graph computing the
    same under these settings: tied parameters (one initialiser per kind and
    shape, GraphBuilder.tied_parameter) under constant weights, where every
    layer's parameters hold the same values anyway; the rewrite then has a few
    initialisers to handle instead of hundreds (NAS-Bench-201: 33 -> 25 ms of
    Python per architecture; NAS-Bench-101: no longer draws millions of
    placeholder numbers per cell; the same rewritten graph: tests/test_computation_key.py)."""
    if settings.get("weight_init") not in (None, "constant"):
        return {}
    return {"tied": True} if space_module.ir_takes_tied else {}


def finite_class_function(space_module, settings: dict):
    """The space's computation_class_if_finite where it holds for these settings, else None."""
    if class_function(space_module, settings) is None or settings.get("bias") == "w":
        return None
    return space_module.computation_class_if_finite


def _follower_row(job: "_Job", row: dict, arch, text: str) -> dict:
    """`row`'s result for another architecture of the same computation class
    (an error too: rerun, the class is tried again)."""
    start = time.perf_counter()
    params = _num_params(job.space_module, arch, job.param_kwargs)
    error = row["error"] and f"{row['error']} (while scoring {row['arch']}, which computes the same)"
    return {**row, "arch": text, "params": params, "error": error, "seconds": time.perf_counter() - start,
            "reused": True}


def _proxy_keys(proxies, proxy_options, export: dict, input_name: str | None) -> dict[str, str]:
    """The store key's settings of each requested proxy: the export options and what its value depends on."""
    if not proxies:
        return {}
    from epsinas_onnx.proxies import registry
    from epsinas_onnx.proxies.proxy import ProxyOptions

    options = proxy_options or ProxyOptions()
    return {name: settings_key({"export": dict(export), "input_name": input_name, "proxy": name,
                                "options": registry.get(name).settings(options)})
            for name in proxies}


def proxy_values(job: "_Job", arch) -> dict:
    """Every requested proxy of `arch` (epsinas_onnx.proxies.engine), as the
    proxies table stores them; an exception is an error for each, retried by the next run."""
    from epsinas_onnx.proxies import engine
    from epsinas_onnx.proxies.proxy import Context, ProxyOptions

    context = Context(job.batch, job.input_name, job.proxy_options or ProxyOptions(), job.examples)
    # the exporter's untied graph, one fresh copy per initialisation; full width, ONNX Runtime's full optimisation
    execution = ExecutionOptions(device=job.device, threads=job.threads, timeout=job.timeout)
    try:
        results = engine.compute_on(lambda: job.space_module.to_ir(arch, **job.export), job.proxies, context, execution)
    except Exception as exc:  # an architecture that fails is an error row, not a NaN
        return {name: _proxy_error(_error_text(exc)) for name in job.proxies}
    return {name: {"value": r.value, "nan_reason": r.nan_reason, "seconds": r.seconds, "error": None}
            for name, r in results.items()}


def _proxy_error(error: str) -> dict:
    return {"value": math.nan, "nan_reason": None, "seconds": 0.0, "error": error}


def _error_text(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [""])[0][:500]
    return text if isinstance(exc, UserError) else f"{type(exc).__name__}: {text}"


# ---------------------------------------------------------------- the architecture list


PACKAGED_PREFIX = "packaged:"


def _packaged_archs(space_module, name: str) -> list:
    from epsinas_onnx.core.tables import packaged
    from epsinas_onnx.core.tables import pick_column

    table = packaged(name)
    column = pick_column(table.columns, (*space_module.arch_columns, "arch_str"), "architecture", table, "--archs")
    archs = []
    for line, row in enumerate(table.rows, start=2):
        try:
            archs.append(space_module.parse(" ".join(row[c] for c in column.split(","))))
        except UserError as exc:
            raise UserError(f"{table}, line {line}: {exc} (is it a table of {space_module.name}?)") from None
    return archs


def load_arch_file(space_module, path) -> list:
    """Architectures from a file: one per line in the space's own encoding
    (blank lines and lines starting with '#' skipped); for nb101 also the csv
    files of the benchmark, for nlp wt2_summary.csv (the space's read_csv_archs);
    "packaged:NAME" is the architecture column
    of a table shipped with the package (benchmark_tables), in its order."""
    if str(path).startswith(PACKAGED_PREFIX):
        return _packaged_archs(space_module, str(path)[len(PACKAGED_PREFIX):])
    path = Path(path)
    if file_status(path, "architecture file") is None:
        raise UserError(f"architecture file not found: {path} (check the path)")
    if path.suffix == ".csv" and space_module.read_csv_archs is not None:
        return space_module.read_csv_archs(path)
    archs = []
    for number, line in enumerate(read_text(path, "architecture file").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            archs.append(space_module.parse(line))
        except UserError as exc:
            raise UserError(f"{path}, line {number}: {exc}") from None
    if not archs:
        raise UserError(f"{path} holds no architectures")
    return archs


def _unique(space_module, archs) -> tuple[list, list[str]]:
    """Parse strings, drop repeats (same format_arch), keep the first order."""
    seen: dict[str, object] = {}
    for arch in archs:
        if isinstance(arch, str):
            arch = space_module.parse(arch)
        else:
            space_module.validate(arch)
        seen.setdefault(space_module.format_arch(arch), arch)
    return list(seen.values()), list(seen)


def _defaults(function, skip: tuple) -> dict:  # prepare_model's; a space declares its own (Space.export_defaults)
    """The keyword defaults of `function` that are not None."""
    return {
        name: p.default for name, p in inspect.signature(function).parameters.items()
        if name not in skip and p.default is not inspect.Parameter.empty and p.default is not None
    }


def _check_kwargs(function, given: dict, what: str) -> None:
    accepted = inspect.signature(function).parameters
    for key in given:
        if key not in accepted:
            raise UserError(f"{what} option {key!r} does not apply here (accepted: {', '.join(accepted)})")


# ---------------------------------------------------------------- the driver


@stoppable
def run_bench(
    space: str,
    archs,
    weights=None,
    *,
    batch_options: BatchOptions = BatchOptions(),
    scoring: ScoringSettings = ScoringSettings(),
    execution: ExecutionOptions = BENCH_EXECUTION,
    export: dict | None = None,
    store_path=DEFAULT_STORE,
    workers: int | None = None,
    limit: int | None = None,
    progress: bool = True,
    executor: str = "local",
    address: str | None = None,
    chunk: int | None = None,
    proxies: tuple[str, ...] = (),
    proxy_options=None,
) -> BenchSummary:
    """Score `archs` (architectures or their strings) of `space` into the store.

    weights: default the space's reference pair. export: keyword arguments of
    the space's to_onnx; scoring: what is computed (both are part of the
    store key, with every default made explicit: ScoringSettings.key);
    batch_options: the batch fed; execution: device, threads per worker, timeout. Architectures already stored under the same key are skipped;
    `limit` caps how many are scored in this run. Raises BenchInterrupted on
    Ctrl-C, SIGTERM or SIGHUP (finished rows are stored), UserError on bad input.

    executor: "local" (`workers` processes, default 1) or "ray" (a Ray cluster:
    the one at `address`, else RAY_ADDRESS, else a local instance; `workers`
    caps the tasks at a time, default the cluster's CPUs; `chunk` architectures
    per task); see executors.py. The driver alone writes the store either way.
    execution.timeout: seconds each ONNX Runtime run may take (None: no limit); an
    architecture past it is an error row, retried by the next run.
    scoring.mode: the scoring mode (modes.py); a store key names it only where it is not
    the reference, so stores written before modes existed keep their keys.
    proxies: names of other proxies (epsinas_onnx/proxies) computed for every
    architecture beside epsinas and stored in the store's proxies table, each
    under its own key (export options, its settings from `proxy_options`, a
    proxies.ProxyOptions); an architecture is done when epsinas and every one
    of them are stored."""
    from epsinas_onnx.spaces import get_space

    module = get_space(space)
    weights = check_weights(weights if weights is not None else module.reference_weights)
    mode, device, threads, timeout = scoring.mode, execution.device, execution.threads, execution.timeout
    check_mode(mode, weights)
    export = {k: v for k, v in (export or {}).items() if v is not None}
    module.check_export_options(export)
    # explicit defaults: the key is the same whether an option was given at its default or left out
    export = {**module.export_defaults, **export}
    store_settings = scoring.key(export, batch_options.input_name)
    settings = store_settings["prepare"]  # every default explicit, neutral values left out: as the key says
    check_executor(executor, address, chunk)
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be at least 1, not {workers}")
    if executor == "local":  # a Ray cluster's CPUs are not this machine's
        check_workers(workers)
    if workers is None and executor == "local":
        workers = 1
    if limit is not None and limit < 0:
        raise UserError(f"--limit must be at least 0, not {limit}")
    listed = list(archs)
    unique, texts = _unique(module, listed)
    if not unique:
        raise UserError("no architectures to score")
    param_kwargs = module.num_params_kwargs(export)

    # an existing store is checked before any work (a bad one fails at once);
    # a new one is created only once the input has proved good
    store = ResultStore(store_path) if file_status(store_path, "the results store") is not None else None
    try:
        # the batch, once: shaped by the first architecture's model. On Ray the
        # driver need not have the workers' GPU: --device cuda probes on the CPU
        probe_device = "cpu" if executor == "ray" and device == "cuda" else device
        probe = prepare_model(module.to_onnx(unique[0], **export), device=probe_device, threads=threads, **settings)
        batch = batch_for(probe, batch_options)
        key = {
            "space": space, "weights": weights_key(weights), "data": fingerprint(batch.array),
            "settings": settings_key(store_settings),
        }
        if store is None:
            store = ResultStore(store_path)
        done = store.done(key["space"], key["weights"], key["data"], key["settings"])
        proxy_keys = _proxy_keys(proxies, proxy_options, export, batch_options.input_name)
        if proxy_keys:
            store.ensure_proxies()
            for name, proxy_key in proxy_keys.items():
                done = done & store.proxies_done(key["space"], key["data"], proxy_key, name)
        todo = [(arch, text) for arch, text in zip(unique, texts) if text not in done]
        if limit is not None:
            todo = todo[:limit]
        summary = BenchSummary(
            space=space, store=str(store_path), requested=len(unique), duplicates=len(listed) - len(unique),
            skipped=len(done.intersection(texts)), todo=len(todo), workers=min(workers or 1, max(len(todo), 1)), data=key["data"],
            data_description=batch.description, warnings=list(probe.rewritten.warnings),
        )
        job_device = "cuda" if probe_device != device else probe.device
        # where the driver groups by computation class, the classes are what the
        # computation keys would find (NAS-Bench-201: 7,871 of each): no key needed
        computed = None if class_function(module, settings) else {}
        job = _Job(module, batch.array, weights, export, settings, job_device, threads, param_kwargs, computed,
                   build=build_options(module, settings), timeout=timeout, mode=mode, data=key["data"],
                   proxies=tuple(proxy_keys), proxy_options=proxy_options, input_name=probe.input_spec.name,
                   examples=batch_options.batch_size)
        summary.proxy_seconds = {name: 0.0 for name in proxy_keys}
        key["proxy_settings"] = proxy_keys
        _score_all(job, todo, store, key, summary, progress, executor, dict(workers=workers, address=address, chunk=chunk))
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


@dataclasses.dataclass
class _Job:
    """What every worker needs, sent once per worker: an executors.Job whose
    items are architectures and whose results are rows."""

    label = "bench"  # executors.Job: for the executor's messages
    noun = "architecture"

    space_module: object
    batch: np.ndarray
    weights: tuple
    export: dict
    settings: dict
    device: str
    threads: int | None
    param_kwargs: dict
    # score_architecture's results by computation key, None for no keys; each worker fills its own
    computed: dict | None = dataclasses.field(default_factory=dict, repr=False)
    # texts of the architectures to run with the finite check (ClassPlan.if_finite)
    finite_checks: frozenset = frozenset()
    build: dict = dataclasses.field(default_factory=dict)  # build_options
    timeout: float | None = None  # seconds per ONNX Runtime run
    mode: str = DEFAULT_MODE
    data: str = ""  # the batch's fingerprint (store.fingerprint), as the store key has it; "": not known yet
    proxies: tuple = ()  # other proxies computed beside epsinas (run_bench's `proxies`)
    proxy_options: object = None  # proxies.ProxyOptions
    input_name: str = "input"  # the model input the batch feeds (for the proxies)
    examples: int | None = None  # examples in the batch (proxies: flops per example)

    def run(self, arch) -> dict:
        finite_check = bool(self.finite_checks) and self.space_module.format_arch(arch) in self.finite_checks
        row = score_architecture(
            self.space_module, arch, self.batch, self.weights, export=self.export, settings=self.settings,
            device=self.device, threads=self.threads, param_kwargs=self.param_kwargs, computed=self.computed,
            finite_check=finite_check, build=self.build, timeout=self.timeout, mode=self.mode,
            pieces=self.pieces(),
        )
        if self.proxies:
            row["proxies"] = proxy_values(self, arch)
        return row

    def pieces(self):
        """The space's network run piece by piece for this job (Space.pieces_for),
        made on first use in each worker and kept for every architecture after;
        None where the space has none or they do not apply (then each
        architecture takes the generic path)."""
        if "_pieces" not in self.__dict__:
            self._pieces = _process_pieces(self)
        return self._pieces

    def died(self, arch, error: str) -> dict:
        """The error row of an architecture whose worker process died scoring
        it (a local worker, a Ray task): no result; the next run retries it."""
        row = {
            "arch": self.space_module.format_arch(arch), "score": math.nan, "nan_reason": None,
            "params": None, "seconds": 0.0, "device": self.device, "error": error,
        }
        if getattr(self, "proxies", ()):  # a job without proxies (and stand-ins that borrow this) add none
            row["proxies"] = {name: _proxy_error(error) for name in self.proxies}
        return row

    def __getstate__(self):  # a module does not pickle: send its name; each worker starts an empty table
        state = dict(self.__dict__)
        state["space_module"] = self.space_module.name
        state["computed"] = None if self.computed is None else {}
        state.pop("_pieces", None)  # sessions do not pickle: each worker makes its own
        return state

    def __setstate__(self, state):
        from epsinas_onnx.spaces import get_space

        state["space_module"] = get_space(state["space_module"])
        self.__dict__.update(state)


# the pieces this process made last and what they were made for: a search scores a
# few architectures per run_bench call, in one process, and should not make them each time
_PIECES_MADE: dict[tuple, object] = {}


def _process_pieces(job: _Job):
    if job.space_module.pieces_for is None:
        return None
    # a Ray task unpickles the job anew: the fingerprint run_bench computed saves hashing the batch again
    key = (job.space_module.name, repr(sorted(job.export.items())), repr(sorted(job.settings.items())),
           job.data or fingerprint(job.batch), job.device, job.threads)
    if key not in _PIECES_MADE:
        _PIECES_MADE.clear()  # one set at a time: their sessions hold memory
        try:
            _PIECES_MADE[key] = job.space_module.pieces_for(
                job.export, job.settings, job.batch, device=job.device, threads=job.threads,
                graph_optimization=BENCH_GRAPH_OPTIMIZATION)
        except Exception:  # the generic path then reports, per architecture, what fails
            _PIECES_MADE[key] = None
    return _PIECES_MADE[key]


def _score_all(job: _Job, todo: list, store: ResultStore, key: dict, summary: BenchSummary, progress: bool,
               executor: str = "local", options: dict | None = None) -> None:
    from tqdm import tqdm

    start = time.perf_counter()
    bar = tqdm(total=len(todo), unit="arch", file=sys.stderr, disable=not progress or not todo,
               desc=f"bench {summary.space}", dynamic_ncols=True, smoothing=0.1)

    # the classes say two networks compute the same under constant weights; the proxies' random weights
    # and their reads of every layer (dead edges too) tell them apart: each architecture runs itself
    plan = computation_classes(job.space_module, todo, job.settings) if not job.proxies else ClassPlan(todo, {}, {})
    job.finite_checks = frozenset(plan.if_finite)
    summary.workers = min(summary.workers, max(len(plan.to_score), 1))
    unproven = []  # if_finite architectures whose check failed: run them after the others

    def record(row: dict) -> None:
        store_row(row)
        for arch, text in plan.same.pop(row["arch"], ()):
            store_row(_follower_row(job, row, arch, text))
        conditional = plan.if_finite.pop(row["arch"], ())
        if row.get("finite"):
            for arch, text in conditional:
                record(_follower_row(job, row, arch, text))
        else:
            unproven.extend(conditional)

    def run(to_score: list, first: bool = True) -> None:
        if executor == "local" and summary.workers <= 1:
            for arch, _ in to_score:
                record(job.run(arch))
        elif to_score:
            pool_options = dict(options or {})
            if executor == "local":
                pool_options["workers"] = min(summary.workers, len(to_score))
            with open_executor(executor, job, **pool_options) as pool:
                if first:
                    summary.workers = pool.size
                for row in pool.imap([arch for arch, _ in to_score]):
                    record(row)

    epsinas_key = {k: v for k, v in key.items() if k != "proxy_settings"}

    def store_row(row: dict) -> None:
        created = now()
        store.add({**row, **epsinas_key, "data_description": summary.data_description, "created": created})
        for name, value in (row.get("proxies") or {}).items():
            store.add_proxy({**value, "space": key["space"], "arch": row["arch"], "data": key["data"],
                             "settings": key["proxy_settings"][name], "proxy": name, "created": created})
            summary.proxy_seconds[name] = summary.proxy_seconds.get(name, 0.0) + (value.get("seconds") or 0.0)
            if value.get("error"):
                summary.proxy_errors[name] = summary.proxy_errors.get(name, 0) + 1
            elif value.get("value") is None or math.isnan(value["value"]):
                summary.proxy_nan[name] = summary.proxy_nan.get(name, 0) + 1
        store.commit()
        if row["error"] is not None:
            summary.errors += 1
        else:
            summary.scored += 1
            summary.nan += math.isnan(row["score"])
            summary.reused += bool(row.get("reused"))
        summary.arch_seconds += row["seconds"]
        bar.update(1)
        bar.set_postfix(nan=summary.nan, errors=summary.errors, refresh=False)

    try:
        run(plan.to_score)
        if unproven:  # rare: a check failed (or its architecture did); each runs as its own class
            run(unproven, first=False)
    except KeyboardInterrupt as stop:
        summary.wall = time.perf_counter() - start
        bar.close()
        raise BenchInterrupted(summary, getattr(stop, "signum", signal.SIGINT)) from None
    finally:
        bar.close()
        summary.wall = time.perf_counter() - start

