"""What each constant tensor of a model is for, judged by the ops that read it.

One small rule per op type, registered in a table (`input_roles`, keyed by
domain, op type and opset range), in the style of onnx2torch's converters:
the classifier walks every use of a constant and asks the rule of the
consuming op what that input slot is.
Ops that only move data around (Identity, Transpose, Reshape, Cast, ...)
are looked through, and explicit Scan / Loop inputs are followed into the
body, so a weight is found however the exporter wired it.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Callable, Iterable

import onnx_ir as ir

from epsinas_onnx.core.rewriting.op_registry import OpRegistry, model_opset


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
# Slice / Split: exporters cut recurrent weights into gates (torch.onnx's
# dynamo LSTM / GRU export slices W, R, B and the initial states per gate
# and per layer): a part of a weight is still a weight.
TRANSPARENT_OPS = frozenset(
    {"Identity", "Transpose", "Reshape", "Cast", "CastLike", "Squeeze", "Unsqueeze", "Flatten", "Expand",
     "Slice", "Split"}
)
# Ops that join tensors: looked through (every input) only when every input
# is constant data, e.g. gate slices re-assembled in ONNX's gate order. A
# constant joined to activations (a ViT class token) is not a weight.
JOIN_OPS = frozenset({"Concat"})
# Ops that read only a tensor's shape: they say nothing about its role.
SHAPE_ONLY_OPS = frozenset({"Shape", "Size"})
# Ops whose output a bias is added to.
WEIGHT_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})

RoleRule = Callable[[ir.Node, int], Role]
# keyed by (domain, op type, opset range): a second rule for an op is refused at import
RULES: OpRegistry[RoleRule] = OpRegistry("role rules")


def input_roles(*op_types: str, since: int = 1, until: int | None = None) -> Callable[[RoleRule], RoleRule]:
    """Register the rule that says what role input slot `i` of these default-domain
    ops plays, for opsets since..until (default: every opset)."""
    return RULES.register(*op_types, since=since, until=until)


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
    if other is not None and _is_norm_scaling(producer_node(other)):
        return Role.NORM_BIAS  # Add(Mul(normalised, gamma), beta): a decomposed norm's beta
    return Role.OTHER


@input_roles("Mul")
def _mul(node: ir.Node, i: int) -> Role:
    # A LayerNormalization written out in primitive ops (torch's TorchScript exporter
    # below opset 17, converters without a fusion): (x - mean) / std * gamma + beta.
    other = node.inputs[1 - i] if len(node.inputs) == 2 else None
    if other is not None and _is_normalised(producer_node(other)):
        return Role.NORM_SCALE
    return Role.OTHER


def producer_node(value: ir.Value) -> ir.Node | None:
    """The node that computed `value`, looking through data-movement ops."""
    node = value.producer()
    while node is not None and node.op_type in TRANSPARENT_OPS and node.inputs and node.inputs[0] is not None:
        node = node.inputs[0].producer()
    return node


def producer_through_transparent(value: ir.Value) -> str | None:
    """The op type that computed `value`, looking through data-movement ops."""
    node = producer_node(value)
    return None if node is None else node.op_type


def _is_centred(value: ir.Value | None) -> bool:
    """x - ReduceMean(x)."""
    node = None if value is None else producer_node(value)
    return (
        node is not None and node.op_type == "Sub" and len(node.inputs) == 2 and node.inputs[1] is not None
        and producer_through_transparent(node.inputs[1]) == "ReduceMean"
    )


def _is_normalised(node: ir.Node | None) -> bool:
    """(x - mean) / s or (x - mean) * r: the normalised value of a written-out norm."""
    if node is None or len(node.inputs) != 2:
        return False
    if node.op_type == "Div":
        return _is_centred(node.inputs[0])
    return node.op_type == "Mul" and (_is_centred(node.inputs[0]) or _is_centred(node.inputs[1]))


def _is_norm_scaling(node: ir.Node | None) -> bool:
    """Mul(normalised, gamma)."""
    return node is not None and node.op_type == "Mul" and len(node.inputs) == 2 and any(
        v is not None and _is_normalised(producer_node(v)) for v in node.inputs)


def is_constant_data(value: ir.Value | None) -> bool:
    """Whether `value` holds constants only: an initializer or Constant, seen
    through data-movement and join ops (their other inputs are shapes).
    A walk with a stack, not recursion: a file may chain any number of ops."""
    stack, seen = [value], set()
    while stack:
        value = stack.pop()
        if value is None or id(value) in seen:
            continue
        seen.add(id(value))
        node = value.producer()
        if node is None:
            if not (value.is_initializer() or value.const_value is not None):
                return False
        elif node.op_type == "Constant":
            continue
        elif node.op_type in TRANSPARENT_OPS and node.inputs:
            stack.append(node.inputs[0])
        elif node.op_type in JOIN_OPS:
            stack.extend(node.inputs)
        else:
            return False
    return True


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


def _reader_roles(value: ir.Value, opset: int) -> Iterable[tuple[Role, str]]:
    """(role, reader) of every use of `value`, looking through data-movement
    ops and into Scan / Loop bodies: a walk with a stack, not recursion (a
    file may chain thousands of Identity nodes), in the order of the uses."""
    stack, seen = [value], set()
    while stack:
        value = stack.pop()
        if id(value) in seen:
            continue
        seen.add(id(value))
        followed = []  # values to walk next, in use order
        for node, i in value.uses():
            if node.op_type in SHAPE_ONLY_OPS:
                continue
            if node.domain not in ("", "ai.onnx"):
                yield Role.OTHER, f"{node.domain}.{node.op_type}:{i}"
            elif (node.op_type in TRANSPARENT_OPS and i == 0) or (
                node.op_type in JOIN_OPS and all(is_constant_data(v) for v in node.inputs)
            ):
                followed.extend(node.outputs)
            elif _is_carried_state(node, i):
                # the initial value of a Scan / Loop state: a recurrent initial state,
                # whatever the body then does with it
                yield Role.INITIAL_STATE, f"{node.op_type}:{i}"
            elif (body_input := _subgraph_input(node, i)) is not None:
                followed.append(body_input)
            else:
                rule = RULES.lookup("", node.op_type, opset)
                yield (rule(node, i) if rule else Role.OTHER), f"{node.op_type}:{i}"
        stack.extend(reversed(followed))


def classify_value(value: ir.Value, opset: int) -> TensorRole:
    """`opset`: the model's default-domain opset, which picks the rules."""
    found = list(_reader_roles(value, opset))
    roles = {role for role, _ in found}
    if not is_float(value):
        roles = {Role.OTHER}  # integer tensors are shapes, axes, indices
    elif _is_scalar(value):
        # A rank-0 constant is a hyper-parameter (eps, a scale) or a zero an
        # exporter broadcasts into an empty slot: a bias-free Conv's bias
        # (torch.onnx's dynamo export: Expand(CastLike(0.0))), never a learned
        # tensor, which has one value per channel. Or the zero state of an
        # nn.LSTM / nn.GRU called without one (the same exporter broadcasts
        # 0.0 into initial_h / initial_c): a recurrent initial state, which
        # the reference sets to w as every other constant state.
        recurrent_state = {
            reader for role, reader in found
            if role == Role.INITIAL_STATE and reader.split(":")[0] in ("LSTM", "GRU", "RNN")
        }
        roles = {Role.INITIAL_STATE} if recurrent_state else {Role.OTHER}
    ranked = sorted(roles, key=_PRECEDENCE.index) or [Role.OTHER]
    return TensorRole(value, ranked[0], sorted({reader for _, reader in found}), ranked[1:])


def _is_scalar(value: ir.Value) -> bool:
    tensor = value.const_value
    return tensor is not None and len(tensor.shape) == 0


def is_float(value: ir.Value) -> bool:
    dtype = value.dtype if value.dtype is not None else getattr(value.const_value, "dtype", None)
    return dtype is not None and dtype.is_floating_point()


def classify_model(model: ir.Model) -> list[TensorRole]:
    """The role of every initializer of every graph (main graph first)."""
    table = []
    opset = model_opset(model.opset_imports, "")
    for graph in model.graphs():
        for value in graph.initializers.values():
            table.append(classify_value(value, opset))
    return table
