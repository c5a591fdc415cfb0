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
keyed by domain, op type and opset range). A rule has two parts, as
onnxscript's rewrite rules do: `check` decides and changes nothing (it returns
a plan, a `Decline` saying why the node cannot run collapsed, or None when
nothing reaching the node is collapsed and the node starts no collapse), and
`rewrite` only builds what the plan says. An op without a rule, or whose rule
declines, gets its inputs expanded back to full width (a Gather along the
channel axis), so the result is always the function of the full-width graph;
the report says where and why. It runs after ConstantWeightPass (weights are
Expand(w, shape)) and before BatchStatisticsNormPass (it reads
BatchNormalization nodes; their running statistics are ignored by the
batch-statistics rewrite that follows).

The rules, one per group of ops (tests/test_collapse_rules.py has a test for each):
- ChannelwiseRule (Relu, pools, Clip, Cast, ...): output groups = input groups.
- CastLikeRule: likewise; input 1 gives only a type.
- GlobalPoolRule, SpatialReduceRule: the spatial axes become 1.
- FlattenRule, ReshapeRule: (N, C, 1, ..., 1) -> (N, C).
- ElementwiseRule (Add, Mul, Sum, ...): collapsed inputs regrouped to their
  common refinement, other inputs one value broadcast per channel.
- ConcatRule: along the channels, the groups side by side.
- SliceRule: a contiguous channel slice keeps the groups it overlaps.
- ConvRule: group 1 (from full width too: it starts a collapse) and depthwise;
  a one-channel conv with a one-number kernel becomes AveragePool times a scalar.
- BatchNormRule: one-value scale and bias, one parameter per group.
- GemmRule, MatMulRule: the weight scaled by the input multiplicities.
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
UNIFORM_THROUGH = frozenset({"Expand", "Cast", "CastLike", "Identity"})  # ops a uniform parameter stays uniform through


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


@dataclasses.dataclass(frozen=True)
class OutputGroups:
    """A plan that is only the output's groups: the node runs as it is on its
    collapsed input (the default rewrite), or with a new constant input (Reshape)."""

    groups: Groups
    rank: int | None  # the output's rank, where known


class CollapseRule:
    """One rule of the table: `check` decides, `rewrite` builds.

    check(c, n) reads node `n` and what the collapser `c` knows, and changes
    nothing in the graph; it returns None (nothing to collapse here), a
    Decline (why `n` cannot run collapsed), or a plan: what rewrite needs.
    It raises UserError (`c.require`) for a model ONNX Runtime would refuse.
    rewrite(c, n, plan) rewires `n` for its collapsed inputs, building the
    parameters it needs, and records its outputs' groups. The default is for
    ops that run as they are on collapsed inputs (plan: `OutputGroups`)."""

    @staticmethod
    def check(c: Collapser, n: ir.Node) -> object | Decline | None:
        raise NotImplementedError

    @staticmethod
    def rewrite(c: Collapser, n: ir.Node, plan: OutputGroups) -> None:
        c.set_groups(n.outputs[0], plan.groups, plan.rank)


# keyed by (domain, op type, opset range): a second rule for an op is refused at import
RULES: OpRegistry[type[CollapseRule]] = OpRegistry("channel-collapse rules")


def collapse_rule(*op_types: str, since: int = 1, until: int | None = None) -> Callable[[type], type]:
    """Register the decorated CollapseRule subclass for these default-domain
    ops at opsets since..until (default: every opset)."""
    return RULES.register(*op_types, since=since, until=until)


def _unless_collapsed(c: Collapser, x: ir.Value, reason: str) -> Decline | None:
    """Nothing to do for a full-width input; a collapsed one is declined for `reason`."""
    return Decline(reason) if c.is_collapsed(x) else None


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


@dataclasses.dataclass
class Collapsed:
    """What the walk knows of one collapsed value."""

    groups: Groups
    shape: ir.Shape | None  # its declared (full-width) shape, which the value no longer carries
    full: ir.Value | None = None  # its full-width tensor, once a reader needed it (Collapser.full)


@dataclasses.dataclass
class CollapseState:
    """What the walk remembers from one node to the next."""

    collapsed: dict[ir.Value, Collapsed] = dataclasses.field(default_factory=dict)
    # the nodes built for the node being visited, inserted before it
    pending: list[ir.Node] = dataclasses.field(default_factory=list)
    # one node per distinct parameter, constant or channel sum: the rewritten
    # graph stays small, and so do its serialisation and the session that loads it
    built: dict[tuple, ir.Value] = dataclasses.field(default_factory=dict)
    # Collapser.uniform's answers: parameters do not change during the walk
    uniform: dict[ir.Value, Uniform | None] = dataclasses.field(default_factory=dict)
    # constant_array's, for the same reason
    arrays: dict[ir.Value, np.ndarray | None] = dataclasses.field(default_factory=dict)


