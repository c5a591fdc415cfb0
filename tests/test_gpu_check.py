"""The CUDA path without a GPU: provider choice when onnxruntime lists CUDA but
cannot use it, and benchmarks/gpu_check.py on the CPU only (its CUDA half runs
through benchmarks/gpu_check.sh on a GPU machine)."""

import json
import math
import re
import subprocess
import sys

import onnxruntime as ort
import pytest

from epsinas_onnx.core.scoring import runtime
from epsinas_onnx.core.errors import UserError
from epsinas_onnx.core.scoring.scorer import score
from epsinas_onnx.spaces import nb201
from tests.conftest import CIFAR10, ROOT

SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def test_cuda_provider_options_and_device_name():
    providers = [("CUDAExecutionProvider", dict(runtime.CUDA_OPTIONS)), "CPUExecutionProvider"]
    assert runtime.device_name(providers) == "cuda"
    assert runtime.device_name(["CPUExecutionProvider"]) == "cpu"
    # one session per architecture: no exhaustive cuDNN benchmark per session; full float32
    assert runtime.CUDA_OPTIONS == {"cudnn_conv_algo_search": "HEURISTIC", "use_tf32": "0"}


def test_listed_but_unusable_cuda_is_not_chosen(monkeypatch):
    """onnxruntime-gpu lists CUDAExecutionProvider even without the CUDA
    libraries or a GPU, and then quietly runs on the CPU: auto must pick the
    CPU, and --device cuda must say so in one line."""
    if "CUDAExecutionProvider" in ort.get_available_providers() and runtime.cuda_problem() is None:
        pytest.skip("CUDA works here")
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(runtime, "_CUDA_PROBLEM", [])
    assert runtime.providers_for("auto") == ["CPUExecutionProvider"]
    with pytest.raises(UserError, match="cannot start its CUDA execution provider") as info:
        runtime.providers_for("cuda")
    assert "\n" not in str(info.value)


def _run(*args, timeout=300):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout)


def _fields(line: str) -> dict:
    return dict(item.split("=", 1) for item in line.split()[1:])


def test_gpu_check_on_cpu(tmp_path):
    out = tmp_path / "check.json"
    result = _run("--devices", "cpu", "--n", 4, "--batch-size", 32, "--cpu-workers", 2, "--json", out, "--data", CIFAR10)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("gpu_check: nb201, 4 architectures") and "first 32, norm cifar10" in lines[0]
    assert lines[1].startswith("machine: ")
    assert any(re.fullmatch(r"  \[cpu full\] 4/4 archs, [\d.]+ s, [\d.]+ s/arch wall", line) for line in lines)

    times = {(f["device"], f["width"]): f for f in (_fields(l) for l in lines if l.startswith("TIME "))}
    assert set(times) == {("cpu", "full"), ("cpu", "collapsed")}
    for f in times.values():
        assert (f["archs"], f["errors"], f["workers"], f["ran_on"]) == ("4", "0", "2", "cpu")
        assert 0 < float(f["median"]) and 0 < float(f["s_per_arch"]) and 0 < float(f["wall_per_arch"])
    (agree,) = [_fields(l) for l in lines if l.startswith("AGREE ")]
    assert (agree["a"], agree["b"], agree["n"], agree["same_nan"], agree["bad"]) == ("cpu/full", "cpu/collapsed", "4", "yes", "0")
    assert lines[-1] == "RESULT PASS"

    # the rows are real scores: those of `score` on the same batch
    report = json.loads(out.read_text())
    scores = report["paths"]["cpu/collapsed"]["scores"]
    assert sorted(scores) == sorted({nb201.format_arch(a) for a in nb201.sample(4, 0)})
    for arch, value in scores.items():
        direct = score(nb201.to_onnx(nb201.parse(arch)), CIFAR10, (1e-7, 1.0), batch_size=32, norm="cifar10",
                       device="cpu", threads=1)
        if value is None:
            assert math.isnan(direct.score)
        else:
            assert value == pytest.approx(direct.score, rel=1e-6)


def test_gpu_check_without_cuda_is_one_error_line():
    if runtime.cuda_problem() is None and "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA works here")
    result = _run("--devices", "cpu", "cuda", "--n", 2, "--data", CIFAR10)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: --device cuda: ")
