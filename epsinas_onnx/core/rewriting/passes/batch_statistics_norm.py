"""BatchNormalization -> normalisation with the batch's own statistics.

The reference builds every BatchNorm with track_running_stats=False, so it
always normalises per channel over N and the spatial axes with the biased
batch variance, even in eval mode. An exported inference-mode
BatchNormalization uses stored statistics instead, a different function.

Built as a model-local function: the batch mean and the biased variance
from primitive ops (two contiguous ReduceMeans each, over space and then
batch), fed as the statistics of an inference-mode BatchNormalization,
which then computes y = x * alpha + (beta - mean * alpha) with alpha =
gamma / sqrt(var + eps), PyTorch's CPU arithmetic, in one kernel. This runs
on every execution provider; the function (10 or 11 nodes) is inlined before
the session (scorer.open_session, with onnx's inliner: faster than ONNX
Runtime's own inlining at load). A training-mode BatchNormalization is avoided on
purpose (ONNX Runtime gives wrong values for it once graph optimisation is
on). Where X's rank is known (its shape, or channel collapse's note in
value.meta) the statistics reduce over its spatial axes directly; otherwise
X is reshaped to (N, C, -1) first, which works for any rank.

Tried and dropped for the one-channel BNs that channel collapse leaves
(fewer nodes, but less accurate or slower): InstanceNormalization over the
(1, 1, N*H*W) view (ONNX Runtime's CPU kernel accumulates such a long row
less accurately: three NAS-Bench-201 scores moved by up to 1.9 %, where
PyTorch float32 and float64 agree to 3e-7) and LayerNormalization over it
(accurate, but its kernel was 2x slower than these ops).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir

from epsinas_onnx.core.rewriting.passes.build import all_nodes, constant, default_opset, insert_at_start, node
from epsinas_onnx.core.rewriting.passes.channel_collapse import RANK_META


FUNCTION_DOMAIN = "epsinas"


class BatchStatisticsNormPass(ir.passes.InPlacePass):
    """Each BatchNormalization becomes one call of a model-local function,
    BatchStatNorm(X, scale, B, epsilon, [flat_shape,] channel_shape), whose
    body holds the primitive ops: the graph the Python side builds and
    rewrites stays small, and the body is inlined once, in C++, before the
    session. The reshape targets are inputs, one Constant each per graph,
    where constants of the body would be copied into every inlined call
    (NAS-Bench-201: 85 -> 15 Constant nodes, session 10.2 -> 9.6 ms).

    The rules: every default-domain BatchNormalization of every (sub)graph is
    replaced, one function per input dtype and rank; one whose running
    statistics (outputs 1, 2) are read is refused (ValueError); one whose
    input is P * s, s a scalar, normalises P instead (_scaled_by_scalar)."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        norms = [n for n in all_nodes(model.graph) if n.op_type == "BatchNormalization" and n.domain in ("", "ai.onnx")]
        for bn in norms:
            _refuse_read_statistics(bn)
        calls = _BatchStatNormCalls(default_opset(model))
        for bn in norms:
            calls.replace(bn)
        calls.add_to(model)
        return ir.passes.PassResult(model, modified=bool(norms))


def _refuse_read_statistics(bn: ir.Node) -> None:
    for extra in bn.outputs[1:]:
        if extra.uses() or extra.is_graph_output():
            raise ValueError(
                f"BatchNormalization {bn.name!r} exposes its running statistics; "
                "a model that reads them cannot be scored with batch statistics"
            )


