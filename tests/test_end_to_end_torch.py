"""CNNs written in PyTorch with the reference initialisation: the CLI's score
of the exported ONNX model equals PyTorch's (batch-statistics BN, gamma = w)."""

import json
import math

import pytest
import torch

from tests.conftest import CIFAR10, cifar10_batch, run_cli_in_process
from tests.torch_export import export_onnx
from tests.torch_reference.cnns import CNNS
from tests.torch_reference.metric import torch_score

BATCH = 32


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("cnns")
    paths = {}
    for name, cls in CNNS.items():
        module = cls(track=True)  # what users export: BN with running statistics
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):  # statistics the scorer must ignore
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
        paths[name] = folder / f"{name}.onnx"
        export_onnx(module, torch.randn(2, 3, 32, 32), paths[name])
    return paths


@pytest.mark.parametrize("weights", [(1e-7, 1.0), (1e-4, 10.0)])
@pytest.mark.parametrize("name", list(CNNS))
def test_cli_score_equals_pytorch(exported, name, weights):
    torch.set_num_threads(1)
    expected = torch_score(lambda: CNNS[name](track=False), torch.from_numpy(cifar10_batch(BATCH)), weights)
    result = run_cli_in_process("score", exported[name], "--weights", *weights, "--data", CIFAR10,
                                "--batch-size", BATCH, "--norm", "cifar10", "--device", "cpu", "--format", "json")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["weights"] == list(weights)
    assert payload["batch_size"] == BATCH
    if math.isnan(expected):
        assert payload["score"] is None and payload["nan_reason"]
    else:
        assert payload["score"] == pytest.approx(expected, rel=1e-5)
        assert payload["nan_reason"] is None
