"""The role classifier on small hand-built graphs."""

import numpy as np
import onnx_ir as ir
from onnx import TensorProto, helper, numpy_helper

from epsinas_onnx.core.rewriting.rewrite import explain_roles
from epsinas_onnx.core.rewriting.roles import Role
from tests.onnx_graphs import conv_bn_relu, image_input, init, model, out


def roles_of(proto) -> dict[str, Role]:
    return {r.name: r.role for r in explain_roles(ir.from_proto(proto))}


def test_conv_bn_relu():
    roles = roles_of(conv_bn_relu())
    assert roles == {
        "conv.w": Role.WEIGHT,
        "bn.scale": Role.NORM_SCALE,
        "bn.b": Role.NORM_BIAS,
        "bn.mean": Role.NORM_STATS,
        "bn.var": Role.NORM_STATS,
    }


def test_gemm_weight_and_bias():
    nodes = [helper.make_node("Gemm", ["x", "fc.w", "fc.b"], ["y"], transB=1)]
    proto = model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 5])], [out("y")],
                  [init("fc.w", [2, 5]), init("fc.b", [2])])
    assert roles_of(proto) == {"fc.w": Role.WEIGHT, "fc.b": Role.BIAS}


def test_matmul_through_transpose_and_add_bias():
    nodes = [
        helper.make_node("Transpose", ["w"], ["wt"], perm=[1, 0]),
        helper.make_node("MatMul", ["x", "wt"], ["m"]),
        helper.make_node("Add", ["m", "b"], ["y"]),
        helper.make_node("Add", ["y", "offset"], ["z"]),  # not fed by a weight op: not a bias
    ]
    proto = model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 5])], [out("z")],
                  [init("w", [3, 5]), init("b", [3]), init("offset", [3])])
    assert roles_of(proto) == {"w": Role.WEIGHT, "b": Role.BIAS, "offset": Role.OTHER}


def test_lstm_weights_bias_and_initial_state():
    hidden, feat = 4, 3
    nodes = [helper.make_node("LSTM", ["x", "W", "R", "B", "", "h0", "c0"], ["y"], hidden_size=hidden)]
    proto = model(
        nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, "batch", feat])], [out("y")],
        [init("W", [1, 4 * hidden, feat]), init("R", [1, 4 * hidden, hidden]), init("B", [1, 8 * hidden]),
         init("h0", [1, 1, hidden]), init("c0", [1, 1, hidden])],
    )
    assert roles_of(proto) == {"W": Role.WEIGHT, "R": Role.WEIGHT, "B": Role.BIAS, "h0": Role.INITIAL_STATE, "c0": Role.INITIAL_STATE}


def test_gather_embedding_and_reshape_shape_left_alone():
    nodes = [
        helper.make_node("Gather", ["emb", "tokens"], ["e"]),
        helper.make_node("Reshape", ["e", "shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "proj"], ["y"]),
    ]
    proto = model(
        nodes, [helper.make_tensor_value_info("tokens", TensorProto.INT64, ["n", 2])], [out("y")],
        [init("emb", [10, 4]), numpy_helper.from_array(np.array([-1, 8], dtype=np.int64), "shape"), init("proj", [8, 2])],
    )
    assert roles_of(proto) == {"emb": Role.EMBEDDING, "shape": Role.OTHER, "proj": Role.WEIGHT}


def test_constant_node_weight():
    w = numpy_helper.from_array(np.ones((2, 3, 1, 1), dtype=np.float32), "cw")
    nodes = [
        helper.make_node("Constant", [], ["cw_out"], value=w),
        helper.make_node("Conv", ["x", "cw_out"], ["y"]),
    ]
    proto = model(nodes, [image_input()], [out("y")])
    assert roles_of(proto) == {"cw_out": Role.WEIGHT}


def test_one_weight_shared_by_two_convs():
    nodes = [
        helper.make_node("Conv", ["x", "shared"], ["a"], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["a", "shared"], ["y"], pads=[1, 1, 1, 1]),
    ]
    proto = model(nodes, [image_input(c=3)], [out("y")], [init("shared", [3, 3, 3, 3])])
    (entry,) = explain_roles(ir.from_proto(proto))
    assert entry.role == Role.WEIGHT
    assert entry.readers == ["Conv:1"]


def test_scan_body_reads_outer_scope_weight():
    # body: state' = tanh(state @ W_outer + x_t); W_outer is a main-graph initializer
    body = helper.make_graph(
        [
            helper.make_node("MatMul", ["s_in", "W_outer"], ["sw"]),
            helper.make_node("Add", ["sw", "x_t"], ["pre"]),
            helper.make_node("Tanh", ["pre"], ["s_out"]),
            helper.make_node("Identity", ["s_out"], ["y_t"]),
        ],
        "body",
        [helper.make_tensor_value_info("s_in", TensorProto.FLOAT, ["batch", 4]),
         helper.make_tensor_value_info("x_t", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("s_out", TensorProto.FLOAT, ["batch", 4]),
         helper.make_tensor_value_info("y_t", TensorProto.FLOAT, ["batch", 4])],
    )
    nodes = [
        helper.make_node("Expand", ["h0", "state_shape"], ["s0"]),
        helper.make_node("Scan", ["s0", "x"], ["s_last", "ys"], num_scan_inputs=1, body=body),
    ]
    proto = model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, "batch", 4]),
         helper.make_tensor_value_info("state_shape", TensorProto.INT64, [2])],
        [out("ys")],
        [init("W_outer", [4, 4]), init("h0", [4])],
    )
    roles = roles_of(proto)
    assert roles["W_outer"] == Role.WEIGHT
    # h0 reaches the Scan as the initial value of its state
    assert roles["h0"] == Role.INITIAL_STATE


