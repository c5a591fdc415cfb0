"""NAS-Bench-201 on CPU and CUDA, full width and channel-collapsed: do the four
paths give the same scores, and how long does each take per architecture?

    python benchmarks/gpu_check.py [--n 1000] [--devices cpu cuda] [--data PATH]
                                   [--cpu-workers N] [--cuda-workers N] [--json OUT]

Each path scores the same architectures (epsinas_onnx.spaces.nb201.sample(n, 0)) on the
same batch (the first 256 CIFAR-10 test images, CIFAR-10 normalisation) the way
`epsinas-onnx bench` does: bench.BenchJob.run = bench.score_architecture =
export -> rewrite (collapse or not) -> session on the device -> two runs -> metric. CPU
paths run in --cpu-workers processes of one thread each (bench's local
executor); CUDA paths in --cuda-workers (default 1, in this process).

Paths that differ in one thing are compared: CUDA with CPU at each width,
collapsed with full width on each device. They agree when the NaN sets are
equal and every other score is within --rtol (1e-4) relative, with an
absolute floor --atol (1e-6; as benchmarks/collapse_agreement.py). A
disagreement is listed with whether the full-width CPU output at w = 1e-7
holds subnormal values (below 1.18e-38; a GPU may flush them to zero).

Machine-readable lines: `TIME ...` per path, `AGREE ...` per comparison,
`RESULT PASS|FAIL`. Exit 0: all agree; 1: a disagreement or an error row;
2: a path cannot run (e.g. no CUDA here: one `error:` line).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from epsinas_onnx.experiments import bench

from epsinas_onnx import prepare_model

from epsinas_onnx.core.scoring import runtime  # noqa: E402
from epsinas_onnx.core.errors import UserError  # noqa: E402
from epsinas_onnx.core.options import BatchOptions, ExecutionOptions, RunOptions, ScoringSettings  # noqa: E402
from epsinas_onnx.experiments.executors import run_job  # noqa: E402
from epsinas_onnx.core.scoring.inputs import prepare_batch  # noqa: E402
from epsinas_onnx.spaces import nb201  # noqa: E402

WEIGHTS = nb201.SPACE.reference_weights
DATA_NAME = Path("inputs") / "cifar10_test_1000.npz"
TINY = np.finfo(np.float32).tiny


def find_data(given: str | None) -> Path:
    if given:
        path = Path(given)
        if path.is_dir():
            path = path / DATA_NAME if (path / DATA_NAME).is_file() else path / DATA_NAME.name
        if not path.is_file():
            raise UserError(f"CIFAR-10 file not found: {path}")
        return path
    for base in (ROOT.parent / "shared" / "data", ROOT / "shared" / "data", Path.cwd().parent / "shared" / "data"):
        if (base / DATA_NAME).is_file():
            return base / DATA_NAME
    raise UserError(f"cannot find shared/data/{DATA_NAME} beside the repository; pass --data PATH")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def gpu_name() -> str:
    try:
        import subprocess

        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else "none found"
    except (OSError, IndexError, Exception):
        return "none found (no nvidia-smi)"


def run_path(job, archs: list, workers: int, label: str) -> dict:
    """Score archs with job (one path); rows by arch text, timings."""
    texts = [nb201.format_arch(a) for a in archs]
    todo = list(zip(archs, texts))
    rows: dict[str, dict] = {}
    every = max(1, len(todo) // 10)
    start = time.perf_counter()

    def take(row):
        rows[row["arch"]] = row
        if len(rows) % every == 0 or len(rows) == len(todo):
            elapsed = time.perf_counter() - start
            print(f"  [{label}] {len(rows)}/{len(todo)} archs, {elapsed:.1f} s, {elapsed / len(rows):.3f} s/arch wall",
                  flush=True)

    run_job(job, archs, RunOptions(workers=workers), take)
    wall = time.perf_counter() - start
    seconds = [r["seconds"] for r in rows.values()]
    return {
        "rows": rows, "wall": wall, "workers": workers,
        "devices": sorted({r["device"] for r in rows.values()}),
        "errors": sum(r["error"] is not None for r in rows.values()),
        "nan": sum(r["error"] is None and math.isnan(r["score"]) for r in rows.values()),
        "mean": statistics.fmean(seconds), "median": statistics.median(seconds), "first": rows[texts[0]]["seconds"],
    }


def compare(ref: dict, other: dict, rtol: float, atol: float) -> dict:
    both = [a for a in ref["rows"] if a in other["rows"]
            and ref["rows"][a]["error"] is None and other["rows"][a]["error"] is None]
    nan_ref = {a for a in both if math.isnan(ref["rows"][a]["score"])}
    nan_other = {a for a in both if math.isnan(other["rows"][a]["score"])}
    bad, max_rel, max_abs = [], 0.0, 0.0
    for arch in both:
        a, b = ref["rows"][arch]["score"], other["rows"][arch]["score"]
        if math.isnan(a) or math.isnan(b):
            if math.isnan(a) != math.isnan(b):
                bad.append((arch, a, b))
            continue
        scale = max(abs(a), abs(b))
        max_rel = max(max_rel, abs(a - b) / scale if scale > 0 else 0.0)
        max_abs = max(max_abs, abs(a - b))
        if abs(a - b) > max(rtol * scale, atol):
            bad.append((arch, a, b))
    return {"n": len(both), "same_nan": nan_ref == nan_other, "max_rel": max_rel, "max_abs": max_abs, "bad": bad}


def has_subnormal(arch_text: str, batch: np.ndarray) -> bool:
    prepared = prepare_model(nb201.to_onnx(nb201.parse(arch_text)), ScoringSettings(collapse=False),
                             ExecutionOptions(device="cpu", threads=1))
    low = np.abs(prepared.run(batch, WEIGHTS[0]))
    return bool(np.any((low > 0) & (low < TINY)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000, help="architectures (epsinas_onnx.spaces.nb201.sample(n, seed))")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--devices", nargs="+", choices=["cpu", "cuda"], default=["cpu", "cuda"])
    parser.add_argument("--widths", nargs="+", choices=["full", "collapsed"], default=["full", "collapsed"])
    parser.add_argument("--data", default=None, help="the CIFAR-10 .npz, or the shared/data folder (default: found beside the repo)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--cpu-workers", type=int, default=os.cpu_count() or 1, help="processes for the CPU paths (1 thread each)")
    parser.add_argument("--cuda-workers", type=int, default=1, help="processes for the CUDA paths (1: this process)")
    parser.add_argument("--rtol", type=float, default=1e-4)
    parser.add_argument("--atol", type=float, default=1e-6,
                        help="absolute floor: a small score is a difference of near-equal numbers (as collapse_agreement.py)")
    parser.add_argument("--json", default=None, help="write every row and timing here")
    args = parser.parse_args(argv)

    try:
        data = find_data(args.data)
        for device in args.devices:
            runtime.providers_for(device)  # --device cuda without a usable CUDA: one line, before any work
        archs = list({nb201.format_arch(a): a for a in nb201.sample(args.n, args.seed)}.values())
        probe = prepare_model(nb201.to_onnx(archs[0]), execution=ExecutionOptions(device="cpu"))
        batch = prepare_batch(probe.input_spec, BatchOptions(data=str(data), batch_size=args.batch_size, norm="cifar10"))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    import onnxruntime as ort

    print(f"gpu_check: nb201, {len(archs)} architectures (sample({args.n}, {args.seed}), repeats dropped), "
          f"{batch.description}, weights {WEIGHTS[0]:g} {WEIGHTS[1]:g}")
    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs; GPU: {gpu_name()}; Python {platform.python_version()}, "
          f"onnxruntime {ort.__version__} (providers: {', '.join(ort.get_available_providers())}); "
          f"CUDA options {runtime.CUDA_OPTIONS}; NVIDIA_TF32_OVERRIDE={os.environ.get('NVIDIA_TF32_OVERRIDE', 'unset')}",
          flush=True)

    export = {}  # the exporter's defaults, as bench uses them
    paths: dict[tuple[str, str], dict] = {}
    for device in args.devices:
        for width in args.widths:
            label = f"{device} {width}"
            execution = ExecutionOptions(device=device, threads=1, graph_optimization=bench.BENCH_GRAPH_OPTIMIZATION)
            job = bench.BenchJob(nb201.SPACE, export, ScoringSettings(collapse=width == "collapsed"), None, execution,
                                 batch.array, WEIGHTS)
            workers = args.cpu_workers if device == "cpu" else args.cuda_workers
            print(f"{label}: scoring {len(archs)} archs with {workers} worker(s)", flush=True)
            result = run_path(job, archs, workers, label)
            paths[(device, width)] = result
            print(f"TIME device={device} width={width} archs={len(result['rows'])} errors={result['errors']} "
                  f"nan={result['nan']} s_per_arch={result['mean']:.4f} median={result['median']:.4f} "
                  f"first={result['first']:.3f} wall={result['wall']:.1f} "
                  f"wall_per_arch={result['wall'] / len(result['rows']):.4f} workers={workers} "
                  f"ran_on={'+'.join(result['devices'])}", flush=True)

    ok = True
    for (device, width), result in paths.items():
        if result["errors"]:
            ok = False
            first = next(r for r in result["rows"].values() if r["error"] is not None)
            print(f"  {device} {width}: {result['errors']} error rows, e.g. {first['arch']}: {first['error']}")
        if result["devices"] != [device]:
            ok = False
            print(f"  {device} {width}: ran on {result['devices']}, not {device}")
    # each pair of paths that differs in one thing: the device (same width) or the width (same device)
    pairs = [(a, b) for i, a in enumerate(paths) for b in list(paths)[i + 1:] if (a[0] == b[0]) != (a[1] == b[1])]
    pairs.sort(key=lambda pair: pair[0][0] == pair[1][0])  # device comparisons first
    for a, b in pairs:
        c = compare(paths[a], paths[b], args.rtol, args.atol)
        good = c["same_nan"] and not c["bad"] and c["n"] == len(archs)
        ok &= good
        print(f"AGREE a={'/'.join(a)} b={'/'.join(b)} n={c['n']} same_nan={'yes' if c['same_nan'] else 'no'} "
              f"max_rel={c['max_rel']:.3g} max_abs={c['max_abs']:.3g} bad={len(c['bad'])}", flush=True)
        for arch, x, y in c["bad"][:20]:
            print(f"  disagree: {x!r} vs {y!r} subnormal_at_w_low={has_subnormal(arch, batch.array)} {arch}")
    if args.json:
        out = {
            "archs": len(archs), "batch": batch.description, "weights": list(WEIGHTS), "onnxruntime": ort.__version__,
            "gpu": gpu_name(), "cpu": cpu_model(), "cpus": os.cpu_count(), "cuda_options": runtime.CUDA_OPTIONS,
            "paths": {
                f"{d}/{w}": {
                    **{k: v for k, v in r.items() if k != "rows"},
                    "scores": {a: (None if math.isnan(row["score"]) else row["score"]) for a, row in r["rows"].items()},
                    "error_rows": {a: row["error"] for a, row in r["rows"].items() if row["error"]},
                }
                for (d, w), r in paths.items()
            },
        }
        Path(args.json).write_text(json.dumps(out, indent=1))
    print(f"RESULT {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
