"""conftest.run_cli_in_process gives what run_cli (the command in a process of
its own) gives, so that a test converted from one to the other checks as much."""

import json
import os
import sys
import warnings

import onnx
import pytest

import epsinas_onnx.cli
from tests.conftest import run_cli, run_cli_in_process
from tests.onnx_graphs import conv_bn_relu


@pytest.mark.parametrize("case", ["missing model", "bad option", "score as json"])
def test_the_same_result_as_the_command(tmp_path, case):
    onnx.save(conv_bn_relu(), tmp_path / "m.onnx")
    args = {
        "missing model": ("score", tmp_path / "absent.onnx"),
        "bad option": ("score", tmp_path / "m.onnx", "--wieghts", 1, 2),
        "score as json": ("score", tmp_path / "m.onnx", "--batch-size", 4, "--format", "json"),
    }[case]
    alone, here = run_cli(*args), run_cli_in_process(*args)
    assert (here.returncode, here.stderr) == (alone.returncode, alone.stderr)
    if case == "score as json":  # the same but for the time it took
        assert {**json.loads(here.stdout), "seconds": 0} == {**json.loads(alone.stdout), "seconds": 0}
    else:
        assert here.stdout == alone.stdout


def _writes_everywhere(argv):
    print("python out")
    print("python err", file=sys.stderr)
    os.write(1, b"fd out\n")  # as ONNX Runtime's own log lines are written, below Python
    os.write(2, b"fd err\n")
    warnings.warn("a warning")
    warnings.warn("deprecated", DeprecationWarning)  # a fresh interpreter hides these
    os.chdir("/")
    return 7


def test_output_below_python_warnings_and_the_folder(monkeypatch, tmp_path):
    monkeypatch.setattr(epsinas_onnx.cli, "main", _writes_everywhere)
    before = os.getcwd()
    for _ in range(2):  # a warning shows each time, as in a new process
        result = run_cli_in_process("anything", cwd=tmp_path)
        assert result.returncode == 7
        assert result.stdout == "python out\nfd out\n"
        assert result.stderr.startswith("python err\n") and result.stderr.endswith("fd err\n")
        assert "UserWarning: a warning" in result.stderr and "deprecated" not in result.stderr
        assert os.getcwd() == before
