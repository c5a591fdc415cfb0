"""Per-architecture scoring time on NAS-Bench-Macro and TransNAS-Bench-101:
PyTorch eager (the independent reference networks of tests/torch_reference/,
the reference initialisation) vs what a `bench` worker does (the generic
path: export, rewrite, collapse, session, runs; for the TransNAS spaces also
their pieces, the stem run once per weight), on the same sample, in one run.

    python benchmarks/speed_spaces.py --space macro [--n 10] [--data cifar10_test_1000.npz] [--whole-space]
    python benchmarks/speed_spaces.py --space tnb_micro --n 3 [--whole-space]

Both paths score each architecture at the reference pair (1e-7, 1), one
thread, one architecture after the other, every architecture run (no reuse of
repeated computations). PyTorch builds the network and runs the batch at both
weights; `bench`'s path (bench.score_architecture) skips the second run where
the first output is constant, as bench does. With --whole-space the script
then scores the whole space the way `epsinas-onnx bench SPACE --all --workers
W` does (computation classes, W processes, a temporary store) and prints the
measured wall time beside PyTorch eager's projected time for the same space
on W processes: the ratio. The batch: --data (CIFAR-10 normalisation,
resized to the space's resolution) or the grey default, batch 256.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.speed_nb201 import EXECUTION, WEIGHTS, onnx_path, timed  # noqa: E402
from epsinas_onnx.core.options import BatchOptions, ExecutionOptions, RunOptions, ScoringSettings  # noqa: E402
from epsinas_onnx.core.scoring.scorer import batch_for, prepare_model  # noqa: E402
from epsinas_onnx.experiments.bench import run_bench  # noqa: E402
from epsinas_onnx.experiments.executors import freeze_startup_objects  # noqa: E402
from epsinas_onnx.spaces import get_space  # noqa: E402

SPACES = ("macro", "tnb_micro", "tnb_macro")


def torch_network(space: str, text: str):
    """A builder of the reference network of `text` (batch-statistics BN)."""
    if space == "macro":
        from tests.torch_reference.macro import Network

        return lambda: Network(text, num_classes=1, bn_track_running_stats=False)
    from tests.torch_reference.transnas import MacroNet

    return lambda: MacroNet(text, num_classes=1, bn_track_running_stats=False)


def torch_eager(space: str, texts, x) -> list[float]:
    import torch

    from tests.torch_reference.metric import torch_score

    torch.set_num_threads(1)
    batch = torch.from_numpy(x)
    return [torch_score(torch_network(space, text), batch, WEIGHTS) for text in texts]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", choices=SPACES, required=True)
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default=None, help="CIFAR-10 images (default: the grey batch)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--whole-space", action="store_true", help="then score the whole space as bench does, and time it")
    args = parser.parse_args()

    module = get_space(args.space)
    archs = module.sample(args.n, args.seed)
    options = BatchOptions(data=args.data, batch_size=args.batch_size, norm="cifar10" if args.data else "auto")
    batch = batch_for(prepare_model(module.to_onnx(archs[0]), execution=ExecutionOptions(threads=1)), options)
    x = batch.array
    onnx_path(archs[:1], x, True, space=module)  # warm up imports and allocators
    freeze_startup_objects()  # as a bench worker does
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    print(f"machine: {platform.node()}, {os.cpu_count()} cores, {cpu}, load average {os.getloadavg()[0]:.1f}; "
          f"{args.space}, {batch.description}, {args.n} archs, 1 thread per path")
    texts = [module.format_arch(a) for a in archs]
    eager, eager_s = timed(torch_eager, args.space, texts, x)
    paths = {"bench, generic": timed(lambda: onnx_path(archs, x, True, space=module))}
    if module.pieces_for is not None:  # what bench runs for this space: set-up once per worker, timed apart
        export = dict(module.export_defaults)
        pieces, setup = timed(lambda: module.pieces_for(export, ScoringSettings(), x, EXECUTION))
        paths["bench, pieces"] = timed(lambda: onnx_path(archs, x, True, pieces, space=module))
    print(f"{'path':<16} {'s/arch':>8} {'vs torch':>9}")
    print(f"{'pytorch eager':<16} {eager_s / args.n:8.3f} {1:8.1f}x")
    ref = np.array(eager, np.float64)
    for name, (scores, seconds) in paths.items():
        print(f"{name:<16} {seconds / args.n:8.3f} {eager_s / seconds:8.1f}x")
    if module.pieces_for is not None:
        print(f"bench, pieces: set-up once per worker {setup:.2f} s")
    for name, (scores, _) in paths.items():
        got = np.array(scores, np.float64)
        print(f"{name}: same NaN set as torch: {np.array_equal(np.isnan(ref), np.isnan(got))} "
              f"({int(np.isnan(ref).sum())} of {args.n} NaN at {WEIGHTS[0]:g} {WEIGHTS[1]:g})")
    if args.whole_space:
        whole_space(module, options, args.workers, eager_s / args.n)


def whole_space(module, options: BatchOptions, workers: int, torch_per_arch: float) -> None:
    archs = module.all_archs()
    with tempfile.TemporaryDirectory() as tmp:
        summary = run_bench(module.name, archs, WEIGHTS, batch=options,
                            run=RunOptions(store=Path(tmp) / "space.sqlite", workers=workers, progress=False))
    print(f"whole space, {workers} workers: {len(archs):,} architectures, {len(archs) - summary.reused:,} run; "
          f"wall {summary.wall:.1f} s ({summary.scored:,} scored, {summary.nan:,} NaN, {summary.errors} errors)")
    torch_space = torch_per_arch * len(archs) / workers
    print(f"ratio: PyTorch eager for the whole space on {workers} workers ({torch_per_arch:.3f} s x {len(archs):,} / "
          f"{workers} = {torch_space:,.0f} s) / measured wall {summary.wall:.1f} s = {torch_space / summary.wall:.0f}x")


if __name__ == "__main__":
    main()