class Collapser:
    """Walks the graph once, in order: each node's rule checks it, then
    rewrites it or declines, and the walk expands a declined node's collapsed
    inputs. The rules read and build through its methods."""

    def __init__(self, graph: ir.Graph, weight_input_name: str):
        self.graph = graph
        self.weight_input_name = weight_input_name
        self.state = CollapseState()
        self.report = CollapseReport()

    # ------------------------------------------------------------ walk

    def run(self) -> None:
        for n in list(self.graph):
            if n.op_type == "Constant":
                continue
            self.report.total_ops += 1
            self.visit(n)
            self._flush(before=n)
        for i, v in enumerate(self.graph.outputs):
            if self.is_collapsed(v):
                self._expand_graph_output(i, v)

    def visit(self, n: ir.Node) -> None:
        """Collapse `n` by its rule, or bring its collapsed inputs back to full width."""
        opset = model_opset(self.graph.opset_imports, n.domain)
        rule = RULES.lookup(n.domain, n.op_type, opset)
        if rule is None:
            plan = Decline(f"no collapse rule for {n.op_type} ({n.domain or 'ai.onnx'}, opset {opset})")
        else:
            plan = rule.check(self, n)
        if isinstance(plan, Decline):
            self._expand_inputs(n, plan)
        elif plan is not None:
            rule.rewrite(self, n, plan)
            self.report.collapsed_ops += 1

    def _expand_inputs(self, n: ir.Node, declined: Decline) -> None:
        if not any(self.is_collapsed(v) for v in n.inputs):
            return  # nothing collapsed reaches the node: it runs as it is
        self.report.expanded.append(f"{n.op_type} {n.name!r}: {declined.reason}")
        for i, v in enumerate(n.inputs):
            if self.is_collapsed(v):
                n.replace_input_with(i, self.full(v))

    def _flush(self, before: ir.Node) -> None:
        if self.state.pending:
            self.graph.insert_before(before, self.state.pending)
            self.state.pending = []

    def emit(self, n: ir.Node) -> ir.Value:
        self.state.pending.append(n)
        return n.outputs[0]

    def _expand_graph_output(self, index: int, value: ir.Value) -> None:
        full = self.full(value)
        self.graph.extend(self.state.pending)
        self.state.pending = []
        name = value.name
        value.name = f"{name}__collapsed"
        full.name = name
        full.type, full.shape = value.type, self.state.collapsed[value].shape
        self.graph.outputs[index] = full

    # ------------------------------------------------------------ values

    def is_collapsed(self, value: ir.Value | None) -> bool:
        return value in self.state.collapsed

    def groups(self, value: ir.Value | None) -> Groups | None:
        """The groups of a collapsed value; None for a full-width one."""
        record = self.state.collapsed.get(value)
        return None if record is None else record.groups

    def set_groups(self, value: ir.Value, groups: Groups, rank: int | None = None) -> None:
        """Mark `value` collapsed; `rank`: its rank when its declared shape does not say."""
        self.state.collapsed[value] = Collapsed(groups, value.shape)
        if value.shape is not None:
            rank = len(value.shape)
        if rank is not None:
            value.meta[RANK_META] = rank  # read by rank(), and by the batch-statistics BN pass, which runs next
        value.shape = None  # its channel dimension no longer matches the declared shape

    def full(self, value: ir.Value) -> ir.Value:
        """The full-width tensor of a collapsed value (made once)."""
        record = self.state.collapsed[value]
        if record.full is None:
            indices = self.emit(constant(record.groups.index_map()))
            record.full = self.emit(node("Gather", [value, indices], axis=1))
        return record.full

    def _expanded_from(self, value: ir.Value) -> Collapsed | None:
        """The collapsed value whose full-width tensor `value` is, if it is one."""
        producer = value.producer()
        if producer is None or producer.op_type != "Gather":
            return None
        record = self.state.collapsed.get(producer.inputs[0])
        return record if record is not None and record.full is value else None

    def regroup(self, value: ir.Value, target: Groups) -> ir.Value:
        """`value` re-expressed with the finer groups `target`."""
        source = self.groups(value)
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
        record = self.state.collapsed.get(value) or self._expanded_from(value)
        if record is not None:
            return record.groups.width if axis == 1 else None
        shape = value.shape
        if shape is None or len(shape) < 2:
            return None
        dim = shape[axis]
        return dim if isinstance(dim, int) else None

    def rank(self, value: ir.Value) -> int | None:
        if value.shape is not None:
            return len(value.shape)
        return value.meta.get(RANK_META)

    def uniform(self, value: ir.Value | None) -> Uniform | None:
        """`value` as a parameter with all elements equal, if it provably is
        one: an all-equal constant, the weight scalar, or either of them
        through Expand / Cast / CastLike / Identity (exporters compute zero
        biases that way). The chain below `value` is found first, deepest
        first, so that each step finds its input's answer kept: no recursion
        however long a file makes the chain."""
        if value is None or self.is_collapsed(value):
            return None
        chain, current = [], value
        while current is not None and current not in self.state.uniform and not self.is_collapsed(current):
            chain.append(current)
            producer = current.producer()
            if producer is None or producer.op_type not in UNIFORM_THROUGH or not producer.inputs:
                break
            current = producer.inputs[0]
        for current in reversed(chain):
            self.state.uniform[current] = self._find_uniform(current)
        return self.state.uniform[value]

    def _find_uniform(self, value: ir.Value) -> Uniform | None:
        if self._is_weight_scalar(value):
            return Uniform((), value.dtype or ir.DataType.FLOAT, value=value)
        array = constant_array(value, self.state.arrays)
        if array is not None:
            flat = array.reshape(-1)
            if flat.size and np.all(flat == flat[0]):
                return Uniform(tuple(array.shape), ir.DataType.from_numpy(array.dtype), number=float(flat[0]))
            return None
        producer = value.producer()
        if producer is None or producer.op_type not in UNIFORM_THROUGH:
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
        """The weight input, or it through any number of Casts."""
        while value is not None:
            if value.name == self.weight_input_name and value.is_graph_input():
                return True
            producer = value.producer()
            if producer is None or producer.op_type != "Cast" or not producer.inputs:
                return False
            value = producer.inputs[0]
        return False

    def parameter(self, param: Uniform, factors: np.ndarray) -> ir.Value:
        """A parameter tensor equal to the uniform value times `factors`
        (elementwise); its static shape is set where the parameter's is known."""
        dtype = param.dtype.numpy()
        factors = np.asarray(factors, dtype=np.float64)
        key = ("parameter", param.value if param.value is not None else param.number, dtype.str,
               factors.shape, factors.tobytes())
        if key in self.state.built:
            return self.state.built[key]
        if param.value is None:
            value = self.emit(constant((param.number * factors).astype(dtype)))
        else:
            value = self.emit(node("Mul", [param.value, self.shared_constant(factors.astype(dtype))]))
            value.dtype = param.dtype
            known = param.value.shape
            if known is not None and known.is_static():
                value.shape = ir.Shape(np.broadcast_shapes(tuple(known.numpy()), factors.shape))
        self.state.built[key] = value
        return value

    def channel_sum(self, value: ir.Value) -> ir.Value:
        """ReduceSum over the channel axis, keeping it (one node per value)."""
        key = ("channel_sum", value)
        if key not in self.state.built:
            if default_opset(self.graph) >= 13:
                total = node("ReduceSum", [value, self.shared_constant(np.array([1], dtype=np.int64))], keepdims=1)
            else:
                total = node("ReduceSum", [value], axes=[1], keepdims=1)
            self.state.built[key] = self.emit(total)
        return self.state.built[key]

    def shared_constant(self, array: np.ndarray) -> ir.Value:
        """A Constant node's output, one per distinct array."""
        key = ("constant", array.dtype.str, array.shape, array.tobytes())
        if key not in self.state.built:
            self.state.built[key] = self.emit(constant(array))
        return self.state.built[key]


