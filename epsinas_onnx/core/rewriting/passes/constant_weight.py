"""Give every constant tensor its epsinas initial value, by role.

Reference semantics (reference-semantics §2): weights = w, biases = 0,
norm gamma = w, beta = 0, initial recurrent states = w, embeddings U(0, 1)
from a fixed seed (the same for both weights). w is the scalar graph input
`epsinas_weight`, broadcast with Expand, so one session serves every w.

Ablations (paper section 6): `weight_init` other than "constant" gives each
weight tensor w * R, R a fixed random tensor (drawn once per tensor from
`weight_seed` and the tensor's name, the same for every w); the weights are
then no longer channel-uniform and the channel-collapse pass leaves those
convolutions at full width. `embedding` picks among the paper's embedding
initialisations for NAS-Bench-NLP.
"""

from __future__ import annotations

import dataclasses
import zlib

import numpy as np
import onnx_ir as ir

from epsinas_onnx.core.rewriting.passes.build import constant, insert_at_start, node
from epsinas_onnx.core.rewriting.roles import Role, TensorRole, classify_model

EMBEDDING_SEED = 21  # the reference draws its embedding after seeding 21
WEIGHT_INIT_SEED = 0  # default seed of the random weight tensors (weight_init != "constant")

# weight_init -> how R is drawn (the weight is w * R). The names and fans follow
# torch.nn.init, as the paper's initialisation ablation (NAS-Bench-201
# Ablations.ipynb) calls them; fans are read from the tensor's layout as torch
# reads a Conv weight [out, in, k...] (for MatMul / Gemm / recurrent weights
# that layout is not always [out, in]: the fan is then the other dimension).
WEIGHT_INITS = ("constant", "normal", "uniform", "kaiming_normal", "kaiming_uniform")
# embedding -> the table's distribution (paper's NAS-Bench-NLP embedding ablation:
# uniform_positive_1, uniform_positive_0.1, uniform_centered_1, uniform_centered_0.1,
# random_1, random_0.1), or keep the model's own values
EMBEDDINGS = {
    "uniform": ("uniform", 0.0, 1.0), "uniform-0.1": ("uniform", 0.0, 0.1),
    "centered": ("uniform", -1.0, 1.0), "centered-0.1": ("uniform", -0.1, 0.1),
    "normal": ("normal", 0.0, 1.0), "normal-0.1": ("normal", 0.0, 0.1),
    "keep": None,
}


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """(fan_in, fan_out) as torch.nn.init computes them for a Conv weight."""
    if len(shape) < 2:
        n = int(shape[0]) if shape else 1
        return n, n
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return int(shape[1]) * receptive, int(shape[0]) * receptive


def random_weight(kind: str, shape: tuple[int, ...], name: str, seed: int = WEIGHT_INIT_SEED) -> np.ndarray:
    """R of weight_init `kind` (float64): the same for the same (kind, shape,
    name, seed), different for another tensor name or seed."""
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    fan_in, fan_out = _fans(shape)
    if kind == "normal":  # torch nn.init.normal_: N(0, 1)
        return rng.standard_normal(shape)
    if kind == "uniform":  # torch nn.init.uniform_: U(0, 1)
        return rng.random(shape)
    if kind == "kaiming_normal":  # mode="fan_out", nonlinearity="relu", as in the paper's ablation
        return rng.standard_normal(shape) * np.sqrt(2.0 / max(fan_out, 1))
    if kind == "kaiming_uniform":  # torch's default a=0: U(-b, b), b = sqrt(6 / fan_in)
        bound = np.sqrt(6.0 / max(fan_in, 1))
        return rng.uniform(-bound, bound, shape)
    raise ValueError(f"weight_init must be one of {WEIGHT_INITS}, not {kind!r}")


def embedding_table(kind: str, shape: tuple[int, ...]) -> np.ndarray:
    """The embedding table of policy `kind` (float64), from EMBEDDING_SEED."""
    dist, a, b = EMBEDDINGS[kind]
    rng = np.random.default_rng(EMBEDDING_SEED)
    if dist == "uniform":
        # the reference's U(0, 1) draw, stretched: "uniform" is exactly rng.random(shape)
        return a + (b - a) * rng.random(shape, dtype=np.float64)
    return a + b * rng.standard_normal(shape)


@dataclasses.dataclass(frozen=True)
class InitPolicy:
    """Which value each role gets.

    bn_gamma: "w" (the reference code) or "one" (the paper's prose).
    bias: "zero" (the reference for CNNs) or "w" (NAS-Bench-NLP's cells,
        where the reference sets every parameter, biases included, to w).
    embedding: "uniform" (U(0, 1) from EMBEDDING_SEED, the reference), one of
        the other EMBEDDINGS (an ablation), or "keep".
    weight_init: "constant" (the reference: every weight is w) or one of
        WEIGHT_INITS: every weight tensor is w * R, R from `random_weight`.
    weight_seed: the seed of those R.
    """

    bn_gamma: str = "w"
    bias: str = "zero"
    embedding: str = "uniform"
    weight_init: str = "constant"
    weight_seed: int = WEIGHT_INIT_SEED

    def __post_init__(self):
        for field, allowed in (("bn_gamma", ("w", "one")), ("bias", ("zero", "w")), ("embedding", tuple(EMBEDDINGS)),
                               ("weight_init", WEIGHT_INITS)):
            if getattr(self, field) not in allowed:
                raise ValueError(f"{field} must be one of {allowed}, not {getattr(self, field)!r}")


