"""`export` and `space`: benchmark architectures to ONNX from the command line,
and the exported models score unchanged."""

import json

import onnx
import pytest

from epsinas_onnx.spaces import nb101, nb201, nlp
from tests.conftest import run_cli_in_process

NB201_ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
NB101_ARCH = json.dumps({
    "matrix": [[0, 1, 1, 0, 0, 0, 1], [0, 0, 0, 1, 0, 0, 0], [0, 0, 0, 0, 1, 0, 0], [0, 0, 0, 0, 0, 1, 0],
               [0, 0, 0, 0, 0, 1, 0], [0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 0]],
    "ops": ["input", "conv3x3-bn-relu", "conv1x1-bn-relu", "conv3x3-bn-relu", "maxpool3x3", "conv3x3-bn-relu", "output"],
})


def test_export_nb201_then_score(tmp_path):
    path = tmp_path / "a.onnx"
    result = run_cli_in_process("export", "nb201", NB201_ARCH, "-o", path)
    assert result.returncode == 0, result.stderr
    onnx.checker.check_model(onnx.load(path))
    scored = run_cli_in_process("score", path, "--batch-size", 8, "--format", "json")
    assert scored.returncode == 0, scored.stderr
    assert json.loads(scored.stdout)["score"] > 0


def test_export_nb101_from_json_and_from_file(tmp_path):
    assert run_cli_in_process("export", "nb101", NB101_ARCH, "-o", tmp_path / "a.onnx").returncode == 0
    (tmp_path / "cell.json").write_text(NB101_ARCH)
    assert run_cli_in_process("export", "nb101", tmp_path / "cell.json", "-o", tmp_path / "b.onnx").returncode == 0
    assert onnx.load(tmp_path / "a.onnx").graph.node == onnx.load(tmp_path / "b.onnx").graph.node


def test_export_nlp_recipe_file_then_score(tmp_path):
    recipe = tmp_path / "recipe.json"
    recipe.write_text(nlp.load_recipes()[0]["arch"])
    path = tmp_path / "rnn.onnx"
    result = run_cli_in_process("export", "nlp", recipe, "-o", path, "--vocab-size", 100)
    assert result.returncode == 0, result.stderr
    scored = run_cli_in_process("score", path, "--weights", "1e-5", "1e-3", "--batch-size", 4, "--seq-len", 5, "--format", "json")
    assert scored.returncode == 0, scored.stderr
    payload = json.loads(scored.stdout)
    assert payload["score"] is not None or payload["nan_reason"]


@pytest.mark.parametrize("space, arch", [("nb201", "|bad~0|"), ("nb101", "{\"matrix\": [[0]]}"), ("nlp", "{\"x\": 1}")])
def test_malformed_arch_is_one_line(tmp_path, space, arch):
    result = run_cli_in_process("export", space, arch, "-o", tmp_path / "m.onnx")
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("error: ")
    assert not (tmp_path / "m.onnx").exists()


def test_option_that_does_not_apply(tmp_path):
    result = run_cli_in_process("export", "nb201", NB201_ARCH, "-o", tmp_path / "m.onnx", "--vocab-size", 5)
    assert result.returncode == 1 and "--vocab-size does not apply to nb201" in result.stderr


def test_space_sample_is_repeatable_and_valid():
    first = run_cli_in_process("space", "nb201", "--sample", 5, "--seed", 3)
    again = run_cli_in_process("space", "nb201", "--sample", 5, "--seed", 3)
    assert first.returncode == 0 and first.stdout == again.stdout
    lines = first.stdout.split()
    assert len(lines) == 5 and all(nb201.parse(line) for line in lines)


def test_space_params_and_nb101_sample():
    result = run_cli_in_process("space", "nb101", "--sample", 2, "--params")
    assert result.returncode == 0, result.stderr
    for line in result.stdout.strip().splitlines():
        text, params = line.split("\t")
        assert nb101.num_params(nb101.parse(text)) == int(params)


def test_an_exported_model_is_scored_at_its_spaces_pair(tmp_path, capsys):
    """`export` records the space and its reference pair in the model's
    metadata; `score` without --weights takes that pair and says so."""
    from epsinas_onnx.cli import main

    path = tmp_path / "cell.onnx"
    assert main(["export", "nb101", NB101_ARCH, "-o", str(path)]) == 0
    meta = {p.key: p.value for p in onnx.load(path).metadata_props}
    assert meta["epsinas.space"] == "nb101" and [float(w) for w in meta["epsinas.weights"].split()] == [1e-4, 10.0]
    capsys.readouterr()

    def scored(*extra):
        assert main(["score", str(path), "--batch-size", "8", "--format", "json", *extra]) == 0
        return json.loads(capsys.readouterr().out)

    row = scored()
    assert row["weights"] == [1e-4, 10.0] and row["scored_weights"] == [1e-4, 10.0] and row["score"] is not None
    assert any("nb101's reference pair" in w and "metadata" in w for w in row["warnings"])
    assert scored("--weights", "1e-4", "10")["score"] == row["score"]  # the same as naming the pair
    at_nb201 = scored("--weights", "1e-7", "1")  # the pair every model got before: this cell is NaN there
    assert at_nb201["score"] is None and at_nb201["nan_reason"].startswith("constant output at w = 1e-07")


def test_an_exported_nlp_model_is_scored_at_the_nlp_pair(tmp_path, capsys):
    from epsinas_onnx.cli import main
    from tests.conftest import ROOT

    path = tmp_path / "rnn.onnx"
    assert main(["export", "nlp", str(ROOT / "examples" / "nlp_recipe.json"), "-o", str(path), "--vocab-size", "50"]) == 0
    capsys.readouterr()
    assert main(["score", str(path), "--batch-size", "4", "--seq-len", "5", "--format", "json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["weights"] == [1e-5, 1e-3] and any("nlp's reference pair" in w for w in row["warnings"])
