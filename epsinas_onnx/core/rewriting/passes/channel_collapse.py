"""Channel collapse: run the network at the width its constant weights allow.

With one shared constant weight, every output channel of a convolution is the
same sum of its input channels, so all its channels are identical. A tensor
whose C channels fall into G groups of identical channels (multiplicities
m_1..m_G, summing to C) can be carried as G channels: a conv reading it is a
conv over G channels with weight w * m_g, per-channel statistics (batch norm)
are the same within a group, and elementwise ops keep the groups. A Concat of
tensors of different widths makes several groups (NAS-Bench-101); a 1x1
projection after it collapses them back to one.

Collapsing hides the width mismatches ONNX Runtime would refuse at full width
(a conv whose weight expects 5 input channels on a 3-channel input would sum
the 3 and run), so each rule checks the parameter shapes it collapses against
the full widths it knows, and an invalid model is a UserError, as it is
without collapse (`Collapser.require`).

The pass proves uniformity op by op from a table of rules (`collapse_rule`,
keyed by domain, op type and opset range). An op without a rule, or whose rule
cannot prove it (the rule returns a `Decline` saying why), gets its inputs
expanded back to full width (a Gather along the channel axis), so the result
is always the function of the full-width graph; the report says where and why. It runs
after ConstantWeightPass (weights are Expand(w, shape)) and before
BatchStatisticsNormPass (it reads BatchNormalization nodes; their running
statistics are ignored by the batch-statistics rewrite that follows).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import onnx_ir as ir

from epsinas_onnx.core.errors import UserError
from epsinas_onnx.core.rewriting.op_registry import OpRegistry, model_opset
from epsinas_onnx.core.rewriting.passes.build import constant, default_opset, node, subgraphs


# value.meta key (onnx-ir's pass-to-pass metadata, never serialised): the rank
# of a collapsed value, whose shape the pass clears
RANK_META = "epsinas.rank"


@dataclasses.dataclass(frozen=True)
class Groups:
    """Channels (axis 1) of a collapsed tensor: multiplicity of each kept channel."""

    mult: tuple[int, ...]
    spatial_one: bool = False  # all axes after 1 have size 1 (after a global pool)

    @property
    def width(self) -> int:
        return sum(self.mult)

    def index_map(self) -> np.ndarray:
        """For each full channel, the collapsed channel holding its values."""
        return np.repeat(np.arange(len(self.mult)), self.mult).astype(np.int64)


@dataclasses.dataclass
class Uniform:
    """A parameter whose elements are all equal: either the scalar `value`
    (a graph value such as the weight input) or the number `number`."""

    shape: tuple[int, ...] | None  # None: computed at run time, unknown here
    dtype: ir.DataType
    value: ir.Value | None = None
    number: float | None = None


@dataclasses.dataclass
class CollapseReport:
    collapsed_ops: int = 0
    total_ops: int = 0
    expanded: list[str] = dataclasses.field(default_factory=list)  # "op 'name': reason"
    skipped: str | None = None  # why the whole model was left at full width

    def summary(self) -> str:
        if self.skipped:
            return f"channel collapse: not applied ({self.skipped})"
        text = f"channel collapse: {self.collapsed_ops} of {self.total_ops} ops run at reduced width"
        if self.expanded:
            text += f"; expanded to full width at {len(self.expanded)} op(s), first: {self.expanded[0]}"
        return text


@dataclasses.dataclass(frozen=True)
class Decline:
    """A rule's answer when it cannot prove its node channel-uniform: why not.
    The node's inputs are then expanded to full width and the report says why."""

    reason: str


Rule = Callable[["Collapser", ir.Node], "Decline | None"]
# keyed by (domain, op type, opset range): a second rule for an op is refused at import
RULES: OpRegistry[Rule] = OpRegistry("channel-collapse rules")


def collapse_rule(*op_types: str, since: int = 1, until: int | None = None) -> Callable[[Rule], Rule]:
    """Register the rule for these default-domain ops at opsets since..until
    (default: every opset). A rule rewrites the node for collapsed inputs and
    records its outputs' groups (returning None), or returns a Decline to fall back."""
    return RULES.register(*op_types, since=since, until=until)


def _unless_collapsed(c: "Collapser", x: ir.Value, reason: str) -> Decline | None:
    """Nothing to do for a full-width input; a collapsed one is declined for `reason`."""
    return Decline(reason) if x in c.groups else None


