"""Add the scalar float input that every weight will read."""

from __future__ import annotations

import onnx_ir as ir


class WeightInputPass(ir.passes.InPlacePass):
    def __init__(self, name: str):
        super().__init__()
        self.name = name

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        if any(v.name == self.name for v in model.graph.inputs):
            return ir.passes.PassResult(model, modified=False)
        w = ir.Value(name=self.name, type=ir.TensorType(ir.DataType.FLOAT), shape=ir.Shape([]))
        model.graph.inputs.append(w)
        return ir.passes.PassResult(model, modified=True)
