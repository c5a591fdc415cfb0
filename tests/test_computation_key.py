"""computation_key: equal for graphs that compute the same thing the same way,
different otherwise; bench reuses a result only under an equal key."""

import math

import numpy as np
import pytest

import onnx_ir as ir
from onnx import TensorProto, helper

from epsinas_onnx.experiments.bench import score_architecture
from epsinas_onnx.core.rewriting.computation_key import computation_key
from epsinas_onnx.core.scoring.scorer import rewrite_model
from epsinas_onnx.spaces import nb101, nb201
from tests.conftest import cifar10_batch
from tests.onnx_graphs import conv_bn_relu, image_input, init, model, out

# node 3 of both cells is avg_pool(x) + conv1x1(conv1x1(x)); the edges that differ feed nothing used
SAME_A = "|avg_pool_3x3~0|+|nor_conv_1x1~0|none~1|+|none~0|skip_connect~1|nor_conv_1x1~2|"
SAME_B = "|nor_conv_1x1~0|+|skip_connect~0|nor_conv_1x1~1|+|avg_pool_3x3~0|nor_conv_1x1~1|none~2|"
OTHER = "|avg_pool_3x3~0|+|nor_conv_3x3~0|none~1|+|none~0|skip_connect~1|nor_conv_1x1~2|"


def key_of(proto, output=None):
    staged = rewrite_model(proto, check=False)
    return computation_key(staged.rewritten.model, output or staged.output)


def test_architectures_computing_the_same_share_a_key():
    a, b, c = (key_of(nb201.to_onnx(nb201.parse(s))) for s in (SAME_A, SAME_B, OTHER))
    assert a is not None and a == b
    assert c != a


def test_key_ignores_names_but_not_values_attributes_or_input_order():
    base = conv_bn_relu()
    renamed = conv_bn_relu()
    for n in renamed.graph.node:  # node names and an intermediate value's name
        n.name = "renamed_" + n.op_type
        n.input[:] = ["conv_out" if v == "c" else v for v in n.input]
        n.output[:] = ["conv_out" if v == "c" else v for v in n.output]
    k = computation_key(ir.from_proto(base), "y")
    assert k == computation_key(ir.from_proto(renamed), "y")

    other_bn = conv_bn_relu()
    other_bn.graph.node[1].attribute[0].f = 1e-3  # epsilon
    assert computation_key(ir.from_proto(other_bn), "y") != k

    other_mean = conv_bn_relu()
    other_mean.graph.initializer[3].float_data[:] = [0.5] * 4
    other_mean.graph.initializer[3].ClearField("raw_data")
    assert computation_key(ir.from_proto(other_mean), "y") != k

    def sub(first, second):
        nodes = [helper.make_node("Sub", [first, second], ["y"])]
        inputs = [image_input("x"), image_input("z")]
        return computation_key(ir.from_proto(model(nodes, inputs, [out("y")])), "y")

    assert sub("x", "z") != sub("z", "x")


