"""compute(): the requested proxies of one model, with ONNX Runtime.

Per model: the proxies that read the graph alone (params, flops) read one
copy of it. The proxies that run the model share ONE prepared copy:
normalised, shapes inferred, BatchNormalization turned into batch statistics
(what a PyTorch network in training mode computes: batch_norm.py), every
member's probe (its graph outputs) added, serialised once. Each proxy that
runs gets its own ONNX Runtime session, made from that serialised copy with
its initialisation's weights (init.py: NASWOT and MeCo PyTorch's default, Zen
Gaussian; drawn once per initialisation) written in and cut down to the nodes
its own probes read: ONNX Runtime runs every node of a session's graph, so
MeCo's per-layer copies in NASWOT's session made its 128-image run of a
NAS-Bench-201 architecture take 0.28 instead of 0.21 CPU seconds, more than
MeCo's own session costs (benchmarks/proxies_against.py).
The graph is built, inferred and serialised once per model.

A proxy's seconds are its own probe, session, runs and arithmetic plus an
equal share of the shared preparation.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable

import numpy as np
import onnx
import onnx_ir as ir
from onnx import numpy_helper
from onnx_ir.passes import common as common_passes

from epsinas_onnx.core.options import BatchOptions, ExecutionOptions
from epsinas_onnx.core.rewriting.passes.pipeline import normalising_passes
from epsinas_onnx.core.rewriting.roles import Role, classify_model
from epsinas_onnx.core.scoring import runtime
from epsinas_onnx.core.scoring.inputs import model_input, prepare_batch
from epsinas_onnx.core.scoring.model_io import load_model
from epsinas_onnx.core.scoring.scorer import session_proto
from epsinas_onnx.proxies import memory, registry
from epsinas_onnx.proxies.batch_norm import TrainingBatchNormPass
from epsinas_onnx.proxies.init import RandomInitPass, draws
from epsinas_onnx.proxies.proxy import Context, NotApplicable, Outcome, ProxyOptions


@dataclasses.dataclass(frozen=True)
class ProxyResult:
    value: float  # NaN is a result, with nan_reason
    nan_reason: str | None
    seconds: float
    error: str | None = None  # the proxy could not be computed (its run would not fit in memory): value NaN

    def to_dict(self) -> dict:
        return {"value": None if math.isnan(self.value) else self.value, "nan_reason": self.nan_reason,
                "seconds": self.seconds, "error": self.error}


def compute(model, names, batch: BatchOptions = BatchOptions(), options: ProxyOptions = ProxyOptions(),
            execution: ExecutionOptions = ExecutionOptions()) -> dict[str, ProxyResult]:
    """The proxies `names` of `model` (a path, onnx.ModelProto or onnx_ir.Model),
    on the batch `batch` describes (as epsinas_onnx.score prepares it).
    Returns {name: ProxyResult} in the order asked, a proxy whose run would
    not fit in memory with its error (memory.py); UserError on bad input."""
    names = tuple(names)
    for name in names:
        registry.get(name)  # an unknown name fails before any work
    base = load_model(model)
    spec = model_input(base, batch.input_name, exclude=set())
    prepared = prepare_batch(spec, batch, vocab_size=embedding_rows(base))
    return compute_on(lambda: base, names, Context(prepared.array, spec.name, options, batch.batch_size), execution)


def errors_line(results: dict[str, ProxyResult]) -> str | None:
    """The errors of `results` (proxies that could not be computed: their runs
    would not fit in memory) as one line, or None if there are none."""
    errors = [result.error for result in results.values() if result.error]
    return "; ".join(errors) if errors else None


def embedding_rows(model: ir.Model) -> int | None:
    for entry in classify_model(model):
        if entry.role == Role.EMBEDDING and len(entry.shape) == 2:
            return entry.shape[0]
    return None


def compute_on(fresh: Callable[[], ir.Model], names, context: Context,
               execution: ExecutionOptions = ExecutionOptions()) -> dict[str, ProxyResult]:
    """compute() for a batch already prepared: `fresh()` returns a copy of the
    model (an exporter's to_ir, or a loader), which this changes."""
    proxies = [registry.get(name) for name in names]
    results: dict[str, ProxyResult] = {}
    if not proxies:
        return {}
    start = time.perf_counter()
    model = _normalised(fresh())  # one copy for every proxy: the static ones only read it
    built = (time.perf_counter() - start) / len(proxies)
    for proxy in [p for p in proxies if p.init is None]:
        begin = time.perf_counter()
        outcome = _guarded(lambda: proxy.measure(model, context))
        results[proxy.name] = ProxyResult(outcome.value, outcome.nan_reason, time.perf_counter() - begin)
    running = [p for p in proxies if p.init is not None]
    if running:
        results.update(_run_models(model, running, context, execution))
    results = {name: dataclasses.replace(result, seconds=result.seconds + built) for name, result in results.items()}
    return {name: results[name] for name in names}


def _normalised(model: ir.Model) -> ir.Model:
    ir.passes.Sequential(*normalising_passes())(model)
    return model


def initialised(model, scheme: str, seed: int = ProxyOptions().seed) -> ir.Model:
    """A copy of `model` with the weights a proxy of `scheme` runs it with
    (init.py): what a proxy computes, in another framework, starts from these."""
    return RandomInitPass(scheme, seed)(_normalised(load_model(model))).model


def _guarded(work: Callable[[], Outcome]) -> Outcome:
    try:
        return work()
    except NotApplicable as why:
        return Outcome.nan(str(why))


def _session(payload: bytes, execution: ExecutionOptions):
    """An ONNX Runtime session for one proxy. On the CPU its memory comes
    from one arena shared by every such session of the process, the first
    included: a new architecture's session then reuses the pages the previous
    one touched instead of faulting in its own (a NAS-Bench-201 run of 128
    images: 20 % less CPU time, benchmarks/proxies_nb201.py)."""
    return runtime.make_session(payload, runtime.providers_for(execution.device), execution.threads,
                                execution.graph_optimization, shared_arena=True, what="the proxies' model")


def _run_models(model: ir.Model, members: list, context: Context, execution: ExecutionOptions) -> dict:
    """The proxies that run the model (`members`), on one preparation of `model` (module docstring)."""
    timings, results, feeds, errors = {}, {}, {}, {}
    for proxy in members:  # the inputs first: a proxy that cannot take this batch costs no model
        begin = time.perf_counter()
        try:
            feeds[proxy.name] = proxy.feeds(context)
        except NotApplicable as why:
            results[proxy.name] = Outcome.nan(str(why))
        timings[proxy.name] = time.perf_counter() - begin
    runnable = [p for p in members if p.name in feeds]
    if not runnable:
        return {name: ProxyResult(o.value, o.nan_reason, timings[name]) for name, o in results.items()}
    start = time.perf_counter()
    weights = {scheme: draws(model, scheme, context.options.seed) for scheme in dict.fromkeys(p.init for p in runnable)}
    common_passes.ShapeInferencePass()(model)  # ranks and types, for the batch statistics and the probes
    TrainingBatchNormPass()(model)
    probes, probing = {}, 0.0
    for proxy in runnable:
        begin = time.perf_counter()
        try:
            probes[proxy.name] = proxy.probe(model)
        except NotApplicable as why:
            results[proxy.name] = Outcome.nan(str(why))
        probing += time.perf_counter() - begin
        timings[proxy.name] += time.perf_counter() - begin
    prepared = _Prepared(session_proto(model)) if probes else None
    share = (time.perf_counter() - start - probing) / len(runnable)  # the copy, shapes, batch statistics
    guard = _MemoryGuard(model, prepared, context, execution)
    tensors = {scheme: {name: numpy_helper.from_array(array, name) for name, array in drawn.items()}
               for scheme, drawn in weights.items()}  # once per initialisation, for every session of it
    taken = 0  # what earlier runs of this model took from the process's shared arena, which keeps it
    for proxy in [p for p in runnable if p.name in probes]:  # one session each, cut to its own probes
        begin = time.perf_counter()
        # the memory guard (memory.py): a run that would not fit is an error, not a crash
        need, errors[proxy.name] = guard.check(proxy.name, probes[proxy.name], feeds[proxy.name], taken)
        if errors[proxy.name] is not None:
            results[proxy.name] = Outcome(float("nan"))
            timings[proxy.name] += time.perf_counter() - begin
            continue
        taken += need
        probe = probes[proxy.name]
        session = _session(prepared.payload(tensors[proxy.init], probe.outputs), execution)

        def work():
            fetched = [runtime.run_outputs(session, probe.outputs, {context.input_name: feed}, execution.timeout,
                                           shrink_arena=need > memory.SHRINK_AFTER_BYTES)
                       for feed in feeds[proxy.name]]
            return proxy.value(probe, fetched, context)

        results[proxy.name] = _guarded(work)
        timings[proxy.name] += time.perf_counter() - begin
    for proxy in runnable:
        timings[proxy.name] += share
    return {name: ProxyResult(outcome.value, outcome.nan_reason, timings[name], errors.get(name))
            for name, outcome in results.items()}


class _MemoryGuard:
    """The memory guard (memory.py) of one model's proxies: per proxy, the
    estimated bytes of its runs, and why they would not fit, or None.

    A quick bound first (its cut of the graph, at its largest batch, the sizes
    of memory.bounds: no shape inference); the estimate only where that bound
    may not fit or may reach memory.SHRINK_AFTER_BYTES (NAS-Bench-201's runs,
    bounded at 0.1-0.6 GiB, are never estimated). No guard off the CPU, where
    the memory is the device's and its runtime says when it runs out, nor
    where the system does not say how much memory is available."""

    def __init__(self, model: ir.Model, prepared: "_Prepared", context: Context, execution: ExecutionOptions):
        self.model, self.prepared, self.input_name = model, prepared, context.input_name
        on_cpu = runtime.device_name(runtime.providers_for(execution.device)) == "cpu"
        self.room = memory.room() if on_cpu else None
        fed = [value for value in model.graph.inputs if value.name == context.input_name]
        # functions are inlined in the prepared copy, and an example's shape may not be fixed: the estimate decides
        self.boundable = not model.functions and bool(fed) and fed[0].shape is not None \
            and all(isinstance(d, int) for d in fed[0].shape[1:])
        self.bounds: memory.Shapes | None = None

    def check(self, name: str, probe, feeds: list[np.ndarray], taken: int) -> tuple[int, str | None]:
        """(the estimated need of proxy `name`'s runs on `feeds`, the one-line
        error if they would not fit beside `taken`, else None)."""
        if self.room is None or not feeds:
            return 0, None
        biggest = max(feeds, key=lambda feed: feed.size)
        runs = sum(1 for feed in feeds if feed.shape == biggest.shape)
        if self.boundable:
            self.bounds = self.bounds or memory.bounds(self.model)
            bound = self.prepared.peak_bytes(probe.outputs, self.input_name, biggest.shape, runs, self.bounds)
            if bound <= min(self.room - taken, memory.SHRINK_AFTER_BYTES):
                return bound, None
        need = self.prepared.peak_bytes(probe.outputs, self.input_name, biggest.shape, runs)
        return need, memory.refusal(name, biggest, need, taken)


class _Prepared:
    """The serialised prepared model, and what each of its nodes writes and
    reads (read once: walking the protobuf messages again per session costs
    more than the walk itself)."""

    def __init__(self, proto: onnx.ModelProto):
        self.proto = proto
        self.edges = [(tuple(node.output), (*node.input, *_names_read_by_subgraphs(node)))
                      for node in proto.graph.node]
        self.shapes: dict[tuple, memory.Shapes] = {}  # by an example's shape, inferred when first asked
        self.cuts: dict[tuple, tuple[list[int], set[str]]] = {}  # by the outputs: the session and the guard ask
        self.shell = onnx.ModelProto()  # the model less its nodes, initializers and outputs, which payload chooses
        self.shell.CopyFrom(proto)
        del self.shell.graph.node[:], self.shell.graph.initializer[:], self.shell.graph.output[:]

    def cut(self, outputs: list[str]) -> tuple[list[int], set[str]]:
        """The indices, in order, of the nodes that the graph outputs `outputs`
        read (not the other probes' nodes and tensors, which ONNX Runtime would
        run too), and every name those nodes read."""
        key = tuple(outputs)
        if key not in self.cuts:
            self.cuts[key] = self._cut(outputs)
        return self.cuts[key]

    def _cut(self, outputs: list[str]) -> tuple[list[int], set[str]]:
        needed, keep = set(outputs), []
        for index in range(len(self.edges) - 1, -1, -1):  # a graph's nodes are in topological order
            written, read = self.edges[index]
            if any(name in needed for name in written):
                keep.append(index)
                needed.update(read)
        return keep[::-1], needed

    def peak_bytes(self, outputs: list[str], input_name: str, shape: tuple[int, ...], runs: int,
                   shapes: memory.Shapes | None = None) -> int:
        """The memory estimate (memory.py) of `runs` runs for `outputs` on a
        batch of `shape`, with `shapes` (memory.bounds: a quick bound) or the
        model's shapes inferred for that batch."""
        if shapes is None:
            key = (input_name, tuple(shape[1:]))
            if key not in self.shapes:
                self.shapes[key] = memory.Shapes(self.proto, input_name, tuple(shape[1:]))
            shapes = self.shapes[key]
        kept, _ = self.cut(outputs)
        return memory.peak_bytes([self.edges[i] for i in kept], [v.name for v in self.proto.graph.input], outputs,
                                 shapes, shape[0], runs)

    def payload(self, weights: dict[str, onnx.TensorProto], outputs: list[str]) -> bytes:
        """The model with `weights` (by initializer name) written into its
        initializers, cut down to what the graph outputs `outputs` read (cut),
        serialised."""
        keep, needed = self.cut(outputs)
        source = self.proto.graph
        proto = onnx.ModelProto()
        proto.CopyFrom(self.shell)
        graph = proto.graph
        graph.node.extend(source.node[i] for i in keep)
        graph.output.extend(value for value in source.output if value.name in set(outputs))
        graph.initializer.extend(weights.get(tensor.name, tensor) for tensor in source.initializer
                                 if tensor.name in needed)
        return proto.SerializeToString()


def _names_read_by_subgraphs(node: onnx.NodeProto) -> set[str]:
    """Every name the subgraphs of `node` (Scan, Loop, If bodies) read, outer ones among them."""
    names: set[str] = set()
    for attribute in node.attribute:
        for graph in [attribute.g, *attribute.graphs] if attribute.HasField("g") else attribute.graphs:
            for inner in graph.node:
                names.update(inner.input)
                names.update(_names_read_by_subgraphs(inner))
    return names
