"""epsinas_onnx.torch.score and `score --torch`: a PyTorch module exported and
scored in one call gives the same score, bit for bit, as exporting it by hand
with docs/exporting.md's command and scoring the file; the fallback exporter, the
errors, and the missing-extra messages (torch for .torch, tf2onnx for .keras)."""

import contextlib
import io
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import epsinas_onnx
from epsinas_onnx.cli import main
from tests.conftest import ROOT
from tests.torch_reference.cnns import TORCHVISION_STYLE

SETTINGS = {"batch_size": 16, "device": "cpu", "threads": 1}


@contextlib.contextmanager
def quiet_export():
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def export_by_hand(model, x, path):
    """docs/exporting.md, "PyTorch, torch.onnx.export (dynamo, the default exporter)"."""
    with quiet_export():
        torch.onnx.export(model.eval(), (x,), str(path), dynamo=True, optimize=False,
                          dynamic_shapes=({0: torch.export.Dim("batch")},))


def export_by_hand_torchscript(model, x, path):
    """docs/exporting.md, "PyTorch, the older TorchScript exporter"."""
    with quiet_export():
        torch.onnx.export(model.eval(), (x,), str(path), dynamo=False,
                          training=torch.onnx.TrainingMode.PRESERVE,
                          input_names=["input"], dynamic_axes={"input": {0: "batch"}})


def with_statistics(module):
    """Running statistics the scorer must ignore, as a trained model has."""
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    return module


def assert_same_result(result, expected):
    assert not np.isnan(expected.score), expected.nan_reason
    assert np.float64(result.score).tobytes() == np.float64(expected.score).tobytes(), (result.score, expected.score)
    assert (result.nan_reason, result.output, result.input, result.warnings) == \
        (expected.nan_reason, expected.output, expected.input, expected.warnings)


@pytest.mark.parametrize("name", list(TORCHVISION_STYLE))
def test_torch_score_equals_scoring_the_hand_export(name, tmp_path):
    torch.manual_seed(0)
    module = with_statistics(TORCHVISION_STYLE[name](track=True))  # BN tracking statistics, as torchvision's
    x = torch.randn(2, 3, 32, 32)
    images = torch.randn(16, 3, 32, 32)  # the scored batch: a tensor, as a torch user has it
    for weights in [(1e-7, 1.0), (1e-4, 10.0)]:
        module.train()
        result = epsinas_onnx.torch.score(module, x, data=images, weights=weights, **SETTINGS)
        assert module.training  # left in the mode it was in
        export_by_hand(module, x, tmp_path / f"{name}.onnx")
        expected = epsinas_onnx.score(tmp_path / f"{name}.onnx", data=images.numpy(), weights=weights, **SETTINGS)
        assert_same_result(result, expected)
        assert not result.warnings, result.warnings  # BN kept, nothing folded


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "vgg11_bn"])
def test_real_torchvision_models(name, tmp_path):
    """Where torchvision imports (0.28 for torch 2.13, beside the index's default torch build:
    docs/exporting.md). At w = 1e-7 the last two underflow to a
    constant output: NaN with its reason, the same both ways."""
    torchvision = pytest.importorskip("torchvision", reason="torchvision is not installed")
    model = getattr(torchvision.models, name)()
    x = torch.zeros(1, 3, 64, 64)
    result = epsinas_onnx.torch.score(model, x, **SETTINGS)
    export_by_hand(model, x, tmp_path / "m.onnx")
    expected = epsinas_onnx.score(tmp_path / "m.onnx", **SETTINGS)
    if name == "resnet18":
        assert_same_result(result, expected)
    else:
        assert np.isnan(result.score) and result.nan_reason == expected.nan_reason
        assert result.nan_reason.startswith("constant output at w = 1e-07")


def test_shape_and_default_batch(tmp_path):
    """A shape as the example, and no data: the default batch, as for a file."""
    module = TORCHVISION_STYLE["resnet"](track=True)
    result = epsinas_onnx.torch.score(module, (1, 3, 32, 32), **SETTINGS)
    export_by_hand(module, torch.zeros(1, 3, 32, 32), tmp_path / "m.onnx")
    assert_same_result(result, epsinas_onnx.score(tmp_path / "m.onnx", **SETTINGS))
    assert "default" in result.input


class DataDependentBranch(nn.Module):
    """torch.export refuses a branch on a tensor's value; the TorchScript
    tracer records the branch the example took."""

    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4))
        self.b = nn.Sequential(nn.Conv2d(4, 4, 3, bias=False), nn.BatchNorm2d(4))
        self.head = nn.Linear(4, 1)

    def forward(self, x):
        y = self.a(x)
        if y.abs().sum() > 0:
            y = y.relu() + self.b(y.relu()).mean((2, 3), keepdim=True)
        return self.head(y.mean((2, 3)))


def test_falls_back_to_the_torchscript_exporter(tmp_path):
    module = DataDependentBranch()
    x = torch.randn(2, 3, 16, 16)
    result = epsinas_onnx.torch.score(module, x, **SETTINGS)
    export_by_hand_torchscript(module, x, tmp_path / "m.onnx")
    expected = epsinas_onnx.score(tmp_path / "m.onnx", **SETTINGS)
    note, *rest = result.warnings
    assert note.startswith("the dynamo exporter failed (Could not guard on data-dependent expression")
    assert "TorchScript exporter" in note and "\n" not in note
    result.warnings = rest
    assert_same_result(result, expected)
    assert not rest, rest  # PRESERVE kept the BatchNormalization nodes


class Unexportable(nn.Module):
    def forward(self, x):
        raise ValueError("this module cannot run")