def test_integer_tensors_are_never_weights():
    nodes = [helper.make_node("MatMul", ["x", "iw"], ["y"])]
    proto = model(nodes, [helper.make_tensor_value_info("x", TensorProto.INT64, ["n", 2])],
                  [out("y", 2, TensorProto.INT64)],
                  [numpy_helper.from_array(np.ones((2, 2), dtype=np.int64), "iw")])
    assert roles_of(proto) == {"iw": Role.OTHER}


def test_recurrent_weights_sliced_into_gates_and_joined():
    """torch.onnx's dynamo export of nn.LSTM / nn.GRU: W, R, B and the initial
    states are cut per gate / per layer (Slice) and re-joined in ONNX's gate
    order (Concat of constants only): still weights, biases, states."""
    hidden, feat = 2, 3
    i64 = lambda name, v: numpy_helper.from_array(np.array(v, dtype=np.int64), name)  # noqa: E731
    nodes = [helper.make_node("Slice", ["w_ih", "s0", "s1"], ["w_a"]),
             helper.make_node("Slice", ["w_ih", "s1", "s4"], ["w_b"]),
             helper.make_node("Concat", ["w_b", "w_a"], ["w_cat"], axis=0),
             helper.make_node("Unsqueeze", ["w_cat", "ax0"], ["W"]),
             helper.make_node("Unsqueeze", ["w_hh", "ax0"], ["R"]),
             helper.make_node("Concat", ["b_ih", "b_hh"], ["b_cat"], axis=0),
             helper.make_node("Unsqueeze", ["b_cat", "ax0"], ["B"]),
             helper.make_node("Slice", ["h0", "s0", "s1"], ["h_first"]),
             helper.make_node("LSTM", ["x", "W", "R", "B", "", "h_first"], ["y"], hidden_size=hidden)]
    proto = model(
        nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, 1, feat])], [out("y")],
        [init("w_ih", [4 * hidden, feat]), init("w_hh", [4 * hidden, hidden]), init("b_ih", [4 * hidden]),
         init("b_hh", [4 * hidden]), init("h0", [2, 1, hidden]),
         i64("s0", [0]), i64("s1", [hidden]), i64("s4", [4 * hidden]), i64("ax0", [0])],
    )
    roles = roles_of(proto)
    assert {k: roles[k] for k in ("w_ih", "w_hh", "b_ih", "b_hh", "h0")} == {
        "w_ih": Role.WEIGHT, "w_hh": Role.WEIGHT, "b_ih": Role.BIAS, "b_hh": Role.BIAS, "h0": Role.INITIAL_STATE}


def test_constant_joined_to_activations_is_not_a_weight():
    """A class token concatenated to the activations before a MatMul is data,
    not a weight the rewriter may set to w."""
    nodes = [helper.make_node("Concat", ["cls", "x"], ["seq"], axis=1),
             helper.make_node("MatMul", ["seq", "proj"], ["y"])]
    proto = model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])], [out("y", 3)],
                  [init("cls", [2, 1, 4]), init("proj", [4, 4])])
    assert roles_of(proto) == {"cls": Role.OTHER, "proj": Role.WEIGHT}


