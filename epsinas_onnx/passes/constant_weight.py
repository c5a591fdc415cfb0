"""Give every constant tensor its epsinas initial value, by role.

Reference semantics (reference-semantics §2): weights = w, biases = 0,
norm gamma = w, beta = 0, initial recurrent states = w, embeddings U(0, 1)
from a fixed seed (the same for both weights). w is the scalar graph input
`epsinas_weight`, broadcast with Expand, so one session serves every w.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir

from epsinas_onnx.passes._build import constant, insert_at_start, node
from epsinas_onnx.roles import Role, TensorRole, classify_model

EMBEDDING_SEED = 21  # the reference draws its embedding after seeding 21


@dataclasses.dataclass(frozen=True)
class InitPolicy:
    """Which value each role gets.

    bn_gamma: "w" (the reference code) or "one" (the paper's prose).
    bias: "zero" (the reference for CNNs) or "w" (NAS-Bench-NLP's cells,
        where the reference sets every parameter, biases included, to w).
    embedding: "uniform" (U(0, 1) from EMBEDDING_SEED) or "keep".
    """

    bn_gamma: str = "w"
    bias: str = "zero"
    embedding: str = "uniform"

    def __post_init__(self):
        for field, allowed in (("bn_gamma", ("w", "one")), ("bias", ("zero", "w")), ("embedding", ("uniform", "keep"))):
            if getattr(self, field) not in allowed:
                raise ValueError(f"{field} must be one of {allowed}, not {getattr(self, field)!r}")


class ConstantWeightPass(ir.passes.InPlacePass):
    """Rewrite initializers by role. Needs the weight input to exist already."""

    def __init__(self, weight_input_name: str, policy: InitPolicy = InitPolicy(), roles: list[TensorRole] | None = None):
        super().__init__()
        self.weight_input_name = weight_input_name
        self.policy = policy
        self.roles = roles  # computed here when not given

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        w = next(v for v in graph.inputs if v.name == self.weight_input_name)
        new_nodes: list[ir.Node] = []
        w_by_dtype: dict[ir.DataType, ir.Value] = {ir.DataType.FLOAT: w}

        def w_as(dtype: ir.DataType) -> ir.Value:
            if dtype not in w_by_dtype:
                cast = node("Cast", [w], to=dtype)
                new_nodes.append(cast)
                w_by_dtype[dtype] = cast.outputs[0]
            return w_by_dtype[dtype]

        def broadcast_w(value: ir.Value) -> None:
            tensor = value.const_value
            shape = constant(np.array(tensor.shape, dtype=np.int64))
            expand = node("Expand", [w_as(tensor.dtype), shape.outputs[0]])
            new_nodes.extend([shape, expand])
            expand.outputs[0].name = f"{value.name}__epsinas"
            value.replace_all_uses_with(expand.outputs[0])

        def fill(value: ir.Value, array: np.ndarray) -> None:
            tensor = value.const_value
            value.const_value = ir.tensor(array.astype(tensor.dtype.numpy()), name=value.name)

        for entry in self.roles if self.roles is not None else classify_model(model):
            value, role = entry.value, entry.role
            tensor = value.const_value
            if tensor is None or role in (Role.OTHER, Role.NORM_STATS):
                continue
            shape = tuple(tensor.shape)
            if role in (Role.WEIGHT, Role.INITIAL_STATE):
                broadcast_w(value)
            elif role == Role.NORM_SCALE:
                if self.policy.bn_gamma == "w":
                    broadcast_w(value)
                else:
                    fill(value, np.ones(shape))
            elif role == Role.NORM_BIAS:
                fill(value, np.zeros(shape))
            elif role == Role.BIAS:
                if self.policy.bias == "w":
                    broadcast_w(value)
                else:
                    fill(value, np.zeros(shape))
            elif role == Role.EMBEDDING and self.policy.embedding == "uniform":
                fill(value, np.random.default_rng(EMBEDDING_SEED).random(shape, dtype=np.float64))
        insert_at_start(graph, new_nodes)
        # Initializers now read by nobody (replaced weights) are dropped.
        for name in [n for n, v in graph.initializers.items() if not v.uses() and not v.is_graph_output()]:
            graph.initializers.pop(name)
        return ir.passes.PassResult(model, modified=True)
