"""NAS-Bench-201's finite-input classes (`computation_class_if_finite`): terms
computed from an all-`none` node are exact zeros when the cell input is
finite, so architectures differing only there share one run, but only after
that run's finite check has passed."""

import dataclasses
import math

import numpy as np

from epsinas_onnx.experiments import bench
from epsinas_onnx.core.options import BatchOptions, ExecutionOptions, RunOptions, ScoringSettings
from epsinas_onnx.core.rewriting.passes import WEIGHT_INPUT
from epsinas_onnx.core.scoring.scorer import open_session, rewrite_model
from epsinas_onnx.spaces import nb201
from tests.conftest import cifar10_batch
from tests.test_bench import counting_exports, stored

# node 1 is all-none: they differ only in the edges out of it (1->2, 1->3)
CHECKED = "|none~0|+|nor_conv_3x3~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_1x1~1|skip_connect~2|"
FOLLOWER = "|none~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|avg_pool_3x3~0|none~1|skip_connect~2|"
WEIGHTS = (1e-7, 1.0)


def test_finite_classes_are_unions_of_exact_classes():
    finite_of_exact: dict = {}
    for arch in nb201.all_archs():
        finite_of_exact.setdefault(nb201.computation_class(arch), set()).add(nb201.computation_class_if_finite(arch))
    assert all(len(names) == 1 for names in finite_of_exact.values())
    assert len(finite_of_exact) == 7871
    assert len(set().union(*finite_of_exact.values())) == 5773


def test_the_pair_differs_only_given_finite_inputs():
    a, b = nb201.parse(CHECKED), nb201.parse(FOLLOWER)
    assert nb201.computation_class(a) != nb201.computation_class(b)
    assert nb201.computation_class_if_finite(a) == nb201.computation_class_if_finite(b)


def _score(arch, batch, weights=WEIGHTS, finite_check=False):
    """The generic path, without computation keys."""
    job = bench.BenchJob(nb201.SPACE, {}, ScoringSettings(), None, ExecutionOptions(device="cpu", threads=1), batch,
                         weights)
    return bench.score_architecture(job, arch, finite_check, runner=bench.ExportRunner(job, keyed=False))


def _same_score(x, y) -> bool:
    return x == y or (math.isnan(x) and math.isnan(y))


def test_members_of_a_finite_class_score_the_same():
    # random pairs from different exact classes of one finite class, each run on its own
    by_class: dict = {}
    for arch in nb201.all_archs():
        by_class.setdefault(nb201.computation_class_if_finite(arch), {}).setdefault(nb201.computation_class(arch), arch)
    merged = sorted(name for name, exact in by_class.items() if len(exact) > 1)
    assert len(merged) == 60
    rng = np.random.default_rng(5)
    batch = cifar10_batch(16)
    for name in rng.choice(merged, size=12, replace=False):
        first, second = (list(by_class[name].values())[i] for i in rng.choice(len(by_class[name]), 2, replace=False))
        rows = [_score(arch, batch, finite_check=True) for arch in (first, second)]
        assert all(r["error"] is None and r["finite"] is True for r in rows)
        assert _same_score(rows[0]["score"], rows[1]["score"]), (first, second, rows)
        assert rows[0]["nan_reason"] == rows[1]["nan_reason"]


def _run(arch, weight, batch, finite_check):
    staged = rewrite_model(nb201.to_ir(arch, finite_check=finite_check), in_place=True)
    prepared = open_session(staged, ExecutionOptions(device="cpu", threads=1))
    feeds = {prepared.input_spec.name: batch, WEIGHT_INPUT: np.array(weight, dtype=np.float32)}
    return prepared.session.run(None, feeds)


def test_the_check_output_leaves_the_logits_alone_and_sees_overflow():
    arch, batch = nb201.parse(CHECKED), cifar10_batch(8)
    for weight in WEIGHTS:
        logits, check = _run(arch, weight, batch, finite_check=True)
        (plain,) = _run(arch, weight, batch, finite_check=False)
        assert np.array_equal(logits, plain)
        assert check.shape == (8, sum(nb201.STAGE_CHANNELS), 1, 1) and nb201.finite_check_passed(check)
    # a weight this large overflows float32 in the first cells: x * 0 is NaN there
    _, check = _run(arch, 3e38, batch, finite_check=True)
    assert not nb201.finite_check_passed(check)
    assert _score(arch, batch, weights=(1.0, 3e38), finite_check=True)["finite"] is False


def _bench(tmp_path, name, archs):
    return bench.run_bench("nb201", [nb201.parse(s) for s in archs],
                           batch=BatchOptions(data=cifar10_batch(8), batch_size=8, norm="none"),
                           run=RunOptions(store=tmp_path / name, progress=False))


def test_bench_shares_a_checked_result(tmp_path, monkeypatch):
    exported = counting_exports(monkeypatch)
    summary = _bench(tmp_path, "r.sqlite", [CHECKED, FOLLOWER])
    assert (summary.scored, summary.reused, summary.errors) == (2, 1, 0)
    assert exported[-1] == (CHECKED, True) and FOLLOWER not in {text for text, _ in exported}
    rows = {r[0]: r for r in stored(tmp_path / "r.sqlite")}
    _bench(tmp_path, "alone.sqlite", [FOLLOWER])
    assert stored(tmp_path / "alone.sqlite") == [rows[FOLLOWER]]  # arch, score, nan_reason, error, params
    assert rows[FOLLOWER][1] is not None and rows[FOLLOWER][4] == nb201.num_params(nb201.parse(FOLLOWER))


def test_bench_runs_each_exact_class_when_the_check_fails(tmp_path, monkeypatch):
    # get_space reads the module's SPACE at each call, so the replaced declaration is the one bench uses
    monkeypatch.setattr(nb201, "SPACE", dataclasses.replace(nb201.SPACE, finite_check_passed=lambda values: False))
    exported = counting_exports(monkeypatch)
    summary = _bench(tmp_path, "r.sqlite", [CHECKED, FOLLOWER])
    assert (summary.scored, summary.reused, summary.errors) == (2, 0, 0)
    assert exported[-2:] == [(CHECKED, True), (FOLLOWER, False)]
    rows = {r[0]: r for r in stored(tmp_path / "r.sqlite")}
    _bench(tmp_path, "alone.sqlite", [FOLLOWER])
    assert stored(tmp_path / "alone.sqlite") == [rows[FOLLOWER]]


def test_finite_classes_need_zero_biases_and_constant_weights():
    todo = [(arch, nb201.format_arch(arch)) for arch in nb201.all_archs()[:400]]
    plan = bench.computation_classes(nb201.SPACE, todo, ScoringSettings())
    assert plan.if_finite
    scored_later = sum(map(len, plan.same.values())) + sum(map(len, plan.if_finite.values()))
    assert len(plan.to_score) + scored_later == len(todo)
    assert not bench.computation_classes(nb201.SPACE, todo, ScoringSettings(bias="w")).if_finite
    assert bench.computation_classes(nb201.SPACE, todo, ScoringSettings(weight_init="normal")) == bench.ClassPlan(todo, {}, {})
