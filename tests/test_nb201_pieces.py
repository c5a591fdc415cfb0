"""NAS-Bench-201 run piece by piece (nb201.Pieces, what bench runs): the
logits are the generic path's (export, rewrite, one session) bit for bit,
and so are bench's rows."""

import dataclasses

import numpy as np
import pytest

from epsinas_onnx.experiments import bench
from epsinas_onnx.core.options import BatchOptions, ExecutionOptions, RunOptions, ScoringSettings
from epsinas_onnx.core.scoring.scorer import open_session, rewrite_model
from epsinas_onnx.spaces import nb201
from tests.conftest import cifar10_batch
from tests.test_bench import stored

# degenerate cells beside a random sample: no path, all skips, all pools, one
# term, and a node whose edges are all none (x * 0)
EDGE_CASES = [
    ("none",) * 6,
    ("skip_connect",) * 6,
    ("avg_pool_3x3",) * 6,
    ("nor_conv_1x1", "none", "none", "none", "none", "none"),
    nb201.parse("|none~0|+|nor_conv_3x3~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_1x1~1|skip_connect~2|"),
    nb201.parse("|nor_conv_3x3~0|+|skip_connect~0|none~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"),
]
WEIGHTS = (1e-7, 1.0)
EXECUTION = ExecutionOptions(device="cpu", threads=1, graph_optimization=bench.BENCH_GRAPH_OPTIMIZATION)


def _generic(arch, batch, weight, settings, export):
    staged = rewrite_model(nb201.to_ir(arch, finite_check=True, **export), ScoringSettings(**settings), in_place=True)
    prepared = open_session(staged, EXECUTION)
    return prepared.run_outputs(batch, weight, [prepared.output, nb201.FINITE_CHECK_OUTPUT])


def _pieces(batch, settings, export=None):
    return nb201.pieces_for(export or {}, ScoringSettings(**settings), batch, EXECUTION)


@pytest.mark.parametrize("settings, export", [
    ({}, {}),  # bench's default: collapsed
    ({"collapse": False}, {}),  # full width
    ({"bias": "w", "bn_gamma": "one"}, {}),
    ({}, {"resolution": 16, "num_classes": 3}),
])
def test_pieces_give_the_generic_logits_bit_for_bit(settings, export):
    batch = cifar10_batch(16)
    if export.get("resolution") == 16:
        batch = np.ascontiguousarray(batch[:, :, ::2, ::2])
    pieces = _pieces(batch, settings, export)
    archs = nb201.sample(6, 21) + EDGE_CASES
    # a third weight makes the pieces drop the oldest of the two they keep
    for arch in archs:
        for weight in (*WEIGHTS, 1e-3):
            logits, check = _generic(arch, batch, weight, settings, export)
            got, got_check = pieces.output(arch, weight, finite_check=True)
            assert got.dtype == logits.dtype and got.shape == logits.shape
            assert np.array_equal(got, logits, equal_nan=True), (nb201.format_arch(arch), weight)
            assert nb201.finite_check_passed(got_check) == nb201.finite_check_passed(check)


def test_the_pieces_check_sees_what_the_generic_check_sees():
    batch = cifar10_batch(8)
    pieces = _pieces(batch, {})
    arch = EDGE_CASES[4]
    for weight in (1.0, 3e38):  # 3e38 overflows float32 in the first cells: x * 0 is NaN there
        _, check = _generic(arch, batch, weight, {}, {})
        _, got = pieces.output(arch, weight, finite_check=True)
        assert nb201.finite_check_passed(got) == nb201.finite_check_passed(check) == (weight == 1.0)
    assert pieces.output(arch, 1.0)[1] is None  # no check asked for


@pytest.mark.parametrize("settings, device, why", [
    ({"weight_init": "normal", "weight_seed": 0}, "cpu", "random weights"),
    ({}, "cuda", "CPU only"),
    ({"output": "features"}, "cpu", "network's output"),
    ({"input_name": "image"}, "cpu", "network's input"),
])
def test_pieces_decline_where_they_would_compute_something_else(settings, device, why):
    settings = dict(settings)
    input_name = settings.pop("input_name", None)  # a batch option, beside the scoring settings
    scoring = ScoringSettings(**settings)
    assert why in nb201.pieces_declines(scoring, input_name, device)
    execution = ExecutionOptions(device=device, threads=1, graph_optimization="none")
    assert nb201.pieces_for({}, scoring, cifar10_batch(4), execution, input_name) is None
    assert nb201.pieces_declines(ScoringSettings(collapse=False, bias="w"), None, "cpu") is None


