"""Bad input: one line on stderr, exit 1, no traceback, nothing written."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tests.conftest import run_cli
from tests.onnx_graphs import conv_bn_relu, model, out


@pytest.fixture
def good_model(tmp_path):
    path = tmp_path / "good.onnx"
    onnx.save(conv_bn_relu(), path)
    return path


def assert_user_error(result, *fragments):
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_missing_model(tmp_path):
    assert_user_error(run_cli("score", tmp_path / "absent.onnx"), "not found", "absent.onnx")


def test_non_onnx_file(tmp_path):
    path = tmp_path / "notes.onnx"
    path.write_text("this is not a model\n" * 20)
    assert_user_error(run_cli("score", path), "not a readable ONNX model")


def test_truncated_model(tmp_path, good_model):
    path = tmp_path / "cut.onnx"
    path.write_bytes(good_model.read_bytes()[:200])
    assert_user_error(run_cli("score", path), "truncated")


def test_model_with_no_weights(tmp_path):
    path = tmp_path / "relu.onnx"
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])
    onnx.save(model([helper.make_node("Relu", ["x"], ["y"])], [x], [out("y", 2)]), path)
    assert_user_error(run_cli("score", path), "no weights")


def test_input_shape_mismatch(tmp_path, good_model):
    data = tmp_path / "grey.npy"
    np.save(data, np.zeros((8, 8, 8, 1), dtype=np.uint8))  # 1 channel; the model takes 3
    result = run_cli("score", good_model, "--data", data, "--batch-size", 8, "--norm", "none")
    assert_user_error(result, "[batch, 3, 8, 8]", "[8, 1, 8, 8]")


def test_missing_data_file(tmp_path, good_model):
    assert_user_error(run_cli("score", good_model, "--data", tmp_path / "none.npz"), "data file not found")


def test_too_few_items(tmp_path, good_model):
    data = tmp_path / "few.npy"
    np.save(data, np.zeros((5, 8, 8, 3), dtype=np.uint8))
    assert_user_error(run_cli("score", good_model, "--data", data, "--batch-size", 16), "has 5 items", "--batch-size 5")


def test_several_inputs_need_input_option(tmp_path):
    path = tmp_path / "two.onnx"
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n", 2])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, ["n", 2])
    w = onnx.numpy_helper.from_array(np.ones((2, 2), np.float32), "w")
    nodes = [helper.make_node("Add", ["a", "b"], ["s"]), helper.make_node("MatMul", ["s", "w"], ["y"])]
    onnx.save(model(nodes, [a, b], [out("y", 2)], [w]), path)
    assert_user_error(run_cli("score", path), "2 inputs", "--input")


def test_rewrite_writes_nothing_on_error(tmp_path):
    target = tmp_path / "out.onnx"
    assert_user_error(run_cli("rewrite", tmp_path / "absent.onnx", "--weight", 1, "-o", target), "not found")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_unknown_option_is_one_line(good_model):
    assert_user_error(run_cli("score", good_model, "--wieghts", 1, 2), "--wieghts")


def test_cuda_missing_is_one_line(good_model):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has CUDA")
    assert_user_error(run_cli("score", good_model, "--device", "cuda"), "CUDA")
