"""TransNAS-Bench-101 run piece by piece (pieces.StepPieces through
Space.pieces_for, what bench runs): the logits are the generic path's
(export, rewrite, one session) bit for bit, and so are bench's rows. At 64 x
64 on 4 images, so that the file runs in well under a minute."""

import numpy as np
import pytest

from epsinas_onnx.core.options import ExecutionOptions, ScoringSettings
from epsinas_onnx.core.scoring.scorer import open_session, rewrite_model
from epsinas_onnx.experiments import bench
from epsinas_onnx.spaces import tnb_macro, tnb_micro
from tests.conftest import cifar10_batch

EXECUTION = ExecutionOptions(device="cpu", threads=1, graph_optimization=bench.BENCH_GRAPH_OPTIMIZATION)
EXPORT = {"num_classes": 1, "resolution": 64, "seed": 0}

# cells whose steps differ in kind: FactorizedReduce on two edges (one run, the other a copy), zeros
# of the reduced shape, a constant output, skips of a reduction summed, every edge zero, two convs of
# the input in one sum, one tensor summed twice (node 2 is node 1), zeros widened to 2, 4 and 8 channel
# groups summed with a conv's one
MICRO_CASES = ["64-41414-1_01_100", "64-41414-0_20_101", "64-41414-2_02_000", "64-41414-1_11_111",
               "64-41414-0_00_000", "64-41414-3_30_311", "64-41414-3_01_011", "64-41414-1_10_011",
               "64-41414-0_01_100", "64-41414-0_00_210"]
# the fewest and the most reductions and doublings, six stages
MACRO_CASES = ["64-1213-basic", "64-44413-basic", "64-231341-basic", "64-4441-basic", "64-43331-basic",
               "64-111124-basic"]


def _batch(n: int = 4) -> np.ndarray:
    return np.ascontiguousarray(cifar10_batch(n).repeat(2, axis=2).repeat(2, axis=3))  # 32 -> 64 pixels


def _generic(module, arch, batch, weight, scoring, export):
    staged = rewrite_model(module.to_ir(arch, **export), scoring, in_place=True)  # untied, as `score` exports
    return open_session(staged, EXECUTION).run(batch, weight)


@pytest.mark.parametrize("module, cases, settings, sample", [
    (tnb_micro, MICRO_CASES, {}, 6),  # bench's default: collapsed
    (tnb_micro, MICRO_CASES[:3], {"collapse": False}, 0),  # full width
    (tnb_macro, MACRO_CASES, {}, 6),
    (tnb_macro, MACRO_CASES[:2], {"collapse": False}, 0),
    (tnb_micro, MICRO_CASES[:4], {"bias": "w", "bn_gamma": "one"}, 0),
], ids=["micro", "micro-full-width", "macro", "macro-full-width", "micro-bias-gamma"])
def test_pieces_give_the_generic_logits_bit_for_bit(module, cases, settings, sample):
    scoring = ScoringSettings(**settings)
    batch = _batch()
    pieces = module.SPACE.pieces_for(EXPORT, scoring, batch, EXECUTION)
    archs = [module.parse(text) for text in cases] + module.sample(sample, 4)
    # a third weight makes the pieces drop the oldest of the two weights they keep
    for weight in (1e-3, 1.0, 1e-7):
        for arch in archs:
            expected = _generic(module, arch, batch, weight, scoring, EXPORT)
            got, check = pieces.output(arch, weight)
            assert check is None and got.dtype == expected.dtype and got.shape == expected.shape
            assert np.array_equal(got, expected, equal_nan=True), (module.format_arch(arch), weight)
    assert pieces.templates <= len(archs) + 1  # at most one rewrite per architecture, and the stem's


def test_equal_steps_run_once_and_dead_nodes_are_not_cut():
    # 1_11_111: the three skips from the cell input are one FactorizedReduce; node 1 and 2 feed node 3
    steps = tnb_micro.cell_steps(tnb_micro.parse("64-41414-1_11_111"), 64)
    first_cell = [s for s in steps if s.output.startswith("cells.0.")]
    assert [s.key[0] if s.key else None for s in first_cell] == ["reduce", None, "sum", None, "sum"]
    # 3_30_300: node 3 reads only the input, nodes 1 and 2 are dead: one conv per cell
    steps = tnb_micro.cell_steps(tnb_micro.parse("64-41414-3_30_300"), 64)
    assert len(steps) == 11 and all(s.key[0] == "conv" for s in steps[:-1])