def test_a_timeout_bounds_the_pieces_of_an_architecture():
    # a large batch: each weight's pieces take far longer than the watchdog needs to wake
    batch = np.random.default_rng(0).standard_normal((2048, 3, 32, 32), dtype=np.float32)
    pieces = _pieces(batch, {})
    job = bench.BenchJob(nb201.SPACE, {}, ScoringSettings(), None, EXECUTION, batch, WEIGHTS)
    row = bench.score_architecture(job, ("nor_conv_3x3",) * 6, runner=bench.PiecesRunner(pieces, timeout=1e-4))
    assert "--timeout" in row["error"] and np.isnan(row["score"])


def _bench(tmp_path, name, archs, workers=1, **options):
    return bench.run_bench("nb201", archs, batch=BatchOptions(data=cifar10_batch(8), batch_size=8, norm="none"),
                           run=RunOptions(store=tmp_path / name, workers=workers, progress=False), **options)


def test_bench_rows_are_the_generic_paths(tmp_path, monkeypatch):
    archs = nb201.sample(40, 3) + EDGE_CASES
    pieces = _bench(tmp_path, "pieces.sqlite", archs, workers=2)  # made in each worker process
    assert pieces.errors == 0 and pieces.reused > 0
    monkeypatch.setattr(nb201, "SPACE", dataclasses.replace(nb201.SPACE, pieces_for=None))
    generic = _bench(tmp_path, "generic.sqlite", archs)
    assert (generic.scored, generic.nan, generic.reused) == (pieces.scored, pieces.nan, pieces.reused)
    assert stored(tmp_path / "pieces.sqlite") == stored(tmp_path / "generic.sqlite")


def test_bench_uses_the_pieces_in_each_worker(tmp_path, monkeypatch):
    made = []
    real = nb201.pieces_for

    def counting(export, scoring, batch, execution, input_name=None):
        made.append(execution.device)
        return real(export, scoring, batch, execution, input_name)

    monkeypatch.setattr(nb201, "SPACE", dataclasses.replace(nb201.SPACE, pieces_for=counting))
    monkeypatch.setattr(bench, "_PIECES_MADE", {})  # none made earlier in this process
    archs = nb201.sample(24, 4)
    summary = _bench(tmp_path, "r.sqlite", archs[:12])
    assert summary.errors == 0 and made == ["cpu"]  # once, for all of them (one worker: this process)
    # a search's next call in the same process: the same pieces; another batch: new ones
    _bench(tmp_path, "r.sqlite", archs[12:])
    assert made == ["cpu"]
    bench.run_bench("nb201", archs[:4], batch=BatchOptions(data=cifar10_batch(4), batch_size=4, norm="none"),
                    run=RunOptions(store=tmp_path / "other.sqlite", progress=False))
    assert made == ["cpu", "cpu"] and len(bench._PIECES_MADE) == 1


def test_bench_runs_each_exact_class_when_the_pieces_check_fails(tmp_path, monkeypatch):
    from tests.test_finite_classes import CHECKED, FOLLOWER

    archs = [nb201.parse(CHECKED), nb201.parse(FOLLOWER)]
    shared = _bench(tmp_path, "shared.sqlite", archs)
    assert (shared.scored, shared.reused) == (2, 1)
    monkeypatch.setattr(nb201, "SPACE", dataclasses.replace(nb201.SPACE, finite_check_passed=lambda values: False))
    unproven = _bench(tmp_path, "unproven.sqlite", archs)
    assert (unproven.scored, unproven.reused, unproven.errors) == (2, 0, 0)
    assert stored(tmp_path / "unproven.sqlite") == stored(tmp_path / "shared.sqlite")


def test_bench_rows_are_the_generic_paths_in_the_ladder_mode(tmp_path, monkeypatch):
    from epsinas_onnx.core.options import ScoringSettings

    archs = nb201.sample(12, 6) + EDGE_CASES[:2]
    ladder = ScoringSettings(mode="ladder")  # more weights than the pieces keep at once
    pieces = _bench(tmp_path, "pieces.sqlite", archs, scoring=ladder)
    monkeypatch.setattr(nb201, "SPACE", dataclasses.replace(nb201.SPACE, pieces_for=None))
    generic = _bench(tmp_path, "generic.sqlite", archs, scoring=ladder)
    assert pieces.errors == generic.errors == 0 and pieces.nan == generic.nan
    assert stored(tmp_path / "pieces.sqlite") == stored(tmp_path / "generic.sqlite")