class ChannelCollapsePass(ir.passes.InPlacePass):
    def __init__(self, weight_input_name: str):
        super().__init__()
        self.weight_input_name = weight_input_name
        self.report = CollapseReport()

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        if any(subgraphs(n) for n in graph):
            self.report = CollapseReport(skipped="the model has control flow (Scan / Loop / If)")
            return ir.passes.PassResult(model, modified=False)
        collapser = Collapser(graph, self.weight_input_name)
        collapser.run()
        self.report = collapser.report
        return ir.passes.PassResult(model, modified=collapser.report.collapsed_ops > 0)


class Collapser:
    """Walks the graph once, in order, keeping the groups of each collapsed value."""

    def __init__(self, graph: ir.Graph, weight_input_name: str):
        self.graph = graph
        self.weight_input_name = weight_input_name
        self.groups: dict[ir.Value, Groups] = {}
        self.ranks: dict[ir.Value, int] = {}
        self.expanded: dict[ir.Value, ir.Value] = {}
        self.expanded_width: dict[ir.Value, int] = {}  # full width of each value full() made
        self.declared: dict[ir.Value, tuple] = {}  # type and shape before collapsing
        self.report = CollapseReport()
        self._pending: list[ir.Node] = []
        # one node per distinct parameter / constant: the rewritten graph stays
        # small, and so do its serialisation and the session that loads it
        self._shared: dict[tuple, ir.Value] = {}
        self._uniform: dict[ir.Value, Uniform | None] = {}  # uniform()'s answers: parameters do not change
        self.opset = default_opset(graph)
        self.opsets = dict(graph.opset_imports)  # picks each domain's rules

    # ------------------------------------------------------------ walk

    def run(self) -> None:
        for n in list(self.graph):
            if n.op_type == "Constant":
                continue
            self.report.total_ops += 1
            domain_opset = model_opset(self.opsets, n.domain)
            rule = RULES.lookup(n.domain, n.op_type, domain_opset)
            reads_collapsed = any(v in self.groups for v in n.inputs if v is not None)
            if rule is None:
                domain = n.domain or "ai.onnx"
                declined = Decline(f"no collapse rule for {n.op_type} ({domain}, opset {domain_opset})")
            else:
                declined = rule(self, n)
            if declined is None:
                if any(v in self.groups for v in n.outputs):
                    self.report.collapsed_ops += 1
            elif reads_collapsed:
                self.report.expanded.append(f"{n.op_type} {n.name!r}: {declined.reason}")
                for i, v in enumerate(n.inputs):
                    if v in self.groups:
                        n.replace_input_with(i, self.full(v))
            self._flush(before=n)
        for i, v in enumerate(self.graph.outputs):
            if v in self.groups:
                self._expand_graph_output(i, v)

    def _flush(self, before: ir.Node) -> None:
        if self._pending:
            self.graph.insert_before(before, self._pending)
            self._pending = []

    def emit(self, n: ir.Node) -> ir.Value:
        self._pending.append(n)
        return n.outputs[0]

    # ------------------------------------------------------------ values

    def set_groups(self, value: ir.Value, groups: Groups, rank: int | None = None) -> None:
        """Mark `value` collapsed; `rank`: its rank when its declared shape does not say."""
        self.groups[value] = groups
        self.declared.setdefault(value, (value.type, value.shape))
        if value.shape is not None:
            rank = len(value.shape)
        if rank is not None:
            self.ranks[value] = rank
            value.meta[RANK_META] = rank  # for the batch-statistics BN pass, which runs next
        value.shape = None  # its channel dimension no longer matches the declared shape

    def full(self, value: ir.Value) -> ir.Value:
        """The full-width tensor of a collapsed value (cached)."""
        if value not in self.expanded:
            indices = self.emit(constant(self.groups[value].index_map()))
            self.expanded[value] = self.emit(node("Gather", [value, indices], axis=1))
            self.expanded_width[self.expanded[value]] = self.groups[value].width
        return self.expanded[value]

    def regroup(self, value: ir.Value, target: Groups) -> ir.Value:
        """`value` re-expressed with the finer groups `target`."""
        source = self.groups[value]
        if source.mult == target.mult:
            return value
        # each target group lies inside one source group: pick that group
        pick = source.index_map()[np.cumsum((0,) + target.mult[:-1])]
        return self.emit(node("Gather", [value, self.emit(constant(pick.astype(np.int64)))], axis=1))

    def require(self, ok: bool, n: ir.Node, problem: str) -> None:
        """Refuse a model whose full-width graph ONNX Runtime would refuse."""
        if not ok:
            where = repr(n.name) if n.name else f"writing {n.outputs[0].name!r}"
            raise UserError(f"the model is invalid: {n.op_type} {where} {problem} "
                            "(ONNX Runtime refuses it at full width too: see --no-collapse)")

    def width(self, value: ir.Value, axis: int = 1) -> int | None:
        """The full width of `value` along `axis` (channels): its groups' when
        collapsed or expanded back, else its declared dimension where that is
        a number; None where unknown here (ONNX Runtime then checks it, or, on
        a collapsed graph, nobody: a model can hide a mismatch that way)."""
        if value in self.groups:
            return self.groups[value].width if axis == 1 else None
        if value in self.expanded_width:
            return self.expanded_width[value] if axis == 1 else None
        shape = value.shape
        if shape is None or len(shape) < 2:
            return None
        dim = shape[axis]
        return dim if isinstance(dim, int) else None

    def rank(self, value: ir.Value) -> int | None:
        if value.shape is not None:
            return len(value.shape)
        return self.ranks.get(value)

    def uniform(self, value: ir.Value | None) -> Uniform | None:
        """`value` as a parameter with all elements equal, if it provably is
        one: an all-equal constant, the weight scalar, or either of them
        through Expand / Cast / CastLike / Identity (exporters compute zero
        biases that way)."""
        if value is None or value in self.groups:
            return None
        if value not in self._uniform:
            self._uniform[value] = self._find_uniform(value)
        return self._uniform[value]

    def _find_uniform(self, value: ir.Value) -> Uniform | None:
        if self._is_weight_scalar(value):
            return Uniform((), value.dtype or ir.DataType.FLOAT, value=value)
        array = constant_array(value)
        if array is not None:
            flat = array.reshape(-1)
            if flat.size and np.all(flat == flat[0]):
                return Uniform(tuple(array.shape), ir.DataType.from_numpy(array.dtype), number=float(flat[0]))
            return None
        producer = value.producer()
        if producer is None or producer.op_type not in ("Expand", "Cast", "CastLike", "Identity"):
            return None
        inner = self.uniform(producer.inputs[0])
        if inner is None:
            return None
        dtype = value.dtype or inner.dtype
        if producer.op_type == "Expand":
            shape_array = constant_array(producer.inputs[1])
            if shape_array is None:
                shape = None
            else:
                shape = tuple(int(d) for d in np.broadcast_shapes(inner.shape or (), tuple(int(d) for d in shape_array)))
            return Uniform(shape, dtype, inner.value, inner.number)
        if inner.value is not None and producer.op_type != "Identity":
            return None  # a cast of the weight itself: not worth a rule
        return Uniform(inner.shape, dtype, inner.value, inner.number)

    def _is_weight_scalar(self, value: ir.Value) -> bool:
        if value.name == self.weight_input_name and value.is_graph_input():
            return True
        producer = value.producer()
        return producer is not None and producer.op_type == "Cast" and self._is_weight_scalar(producer.inputs[0])

    def parameter(self, param: Uniform, factors: np.ndarray) -> ir.Value:
        """A parameter tensor equal to the uniform value times `factors`
        (elementwise); its static shape is set where the parameter's is known."""
        dtype = param.dtype.numpy()
        factors = np.asarray(factors, dtype=np.float64)
        key = ("parameter", param.value if param.value is not None else param.number, dtype.str,
               factors.shape, factors.tobytes())
        if key in self._shared:
            return self._shared[key]
        if param.value is None:
            value = self.emit(constant((param.number * factors).astype(dtype)))
        else:
            value = self.emit(node("Mul", [param.value, self.shared_constant(factors.astype(dtype))]))
            value.dtype = param.dtype
            known = param.value.shape
            if known is not None and known.is_static():
                value.shape = ir.Shape(np.broadcast_shapes(tuple(known.numpy()), factors.shape))
        self._shared[key] = value
        return value

    def channel_sum(self, value: ir.Value) -> ir.Value:
        """ReduceSum over the channel axis, keeping it (one node per value)."""
        key = ("channel_sum", value)
        if key not in self._shared:
            if self.opset >= 13:
                total = node("ReduceSum", [value, self.shared_constant(np.array([1], dtype=np.int64))], keepdims=1)
            else:
                total = node("ReduceSum", [value], axes=[1], keepdims=1)
            self._shared[key] = self.emit(total)
        return self._shared[key]

    def shared_constant(self, array: np.ndarray) -> ir.Value:
        """A Constant node's output, one per distinct array."""
        key = ("constant", array.dtype.str, array.shape, array.tobytes())
        if key not in self._shared:
            self._shared[key] = self.emit(constant(array))
        return self._shared[key]

    def _expand_graph_output(self, index: int, value: ir.Value) -> None:
        full = self.full(value)
        self.graph.extend(self._pending)
        self._pending = []
        name = value.name
        value.name = f"{name}__collapsed"
        full.name = name
        full.type, full.shape = self.declared[value]
        self.graph.outputs[index] = full


