"""The init policy applied by role, observed through the rewritten model's outputs."""

import numpy as np
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper

from epsinas_onnx import prepare_model
from epsinas_onnx.core.rewriting.passes import InitPolicy, scoring_pipeline
from epsinas_onnx.core.rewriting.rewrite import POLICY_METADATA_KEY
from tests.onnx_graphs import conv_bn_relu, init, model, out


def gemm_model():
    nodes = [helper.make_node("Gemm", ["x", "fc.w", "fc.b"], ["y"], transB=1)]
    return model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 5])], [out("y", 2)],
                 [init("fc.w", [2, 5]), init("fc.b", [2])])


@pytest.mark.parametrize("w", [1e-7, 1.0, 10.0])
def test_linear_weights_become_w_and_biases_zero(w):
    x = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)
    y = prepare_model(gemm_model(), device="cpu").run(x, w)
    expected = np.repeat((w * x.sum(axis=1, dtype=np.float64))[:, None], 2, axis=1)
    np.testing.assert_allclose(y, expected, rtol=1e-6)


def test_bias_policy_w_and_model_metadata():
    x = np.ones((1, 5), dtype=np.float32)
    assert prepare_model(gemm_model(), bias="w").run(x, 2.0).tolist() == [[12.0, 12.0]]
    proto = gemm_model()
    proto.metadata_props.add(key=POLICY_METADATA_KEY, value="weight")
    assert prepare_model(proto).run(x, 2.0).tolist() == [[12.0, 12.0]]
    assert prepare_model(proto, bias="zero").run(x, 2.0).tolist() == [[10.0, 10.0]]


def test_bn_gamma_scales_the_normalised_output():
    x = np.random.default_rng(0).normal(size=(4, 3, 8, 8)).astype(np.float32)
    with_w = prepare_model(conv_bn_relu(), bn_gamma="w").run(x, 0.5)
    with_one = prepare_model(conv_bn_relu(), bn_gamma="one").run(x, 0.5)
    np.testing.assert_allclose(with_w, 0.5 * with_one, rtol=1e-5, atol=1e-7)
    # batch statistics: before ReLU each channel has mean 0, so about half is positive
    assert 0.3 < (with_one > 0).mean() < 0.7


def test_embedding_is_uniform_fixed_and_shared_by_both_weights():
    nodes = [helper.make_node("Gather", ["emb", "tokens"], ["e"]), helper.make_node("MatMul", ["e", "proj"], ["y"])]
    proto = model(nodes, [helper.make_tensor_value_info("tokens", TensorProto.INT64, ["n"])], [out("y", 2)],
                  [init("emb", [10, 4]), init("proj", [4, 1])])
    tokens = np.arange(10, dtype=np.int64)
    prepared = prepare_model(proto)
    at_one = prepared.run(tokens, 1.0)[:, 0]
    at_two = prepared.run(tokens, 2.0)[:, 0]
    np.testing.assert_allclose(at_two, 2 * at_one, rtol=1e-6)  # same embedding for every w
    assert np.all((at_one > 0) & (at_one < 4))  # row sums of U(0, 1) values
    again = prepare_model(proto).run(tokens, 1.0)[:, 0]
    np.testing.assert_array_equal(at_one, again)  # fixed seed


def test_pipeline_leaves_no_original_weight_behind():
    ir_model = ir.from_proto(conv_bn_relu())
    scoring_pipeline(InitPolicy())(ir_model)
    assert "conv.w" not in ir_model.graph.initializers
    assert {v.name for v in ir_model.graph.inputs} == {"x", "epsinas_weight"}


def test_every_role_is_set_or_kept_on_purpose():
    # a new Role must get a rule in ConstantWeightPass (or join the roles it keeps)
    from epsinas_onnx.core.rewriting.passes import ConstantWeightPass
    from epsinas_onnx.core.rewriting.roles import Role

    rules = ConstantWeightPass("epsinas_weight").rules
    assert set(rules) == set(Role) - {Role.NORM_STATS, Role.OTHER}
