"""Feed the channel sum: a model whose image input is read only by a sum over
its channels takes that sum as its input.

Channel collapse starts the collapse of a stem conv that reads the image
input with a ReduceSum over the channel axis (keepdims; channel_collapse.py,
Collapser.channel_sum), and the conv then reads one channel. When that
ReduceSum is the input's only reader, this pass makes the graph input the
sum itself ([N, 1, H, W], under the same name) and removes the ReduceSum, so
the batch can be read with its channels summed a few items at a time
(inputs.prepare_batch's channel_sum) and the 3-channel batch is never whole
in memory: ResNet-50 at 224x224, batch 256, no longer holds its 147 MiB.

inputs.sum_channels (numpy's sum over axis 1) adds up to MAX_CHANNELS
channels in the order ONNX Runtime's ReduceSum does, so every number fed is
the one the ReduceSum made (a NaN is a NaN at the same place; its payload
bits, which no score reads, may differ) and the score is the same bit for
bit (tests/test_channel_sum_input.py checks both). With more channels ONNX
Runtime adds in another order (6 and more, in this version), and the pass
declines.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir

from epsinas_onnx.core.rewriting.passes.channel_collapse import constant_array, int_attr

# the most channels whose numpy sum is ONNX Runtime's ReduceSum bit for bit
# (grey, RGB, RGBA images; tests/test_channel_sum_input.py)
MAX_CHANNELS = 4


@dataclasses.dataclass
class ChannelSumReport:
    applied: bool = False
    declined: str | None = None  # why the input was left as it was


class ChannelSumInputPass(ir.passes.InPlacePass):
    """Makes graph input `input_name` the ReduceSum over its channels that is
    its only reader, if it is one (self.report says whether, or why not)."""

    def __init__(self, input_name: str):
        super().__init__()
        self.input_name = input_name
        self.report = ChannelSumReport()

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        found = _channel_sum_reader(graph, self.input_name)
        if isinstance(found, str):
            self.report = ChannelSumReport(declined=found)
            return ir.passes.PassResult(model, modified=False)
        value = next(v for v in graph.inputs if v.name == self.input_name)
        dims = list(value.shape)
        found.outputs[0].replace_all_uses_with(value)
        graph.remove(found, safe=True)  # its axes constant, now unread, goes with the dead nodes
        value.shape = ir.Shape([dims[0], 1, *dims[2:]])
        self.report = ChannelSumReport(applied=True)
        return ir.passes.PassResult(model, modified=True)


def _channel_sum_reader(graph: ir.Graph, name: str) -> ir.Node | str:
    """The ReduceSum over the channels that alone reads input `name`, or why there is none."""
    value = next((v for v in graph.inputs if v.name == name), None)
    if value is None:
        return f"the model has no input {name!r}"
    if value.dtype != ir.DataType.FLOAT or value.shape is None or len(value.shape) != 4:
        return f"input {name!r} is not a rank-4 float32 tensor"
    if value.is_graph_output():
        return f"input {name!r} is also a graph output"
    uses = value.uses()
    if len(uses) != 1:
        return f"input {name!r} has {len(uses)} readers, not one ReduceSum"
    reader, index = uses[0]
    if reader.domain not in ("", "ai.onnx") or reader.op_type != "ReduceSum" or index != 0 or reader.graph is not graph:
        return f"input {name!r} is read by {reader.op_type} {reader.name!r}, not by a ReduceSum over its channels"
    if int_attr(reader, "keepdims", 1) != 1:
        return f"ReduceSum {reader.name!r} drops the channel axis (keepdims=0)"
    if _axes(reader) not in ([1], [-3]):
        return f"ReduceSum {reader.name!r} does not sum over the channel axis alone"
    if reader.outputs[0].is_graph_output():
        return f"the output of ReduceSum {reader.name!r} is a graph output"
    channels = value.shape[1]
    if not isinstance(channels, int):
        return f"input {name!r} has no fixed number of channels"
    if channels > MAX_CHANNELS:
        return (f"input {name!r} has {channels} channels, more than the {MAX_CHANNELS} whose sum numpy adds "
                "in ONNX Runtime's order")
    return reader


def _axes(n: ir.Node) -> list[int] | None:
    """A ReduceSum's constant axes (opset 13 on: input 1; before: the attribute); None: not known here."""
    if len(n.inputs) > 1 and n.inputs[1] is not None:
        axes = constant_array(n.inputs[1])
        return None if axes is None else [int(a) for a in np.asarray(axes).reshape(-1)]
    attr = n.attributes.get("axes")
    return None if attr is None else [int(a) for a in attr.as_ints()]