class _BatchStatNormCalls:
    """What the pass builds: one function per (dtype, rank), and the
    constants the calls of each graph share."""

    def __init__(self, opset: int):
        self.opset = opset
        self.functions: dict[tuple[ir.DataType, int | None], ir.Function] = {}
        self.constants: dict[ir.Graph, _GraphConstants] = {}

    def replace(self, bn: ir.Node) -> None:
        """Replace `bn` by a call of the function for its dtype and rank."""
        dtype = bn.inputs[0].dtype or bn.inputs[1].dtype or ir.DataType.FLOAT
        rank = _rank(bn.inputs[0])
        if (dtype, rank) not in self.functions:
            self.functions[dtype, rank] = _batch_stat_norm_function(self.opset, dtype, rank)
        eps_attr = bn.attributes.get("epsilon")
        eps = eps_attr.as_float() if eps_attr is not None else 1e-5
        graph_constants = self.constants.setdefault(bn.graph, _GraphConstants())
        eps_value = graph_constants.scalar(eps, dtype.numpy())
        x, scale = bn.inputs[0], bn.inputs[1]
        scaled = _scaled_by_scalar(x)
        if scaled is not None:
            # BN(s * P) = BN'(P): gamma * sign(s), epsilon / s^2 (see _scaled_by_scalar)
            x, s = scaled
            folded = graph_constants.fold(s, eps_value, scale)
            if folded.nodes:
                bn.graph.insert_before(bn, folded.nodes)
            scale, eps_value = folded.scale, folded.epsilon
        function = self.functions[dtype, rank]
        # the shapes the body reshapes to, as inputs: one Constant per graph, not one per call once inlined
        shapes = ([] if rank is not None else [graph_constants.ints(0, 0, -1)]) + [graph_constants.ints(-1)]
        call = ir.Node(FUNCTION_DOMAIN, function.name, [x, scale, bn.inputs[2], eps_value, *shapes])
        _replace_node(bn, call)

    def add_to(self, model: ir.Model) -> None:
        """The shared constants at the start of their graphs, the functions into the model."""
        for graph, graph_constants in self.constants.items():
            insert_at_start(graph, graph_constants.nodes)
        for function in self.functions.values():
            model.functions[function.identifier()] = function
        if self.functions:
            model.opset_imports[FUNCTION_DOMAIN] = 1


def _rank(x: ir.Value) -> int | None:
    """x's rank where its shape or the channel-collapse pass says it (3 or more), else None."""
    rank = len(x.shape) if x.shape is not None else x.meta.get(RANK_META)
    return rank if rank is not None and rank >= 3 else None


def _replace_node(old: ir.Node, new: ir.Node) -> None:
    graph = old.graph
    graph.insert_before(old, new)
    name = old.outputs[0].name
    old.outputs[0].name = None
    new.outputs[0].name = name
    new.outputs[0].type = old.outputs[0].type
    new.outputs[0].shape = old.outputs[0].shape
    old.outputs[0].replace_all_uses_with(new.outputs[0], replace_graph_outputs=True)
    graph.remove(old, safe=True)


def _scaled_by_scalar(x: ir.Value) -> tuple[ir.Value, ir.Value] | None:
    """(P, s) when x = P * s, s a scalar, and nothing but this BN reads x.

    With batch statistics, BN(s * P) = gamma * (s P - s mean) / sqrt(s^2 var + eps) + beta
    = gamma * sign(s) * (P - mean) / sqrt(var + eps / s^2) + beta, also for s = 0
    (eps / 0 = inf: both sides are beta). Channel collapse leaves such a Mul
    after each one-channel conv it turns into a pooling: folding it costs a few
    scalar ops per distinct s (s^2, eps / s^2, sign(s), and gamma * sign(s)
    per gamma) instead of a pass over the tensor."""
    producer = x.producer()
    if producer is None or producer.op_type != "Mul" or producer.domain not in ("", "ai.onnx"):
        return None
    if x.is_graph_output() or len(x.uses()) != 1:
        return None
    a, b = producer.inputs
    for p, s in ((a, b), (b, a)):
        if s is not None and s.shape is not None and len(s.shape) == 0 and p is not None:
            return p, s
    return None


@dataclasses.dataclass
class _Folded:
    nodes: list[ir.Node]  # to insert before the BN (empty when made before)
    scale: ir.Value
    epsilon: ir.Value


