"""Loading a model whose weights are external data: checked at load, read
only when their values are asked for (model_io.ExternalData)."""

import os

import numpy as np
import onnx
import pytest
from onnx import helper

from epsinas_onnx.core.errors import UserError
from epsinas_onnx.core.scoring import model_io
from epsinas_onnx.core.scoring.scorer import score
from tests.onnx_graphs import conv_bn_relu, image_input, init, out


def shifted_conv_bn_relu() -> onnx.ModelProto:
    """conv_bn_relu, then + shift: a constant the rewrite keeps (its values reach the score)."""
    m = conv_bn_relu()
    m.graph.node[-1].output[0] = "r"
    m.graph.node.append(helper.make_node("Add", ["r", "shift"], ["y"]))
    m.graph.initializer.append(init("shift", [1, 4, 1, 1]))
    onnx.checker.check_model(m)
    return m


def save_external(m: onnx.ModelProto, folder, name="ext.onnx"):
    """`m` saved with every tensor in one external file (`m` itself unchanged)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(m)
    path = folder / name
    onnx.save(copy, path, save_as_external_data=True, location=f"{name}.data", size_threshold=0)
    return path


@pytest.fixture
def reads(monkeypatch):
    """The names of the external tensors read from their file while the test runs."""
    names = []
    read = model_io.ExternalData.read

    def counted(self, path):
        names.append(self.name)
        return read(self, path)

    monkeypatch.setattr(model_io.ExternalData, "read", counted)
    return names


def test_a_score_reads_only_the_external_tensors_it_keeps(tmp_path, reads):
    m = shifted_conv_bn_relu()
    path = save_external(m, tmp_path)
    result = score(path, batch_size=4, device="cpu", synthetic="uniform")
    # the conv weight is replaced by the shared constant: its bytes are never read (only its
    # shape); the shift's are, and its values reach the score
    assert "conv.w" not in reads
    assert "shift" in reads
    inline = score(m, batch_size=4, device="cpu", synthetic="uniform")
    assert result.score == inline.score and not np.isnan(result.score)


def test_a_deferred_tensor_holds_the_file_bytes(tmp_path):
    m = shifted_conv_bn_relu()
    loaded = model_io.load_model(save_external(m, tmp_path))
    for tensor in m.graph.initializer:
        value = loaded.graph.initializers[tensor.name].const_value
        assert value.shape == tuple(tensor.dims)
        np.testing.assert_array_equal(value.numpy(), onnx.numpy_helper.to_array(tensor))


@pytest.mark.parametrize("damage", ["truncated", "symlink", "removed"])
def test_a_deferred_tensor_is_checked_again_when_read(tmp_path, damage):
    """The file is checked when the model loads and again on each read: one
    changed in between is refused with one line, as at load."""
    path = save_external(shifted_conv_bn_relu(), tmp_path)
    loaded = model_io.load_model(path)
    data = tmp_path / "ext.onnx.data"
    if damage == "truncated":
        data.write_bytes(data.read_bytes()[:10])
        fragment = "is the file truncated?"
    elif damage == "symlink":
        (tmp_path / "real.data").write_bytes(data.read_bytes())
        data.unlink()
        os.symlink("real.data", data)
        fragment = "a symbolic link"
    else:
        data.unlink()
        fragment = "which is missing next to the model"
    with pytest.raises(UserError, match=fragment):
        loaded.graph.initializers["shift"].const_value.numpy()


def test_the_checker_still_sees_a_model_with_deferred_weights(tmp_path):
    """The deferred weights stand as inputs for onnx.checker: what it refuses
    elsewhere in the graph is still refused."""
    nodes = [helper.make_node("Conv", ["x", "conv.w"], ["c"]), helper.make_node("Relu", ["undefined"], ["y"])]
    graph = helper.make_graph(nodes, "g", [image_input()], [out("y")], [init("conv.w", [4, 3, 3, 3])])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    path = save_external(m, tmp_path)
    with pytest.raises(UserError, match="fails the ONNX checker"):
        model_io.load_model(path)


def test_two_deferred_weights_of_one_name_are_refused(tmp_path):
    m = conv_bn_relu()
    m.graph.initializer.append(init("conv.w", [4, 3, 3, 3]))
    path = save_external(m, tmp_path)
    with pytest.raises(UserError, match="fails the ONNX checker"):
        model_io.load_model(path)
