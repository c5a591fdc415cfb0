"""BatchNormalization -> batch statistics, checked against numpy."""

import numpy as np
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from epsinas_onnx.core.rewriting.passes import BatchStatisticsNormPass
from epsinas_onnx.core.options import ExecutionOptions
from tests.onnx_graphs import model, out


def numpy_batch_norm(x, scale, bias, eps):
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mean = x.mean(axis=axes, dtype=np.float64).reshape(shape)
    var = ((x - mean) ** 2).mean(axis=axes).reshape(shape)  # biased
    return (x - mean) / np.sqrt(var + eps) * scale.reshape(shape) + bias.reshape(shape)


def bn_model(shape, scale, bias, eps, opset, training_mode=None):
    c = shape[1]
    attrs = {"epsilon": eps}
    if training_mode is not None:
        attrs["training_mode"] = training_mode
    nodes = [helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], **attrs)]
    inits = [
        numpy_helper.from_array(scale, "s"), numpy_helper.from_array(bias, "b"),
        # running statistics that would give a different answer if used
        numpy_helper.from_array(np.full(c, 3.0, np.float32), "m"), numpy_helper.from_array(np.full(c, 7.0, np.float32), "v"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"] + list(shape[1:]))
    return model(nodes, [x], [out("y", len(shape))], inits, opset=opset)


@pytest.mark.parametrize("shape", [(8, 3, 5, 5), (16, 4), (6, 2, 9), (4, 3, 2, 3, 3)])
@pytest.mark.parametrize("opset", [15, 18])
def test_batch_statistics_match_numpy(shape, opset):
    rng = np.random.default_rng(0)
    x = (rng.normal(size=shape) * 5 + 2).astype(np.float32)
    scale = rng.normal(size=shape[1]).astype(np.float32)
    bias = rng.normal(size=shape[1]).astype(np.float32)
    ir_model = ir.from_proto(bn_model(shape, scale, bias, 1e-3, opset))
    BatchStatisticsNormPass()(ir_model)
    assert "BatchNormalization" not in {n.op_type for n in ir_model.graph}
    session = ort.InferenceSession(ir.to_proto(ir_model).SerializeToString(), providers=["CPUExecutionProvider"])
    y = session.run(None, {"x": x})[0]
    np.testing.assert_allclose(y, numpy_batch_norm(x, scale, bias, 1e-3), rtol=1e-5, atol=1e-5)


def test_training_mode_node_is_rewritten_too():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 2, 3, 3)).astype(np.float32)
    scale, bias = np.ones(2, np.float32), np.zeros(2, np.float32)
    ir_model = ir.from_proto(bn_model(x.shape, scale, bias, 1e-5, 15, training_mode=1))
    BatchStatisticsNormPass()(ir_model)
    session = ort.InferenceSession(ir.to_proto(ir_model).SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"x": x})[0], numpy_batch_norm(x, scale, bias, 1e-5), rtol=1e-5, atol=1e-5)


def test_session_of_the_inlined_function_gives_the_same_bits():
    # open_session inlines the BN function with onnx's inliner (ONNX Runtime's own
    # inlining at load is slower): the same nodes, so the same numbers
    from epsinas_onnx.core.rewriting.passes import WEIGHT_INPUT
    from epsinas_onnx.core.scoring.scorer import open_session, rewrite_model
    from epsinas_onnx.spaces import nb201
    from tests.conftest import cifar10_batch

    staged = rewrite_model(nb201.to_onnx(nb201.parse("|nor_conv_3x3~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|")), check=False)
    own = ort.InferenceSession(ir.to_proto(staged.rewritten.model).SerializeToString(), providers=["CPUExecutionProvider"])
    assert any(f.name for f in ir.to_proto(staged.rewritten.model).functions)
    prepared = open_session(staged, ExecutionOptions(device="cpu", threads=1))
    x = cifar10_batch(16)
    for w in (1e-7, 1.0):
        expected = own.run([staged.output], {staged.input_spec.name: x, WEIGHT_INPUT: np.array(w, np.float32)})[0]
        assert np.array_equal(prepared.run(x, w), expected)


@pytest.mark.parametrize("s", [3.5, -2.0, 1e-7, 0.0])
def test_a_scalar_factor_before_the_bn_is_folded_into_gamma_and_epsilon(s):
    # BN(s * P) = gamma * sign(s) * (P - mean) / sqrt(var + eps / s^2) + beta: the Mul goes
    rng = np.random.default_rng(2)
    shape = (8, 3, 5, 5)
    x = (rng.normal(size=shape) * 5 + 2).astype(np.float32)
    scale = rng.normal(size=3).astype(np.float32)
    bias = rng.normal(size=3).astype(np.float32)
    proto = bn_model(shape, scale, bias, 1e-3, 17)
    proto.graph.input.append(helper.make_tensor_value_info("factor", TensorProto.FLOAT, []))
    proto.graph.node.insert(0, helper.make_node("Mul", ["x", "factor"], ["xs"]))
    proto.graph.node[1].input[0] = "xs"
    ir_model = ir.from_proto(proto)
    BatchStatisticsNormPass()(ir_model)
    ir.passes.common.RemoveUnusedNodesPass()(ir_model)
    calls = [n for n in ir_model.graph if n.op_type.startswith("BatchStatNorm")]
    assert len(calls) == 1 and calls[0].inputs[0].name == "x"  # reads P itself
    assert not any(n.op_type == "Mul" and n.inputs[0].name == "x" for n in ir_model.graph)
    session = ort.InferenceSession(ir.to_proto(ir_model).SerializeToString(), providers=["CPUExecutionProvider"])
    y = session.run(None, {"x": x, "factor": np.array(s, np.float32)})[0]
    expected = numpy_batch_norm((x * np.float32(s)).astype(np.float64), scale, bias, 1e-3)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(8, 3, 5, 5), (6, 2, 9), (4, 3, 2, 3, 3)])
def test_reducing_over_the_spatial_axes_gives_the_bits_of_the_reshape(shape, monkeypatch):
    # with X's rank known the body reduces over axes 2.. directly, one Reshape fewer
    import epsinas_onnx.core.rewriting.passes.batch_statistics_norm as bsn

    rng = np.random.default_rng(3)
    x = (rng.normal(size=shape) * 5 + 2).astype(np.float32)
    scale, bias = rng.normal(size=shape[1]).astype(np.float32), rng.normal(size=shape[1]).astype(np.float32)
    results = []
    for known in (True, False):
        if not known:
            monkeypatch.setattr(bsn, "_rank", lambda value: None)
        ir_model = ir.from_proto(bn_model(shape, scale, bias, 1e-3, 17))
        BatchStatisticsNormPass()(ir_model)
        (function,) = ir_model.functions.values()
        assert [n.op_type for n in function].count("Reshape") == (2 if known else 3)
        session = ort.InferenceSession(ir.to_proto(ir_model).SerializeToString(), providers=["CPUExecutionProvider"])
        results.append(session.run(None, {"x": x})[0])
    assert np.array_equal(results[0], results[1])
