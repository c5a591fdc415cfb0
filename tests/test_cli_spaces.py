"""`export` and `space`: benchmark architectures to ONNX from the command line,
and the exported models score unchanged."""

import json

import onnx
import pytest

from epsinas_onnx.spaces import nb101, nb201, nlp
from tests.conftest import run_cli

NB201_ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
NB101_ARCH = json.dumps({
    "matrix": [[0, 1, 1, 0, 0, 0, 1], [0, 0, 0, 1, 0, 0, 0], [0, 0, 0, 0, 1, 0, 0], [0, 0, 0, 0, 0, 1, 0],
               [0, 0, 0, 0, 0, 1, 0], [0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 0]],
    "ops": ["input", "conv3x3-bn-relu", "conv1x1-bn-relu", "conv3x3-bn-relu", "maxpool3x3", "conv3x3-bn-relu", "output"],
})


def test_export_nb201_then_score(tmp_path):
    path = tmp_path / "a.onnx"
    result = run_cli("export", "nb201", NB201_ARCH, "-o", path)
    assert result.returncode == 0, result.stderr
    onnx.checker.check_model(onnx.load(path))
    scored = run_cli("score", path, "--batch-size", 8, "--format", "json")
    assert scored.returncode == 0, scored.stderr
    assert json.loads(scored.stdout)["score"] > 0


def test_export_nb101_from_json_and_from_file(tmp_path):
    assert run_cli("export", "nb101", NB101_ARCH, "-o", tmp_path / "a.onnx").returncode == 0
    (tmp_path / "cell.json").write_text(NB101_ARCH)
    assert run_cli("export", "nb101", tmp_path / "cell.json", "-o", tmp_path / "b.onnx").returncode == 0
    assert onnx.load(tmp_path / "a.onnx").graph.node == onnx.load(tmp_path / "b.onnx").graph.node


def test_export_nlp_recipe_file_then_score(tmp_path, shared_data):
    recipe = tmp_path / "recipe.json"
    recipe.write_text(nlp.load_recipes()[0]["arch"])
    path = tmp_path / "rnn.onnx"
    result = run_cli("export", "nlp", recipe, "-o", path, "--vocab-size", 100)
    assert result.returncode == 0, result.stderr
    scored = run_cli("score", path, "--weights", "1e-5", "1e-3", "--batch-size", 4, "--seq-len", 5, "--format", "json")
    assert scored.returncode == 0, scored.stderr
    payload = json.loads(scored.stdout)
    assert payload["score"] is not None or payload["nan_reason"]


@pytest.mark.parametrize("space, arch", [("nb201", "|bad~0|"), ("nb101", "{\"matrix\": [[0]]}"), ("nlp", "{\"x\": 1}")])
def test_malformed_arch_is_one_line(tmp_path, space, arch):
    result = run_cli("export", space, arch, "-o", tmp_path / "m.onnx")
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("error: ")
    assert not (tmp_path / "m.onnx").exists()


def test_option_that_does_not_apply(tmp_path):
    result = run_cli("export", "nb201", NB201_ARCH, "-o", tmp_path / "m.onnx", "--vocab-size", 5)
    assert result.returncode == 1 and "--vocab-size does not apply to nb201" in result.stderr


def test_space_sample_is_repeatable_and_valid():
    first = run_cli("space", "nb201", "--sample", 5, "--seed", 3)
    again = run_cli("space", "nb201", "--sample", 5, "--seed", 3)
    assert first.returncode == 0 and first.stdout == again.stdout
    lines = first.stdout.split()
    assert len(lines) == 5 and all(nb201.parse(line) for line in lines)


def test_space_params_and_nb101_sample():
    result = run_cli("space", "nb101", "--sample", 2, "--params")
    assert result.returncode == 0, result.stderr
    for line in result.stdout.strip().splitlines():
        text, params = line.split("\t")
        assert nb101.num_params(nb101.parse(text)) == int(params)
