"""Models exported from other frameworks (models/, made by
models/make_framework_models.py and models/make_keras_models.py): the role
table finds every weight and misclassifies nothing, and the score equals the
one the framework computed with its own reference-initialised network
(models/expected_scores.json). Needs only the committed files."""

import json
import math

import pytest

import epsinas_onnx
from epsinas_onnx.cli import main
from epsinas_onnx.core.scoring.model_io import load_model
from epsinas_onnx.core.rewriting.rewrite import explain_roles
from tests.conftest import CIFAR10, CIFAR10_IMAGES, ROOT, SHARED_DATA

MODELS = ROOT / "models"
EXPECTED = json.loads((MODELS / "expected_scores.json").read_text())["models"]
FOLDED_WARNING = "folded BatchNormalization into"


def score_kwargs(record: dict) -> dict:
    """The record's score options; its data file, a file of the development data folder, read
    from the committed cut of it where that holds the images scored (the first batch_size)."""
    kwargs = dict(record["score_kwargs"])
    if "data" in kwargs:
        if kwargs["data"] == "inputs/cifar10_test_1000.npz" and kwargs["batch_size"] <= CIFAR10_IMAGES:
            kwargs["data"] = CIFAR10
        elif not SHARED_DATA.exists():
            pytest.skip(f"needs the development data folder {SHARED_DATA}, absent here (tests/data/README.md)")
        else:
            kwargs["data"] = SHARED_DATA / kwargs["data"]
    return kwargs


def close(actual: float, expected: float) -> bool:
    """Within 1e-5 relative, or 1e-6 absolute: the rounding noise of a mean
    over float32-normalised outputs, which decides only for tiny scores (a
    score of ~1e-7 is two near-identical outputs, and its digits are noise)."""
    return abs(actual - expected) <= max(1e-5 * abs(expected), 1e-6)


@pytest.mark.parametrize("name", [n for n, r in EXPECTED.items() if "bn_folded" not in r])
def test_role_table_matches_the_framework_parameters(name):
    """Every framework parameter (matched to its tensor by value) has the role
    of its kind; every other tensor is 'other'."""
    record = EXPECTED[name]
    table = {r.name: r.role.value for r in explain_roles(load_model(MODELS / name))}
    missing = set(record["roles"]) - set(table)
    assert not missing, f"tensors not in the role table: {missing}"
    wrong = {t: (table[t], want) for t, want in record["roles"].items() if table[t] != want}
    assert not wrong, f"(found, expected): {wrong}"
    extra = {t: role for t, role in table.items() if t not in record["roles"] and role != "other"}
    assert not extra, f"integer tensors given a role: {extra}"
    # the ground truth is not vacuous: each model has weights the framework made
    assert sum(role == "weight" for role in record["roles"].values()) >= 3


@pytest.mark.parametrize("name", [n for n, r in EXPECTED.items() if "bn_folded" not in r and "not_comparable" not in r])
def test_score_equals_the_framework_score(name):
    record = EXPECTED[name]
    kwargs = score_kwargs(record)
    for row in record["expected"]:
        result = epsinas_onnx.score(MODELS / name, weights=row["weights"], device="cpu", **kwargs)
        assert not result.warnings, result.warnings
        if row["score"] is None:
            assert math.isnan(result.score) and result.nan_reason, (row, result)
            continue
        # float32 as the reference computes it; where the framework's float32 kernels round differently
        # (Keras's Conv + fused BN: 1.2e-5), the float64 score decides which side is right
        assert close(result.score, row["score"]) or close(result.score, row["score_float64"]), (row, result.score)


