"""Bad input: one line on stderr, exit 1, no traceback, nothing written."""

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tests.conftest import run_cli_in_process
from tests.onnx_graphs import conv_bn_relu, image_input, init, model, out


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
    assert_user_error(run_cli_in_process("score", tmp_path / "absent.onnx"), "not found", "absent.onnx")


def test_non_onnx_file(tmp_path):
    path = tmp_path / "notes.onnx"
    path.write_text("this is not a model\n" * 20)
    assert_user_error(run_cli_in_process("score", path), "not a readable ONNX model")


def test_truncated_model(tmp_path, good_model):
    path = tmp_path / "cut.onnx"
    path.write_bytes(good_model.read_bytes()[:200])
    assert_user_error(run_cli_in_process("score", path), "truncated")


def test_model_with_no_weights(tmp_path):
    path = tmp_path / "relu.onnx"
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])
    onnx.save(model([helper.make_node("Relu", ["x"], ["y"])], [x], [out("y", 2)]), path)
    assert_user_error(run_cli_in_process("score", path), "no weights")


def test_input_shape_mismatch(tmp_path, good_model):
    data = tmp_path / "grey.npy"
    np.save(data, np.zeros((8, 8, 8, 1), dtype=np.uint8))  # 1 channel; the model takes 3
    result = run_cli_in_process("score", good_model, "--data", data, "--batch-size", 8, "--norm", "none")
    assert_user_error(result, "[batch, 3, 8, 8]", "[8, 1, 8, 8]")


def test_missing_data_file(tmp_path, good_model):
    assert_user_error(run_cli_in_process("score", good_model, "--data", tmp_path / "none.npz"), "data file not found")


def test_too_few_items(tmp_path, good_model):
    data = tmp_path / "few.npy"
    np.save(data, np.zeros((5, 8, 8, 3), dtype=np.uint8))
    assert_user_error(run_cli_in_process("score", good_model, "--data", data, "--batch-size", 16), "has 5 items", "--batch-size 5")


def test_several_inputs_need_input_option(tmp_path):
    path = tmp_path / "two.onnx"
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n", 2])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, ["n", 2])
    w = onnx.numpy_helper.from_array(np.ones((2, 2), np.float32), "w")
    nodes = [helper.make_node("Add", ["a", "b"], ["s"]), helper.make_node("MatMul", ["s", "w"], ["y"])]
    onnx.save(model(nodes, [a, b], [out("y", 2)], [w]), path)
    assert_user_error(run_cli_in_process("score", path), "2 inputs", "--input")


def test_rewrite_writes_nothing_on_error(tmp_path):
    target = tmp_path / "out.onnx"
    assert_user_error(run_cli_in_process("rewrite", tmp_path / "absent.onnx", "--weight", 1, "-o", target), "not found")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_unknown_option_is_one_line(good_model):
    assert_user_error(run_cli_in_process("score", good_model, "--wieghts", 1, 2), "--wieghts")


def test_cuda_missing_is_one_line(good_model):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has CUDA")
    assert_user_error(run_cli_in_process("score", good_model, "--device", "cuda"), "CUDA")


# ---------------------------------------------------------------- in-process (no interpreter start-up each)


def main_result(capsys, *args):
    from epsinas_onnx.cli import main

    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line(code, err, *fragments):
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def tokens_model():
    tokens = helper.make_tensor_value_info("tokens", TensorProto.INT64, ["seq", "batch"])
    nodes = [helper.make_node("Gather", ["emb", "tokens"], ["e"]), helper.make_node("MatMul", ["e", "proj"], ["y"])]
    return model(nodes, [tokens], [out("y", 3)], [init("emb", [10, 4]), init("proj", [4, 3])])


def test_unreadable_path(capsys):
    # /proc/self/mem exists but reading it from offset 0 fails (EIO), even for root
    code, _, err = main_result(capsys, "score", "/proc/self/mem")
    assert_one_line(code, err, "cannot read /proc/self/mem", "Input/output error")


def test_directory_as_model(capsys, tmp_path):
    # score ranks the *.onnx of a folder; rewrite takes one file
    code, _, err = main_result(capsys, "score", tmp_path)
    assert_one_line(code, err, "is a folder with no .onnx file in it")
    code, _, err = main_result(capsys, "rewrite", tmp_path, "--explain")
    assert_one_line(code, err, "is a directory")


def test_model_failing_the_onnx_checker(capsys, tmp_path):
    broken = conv_bn_relu()
    broken.graph.node[1].input[0] = "nowhere"  # BN reads a value nothing produces
    path = tmp_path / "dangling.onnx"
    onnx.save(broken, path)
    assert_one_line(*main_result(capsys, "score", path)[::2], "fails the ONNX checker", "nowhere")


def test_checker_passes_but_the_graph_is_corrupt(capsys, tmp_path):
    """A dimension name that is not UTF-8: onnx's checker lets it through, the graph reader does not."""
    corrupt = conv_bn_relu()
    corrupt.graph.output[0].type.tensor_type.shape.dim[3].dim_param = "y_3"
    raw = corrupt.SerializeToString().replace(b"y_3", b"\x80_3")
    path = tmp_path / "corrupt.onnx"
    path.write_bytes(raw)
    assert_one_line(*main_result(capsys, "score", path)[::2], "cannot be read as an ONNX graph", "corrupted")


