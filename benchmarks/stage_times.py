"""Where the time of scoring one NAS-Bench-201 architecture goes, stage by stage.

    python benchmarks/stage_times.py [--n 30] [--batch-size 256] [--no-collapse]

The stages of bench's per-architecture work (one thread): build the model
(the exporter builds onnx-ir objects directly, parameters tied as bench
does), rewrite it (roles, constant weights, channel
collapse, batch-statistics BN), serialise it, create the ONNX Runtime
session, and run it at both weights.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.collapse_agreement import cifar10  # noqa: E402
from epsinas_onnx import runtime  # noqa: E402
from epsinas_onnx.bench import BENCH_GRAPH_OPTIMIZATION, build_options  # noqa: E402
from epsinas_onnx.executors import freeze_startup_objects  # noqa: E402
from epsinas_onnx.passes import WEIGHT_INPUT  # noqa: E402
from epsinas_onnx.rewrite import policy_for, rewrite_for_scoring  # noqa: E402
from epsinas_onnx.scorer import session_payload  # noqa: E402
from epsinas_onnx.spaces import nb201  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--no-collapse", dest="collapse", action="store_false")
    args = parser.parse_args()
    x = cifar10(args.batch_size)
    freeze_startup_objects()  # as a bench worker does
    times: collections.Counter = collections.Counter()
    build = build_options(nb201.SPACE, {})  # as bench builds (tied parameters)

    def stage(name, fn, *a):
        start = time.perf_counter()
        result = fn(*a)
        times[name] += time.perf_counter() - start
        return result

    for arch in nb201.sample(args.n, 1):
        model = stage("build (exporter, onnx-ir)", lambda a: nb201.to_ir(a, **build), arch)
        rewritten = stage("rewrite", lambda m: rewrite_for_scoring(m, policy_for(m), args.collapse), model)
        payload = stage("serialise (BN inlined)", session_payload, rewritten.model)
        session = stage("ORT session", runtime.make_session, payload, ["CPUExecutionProvider"], 1, BENCH_GRAPH_OPTIMIZATION)
        for w in (1e-7, 1.0):
            stage("ORT run, both weights", session.run, None, {"input": x, WEIGHT_INPUT: np.array(w, np.float32)})
    total = sum(times.values())
    print(f"NAS-Bench-201, {args.n} archs, batch {args.batch_size}, collapse {args.collapse}, 1 thread")
    for name, seconds in times.items():
        print(f"  {name:<24} {seconds / args.n * 1000:7.1f} ms  {100 * seconds / total:4.0f} %")
    print(f"  {'total':<24} {total / args.n * 1000:7.1f} ms")


if __name__ == "__main__":
    main()
