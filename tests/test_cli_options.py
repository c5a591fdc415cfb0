"""The shared options of score, bench, calibrate, ablate and search read the
same everywhere (one declaration in cli/option_groups.py), and --help /
--version start without the ONNX libraries."""

import dataclasses
import json
import os
import subprocess
import sys

import click
import pytest

from epsinas_onnx.core import limits, options
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
    assert (score["--timeout"].default, bench["--timeout"].default) == (0, options.BENCH_TIMEOUT)
    # the synthetic batch's seed is --input-seed everywhere; score's old name --seed is a hidden alias
    assert _describe(score["--input-seed"]) == _describe(bench["--input-seed"])
    assert score["--seed"].hidden and score["--seed"].name == "legacy_seed"


def test_defaults_come_from_the_option_objects():
    """Each default is declared once: on the option objects (core/options.py), which the groups read."""
    bench = _params(COMMANDS["bench"])
    assert bench["--store"].default == options.RunOptions().store == options.DEFAULT_STORE
    assert bench["--threads"].default == options.BENCH_EXECUTION.threads
    assert bench["--timeout"].default == options.BENCH_EXECUTION.timeout == options.BENCH_TIMEOUT
    assert bench["--batch-size"].default == options.BatchOptions().batch_size
    assert bench["--seq-len"].default == options.BatchOptions().seq_len
    assert bench["--bn-gamma"].default == options.ScoringSettings().bn_gamma
    assert f"at most {limits.PER_CPU} per CPU" in bench["--threads"].help


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
# ---------------------------------------------------------------- the option groups, parsed in-process


def test_batch_groups_parse_into_batch_options():
    parsed = option_groups.score_batch_group.parse(
        ["--data", "x.npz", "--batch-size", "8", "--norm", "none", "--seed", "3", "--seq-len", "5",
         "--token-layout", "batch-first", "--input", "image"])
    assert parsed == options.BatchOptions(data="x.npz", batch_size=8, norm="none", seed=3, seq_len=5,
                                          token_layout="batch-first", input_name="image")
    assert option_groups.score_batch_group.parse([]) == options.BatchOptions()
    # bench's --seed is the sample's: the synthetic batch's seed is --input-seed
    assert option_groups.bench_batch_group.parse(["--input-seed", "4", "--synthetic", "normal"]) == \
        options.BatchOptions(seed=4, synthetic="normal")
    assert option_groups.ablate_batch_group.parse(["--batch-size", "16"]) == options.BatchOptions(batch_size=16)


def test_scoring_group_parses_the_init_policy_as_the_library_takes_it():
    group = option_groups.scoring_group
    assert group.parse([]) == options.ScoringSettings()
    # --weight-init constant is the reference, which has no seed
    assert group.parse(["--weight-init", "constant", "--weight-seed", "5"]) == options.ScoringSettings()
    assert group.parse(["--weight-init", "normal", "--weight-seed", "5", "--bn-gamma", "one", "--bias", "w",
                        "--no-collapse", "--output", "logits", "--mode", "upper", "--embedding", "keep"]) == \
        options.ScoringSettings(output="logits", bn_gamma="one", bias="w", embedding="keep", collapse=False,
                                weight_init="normal", weight_seed=5, mode="upper")
    assert option_groups.calibrate_scoring_group.parse(["--no-collapse"]) == options.ScoringSettings(collapse=False)


def test_execution_groups_start_from_their_command_defaults():
    assert option_groups.score_execution_group.parse([]) == options.ExecutionOptions()  # --timeout 0: no limit
    assert option_groups.score_execution_group.parse(["--threads", "2", "--timeout", "1.5", "--device", "cpu"]) == \
        options.ExecutionOptions(device="cpu", threads=2, timeout=1.5)
    assert option_groups.bench_execution_group.parse([]) == options.BENCH_EXECUTION
    assert option_groups.bench_execution_group.parse(["--timeout", "0"]).timeout is None
    assert option_groups.device_group.parse(["--device", "cpu"]) == \
        dataclasses.replace(options.BENCH_EXECUTION, device="cpu")
    assert option_groups.calibrate_execution_group.parse([]) == options.CALIBRATE_EXECUTION


def test_bench_run_archs_and_export_groups():
    from epsinas_onnx.cli import bench

    assert option_groups.run_group().parse([]) == options.RunOptions()  # no options: every default
    # bench's own groups, read through the command as a user gives them
    received = {}

    @click.command()
    @option_groups.archs_group(option_groups.all_option, option_groups.sample_option,
                               option_groups.sample_seed_option, option_groups.archs_option)
    @bench.export_group
    def probe(archs, export):
        received.update(archs=archs, export=export)

    probe.main(["--sample", "7", "--seed", "2", "--resolution", "16"], standalone_mode=False)
    assert received == {"archs": options.ArchSelection(sample=7, seed=2),
                        "export": {"resolution": 16, "vocab_size": None}}
    probe.main(["--all"], standalone_mode=False)
    assert received["archs"] == options.ArchSelection(everything=True)


def test_commands_receive_objects_not_flags():
    """bench, calibrate, ablate and score take at most 10 parameters: the groups arrive as objects."""
    import inspect

    for name, command in COMMANDS.items():
        received = inspect.signature(inspect.unwrap(command.callback)).parameters
        assert len(received) <= 10, (name, list(received))
        assert not any(p.kind == p.VAR_KEYWORD for p in received.values()), name
    assert list(inspect.signature(inspect.unwrap(COMMANDS["bench"].callback)).parameters) == \
        ["space", "archs", "weights", "batch", "scoring", "execution", "export", "run"]


def test_search_scores_group_parses_the_store_and_the_on_demand_batch():
    from epsinas_onnx.cli.search import scores_group

    parsed = scores_group.parse(["--store", "s.sqlite", "--space", "nb201", "--mode", "upper", "--data", "d.npz",
                                 "--input-seed", "2", "--device", "cpu", "--workers", "2", "--no-progress"])
    assert parsed == options.StoredScores(
        space="nb201", mode="upper", batch=options.BatchOptions(data="d.npz", seed=2),
        execution=dataclasses.replace(options.BENCH_EXECUTION, device="cpu"),
        run=options.RunOptions(store="s.sqlite", workers=2, progress=False))
    assert parsed.store == "s.sqlite"