def test_op_onnx_runtime_cannot_run(capsys, tmp_path):
    custom = conv_bn_relu()
    custom.graph.node[2].domain = "com.example"  # Relu from a domain ONNX Runtime has no kernels for
    custom.opset_import.append(helper.make_opsetid("com.example", 1))
    path = tmp_path / "custom.onnx"
    onnx.save(custom, path)
    assert_one_line(*main_result(capsys, "score", path, "--batch-size", 2)[::2],
                    "ONNX Runtime cannot load", "com.example")


@pytest.mark.parametrize("case", ["images for tokens", "text for images", "synthetic for tokens"])
def test_token_inputs_and_images_mixed_up(capsys, tmp_path, good_model, case):
    tokens = tmp_path / "tokens.onnx"
    onnx.save(tokens_model(), tokens)
    np.savez(tmp_path / "images.npz", images=np.zeros((4, 8, 8, 3), np.uint8))
    (tmp_path / "text.txt").write_text("a b c\n" * 20)
    args, fragment = {
        "images for tokens": ((tokens, "--data", tmp_path / "images.npz"), "takes integer token ids"),
        "text for images": ((good_model, "--data", tmp_path / "text.txt"), "a text file is only for token models"),
        "synthetic for tokens": ((tokens, "--synthetic", "grey"), "takes integer token ids"),
    }[case]
    assert_one_line(*main_result(capsys, "score", *args, "--batch-size", 2)[::2], fragment)


def test_external_weights_next_to_the_model_work(capsys, tmp_path):
    path = tmp_path / "ext.onnx"
    onnx.save(conv_bn_relu(), path, save_as_external_data=True, location="ext.onnx.data", size_threshold=0)
    inline = tmp_path / "inline.onnx"
    onnx.save(conv_bn_relu(), inline)
    scores = []
    for model_path in (path, inline):
        code, stdout, err = main_result(capsys, "score", model_path, "--batch-size", 4, "--format", "json")
        assert code == 0, err
        scores.append(json.loads(stdout)["score"])
    assert scores[0] is not None and scores[0] == scores[1]


@pytest.mark.parametrize("damage", ["missing", "short"])
def test_external_weights_missing_or_short(capsys, tmp_path, damage):
    path = tmp_path / "ext.onnx"
    onnx.save(conv_bn_relu(), path, save_as_external_data=True, location="ext.onnx.data", size_threshold=0)
    data = tmp_path / "ext.onnx.data"
    if damage == "missing":
        data.unlink()
        fragment = "'ext.onnx.data', which is missing next to the model"
    else:
        data.write_bytes(data.read_bytes()[:10])
        fragment = "is the file truncated?"
    assert_one_line(*main_result(capsys, "score", path, "--batch-size", 4)[::2], fragment)


def test_non_finite_outputs_are_a_nan_with_its_reason(capsys, tmp_path):
    path = tmp_path / "exp.onnx"
    nodes = [helper.make_node("Conv", ["x", "conv.w"], ["c"]), helper.make_node("Exp", ["c"], ["y"])]
    onnx.save(model(nodes, [image_input()], [out("y")], [init("conv.w", [2, 3, 1, 1])]), path)
    code, stdout, err = main_result(capsys, "score", path, "--batch-size", 4, "--weights", 1, 100, "--format", "json")
    assert code == 0, err
    payload = json.loads(stdout)
    assert payload["score"] is None
    assert payload["nan_reason"].startswith("non-finite output at w = 100")


def test_batch_too_large_to_allocate(capsys, good_model):
    assert_one_line(*main_result(capsys, "score", good_model, "--batch-size", 10**12)[::2], "GiB",
                    "smaller --batch-size")


def test_batch_that_fits_but_leaves_no_room_to_score_is_refused_before_it_is_made(capsys, good_model, monkeypatch):
    # 10^7 images of 3x8x8 drawn in float64: 14.3 GiB, which the allocator would
    # grant on this machine; scoring it would then end in the out-of-memory killer
    from epsinas_onnx.core.scoring import inputs

    monkeypatch.setattr(inputs, "available_memory", lambda: 20 * 2**30)
    code, err = main_result(capsys, "score", good_model, "--batch-size", 10**7)[::2]
    assert_one_line(code, err, "14.3 GiB to make", "20.0 GiB available", "smaller --batch-size")


@pytest.mark.parametrize("args, fragment", [
    (("--seq-len", "0"), "--seq-len"),
    (("--seed", "-1"), "--seed"),
    (("--threads", "-2"), "--threads"),
])
def test_out_of_range_numbers(capsys, good_model, args, fragment):
    assert_one_line(*main_result(capsys, "score", good_model, *args)[::2], fragment)


def test_zero_dimensional_data(capsys, tmp_path, good_model):
    np.save(tmp_path / "one.npy", np.float32(1.0))
    assert_one_line(*main_result(capsys, "score", good_model, "--data", tmp_path / "one.npy", "--batch-size", 1)[::2],
                    "not a batch of images")


def test_rewrite_refuses_a_non_finite_weight(capsys, tmp_path, good_model):
    target = tmp_path / "out.onnx"
    assert_one_line(*main_result(capsys, "rewrite", good_model, "--weight", "nan", "-o", target)[::2], "--weight")
    assert not target.exists()
