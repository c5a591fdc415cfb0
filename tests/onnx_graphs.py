"""Tiny ONNX models built with onnx.helper, for rewriter tests."""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def init(name, shape, value=None, dtype=np.float32):
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    array = rng.normal(size=shape).astype(dtype) if value is None else np.full(shape, value, dtype=dtype)
    return numpy_helper.from_array(array, name)


def model(nodes, inputs, outputs, initializers=(), opset=OPSET) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def image_input(name="x", c=3, hw=8):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", c, hw, hw])


def out(name, rank=4, dtype=TensorProto.FLOAT):
    """An output with symbolic dims (the checker needs a shape field)."""
    return helper.make_tensor_value_info(name, dtype, [f"{name}_{i}" for i in range(rank)])


def conv_bn_relu(c_out=4, c_in=3) -> onnx.ModelProto:
    nodes = [
        helper.make_node("Conv", ["x", "conv.w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "bn.scale", "bn.b", "bn.mean", "bn.var"], ["b"], epsilon=1e-5),
        helper.make_node("Relu", ["b"], ["y"]),
    ]
    inits = [init("conv.w", [c_out, c_in, 3, 3]), init("bn.scale", [c_out]), init("bn.b", [c_out]),
             init("bn.mean", [c_out]), init("bn.var", [c_out], 1.0)]
    return model(nodes, [image_input(c=c_in)], [out("y")], inits)
