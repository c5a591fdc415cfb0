"""The reference mode's statistics from a store of ladder-mode rows.

On rung 0 the ladder stores s / (1 + s) of the reference score s (its
architectures and order are the reference's); a higher rung means the
reference is NaN there. So the reference's rows need no second run:

    python -m benchmarks.score_everywhere_derived_reference SPACE STORE ACCURACIES TARGET_COLUMN

SPACE is nb101 or nlp (the spaces whose accuracies docs/score-everywhere.md
reads this way), STORE a results store of ladder rows, ACCURACIES the
benchmark's csv and TARGET_COLUMN the accuracy (or, for nlp, loss) column.
"""

from __future__ import annotations

import argparse
import csv
import math
import sqlite3
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from epsinas_onnx.experiments.evaluation import read_keyed, statistics  # noqa: E402
from epsinas_onnx.spaces import get_space  # noqa: E402

# the architecture column of each benchmark's csv ("recepie": NAS-Bench-NLP's own spelling)
ARCH_COLUMN = {"nb101": "cell", "nlp": "recepie"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("space", choices=sorted(ARCH_COLUMN))
    parser.add_argument("store", type=Path)
    parser.add_argument("accuracies", type=Path)
    parser.add_argument("target_column")
    args = parser.parse_args()
    for path in (args.store, args.accuracies):
        if not path.is_file():
            parser.error(f"{path} is not a file")
    module = get_space(args.space)
    with open(args.accuracies, newline="") as f:
        names = next(csv.reader(f))
    arch_column = ARCH_COLUMN[args.space] if ARCH_COLUMN[args.space] in names else "adjacency,ops"
    targets, _ = read_keyed(args.accuracies, module, arch_column=arch_column, columns=[args.target_column])
    with sqlite3.connect(f"file:{args.store}?mode=ro", uri=True) as db:
        rows = db.execute("select arch, score from results where error is null").fetchall()
    rows = [(a, v) for a, v in rows if math.isfinite(targets.get(a, {}).get(args.target_column, math.nan))]
    ladder = np.array([np.nan if v is None else v for _, v in rows])
    reference = np.where(ladder < 1, ladder / (1 - ladder), np.nan)  # rung 0: s / (1 + s) -> s
    target = np.array([targets[a][args.target_column] for a, _ in rows])
    for label, nan in (("reference (derived), NaN dropped", "drop"), ("reference (derived), NaN last", "last")):
        st = statistics(reference, target, nan=nan, lower_is_better=args.space == "nlp")
        print(f"{label}: n {st['n']} nan {st['nan_dropped'] or st['nan_last']} rho {st['spearman']:.3f} "
              f"tau {st['kendall']:.3f} rho_top10 {st['spearman_top10']:.3f} top10/top10 {st['top10_top10']:.2f} "
              f"top64/top5 {st['top64_top5']}")


if __name__ == "__main__":
    main()
