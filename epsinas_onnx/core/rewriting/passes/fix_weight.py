"""Turn the weight input into a constant, for a stand-alone rewritten model."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir


class FixWeightPass(ir.passes.InPlacePass):
    def __init__(self, name: str, weight: float):
        super().__init__()
        self.name = name
        self.weight = weight

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        w = next(v for v in graph.inputs if v.name == self.name)
        graph.inputs.remove(w)
        w.const_value = ir.tensor(np.array(self.weight, dtype=np.float32), name=self.name)
        graph.register_initializer(w)
        return ir.passes.PassResult(model, modified=True)
