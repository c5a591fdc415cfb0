"""A small helper for building ONNX graphs by hand, shared by the exporters.

`GraphBuilder` collects nodes and initialisers and hands out unique tensor
names, so that an exporter reads like the network it describes:

    g = GraphBuilder()
    x = g.input("input", ["batch", 3, 32, 32])
    y = g.conv(x, "stem.conv", 3, 16, 3)
    y = g.batch_norm(y, "stem.bn", 16)
    g.output(g.op("Relu", y), "logits")
    model = g.model()         # an onnx.ModelProto; g.ir_model(): the onnx-ir model

The graph is built as onnx-ir objects, which the scorer rewrites: `bench`
takes `ir_model()` directly, with no protobuf written and parsed back per
architecture (that round trip was a fifth of the Python work per NAS-Bench-201
architecture). `model()` serialises it for files and other tools.

Initialisers hold ordinary random-looking values, as a trained-then-exported
model would; the scorer replaces them anyway. Drawing fresh normal numbers for
every tensor of a million-parameter model would dominate build time, so
tensors are slices, at random offsets, of one pool of normal numbers drawn once
per process (views: no copy).
"""

from __future__ import annotations

import functools

import numpy as np
import onnx
import onnx_ir as ir
from onnx import TensorProto

from epsinas_onnx.core.rewriting.passes.build import attribute

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
        _pool.flags.writeable = False  # tensors are views of it
    return _pool


@functools.lru_cache(maxsize=4)
def _repeated_pool(size: int) -> np.ndarray:
    """`size` numbers, the pool repeated: a tied parameter larger than half
    the pool (NAS-Bench-101's 512x512x3x3 convolution) would otherwise draw
    millions of fresh numbers for every architecture."""
    values = np.resize(_random_pool(), size)
    values.flags.writeable = False  # tensors are views of it
    return values