def constant_array(value: ir.Value, memo: dict | None = None) -> np.ndarray | None:
    """The numpy value of an initializer or Constant-node output, also through
    the Reshape / Identity / Cast of constants that exporters emit for axes
    and shapes; else None. Evaluated with a stack, not recursion (a file may
    chain any number of such ops); `memo` keeps the values found between calls."""
    done = memo if memo is not None else {}
    stack = [(value, False)]
    while stack:
        current, inputs_done = stack.pop()
        if current in done:
            continue
        inputs = _constant_inputs(current)
        if not inputs_done and any(v not in done for v in inputs):
            stack.append((current, True))
            stack.extend((v, False) for v in inputs if v not in done)
            continue
        done[current] = _constant_step(current, [done[v] for v in inputs])
    return done[value]


def _constant_inputs(value: ir.Value) -> list[ir.Value]:
    """The values constant_array needs first to find `value`'s."""
    producer = value.producer()
    if value.const_value is not None or producer is None:
        return []
    if producer.op_type in ("Identity", "Cast") and producer.inputs and producer.inputs[0] is not None:
        return [producer.inputs[0]]
    if producer.op_type == "Reshape" and len(producer.inputs) == 2 and None not in producer.inputs:
        return list(producer.inputs)
    return []


def _constant_step(value: ir.Value, arrays: list) -> np.ndarray | None:
    """`value`'s constant, given its inputs' (_constant_inputs, in order)."""
    if value.const_value is not None:
        return value.const_value.numpy()
    producer = value.producer()
    if producer is None:
        return None
    if producer.op_type == "Constant" and "value" in producer.attributes:
        return producer.attributes["value"].value.numpy()
    if not arrays or any(a is None for a in arrays):
        return None
    if producer.op_type == "Identity":
        return arrays[0]
    if producer.op_type == "Cast":
        to = ir.DataType(producer.attributes["to"].as_int())
        return arrays[0].astype(to.numpy())
    if producer.op_type == "Reshape":
        data, shape = arrays
        if 0 in shape and not int_attr(producer, "allowzero", 0):
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
class ChannelwiseRule(CollapseRule):
    """Ops that act on each channel alone (input 0), other inputs scalars."""

    @staticmethod
    def check(c: Collapser, n: ir.Node) -> OutputGroups | Decline | None:
        groups = c.groups(n.inputs[0])
        if groups is None:
            return None
        if any(c.is_collapsed(v) for v in n.inputs[1:]):
            return Decline(f"{n.op_type} reads a collapsed tensor in an input after the first")
        if any(out.uses() or out.is_graph_output() for out in n.outputs[1:]):
            return Decline(f"{n.op_type} has a second output (MaxPool indices, Dropout mask) in use: channel positions matter")
        return OutputGroups(groups, c.rank(n.inputs[0]))


