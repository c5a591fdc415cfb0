"""RemoveDeadNodesPass: dead nodes go (chains too, inside a Scan body too),
live ones and the graph's signature stay, and the model computes the same."""

import numpy as np
import onnx_ir as ir
import onnxruntime as ort
from onnx import TensorProto, helper

from epsinas_onnx.core.rewriting.passes.dead_nodes import RemoveDeadNodesPass
from tests.onnx_graphs import init, model


def _vector(name):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [4])


def _scan_model():
    # the body computes a dead Neg -> Exp chain besides the live Add
    body = helper.make_graph(
        [
            helper.make_node("Add", ["state", "item"], ["next"]),
            helper.make_node("Neg", ["item"], ["negated"]),
            helper.make_node("Exp", ["negated"], ["unused"]),
            helper.make_node("Identity", ["next"], ["scanned"]),
        ],
        "body",
        [helper.make_tensor_value_info("state", TensorProto.FLOAT, [4]),
         helper.make_tensor_value_info("item", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("next", TensorProto.FLOAT, [4]),
         helper.make_tensor_value_info("scanned", TensorProto.FLOAT, [4])],
    )
    nodes = [
        helper.make_node("Mul", ["x", "w"], ["xw"]),
        helper.make_node("Relu", ["xw"], ["dead_relu"]),  # dead chain: Relu -> Sigmoid, and the initialiser it reads
        helper.make_node("Mul", ["dead_relu", "only_dead"], ["dead_scaled"]),
        helper.make_node("Sigmoid", ["dead_scaled"], ["dead_out"]),
        helper.make_node("Scan", ["init_state", "seq"], ["final", "all"], body=body, num_scan_inputs=1),
        helper.make_node("Add", ["xw", "final"], ["y"]),
    ]
    inputs = [_vector("x"), _vector("init_state"), helper.make_tensor_value_info("seq", TensorProto.FLOAT, [3, 4])]
    return model(nodes, inputs, [_vector("y")], [init("w", [4]), init("only_dead", [4])])


def _run(proto, feeds):
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def test_dead_nodes_and_initialisers_go_everywhere_and_the_result_stays():
    proto = _scan_model()
    rng = np.random.default_rng(0)
    feeds = {"x": rng.normal(size=4).astype(np.float32), "init_state": rng.normal(size=4).astype(np.float32),
             "seq": rng.normal(size=(3, 4)).astype(np.float32)}
    before = _run(proto, feeds)
    ir_model = ir.from_proto(proto)
    result = RemoveDeadNodesPass()(ir_model)
    assert result.modified
    main = [n.op_type for n in ir_model.graph]
    assert main == ["Mul", "Scan", "Add"]
    scan = next(n for n in ir_model.graph if n.op_type == "Scan")
    assert [n.op_type for n in scan.attributes["body"].as_graph()] == ["Add", "Identity"]
    assert set(ir_model.graph.initializers) == {"w"}
    assert [v.name for v in ir_model.graph.inputs] == ["x", "init_state", "seq"]
    after = _run(ir.to_proto(ir_model), feeds)
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
    assert not RemoveDeadNodesPass()(ir_model).modified


def test_a_graph_output_keeps_its_producer():
    proto = model([helper.make_node("Neg", ["x"], ["y"]), helper.make_node("Exp", ["x"], ["z"])],
                  [_vector("x")], [_vector("y"), _vector("z")])
    ir_model = ir.from_proto(proto)
    assert not RemoveDeadNodesPass()(ir_model).modified
    assert [n.op_type for n in ir_model.graph] == ["Neg", "Exp"]
