"""`score A.onnx B.onnx ...`: every model on the same batch, ranked, NaN last
with its reason; one model keeps the single-model output."""

import json
import math

import pytest

from epsinas_onnx.spaces import nb201
from tests.conftest import run_cli_in_process

ARCHS = {
    "conv.onnx": "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|",
    "mixed.onnx": "|nor_conv_1x1~0|+|skip_connect~0|avg_pool_3x3~1|+|nor_conv_3x3~0|none~1|skip_connect~2|",
    "pool.onnx": "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|avg_pool_3x3~0|skip_connect~1|nor_conv_1x1~2|",
    "empty.onnx": "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|",  # a constant output: NaN
}
COMMON = ("--batch-size", 8)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("candidates")
    for name, arch in ARCHS.items():
        (folder / name).write_bytes(nb201.to_onnx(nb201.parse(arch)).SerializeToString())
    (folder / "notes.txt").write_text("not a model")
    return folder


def single(path):
    result = run_cli_in_process("score", path, *COMMON, "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_one_model_keeps_the_single_output(models):
    row = single(models / "conv.onnx")
    assert isinstance(row, dict) and list(row)[:3] == ["model", "score", "nan_reason"]
    table = run_cli_in_process("score", models / "conv.onnx", *COMMON)
    assert [line.split()[0] for line in table.stdout.splitlines()] == list(row)


def test_several_models_are_ranked_on_the_same_batch(models):
    names = ["pool.onnx", "empty.onnx", "conv.onnx", "mixed.onnx"]
    result = run_cli_in_process("score", *(models / n for n in names), *COMMON, "--format", "json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    alone = {n: single(models / n) for n in names}
    numbers = sorted((n for n in names if alone[n]["score"] is not None), key=lambda n: -alone[n]["score"])
    assert [r["model"] for r in rows] == [str(models / n) for n in numbers + ["empty.onnx"]]
    for row in rows:
        own = alone[row["model"].rsplit("/", 1)[1]]
        assert row["score"] == own["score"] and row["input"] == own["input"]  # bit for bit: the same batch
    assert [r["rank"] for r in rows] == [1, 2, 3, None]
    assert rows[-1]["score"] is None and "constant output" in rows[-1]["nan_reason"]


def test_a_folder_is_its_onnx_files_and_the_table_puts_nan_last(models):
    result = run_cli_in_process("score", models, *COMMON)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["rank", "score", "mode", "scored_weights", "model", "note"]
    assert len(lines) == 1 + len(ARCHS)  # notes.txt is not a model
    assert lines[-1].split()[:3] == ["nan", "reference", str(models / "empty.onnx")] and "constant output" in lines[-1]
    assert all(line.split()[2:5] == ["reference", "1e-07", "1"] for line in lines[1:-1])  # the pair each score is of
    scores = [float(line.split()[1]) for line in lines[1:-1]]
    assert scores == sorted(scores, reverse=True) and not any(math.isnan(s) for s in scores)


def test_a_model_that_fails_is_on_its_row_and_the_exit_is_1(models, tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    result = run_cli_in_process("score", models / "conv.onnx", broken, models / "pool.onnx", *COMMON, "--format", "csv")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == ["error: 1 of 3 models could not be scored (their rows say why)"]
    header, *rows = result.stdout.splitlines()
    assert header.split(",")[:5] == ["rank", "model", "score", "nan_reason", "error"]
    assert rows[-1].startswith(f",{broken},,,") and "not a readable ONNX model" in rows[-1]
    assert [r.split(",")[0] for r in rows] == ["1", "2", ""]


def test_when_no_model_can_be_scored_it_is_one_line(models, tmp_path):
    result = run_cli_in_process("score", models / "conv.onnx", models / "pool.onnx", "--data", tmp_path / "absent.npz")
    assert result.returncode == 1 and not result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "data file not found" in lines[0] and "Traceback" not in result.stderr
    (tmp_path / "nothing").mkdir()
    result = run_cli_in_process("score", tmp_path / "nothing")
    assert result.returncode == 1 and result.stderr.strip() == f"error: {tmp_path / 'nothing'} is a folder with no .onnx file in it"
