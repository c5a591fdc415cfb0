"""Per-architecture scoring time on NAS-Bench-201: PyTorch eager vs ONNX
full width vs ONNX channel-collapsed vs the collapsed network run piece by
piece, on the same sample, in one run.

    python benchmarks/speed_nb201.py [--n 20] [--batch-size 256] [--workers 2] [--whole-space]

Each path does what scoring one architecture needs: build the network,
set the constant weights, run the batch at both weights (1e-7, 1), compute
the score, one ONNX Runtime thread per path, one architecture after the
other, each run (no reuse of repeated computations). The generic ONNX paths
(full width, collapsed) export, rewrite and open a session per architecture
(bench.score_architecture without pieces); "onnx pieces" is what a `bench`
worker does for NAS-Bench-201 (nb201.Pieces: the sessions made once, their
set-up time printed apart).
The projection is per-architecture time x 15,625 / workers (every
architecture run); with --whole-space the script then scores all 15,625 the
way `epsinas-onnx bench nb201 --all` does (computation classes, `--workers`
processes, a temporary store), prints the measured wall time beside the
projection for the architectures bench actually runs, and the ratio of
PyTorch eager's time for the whole space on `--workers` processes to that wall.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.collapse_agreement import cifar10  # noqa: E402
from epsinas_onnx.experiments.bench import (  # noqa: E402
    BENCH_GRAPH_OPTIMIZATION, BenchJob, ExportRunner, PiecesRunner, computation_classes, run_bench, score_architecture,
)
from epsinas_onnx.experiments.executors import freeze_startup_objects  # noqa: E402
from epsinas_onnx.core.options import BatchOptions, ExecutionOptions, RunOptions, ScoringSettings  # noqa: E402
from epsinas_onnx.spaces import nb201  # noqa: E402

WEIGHTS = (1e-7, 1.0)
EXECUTION = ExecutionOptions(device="cpu", threads=1, graph_optimization=BENCH_GRAPH_OPTIMIZATION)  # one bench worker
SPACE_SIZE = 15_625


def torch_eager(arch_strings, x):
    import torch

    from tests.torch_reference.metric import torch_score
    from tests.torch_reference.nb201 import TinyNetwork

    torch.set_num_threads(1)
    batch = torch.from_numpy(x)
    return [torch_score(lambda: TinyNetwork(arch, num_classes=1, bn_track_running_stats=False), batch, WEIGHTS)
            for arch in arch_strings]


def onnx_path(archs, x, collapse, pieces=None, space=nb201.SPACE):
    """What one bench worker does per architecture (no reuse of repeated
    computations): the generic path, or with `pieces` (Space.pieces_for) the
    space's own."""
    job = BenchJob(space, {}, ScoringSettings(collapse=collapse), None, EXECUTION, x, WEIGHTS)  # tied, as bench
    runner = PiecesRunner(pieces, None) if pieces is not None else ExportRunner(job, keyed=False)
    rows = [score_architecture(job, arch, runner=runner) for arch in archs]
    return [row["score"] for row in rows]


def make_pieces(x):
    return nb201.pieces_for({}, ScoringSettings(), x, EXECUTION)


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2, help="for the projection")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--whole-space", action="store_true", help="then score all 15,625 as bench does, and time it")
    args = parser.parse_args()

    x = cifar10(args.batch_size)
    archs = nb201.sample(args.n, args.seed)
    onnx_path(archs[:2], x, True)  # warm up imports and allocators
    freeze_startup_objects()  # as a bench worker does
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    print(f"machine: {platform.node()}, {os.cpu_count()} cores, {cpu}; batch {args.batch_size}, {args.n} archs, 1 thread per path")
    results = {}
    results["pytorch eager"] = timed(torch_eager, [nb201.format_arch(a) for a in archs], x)
    results["onnx full width"] = timed(onnx_path, archs, x, False)
    results["onnx collapsed"] = timed(onnx_path, archs, x, True)
    pieces, setup = timed(make_pieces, x)
    results["onnx pieces"] = timed(onnx_path, archs, x, True, pieces)
    base = results["pytorch eager"][1] / args.n
    print(f"{'path':<18} {'s/arch':>8} {'vs torch':>9} {'space, ' + str(args.workers) + ' workers':>18}")
    for name, (scores, seconds) in results.items():
        per_arch = seconds / args.n
        projected = per_arch * SPACE_SIZE / args.workers
        print(f"{name:<18} {per_arch:8.3f} {base / per_arch:8.1f}x {projected / 60:15.1f} min")
    ref = np.array(results["pytorch eager"][0], dtype=np.float64)
    print(f"onnx pieces: set-up once per worker (template export, rewrite, cut, {pieces.sessions} sessions) {setup:.3f} s")
    for name in ("onnx full width", "onnx collapsed", "onnx pieces"):
        got = np.array(results[name][0], dtype=np.float64)
        same_nan = np.array_equal(np.isnan(ref), np.isnan(got))
        finite = ~np.isnan(ref)
        worst = float(np.max(np.abs(got[finite] - ref[finite]) / np.abs(ref[finite]))) if finite.any() else 0.0
        print(f"{name}: same NaN set as torch: {same_nan}; worst relative score gap {worst:.1e}")
    if args.whole_space:
        whole_space(x, results["onnx pieces"][1] / args.n, args.workers, base)


def whole_space(x, per_arch: float, workers: int, torch_per_arch: float) -> None:
    """All 15,625 as `bench nb201 --all` scores them, beside the projection."""
    todo = [(arch, nb201.format_arch(arch)) for arch in nb201.all_archs()]
    runs = len(computation_classes(nb201.SPACE, todo, ScoringSettings()).to_score)
    with tempfile.TemporaryDirectory() as tmp:
        summary = run_bench("nb201", nb201.all_archs(), WEIGHTS,
                            batch=BatchOptions(data=x, batch_size=len(x), norm="none"),
                            run=RunOptions(store=Path(tmp) / "space.sqlite", workers=workers, progress=False))
    print(f"whole space, {workers} workers: {runs:,} of {SPACE_SIZE:,} run (the others compute the same as one of "
          f"them); projected {runs * per_arch / workers:.0f} s, measured {summary.wall:.1f} s "
          f"({summary.scored:,} scored, {summary.nan:,} NaN, {summary.errors} errors)")
    torch_space = torch_per_arch * SPACE_SIZE / workers
    print(f"ratio: PyTorch eager for the whole space on {workers} workers ({torch_per_arch:.3f} s x {SPACE_SIZE:,} / "
          f"{workers} = {torch_space:,.0f} s) / measured wall {summary.wall:.1f} s = {torch_space / summary.wall:.0f}x")


if __name__ == "__main__":
    main()
