"""Where the collapsed score's memory goes, stage by stage: MobileNetV2,
ResNet-50 and EfficientNet-B0 (benchmarks/real_models.py builds them) at
224x224, batch 256, one thread, each in a fresh child process.

    python benchmarks/score_memory.py [--models mobilenet_v2 resnet50 efficientnet_b0]
                                      [--batch-size 256] [--resolution 224] [--weights 0.1 1]
                                      [--no-collapse] [--baseline-root ../main]

The child goes through the stages of `epsinas_onnx.score` one call at a
time (the library's own functions: load_model, rewrite_for_scoring,
open_session, the batch, both runs, the metric) and prints, after each, its
resident memory (VmRSS) and the peak during that stage (VmHWM, reset between
stages through /proc/self/clear_refs), both in MiB, and the stage's seconds.
The last line is the child's whole peak (the largest of the stages' peaks:
its VmHWM as real_models.py reports it). With --baseline-root the same
child runs that checkout's epsinas_onnx first (e.g. the main branch), then
this one's, on the same files. The child gives the library the batch's file
path (the .npy the parent wrote), as `epsinas-onnx score --data batch.npy`
does, never an array it loaded itself; where the library can (`score`'s
channel_sum: rewrite_model(..., channel_sum=True), absent from older
checkouts), the model takes the batch's channel sum, read a chunk at a time.
The score is printed in full (repr) to compare checkouts bit for bit.
ONNX Runtime's memory is native, so tracemalloc would not see it; this does.
"""

from __future__ import annotations

import argparse
import inspect
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.real_models import MODELS, exported, make_batch, save_batch  # noqa: E402


def status() -> dict[str, float]:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            key, value = line.split(":")
            fields[key] = int(value.split()[0]) / 1024
    return fields


class Stages:
    """Prints one line per stage: resident after it, peak during it, seconds."""

    def __init__(self):
        self.start = time.perf_counter()
        self.peak = 0.0
        print(f"{'stage':<28} {'resident MiB':>12} {'peak in stage':>13} {'seconds':>8}")

    def done(self, name: str) -> None:
        fields, now = status(), time.perf_counter()
        self.peak = max(self.peak, fields["VmHWM"])
        print(f"{name:<28} {fields['VmRSS']:12.1f} {fields['VmHWM']:13.1f} {now - self.start:8.2f}", flush=True)
        try:
            Path("/proc/self/clear_refs").write_text("5")  # the peak starts again from the resident size
        except OSError:
            pass
        self.start = time.perf_counter()


def child(onnx_file: str, batch_file: str, weights: tuple[float, float], collapse: bool, root: str) -> None:
    sys.path.insert(0, root)  # the checkout whose epsinas_onnx is measured
    stages = Stages()
    stages.done("python and numpy")
    import epsinas_onnx.core.scoring.scorer as scorer
    from epsinas_onnx.core.options import BatchOptions, ExecutionOptions, ScoringSettings
    from epsinas_onnx.core.scoring.metric import epsinas_score
    from epsinas_onnx.core.scoring.model_io import load_model

    if Path(root).resolve() != ROOT:  # the baseline's own code, not this checkout's
        print(f"(epsinas_onnx from {Path(scorer.__file__).parents[3]})")
    stages.done("libraries imported")
    batch_size = np.load(batch_file, mmap_mode="r").shape[0]  # the header alone
    scoring, execution = ScoringSettings(collapse=collapse), ExecutionOptions(device="cpu", threads=1)
    model = load_model(onnx_file)
    stages.done("model loaded and checked")
    # score()'s own rewrite: the channel sum where the checkout has it
    sums = "channel_sum" in inspect.signature(scorer.rewrite_model).parameters
    staged = scorer.rewrite_model(model, scoring, in_place=True, **({"channel_sum": True} if sums else {}))
    takes_sum = sums and staged.rewritten.takes_channel_sum
    stages.done("rewritten" + (", input summed" if takes_sum else ""))
    prepared = scorer.open_session(staged, execution)
    stages.done("session open")
    batch = scorer.batch_for(prepared, BatchOptions(data=batch_file, batch_size=batch_size))
    stages.done(f"batch read ({batch.array.nbytes / 2**20:.0f} MiB)")
    outputs = []
    for w in weights:
        outputs.append(prepared.run(batch.array, w))
        stages.done(f"run at w = {w:g}")
    score = epsinas_score(*outputs)
    stages.done("metric")
    print(f"score {score!r}")
    print(f"{'peak of the process':<28} {'':>12} {stages.peak:13.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--weights", nargs=2, type=float, default=[0.1, 1.0])
    parser.add_argument("--no-collapse", action="store_true", help="the full-width path instead")
    parser.add_argument("--baseline-root", type=Path, help="another checkout to measure first, on the same files")
    parser.add_argument("--child", nargs=3, metavar=("ONNX", "BATCH", "ROOT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child[:2], tuple(args.weights), not args.no_collapse, args.child[2])
        return
    roots = {"this checkout": ROOT}
    if args.baseline_root is not None:
        roots = {f"baseline {args.baseline_root}": args.baseline_root.resolve(), **roots}

    batch, what = make_batch(args.batch_size, args.resolution)
    print(f"batch: {what}, {batch.shape}; weights {tuple(args.weights)}; "
          f"{'full width' if args.no_collapse else 'collapsed'}; load average {os.getloadavg()[0]:.1f}")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory(prefix="score-memory-") as folder:
        batch_file = save_batch(batch, folder)
        del batch
        for model, onnx_file, _, _ in exported(args.models, args.resolution, folder):
            for label, root in roots.items():
                print(f"\n{model}, {label}", flush=True)
                command = [sys.executable, __file__, "--child", str(onnx_file), str(batch_file), str(root),
                           "--weights", *map(str, args.weights), *(["--no-collapse"] if args.no_collapse else [])]
                process = subprocess.run(command, env=env, capture_output=True, text=True)
                print(process.stdout.rstrip())
                if process.returncode != 0:
                    print(f"failed: exit {process.returncode}: {(process.stderr.strip().splitlines() or ['?'])[-1]}")


if __name__ == "__main__":
    main()
