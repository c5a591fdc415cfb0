"""Per-architecture scoring time on NAS-Bench-201: PyTorch eager vs ONNX
full width vs ONNX channel-collapsed, on the same sample, in one run.

    python benchmarks/speed_nb201.py [--n 20] [--batch-size 256] [--workers 2] [--whole-space]

Each path does what scoring one architecture needs: build the network,
set the constant weights, run the batch at both weights (1e-7, 1), compute
the score; the ONNX paths as a `bench` worker does (bench.score_architecture,
one ONNX Runtime thread), one architecture after the other, each run (no
reuse of repeated computations).
The projection is per-architecture time x 15,625 / workers (every
architecture run); with --whole-space the script then scores all 15,625 the
way `epsinas-onnx bench nb201 --all` does (computation classes, `--workers`
processes, a temporary store) and prints the measured wall time beside the
projection for the architectures bench actually runs.
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
from epsinas_onnx.bench import build_options, computation_classes, run_bench, score_architecture  # noqa: E402
from epsinas_onnx.executors import freeze_startup_objects  # noqa: E402
from epsinas_onnx.options import BatchOptions  # noqa: E402
from epsinas_onnx.spaces import nb201  # noqa: E402

WEIGHTS = (1e-7, 1.0)
SPACE_SIZE = 15_625


def torch_eager(arch_strings, x):
    import torch

    from tests.torch_reference.metric import init_reference, reference_score
    from tests.torch_reference.nb201 import TinyNetwork

    torch.set_num_threads(1)
    batch = torch.from_numpy(x)
    scores = []
    for arch in arch_strings:
        outputs = []
        for w in WEIGHTS:
            net = TinyNetwork(arch, num_classes=1, bn_track_running_stats=False)
            init_reference(net, w)
            net.eval()
            with torch.no_grad():
                outputs.append(net(batch))
        scores.append(reference_score(*outputs))
    return scores


def onnx_path(archs, x, collapse):
    """What one bench worker does per architecture (no reuse of repeated computations)."""
    settings = {"collapse": collapse}
    build = build_options(nb201.SPACE, settings)  # as bench builds (tied parameters)
    rows = [score_architecture(nb201.SPACE, arch, x, WEIGHTS, export={}, settings=settings, build=build) for arch in archs]
    return [row["score"] for row in rows]


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
    base = results["pytorch eager"][1] / args.n
    print(f"{'path':<18} {'s/arch':>8} {'vs torch':>9} {'space, ' + str(args.workers) + ' workers':>18}")
    for name, (scores, seconds) in results.items():
        per_arch = seconds / args.n
        projected = per_arch * SPACE_SIZE / args.workers
        print(f"{name:<18} {per_arch:8.3f} {base / per_arch:8.1f}x {projected / 60:15.1f} min")
    ref = np.array(results["pytorch eager"][0], dtype=np.float64)
    for name in ("onnx full width", "onnx collapsed"):
        got = np.array(results[name][0], dtype=np.float64)
        same_nan = np.array_equal(np.isnan(ref), np.isnan(got))
        finite = ~np.isnan(ref)
        worst = float(np.max(np.abs(got[finite] - ref[finite]) / np.abs(ref[finite]))) if finite.any() else 0.0
        print(f"{name}: same NaN set as torch: {same_nan}; worst relative score gap {worst:.1e}")
    if args.whole_space:
        whole_space(x, results["onnx collapsed"][1] / args.n, args.workers)


def whole_space(x, per_arch: float, workers: int) -> None:
    """All 15,625 as `bench nb201 --all` scores them, beside the projection."""
    todo = [(arch, nb201.format_arch(arch)) for arch in nb201.all_archs()]
    runs = len(computation_classes(nb201.SPACE, todo, {}).to_score)
    with tempfile.TemporaryDirectory() as tmp:
        summary = run_bench("nb201", nb201.all_archs(), WEIGHTS,
                            batch_options=BatchOptions(data=x, batch_size=len(x), norm="none"), store_path=Path(tmp) / "space.sqlite", workers=workers, progress=False)
    print(f"whole space, {workers} workers: {runs:,} of {SPACE_SIZE:,} run (the others compute the same as one of "
          f"them); projected {runs * per_arch / workers:.0f} s, measured {summary.wall:.1f} s "
          f"({summary.scored:,} scored, {summary.nan:,} NaN, {summary.errors} errors)")


if __name__ == "__main__":
    main()
