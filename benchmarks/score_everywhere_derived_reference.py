"""The reference mode's statistics from a store of ladder-mode rows.

On rung 0 the ladder stores s / (1 + s) of the reference score s (its
architectures and order are the reference's); a higher rung means the
reference is NaN there. So the reference's rows need no second run:

    python -m benchmarks.score_everywhere_derived_reference SPACE STORE ACCURACIES TARGET_COLUMN
"""
import csv
import math
import sqlite3
import sys

import numpy as np
from epsinas_onnx.evaluation import statistics, read_keyed
from epsinas_onnx.spaces import get_space
space, store, acc_path, col = sys.argv[1:5]
mod = get_space(space)
arch_col = {"nb101": "cell" , "nlp": "recepie"}[space]
names = next(csv.reader(open(acc_path)))
if arch_col not in names: arch_col = "adjacency,ops"
acc, _ = read_keyed(acc_path, mod, arch_column=arch_col, columns=[col])
rows = sqlite3.connect(store).execute("select arch, score from results where error is null").fetchall()
rows = [(a, v) for a, v in rows if math.isfinite(acc.get(a, {}).get(col, math.nan))]
ladder = np.array([np.nan if v is None else v for _, v in rows])
ref = np.where(ladder < 1, ladder / (1 - ladder), np.nan)
t = np.array([acc[a][col] for a, _ in rows])
lib = space == "nlp"
for lab, nan in (("reference (derived), NaN dropped", "drop"), ("reference (derived), NaN last", "last")):
    st = statistics(ref, t, nan=nan, lower_is_better=lib)
    print(f"{lab}: n {st['n']} nan {st['nan_dropped'] or st['nan_last']} rho {st['spearman']:.3f} tau {st['kendall']:.3f} rho_top10 {st['spearman_top10']:.3f} top10/top10 {st['top10_top10']:.2f} top64/top5 {st['top64_top5']}")
