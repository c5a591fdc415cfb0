"""Random initialisation of a model's weights, as a proxy's paper draws them.

RandomInitPass gives every constant tensor a value by its role (the roles
table of core/rewriting/roles.py says what each tensor is):

    scheme      weights                     biases               norm scale / bias   embeddings
    pytorch     U(-b, b), b = 1/sqrt(fan_in) U(-b, b) of its layer 1 / 0                 N(0, 1)
    gaussian    N(0, 1)                     0                    1 / 0                 N(0, 1)

`pytorch` is PyTorch's default for Conv and Linear layers (kaiming_uniform_
with a = sqrt(5), whose bound is 1/sqrt(fan_in)), what NASWOT's and MeCo's
code scores networks with; `gaussian` is Zen-NAS's
network_weight_gaussian_init. Recurrent initial states are 0 (PyTorch's
default state), normalisation statistics are left alone (the proxies run
BatchNormalization with batch statistics, as a network in training mode).

Each tensor is drawn from numpy's default_rng([seed, crc32(tensor name)]):
the same model and seed give the same weights, on any machine.

fan_in is read as PyTorch reads it from the layer's weight layout: Conv
[out, in/groups, k...] -> in/groups * prod(k); ConvTranspose [in, out/groups,
k...] -> out/groups * prod(k) (PyTorch's rule, which uses size(1)); Gemm ->
the contracted dimension (transB says which); MatMul -> the weight's
second-last dimension (x @ W), or its last when a Transpose reads it first
(x @ W^T, the torch.onnx export of nn.Linear).
"""

from __future__ import annotations

import zlib

import numpy as np
import onnx_ir as ir

from epsinas_onnx.core.rewriting.roles import Role, classify_model

SCHEMES = ("pytorch", "gaussian")


def generator(name: str, seed: int) -> np.random.Generator:
    """The draws of one tensor: the same for the same name and seed."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


class RandomInitPass(ir.passes.InPlacePass):
    """Every parameter tensor drawn as `scheme` says (module docstring)."""

    def __init__(self, scheme: str, seed: int):
        super().__init__()
        self.scheme, self.seed = check_scheme(scheme), seed

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        for entry in classify_model(model):
            array = draw(entry, self.scheme, self.seed)
            if array is not None:
                entry.value.const_value = ir.Tensor(array, name=entry.value.name)
        return ir.passes.PassResult(model, modified=True)


def draws(model: ir.Model, scheme: str, seed: int) -> dict[str, np.ndarray]:
    """{initializer name: its value} for every tensor RandomInitPass would
    draw, leaving `model` as it is (the engine writes them into a serialised
    copy, one per scheme, instead of initialising and serialising the model
    once per scheme)."""
    check_scheme(scheme)
    out = {}
    for entry in classify_model(model):
        array = draw(entry, scheme, seed)
        if array is not None:
            out[entry.value.name] = array
    return out


def check_scheme(scheme: str) -> str:
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, not {scheme!r}")
    return scheme


def draw(entry, scheme: str, seed: int) -> np.ndarray | None:
    """The value `scheme` gives the tensor of one roles-table entry, in the
    tensor's own element type; None for a tensor it leaves alone."""
    value, role = entry.value, entry.role
    tensor = value.const_value
    if tensor is None or role in (Role.OTHER, Role.NORM_STATS):
        return None
    shape = tuple(int(d) for d in tensor.shape)
    rng = generator(value.name or "", seed)
    if role == Role.WEIGHT:
        if scheme == "gaussian":
            array = rng.standard_normal(shape)
        else:
            bound = 1.0 / np.sqrt(max(fan_in(value) or 1, 1))
            array = rng.uniform(-bound, bound, shape)
    elif role == Role.BIAS:
        fan = fan_in_of_layer(value) if scheme == "pytorch" else None
        array = rng.uniform(-1.0, 1.0, shape) / np.sqrt(fan) if fan else np.zeros(shape)
    elif role == Role.NORM_SCALE:
        array = np.ones(shape)
    elif role in (Role.NORM_BIAS, Role.INITIAL_STATE):
        array = np.zeros(shape)
    elif role == Role.EMBEDDING:
        array = rng.standard_normal(shape)
    else:
        return None
    return array.astype(tensor.dtype.numpy())


def fan_in(weight: ir.Value) -> int | None:
    """The fan_in PyTorch would use for the layer that reads `weight` (module docstring)."""
    shape = [int(d) for d in weight.const_value.shape]
    for reader, slot in weight.uses():
        op = reader.op_type
        if op == "Conv" and slot == 1 and len(shape) >= 2:
            return shape[1] * int(np.prod(shape[2:], dtype=np.int64))
        if op == "ConvTranspose" and slot == 1 and len(shape) >= 2:
            return shape[1] * int(np.prod(shape[2:], dtype=np.int64))
        if op == "Gemm" and len(shape) == 2:
            transposed = reader.attributes.get("transB" if slot == 1 else "transA")
            flag = transposed.as_int() if transposed is not None else 0
            if slot == 1:
                return shape[1] if flag else shape[0]
            return shape[0] if flag else shape[1]
        if op == "MatMul" and len(shape) >= 2:
            return shape[-2] if slot == 1 else shape[-1]
        if op == "Transpose" and len(shape) == 2:
            for inner, inner_slot in reader.outputs[0].uses():
                if inner.op_type == "MatMul":
                    return shape[-1] if inner_slot == 1 else shape[-2]
    return int(np.prod(shape[1:], dtype=np.int64)) if len(shape) >= 2 else None


def fan_in_of_layer(bias: ir.Value) -> int | None:
    """The fan_in of the layer a bias belongs to (the weight beside it), or None."""
    for reader, slot in bias.uses():
        if reader.op_type in ("Conv", "ConvTranspose", "Gemm") and len(reader.inputs) > 1:
            weight = reader.inputs[1]
            if weight is not None and weight.const_value is not None:
                return fan_in(weight)
        if reader.op_type == "Add":
            other = reader.inputs[1 - slot] if len(reader.inputs) == 2 else None
            producer = other.producer() if other is not None else None
            if producer is not None and producer.op_type in ("MatMul", "Gemm", "Conv"):
                for operand in producer.inputs[1:2]:
                    source = operand
                    while source is not None and source.const_value is None and source.producer() is not None \
                            and source.producer().op_type == "Transpose":
                        source = source.producer().inputs[0]
                    if source is not None and source.const_value is not None:
                        return fan_in(source)
    return None
