"""The proxies on NAS-Bench-201 (docs/proxies.md): cost, agreement with the
published values, and the population ranking's candidate aggregates.

    # seconds per architecture: each proxy beside epsinas, measured in the same process
    python -m benchmarks.proxies_nb201 speed --n 12 --data cifar10_test_1000.npz
    # a store of `bench nb201 ... --proxies naswot,zen,meco,params,flops` (and a --mode upper run):
    python -m benchmarks.proxies_nb201 compare nb201.sqlite
    python -m benchmarks.proxies_nb201 aggregates nb201.sqlite --dataset cifar10

`compare` prints, on the architectures every stored proxy covers: each
proxy's Spearman and Kendall with the three data sets' test accuracy; ours next
to the published per-architecture values of the packaged tables (NASWOT v1 and
Zen-score over the whole space, NAS-Bench-Suite-Zero's 13 proxies on its
subset), the Spearman between ours and theirs; params against params_m (the
store's networks have a 1-output head: 9 * 64 + 9 parameters fewer than the
10-class count). `aggregates` prints the 19 candidates of docs/proxies.md (rounds 1 and 2).
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import time
from pathlib import Path

import numpy as np

from epsinas_onnx.core.tables import packaged
from epsinas_onnx.experiments.evaluation import read_keyed, statistics
from epsinas_onnx.experiments.selection import row_mode, stored_proxies
from epsinas_onnx.experiments.store import ResultStore
from epsinas_onnx.proxies.aggregate import aggregate
from epsinas_onnx.spaces import nb201

DATASETS = ("cifar10", "cifar100", "imagenet16_120")
HEAD_DIFFERENCE = 9 * 64 + 9  # a 10-class classifier minus the 1-output one the store's networks have
CANDIDATES = {  # docs/proxies.md, written before any was measured
    1: ("naswot", "params"),
    2: ("naswot", "params", "meco"),
    3: ("naswot", "flops", "meco", "zen"),
    4: ("upper", "naswot", "params"),
    5: ("upper", "naswot", "params", "meco"),
    6: ("upper", "naswot", "params", "meco", "zen", "flops"),
    7: ("epsinas", "naswot", "params"),
    # round 2, written after round 1's numbers: log form only, a member listed twice counts twice
    8: ("meco", "naswot"),
    9: ("meco", "upper"),
    10: ("meco", "naswot", "upper"),
    11: ("meco", "meco", "naswot", "params"),
    12: ("meco", "meco", "naswot", "params", "upper"),
    # round 3, written after the frozen aggregate's whole-space figures: log form only
    13: ("meco", "meco", "meco", "naswot", "params"),
    14: ("meco", "meco", "meco", "meco", "naswot", "params"),
    15: ("meco", "meco", "meco", "params"),
    16: ("meco", "meco", "meco", "naswot"),
    17: ("meco", "meco", "meco", "naswot", "params", "upper"),
}
LOG_ONLY = range(8, 18)  # rounds 2 and 3


def speed(args) -> None:
    from epsinas_onnx.core.options import BatchOptions, ExecutionOptions, ScoringSettings
    from epsinas_onnx.core.scoring.scorer import batch_for, prepare_model
    from epsinas_onnx.experiments.bench import BenchJob, PiecesRunner, score_architecture
    from epsinas_onnx.proxies import engine
    from epsinas_onnx.proxies.proxy import Context, ProxyOptions

    archs = nb201.sample(args.n, args.seed)
    probe = prepare_model(nb201.to_onnx(archs[0]), execution=ExecutionOptions(threads=1))
    batch = batch_for(probe, BatchOptions(data=args.data, batch_size=256, norm="cifar10")).array
    pieces_execution = ExecutionOptions(device="cpu", threads=1, graph_optimization="none")
    pieces = nb201.pieces_for(nb201.SPACE.export_defaults, ScoringSettings(), batch, pieces_execution)
    job = BenchJob(nb201.SPACE, dict(nb201.SPACE.export_defaults), ScoringSettings(), None, pieces_execution, batch,
                   (1e-7, 1.0))
    runner = PiecesRunner(pieces, None)
    names = ("naswot", "zen", "meco", "params", "flops")
    context = Context(batch, "input", ProxyOptions(), 256)
    execution = ExecutionOptions(device="cpu", threads=1)
    engine.compute_on(lambda: nb201.to_ir(archs[0]), names, context, execution)  # the arena and imports, once
    stages = _StageTimes(engine)
    wall = {k: 0.0 for k in ("epsinas", *names)}
    cpu = {"epsinas": 0.0, "proxies": 0.0}
    for arch in archs:
        start, start_cpu = time.perf_counter(), time.process_time()
        score_architecture(job, arch, runner=runner)
        wall["epsinas"] += time.perf_counter() - start
        cpu["epsinas"] += time.process_time() - start_cpu
        start_cpu = time.process_time()
        with stages:
            for name, result in engine.compute_on(lambda: stages.build(arch), names, context, execution).items():
                wall[name] += result.seconds
        cpu["proxies"] += time.process_time() - start_cpu
    n = len(archs)
    print(f"{n} architectures (nb201.sample({args.n}, {args.seed})), one thread, seconds per architecture:")
    print("wall   " + ", ".join(f"{k} {v / n:.3f}" for k, v in wall.items()))
    print(f"cpu    epsinas {cpu['epsinas'] / n:.3f}, every proxy together {cpu['proxies'] / n:.3f} "
          f"({cpu['proxies'] / max(cpu['epsinas'], 1e-9):.0f}x epsinas)")
    whole = cpu["proxies"] / n * 15625
    print(f"whole space at that CPU time: {whole / 3600:.2f} h on one core, {whole / 2 / 3600:.2f} h on two")
    print("where the proxies' CPU time goes, ms per architecture:")
    for stage, seconds in stages.times.most_common():
        print(f"  {stage:<44} {seconds / n * 1000:7.1f}")
    print(f"  {'the rest (Python between them)':<44} {(cpu['proxies'] - sum(stages.times.values())) / n * 1000:7.1f}")


class _StageTimes:
    """CPU time of the proxies' stages, by wrapping the functions that do them
    while inside `with` (the engine calls them through these names)."""

    def __init__(self, engine):
        import onnxruntime as ort
        from onnx_ir.passes import common as common_passes

        from epsinas_onnx.core.scoring import runtime
        from epsinas_onnx.proxies import memory, registry

        self.times = collections.Counter()
        self.targets = [(runtime, "run_outputs", "runs (ONNX Runtime)"),
                        (ort.InferenceSession, "__init__", "sessions (ONNX Runtime)"),
                        (common_passes.ShapeInferencePass, "__call__", "shape inference"),
                        (engine, "session_proto", "serialise the prepared model"),
                        (engine, "draws", "draw the weights"),
                        (engine.TrainingBatchNormPass, "__call__", "batch statistics"),
                        (memory, "bounds", "the memory guard"), (memory, "peak_bytes", "the memory guard")]
        for name in ("naswot", "zen", "meco", "params", "flops"):
            proxy = registry.get(name)
            for method in ("probe", "value", "measure"):
                if method in type(proxy).__dict__:
                    self.targets.append((proxy, method, f"{name}: {method}"))
        self.saved = []

    def build(self, arch):
        start = time.process_time()
        model = nb201.to_ir(arch)
        self.times["export (nb201.to_ir)"] += time.process_time() - start
        return model

    def __enter__(self):
        for owner, attribute, label in self.targets:
            original = getattr(owner, attribute)
            self.saved.append((owner, attribute, original))
            setattr(owner, attribute, self._timed(original, label))

    def __exit__(self, *exc):
        for owner, attribute, original in reversed(self.saved):
            setattr(owner, attribute, original)
        self.saved.clear()

    def _timed(self, function, label):
        def timed(*args, **kwargs):
            start = time.process_time()
            try:
                return function(*args, **kwargs)
            finally:
                self.times[label] += time.process_time() - start

        return timed


def _load(store_path: Path):
    with ResultStore(store_path, create=False) as store:
        rows = store.rows("nb201")
    by_mode: dict[str, list[dict]] = {}
    for row in rows:
        if row["error"] is None:
            by_mode.setdefault(row_mode(row), []).append(row)
    reference = by_mode.get("reference")
    if not reference:
        raise SystemExit(f"error: {store_path} holds no reference-mode nb201 rows")
    proxies = stored_proxies(store_path, reference)
    columns = {"epsinas": {r["arch"]: r["score"] for r in reference}}
    if "upper" in by_mode:
        columns["upper"] = {r["arch"]: r["score"] for r in by_mode["upper"]}
    columns.update(proxies)
    return columns


def _common(columns: dict, names) -> list[str]:
    archs = set.intersection(*(set(columns[n]) for n in names))
    return sorted(archs)


def _targets():
    table, _ = read_keyed(packaged("nb201_accuracies"), nb201, arch_column="arch", columns=[*DATASETS, "params_m"])
    return table


def _row(label: str, values, target, nan: str = "drop") -> str:
    s = statistics(values, target, nan=nan)
    return (f"{label:<34} {s['n']:>6} {s['nan_dropped'] + s['nan_last']:>5} {s['spearman']:>8.3f} {s['kendall']:>8.3f} "
            f"{s['spearman_top10']:>8.3f} {s['top64_top5']:>3}/{s['n_top64']}")


def compare(args) -> None:
    from scipy.stats import spearmanr

    columns = _load(args.store)
    ours = [n for n in ("naswot", "zen", "meco", "params", "flops") if n in columns]
    archs = _common(columns, ["epsinas", *ours])
    targets = _targets()
    baselines = read_keyed(packaged("nb201_baselines"), nb201, arch_column="arch",
                           columns=["naswot_cifar10", *(f"zen_{d}" for d in DATASETS)], failed_marker=-1e8)[0]
    print(f"{args.store}: {len(archs)} architectures with every proxy ({', '.join(ours)}) stored")
    header = f"{'proxy':<34} {'n':>6} {'NaN':>5} {'spearman':>8} {'kendall':>8} {'rho top10':>8} top64/top5"
    for dataset in DATASETS:
        target = [targets[a][dataset] for a in archs]
        print(f"\n{dataset} test accuracy\n{header}")
        print(_row("epsinas (NaN last)", [columns["epsinas"][a] for a in archs], target, nan="last"))
        if "upper" in columns:
            print(_row("epsinas --mode upper", [columns["upper"].get(a, math.nan) for a in archs], target))
        for name in ours:
            print(_row(f"{name} (ours)", [columns[name][a] for a in archs], target))
        print(_row("naswot_cifar10 (published, v1)", [baselines.get(a, {}).get("naswot_cifar10", math.nan)
                                                       for a in archs], target))
        print(_row(f"zen_{dataset} (published)", [baselines.get(a, {}).get(f"zen_{dataset}", math.nan)
                                                  for a in archs], target))

    print("\nours against the published values, Spearman on the architectures both have:")
    pairs = [("naswot", "naswot_cifar10", baselines), ("zen", "zen_cifar10", baselines)]
    for ours_name, theirs, table in pairs:
        if ours_name in columns:
            both = [a for a in archs if math.isfinite(columns[ours_name][a]) and math.isfinite(table.get(a, {}).get(theirs, math.nan))]
            rho = spearmanr([columns[ours_name][a] for a in both], [table[a][theirs] for a in both]).statistic
            print(f"  {ours_name} vs {theirs}: {rho:.3f} on {len(both)}")
    subset = packaged("nb201_proxies")
    for dataset in DATASETS:
        zc, _ = read_keyed(subset, nb201, arch_column="arch_str", columns=["nwot", "params", "flops", "naslib_val_accuracy"],
                           dataset=dataset)
        for ours_name, theirs in (("naswot", "nwot"), ("params", "params"), ("flops", "flops")):
            if ours_name not in columns:
                continue
            both = [a for a in archs if a in zc and math.isfinite(columns[ours_name][a]) and math.isfinite(zc[a][theirs])]
            if len(both) > 2:
                rho = spearmanr([columns[ours_name][a] for a in both], [zc[a][theirs] for a in both]).statistic
                print(f"  {ours_name} vs NAS-Bench-Suite-Zero {theirs} ({dataset}): {rho:.3f} on {len(both)}")
    if "params" in columns:
        # 204 of the table's 15,625 params_m are no count of their network (199 fractional, e.g. index 15403:
        # 0.14797266666666667; 5 another network's, e.g. index 5065: 0.923946 for 802,426): tests/test_proxies.py
        exact = sum(columns["params"][a] + HEAD_DIFFERENCE == round(targets[a]["params_m"] * 1e6) for a in archs)
        print(f"  params + {HEAD_DIFFERENCE} (the 10-class head) == params_m * 1e6 exactly: {exact} of {len(archs)} "
              "(the table holds 204 values that are no count of their network)")


def aggregates(args) -> None:
    columns = _load(args.store)
    needed = sorted({m for members in CANDIDATES.values() for m in members} & set(columns))
    archs = _common(columns, needed)
    targets = _targets()
    target = [targets[a][args.dataset] for a in archs]
    print(f"{args.store}: {len(archs)} architectures with {', '.join(needed)}; target {args.dataset} test accuracy")
    print(f"{'candidate':<50} {'n':>6} {'NaN':>5} {'spearman':>8} {'kendall':>8} {'rho top10':>8} top64/top5")
    for name in needed:
        print(_row(f"{name} alone (NaN last)", [columns[name][a] for a in archs], target, nan="last"))
    for number, members in CANDIDATES.items():
        if not set(members) <= set(columns):
            print(f"{number}: {members} not all stored")
            continue
        values = {m: [columns[m][a] for a in archs] for m in members}
        weights = {m: members.count(m) for m in members}
        for form, letter in (("log", "L"), ("mean", "M")):
            if number in LOG_ONLY and form != "log":
                continue
            label = f"{number}{letter} {form}: {'+'.join(members)}"
            print(_row(label, aggregate(values, form=form, weights=weights), target, nan="last"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("speed")
    p.add_argument("--n", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", type=Path, required=True)
    for name in ("compare", "aggregates"):
        p = sub.add_parser(name)
        p.add_argument("store", type=Path)
        p.add_argument("--dataset", default="cifar10", choices=DATASETS)
    args = parser.parse_args()
    {"speed": speed, "compare": compare, "aggregates": aggregates}[args.command](args)


if __name__ == "__main__":
    main()