@collapse_rule("CastLike")
class CastLikeRule(CollapseRule):
    """Input 1 gives only its type, so its width does not matter."""

    @staticmethod
    def check(c: Collapser, n: ir.Node) -> OutputGroups | None:
        groups = c.groups(n.inputs[0])
        return None if groups is None else OutputGroups(groups, c.rank(n.inputs[0]))


@collapse_rule("GlobalAveragePool", "GlobalMaxPool")
class GlobalPoolRule(CollapseRule):
    """The groups stay; the spatial axes become 1."""

    @staticmethod
    def check(c: Collapser, n: ir.Node) -> OutputGroups | None:
        groups = c.groups(n.inputs[0])
        return None if groups is None else OutputGroups(dataclasses.replace(groups, spatial_one=True), c.rank(n.inputs[0]))


@collapse_rule("ReduceMean", "ReduceMax")
class SpatialReduceRule(CollapseRule):
    """A reduction over every spatial axis, keeping them: a global pool."""

    @staticmethod
    def check(c: Collapser, n: ir.Node) -> OutputGroups | Decline | None:
        x = n.inputs[0]
        groups = c.groups(x)
        if groups is None:
            return None
        rank = c.rank(x)
        axes = _axes(n)
        keepdims = int_attr(n, "keepdims", 1)
        if rank is None or axes is None or not keepdims:
            return Decline(f"{n.op_type} with its rank or axes unknown here, or keepdims=0")
        axes = {a % rank for a in axes}
        if 0 in axes or 1 in axes or axes != set(range(2, rank)):
            return Decline(f"{n.op_type} over axes {sorted(axes)}: only a reduction over every spatial axis keeps the channels")
        return OutputGroups(dataclasses.replace(groups, spatial_one=True), rank)


def _axes(n: ir.Node) -> list[int] | None:
    if "axes" in n.attributes:
        return list(n.attributes["axes"].as_ints())
    if len(n.inputs) > 1 and n.inputs[1] is not None:
        array = constant_array(n.inputs[1])
        return None if array is None else [int(a) for a in array.reshape(-1)]
    return None


