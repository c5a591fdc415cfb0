"""A small helper for building ONNX graphs by hand, shared by the exporters.

`GraphBuilder` collects nodes and initialisers and hands out unique tensor
names, so that an exporter reads like the network it describes:

    g = GraphBuilder()
    x = g.input("input", ["batch", 3, 32, 32])
    y = g.conv(x, "stem.conv", 3, 16, 3)
    y = g.batch_norm(y, "stem.bn", 16)
    g.output(g.op("Relu", y), "logits")
    model = g.model()

Initialisers hold ordinary random-looking values, as a trained-then-exported
model would; the scorer replaces them anyway. Drawing fresh normal numbers for
every tensor of a million-parameter model would dominate build time, so
tensors are slices, at random offsets, of one pool of normal numbers drawn once
per process.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

OPSET = 17
BN_EPSILON = 1e-5

_POOL_SIZE = 1 << 22
_pool: np.ndarray | None = None


def _random_pool() -> np.ndarray:
    global _pool
    if _pool is None:
        _pool = (np.random.default_rng(0).standard_normal(_POOL_SIZE, dtype=np.float32) * 0.1).astype(
            np.float32
        )
    return _pool


def _tensor(name: str, array: np.ndarray) -> TensorProto:
    """A float32 / int64 initialiser, written as raw bytes (much faster than
    numpy_helper.from_array for large tensors)."""
    array = np.ascontiguousarray(array)
    dtype = helper.np_dtype_to_tensor_dtype(array.dtype)
    t = TensorProto(name=name, data_type=dtype, dims=array.shape)
    t.raw_data = array.tobytes()
    return t


class GraphBuilder:
    """Collects the nodes, initialisers, inputs and outputs of one graph."""

    def __init__(self, seed: int = 0):
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self._rng = np.random.default_rng(seed)
        self._used_names: set[str] = set()

    # names -----------------------------------------------------------------

    def fresh_name(self, base: str) -> str:
        """`base`, or `base_1`, `base_2`, ... if already taken."""
        name, i = base, 0
        while name in self._used_names:
            i += 1
            name = f"{base}_{i}"
        self._used_names.add(name)
        return name

    # graph inputs, outputs, initialisers -------------------------------------

    def input(self, name: str, shape: list, elem_type: int = TensorProto.FLOAT) -> str:
        name = self.fresh_name(name)
        self.inputs.append(helper.make_tensor_value_info(name, elem_type, shape))
        return name

    def output(self, value: str, name: str, shape: list | None = None,
               elem_type: int = TensorProto.FLOAT) -> str:
        """Expose `value` as graph output `name` (through an Identity node,
        so that the output gets exactly this name)."""
        name = self.fresh_name(name)
        self.nodes.append(helper.make_node("Identity", [value], [name], name=f"{name}_identity"))
        self.outputs.append(helper.make_tensor_value_info(name, elem_type, shape))
        return name

    def constant(self, name: str, array: np.ndarray) -> str:
        """An initialiser holding exactly `array`."""
        name = self.fresh_name(name)
        self.initializers.append(_tensor(name, np.asarray(array)))
        return name

    def constant_node(self, name: str, array: np.ndarray) -> str:
        """A Constant node holding `array`: for fixed values that are part of
        the computation, not parameters (a pass rewriting initialisers leaves
        it alone)."""
        name = self.fresh_name(name)
        value = _tensor(f"{name}_value", np.asarray(array))
        self.nodes.append(helper.make_node("Constant", [], [name], name=name, value=value))
        return name

    def weight(self, name: str, shape: tuple[int, ...]) -> str:
        """A float32 initialiser of random-looking values (normal * 0.1)."""
        size = int(np.prod(shape))
        pool = _random_pool()
        if size <= _POOL_SIZE // 2:
            start = int(self._rng.integers(0, _POOL_SIZE - size))
            values = pool[start:start + size]
        else:
            values = self._rng.standard_normal(size, dtype=np.float32) * np.float32(0.1)
        return self.constant(name, values.reshape(shape))

    # nodes -----------------------------------------------------------------

    def op(self, op_type: str, inputs: list[str] | str, name: str | None = None, **attrs) -> str:
        """Append one single-output node; returns its output's name."""
        if isinstance(inputs, str):
            inputs = [inputs]
        out = self.fresh_name(name or op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=out, **attrs))
        return out

    def conv(self, x: str, name: str, c_in: int, c_out: int, kernel: int, stride: int = 1,
             pad: int | None = None, bias: bool = False) -> str:
        """Conv2d with weight `name.weight` (c_out, c_in, k, k), optional bias."""
        pad = kernel // 2 if pad is None else pad
        inputs = [x, self.weight(f"{name}.weight", (c_out, c_in, kernel, kernel))]
        if bias:
            inputs.append(self.weight(f"{name}.bias", (c_out,)))
        return self.op("Conv", inputs, name=name, kernel_shape=[kernel, kernel],
                       strides=[stride, stride], pads=[pad] * 4)

    def batch_norm(self, x: str, name: str, channels: int) -> str:
        """Inference-mode BatchNormalization, stored mean 0 and variance 1
        (the scorer swaps in batch statistics)."""
        inputs = [
            x,
            self.weight(f"{name}.weight", (channels,)),
            self.weight(f"{name}.bias", (channels,)),
            self.constant(f"{name}.running_mean", np.zeros(channels, np.float32)),
            self.constant(f"{name}.running_var", np.ones(channels, np.float32)),
        ]
        return self.op("BatchNormalization", inputs, name=name, epsilon=BN_EPSILON)

    def linear(self, x: str, name: str, in_features: int, out_features: int) -> str:
        """Gemm x @ W^T + b with W (out, in) as in torch.nn.Linear."""
        w = self.weight(f"{name}.weight", (out_features, in_features))
        b = self.weight(f"{name}.bias", (out_features,))
        return self.op("Gemm", [x, w, b], name=name, transB=1)

    def add_all(self, values: list[str], name: str = "add") -> str:
        """Sum of one or more tensors (a single value is returned unchanged)."""
        if len(values) == 1:
            return values[0]
        return self.op("Sum", values, name=name)

    # the model -------------------------------------------------------------

    def model(self, graph_name: str = "graph", doc: str = "") -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, graph_name, self.inputs, self.outputs,
                                  initializer=self.initializers, doc_string=doc)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="epsinas-onnx")
        model.ir_version = 8  # the IR of opset 17, readable by older runtimes
        return model
