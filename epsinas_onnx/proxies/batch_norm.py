"""BatchNormalization as in training mode, for the proxies' full-width runs.

Each BatchNormalization node normalises with the statistics of the batch it
is fed (per channel over the batch and spatial axes, biased variance, the
node's epsilon), as a PyTorch network in training mode does, which is what
the proxies' papers score. The epsinas rewrite has a pass of the same
function (core/rewriting/passes/batch_statistics_norm.py), built for its
channel-collapsed graphs, whose float32 sums it keeps equal to PyTorch's bit
for bit; at full width and batch 128 its centred variance (a subtraction and
a square written out over the whole tensor) took a quarter of a NAS-Bench-201
run. Here the variance is E[x^2] - E[x]^2 (the square written once, no
subtraction over the tensor; ReduceSumSquare, which writes nothing, measured
slower in ONNX Runtime 1.32), the square (float32) as Pow(x, 2), which ONNX Runtime
computes as x * x bit for bit: a Mul of the convolution's output would be
moved to the NCHWc layout at full optimisation and need its own reorder back
for the reductions (3 % of NASWOT's 128-image run), then the inference-mode BatchNormalization
kernel with those statistics. Its statistics stay the BatchNormalization's
inputs 3 and 4 (mean, biased variance), where a probe may read them (Zen). In float32 that loses
digits only where a channel's mean is large against its spread, not the case
for the features of a randomly initialised network.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from epsinas_onnx.core.rewriting.passes.build import all_nodes, constant, default_opset, node
from epsinas_onnx.proxies.graph import ADDED_PREFIX, name_added

BATCH_NORM_PREFIX = ADDED_PREFIX + "batch_norm."


class TrainingBatchNormPass(ir.passes.InPlacePass):
    """Every BatchNormalization of rank >= 3 (known shape) normalised with its batch's statistics."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        opset = default_opset(model)
        count = added = 0
        for bn in [n for n in all_nodes(model.graph) if n.op_type == "BatchNormalization"
                   and n.domain in ("", "ai.onnx")]:
            x = bn.inputs[0]
            if x.shape is None or len(x.shape) < 3:
                raise ValueError(f"BatchNormalization {bn.name!r}: the rank of its input is unknown")
            rank = len(x.shape)
            nodes: list[ir.Node] = []
            spatial = list(range(2, rank))
            # space first, then batch: contiguous reductions, several times faster in ONNX Runtime
            mean = _reduce(_reduce(x, spatial, opset, nodes), [0], opset, nodes)
            dtype = x.dtype or ir.DataType.FLOAT
            if dtype == ir.DataType.FLOAT:  # the case measured bit for bit (tests/test_proxies.py)
                two = constant(np.array(2.0, dtype=np.float32))
                square = node("Pow", [x, two.outputs[0]])
                nodes += [two, square]
            else:
                square = node("Mul", [x, x])
                nodes.append(square)
            mean_square = _reduce(_reduce(square.outputs[0], spatial, opset, nodes), [0], opset, nodes)
            squared_mean = node("Mul", [mean, mean])
            difference = node("Sub", [mean_square, squared_mean.outputs[0]])
            zero = constant(np.array(0.0, dtype=dtype.numpy()))
            variance = node("Max", [difference.outputs[0], zero.outputs[0]])  # rounding can dip below 0
            flat = constant(np.array([-1], np.int64))
            mean_c = node("Reshape", [mean, flat.outputs[0]])
            var_c = node("Reshape", [variance.outputs[0], flat.outputs[0]])
            nodes += [squared_mean, difference, zero, variance, flat, mean_c, var_c]
            name_added(nodes, BATCH_NORM_PREFIX, added)
            added += len(nodes)
            bn.graph.insert_before(bn, nodes)
            bn.replace_input_with(3, mean_c.outputs[0])
            bn.replace_input_with(4, var_c.outputs[0])
            count += 1
        return ir.passes.PassResult(model, modified=bool(count))


def _reduce(x: ir.Value, axes: list[int], opset: int, nodes: list) -> ir.Value:
    """ReduceMean over `axes`, keepdims (axes an attribute before opset 18, an input since)."""
    if opset >= 18:
        axes_value = constant(np.array(axes, dtype=np.int64))
        reduce = node("ReduceMean", [x, axes_value.outputs[0]], keepdims=1)
        nodes += [axes_value, reduce]
    else:
        reduce = node("ReduceMean", [x], axes=axes, keepdims=1)
        nodes.append(reduce)
    return reduce.outputs[0]