@collapse_rule("Flatten")
class FlattenRule(CollapseRule):
    """(N, C, 1, ..., 1) -> (N, C)."""

    @staticmethod
    def check(c: Collapser, n: ir.Node) -> OutputGroups | Decline | None:
        groups = c.groups(n.inputs[0])
        if groups is None:
            return None
        axis = int_attr(n, "axis", 1)
        if axis != 1 or not groups.spatial_one:
            return Decline(f"Flatten at axis {axis} of a tensor whose spatial axes are not all 1")
        return OutputGroups(dataclasses.replace(groups, spatial_one=False), 2)


@collapse_rule("Reshape")
class ReshapeRule(CollapseRule):
    """(N, C, 1, 1) -> (N, C), the flatten before a classifier, however the
    target shape was computed: only its rank-2, channels-last form matters.
    The rewrite reshapes to (0, -1), the collapsed width."""

    @staticmethod
    def check(c: Collapser, n: ir.Node) -> OutputGroups | Decline | None:
        groups = c.groups(n.inputs[0])
        if groups is None:
            return None
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
        return OutputGroups(dataclasses.replace(groups, spatial_one=False), 2)

    @staticmethod
    def rewrite(c: Collapser, n: ir.Node, plan: OutputGroups) -> None:
        n.replace_input_with(1, c.emit(constant(np.array([0, -1], dtype=np.int64))))
        n.attributes["allowzero"] = ir.AttrInt64("allowzero", 0)
        c.set_groups(n.outputs[0], plan.groups, plan.rank)


@dataclasses.dataclass(frozen=True)
class ElementwisePlan:
    groups: Groups  # the common refinement of the collapsed inputs' groups: the output's
    rank: int | None
    scalars: dict[ir.Value, Uniform]  # each other input: one value, broadcast per channel


@collapse_rule("Add", "Sub", "Mul", "Div", "Sum", "Max", "Min", "Mean")
class ElementwiseRule(CollapseRule):
    """Collapsed inputs are regrouped to their common refinement (the same
    width, cut where any of them is cut); every other input must be one value
    that broadcasts per channel, and becomes that value as a scalar."""

    @staticmethod
    def check(c: Collapser, n: ir.Node) -> ElementwisePlan | Decline | None:
        collapsed = [v for v in n.inputs if c.is_collapsed(v)]
        if not collapsed:
            return None
        others = [v for v in n.inputs if not c.is_collapsed(v)]
        scalars = {}
        rank = c.rank(collapsed[0])
        for v in others:
            param = c.uniform(v)
            if param is None or param.shape is None or not _broadcasts_per_channel(param.shape, rank, c.groups(collapsed[0]).width):
                return Decline(f"{n.op_type} with an operand that is neither collapsed nor one value broadcast per channel "
                               "(a full-width tensor, a per-channel constant, or a broadcast that grows the output)")
            scalars[v] = param
        target = _common_refinement([c.groups(v) for v in collapsed])
        if target is None:
            return Decline(f"{n.op_type} of collapsed tensors of different widths (broadcasting over channels)")
        return ElementwisePlan(target, rank, scalars)

    @staticmethod
    def rewrite(c: Collapser, n: ir.Node, plan: ElementwisePlan) -> None:
        for i, v in enumerate(n.inputs):
            if c.is_collapsed(v):
                n.replace_input_with(i, c.regroup(v, plan.groups))
            elif v is not None:
                # all elements equal: the scalar broadcasts like the tensor did
                param = plan.scalars[v]
                n.replace_input_with(i, c.parameter(dataclasses.replace(param, shape=()), np.array(1.0)))
        c.set_groups(n.outputs[0], plan.groups, plan.rank)


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
class ConcatRule(CollapseRule):
    """Collapsed inputs joined along the channels: their groups side by side."""

    @staticmethod
    def check(c: Collapser, n: ir.Node) -> OutputGroups | Decline | None:
        if not any(c.is_collapsed(v) for v in n.inputs):
            return None
        if not all(c.is_collapsed(v) for v in n.inputs):
            return Decline("Concat of collapsed and full-width inputs")
        if n.attributes["axis"].as_int() != 1:
            return Decline(f"Concat along axis {n.attributes['axis'].as_int()}, not the channels")
        parts = [c.groups(v) for v in n.inputs]
        return OutputGroups(Groups(sum((g.mult for g in parts), ()), all(g.spatial_one for g in parts)), c.rank(n.inputs[0]))


@dataclasses.dataclass(frozen=True)
class SlicePlan:
    first: int  # the first and last collapsed channels the slice keeps
    last: int
    groups: Groups  # the output's
    rank: int | None


