"""flops: multiply-accumulates per example of the Conv, ConvTranspose, Gemm
and MatMul nodes, at the shapes the batch gives the graph.

The input takes the batch's exact shape, ONNX shape inference gives every
node's shapes, and each node counts

    Conv           elements of Y * prod(W.shape[1:])   (C_in / groups * kernel per output)
    ConvTranspose  elements of X * prod(W.shape[1:])
    Gemm, MatMul   elements of Y * K                  (K, the contracted dimension)

summed over the graph and divided by the examples in the batch. A Scan body
counts once per step of its scanned input; a Loop, whose trip count the graph
alone does not fix, makes the value NaN. Activations, normalisation and
pooling are not counted (as NAS-Bench-201's and NASLib's FLOPs, which are
multiply-accumulates of the layers with weights).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir

from epsinas_onnx.proxies.proxy import NotApplicable, Outcome, Proxy, register


@register("flops")
class Flops(Proxy):
    summary = "multiply-accumulates per example of Conv / Gemm / MatMul at the batch's shapes"

    def measure(self, model, context) -> Outcome:
        proto = ir.to_proto(model)
        for value in proto.graph.input:
            if value.name == context.input_name:
                dims = value.type.tensor_type.shape.dim
                del dims[:]
                for size in context.batch.shape:
                    dims.add().dim_value = int(size)
        try:
            inferred = onnx.shape_inference.infer_shapes(proto, data_prop=True)
        except Exception as exc:  # onnx raises its own errors for graphs it cannot infer
            raise NotApplicable(f"ONNX shape inference failed ({str(exc).splitlines()[0][:200]})") from None
        total = graph_macs(inferred.graph, {})
        return Outcome(total / (context.examples or context.batch.shape[0]))


def _shapes(graph: onnx.GraphProto, outer: dict) -> dict:
    shapes = dict(outer)
    for value in [*graph.input, *graph.value_info, *graph.output]:
        dims = value.type.tensor_type.shape.dim
        if value.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = [d.dim_value for d in dims]
    for tensor in graph.initializer:
        shapes[tensor.name] = list(tensor.dims)
    return shapes


def graph_macs(graph: onnx.GraphProto, outer: dict) -> float:
    shapes = _shapes(graph, outer)
    total = 0.0
    for n in graph.node:
        if n.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
            total += _node_macs(n, shapes)
        elif n.op_type == "Scan":
            body = next(a.g for a in n.attribute if a.name == "body")
            scanned = int(next((a.i for a in n.attribute if a.name == "num_scan_inputs"), 0))
            steps = _scan_steps(n, scanned, shapes)
            total += steps * graph_macs(body, shapes)
        elif n.op_type in ("Loop", "If"):
            if any(m.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul")
                   for a in n.attribute for g in ([a.g] if a.HasField("g") else list(a.graphs)) for m in g.node):
                raise NotApplicable(f"node {n.name or n.op_type} is a {n.op_type}: how often its layers run "
                                    "depends on the data, not on the graph")
    return total


def _scan_steps(n: onnx.NodeProto, scanned: int, shapes: dict) -> int:
    first = n.input[len(n.input) - scanned] if scanned else None
    axes = next((list(a.ints) for a in n.attribute if a.name == "scan_input_axes"), [0])
    if first is None or first not in shapes:
        raise NotApplicable(f"the length of Scan {n.name or ''}'s sequence could not be inferred")
    return int(shapes[first][axes[0] if axes else 0])


def _node_macs(n: onnx.NodeProto, shapes: dict) -> float:
    def shape(name: str) -> list[int]:
        if name not in shapes:
            raise NotApplicable(f"the shapes at node {n.name or n.op_type} ({n.op_type}) could not be inferred")
        return shapes[name]

    if n.op_type == "Conv":
        return float(np.prod(shape(n.output[0]), dtype=np.float64) * np.prod(shape(n.input[1])[1:], dtype=np.float64))
    if n.op_type == "ConvTranspose":
        return float(np.prod(shape(n.input[0]), dtype=np.float64) * np.prod(shape(n.input[1])[1:], dtype=np.float64))
    a = shape(n.input[0])
    if n.op_type == "Gemm":
        trans_a = next((at.i for at in n.attribute if at.name == "transA"), 0)
        k = a[0] if trans_a else a[-1]
    else:
        k = a[-1]
    return float(np.prod(shape(n.output[0]), dtype=np.float64) * k)