def test_control_flow_has_no_key():
    body = helper.make_graph(
        [helper.make_node("Identity", ["s_in"], ["s_out"]), helper.make_node("Identity", ["s_in"], ["scan_out"])],
        "body", [helper.make_tensor_value_info("s_in", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("s_out", TensorProto.FLOAT, [2]),
         helper.make_tensor_value_info("scan_out", TensorProto.FLOAT, [2])],
    )
    nodes = [helper.make_node("Scan", ["s0", "seq"], ["s_final", "ys"], body=body, num_scan_inputs=1)]
    inputs = [helper.make_tensor_value_info("seq", TensorProto.FLOAT, [3, 2])]
    outputs = [helper.make_tensor_value_info("ys", TensorProto.FLOAT, [3, 2])]
    m = model(nodes, inputs, outputs, [init("s0", [2], 0.0)])
    assert computation_key(ir.from_proto(m), "ys") is None


def test_bench_reuses_a_result_only_for_an_equal_key():
    x = cifar10_batch(16)
    computed = {}
    rows = [score_architecture(nb201.SPACE, nb201.parse(s), x, (1e-7, 1.0), export={}, settings={}, computed=computed)
            for s in (SAME_A, SAME_B, OTHER)]
    assert len(computed) == 2  # A ran, B reused it, OTHER ran
    assert [row["reused"] for row in rows] == [False, True, False]
    fresh = score_architecture(nb201.SPACE, nb201.parse(SAME_B), x, (1e-7, 1.0), export={}, settings={})
    for row in rows:
        assert row["error"] is None
    assert rows[1]["score"] == rows[0]["score"] or (math.isnan(rows[1]["score"]) and math.isnan(rows[0]["score"]))
    # the reused result is what B computes on its own, bit for bit
    assert fresh["score"] == rows[1]["score"] or (math.isnan(fresh["score"]) and math.isnan(rows[1]["score"]))
    assert fresh["nan_reason"] == rows[1]["nan_reason"]
    assert rows[2]["score"] != rows[0]["score"]


def _same_class_pairs(n_classes: int, seed: int):
    classes: dict = {}
    for arch in nb201.all_archs():
        classes.setdefault(nb201.computation_class(arch), []).append(arch)
    shared = sorted(name for name, members in classes.items() if len(members) > 1)
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(shared), size=n_classes, replace=False)
    return [[classes[shared[i]][j] for j in rng.choice(len(classes[shared[i]]), 2, replace=False)] for i in picks]


def test_nb201_computation_class_agrees_with_the_computation_key():
    # bench groups NAS-Bench-201 architectures by class before exporting anything:
    # equal classes must mean equal rewritten graphs, different classes different ones
    pairs = _same_class_pairs(20, seed=3)
    keys = [[key_of(nb201.to_onnx(arch)) for arch in pair] for pair in pairs]
    for (a, b), (ka, kb) in zip(pairs, keys):
        assert a != b and ka is not None and ka == kb, (a, b)
    assert len({ka for ka, _ in keys}) == len(pairs)


def test_nb201_computation_class_does_not_hold_for_random_weights():
    # the random-weight ablations draw R from each tensor's name: same class, other numbers
    a, b = nb201.parse(SAME_A), nb201.parse(SAME_B)
    assert nb201.computation_class(a) == nb201.computation_class(b)

    def random_key(arch):
        staged = rewrite_model(nb201.to_onnx(arch), check=False, weight_init="normal")
        return computation_key(staged.rewritten.model, staged.output)

    assert random_key(a) != random_key(b)


@pytest.mark.parametrize("space", [nb201.SPACE, nb101.SPACE], ids=lambda s: s.name)
def test_tied_parameters_rewrite_to_the_same_graph(space):
    # bench exports with one initialiser per kind and shape of parameter under
    # constant weights (bench.build_options): the rewritten graph must be the
    # same as from one initialiser per layer, under every constant-weight setting
    archs = space.sample(6 if space is nb201.SPACE else 3, 21)
    for settings in ({}, {"bias": "w"}, {"bn_gamma": "one"}, {"collapse": False}):
        for arch in archs:
            keys = []
            for tied in (False, True):
                staged = rewrite_model(space.to_ir(arch, tied=tied), in_place=True, **settings)
                keys.append(computation_key(staged.rewritten.model, staged.output))
            assert keys[0] is not None and keys[0] == keys[1], (arch, settings)
    tied = space.to_ir(archs[0], tied=True)
    assert len(tied.graph.initializers) < len(space.to_ir(archs[0]).graph.initializers) // 3


def test_bench_ties_parameters_only_under_constant_weights():
    from epsinas_onnx.experiments.bench import build_options

    for space in (nb201.SPACE, nb101.SPACE):
        assert build_options(space, {}) == {"tied": True}
        assert build_options(space, {"weight_init": "normal"}) == {}
