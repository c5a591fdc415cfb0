"""Pieces of a rewritten network, each in an ONNX Runtime session of its own.

Under constant weights a space's networks are made of sub-networks that
compute the same wherever they occur (NAS-Bench-201's edge ops,
NAS-Bench-Macro's layers). A space rewrites a few template architectures with
the generic path, once per worker, and cuts each sub-network out of a
template's rewritten graph by the exporter's tensor names (`Cutter`); an
architecture is then its pieces called in order, each output handed on as an
ONNX Runtime value (runtime.WatchedRuns). Every node run is a node of the
generic rewrite, fed the same inputs, so the output is the generic path's bit
for bit; each space's tests compare them.

Where a space's pieces are many (NAS-Bench-101's cells, TransNAS-Bench-101's
edges and blocks), it lists an architecture as `Step`s keyed by what decides
their rewritten nodes, and `StepPieces` cuts a key's piece the first time an
architecture needs it, out of that architecture's generic rewrite.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import onnx
import onnx.utils

from epsinas_onnx.core.options import ScoringSettings
from epsinas_onnx.core.rewriting.passes import WEIGHT_INPUT


def declines(scoring: ScoringSettings, input_name: str | None, device: str, output: str) -> str | None:
    """Why pieces cut from a rewritten template would not compute what the
    generic path does for these settings (prepare_model's) on `device`, for
    a network whose input is "input" and whose output is `output`; None
    where they do."""
    if device != "cpu":
        return f"the pieces run on the CPU only, not {device} (each piece's output would be copied back)"
    if scoring.random_weights:
        return "random weights (--weight-init) differ from layer to layer: each architecture is rewritten itself"
    if scoring.output not in (None, output):
        return f"the pieces end in the network's output {output!r}, not {scoring.output!r}"
    if input_name not in (None, "input"):
        return f"the network's input is 'input', not {input_name!r}"
    return None


@dataclasses.dataclass(frozen=True)
class Piece:
    """One session, the names of its inputs in the order they are fed, its output."""

    session: object
    inputs: tuple[str, ...]
    output: str

    def __call__(self, runs, *values):
        """The output (a raw ONNX Runtime value) of one run inside `runs` (runtime.WatchedRuns)."""
        return runs.first_output(self.session, self.inputs, values, self.output)


def piece(model: onnx.ModelProto, threads: int | None, graph_optimization: str) -> Piece:
    """`model` in a CPU session of its own."""
    from epsinas_onnx.core.scoring import runtime

    session = runtime.make_session(model.SerializeToString(), ["CPUExecutionProvider"], threads, graph_optimization,
                                   shared_arena=True)
    return Piece(session, tuple(i.name for i in session.get_inputs()), session.get_outputs()[0].name)


def rewritten_template(model, scoring: ScoringSettings, input_name: str | None) -> onnx.ModelProto:
    """The generic path's rewrite of an exporter's onnx-ir `model`, as the
    session would load it (session_payload: the BN function inlined)."""
    from epsinas_onnx.core.scoring.scorer import rewrite_model, session_payload

    staged = rewrite_model(model, scoring, input_name, in_place=True)
    return onnx.load_from_string(session_payload(staged.rewritten.model))


class Cutter:
    """Cuts pieces out of one rewritten template: cut(inputs, output) is the
    piece computing `output` from the tensors `inputs` and the weight."""

    def __init__(self, template: onnx.ModelProto, threads: int | None, graph_optimization: str):
        # the Extractor needs every tensor's type: infer them once
        self.extractor = onnx.utils.Extractor(onnx.shape_inference.infer_shapes(template))
        self.threads, self.graph_optimization = threads, graph_optimization

    def cut(self, inputs: list[str], output: str) -> Piece:
        return piece(self.extractor.extract_model(inputs + [WEIGHT_INPUT], [output]), self.threads,
                     self.graph_optimization)


KEPT_BYTES = 64 * 2**20  # WeightValues: what it may keep beyond two weights


def _tensor_bytes(value) -> int | None:
    """The bytes of an ONNX Runtime tensor; None for anything else."""
    size = getattr(value, "tensor_size_in_bytes", None)
    return size() if callable(size) else None


class WeightValues:
    """The weight as a raw ONNX Runtime value, with whatever a space keeps per
    weight (`made(runs, w)`: the stem's output, ...), for the last two weights
    asked for (a pair) and, where made gives one ONNX Runtime tensor, as many
    more as fit in KEPT_BYTES: a ladder's rungs (every architecture climbs the
    same rungs: each rung's stem is made once, not once per architecture)."""

    def __init__(self, made):
        self.made = made
        self._kept: dict[float, tuple] = {}  # the least recently asked for first

    def __call__(self, runs, weight: float) -> tuple:
        """(weight value, what made(runs, weight value) returned) for `weight`."""
        key = float(weight)
        if key in self._kept:
            self._kept[key] = self._kept.pop(key)
        else:
            from epsinas_onnx.core.scoring import runtime

            while not self._room():
                self._kept.pop(next(iter(self._kept)))
            array = np.array(weight, dtype=np.float32)  # the memory of the value below
            w = runtime.cpu_value(array)
            self._kept[key] = (array, w, self.made(runs, w))
        _, w, kept = self._kept[key]
        return w, kept

    def _room(self) -> bool:
        """Whether one more weight may be kept (counted as large as the largest kept)."""
        if len(self._kept) < 2:
            return True
        sizes = [_tensor_bytes(kept) for _, _, kept in self._kept.values()]
        return None not in sizes and sum(sizes) + max(sizes) <= KEPT_BYTES


class Step(NamedTuple):
    """One sub-network of an architecture: what it computes (`key`: equal keys,
    the same rewritten nodes), the tensors (to_ir's names) it reads, in the
    order fed, and the one it makes. A step whose key is None copies its one
    input (a sub-network equal to one already run for the same architecture)."""

    key: tuple | None
    inputs: tuple[str, ...]
    output: str


def needed_steps(steps: list[Step], output: str) -> tuple[Step, ...]:
    """The steps `output` needs, in order (the generic rewrite drops the nodes
    nothing reads, a cell node no edge leaves: there is nothing to cut for
    them), a step equal to an earlier one (the same key on the same values)
    made a copy of it (it computes the same: run once)."""
    needed, live = {output}, []
    for step in reversed(steps):
        if step.output in needed:
            needed.update(step.inputs)
            live.append(step)
    source: dict[str, str] = {}  # a copy's tensor -> the tensor it copies
    made: dict[tuple, str] = {}  # (key, inputs' sources) -> the tensor that holds it
    result = []
    for step in reversed(live):
        inputs = tuple(source.get(name, name) for name in step.inputs)
        if step.key is not None and (step.key, inputs) not in made:
            made[step.key, inputs] = step.output
            result.append(step)
        else:
            source[step.output] = inputs[0] if step.key is None else made[step.key, inputs]
            result.append(Step(None, (source[step.output],), step.output))
    return tuple(result)


@dataclasses.dataclass(frozen=True)
class StepNetwork:
    """A space's networks as steps: steps(arch) computes the logits
    (`head_output`) from the stem's output (`stem_output`) in order;
    build(arch) is the network to rewrite to cut an architecture's pieces
    from (onnx-ir, tied parameters); the stem is cut from build(stem_template)."""

    steps: Callable[[Any], tuple[Step, ...]]
    build: Callable[[Any], Any]
    stem_template: Any
    stem_output: str
    head_output: str


class StepPieces:
    """The pieces of the architectures met so far, each cut the first time a
    step of its key is met (out of that architecture rewritten by the generic
    path), and the batch they run on; the stem's output is made once per
    weight. output(arch, weight) is the logits the generic path's session
    gives for `arch` at `weight`, bit for bit."""

    def __init__(self, network: StepNetwork, scoring: ScoringSettings, input_name: str | None, batch: np.ndarray,
                 threads: int | None, graph_optimization: str):
        from epsinas_onnx.core.scoring import runtime

        self.network, self.scoring, self.input_name = network, scoring, input_name
        self.threads, self.graph_optimization = threads, graph_optimization
        self.pieces: dict[tuple, Piece] = {}
        self.templates = 0  # architectures rewritten to cut pieces from
        self.stem = self._cutter(network.stem_template).cut(["input"], network.stem_output)
        self._array = np.ascontiguousarray(batch, dtype=np.float32)  # the memory of the value below
        self.batch = runtime.cpu_value(self._array)
        self._weights = WeightValues(lambda runs, w: self.stem(runs, self.batch, w))
        self._last = (None, ())  # the last architecture and its steps (one per weight)

    @property
    def sessions(self) -> int:
        return 1 + len(self.pieces)

    def _cutter(self, arch) -> Cutter:
        self.templates += 1
        return Cutter(rewritten_template(self.network.build(arch), self.scoring, self.input_name), self.threads,
                      self.graph_optimization)

    def plan(self, arch) -> tuple[Step, ...]:
        """`arch`'s steps, with a piece for every key (cut from `arch` rewritten where one is missing)."""
        if self._last[0] != arch:
            steps = self.network.steps(arch)
            missing = [s for s in steps if s.key is not None and s.key not in self.pieces]
            if missing:
                cutter = self._cutter(arch)
                for step in missing:
                    if step.key not in self.pieces:
                        self.pieces[step.key] = cutter.cut(list(step.inputs), step.output)
            self._last = (arch, steps)
        return self._last[1]

    def computation_key(self, arch) -> str:
        """Equal keys: the same pieces on the same inputs in the same order, so
        the same logits bit for bit (bench runs one architecture per key)."""
        digests = {self.network.stem_output: "stem"}
        for step in self.plan(arch):
            digests[step.output] = (digests[step.inputs[0]] if step.key is None else hashlib.sha256(
                repr((step.key, [digests[name] for name in step.inputs])).encode()).hexdigest())
        return digests[self.network.head_output]

    def output(self, arch, weight: float, finite_check: bool = False,
               timeout: float | None = None) -> tuple[np.ndarray, None]:
        """The logits of `arch` at `weight` (no finite check: the spaces using
        these pieces declare none). timeout bounds all the architecture's
        pieces together."""
        from epsinas_onnx.core.scoring import runtime

        steps = self.plan(arch)
        with runtime.WatchedRuns(timeout) as runs:
            w, stem = self._weights(runs, weight)
            values = {self.network.stem_output: stem}
            for step in steps:
                if step.key is None:
                    values[step.output] = values[step.inputs[0]]
                else:
                    values[step.output] = self.pieces[step.key](runs, *[values[name] for name in step.inputs], w)
            return values[self.network.head_output].numpy(), None
