"""The shared options of score, bench, calibrate, ablate and search read the
same everywhere (one declaration in cli/option_groups.py), and --help /
--version start without the ONNX libraries."""

import json
import os
import subprocess
import sys

import click
import pytest

from epsinas_onnx.experiments import bench as bench_lib
from epsinas_onnx.core import limits
from epsinas_onnx.cli import cli
from epsinas_onnx.cli import option_groups

COMMANDS = {
    "score": cli.commands["score"],
    "bench": cli.commands["bench"],
    "calibrate": cli.commands["calibrate"],
    "ablate": cli.commands["ablate"],
    "search curves": cli.commands["search"].commands["curves"],  # the search commands share their option groups
}
# bench scores many architectures in worker processes: its --threads counts per
# worker (default 1) and each run has a timeout (test_documented_bench_differences);
# score's --weights default is NAS-Bench-201's pair, bench and ablate's the space's;
# search prints no csv
DOCUMENTED_DIFFERENCES = {("bench", "--threads"), ("bench", "--timeout"), ("score", "--weights"),
                          ("search curves", "--format")}
# a different option under the same name: the sample's seed, the worker count
# (bench: a Ray cap too), the store's role, what is plotted, calibrate's model-file targets
SAME_NAME_OTHER_OPTION = {"--seed", "--workers", "--store", "--plot", "--sample", "--archs", "--accuracies"}


def _params(command: click.Command) -> dict[str, click.Parameter]:
    return {p.opts[0]: p for p in command.params if isinstance(p, click.Option)}


def _describe(param: click.Parameter) -> str:
    """Everything click knows of the option (name, type with its choices or range, default, help, ...)."""
    return repr(sorted({**param.to_info_dict(), "show_default": param.show_default}.items()))


def test_shared_options_are_declared_once():
    options = {name: _params(command) for name, command in COMMANDS.items()}
    shared = {}
    for name, params in options.items():
        for opt, param in params.items():
            shared.setdefault(opt, {})[name] = param
    compared = 0
    for opt, by_command in shared.items():
        if len(by_command) < 2:
            continue
        if opt in SAME_NAME_OTHER_OPTION:
            continue
        described = {name: _describe(p) for name, p in by_command.items() if (name, opt) not in DOCUMENTED_DIFFERENCES}
        assert len(set(described.values())) <= 1, f"{opt} differs: {described}"
        compared += 1
    # the batch, the device, the policy and the output options at least
    assert compared >= 12
    for opt in ("--data", "--batch-size", "--norm", "--seq-len", "--device"):
        assert len(shared[opt]) == len(COMMANDS), opt
    for opt in ("--bn-gamma", "--bias", "--embedding", "--weight-init", "--collapse"):
        assert {"score", "bench", "calibrate"} <= set(shared[opt]), opt


def test_the_drift_is_fixed():
    for name, command in COMMANDS.items():
        params = _params(command)
        assert params["--seq-len"].type.min == 1, name
        if "--device" in params:
            assert params["--device"].default == "auto", name
    for opt in ("--bias", "--embedding", "--weight-init", "--weight-seed"):
        assert opt in _params(COMMANDS["calibrate"])


def test_documented_bench_differences():
    score, bench = _params(COMMANDS["score"]), _params(COMMANDS["bench"])
    assert (score["--threads"].default, bench["--threads"].default) == (None, 1)
    assert (score["--timeout"].default, bench["--timeout"].default) == (0, limits.BENCH_TIMEOUT)
    # the synthetic batch's seed is --input-seed everywhere; score's old name --seed is a hidden alias
    assert _describe(score["--input-seed"]) == _describe(bench["--input-seed"])
    assert score["--seed"].hidden and score["--seed"].name == "legacy_seed"


def test_mirrored_constants_agree():
    assert option_groups.PER_CPU == limits.PER_CPU
    assert option_groups.BENCH_TIMEOUT == limits.BENCH_TIMEOUT
    assert option_groups.DEFAULT_STORE == bench_lib.DEFAULT_STORE


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["bench", "--help"], ["score", "--help"]])
def test_start_imports_no_onnx_library(argv):
    code = ("import sys\nfrom epsinas_onnx.__main__ import run as main\n"
            "try:\n    main_code = main()\nexcept SystemExit as e:\n    main_code = e.code\n"
            "heavy = sorted(m for m in ('onnx', 'onnx_ir', 'onnxruntime', 'numpy') if m in sys.modules)\n"
            "print('HEAVY', heavy)\n")
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
    assert "HEAVY []" in done.stdout, done.stdout[-500:] + done.stderr[-500:]


def test_input_seed_is_one_option_and_score_keeps_its_old_name(tmp_path, capsys):
    from epsinas_onnx.cli import main
    from tests.conftest import ROOT

    def scored(*args):
        assert main(["score", str(ROOT / "models" / "nb201_cifar10_best.onnx"), "--synthetic", "normal",
                     "--batch-size", "8", "--format", "json", *args]) == 0
        return json.loads(capsys.readouterr().out)

    assert scored("--seed", "3")["score"] == scored("--input-seed", "3")["score"] != scored()["score"]
    for command in ("bench", "calibrate", "ablate"):  # there --seed is a sample's seed, --input-seed the batch's
        params = _params(cli.commands[command])
        assert "--input-seed" in params and "Seed of --sample" in (params["--seed"].help or "")


def test_score_help_is_short():
    """The long explanations live in docs/commands/score.md, which the help names."""
    result = subprocess.run([sys.executable, "-m", "epsinas_onnx", "score", "--help"], capture_output=True,
                            text=True, timeout=120, env={**os.environ, "COLUMNS": "80"})
    assert result.returncode == 0 and len(result.stdout.splitlines()) <= 80
    assert "docs/commands/score.md" in result.stdout
