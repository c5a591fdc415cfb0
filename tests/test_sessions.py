"""ONNX Runtime sessions' memory: the process's first CPU session runs without
an arena, later ones share the process's arena (runtime.make_session)."""

import pytest
from onnx import TensorProto, helper

from epsinas_onnx.core.errors import UserError
from epsinas_onnx.core.scoring import runtime


def relu_payload() -> bytes:
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def test_the_first_cpu_session_holds_no_arena_and_later_ones_share(monkeypatch):
    monkeypatch.setattr(runtime, "_CPU_SESSION_MADE", [])  # as in a fresh process
    shared = []
    share = runtime.share_cpu_arena
    monkeypatch.setattr(runtime, "share_cpu_arena", lambda options: shared.append(options) or share(options))
    first = runtime.make_session(relu_payload(), ["CPUExecutionProvider"], threads=1)
    assert shared == []
    assert first.get_session_options().enable_cpu_mem_arena is False
    runtime.make_session(relu_payload(), ["CPUExecutionProvider"], threads=1)
    runtime.make_session(relu_payload(), ["CPUExecutionProvider"], threads=1)
    assert len(shared) == 2


def test_pieces_share_the_arena_from_the_first_session(monkeypatch):
    monkeypatch.setattr(runtime, "_CPU_SESSION_MADE", [])
    shared = []
    share = runtime.share_cpu_arena
    monkeypatch.setattr(runtime, "share_cpu_arena", lambda options: shared.append(options) or share(options))
    runtime.make_session(relu_payload(), ["CPUExecutionProvider"], threads=1, shared_arena=True)
    assert len(shared) == 1


def test_a_session_that_fails_to_open_is_not_counted(monkeypatch):
    monkeypatch.setattr(runtime, "_CPU_SESSION_MADE", [])
    with pytest.raises(UserError, match="cannot load the rewritten model"):
        runtime.make_session(b"not a model", ["CPUExecutionProvider"], threads=1)
    assert runtime._CPU_SESSION_MADE == []