def test_transformer_scores_are_float32_noise():
    """The transformer's float32 score is rounding noise (see its
    not_comparable note): in float64 the framework's score is ~0, so there
    is no digit to compare. What the scorer must still do: read the three
    exports' different graphs (dynamo; TorchScript; TorchScript at opset 16,
    LayerNorm written out in primitive ops) as the same function."""
    names = ["torch_dynamo_transformer.onnx", "torch_script_transformer.onnx", "torch_script_opset16_transformer.onnx"]
    for name in names:
        assert "not_comparable" in EXPECTED[name]
        for row in EXPECTED[name]["expected"]:
            assert row["score_float64"] is not None and row["score_float64"] < 1e-9
    kwargs = score_kwargs(EXPECTED[names[0]])
    for row in EXPECTED[names[0]]["expected"]:
        scores = [epsinas_onnx.score(MODELS / n, weights=row["weights"], device="cpu", **kwargs).score for n in names]
        assert scores[1] == pytest.approx(scores[0], rel=1e-5, abs=1e-6), scores
        assert scores[2] == pytest.approx(scores[0], rel=1e-5, abs=1e-6), scores


def test_keras3_folded_batchnorm_is_reported():
    """Keras 3 BN does not survive tf2onnx (TensorFlow folds it while freezing):
    the scorer says so, and the score then differs from Keras's batch-statistics one."""
    name = "keras3_cnn_bn_folded.onnx"
    record = EXPECTED[name]
    row = next(r for r in record["expected"] if r["score"] is not None and r["score"] > 1e-3)
    result = epsinas_onnx.score(MODELS / name, weights=row["weights"], device="cpu", **score_kwargs(record))
    assert any(FOLDED_WARNING in w for w in result.warnings), result.warnings
    assert not close(result.score, row["score"])


def test_rewrite_explain_lists_recurrent_roles(capsys):
    assert main(["rewrite", str(MODELS / "torch_dynamo_lstm_lm.onnx"), "--explain", "--tensors", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    roles = {row["tensor"]: row["role"] for row in rows}
    assert roles["rnn.weight_ih_l0"] == "weight" and roles["rnn.weight_hh_l1"] == "weight"
    assert roles["rnn.bias_ih_l0"] == "bias"
    assert roles["h0"] == roles["c0"] == "initial-state"
    assert roles["embedding.weight"] == "embedding"


def test_torchscript_attention_fixes_the_sequence_length(capsys):
    """torch's TorchScript exporter bakes the example's sequence length into
    nn.MultiheadAttention's reshapes: another --seq-len is one clear line."""
    record = EXPECTED["torch_script_transformer.onnx"]
    seq_len = record["score_kwargs"]["seq_len"]
    code = main(["score", str(MODELS / "torch_script_transformer.onnx"), "--seq-len", str(seq_len + 3),
                 "--batch-size", "4", "--token-layout", "batch-first", "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(err) == 1 and err[0].startswith("error: ONNX Runtime failed to run the model"), err


def test_torch_default_optimize_folds_batchnorm(tmp_path, capsys):
    """torch.onnx.export's default optimize=True folds every BN that follows a
    conv into it (TinyResNet: 7 of its 8; the head's BN follows a residual sum
    and stays). An untrained network's BN has the default statistics, so the
    fold leaves no conv bias either: only the rewriter's rule name in the node
    metadata tells, and the scorer warns from it."""
    torch = pytest.importorskip("torch")
    import onnx

    from tests.torch_export import export_onnx
    from tests.torch_reference.cnns import TinyResNet

    torch.manual_seed(0)
    path = tmp_path / "optimized.onnx"
    export_onnx(TinyResNet(track=True), torch.randn(2, 3, 32, 32), path, optimize=True)
    nodes = onnx.load(path).graph.node
    assert sum(n.op_type == "BatchNormalization" for n in nodes) == 1
    assert sum(n.op_type == "Conv" for n in nodes) == 8
    assert main(["score", str(path), "--batch-size", "4", "--device", "cpu", "--format", "json"]) == 0
    captured = capsys.readouterr()
    assert "folded BatchNormalization into 7 conv(s)" in captured.err
    assert json.loads(captured.out)["score"] is not None
