"""One test per channel-collapse rule, each on tiny hand-built graphs.

A graph starts with a 3x3 conv from the 3-channel input (`Graph.stem`): after
the rewrite its weight is one value, so its output is collapsed, one group of
identical channels. The node under test (named UNDER_TEST) reads it. For each
rule: what it collapses (every op then runs at reduced width, and the
collapsed graph computes what the full-width graph does, with ONNX Runtime, at
two weights) and what it declines, with the reason `rewrite --explain` prints
(the graph still computes the full-width function). `test_every_rule_has_its_test`
fails for a rule registered without a test here.
"""

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from epsinas_onnx import ExecutionOptions, ScoringSettings, prepare_model
from epsinas_onnx.core.errors import UserError
from epsinas_onnx.core.rewriting.passes import channel_collapse as cc
from tests.onnx_graphs import model, out

UNDER_TEST = "under_test"
WEIGHTS = (0.3, 1.7)
TESTED_RULES = set()


def checks_rule(rule):
    """Marks the test of `rule` (see test_every_rule_has_its_test)."""

    def mark(test):
        TESTED_RULES.add(rule)
        return test

    return mark


class Graph:
    """A tiny model, built node by node; input 'x' of shape (2, *x_shape[1:]), batch symbolic."""

    def __init__(self, x_shape=(2, 3, 6, 6), opset=17):
        self.x_shape, self.opset = x_shape, opset
        self.nodes, self.inits = [], []
        self.rng = np.random.default_rng(0)

    def op(self, op_type, *inputs, outputs=1, name=None, **attrs):
        names = [f"t{len(self.nodes)}_{k}" for k in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, name=name or f"n{len(self.nodes)}", **attrs))
        return names[0] if outputs == 1 else names

    def under_test(self, op_type, *inputs, **attrs):
        return self.op(op_type, *inputs, name=UNDER_TEST, **attrs)

    def tensor(self, array):
        """An initializer the rewrite keeps (integers, scalars, tensors only an op without a role reads)."""
        name = f"k{len(self.inits)}"
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def ints(self, *values):
        return self.tensor(np.array(values, dtype=np.int64))

    def weight(self, *shape):
        """Random values; as a weight (or bias, norm scale) the rewrite sets it to w (or 0)."""
        return self.tensor(self.rng.normal(size=shape).astype(np.float32))

    def not_uniform(self, *shape):
        """A tensor of distinct values the rewrite cannot see as a weight: Abs of a
        constant (only Abs reads the constant, so it keeps its values)."""
        return self.op("Abs", self.weight(*shape))

    def stem(self, c_out=4):
        """Conv 3 -> c_out channels: one collapsed group of c_out. The stems of a
        graph differ in kernel size (3, 1, 5, 3, ...), so their channels differ:
        a rule that mixed up groups would compute something else."""
        k = (3, 1, 5)[sum(n.op_type == "Conv" and n.input[0] == "x" for n in self.nodes) % 3]
        return self.op("Conv", "x", self.weight(c_out, 3, k, k), pads=[k // 2] * 4)

    def two_groups(self):
        """Concat of a 4- and a 2-channel stem: groups (4, 2)."""
        return self.op("Concat", self.stem(4), self.stem(2), axis=1)

    def pooled(self, c_out=4):
        """GlobalAveragePool then Flatten of a stem: (N, c_out), collapsed."""
        return self.op("Flatten", self.op("GlobalAveragePool", self.stem(c_out)), axis=1)

    def proto(self, y, rank):
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", *self.x_shape[1:]])
        return model(self.nodes, [x], [out(y, rank)], self.inits, opset=self.opset)

    def input(self):
        return np.random.default_rng(1).normal(size=self.x_shape).astype(np.float32)


def report_of_agreeing(g, y, rank, **options):
    """The collapse report, after checking the collapsed graph computes what the full-width one does."""
    proto, x = g.proto(y, rank), g.input()
    collapsed = prepare_model(proto, ScoringSettings(collapse=True, **options), ExecutionOptions(threads=1))
    full = prepare_model(proto, ScoringSettings(collapse=False, **options), ExecutionOptions(threads=1))
    for w in WEIGHTS:
        expected = full.run(x, w)
        # float32 sums in another order: relative to the largest value where a sum cancels
        atol = 1e-6 * max(1.0, float(np.abs(expected).max(initial=0.0)))
        np.testing.assert_allclose(collapsed.run(x, w), expected, rtol=1e-5, atol=atol)
    return collapsed.rewritten.collapse


def collapses(g, y, rank=4, not_collapsible=0, **options):
    """Every op of the graph runs at reduced width but `not_collapsible` (shape
    computations that read no collapsed tensor); the rewrite's own ops (one
    Expand per weight shape) are counted in total_ops only."""
    report = report_of_agreeing(g, y, rank, **options)
    assert report.expanded == []
    assert report.collapsed_ops == len(g.nodes) - not_collapsible, report.summary()


def declines(g, y, reason, rank=4, **options):
    """The node under test is the one place the graph goes back to full width, for `reason`."""
    report = report_of_agreeing(g, y, rank, **options)
    op_type = next(n.op_type for n in g.nodes if n.name == UNDER_TEST)
    assert report.expanded == [f"{op_type} '{UNDER_TEST}': {reason}"]


def test_every_rule_has_its_test():
    missing = [rule.__name__ for rule in cc.RULES.rules() if rule not in TESTED_RULES]
    assert not missing, f"collapse rules without a test in {__name__}: {missing}"


@checks_rule(cc.ChannelwiseRule)
def test_channelwise_rule():
    for op_type, scalar_inputs, attrs in [
        ("Relu", [], {}),
        ("LeakyRelu", [], {"alpha": 0.1}),
        ("MaxPool", [], {"kernel_shape": [2, 2], "strides": [2, 2]}),
        ("AveragePool", [], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
        ("Clip", [-0.5, 0.5], {}),
        ("Dropout", [], {}),
        ("Cast", [], {"to": TensorProto.FLOAT}),
    ]:
        g = Graph()
        scalars = [g.tensor(np.float32(s)) for s in scalar_inputs]
        collapses(g, g.under_test(op_type, g.stem(), *scalars, **attrs))
    # declines: a second output in use (indices know channel positions)
    g = Graph()
    pooled, indices = g.under_test("MaxPool", g.stem(), outputs=2, kernel_shape=[2, 2], strides=[2, 2])
    declines(g, g.op("Add", pooled, g.op("Cast", indices, to=TensorProto.FLOAT)),
             "MaxPool has a second output (MaxPool indices, Dropout mask) in use: channel positions matter")
    # (its other decline, a collapsed tensor in a later input, has no valid model: those inputs are scalars)


@checks_rule(cc.CastLikeRule)
def test_cast_like_rule():
    # input 1 gives the type only: collapsed, it is not expanded (the rule never declines)
    g = Graph()
    c = g.stem()
    collapses(g, g.under_test("CastLike", c, c))


@checks_rule(cc.GlobalPoolRule)
def test_global_pool_rule():
    # never declines; after it, Flatten and Reshape may drop the spatial axes (FlattenRule)
    for op_type in ("GlobalAveragePool", "GlobalMaxPool"):
        g = Graph()
        collapses(g, g.under_test(op_type, g.stem()))


@checks_rule(cc.SpatialReduceRule)
def test_spatial_reduce_rule():
    for op_type, axes in [("ReduceMean", [2, 3]), ("ReduceMax", [-1, -2])]:
        g = Graph()
        collapses(g, g.under_test(op_type, g.stem(), axes=axes, keepdims=1))
    for axes, keepdims, rank, reason in [
        ([1], 1, 4, "ReduceMean over axes [1]: only a reduction over every spatial axis keeps the channels"),
        ([3], 1, 4, "ReduceMean over axes [3]: only a reduction over every spatial axis keeps the channels"),
        ([2, 3], 0, 2, "ReduceMean with its rank or axes unknown here, or keepdims=0"),
    ]:
        g = Graph()
        declines(g, g.under_test("ReduceMean", g.stem(), axes=axes, keepdims=keepdims), reason, rank=rank)


@checks_rule(cc.FlattenRule)
def test_flatten_rule():
    g = Graph()
    collapses(g, g.under_test("Flatten", g.op("GlobalAveragePool", g.stem()), axis=1), rank=2)
    g = Graph()
    declines(g, g.under_test("Flatten", g.stem(), axis=1),
             "Flatten at axis 1 of a tensor whose spatial axes are not all 1", rank=2)
    g = Graph()
    declines(g, g.under_test("Flatten", g.op("GlobalAveragePool", g.stem()), axis=2),
             "Flatten at axis 2 of a tensor whose spatial axes are not all 1", rank=2)


@checks_rule(cc.ReshapeRule)
def test_reshape_rule():
    # (N, C, 1, 1) -> (N, C), the target as a constant (0, -1) or (2, C)
    for target in [(0, -1), (2, 4)]:
        g = Graph()
        collapses(g, g.under_test("Reshape", g.op("GlobalAveragePool", g.stem()), g.ints(*target)), rank=2)
    # the target computed at run time: Concat(batch, [C]) (Shape, Slice and Concat read no collapsed tensor)
    g = Graph()
    batch = g.op("Slice", g.op("Shape", "x"), g.ints(0), g.ints(1))
    target = g.op("Concat", batch, g.ints(4), axis=0)
    collapses(g, g.under_test("Reshape", g.op("GlobalAveragePool", g.stem()), target), rank=2, not_collapsible=3)
    reason = "Reshape to a shape other than (N, C) of an (N, C, 1, ..., 1) tensor"
    g = Graph()
    declines(g, g.under_test("Reshape", g.stem(), g.ints(0, -1)), reason, rank=2)
    g = Graph()
    declines(g, g.under_test("Reshape", g.op("GlobalAveragePool", g.stem()), g.ints(0, 2, 2)), reason, rank=3)


@checks_rule(cc.ElementwiseRule)
def test_elementwise_rule():
    g = Graph()
    collapses(g, g.under_test("Add", g.stem(), g.stem()))
    g = Graph()  # groups (4, 2) and (6,): both regrouped to (4, 2)
    collapses(g, g.under_test("Add", g.two_groups(), g.stem(6)))
    g = Graph()  # groups (4, 2) and (2, 4): both regrouped to (2, 2, 2)
    collapses(g, g.under_test("Add", g.two_groups(), g.op("Concat", g.stem(2), g.stem(4), axis=1)))
    g = Graph()
    collapses(g, g.under_test("Sum", g.stem(), g.stem(), g.stem()))
    for constant in (np.float32(2.0), np.full((4, 1, 1), 0.5, dtype=np.float32)):  # one value, per channel
        g = Graph()
        collapses(g, g.under_test("Mul", g.stem(), g.tensor(constant)))
    g = Graph()
    declines(g, g.under_test("Mul", g.stem(), g.tensor(np.arange(1, 5, dtype=np.float32).reshape(4, 1, 1))),
             "Mul with an operand that is neither collapsed nor one value broadcast per channel "
             "(a full-width tensor, a per-channel constant, or a broadcast that grows the output)")
    g = Graph()
    declines(g, g.under_test("Add", g.stem(4), g.stem(1)),
             "Add of collapsed tensors of different widths (broadcasting over channels)")


@checks_rule(cc.ConcatRule)
def test_concat_rule():
    g = Graph()
    collapses(g, g.under_test("Concat", g.stem(4), g.stem(2), g.stem(4), axis=1))
    g = Graph()
    full_width = g.op("Conv", "x", g.not_uniform(4, 3, 3, 3), pads=[1, 1, 1, 1])
    declines(g, g.under_test("Concat", g.stem(), full_width, axis=1), "Concat of collapsed and full-width inputs")
    g = Graph()
    declines(g, g.under_test("Concat", g.stem(), g.stem(), axis=2), "Concat along axis 2, not the channels")


@checks_rule(cc.SliceRule)
def test_slice_rule():
    for starts, ends in [(1, 5), (4, 6), (-3, 100), (0, 4)]:  # of groups (4, 2)
        g = Graph()
        collapses(g, g.under_test("Slice", g.two_groups(), g.ints(starts), g.ints(ends), g.ints(1)))
    g = Graph()  # a slice that keeps the first group only, then more channels after it
    sliced = g.under_test("Slice", g.two_groups(), g.ints(0), g.ints(4), g.ints(1))
    collapses(g, g.op("Concat", sliced, g.stem(2), axis=1))
    for starts, ends, axis, step in [(0, 3, 2, 1), (1, 100, 3, 2)]:  # spatial axes alone: every channel kept
        g = Graph()
        collapses(g, g.under_test("Slice", g.two_groups(), g.ints(starts), g.ints(ends), g.ints(axis), g.ints(step)))
    for inputs, reason in [
        (lambda g: [g.ints(0), g.ints(6), g.ints(1), g.ints(2)], "Slice with a step other than 1"),
        (lambda g: [g.ints(0), g.ints(1), g.ints(0)], "Slice along an axis other than the channels (not worth a rule)"),
        (lambda g: [g.op("ConstantOfShape", g.ints(1), value=numpy_helper.from_array(np.array([1], np.int64))),
                    g.ints(3), g.ints(1)], "Slice with starts or ends computed at run time"),
        (lambda g: [g.ints(3), g.ints(3), g.ints(1)], "Slice that keeps no channel"),
    ]:
        g = Graph()
        declines(g, g.under_test("Slice", g.two_groups(), *inputs(g)), reason)


@checks_rule(cc.ConvRule)
def test_conv_rule():
    g = Graph()  # from the full-width input: channels summed, then a pool times a scalar
    collapses(g, g.op("Relu", g.under_test("Conv", "x", g.weight(4, 3, 3, 3), pads=[1, 1, 1, 1], strides=[2, 2])))
    for weight_shape, attrs in [
        ((2, 4, 1, 1), {}),  # a 1x1 conv: only the scalar
        ((2, 4, 3, 3), {"dilations": [2, 2], "pads": [2, 2, 2, 2]}),  # dilated: a one-channel conv, no pool
        ((4, 1, 3, 3), {"group": 4, "pads": [1, 1, 1, 1]}),  # depthwise
    ]:
        g = Graph()
        collapses(g, g.op("Relu", g.under_test("Conv", g.stem(), g.weight(*weight_shape), **attrs)))
    g = Graph()  # a bias set to w (bias="w"), not zero: a conv with a bias, no pool
    collapses(g, g.op("Relu", g.under_test("Conv", g.stem(), g.weight(3, 4, 3, 3), g.weight(3))), bias="w")
    g = Graph()  # groups (4, 2): a conv over 2 channels weighted 4 and 2; a graph output, so no pool
    collapses(g, g.under_test("Conv", g.two_groups(), g.weight(3, 6, 3, 3)))
    g = Graph()
    declines(g, g.under_test("Conv", g.stem(), g.weight(4, 2, 3, 3), group=2),
             "Conv with group=2 mixes channels in groups (only group 1 and depthwise collapse)")
    g = Graph()
    declines(g, g.under_test("Conv", g.stem(), g.not_uniform(2, 4, 3, 3)),
             "Conv whose weight is not one value throughout, with a known shape")
    g = Graph()
    declines(g, g.under_test("Conv", g.stem(), g.weight(2, 4, 3, 3), g.not_uniform(2)),
             "Conv whose bias is not one value throughout")
    # a model ONNX Runtime refuses at full width is refused collapsed too
    g = Graph()
    g.under_test("Conv", g.stem(), g.weight(2, 5, 3, 3))
    with pytest.raises(UserError, match="has a weight for 5 input channels"):
        prepare_model(g.proto(g.nodes[-1].output[0], 4), ScoringSettings(collapse=True))


@checks_rule(cc.BatchNormRule)
def test_batch_norm_rule():
    def batch_norm(g, scale):
        ones = g.tensor(np.ones(4, dtype=np.float32))
        return g.under_test("BatchNormalization", g.stem(), scale, g.weight(4), g.weight(4), ones)

    g = Graph()
    collapses(g, batch_norm(g, g.weight(4)))
    g = Graph()
    declines(g, batch_norm(g, g.not_uniform(4)), "BatchNormalization whose scale or bias is not one value "
             "throughout, or whose running-statistics outputs are read")


@checks_rule(cc.GemmRule)
def test_gemm_rule():
    for trans_b, weight_shape in [(1, (3, 4)), (0, (4, 3))]:
        g = Graph()
        collapses(g, g.under_test("Gemm", g.pooled(), g.weight(*weight_shape), g.weight(3), transB=trans_b), rank=2)
    g = Graph(x_shape=(2, 5))  # from a full-width input
    collapses(g, g.under_test("Gemm", "x", g.weight(3, 5), g.weight(3), transB=1), rank=2)
    g = Graph()
    declines(g, g.under_test("Gemm", g.pooled(), g.weight(2, 3), transA=1),
             "Gemm with transA=1 (its input's channels are not its columns)", rank=2)
    g = Graph()
    declines(g, g.under_test("Gemm", g.pooled(), g.not_uniform(3, 4), transB=1),
             "Gemm (transB=1) whose weight B is not one value throughout, with a known 2-d shape", rank=2)
    g = Graph()
    declines(g, g.under_test("Gemm", g.pooled(), g.weight(3, 4), g.not_uniform(3), transB=1),
             "Gemm whose bias C is not one value throughout", rank=2)


@checks_rule(cc.MatMulRule)
def test_matmul_rule():
    g = Graph()
    collapses(g, g.under_test("MatMul", g.pooled(), g.weight(4, 3)), rank=2)
    g = Graph(x_shape=(2, 5))  # from a full-width input
    collapses(g, g.under_test("MatMul", "x", g.weight(5, 3)), rank=2)
    reason = ("MatMul whose second input is not one value throughout with a known 2-d shape, "
              "or whose first input is not of rank 2")
    g = Graph()
    declines(g, g.under_test("MatMul", g.pooled(), g.not_uniform(4, 3)), reason, rank=2)
    g = Graph()
    declines(g, g.under_test("MatMul", g.stem(), g.weight(6, 3)), reason)
