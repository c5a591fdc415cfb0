"""BatchNormalization -> normalisation with the batch's own statistics.

The reference builds every BatchNorm with track_running_stats=False, so it
always normalises per channel over N and the spatial axes with the biased
batch variance, even in eval mode. An exported inference-mode
BatchNormalization uses stored statistics instead, a different function.

Built from primitive ops so it runs on every execution provider; a
training-mode BatchNormalization is avoided on purpose (ONNX Runtime gives
wrong values for it once graph optimisation is on). Reshaping X to
(N, C, -1) makes the rewrite independent of X's rank. The arithmetic
follows PyTorch's CPU kernel: y = x * alpha + (beta - mean * alpha) with
alpha = gamma / sqrt(var + eps).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from epsinas_onnx.passes._build import constant, default_opset, node


class BatchStatisticsNormPass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        opset = default_opset(model)
        count = 0
        for bn in list(ir.traversal.RecursiveGraphIterator(model.graph)):
            if bn.op_type != "BatchNormalization" or bn.domain not in ("", "ai.onnx"):
                continue
            for extra in bn.outputs[1:]:
                if extra.uses() or extra.is_graph_output():
                    raise ValueError(
                        f"BatchNormalization {bn.name!r} exposes its running statistics; "
                        "a model that reads them cannot be scored with batch statistics"
                    )
            self._replace(bn, opset)
            count += 1
        return ir.passes.PassResult(model, modified=bool(count))

    @staticmethod
    def _replace(bn: ir.Node, opset: int) -> None:
        x, scale, bias = bn.inputs[0], bn.inputs[1], bn.inputs[2]
        eps_attr = bn.attributes.get("epsilon")
        eps = eps_attr.as_float() if eps_attr is not None else 1e-5
        dtype = (x.dtype or scale.dtype or ir.DataType.FLOAT).numpy()
        nodes: list[ir.Node] = []

        def add(n: ir.Node) -> ir.Value:
            nodes.append(n)
            return n.outputs[0]

        def mean_over_n_and_space(v: ir.Value) -> ir.Value:
            if opset >= 18:
                axes = add(constant(np.array([0, 2], dtype=np.int64)))
                return add(node("ReduceMean", [v, axes], keepdims=1))
            return add(node("ReduceMean", [v], axes=[0, 2], keepdims=1))

        x_shape = add(node("Shape", [x]))
        x3 = add(node("Reshape", [x, add(constant(np.array([0, 0, -1], dtype=np.int64)))]))
        mean = mean_over_n_and_space(x3)
        centred = add(node("Sub", [x3, mean]))
        var = mean_over_n_and_space(add(node("Mul", [centred, centred])))
        std = add(node("Sqrt", [add(node("Add", [var, add(constant(np.array(eps, dtype=dtype)))]))]))
        per_channel = add(constant(np.array([-1, 1], dtype=np.int64)))
        gamma = add(node("Reshape", [scale, per_channel]))
        beta = add(node("Reshape", [bias, per_channel]))
        alpha = add(node("Mul", [add(node("Reciprocal", [std])), gamma]))
        shift = add(node("Sub", [beta, add(node("Mul", [mean, alpha]))]))
        y3 = add(node("Add", [add(node("Mul", [x3, alpha])), shift]))
        y = add(node("Reshape", [y3, x_shape]))

        graph = bn.graph
        graph.insert_before(bn, nodes)
        name = bn.outputs[0].name
        bn.outputs[0].name = None
        y.name = name
        bn.outputs[0].replace_all_uses_with(y, replace_graph_outputs=True)
        graph.remove(bn, safe=True)