@collapse_rule("Slice")
class SliceRule(CollapseRule):
    """Contiguous channel slices, as NAS-Bench-101 cuts a projection's extra
    channels: the groups the slice overlaps, each cut to its overlap; and
    slices of the spatial axes alone (any steps), which keep every channel's
    group, as TransNAS-Bench-101's FactorizedReduce shifts a map by a pixel."""

    @staticmethod
    def check(c: Collapser, n: ir.Node) -> SlicePlan | OutputGroups | Decline | None:
        x = n.inputs[0]
        groups = c.groups(x)
        if groups is None:
            return None
        starts, ends, axes, steps = (constant_array(v) if v is not None else None for v in (list(n.inputs[1:]) + [None] * 3)[:4])
        if starts is None or ends is None:
            return Decline("Slice with starts or ends computed at run time")
        axes = np.arange(len(starts)) if axes is None else axes
        rank = c.rank(x)
        if rank is not None and all(-rank <= a < rank and 2 <= a % rank for a in axes):
            return OutputGroups(groups, rank)
        if steps is not None and np.any(steps != 1):
            return Decline("Slice with a step other than 1")
        if len(axes) != 1 or not (axes[0] == 1 or (rank is not None and axes[0] % rank == 1)):
            return Decline("Slice along an axis other than the channels (not worth a rule)")
        start, end = (int(np.clip(v[0] if v[0] >= 0 else v[0] + groups.width, 0, groups.width)) for v in (starts, ends))
        bounds = np.concatenate([[0], np.cumsum(groups.mult)])
        kept = [(g, min(end, bounds[g + 1]) - max(start, bounds[g])) for g in range(len(groups.mult))]
        kept = [(g, m) for g, m in kept if m > 0]
        if not kept:
            return Decline("Slice that keeps no channel")
        return SlicePlan(kept[0][0], kept[-1][0], Groups(tuple(int(m) for _, m in kept), groups.spatial_one), rank)

    @staticmethod
    def rewrite(c: Collapser, n: ir.Node, plan: SlicePlan | OutputGroups) -> None:
        if isinstance(plan, OutputGroups):  # a spatial slice: runs as it is
            c.set_groups(n.outputs[0], plan.groups, plan.rank)
            return
        n.replace_input_with(1, c.emit(constant(np.array([plan.first], dtype=np.int64))))
        n.replace_input_with(2, c.emit(constant(np.array([plan.last + 1], dtype=np.int64))))
        c.set_groups(n.outputs[0], plan.groups, plan.rank)


@dataclasses.dataclass(frozen=True)
class ConvPlan:
    weight: Uniform
    bias: Uniform | None
    factors: np.ndarray  # the collapsed weight, in multiples of the uniform value
    groups: Groups  # the output's
    kernel: tuple[int, ...]
    sum_channels: bool  # the input's channels, all of one multiplicity, are summed first
    depthwise_groups: int | None  # a depthwise conv's group attribute once collapsed
    pool_scale: float | None  # run as AveragePool(x) * (weight * pool_scale) instead (_pools_instead)