def constant_array(value: ir.Value) -> np.ndarray | None:
    """The numpy value of an initializer or Constant-node output, also through
    the Reshape / Identity / Cast of constants that exporters emit for axes
    and shapes; else None."""
    if value.const_value is not None:
        return value.const_value.numpy()
    producer = value.producer()
    if producer is None:
        return None
    if producer.op_type == "Constant" and "value" in producer.attributes:
        return producer.attributes["value"].value.numpy()
    if producer.op_type == "Identity":
        return constant_array(producer.inputs[0])
    if producer.op_type == "Cast":
        array = constant_array(producer.inputs[0])
        to = ir.DataType(producer.attributes["to"].as_int())
        return None if array is None else array.astype(to.numpy())
    if producer.op_type == "Reshape":
        data, shape = (constant_array(v) for v in producer.inputs)
        if data is None or shape is None or (0 in shape and not int_attr(producer, "allowzero", 0)):
            return None
        return data.reshape([int(d) for d in shape])
    return None


def int_attr(n: ir.Node, name: str, default: int) -> int:
    return n.attributes[name].as_int() if name in n.attributes else default


# ------------------------------------------------------------ rules


@collapse_rule(
    "Relu", "LeakyRelu", "Sigmoid", "Tanh", "Elu", "Selu", "Celu", "HardSigmoid", "HardSwish", "Softplus",
    "Softsign", "Gelu", "Erf", "Identity", "Neg", "Abs", "Exp", "Log", "Sqrt", "Reciprocal", "Sin", "Cos",
    "AveragePool", "MaxPool", "LpPool", "Clip", "Dropout", "Cast",
)
def _channelwise(c: Collapser, n: ir.Node) -> Decline | None:
    """Ops that act on each channel alone (input 0), other inputs scalars."""
    x = n.inputs[0]
    if x not in c.groups:
        return None  # nothing to do
    if any(v in c.groups for v in n.inputs[1:] if v is not None):
        return Decline(f"{n.op_type} reads a collapsed tensor in an input after the first")
    if any(out.uses() or out.is_graph_output() for out in n.outputs[1:]):
        return Decline(f"{n.op_type} has a second output (MaxPool indices, Dropout mask) in use: channel positions matter")
    c.set_groups(n.outputs[0], c.groups[x], c.rank(x))
    return None


