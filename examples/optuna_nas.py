"""A NAS loop with the epsinas score as its objective: Optuna searches a small
space of ResNet-style CNNs, and each candidate is scored untrained, in one
call (epsinas_onnx.torch.score exports it to ONNX and scores the file): no
training, no labels; a few seconds per candidate, most of it torch's export.

    pip install "epsinas-onnx[export]" optuna
    python examples/optuna_nas.py --trials 30
    python examples/optuna_nas.py --trials 30 --data images.npz --norm cifar10   # real images score better

A higher score predicts a higher accuracy after training (on NAS-Bench-201,
Spearman 0.89), so the study maximises it. A NaN score (e.g. a constant
output) is a legitimate outcome: the trial is recorded as failed, with the
reason in its user attributes. Train the best candidate as usual afterwards.
"""

from __future__ import annotations

import argparse

import optuna
from torch import nn

import epsinas_onnx.torch

INPUT_SHAPE = (1, 3, 32, 32)  # CIFAR-sized images; the batch dim is exported as dynamic


def conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2, bias=False), nn.BatchNorm2d(c_out)]


class Block(nn.Module):
    """ResNet's basic block: x + two conv-BN layers, then ReLU."""

    def __init__(self, channels: int, kernel: int):
        super().__init__()
        self.body = nn.Sequential(*conv_bn(channels, channels, kernel), nn.ReLU(), *conv_bn(channels, channels, kernel))

    def forward(self, x):
        return (x + self.body(x)).relu()


def build(trial: optuna.Trial) -> nn.Module:
    """The search space: the kernel size, the number of stages (each after the
    first halves the resolution and doubles the width), the blocks in each
    stage, and how a stage downsamples. The width is not searched: with one
    shared constant weight every channel computes the same, so the score
    cannot tell widths apart (widths 8, 16 and 32 gave the same score, bit for
    bit, for three networks of this space)."""
    width = 16
    kernel = trial.suggest_categorical("kernel", [3, 5])
    stages = trial.suggest_int("stages", 1, 3)
    downsample = trial.suggest_categorical("downsample", ["strided-conv", "avg-pool"])
    layers = [*conv_bn(3, width, 3), nn.ReLU()]
    for stage in range(stages):
        if stage > 0:
            if downsample == "strided-conv":
                layers += [*conv_bn(width, 2 * width, 3, stride=2), nn.ReLU()]
            else:
                layers += [nn.AvgPool2d(2), *conv_bn(width, 2 * width, 1), nn.ReLU()]
            width *= 2
        layers += [Block(width, kernel) for _ in range(trial.suggest_int(f"blocks{stage}", 1, 3))]
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10)]
    return nn.Sequential(*layers)


def objective(trial: optuna.Trial, score_settings: dict) -> float:
    result = epsinas_onnx.torch.score(build(trial), INPUT_SHAPE, **score_settings)
    trial.set_user_attr("nan_reason", result.nan_reason)
    return result.score  # NaN: Optuna records the trial as failed


def main(argv: list[str] | None = None) -> optuna.Study:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0, help="the sampler's seed")
    parser.add_argument("--data", default=None, help="images to score on (.npz / .npy), as `epsinas-onnx score --data`")
    parser.add_argument("--norm", default="auto")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)
    settings = {"data": args.data, "norm": args.norm, "batch_size": args.batch_size,
                "weights": (1e-7, 1.0)}  # NAS-Bench-201's pair, for CIFAR-sized CNNs

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a NaN trial is listed below, with its reason
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=args.seed))
    study.optimize(lambda trial: objective(trial, settings), n_trials=args.trials, catch=())
    for trial in study.trials:
        value = "nan" if trial.value is None else f"{trial.value:.6g}"
        reason = trial.user_attrs.get("nan_reason")
        print(f"trial {trial.number:3d}  score {value:>10}  {trial.params}" + (f"  ({reason})" if reason else ""))
    print(f"best: trial {study.best_trial.number}, score {study.best_value:.6g}, {study.best_params}")
    return study


if __name__ == "__main__":
    main()