def test_a_module_neither_exporter_takes_is_a_user_error():
    with pytest.raises(epsinas_onnx.UserError) as info:
        epsinas_onnx.torch.score(Unexportable(), (2, 3, 8, 8))
    message = str(info.value)
    assert message.startswith("the module cannot be exported to ONNX: the dynamo exporter says ")
    assert "this module cannot run" in message and "\n" not in message


def test_not_a_module():
    with pytest.raises(epsinas_onnx.UserError, match="expected a torch.nn.Module to score, got str"):
        epsinas_onnx.torch.score("model.onnx", (1, 3, 8, 8))


def test_missing_torch_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were not installed
    with pytest.raises(epsinas_onnx.UserError) as info:
        epsinas_onnx.torch.score(object(), (1, 3, 8, 8))
    assert str(info.value) == ('scoring a PyTorch module needs torch and onnxscript (torch is missing): '
                               'pip install "epsinas-onnx[export]"')


def test_missing_tf2onnx_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # as if tf2onnx were not installed
    with pytest.raises(epsinas_onnx.UserError) as info:
        epsinas_onnx.keras.score(object())
    assert str(info.value) == ('scoring a Keras model needs TensorFlow and tf2onnx (tf2onnx is missing): '
                               'pip install "epsinas-onnx[keras]"')


FACTORY_MODULE = '''
from torch import nn


def small_net(width=4):
    return nn.Sequential(
        nn.Conv2d(3, width, 3, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, width, 3, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 1),
    )


class WithSkip(nn.Module):
    def __init__(self, width=4):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width))
        self.body = nn.Sequential(nn.ReLU(), nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width))
        self.head = nn.Linear(width, 1)

    def forward(self, x):
        y = self.stem(x)
        return self.head((y + self.body(y)).mean((2, 3)))
'''


def test_cli_scores_a_factory_from_the_current_folder(tmp_path, monkeypatch):
    """`score --torch mynets:WithSkip` as a user runs it from the folder of
    their own module: with -P the interpreter does not put the current folder
    on sys.path (as the installed `epsinas-onnx` command does not), the CLI does."""
    (tmp_path / "mynets.py").write_text(FACTORY_MODULE)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-P", "-m", "epsinas_onnx", "score", "--torch", "mynets:WithSkip",
               "--torch-kwargs", '{"width": 6}', "--input-shape", "1x3x16x16", "--weights", "1e-4", "10",
               "--batch-size", "16", "--device", "cpu", "--threads", "1", "--format", "json"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # the exporters' chatter stays out of the user's terminal
    payload = json.loads(done.stdout)
    monkeypatch.syspath_prepend(str(tmp_path))
    import mynets

    expected = epsinas_onnx.torch.score(mynets.WithSkip(width=6), (1, 3, 16, 16), weights=(1e-4, 10.0), **SETTINGS)
    assert payload["model"] == "mynets:WithSkip"
    assert payload["score"] == expected.score and payload["nan_reason"] is None


@pytest.mark.parametrize("args, message", [
    (["--torch", "tests.torch_reference.cnns:TinyResNet"], "error: --torch needs --input-shape"),
    (["--torch", "tests.torch_reference.cnns", "--input-shape", "1x3x8x8"], "error: a factory is MODULE:CALLABLE"),
    (["--torch", "no_such_module_here:net", "--input-shape", "1x3x8x8"],
     "error: cannot import no_such_module_here for no_such_module_here:net (ModuleNotFoundError"),
    (["--torch", "tests.torch_reference.cnns:Nope", "--input-shape", "1x3x8x8"],
     "error: tests.torch_reference.cnns has no Nope"),
    (["--torch", "tests.torch_reference.cnns:conv_bn", "--input-shape", "1x3x8x8"], "error: calling"),
    (["--torch", "tests.torch_reference.cnns:CNNS", "--input-shape", "1x3x8x8"],
     "error: tests.torch_reference.cnns:CNNS is not callable"),
    (["--torch", "tests.torch_reference.cnns:TinyResNet", "--torch-kwargs", "[1]", "--input-shape", "1x3x8x8"],
     "error: Invalid value for '--torch-kwargs': must be a JSON object"),
    (["--torch", "tests.torch_reference.cnns:TinyResNet", "--torch-kwargs", "{", "--input-shape", "1x3x8x8"],
     "error: Invalid value for '--torch-kwargs': not JSON"),
    (["--torch", "tests.torch_reference.cnns:TinyResNet", "--input-shape", "1x3xa"],
     "error: Invalid value for '--input-shape': dims joined by x"),
    (["--torch", "tests.torch_reference.cnns:TinyResNet", "--input-shape", "0x3x8x8"],
     "error: Invalid value for '--input-shape': dims must be positive"),
    (["m.onnx", "--torch", "tests.torch_reference.cnns:TinyResNet", "--input-shape", "1x3x8x8"],
     "error: give MODEL or --torch, not both"),
    (["m.onnx", "--input-shape", "1x3x8x8"], "error: --input-shape and --torch-kwargs go with --torch"),
    ([], "error: give MODEL (an .onnx file, several, or a folder) or --torch MODULE:CALLABLE"),
])
def test_cli_factory_errors_are_one_line(args, message, capsys):
    assert main(["score", *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err


def test_cli_without_torch_names_the_extra(tmp_path):
    code = ("import sys; sys.modules['torch'] = None\n"  # as if torch were not installed
            "from epsinas_onnx.cli import main\n"
            "sys.exit(main(['score', '--torch', 'torchvision.models:resnet18', '--input-shape', '1x3x64x64']))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 1
    assert done.stderr == ('error: scoring a PyTorch module needs torch and onnxscript (torch is missing): '
                           'pip install "epsinas-onnx[export]"\n')
