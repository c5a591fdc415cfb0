"""The tables of docs/results.md for a space scored whole, from its results
store: every stored configuration (weights, batch, mode) against the
space's packaged targets, NaN dropped and NaN ranked last, with the packaged
baselines (and, with --proxies, the proxies table's subset) beside them.

    python benchmarks/held_out_report.py --store macro.sqlite --space macro
    python benchmarks/held_out_report.py --store tnb.sqlite --space tnb_micro --datasets class_scene class_object
    python benchmarks/held_out_report.py --store tnb.sqlite --space tnb_micro --tasks

Each configuration is evaluated alone (`evaluate --config ID` for each),
all on the same architectures: those with a finite target. --tasks prints
one Spearman per configuration and task instead (the space's data sets),
NaN dropped / NaN last, with the packaged baselines' per-task rows.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from epsinas_onnx.core.options import MODE_REVISIONS, TargetOptions  # noqa: E402
from epsinas_onnx.experiments import benchmark_tables, evaluation  # noqa: E402
from epsinas_onnx.experiments.selection import row_mode, space_rows  # noqa: E402
from epsinas_onnx.spaces import get_space  # noqa: E402


def configs(store: str, space: str) -> dict[str, list[dict]]:
    """The store's rows of `space` by config id, in the order first stored."""
    _, rows = space_rows(store, space)
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["config"], []).append(row)
    return groups


def label(rows: list[dict]) -> str:
    first = rows[0]
    weights = " ".join(f"{w:g}" for w in json.loads(first["weights"]))
    data = "grey" if first["data_description"].startswith("synthetic grey") else first["data_description"].split("[")[0]
    mode = row_mode(first)
    # a mode's rows stored before its current revision (the upper mode before its rounding guard)
    stale = mode in MODE_REVISIONS and json.loads(first["settings"]).get("mode_revision") != MODE_REVISIONS[mode]
    return f"{mode} [{weights}], {data}" + (" (an earlier revision of the mode)" if stale else "")


def fmt(value, digits: int = 3) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def report(store: str, space: str, dataset: str | None, proxies: bool) -> None:
    module = get_space(space)
    targets = benchmark_tables.targets_table(space)
    baselines = benchmark_tables.side_table(space, "packaged", "baselines") if module.baselines_table else None
    side = benchmark_tables.side_table(space, "packaged", "proxies") if proxies else None
    print(f"\n{space}, target {dataset or module.target_candidates(None)[0]} ({targets})\n")
    print("| configuration | n | NaN | rho | tau | rho, NaN last | tau, NaN last | top64/top5 (NaN last) |")
    print("|---|---|---|---|---|---|---|---|")
    result = None
    for rows in configs(store, space).values():
        result = evaluation.evaluate(rows, space, TargetOptions(accuracies=targets, dataset=dataset),
                                     baselines=baselines, proxies=side, mode=row_mode(rows[0]))
        dropped, last = result["rows"][0], result["rows"][1]
        print(f"| {label(rows)} | {dropped['n']} | {dropped['nan_dropped']} | {fmt(dropped['spearman'])} | "
              f"{fmt(dropped['kendall'])} | {fmt(last['spearman'])} | {fmt(last['kendall'])} | "
              f"{last['top64_top5']}/{last['n_top64']} |")
    for row in result["rows"][2:]:  # the baselines: the same for every configuration
        print(f"| {row['proxy']} | {row['n']} | {row['nan_dropped']} | {fmt(row['spearman'])} | {fmt(row['kendall'])} "
              f"| | | {row['top64_top5']}/{row['n_top64']} |")
    print(f"\ncounts (last configuration): {result['counts']}")


def tasks(store: str, space: str) -> None:
    module = get_space(space)
    targets = benchmark_tables.targets_table(space)
    baselines = benchmark_tables.side_table(space, "packaged", "baselines") if module.baselines_table else None
    groups = configs(store, space)
    print(f"\n{space}: Spearman per task, NaN dropped / NaN last ({targets})\n")
    print("| configuration | " + " | ".join(module.datasets) + " |")
    print("|---|" + "---|" * len(module.datasets))
    cells = {}
    for rows in groups.values():
        line = []
        for task in module.datasets:
            result = evaluation.evaluate(rows, space, TargetOptions(accuracies=targets, dataset=task),
                                         baselines=baselines, mode=row_mode(rows[0]))
            line.append(f"{fmt(result['rows'][0]['spearman'])} / {fmt(result['rows'][1]['spearman'])}")
            for row in result["rows"][2:]:
                name = "zen" if row["proxy"].startswith("zen_") else row["proxy"]
                cells.setdefault(name, {})[task] = fmt(row["spearman"])
        print(f"| {label(rows)} | " + " | ".join(line) + " |")
    for name, by_task in cells.items():
        print(f"| {name} | " + " | ".join(by_task[t] for t in module.datasets) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", required=True)
    parser.add_argument("--space", required=True)
    parser.add_argument("--datasets", nargs="*", default=None, help="default: the space's first (or none)")
    parser.add_argument("--proxies", action="store_true", help="also the packaged proxies (their subset only)")
    parser.add_argument("--tasks", action="store_true", help="one Spearman per configuration and data set")
    args = parser.parse_args()
    if args.tasks:
        tasks(args.store, args.space)
        return
    for dataset in args.datasets or [None]:
        report(args.store, args.space, dataset, args.proxies)


if __name__ == "__main__":
    main()