@collapse_rule("Conv")
class ConvRule(CollapseRule):
    """Group 1: every output channel is the same sum of the input's groups,
    weighted by their multiplicities (also from a full-width input: the conv
    starts a collapse); depthwise: each group convolved alone."""

    @staticmethod
    def check(c: Collapser, n: ir.Node) -> ConvPlan | Decline | None:
        x, w = n.inputs[0], n.inputs[1]
        bias = n.inputs[2] if len(n.inputs) > 2 else None
        weight = c.uniform(w)
        if weight is None or weight.shape is None or len(weight.shape) < 3:
            # an ordinary conv on full-width input stays as it is
            return _unless_collapsed(c, x, "Conv whose weight is not one value throughout, with a known shape")
        group = int_attr(n, "group", 1)
        c_out, per_group, kernel = weight.shape[0], weight.shape[1], tuple(weight.shape[2:])
        bias_param = c.uniform(bias) if bias is not None else None
        if bias is not None and bias_param is None:
            return _unless_collapsed(c, x, "Conv whose bias is not one value throughout")
        in_width = c.width(x)
        c.require(in_width is None or in_width == per_group * group, n,
                  f"has a weight for {per_group * group} input channels ({per_group} x group {group}) on an input of {in_width}")
        c.require(bias_param is None or bias_param.shape is None or bias_param.shape == (c_out,), n,
                  f"has a bias of shape {bias_param and bias_param.shape} for {c_out} output channels")
        in_groups = c.groups(x)
        if group == 1:
            in_mult = in_groups.mult if in_groups is not None else (1,) * per_group
            # every input channel has the same weight: summing the channels first
            # leaves a one-channel conv (the stem's 3 -> 1 conv: 4x less time)
            sum_channels = len(in_mult) > 1 and len(set(in_mult)) == 1
            if sum_channels:
                in_mult = in_mult[:1]
            factors = np.array(in_mult, dtype=np.float64).reshape((1, -1) + (1,) * len(kernel))
            factors = np.broadcast_to(factors, (1, len(in_mult)) + kernel)
            pool_scale = float(in_mult[0] * np.prod(kernel)) if len(in_mult) == 1 and _pools_instead(n, bias_param, kernel) else None
            return ConvPlan(weight, bias_param, factors, Groups((c_out,)), kernel, sum_channels, None, pool_scale)
        if in_groups is not None and per_group == 1 and group == c_out == in_groups.width:
            # depthwise: each output channel reads its own input channel
            factors = np.ones((len(in_groups.mult), 1) + kernel)
            return ConvPlan(weight, bias_param, factors, Groups(in_groups.mult), kernel, False, len(in_groups.mult), None)
        return _unless_collapsed(c, x, f"Conv with group={group} mixes channels in groups (only group 1 and depthwise collapse)")

    @staticmethod
    def rewrite(c: Collapser, n: ir.Node, plan: ConvPlan) -> None:
        if plan.sum_channels:
            n.replace_input_with(0, c.channel_sum(n.inputs[0]))
        if plan.pool_scale is not None:
            _rewrite_as_pool(c, n, plan)
            return
        if plan.depthwise_groups is not None:
            n.attributes["group"] = ir.AttrInt64("group", plan.depthwise_groups)
        n.replace_input_with(1, c.parameter(plan.weight, plan.factors))
        if plan.bias is not None:
            n.replace_input_with(2, c.parameter(plan.bias, np.ones(plan.factors.shape[0])))
        if "kernel_shape" not in n.attributes:
            n.attributes["kernel_shape"] = ir.AttrInt64s("kernel_shape", list(plan.kernel))
        c.set_groups(n.outputs[0], plan.groups, 2 + len(plan.kernel))


def _pools_instead(n: ir.Node, bias: Uniform | None, kernel: tuple[int, ...]) -> bool:
    """Whether a one-channel conv runs as a pooling: its kernel is one number
    v, so it is v * k times the average over its window (padding counted, k
    the window's size): AveragePool(x) * (v * k). ONNX Runtime's pooling
    kernel takes half the time of its one-channel conv, a 1x1 conv is then
    just the Mul, and the Mul usually folds into the batch-statistics BN that
    follows (BatchStatisticsNormPass)."""
    if bias is not None and bias.number != 0.0:
        return False
    if "dilations" in n.attributes and any(d != 1 for d in n.attributes["dilations"].as_ints()):
        return False  # AveragePool has dilations from opset 19 only
    if "auto_pad" in n.attributes and n.attributes["auto_pad"].as_string() not in ("", "NOTSET"):
        return False
    pads = list(n.attributes["pads"].as_ints()) if "pads" in n.attributes else []
    if any(p >= k for p, k in zip(pads, list(kernel) * 2)):
        return False  # a pool's padding must be smaller than its window (a padded 1x1 conv stays a conv)
    return not n.outputs[0].is_graph_output()


def _rewrite_as_pool(c: Collapser, n: ir.Node, plan: ConvPlan) -> None:
    x = n.inputs[0]
    kernel = plan.kernel
    strides = list(n.attributes["strides"].as_ints()) if "strides" in n.attributes else [1] * len(kernel)
    pads = list(n.attributes["pads"].as_ints()) if "pads" in n.attributes else [0] * (2 * len(kernel))
    if any(k != 1 for k in kernel) or any(s != 1 for s in strides) or any(pads):
        x = c.emit(node("AveragePool", [x], kernel_shape=list(kernel), strides=strides, pads=pads, count_include_pad=1))
    scale = c.parameter(dataclasses.replace(plan.weight, shape=()), np.array(plan.pool_scale))
    # the conv node itself becomes the Mul: its output and readers stay as they are
    n.op_type = "Mul"
    n.attributes.clear()
    n.resize_inputs(2)
    n.replace_input_with(0, x)
    n.replace_input_with(1, scale)
    c.set_groups(n.outputs[0], plan.groups, 2 + len(kernel))