@collapse_rule("CastLike")
def _cast_like(c: Collapser, n: ir.Node) -> Decline | None:
    """Input 1 gives only its type, so its width does not matter."""
    x = n.inputs[0]
    if x in c.groups:
        c.set_groups(n.outputs[0], c.groups[x], c.rank(x))
    return None


@collapse_rule("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(c: Collapser, n: ir.Node) -> Decline | None:
    x = n.inputs[0]
    if x in c.groups:
        c.set_groups(n.outputs[0], dataclasses.replace(c.groups[x], spatial_one=True), c.rank(x))
    return None


@collapse_rule("ReduceMean", "ReduceMax")
def _spatial_reduce(c: Collapser, n: ir.Node) -> Decline | None:
    x = n.inputs[0]
    if x not in c.groups:
        return None
    rank = c.rank(x)
    axes = _axes(n)
    keepdims = int_attr(n, "keepdims", 1)
    if rank is None or axes is None or not keepdims:
        return Decline(f"{n.op_type} with its rank or axes unknown here, or keepdims=0")
    axes = {a % rank for a in axes}
    if 0 in axes or 1 in axes or axes != set(range(2, rank)):
        return Decline(f"{n.op_type} over axes {sorted(axes)}: only a reduction over every spatial axis keeps the channels")
    c.set_groups(n.outputs[0], dataclasses.replace(c.groups[x], spatial_one=True), rank)
    return None


def _axes(n: ir.Node) -> list[int] | None:
    if "axes" in n.attributes:
        return list(n.attributes["axes"].as_ints())
    if len(n.inputs) > 1 and n.inputs[1] is not None:
        array = constant_array(n.inputs[1])
        return None if array is None else [int(a) for a in array.reshape(-1)]
    return None


@collapse_rule("Flatten")
def _flatten(c: Collapser, n: ir.Node) -> Decline | None:
    x = n.inputs[0]
    if x not in c.groups:
        return None
    axis = int_attr(n, "axis", 1)
    if axis != 1 or not c.groups[x].spatial_one:
        return Decline(f"Flatten at axis {axis} of a tensor whose spatial axes are not all 1")
    c.set_groups(n.outputs[0], dataclasses.replace(c.groups[x], spatial_one=False), 2)
    return None


@collapse_rule("Reshape")
def _reshape(c: Collapser, n: ir.Node) -> Decline | None:
    """(N, C, 1, 1) -> (N, C), the flatten before a classifier, however the
    target shape was computed: only its rank-2, channels-last form matters."""
    x = n.inputs[0]
    if x not in c.groups:
        return None
    groups = c.groups[x]
    target = n.inputs[1]
    shape = constant_array(target)
    # the target must keep the batch: (?, C) does, as N * C values make N rows of C
    rank_two = shape is not None and shape.shape == (2,) and (
        int(shape[1]) == groups.width or (int(shape[0]) == 0 and int(shape[1]) == -1)
    )
    if shape is None and target.producer() is not None and target.producer().op_type == "Concat":
        # dynamic batch: Concat(batch, [C])
        last = constant_array(target.producer().inputs[-1])
        rank_two = len(target.producer().inputs) == 2 and last is not None and last.shape == (1,) and int(last[0]) == groups.width
    if not (groups.spatial_one and rank_two):
        return Decline("Reshape to a shape other than (N, C) of an (N, C, 1, ..., 1) tensor")
    n.replace_input_with(1, c.emit(constant(np.array([0, -1], dtype=np.int64))))
    n.attributes["allowzero"] = ir.AttrInt64("allowzero", 0)
    c.set_groups(n.outputs[0], dataclasses.replace(groups, spatial_one=False), 2)
    return None


@collapse_rule("Add", "Sub", "Mul", "Div", "Sum", "Max", "Min", "Mean")
def _elementwise(c: Collapser, n: ir.Node) -> Decline | None:
    collapsed = [v for v in n.inputs if v in c.groups]
    if not collapsed:
        return None
    others = [v for v in n.inputs if v not in c.groups]
    scalars = {}
    rank = c.rank(collapsed[0])
    for v in others:
        param = c.uniform(v)
        if param is None or param.shape is None or not _broadcasts_per_channel(param.shape, rank, c.groups[collapsed[0]].width):
            return Decline(f"{n.op_type} with an operand that is neither collapsed nor one value broadcast per channel "
                           "(a full-width tensor, a per-channel constant, or a broadcast that grows the output)")
        scalars[v] = param
    target = _common_refinement([c.groups[v] for v in collapsed])
    if target is None:
        return Decline(f"{n.op_type} of collapsed tensors of different widths (broadcasting over channels)")
    for i, v in enumerate(n.inputs):
        if v in c.groups:
            n.replace_input_with(i, c.regroup(v, target))
        elif v is not None:
            # all elements equal: the scalar broadcasts like the tensor did
            param = scalars[v]
            n.replace_input_with(i, c.parameter(dataclasses.replace(param, shape=()), np.array(1.0)))
    c.set_groups(n.outputs[0], target, rank)
    return None


def _broadcasts_per_channel(shape: tuple[int, ...], rank: int | None, width: int) -> bool:
    """Whether a constant of `shape`, broadcast against a tensor of `rank` with
    `width` channels, leaves the tensor's shape alone: every dim is 1 except,
    possibly, the one that lines up with the channel axis."""
    if rank is None or len(shape) > rank:
        return False
    channel_index = len(shape) - (rank - 1)  # numpy broadcasting aligns from the right
    return all(d == 1 or (i == channel_index and d == width) for i, d in enumerate(shape))


def _common_refinement(groups: list[Groups]) -> Groups | None:
    if all(g == groups[0] for g in groups[1:]):  # the common case, without the cuts
        return groups[0]
    width = groups[0].width
    if any(g.width != width for g in groups):
        return None  # broadcasting over channels: leave it to full width
    cuts = sorted(set().union(*(set(np.cumsum(g.mult).tolist()) for g in groups)) | {0})
    spatial_one = all(g.spatial_one for g in groups)
    return Groups(tuple(int(b - a) for a, b in zip(cuts, cuts[1:])), spatial_one)


@collapse_rule("Concat")
def _concat(c: Collapser, n: ir.Node) -> Decline | None:
    if not any(v in c.groups for v in n.inputs):
        return None
    if not all(v in c.groups for v in n.inputs):
        return Decline("Concat of collapsed and full-width inputs")
    if n.attributes["axis"].as_int() != 1:
        return Decline(f"Concat along axis {n.attributes['axis'].as_int()}, not the channels")
    parts = [c.groups[v] for v in n.inputs]
    c.set_groups(n.outputs[0], Groups(sum((g.mult for g in parts), ()), all(g.spatial_one for g in parts)), c.rank(n.inputs[0]))
    return None


@collapse_rule("Slice")
def _slice(c: Collapser, n: ir.Node) -> Decline | None:
    """Contiguous channel slices, as NAS-Bench-101 cuts a projection's extra
    channels; and slices of the spatial axes alone (any steps), which keep
    every channel, as TransNAS-Bench-101's FactorizedReduce shifts a map by a pixel."""
    x = n.inputs[0]
    if x not in c.groups:
        return None
    starts, ends, axes, steps = (constant_array(v) if v is not None else None for v in (list(n.inputs[1:]) + [None] * 3)[:4])
    if starts is None or ends is None:
        return Decline("Slice with starts or ends computed at run time")
    axes = np.arange(len(starts)) if axes is None else axes
    rank = c.rank(x)
    if rank is not None and all(2 <= a % rank for a in axes) and all(-rank <= a < rank for a in axes):
        c.set_groups(n.outputs[0], c.groups[x], rank)
        return None
    if steps is not None and np.any(steps != 1):
        return Decline("Slice with a step other than 1")
    if len(axes) != 1 or not (axes[0] == 1 or (rank is not None and axes[0] % rank == 1)):
        return Decline("Slice along an axis other than the channels (not worth a rule)")
    groups = c.groups[x]
    start, end = (int(np.clip(v[0] if v[0] >= 0 else v[0] + groups.width, 0, groups.width)) for v in (starts, ends))
    bounds = np.concatenate([[0], np.cumsum(groups.mult)])
    kept = [(g, min(end, bounds[g + 1]) - max(start, bounds[g])) for g in range(len(groups.mult))]
    kept = [(g, m) for g, m in kept if m > 0]
    if not kept:
        return Decline("Slice that keeps no channel")
    first, last = kept[0][0], kept[-1][0]
    n.replace_input_with(1, c.emit(constant(np.array([first], dtype=np.int64))))
    n.replace_input_with(2, c.emit(constant(np.array([last + 1], dtype=np.int64))))
    c.set_groups(n.outputs[0], Groups(tuple(int(m) for _, m in kept), groups.spatial_one), rank)
    return None


@collapse_rule("Conv")
def _conv(c: Collapser, n: ir.Node) -> Decline | None:
    x, w = n.inputs[0], n.inputs[1]
    bias = n.inputs[2] if len(n.inputs) > 2 else None
    weight = c.uniform(w)
    if weight is None or weight.shape is None or len(weight.shape) < 3:
        # an ordinary conv on full-width input stays as it is
        return _unless_collapsed(c, x, "Conv whose weight is not one value throughout, with a known shape")
    group = int_attr(n, "group", 1)
    c_out, per_group, kernel = weight.shape[0], weight.shape[1], weight.shape[2:]
    bias_param = c.uniform(bias) if bias is not None else None
    if bias is not None and bias_param is None:
        return _unless_collapsed(c, x, "Conv whose bias is not one value throughout")
    in_width = c.width(x)
    c.require(in_width is None or in_width == per_group * group, n,
              f"has a weight for {per_group * group} input channels ({per_group} x group {group}) on an input of {in_width}")
    c.require(bias_param is None or bias_param.shape is None or bias_param.shape == (c_out,), n,
              f"has a bias of shape {bias_param and bias_param.shape} for {c_out} output channels")
    if group == 1:
        in_mult = c.groups[x].mult if x in c.groups else (1,) * per_group
        if len(in_mult) > 1 and len(set(in_mult)) == 1:
            # every input channel has the same weight: summing the channels first
            # leaves a one-channel conv (the stem's 3 -> 1 conv: 4x less time)
            n.replace_input_with(0, c.channel_sum(x))
            in_mult = in_mult[:1]
        factors = np.array(in_mult, dtype=np.float64).reshape((1, -1) + (1,) * len(kernel))
        factors = np.broadcast_to(factors, (1, len(in_mult)) + tuple(kernel))
        out = Groups((c_out,))
    elif x in c.groups and per_group == 1 and group == c_out == c.groups[x].width:
        # depthwise: each output channel reads its own input channel
        in_groups = c.groups[x]
        factors = np.ones((len(in_groups.mult), 1) + tuple(kernel))
        n.attributes["group"] = ir.AttrInt64("group", len(in_groups.mult))
        out = Groups(in_groups.mult)
    else:
        return _unless_collapsed(c, x, f"Conv with group={group} mixes channels in groups (only group 1 and depthwise collapse)")
    if group == 1 and len(in_mult) == 1 and _pool_instead(c, n, weight, in_mult[0], bias_param, kernel):
        return None
    n.replace_input_with(1, c.parameter(weight, factors))
    if bias_param is not None:
        n.replace_input_with(2, c.parameter(bias_param, np.ones(factors.shape[0])))
    if "kernel_shape" not in n.attributes:
        n.attributes["kernel_shape"] = ir.AttrInt64s("kernel_shape", list(kernel))
    c.set_groups(n.outputs[0], out, 2 + len(kernel))
    return None


def _pool_instead(c: Collapser, n: ir.Node, weight: Uniform, mult: int, bias: Uniform | None, kernel) -> bool:
    """A one-channel conv whose kernel is one number v is v * k times the
    average over its window (padding counted, k the window's size): as
    AveragePool(x) * (v * k). ONNX Runtime's pooling kernel takes half the time
    of its one-channel conv, a 1x1 conv is then just the Mul, and the Mul
    usually folds into the batch-statistics BN that follows (BatchStatisticsNormPass)."""
    if bias is not None and bias.number != 0.0:
        return False
    if "dilations" in n.attributes and any(d != 1 for d in n.attributes["dilations"].as_ints()):
        return False  # AveragePool has dilations from opset 19 only
    if "auto_pad" in n.attributes and n.attributes["auto_pad"].as_string() not in ("", "NOTSET"):
        return False
    if n.outputs[0].is_graph_output():
        return False
    x = n.inputs[0]
    strides = list(n.attributes["strides"].as_ints()) if "strides" in n.attributes else [1] * len(kernel)
    pads = list(n.attributes["pads"].as_ints()) if "pads" in n.attributes else [0] * (2 * len(kernel))
    if any(p >= k for p, k in zip(pads, list(kernel) * 2)):
        return False  # a pool's padding must be smaller than its window (a padded 1x1 conv stays a conv)
    if any(k != 1 for k in kernel) or any(s != 1 for s in strides) or any(pads):
        x = c.emit(node("AveragePool", [x], kernel_shape=list(kernel), strides=strides, pads=pads, count_include_pad=1))
    scale = c.parameter(dataclasses.replace(weight, shape=()), np.array(float(mult * np.prod(kernel))))
    # the conv node itself becomes the Mul: its output and readers stay as they are
    n.op_type = "Mul"
    n.attributes.clear()
    n.resize_inputs(2)
    n.replace_input_with(0, x)
    n.replace_input_with(1, scale)
    c.set_groups(n.outputs[0], Groups((int(weight.shape[0]),)), 2 + len(kernel))
    return True


@collapse_rule("BatchNormalization")
def _batch_norm(c: Collapser, n: ir.Node) -> Decline | None:
    x = n.inputs[0]
    if x not in c.groups:
        return None
    scale, bias = c.uniform(n.inputs[1]), c.uniform(n.inputs[2])
    if scale is None or bias is None or any(o.uses() or o.is_graph_output() for o in n.outputs[1:]):
        return Decline("BatchNormalization whose scale or bias is not one value throughout, or whose running-statistics outputs are read")
    channels = c.groups[x].width
    for i, what in enumerate(("scale", "B", "input_mean", "input_var"), start=1):
        shape = _declared_shape(c, n.inputs[i])
        c.require(shape is None or shape == (channels,), n, f"has {what} of shape {shape and list(shape)} for an input of {channels} channels")
    width = len(c.groups[x].mult)
    n.replace_input_with(1, c.parameter(scale, np.ones(width)))
    n.replace_input_with(2, c.parameter(bias, np.ones(width)))
    # running statistics: ignored by the batch-statistics rewrite that follows
    n.replace_input_with(3, c.shared_constant(np.zeros(width, dtype=scale.dtype.numpy())))
    n.replace_input_with(4, c.shared_constant(np.ones(width, dtype=scale.dtype.numpy())))
    c.set_groups(n.outputs[0], c.groups[x], c.rank(x))
    return None


@collapse_rule("Gemm")
def _gemm(c: Collapser, n: ir.Node) -> Decline | None:
    a, b = n.inputs[0], n.inputs[1]
    bias = n.inputs[2] if len(n.inputs) > 2 else None
    trans_a, trans_b = int_attr(n, "transA", 0), int_attr(n, "transB", 0)
    weight = c.uniform(b)
    bias_param = c.uniform(bias) if bias is not None else None
    if trans_a:
        return _unless_collapsed(c, a, "Gemm with transA=1 (its input's channels are not its columns)")
    if weight is None or weight.shape is None or len(weight.shape) != 2:
        return _unless_collapsed(c, a, f"Gemm (transB={trans_b}) whose weight B is not one value throughout, with a known 2-d shape")
    if bias is not None and bias_param is None:
        return _unless_collapsed(c, a, "Gemm whose bias C is not one value throughout")
    c_out = weight.shape[0] if trans_b else weight.shape[1]
    c_in = weight.shape[1] if trans_b else weight.shape[0]
    in_width = c.width(a)
    c.require(in_width is None or in_width == c_in, n, f"has a weight for {c_in} inputs on an input of {in_width}")
    c.require(bias_param is None or bias_param.shape is None or (bias_param.shape[-1:] or (1,))[0] in (1, c_out), n,
              f"has a bias of shape {bias_param and bias_param.shape} for {c_out} outputs")
    in_mult = c.groups[a].mult if a in c.groups else (1,) * c_in
    factors = np.array(in_mult, dtype=np.float64)
    factors = factors.reshape(1, -1) if trans_b else factors.reshape(-1, 1)
    n.replace_input_with(1, c.parameter(weight, factors))
    if bias_param is not None:
        n.replace_input_with(2, c.parameter(bias_param, np.ones(1)))
    c.set_groups(n.outputs[0], Groups((c_out,)), 2)
    return None


@collapse_rule("MatMul")
def _matmul(c: Collapser, n: ir.Node) -> Decline | None:
    a, b = n.inputs
    weight = c.uniform(b)
    if weight is None or weight.shape is None or len(weight.shape) != 2 or c.rank(a) != 2:
        return Decline("MatMul whose second input is not one value throughout with a known 2-d shape, or whose first input is not of rank 2") if (
            a in c.groups or b in c.groups) else None
    c_in, c_out = weight.shape
    in_width = c.width(a, axis=-1) if a not in c.groups else c.width(a)
    c.require(in_width is None or in_width == c_in, n, f"has a weight for {c_in} inputs on an input of {in_width}")
    in_mult = c.groups[a].mult if a in c.groups else (1,) * c_in
    n.replace_input_with(1, c.parameter(weight, np.array(in_mult, dtype=np.float64).reshape(-1, 1)))
    c.set_groups(n.outputs[0], Groups((c_out,)), 2)
    return None


def _declared_shape(c: Collapser, value: ir.Value | None) -> tuple[int, ...] | None:
    """The static shape of a parameter input, if known here."""
    if value is None:
        return None
    array = constant_array(value)
    if array is not None:
        return tuple(array.shape)
    param = c.uniform(value)
    if param is not None and param.shape is not None:
        return tuple(param.shape)
    shape = value.shape
    if shape is not None and shape.is_static():
        return tuple(int(d) for d in shape)
    return None
