"""Where the time of scoring one architecture goes, stage by stage, on the
generic path and (NAS-Bench-201) on the pieces bench runs, in one run.

    python benchmarks/stage_times.py [--space nb201] [--n 30] [--batch-size 256] [--no-collapse]
                                     [--resolution R]

--space names the space (a sample of it, at its reference weights); a space
without pieces (nlp) has the generic path's times alone. The batch is the
first CIFAR-10 test images, resized (bilinear) to --resolution, by default
the space's own input size (TransNAS-Bench-101: 256 x 256, as bench feeds it).

Generic path (every architecture its own graph, one thread): build the model
(the exporter builds onnx-ir objects directly, parameters tied as bench
does), rewrite it (roles, constant weights, channel collapse,
batch-statistics BN), serialise it, create the ONNX Runtime session, run it
at both weights.

Pieces (Space.pieces_for: nb201.Pieces, macro.LayerPieces, nb101.CellPieces,
the TransNAS spaces' pieces.StepPieces, what a bench worker runs): the set-up
once per worker (export, rewrite and serialise the templates, cut the pieces,
one session each; nb101 and the TransNAS spaces cut a piece when an
architecture first needs it: here those of a 5,000-cell sample, or of the
whole TransNAS space), shown
whole and as its share of each architecture when a worker runs its half of
the whole space's runs (one per computation class: 5,773 for nb201, 3,969
for macro, 2,102 for tnb_micro; 423,624 cells for nb101, 3,256 skeletons
for tnb_macro); then per architecture the time
inside the ONNX Runtime calls ("runs", feeds included) and the Python
between them (the cell plan, the values handed on). Overhead is everything
but the runs; the "total" lines give its ratio to the runs. The last line
times the runs once more, the generic sessions' (made beforehand) and the
pieces' whole output, alternated over three rounds.
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
from epsinas_onnx.core.scoring import runtime  # noqa: E402
from epsinas_onnx.core.scoring.inputs import resize  # noqa: E402
from epsinas_onnx.experiments.bench import BENCH_GRAPH_OPTIMIZATION, build_options  # noqa: E402
from epsinas_onnx.experiments.executors import freeze_startup_objects  # noqa: E402
from epsinas_onnx.core.rewriting.passes import WEIGHT_INPUT  # noqa: E402
from epsinas_onnx.core.rewriting.rewrite import policy_for, rewrite_for_scoring  # noqa: E402
from epsinas_onnx.core.scoring.scorer import session_payload  # noqa: E402
from epsinas_onnx.core.options import ExecutionOptions, ScoringSettings  # noqa: E402
from epsinas_onnx.spaces import get_space  # noqa: E402

WORKERS = 2
WARM_UP = 5_000  # nb101: the cells whose pieces are cut in the set-up (the whole space needs 401)


def whole_space_runs(space) -> int:
    """The runs bench makes for the whole space: one per computation class
    (bench.computation_classes; NAS-Bench-201's finite-input classes)."""
    if space.name == "nb201":
        return 5_773
    if space.computation_class is None:  # nb101: every listed cell is its own network
        return len(space.all_archs())
    return len({space.computation_class(arch) for arch in space.all_archs()})


def generic(space, archs, x, collapse: bool) -> tuple[collections.Counter, list]:
    """The stage times, and the sessions (for the_runs)."""
    times: collections.Counter = collections.Counter()
    sessions = []
    build = build_options(space, ScoringSettings())  # as bench builds (tied parameters)

    def stage(name, fn, *a):
        start = time.perf_counter()
        result = fn(*a)
        times[name] += time.perf_counter() - start
        return result

    for arch in archs:
        model = stage("build (exporter, onnx-ir)", lambda a: space.to_ir(a, **build), arch)
        rewritten = stage("rewrite", lambda m: rewrite_for_scoring(m, policy_for(m), collapse), model)
        payload = stage("serialise (BN inlined)", session_payload, rewritten.model)
        session = stage("ORT session", runtime.make_session, payload, ["CPUExecutionProvider"], 1,
                        BENCH_GRAPH_OPTIMIZATION)
        for w in space.reference_weights:
            stage("runs, both weights", session.run, None, {"input": x, WEIGHT_INPUT: np.array(w, np.float32)})
        sessions.append(session)
    return times, sessions


def the_runs(space, archs, x, sessions, made, rounds: int = 3) -> tuple[float, float]:
    """Seconds per architecture, both weights: the generic sessions' runs (made
    beforehand) and the pieces' output (all of it), alternated round by round
    so that the machine's drift falls on both alike."""
    generic_s = pieces_s = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        for session in sessions:
            for w in space.reference_weights:
                session.run(None, {"input": x, WEIGHT_INPUT: np.array(w, np.float32)})
        generic_s += time.perf_counter() - start
        start = time.perf_counter()
        for arch in archs:
            for w in space.reference_weights:
                made.output(arch, w)
        pieces_s += time.perf_counter() - start
    return generic_s / rounds / len(archs), pieces_s / rounds / len(archs)


def pieces(space, archs, x, collapse: bool) -> tuple[float, float, float, object]:
    """(set-up s, inside the ORT calls s, total s over archs, the pieces)."""
    start = time.perf_counter()
    made = space.pieces_for(dict(space.export_defaults), ScoringSettings(collapse=collapse), x,
                            ExecutionOptions(device="cpu", threads=1, graph_optimization=BENCH_GRAPH_OPTIMIZATION))
    if hasattr(made, "plan"):  # pieces cut when an architecture first needs them: as set-up, those of
        # a sample (nb101) or of the whole space (the TransNAS spaces, a few thousand architectures)
        warm = space.sample(WARM_UP, 2) if space.name == "nb101" else space.all_archs()
        for arch in warm:
            made.plan(arch)
        print(f"{space.name} set-up: {len(made.pieces)} pieces cut for {len(warm):,} architectures, "
              f"from {made.templates} rewritten")
    setup = time.perf_counter() - start
    inside = [0.0]
    real = runtime.WatchedRuns.first_output

    def timed(self, *args):
        begin = time.perf_counter()
        result = real(self, *args)
        inside[0] += time.perf_counter() - begin
        return result

    runtime.WatchedRuns.first_output = timed
    try:
        start = time.perf_counter()
        for arch in archs:
            for w in space.reference_weights:
                made.output(arch, w)
        total = time.perf_counter() - start
    finally:
        runtime.WatchedRuns.first_output = real
    return setup, inside[0], total, made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default="nb201", help="nb201, macro (generic path and pieces), nb101, ... (generic path)")
    parser.add_argument("--n", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--no-collapse", dest="collapse", action="store_false")
    parser.add_argument("--resolution", type=int, help="the images' size (default: the space's input size)")
    args = parser.parse_args()
    x = cifar10(args.batch_size)
    freeze_startup_objects()  # as a bench worker does
    space = get_space(args.space)
    resolution = args.resolution or space.export_defaults.get("resolution", x.shape[-1])
    if resolution != x.shape[-1]:
        x = np.ascontiguousarray(resize(x, [resolution, resolution], (2, 3)))
    archs = space.sample(args.n, 1)
    n = args.n
    print(f"{space.name}, {n} archs, batch {args.batch_size} at {resolution} x {resolution}, collapse {args.collapse}, 1 thread, "
          f"weights {space.reference_weights} both run")

    times, sessions = generic(space, archs, x, args.collapse)
    total = sum(times.values())
    print("generic path, ms per architecture:")
    for name, seconds in times.items():
        print(f"  {name:<34} {seconds / n * 1000:7.1f}  {100 * seconds / total:4.0f} %")
    runs = times["runs, both weights"]
    print(f"  {'total':<34} {total / n * 1000:7.1f}   overhead / runs {(total - runs) / runs:.2f}")
    if space.pieces_for is None:
        return

    setup, inside, total, made = pieces(space, archs, x, args.collapse)
    per_worker = whole_space_runs(space) / WORKERS
    setup_share = setup / per_worker
    glue = total - inside
    print(f"pieces, ms per architecture (set-up once per worker: {setup * 1000:.0f} ms, over the "
          f"{per_worker:,.0f} runs of a worker's half of the whole space):")
    print(f"  {'set-up, per architecture':<34} {setup_share * 1000:7.2f}")
    print(f"  {'Python between the ORT calls':<34} {glue / n * 1000:7.2f}")
    print(f"  {'runs, both weights (ORT calls)':<34} {inside / n * 1000:7.2f}")
    print(f"  {'total':<34} {(total / n + setup_share) * 1000:7.2f}   "
          f"overhead / runs {(glue / n + setup_share) / (inside / n):.2f}")
    generic_runs, pieces_all = the_runs(space, archs, x, sessions, made)
    print(f"the runs again, 3 rounds alternated: generic sessions' runs {generic_runs * 1000:.1f} ms, the pieces' "
          f"whole output {pieces_all * 1000:.1f} ms per architecture ({pieces_all / generic_runs:.2f}x)")


if __name__ == "__main__":
    main()
