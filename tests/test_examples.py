"""The examples run as docs/exporting.md shows them, and do what they say."""

import importlib.util
import math

import pytest

from tests.conftest import ROOT

optuna = pytest.importorskip("optuna", reason="examples/optuna_nas.py needs optuna (in the test extra)")

import epsinas_onnx.torch  # noqa: E402


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_optuna_nas_maximises_the_score(capsys):
    example = load_example("optuna_nas")
    study = example.main(["--trials", "3", "--seed", "0", "--batch-size", "32"])
    printed = capsys.readouterr().out.splitlines()
    assert len(study.trials) == 3 and len(printed) == 4
    for trial in study.trials:  # each trial scored, or failed with the reason of its NaN
        if trial.state == optuna.trial.TrialState.COMPLETE:
            assert math.isfinite(trial.value) and trial.user_attrs["nan_reason"] is None
        else:
            assert trial.state == optuna.trial.TrialState.FAIL and trial.user_attrs["nan_reason"]
    best = max((t for t in study.trials if t.value is not None), key=lambda t: t.value)
    assert study.best_trial.number == best.number
    assert printed[-1] == f"best: trial {best.number}, score {best.value:.6g}, {best.params}"
    # the objective is the score of the network the parameters describe, computed afresh
    network = example.build(optuna.trial.FixedTrial(best.params))
    again = epsinas_onnx.torch.score(network, example.INPUT_SHAPE, weights=(1e-7, 1.0), batch_size=32)
    assert again.score == best.value
