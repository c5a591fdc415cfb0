"""The candidate definitions of docs/score-everywhere.md on a NAS-Bench-201 sample.

Runs each sampled architecture once at every rung of the [1e-7, 1] ladder, at
w2 = 1 and at five weights above it (NAS-Bench-201's pieces, bit for bit the
generic path's outputs; kept in --outputs so a rerun only evaluates), then
prints every candidate's statistics against CIFAR-10 test accuracy over all
sampled architectures, NaN ranked last, and its Spearman within each group:
the architectures the reference scores ("g1") and those it cannot although
they have an input-output path ("g2"). Candidates F and U are the ladder and
upper modes themselves (epsinas_onnx.core.scoring.modes on the stored outputs).

    python -m benchmarks.score_everywhere_sample --sample 2000 --seed 0 --outputs dev_outputs.npz
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

from epsinas_onnx.experiments.bench import BENCH_GRAPH_OPTIMIZATION
from epsinas_onnx.experiments.evaluation import read_keyed, statistics
from epsinas_onnx.core.scoring.metric import epsinas_score
from epsinas_onnx.core.scoring.modes import ladder, score_ladder, score_upper
from epsinas_onnx.core.options import BatchOptions
from epsinas_onnx.core.scoring.scorer import batch_for, prepare_model
from epsinas_onnx.spaces import nb201

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
WEIGHTS = (1e-7, 1.0)
ABOVE = (2.0, 3.16, 10.0, 31.6, 100.0)  # weights above w2, for the round-2 candidates
# the next float32 above w2: the upper mode's rounding guard runs it (modes.rounding_floor)
NEXT_TO_W2 = float(np.nextafter(np.float32(WEIGHTS[1]), np.float32(np.inf)))


def distinct_half(y: np.ndarray) -> bool:
    """Candidate C's guard: at least half of the output's values distinct."""
    return len(np.unique(y)) >= y.size / 2


def log_std(y: np.ndarray) -> float:
    with np.errstate(divide="ignore"):
        return float(np.log10(np.std(y.astype(np.float64))))


def candidates(rows: dict[float, np.ndarray]) -> dict[str, float]:
    rungs = ladder(WEIGHTS)
    high = rows[WEIGHTS[1]]
    s = [epsinas_score(rows[w], high) for w in rungs]
    first = next((j for j, v in enumerate(s) if math.isfinite(v)), None)
    guarded = next((j for j, v in enumerate(s) if math.isfinite(v) and distinct_half(rows[rungs[j]])), None)
    squash = lambda v: v / (1 + v)  # noqa: E731
    upper = epsinas_score(high, rows[10.0])
    low_star = math.nan if first is None else epsinas_score(rows[rungs[first]], rows[10.0])
    return {
        "reference [1e-7, 1]": s[0],
        "A. first finite rung": math.nan if first is None else s[first],
        "B. rung, then score": math.nan if first is None else first + squash(s[first]),
        "C. tiered with the precision guard": math.nan if guarded is None else guarded + squash(s[guarded]),
        "F. the ladder mode": score_ladder(WEIGHTS, lambda w: rows[w])[0],
        "a common w1 = 1e-3": s[rungs.index(1e-3)],
        "G. s(w2, 10 w2)": upper,
        "G. -s(w2, 10 w2)": -upper,
        "G. -s(w2, 2 w2)": -epsinas_score(high, rows[2.0]),
        "H. s(w1*, 10 w2)": low_star,
        "I. top slope of log std(y)": (log_std(rows[100.0]) - log_std(rows[31.6])) / math.log10(100.0 / 31.6),
        "U. the upper mode": score_upper(WEIGHTS, lambda w: rows[w])[0],
    }


def collect(names: list[str], weights: list[float], cache: Path) -> np.ndarray:
    """The scored output of every architecture at every weight, (archs, weights, batch), cached."""
    if cache.exists():
        kept = np.load(cache)
        if kept["names"].tolist() == names and kept["weights"].tolist() == weights:
            return kept["outputs"]
    export, settings = dict(nb201.SPACE.export_defaults), {"collapse": True}
    probe = prepare_model(nb201.to_onnx(nb201.TEMPLATE, **export), threads=1, **settings)
    batch = batch_for(probe, BatchOptions(data=DATA / "inputs" / "cifar10_test_1000.npz", norm="cifar10")).array
    pieces = nb201.pieces_for(export, settings, batch, device="cpu", threads=1,
                              graph_optimization=BENCH_GRAPH_OPTIMIZATION)
    outputs = np.zeros((len(names), len(weights), batch.shape[0]), np.float32)
    start = time.perf_counter()
    for i, name in enumerate(names):
        for j, w in enumerate(weights):
            outputs[i, j] = pieces.output(name, w)[0].ravel()
        if i % 200 == 199:
            print(f"{i + 1} of {len(names)}, {time.perf_counter() - start:.0f} s", file=sys.stderr)
    np.savez(cache, names=np.array(names), weights=np.array(weights), outputs=outputs)
    return outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--outputs", required=True, type=Path, help="an .npz that keeps the outputs between runs")
    args = parser.parse_args()

    names = list(dict.fromkeys(nb201.format_arch(a) for a in nb201.sample(args.sample, args.seed)))
    weights = [*ladder(WEIGHTS), WEIGHTS[1], NEXT_TO_W2, *ABOVE]
    outputs = collect(names, weights, args.outputs)
    accuracy, _ = read_keyed(DATA / "nb201" / "accuracies.csv", nb201, arch_column="arch", columns=["cifar10", "params_m"])
    target = np.array([accuracy[n]["cifar10"] for n in names])
    table = {}
    for name, runs in zip(names, outputs):
        for label, value in candidates(dict(zip(weights, runs))).items():
            table.setdefault(label, []).append(value)
    table["params"] = [accuracy[n]["params_m"] for n in names]
    reference = np.array(table["reference [1e-7, 1]"])
    has_path = np.array([np.ptp(runs[weights.index(WEIGHTS[1])]) > 0 for runs in outputs])
    groups = {"g1": np.isfinite(reference), "g2": ~np.isfinite(reference) & has_path}
    print(f"{len(names)} architectures ({args.sample} draws, seed {args.seed}); CIFAR-10 test accuracy; NaN ranked last; "
          f"g1 {groups['g1'].sum()}, g2 {groups['g2'].sum()}, no input-output path {(~has_path).sum()}")
    print(f"{'definition':36s} {'NaN':>5s} {'rho':>7s} {'tau':>7s} {'rho_top10':>9s} {'top10/top10':>11s} "
          f"{'top64/top5':>10s} {'rho g1':>7s} {'rho g2':>7s}")
    for label, values in table.items():
        values = np.array(values, dtype=np.float64)
        st = statistics(values, target, nan="last")
        within = [statistics(values[m], target[m], nan="drop")["spearman"] for m in groups.values()]
        print(f"{label:36s} {st['nan_last']:5d} {st['spearman']:7.3f} {st['kendall']:7.3f} {st['spearman_top10']:9.3f} "
              f"{st['top10_top10']:11.2f} {st['top64_top5']:7d}/64 {within[0]:7.3f} {within[1]:7.3f}")
    upper = np.array(table["G. s(w2, 10 w2)"])
    print("median s(w2, 10 w2): " + ", ".join(f"{name} {np.median(upper[m]):.4f}" for name, m in groups.items()))


if __name__ == "__main__":
    main()