class GraphBuilder:
    """Collects the nodes, initialisers, inputs and outputs of one graph. A
    builder for a subgraph (a Scan body) takes its `parent`, so that its nodes
    can read the outer graph's values by name."""

    def __init__(self, seed: int = 0, parent: GraphBuilder | None = None, tied: bool = False):
        self.tied = tied  # see tied_parameter
        self._tied: dict[tuple, str] = {}
        self._attributes: dict[tuple, ir.Attr] = {}  # see _attribute
        self.nodes: list[ir.Node] = []
        self.initializers: list[ir.Value] = []
        self.inputs: list[ir.Value] = []
        self.outputs: list[ir.Value] = []
        self.metadata: dict[str, str] = {}  # the model's metadata_props
        self._rng = np.random.default_rng(seed)
        self._values: dict[str, ir.Value] = {}
        self._parent = parent

    # names -----------------------------------------------------------------

    def fresh_name(self, base: str) -> str:
        """`base`, or `base_1`, `base_2`, ... if already taken."""
        name, i = base, 0
        while name in self._values:
            i += 1
            name = f"{base}_{i}"
        return name

    def value(self, name: str) -> ir.Value:
        """The value called `name` here or, in a subgraph, in an outer graph."""
        found = self._values.get(name)
        if found is None:
            if self._parent is None:
                raise KeyError(f"no value named {name!r} in the graph being built")
            return self._parent.value(name)
        return found

    def _new_value(self, name: str, **kwargs) -> ir.Value:
        value = ir.Value(name=name, **kwargs)
        self._values[name] = value
        return value

    # graph inputs, outputs, initialisers -------------------------------------

    def input(self, name: str, shape: list, elem_type: int = TensorProto.FLOAT) -> str:
        name = self.fresh_name(name)
        self.inputs.append(self._new_value(name, type=ir.TensorType(ir.DataType(elem_type)), shape=ir.Shape(shape)))
        return name

    def output(self, value: str, name: str, shape: list | None = None,
               elem_type: int = TensorProto.FLOAT) -> str:
        """Expose `value` as graph output `name` (through an Identity node,
        so that the output gets exactly this name)."""
        name = self.op("Identity", [value], name=name)
        out = self._values[name]
        out.type = ir.TensorType(ir.DataType(elem_type))
        if shape is not None:
            out.shape = ir.Shape(shape)
        self.outputs.append(out)
        return name

    def tied_parameter(self, name: str, shape: tuple[int, ...], make) -> str:
        """With `tied`, one initialiser per kind of parameter (the last part of
        its name: weight, bias, running_mean, ...) and shape, read by every
        layer that has one: under constant weights (every weight w, every bias
        0) the same network as one initialiser per layer, and the rewrite makes
        the same graph of it, with a few initialisers to rewrite instead of
        hundreds. Not for anything else (random weights tell the layers apart)."""
        if not self.tied:
            return make(name)
        key = (name.rsplit(".", 1)[-1], tuple(shape))
        if key not in self._tied:
            self._tied[key] = make(f"tied.{key[0]}." + "x".join(map(str, shape)))
        return self._tied[key]

    def constant(self, name: str, array: np.ndarray) -> str:
        """An initialiser holding exactly `array`."""
        name = self.fresh_name(name)
        tensor = ir.Tensor(np.asarray(array), name=name)
        self.initializers.append(self._new_value(name, type=ir.TensorType(tensor.dtype), shape=tensor.shape,
                                                 const_value=tensor))
        return name

    def constant_node(self, name: str, array: np.ndarray) -> str:
        """A Constant node holding `array`: for fixed values that are part of
        the computation, not parameters (a pass rewriting initialisers leaves
        it alone)."""
        return self.op("Constant", [], name=name, value=np.asarray(array))

    def weight(self, name: str, shape: tuple[int, ...]) -> str:
        """A float32 initialiser of random-looking values (normal * 0.1)."""
        return self.tied_parameter(name, shape, lambda name: self._random_initialiser(name, shape))

    def _random_initialiser(self, name: str, shape: tuple[int, ...]) -> str:
        size = int(np.prod(shape))
        pool = _random_pool()
        if size <= _POOL_SIZE // 2:
            start = int(self._rng.integers(0, _POOL_SIZE - size))
            values = pool[start:start + size]
        elif self.tied:  # scored under constant weights only, which replace it: the pool repeated, made once
            values = _repeated_pool(size)
        else:
            values = self._rng.standard_normal(size, dtype=np.float32) * np.float32(0.1)
        return self.constant(name, values.reshape(shape))

    # nodes -----------------------------------------------------------------

    def op(self, op_type: str, inputs: list[str] | str, name: str | None = None, **attrs) -> str:
        """Append one single-output node; returns its output's name."""
        return self.op_outputs(op_type, inputs, [name or op_type.lower()], name=None, **attrs)[0]

    def op_outputs(self, op_type: str, inputs: list[str] | str, outputs: list[str], name: str | None = None,
                   **attrs) -> list[str]:
        """Append one node with these outputs (names made unique); the node is
        called `name`, else after its first output."""
        if isinstance(inputs, str):
            inputs = [inputs]
        names = [self.fresh_name(o) for o in outputs]
        values = [self._new_value(o) for o in names]
        self.nodes.append(ir.Node(
            "", op_type, [self.value(i) if i else None for i in inputs],
            attributes=[self._attribute(k, v) for k, v in sorted(attrs.items())], outputs=values, name=name or names[0],
        ))
        return names

    def _attribute(self, name: str, value) -> ir.Attr:
        """One attribute object per name and plain value (ints, floats,
        strings, lists of them), shared by the nodes that have it: attributes
        are values, replaced and never changed in place, and a network repeats
        the same few hundreds of times."""
        key = (name, type(value), tuple(value) if isinstance(value, list) else value)
        try:
            return self._attributes[key]
        except TypeError:  # unhashable (an array): not shared
            return attribute(name, value)
        except KeyError:
            self._attributes[key] = attribute(name, value)
            return self._attributes[key]

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
            self.tied_parameter(f"{name}.running_mean", (channels,),
                                lambda name: self.constant(name, np.zeros(channels, np.float32))),
            self.tied_parameter(f"{name}.running_var", (channels,),
                                lambda name: self.constant(name, np.ones(channels, np.float32))),
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

    def graph(self, name: str = "graph", doc: str = "") -> ir.Graph:
        return ir.Graph(self.inputs, self.outputs, nodes=self.nodes, initializers=self.initializers,
                        opset_imports={"": OPSET}, name=name, doc_string=doc or None)

    def ir_model(self, graph_name: str = "graph", doc: str = "") -> ir.Model:
        # IR 8: the IR of opset 17, readable by older runtimes
        return ir.Model(self.graph(graph_name, doc), ir_version=8, producer_name="epsinas-onnx",
                        metadata_props=dict(self.metadata))

    def model(self, graph_name: str = "graph", doc: str = "") -> onnx.ModelProto:
        return ir.to_proto(self.ir_model(graph_name, doc))
