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
"""

from __future__ import annotations

import dataclasses

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

    session = runtime.make_session(model.SerializeToString(), ["CPUExecutionProvider"], threads, graph_optimization)
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


class WeightValues:
    """The weight as a raw ONNX Runtime value, with whatever a space keeps per
    weight (`made(runs, w)`: the stem's output, ...), for the last two weights
    asked for (a pair; a ladder's rungs)."""

    def __init__(self, made):
        self.made = made
        self._kept: dict[float, tuple] = {}

    def __call__(self, runs, weight: float) -> tuple:
        """(weight value, what made(runs, weight value) returned) for `weight`."""
        key = float(weight)
        if key not in self._kept:
            from epsinas_onnx.core.scoring import runtime

            while len(self._kept) >= 2:
                self._kept.pop(next(iter(self._kept)))
            array = np.array(weight, dtype=np.float32)  # the memory of the value below
            w = runtime.cpu_value(array)
            self._kept[key] = (array, w, self.made(runs, w))
        _, w, kept = self._kept[key]
        return w, kept
