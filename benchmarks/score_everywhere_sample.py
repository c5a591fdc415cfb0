"""The candidate definitions of docs/score-everywhere.md on a NAS-Bench-201 sample.

Runs each sampled architecture once at every rung of the [1e-7, 1] ladder and
at w2 = 1 (calibrate.collect_outputs, kept in --outputs so a rerun only
evaluates), then prints every candidate's statistics against CIFAR-10 test
accuracy over all sampled architectures, NaN ranked last. Candidate F is the
ladder mode itself (epsinas_onnx.modes.score_ladder on the stored outputs).

    python -m benchmarks.score_everywhere_sample --sample 2000 --seed 0 --outputs dev_outputs.npz
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from epsinas_onnx import calibrate
from epsinas_onnx.evaluation import read_keyed, statistics
from epsinas_onnx.metric import epsinas_score
from epsinas_onnx.modes import ladder, score_ladder
from epsinas_onnx.options import BatchOptions
from epsinas_onnx.spaces import get_space

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
WEIGHTS = (1e-7, 1.0)


def distinct_half(y: np.ndarray) -> bool:
    """Candidate C's guard: at least half of the output's values distinct."""
    return len(np.unique(y)) >= y.size / 2


def candidates(rows: dict[float, np.ndarray]) -> dict[str, float]:
    rungs = ladder(WEIGHTS)
    high = rows[WEIGHTS[1]]
    s = [epsinas_score(rows[w], high) for w in rungs]
    first = next((j for j, v in enumerate(s) if math.isfinite(v)), None)
    guarded = next((j for j, v in enumerate(s) if math.isfinite(v) and distinct_half(rows[rungs[j]])), None)
    squash = lambda v: v / (1 + v)  # noqa: E731
    return {
        "reference [1e-7, 1]": s[0],
        "A. first finite rung": math.nan if first is None else s[first],
        "B. rung, then score": math.nan if first is None else first + squash(s[first]),
        "C. tiered with the precision guard": math.nan if guarded is None else guarded + squash(s[guarded]),
        "F. the ladder mode": score_ladder(WEIGHTS, lambda w: rows[w])[0],
        "a common w1 = 1e-3": s[rungs.index(1e-3)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--outputs", required=True, help="an .npz that keeps the outputs between runs")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    module = get_space("nb201")
    archs = {}
    for arch in module.sample(args.sample, args.seed):
        archs.setdefault(module.format_arch(arch), arch)
    items = [calibrate.Item(name, space="nb201", arch=a) for name, a in archs.items()]
    weights = ladder(WEIGHTS) + [WEIGHTS[1]]
    batch = BatchOptions(data=DATA / "inputs" / "cifar10_test_1000.npz", norm="cifar10")
    outputs = calibrate.collect_outputs(items, weights, batch_options=batch, settings={"collapse": True},
                                        workers=args.workers, cache=args.outputs)
    accuracy, _ = read_keyed(DATA / "nb201" / "accuracies.csv", module, arch_column="arch", columns=["cifar10", "params_m"])
    names = [n for n in outputs.names if n in outputs.arrays]
    target = np.array([accuracy[n]["cifar10"] for n in names])
    table = {}
    for name in names:
        rows = dict(zip(outputs.weights, outputs.arrays[name]))
        for label, value in candidates(rows).items():
            table.setdefault(label, []).append(value)
    table["params"] = [accuracy[n]["params_m"] for n in names]
    print(f"{len(names)} architectures ({args.sample} draws, seed {args.seed}); CIFAR-10 test accuracy; NaN ranked last")
    print(f"{'definition':36s} {'NaN':>5s} {'rho':>7s} {'tau':>7s} {'rho_top10':>9s} {'top10/top10':>11s} {'top64/top5':>10s}")
    for label, values in table.items():
        st = statistics(np.array(values, dtype=np.float64), target, nan="last")
        print(f"{label:36s} {st['nan_last']:5d} {st['spearman']:7.3f} {st['kendall']:7.3f} {st['spearman_top10']:9.3f} "
              f"{st['top10_top10']:11.2f} {st['top64_top5']:7d}/64")


if __name__ == "__main__":
    main()