@dataclasses.dataclass(frozen=True)
class BatchNormPlan:
    scale: Uniform
    bias: Uniform
    groups: Groups  # the input's and the output's


@collapse_rule("BatchNormalization")
class BatchNormRule(CollapseRule):
    """One-value scale and bias: one parameter per group. The running
    statistics are replaced by placeholders: the batch-statistics rewrite
    that follows ignores them."""

    @staticmethod
    def check(c: Collapser, n: ir.Node) -> BatchNormPlan | Decline | None:
        groups = c.groups(n.inputs[0])
        if groups is None:
            return None
        scale, bias = c.uniform(n.inputs[1]), c.uniform(n.inputs[2])
        if scale is None or bias is None or any(o.uses() or o.is_graph_output() for o in n.outputs[1:]):
            return Decline("BatchNormalization whose scale or bias is not one value throughout, or whose running-statistics outputs are read")
        channels = groups.width
        for i, what in enumerate(("scale", "B", "input_mean", "input_var"), start=1):
            shape = _declared_shape(c, n.inputs[i])
            c.require(shape is None or shape == (channels,), n, f"has {what} of shape {shape and list(shape)} for an input of {channels} channels")
        return BatchNormPlan(scale, bias, groups)

    @staticmethod
    def rewrite(c: Collapser, n: ir.Node, plan: BatchNormPlan) -> None:
        width = len(plan.groups.mult)
        n.replace_input_with(1, c.parameter(plan.scale, np.ones(width)))
        n.replace_input_with(2, c.parameter(plan.bias, np.ones(width)))
        n.replace_input_with(3, c.shared_constant(np.zeros(width, dtype=plan.scale.dtype.numpy())))
        n.replace_input_with(4, c.shared_constant(np.ones(width, dtype=plan.scale.dtype.numpy())))
        c.set_groups(n.outputs[0], plan.groups, c.rank(n.inputs[0]))


@dataclasses.dataclass(frozen=True)
class LinearPlan:
    weight: Uniform
    bias: Uniform | None
    factors: np.ndarray  # the collapsed weight, in multiples of the uniform value
    groups: Groups  # the output's: one group of all its columns


class LinearRule(CollapseRule):
    """The rewrite of Gemm and MatMul: the weight's rows scaled by the input's
    multiplicities (also from a full-width input: the op starts a collapse)."""

    @staticmethod
    def rewrite(c: Collapser, n: ir.Node, plan: LinearPlan) -> None:
        n.replace_input_with(1, c.parameter(plan.weight, plan.factors))
        if plan.bias is not None:
            n.replace_input_with(2, c.parameter(plan.bias, np.ones(1)))
        c.set_groups(n.outputs[0], plan.groups, 2)


@collapse_rule("Gemm")
class GemmRule(LinearRule):
    """A = the input (transA=0), B = a one-value weight, C = a one-value bias."""

    @staticmethod
    def check(c: Collapser, n: ir.Node) -> LinearPlan | Decline | None:
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
        in_groups = c.groups(a)
        factors = np.array(in_groups.mult if in_groups is not None else (1,) * c_in, dtype=np.float64)
        factors = factors.reshape(1, -1) if trans_b else factors.reshape(-1, 1)
        return LinearPlan(weight, bias_param, factors, Groups((c_out,)))


@collapse_rule("MatMul")
class MatMulRule(LinearRule):
    """A rank-2 input times a one-value 2-d weight."""

    @staticmethod
    def check(c: Collapser, n: ir.Node) -> LinearPlan | Decline | None:
        a, b = n.inputs
        weight = c.uniform(b)
        if weight is None or weight.shape is None or len(weight.shape) != 2 or c.rank(a) != 2:
            if c.is_collapsed(a) or c.is_collapsed(b):
                return Decline("MatMul whose second input is not one value throughout with a known 2-d shape, "
                               "or whose first input is not of rank 2")
            return None
        c_in, c_out = weight.shape
        in_width = c.width(a) if c.is_collapsed(a) else c.width(a, axis=-1)
        c.require(in_width is None or in_width == c_in, n, f"has a weight for {c_in} inputs on an input of {in_width}")
        in_groups = c.groups(a)
        factors = np.array(in_groups.mult if in_groups is not None else (1,) * c_in, dtype=np.float64).reshape(-1, 1)
        return LinearPlan(weight, None, factors, Groups((c_out,)))


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
