"""How far an interleaving of the two groups could go (docs/score-everywhere.md).

Reads the upper mode's rows of a NAS-Bench-201 store. On the architectures the
reference scores (g1) the upper score is s / (1 + s) of the reference score; on
those it cannot although they have an input-output path (g2) it is
2 - u / (1 + u) of u = s(w2, 10 w2). Both orders come back from the stored
value. It then prints, over the whole space (NaN, the no-path architectures,
ranked last), the Spearman and Kendall of:

- the upper mode itself (g2 above g1);
- oracles, which use the accuracies and are no definition: each group's own
  order kept, the groups interleaved as their accuracies interleave;
- label-free interleavings that need the whole population (so no per-model
  score): each group's within-group percentile merged; and g2 placed by the
  parameter count, at the reference scores of the g1 architectures with the
  nearest parameter count.

    python -m benchmarks.score_everywhere_interleave nb201.sqlite --config 954b7798
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy.stats import rankdata

from epsinas_onnx.experiments.evaluation import read_keyed, statistics
from epsinas_onnx.spaces import nb201
from epsinas_onnx.experiments.store import ResultStore

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def within_group_quantiles(values: np.ndarray) -> np.ndarray:
    """(rank - 0.5) / n of each value in its group, ties by order of appearance."""
    return (rankdata(values, method="ordinal") - 0.5) / len(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", type=Path)
    parser.add_argument("--config", required=True, help="the upper mode's config (evaluate lists them)")
    parser.add_argument("--dataset", default="cifar10", choices=["cifar10", "cifar100", "imagenet16_120"])
    args = parser.parse_args()

    with ResultStore(args.store, create=False) as store:
        rows = [r for r in store.rows(space="nb201") if r["config"] == args.config]
    if not rows or json.loads(rows[0]["settings"]).get("mode") != "upper":
        raise SystemExit(f"error: {args.store} holds no upper-mode rows of config {args.config}")
    accuracy, _ = read_keyed(DATA / "nb201" / "accuracies.csv", nb201, arch_column="arch",
                             columns=[args.dataset, "params_m"])
    value = np.array([np.nan if r["score"] is None else r["score"] for r in rows])
    target = np.array([accuracy[r["arch"]][args.dataset] for r in rows])
    params = np.array([accuracy[r["arch"]]["params_m"] for r in rows])
    g1, g2 = value < 1, value > 1  # NaN in neither
    print(f"{len(rows)} architectures: g1 {g1.sum()}, g2 {g2.sum()}, NaN {np.isnan(value).sum()}; target {args.dataset}")

    def report(label: str, score: np.ndarray) -> None:
        st = statistics(score, target, nan="last")
        print(f"{label:68s} rho {st['spearman']:.3f}  tau {st['kendall']:.3f}")

    # within each group, a larger stored value ranks higher: within g1 the reference's order, within g2 a smaller u
    report("upper mode (g2 above g1)", value)
    for m, name in ((g1, "g1"), (g2, "g2")):
        print(f"  within {name}: rho {statistics(value[m], target[m])['spearman']:.3f}")

    def placed(groups) -> np.ndarray:
        """For each (members, order, axis): the members, sorted by order, take their own sorted axis values."""
        out = np.full(len(rows), np.nan)
        for mask, order, axis in groups:
            index = np.flatnonzero(mask)
            out[index[np.argsort(order[index], kind="stable")]] = np.sort(axis[index])
        return out

    report("oracle: both orders kept, interleaved by accuracy", placed([(g1, value, target), (g2, value, target)]))
    report("oracle: g1's order, g2 in accuracy order", placed([(g1, value, target), (g2, target, target)]))
    merged = np.full(len(rows), np.nan)
    merged[g1] = within_group_quantiles(value[g1])
    merged[g2] = within_group_quantiles(value[g2])
    report("population: within-group percentiles merged", merged)
    bridged = np.where(g1, value, np.nan)
    classes = np.unique(params[g1])
    for p in np.unique(params[g2]):
        members = np.flatnonzero(g2 & (params == p))
        nearest = classes[np.argmin(np.abs(classes - p))]
        bridged[members] = np.median(value[g1 & (params == nearest)])
    report("population: g2 at the median g1 score of the nearest parameter count", bridged)
    report("params", params)


if __name__ == "__main__":
    main()
