"""NAS-Bench-101 run piece by piece (nb101.CellPieces, what bench runs): the
logits are the generic path's (export, rewrite, one session) bit for bit,
and so are bench's rows."""

import math

import numpy as np
import pytest

from epsinas_onnx.core.options import ExecutionOptions, ScoringSettings
from epsinas_onnx.core.scoring.scorer import open_session, rewrite_model
from epsinas_onnx.experiments import bench
from epsinas_onnx.spaces import nb101
from tests.conftest import cifar10_batch

EXECUTION = ExecutionOptions(device="cpu", threads=1, graph_optimization=bench.BENCH_GRAPH_OPTIMIZATION)
C3, C1, MP = nb101.OPS


def _cell(matrix, *inner):
    return nb101.make_arch(matrix, (nb101.INPUT, *inner, nb101.OUTPUT))


# the benchmark's edge cases beside a random sample
EDGE_CASES = [
    _cell([[0, 1], [0, 0]]),  # input -> output only: every cell is one projection
    _cell([[0, 1, 1], [0, 0, 1], [0, 0, 0]], MP),  # the input feeding the output directly, beside a pool
    _cell([[0, 1, 0], [0, 0, 1], [0, 0, 0]], C3),  # one vertex: a cell output of one part
    # three vertices feeding only the output (43, 43, 42 channels), the input added to them
    _cell([[0, 1, 1, 1, 1], [0, 0, 0, 0, 1], [0, 0, 0, 0, 1], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0]], C3, C1, MP),
    # a vertex feeding three of them: sliced to the smaller ones (43 -> 42; 86 -> 85; 171 -> 170)
    _cell([[0, 1, 0, 0, 0, 0], [0, 0, 1, 1, 1, 0], [0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 1],
           [0, 0, 0, 0, 0, 0]], C1, MP, C3, C1),
    # a chain whose last four vertices feed the output, and pools summed with the input added at the output
    _cell([[0, 1, 0, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0, 0], [0, 0, 0, 1, 0, 0, 1], [0, 0, 0, 0, 1, 0, 1],
           [0, 0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 0]], MP, C3, C1, MP, C3),
    _cell([[0, 1, 1, 0, 0, 0, 1], [0, 0, 0, 1, 0, 0, 0], [0, 0, 0, 0, 1, 0, 0], [0, 0, 0, 0, 0, 1, 0],
           [0, 0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 0]], MP, MP, MP, MP, MP),
]


def _generic(arch, batch, weight, scoring, export):
    staged = rewrite_model(nb101.to_ir(arch, **export), scoring, in_place=True)  # untied, as `score` exports
    return open_session(staged, EXECUTION).run(batch, weight)


@pytest.mark.parametrize("settings, export, sample", [
    ({}, {}, 8),  # bench's default: collapsed
    ({"collapse": False}, {"resolution": 8}, 0),  # full width
    ({"bias": "w", "bn_gamma": "one"}, {"num_classes": 3}, 2),
])
def test_cell_pieces_give_the_generic_logits_bit_for_bit(settings, export, sample):
    scoring = ScoringSettings(**settings)
    batch = cifar10_batch(8)
    if export.get("resolution") == 8:
        batch = np.ascontiguousarray(batch[:, :, ::4, ::4])
    pieces = nb101.pieces_for(export, scoring, batch, EXECUTION)
    archs = EDGE_CASES + nb101.sample(sample, 4)
    # a third weight makes the pieces drop the oldest of the two weights they keep
    for weight in (1e-4, 10.0, 1e-2):
        for arch in archs:
            expected = _generic(arch, batch, weight, scoring, export)
            got, check = pieces.output(arch, weight)
            assert check is None and got.dtype == expected.dtype and got.shape == expected.shape
            assert np.array_equal(got, expected, equal_nan=True), (nb101.format_arch(arch), weight)


def test_computation_keys_tell_networks_apart():
    pieces = nb101.pieces_for({}, ScoringSettings(), cifar10_batch(4), EXECUTION)
    cell = EDGE_CASES[4]
    # the same network unpruned: a vertex fed by the input that feeds nothing
    matrix = [list(row[:-1]) + [0, row[-1]] for row in cell.matrix[:-1]] + [[0] * 7, [0] * 7]
    matrix[0][5] = 1
    unpruned = nb101.make_arch(matrix, cell.ops[:-1] + (C3, nb101.OUTPUT))
    assert nb101.prune(unpruned) == nb101.prune(cell)
    assert pieces.computation_key(unpruned) == pieces.computation_key(cell)
    keys = {pieces.computation_key(arch) for arch in EDGE_CASES}
    assert len(keys) == len(EDGE_CASES)
    other_op = cell._replace(ops=cell.ops[:2] + (C3,) + cell.ops[3:])
    assert pieces.computation_key(other_op) not in keys


def test_bench_rows_are_the_generic_paths_with_the_cell_pieces():
    """Every score, NaN reason and mode as the generic path's, to the bit; a
    repeated network takes the earlier result."""
    export = dict(nb101.SPACE.export_defaults)
    x = cifar10_batch(8)
    pieces = nb101.pieces_for(export, ScoringSettings(), x, EXECUTION)
    archs = [EDGE_CASES[1], EDGE_CASES[3], EDGE_CASES[5]]
    for mode, weights in (("reference", (1e-4, 10.0)), ("ladder", (1e-4, 10.0))):
        job = bench.BenchJob(nb101.SPACE, export, ScoringSettings(mode=mode), None, EXECUTION, x, weights)
        runner = bench.PiecesRunner(pieces, None, keyed=True)
        for arch in archs + archs[:1]:
            rows = [bench.score_architecture(job, arch, runner=r)
                    for r in (bench.ExportRunner(job, keyed=False), runner)]
            assert rows[0]["error"] is None and rows[1]["error"] is None, rows
            assert np.array_equal(rows[0]["score"], rows[1]["score"], equal_nan=True), (mode, arch, rows)
            assert rows[0]["nan_reason"] == rows[1]["nan_reason"]
        assert rows[1]["reused"] and len(runner.computed) == len(archs)
        assert not all(math.isnan(r) for r in [rows[0]["score"]])  # not NaN everywhere: a real comparison


def test_bench_runs_nb101_on_the_cell_pieces():
    job = bench.BenchJob(nb101.SPACE, dict(nb101.SPACE.export_defaults), ScoringSettings(), None, EXECUTION,
                         cifar10_batch(4), (1e-4, 10.0))
    runner = job.runner()
    assert isinstance(runner, bench.PiecesRunner) and runner.computed == {}


@pytest.mark.parametrize("settings, input_name, device, why", [
    ({"weight_init": "normal", "weight_seed": 0}, None, "cpu", "random weights"),
    ({}, None, "cuda", "CPU only"),
    ({"output": "features"}, None, "cpu", "network's output"),
    ({}, "image", "cpu", "network's input"),
])
def test_cell_pieces_decline_where_they_would_compute_something_else(settings, input_name, device, why):
    scoring = ScoringSettings(**settings)
    assert why in nb101.pieces_declines(scoring, input_name, device)
    execution = ExecutionOptions(device=device, threads=1, graph_optimization="none")
    assert nb101.pieces_for({}, scoring, cifar10_batch(4), execution, input_name) is None