def test_no_pieces_where_they_would_not_compute_the_generic_paths_logits():
    for module in (tnb_micro, tnb_macro):
        for scoring, execution, input_name in (
                (ScoringSettings.from_init("normal", 0), EXECUTION, None),
                (ScoringSettings(output="other"), EXECUTION, None),
                (ScoringSettings(), EXECUTION, "image"),
                (ScoringSettings(), ExecutionOptions(device="cuda"), None)):
            assert module.SPACE.pieces_for(EXPORT, scoring, _batch(), execution, input_name) is None


@pytest.mark.parametrize("module", [tnb_micro, tnb_macro], ids=["tnb_micro", "tnb_macro"])
def test_bench_rows_are_the_generic_paths(module):
    """Every score, NaN reason and mode the same as the generic path's, to
    the bit; keyed (tnb_macro has no computation classes: bench keys its
    architectures by what the pieces compute) and not."""
    from epsinas_onnx.experiments.bench import BenchJob, ExportRunner, PiecesRunner, score_architecture

    x = _batch()
    pieces = module.SPACE.pieces_for(EXPORT, ScoringSettings(), x, EXECUTION)
    archs = module.sample(3, seed=8) + [module.all_archs()[0]]
    for mode, weights in (("reference", (1e-3, 1.0)), ("ladder", (1e-7, 1.0))):
        job = BenchJob(module.SPACE, EXPORT, ScoringSettings(mode=mode), None, EXECUTION, x, weights)
        runners = (ExportRunner(job, keyed=False), PiecesRunner(pieces, None), PiecesRunner(pieces, None, keyed=True))
        for arch in archs:
            rows = [score_architecture(job, arch, runner=runner) for runner in runners]
            assert all(row["error"] is None for row in rows), rows
            for row in rows[1:]:
                assert np.array_equal(rows[0]["score"], row["score"], equal_nan=True), (mode, arch, rows)
                assert rows[0]["nan_reason"] == row["nan_reason"]
    # equal keys, equal networks: every skeleton its own, every cell its computation class's
    first = module.all_archs()[:50]
    keys = {pieces.computation_key(arch) for arch in first}
    assert len(keys) == (50 if module is tnb_macro else len({module.computation_class(a) for a in first}))


def test_bench_scores_tnb_macro_through_its_pieces(tmp_path):
    from epsinas_onnx.cli import main

    store = tmp_path / "r.sqlite"
    assert main(["bench", "tnb_macro", "--sample", "3", "--seed", "1", "--resolution", "64", "--batch-size", "4",
                 "--weights", "1e-3", "1", "--store", str(store), "--no-progress"]) == 0
    import sqlite3

    with sqlite3.connect(store) as db:
        rows = db.execute("SELECT arch, score, error FROM results").fetchall()
    assert len(rows) == 3 and all(error is None for _, _, error in rows), rows


def test_weight_values_keep_a_ladders_rungs_where_they_fit(monkeypatch):
    from epsinas_onnx.core.scoring import runtime
    from epsinas_onnx.spaces import pieces

    made = []

    def stem(runs, w):  # a tensor of 4 KiB per weight, as the stem's output
        made.append(w)
        return runtime.cpu_value(np.zeros(1024, np.float32))

    def several(runs, w):  # not one tensor: its size is not known
        made.append(w)
        return {"stem": None}

    monkeypatch.setattr(pieces, "KEPT_BYTES", 64 * 1024)  # 16 such tensors
    weights = [1.0] + [10.0 ** -j for j in range(1, 13)]  # a pair's high weight, then 12 rungs
    for values, times in ((pieces.WeightValues(stem), 1), (pieces.WeightValues(several), 2)):
        made.clear()
        for _ in range(2):  # two architectures climbing the same rungs
            for w in weights:
                assert values(None, w)[0].numpy() == np.float32(w)
        assert len(made) == times * len(weights)  # once each; or each again, two kept