class ConstantWeightPass(ir.passes.InPlacePass):
    """Give each constant tensor its value by role (`roles`, computed here when
    not given). Needs the weight input to exist already. The rules, by role:

    - weight: w; with weight_init other than "constant", w * R (random_weight).
    - initial state (of a recurrent op or loop): w.
    - norm scale: w (bn_gamma="w") or 1 (bn_gamma="one").
    - norm bias: 0.
    - bias: 0 (bias="zero") or w (bias="w").
    - embedding: a fixed table (embedding_table), or kept (embedding="keep").
    - norm statistics, other: kept.

    w reaches each tensor as Expand(w, shape), one node per distinct dtype and
    shape; filled values replace the tensor's own; initializers nobody reads
    afterwards are dropped.
    """

    def __init__(self, weight_input_name: str, policy: InitPolicy = InitPolicy(), roles: list[TensorRole] | None = None):
        super().__init__()
        self.weight_input_name = weight_input_name
        self.policy = policy
        self.roles = roles  # computed here when not given
        # role -> the method that sets a tensor of that role; roles not here are kept
        self.rules = {
            Role.WEIGHT: self.set_weight,
            Role.INITIAL_STATE: self.set_to_w,
            Role.NORM_SCALE: self.set_norm_scale,
            Role.NORM_BIAS: self.set_to_zero,
            Role.BIAS: self.set_bias,
            Role.EMBEDDING: self.set_embedding,
        }

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        w = _WeightNodes(next(v for v in graph.inputs if v.name == self.weight_input_name))
        for entry in self.roles if self.roles is not None else classify_model(model):
            rule = self.rules.get(entry.role)
            if rule is not None and entry.value.const_value is not None:
                rule(entry.value, w)
        insert_at_start(graph, w.nodes)
        # Initializers now read by nobody (replaced weights) are dropped.
        for name in [n for n, v in graph.initializers.items() if not v.uses() and not v.is_graph_output()]:
            graph.initializers.pop(name)
        return ir.passes.PassResult(model, modified=True)

    def set_weight(self, value: ir.Value, w: _WeightNodes) -> None:
        if self.policy.weight_init == "constant":
            w.broadcast_to(value)
        else:
            r = random_weight(self.policy.weight_init, tuple(value.const_value.shape), value.name or "", self.policy.weight_seed)
            w.scale(value, r)

    def set_to_w(self, value: ir.Value, w: _WeightNodes) -> None:
        w.broadcast_to(value)

    def set_norm_scale(self, value: ir.Value, w: _WeightNodes) -> None:
        if self.policy.bn_gamma == "w":
            w.broadcast_to(value)
        else:
            _fill(value, np.ones(tuple(value.const_value.shape)))

    def set_to_zero(self, value: ir.Value, w: _WeightNodes) -> None:
        _fill(value, np.zeros(tuple(value.const_value.shape)))

    def set_bias(self, value: ir.Value, w: _WeightNodes) -> None:
        if self.policy.bias == "w":
            w.broadcast_to(value)
        else:
            self.set_to_zero(value, w)

    def set_embedding(self, value: ir.Value, w: _WeightNodes) -> None:
        if self.policy.embedding != "keep":
            _fill(value, embedding_table(self.policy.embedding, tuple(value.const_value.shape)))


def _fill(value: ir.Value, array: np.ndarray) -> None:
    """Replace the constant's values by `array`, in its dtype."""
    value.const_value = ir.Tensor(array.astype(value.const_value.dtype.numpy()), name=value.name)


class _WeightNodes:
    """The nodes that bring w to the tensors of one graph, each built once:
    a Cast per dtype, and one Expand per distinct shape (the tensors are
    equal, and a graph of hundreds of weights then holds a handful of nodes
    for them)."""

    def __init__(self, w: ir.Value):
        self.nodes: list[ir.Node] = []  # in the order built, inserted at the graph's start
        self.by_dtype: dict[ir.DataType, ir.Value] = {ir.DataType.FLOAT: w}
        self.by_shape: dict[tuple, ir.Value] = {}

    def w_as(self, dtype: ir.DataType) -> ir.Value:
        if dtype not in self.by_dtype:
            cast = node("Cast", [self.by_dtype[ir.DataType.FLOAT]], to=dtype)
            self.nodes.append(cast)
            self.by_dtype[dtype] = cast.outputs[0]
        return self.by_dtype[dtype]

    def broadcast_to(self, value: ir.Value) -> None:
        """value := w, broadcast to its shape."""
        tensor = value.const_value
        key = (tensor.dtype, tuple(tensor.shape))
        if key not in self.by_shape:
            shape = constant(np.array(tensor.shape, dtype=np.int64))
            expand = node("Expand", [self.w_as(tensor.dtype), shape.outputs[0]])
            self.nodes.extend([shape, expand])
            expand.outputs[0].name = f"{value.name}__epsinas"
            self.by_shape[key] = expand.outputs[0]
        value.replace_all_uses_with(self.by_shape[key])

    def scale(self, value: ir.Value, r: np.ndarray) -> None:
        """value := w * r, r a constant: the same for every w."""
        tensor = value.const_value
        table = constant(r.astype(tensor.dtype.numpy()))
        mul = node("Mul", [self.w_as(tensor.dtype), table.outputs[0]])
        self.nodes.extend([table, mul])
        mul.outputs[0].name = f"{value.name}__epsinas"
        value.replace_all_uses_with(mul.outputs[0])
