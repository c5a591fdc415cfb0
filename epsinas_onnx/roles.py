"""What each constant tensor of a model is for, judged by the ops that read it.

One small rule per op type, registered in a table (`input_roles`), in the
style of onnx2torch's converters: the classifier walks every use of a
constant and asks the rule of the consuming op what that input slot is.
Ops that only move data around (Identity, Transpose, Reshape, Cast, ...)
are looked through, and explicit Scan / Loop inputs are followed into the
body, so a weight is found however the exporter wired it.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Callable, Iterable

import onnx_ir as ir


class Role(str, enum.Enum):
    WEIGHT = "weight"
    BIAS = "bias"
    NORM_SCALE = "norm-scale"
    NORM_BIAS = "norm-bias"
    NORM_STATS = "norm-stats"
    EMBEDDING = "embedding"
    INITIAL_STATE = "initial-state"
    OTHER = "other"


# When one tensor is read in several roles, the first of these wins.
_PRECEDENCE = [
    Role.WEIGHT,
    Role.INITIAL_STATE,
    Role.NORM_SCALE,
    Role.NORM_BIAS,
    Role.BIAS,
    Role.EMBEDDING,
    Role.NORM_STATS,
    Role.OTHER,
]

# Ops that pass a tensor's values on unchanged in meaning (input 0 only).
TRANSPARENT_OPS = frozenset(
    {"Identity", "Transpose", "Reshape", "Cast", "CastLike", "Squeeze", "Unsqueeze", "Flatten", "Expand"}
)
# Ops that read only a tensor's shape: they say nothing about its role.
SHAPE_ONLY_OPS = frozenset({"Shape", "Size"})
# Ops whose output a bias is added to.
WEIGHT_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})

RoleRule = Callable[[ir.Node, int], Role]
_RULES: dict[str, RoleRule] = {}


def input_roles(*op_types: str) -> Callable[[RoleRule], RoleRule]:
    """Register the rule that says what role input slot `i` of these ops plays."""

    def register(rule: RoleRule) -> RoleRule:
        for op in op_types:
            _RULES[op] = rule
        return rule

    return register


@input_roles("Conv", "ConvTranspose")
def _conv(node: ir.Node, i: int) -> Role:
    return {1: Role.WEIGHT, 2: Role.BIAS}.get(i, Role.OTHER)


@input_roles("Gemm")
def _gemm(node: ir.Node, i: int) -> Role:
    return Role.BIAS if i == 2 else Role.WEIGHT


@input_roles("MatMul")
def _matmul(node: ir.Node, i: int) -> Role:
    return Role.WEIGHT


@input_roles("LSTM", "GRU", "RNN")
def _recurrent(node: ir.Node, i: int) -> Role:
    # inputs: X, W, R, B, sequence_lens, initial_h, initial_c (LSTM), P (LSTM peepholes)
    return {
        1: Role.WEIGHT,
        2: Role.WEIGHT,
        3: Role.BIAS,
        5: Role.INITIAL_STATE,
        6: Role.INITIAL_STATE,
        7: Role.WEIGHT,
    }.get(i, Role.OTHER)


@input_roles("BatchNormalization")
def _batch_norm(node: ir.Node, i: int) -> Role:
    return {1: Role.NORM_SCALE, 2: Role.NORM_BIAS, 3: Role.NORM_STATS, 4: Role.NORM_STATS}.get(i, Role.OTHER)


@input_roles("InstanceNormalization", "LayerNormalization", "GroupNormalization")
def _norm(node: ir.Node, i: int) -> Role:
    return {1: Role.NORM_SCALE, 2: Role.NORM_BIAS}.get(i, Role.OTHER)


@input_roles("Gather")
def _gather(node: ir.Node, i: int) -> Role:
    return Role.EMBEDDING if i == 0 else Role.OTHER


@input_roles("Add")
def _add(node: ir.Node, i: int) -> Role:
    other = node.inputs[1 - i] if len(node.inputs) == 2 else None
    if other is not None and producer_through_transparent(other) in WEIGHT_OPS:
        return Role.BIAS
    return Role.OTHER


def producer_through_transparent(value: ir.Value) -> str | None:
    """The op type that computed `value`, looking through data-movement ops."""
    node = value.producer()
    while node is not None and node.op_type in TRANSPARENT_OPS and node.inputs and node.inputs[0] is not None:
        node = node.inputs[0].producer()
    return None if node is None else node.op_type


@dataclasses.dataclass
class TensorRole:
    """One constant tensor and what it is for."""

    value: ir.Value
    role: Role
    readers: list[str]  # "OpType:input-slot", as seen through transparent ops
    also: list[Role]  # roles that lost to `role` by precedence

    @property
    def name(self) -> str:
        return self.value.name or ""

    @property
    def shape(self) -> tuple[int, ...]:
        tensor = self.value.const_value
        return tuple(tensor.shape) if tensor is not None else ()


def _subgraph_input(node: ir.Node, i: int) -> ir.Value | None:
    """The body input that receives a Scan / Loop node's explicit input `i`."""
    body_attr = node.attributes.get("body")
    if body_attr is None or node.op_type not in ("Scan", "Loop"):
        return None
    body = body_attr.as_graph()
    # Loop: inputs (M, cond, v...) map to body (iteration, cond, v...); M has no body twin.
    if node.op_type == "Loop" and i == 0:
        return None
    return body.inputs[i] if i < len(body.inputs) else None


def _is_carried_state(node: ir.Node, i: int) -> bool:
    if node.op_type == "Scan":
        num_scan_inputs = node.attributes["num_scan_inputs"].as_int()
        return i < len(node.inputs) - num_scan_inputs
    return node.op_type == "Loop" and i >= 2


def _reader_roles(value: ir.Value, seen: set[int]) -> Iterable[tuple[Role, str]]:
    if id(value) in seen:
        return
    seen.add(id(value))
    for node, i in value.uses():
        if node.op_type in SHAPE_ONLY_OPS:
            continue
        if node.domain not in ("", "ai.onnx"):
            yield Role.OTHER, f"{node.domain}.{node.op_type}:{i}"
        elif node.op_type in TRANSPARENT_OPS and i == 0:
            for out in node.outputs:
                yield from _reader_roles(out, seen)
        elif _is_carried_state(node, i):
            # the initial value of a Scan / Loop state: a recurrent initial state,
            # whatever the body then does with it
            yield Role.INITIAL_STATE, f"{node.op_type}:{i}"
        elif (body_input := _subgraph_input(node, i)) is not None:
            yield from _reader_roles(body_input, seen)
        else:
            rule = _RULES.get(node.op_type)
            yield (rule(node, i) if rule else Role.OTHER), f"{node.op_type}:{i}"


def classify_value(value: ir.Value) -> TensorRole:
    found = list(_reader_roles(value, set()))
    roles = {role for role, _ in found}
    if not is_float(value):
        roles = {Role.OTHER}  # integer tensors are shapes, axes, indices
    ranked = sorted(roles, key=_PRECEDENCE.index) or [Role.OTHER]
    return TensorRole(value, ranked[0], sorted({reader for _, reader in found}), ranked[1:])


def is_float(value: ir.Value) -> bool:
    dtype = value.dtype if value.dtype is not None else getattr(value.const_value, "dtype", None)
    return dtype is not None and dtype.is_floating_point()


def classify_model(model: ir.Model) -> list[TensorRole]:
    """The role of every initializer of every graph (main graph first)."""
    table = []
    for graph in model.graphs():
        for value in graph.initializers.values():
            table.append(classify_value(value))
    return table