def test_scalar_zero_broadcast_into_conv_bias_is_not_a_bias():
    """torch.onnx's dynamo export of Conv(bias=False) feeds the bias slot an
    Expand of a scalar 0.0: not a learned bias (--bias w must not make it w)."""
    nodes = [helper.make_node("CastLike", ["zero", "x"], ["z"]),
             helper.make_node("Expand", ["z", "c_out"], ["bias"]),
             helper.make_node("Conv", ["x", "conv.w", "bias"], ["y"])]
    proto = model(nodes, [image_input()], [out("y")],
                  [numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"),
                   numpy_helper.from_array(np.array([4], dtype=np.int64), "c_out"), init("conv.w", [4, 3, 1, 1])])
    assert roles_of(proto) == {"zero": Role.OTHER, "c_out": Role.OTHER, "conv.w": Role.WEIGHT}


def test_layer_norm_written_out_in_primitive_ops():
    """torch's TorchScript exporter below opset 17: (x - mean) / sqrt(var + eps) * gamma + beta."""
    scalar = lambda name, v: numpy_helper.from_array(np.array(v, dtype=np.float32), name)  # noqa: E731
    nodes = [helper.make_node("MatMul", ["x", "proj"], ["h"]),
             helper.make_node("ReduceMean", ["h"], ["mean"], axes=[-1]),
             helper.make_node("Sub", ["h", "mean"], ["centred"]),
             helper.make_node("Pow", ["centred", "two"], ["sq"]),
             helper.make_node("ReduceMean", ["sq"], ["var"], axes=[-1]),
             helper.make_node("Add", ["var", "eps"], ["var_eps"]),
             helper.make_node("Sqrt", ["var_eps"], ["std"]),
             helper.make_node("Div", ["centred", "std"], ["normed"]),
             helper.make_node("Mul", ["normed", "gamma"], ["scaled"]),
             helper.make_node("Add", ["scaled", "beta"], ["y"]),
             helper.make_node("Mul", ["y", "not_gamma"], ["z"])]  # a Mul of a non-normalised value
    proto = model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 5])], [out("z", 2)],
                  [init("proj", [5, 4]), init("gamma", [4]), init("beta", [4]), init("not_gamma", [4]),
                   scalar("two", 2.0), scalar("eps", 1e-5)])
    assert roles_of(proto) == {"proj": Role.WEIGHT, "gamma": Role.NORM_SCALE, "beta": Role.NORM_BIAS,
                               "not_gamma": Role.OTHER, "two": Role.OTHER, "eps": Role.OTHER}


def test_zero_state_of_a_stateless_lstm_is_an_initial_state():
    """nn.LSTM called without a state, dynamo export: a scalar 0.0 expanded to
    (layers, batch, hidden) feeds initial_h and initial_c. A constant initial
    state, so the reference's w applies (unlike the scalar zero of a bias slot)."""
    hidden, feat = 2, 3
    nodes = [helper.make_node("Shape", ["x"], ["x_shape"], start=1, end=2),
             helper.make_node("Concat", ["one", "x_shape", "h"], ["state_shape"], axis=0),
             helper.make_node("Expand", ["zero", "state_shape"], ["zeros"]),
             helper.make_node("LSTM", ["x", "W", "R", "", "", "zeros", "zeros"], ["y"], hidden_size=hidden)]
    proto = model(
        nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, "batch", feat])], [out("y")],
        [init("W", [1, 4 * hidden, feat]), init("R", [1, 4 * hidden, hidden]),
         numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"),
         numpy_helper.from_array(np.array([1], dtype=np.int64), "one"),
         numpy_helper.from_array(np.array([hidden], dtype=np.int64), "h")],
    )
    roles = roles_of(proto)
    assert roles["zero"] == Role.INITIAL_STATE
    assert roles["W"] == roles["R"] == Role.WEIGHT


def test_a_second_role_rule_for_an_op_is_refused_and_the_first_stays():
    import pytest

    from epsinas_onnx.core.rewriting.roles import input_roles

    with pytest.raises(ValueError, match="Conv"):
        input_roles("Conv")(lambda node, i: Role.OTHER)
    assert roles_of(conv_bn_relu())["conv.w"] == Role.WEIGHT