class _GraphConstants:
    """Constants shared by the nodes of one graph."""

    def __init__(self):
        self.nodes: list[ir.Node] = []
        self._values: dict[tuple, ir.Value] = {}
        self._folded: dict[tuple, ir.Value] = {}

    def fold(self, s: ir.Value, eps: ir.Value, scale: ir.Value) -> _Folded:
        """gamma * sign(s) and eps / s^2, one node each per distinct input."""
        nodes: list[ir.Node] = []
        square = self._fold_once(nodes, ("square", s), "Mul", [s, s])
        epsilon = self._fold_once(nodes, ("epsilon", s, eps), "Div", [eps, square])
        sign = self._fold_once(nodes, ("sign", s), "Sign", [s])
        signed_scale = self._fold_once(nodes, ("scale", s, scale), "Mul", [scale, sign])
        return _Folded(nodes, signed_scale, epsilon)

    def _fold_once(self, nodes: list[ir.Node], key: tuple, op_type: str, inputs: list[ir.Value]) -> ir.Value:
        """The value of `key`: made by a new node (appended to `nodes`) the first time only
        (a node made and dropped would still count as a reader of its inputs)."""
        if key not in self._folded:
            nodes.append(node(op_type, inputs))
            self._folded[key] = nodes[-1].outputs[0]
        return self._folded[key]

    def get(self, key: tuple, array: np.ndarray) -> ir.Value:
        if key not in self._values:
            self.nodes.append(constant(array))
            self._values[key] = self.nodes[-1].outputs[0]
        return self._values[key]

    def ints(self, *values: int) -> ir.Value:
        return self.get(("ints", values), np.array(values, dtype=np.int64))

    def scalar(self, value: float, dtype: np.dtype) -> ir.Value:
        return self.get(("scalar", value, np.dtype(dtype).str), np.array(value, dtype=dtype))


def _batch_stat_norm_function(opset: int, dtype: ir.DataType, rank: int | None) -> ir.Function:
    """rank: X's, where known: the statistics then reduce over its spatial
    axes as they are, one node fewer than reshaping X to (N, C, -1) first
    (ONNX Runtime merges the contiguous axes: the same sums, bit for bit)."""
    x = ir.Value(name="X", type=ir.TensorType(dtype))
    scale = ir.Value(name="scale", type=ir.TensorType(dtype))
    bias = ir.Value(name="B", type=ir.TensorType(dtype))
    eps = ir.Value(name="epsilon", type=ir.TensorType(dtype))
    flat_shape = ir.Value(name="flat_shape", type=ir.TensorType(ir.DataType.INT64))  # (0, 0, -1)
    channel_shape = ir.Value(name="channel_shape", type=ir.TensorType(ir.DataType.INT64))  # (-1,)
    shared = _GraphConstants()
    nodes: list[ir.Node] = []

    def add(n: ir.Node) -> ir.Value:
        nodes.append(n)
        return n.outputs[0]

    def reduce_mean(v: ir.Value, axes: list[int]) -> ir.Value:
        if opset >= 18:
            return add(node("ReduceMean", [v, shared.ints(*axes)], keepdims=1))
        return add(node("ReduceMean", [v], axes=axes, keepdims=1))

    spatial = list(range(2, rank)) if rank is not None else [2]

    def mean_over_n_and_space(v: ir.Value) -> ir.Value:
        # space first, then batch: two contiguous reductions run several times
        # faster in ONNX Runtime than one over axes (0, 2), and every sample
        # has the same number of positions, so the mean is the same
        return reduce_mean(reduce_mean(v, spatial), [0])

    x3 = x if rank is not None else add(node("Reshape", [x, flat_shape]))
    mean = mean_over_n_and_space(x3)
    centred = add(node("Sub", [x3, mean]))
    var = mean_over_n_and_space(add(node("Mul", [centred, centred])))
    # epsilon is an input of the function, an attribute of BatchNormalization: added here
    var_eps = add(node("Add", [var, eps]))
    y = add(node("BatchNormalization", [x, scale, bias, add(node("Reshape", [mean, channel_shape])),
                                        add(node("Reshape", [var_eps, channel_shape]))], epsilon=0.0))
    y.name = "Y"
    name = f"BatchStatNorm_{dtype.name}" + (f"_rank{rank}" if rank is not None else "")
    shape_inputs = [channel_shape] if rank is not None else [flat_shape, channel_shape]
    graph = ir.Graph([x, scale, bias, eps, *shape_inputs], [y], nodes=shared.nodes + nodes,
                     opset_imports={"": opset}, name=name)
    return ir.Function(FUNCTION_DOMAIN, name, graph=graph, attributes=[])
