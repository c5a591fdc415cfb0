"""calibrate: the weight grid, per-pair statistics on hand-made outputs, the
label-free rule on hand-made tables, and the outputs of real (tiny) runs."""

import contextlib
import csv
import json
import math
import os
import signal

import numpy as np
import onnx
import pytest
from scipy import stats

from epsinas_onnx.experiments import calibrate as cal
from epsinas_onnx.core.errors import UserError
from epsinas_onnx.core.scoring.metric import epsinas_score
from epsinas_onnx.core.options import BatchOptions
from epsinas_onnx.core.scoring.scorer import prepare_model, score
from epsinas_onnx.spaces import nb201
from tests.conftest import CIFAR10, cifar10_batch, run_cli_in_process
from tests.onnx_graphs import conv_bn_relu
from tests.test_cli_errors import assert_user_error


def test_default_grid():
    weights, pairs = cal.weight_grid()
    assert weights == [10.0 ** e for e in range(-9, 3)]
    assert len(pairs) == 9 * 6 - 6 and all(a < b for a, b in pairs)
    assert (1e-7, 1.0) in pairs and (1e-4, 10.0) in pairs and (1e-5, 1e-3) in pairs
    weights, pairs = cal.weight_grid((1e-2, 1e-1), (1e-1, 1), per_decade=2)
    assert weights == pytest.approx([1e-2, 10 ** -1.5, 1e-1, 10 ** -0.5, 1.0], rel=1e-5)
    assert (1e-1, 1e-1) not in pairs


@pytest.mark.parametrize("low, high, message", [
    ((1e-1, 1e-9), (1e-3, 1e2), "backwards"),
    ((0.0, 1e-1), (1e-3, 1e2), "positive"),
    ((1e1, 1e2), (1e-3, 1e-2), "no pair"),
])
def test_bad_grid(low, high, message):
    with pytest.raises(UserError, match=message):
        cal.weight_grid(low, high)


def outputs_of(arrays: dict, weights) -> cal.Outputs:
    names = list(arrays)
    return cal.Outputs(list(weights), names, {n: np.asarray(a, dtype=np.float32) for n, a in arrays.items() if a is not None},
                       {n: "failed" for n, a in arrays.items() if a is None}, "f", "hand-made", "{}")


def test_pair_table_on_hand_made_outputs():
    rng = np.random.default_rng(0)
    weights = [1e-3, 1e-2, 1e-1, 1.0]
    arrays = {f"m{i}": rng.normal(size=(4, 16)) for i in range(6)}
    arrays["flat"] = np.vstack([np.ones(16), rng.normal(size=(3, 16))])  # constant output at 1e-3: NaN there
    arrays["broken"] = None  # failed to run: not counted
    outputs = outputs_of(arrays, weights)
    pairs = [(1e-3, 1e-1), (1e-3, 1.0), (1e-2, 1e-1), (1e-2, 1.0)]
    targets = {f"m{i}": float(i) for i in range(6)} | {"flat": 3.5}
    rows = cal.pair_table(outputs, pairs, targets)
    by_pair = {(r["w_low"], r["w_high"]): r for r in rows}
    index = {w: i for i, w in enumerate(weights)}
    expected = {}
    for pair in pairs:
        expected[pair] = np.array([epsinas_score(arrays[n][index[pair[0]]], arrays[n][index[pair[1]]])
                                   if arrays[n] is not None else np.nan for n in outputs.names])
    for pair, row in by_pair.items():
        s = expected[pair][:7]  # without the failed model
        finite = s[np.isfinite(s)]
        assert row["n"] == 7
        assert row["nan_rate"] == pytest.approx(1 - len(finite) / 7)
        q25, med, q75 = np.quantile(finite, [0.25, 0.5, 0.75])
        assert row["spread"] == pytest.approx((q75 - q25) / med)
        keep = np.isfinite(s)
        t = np.array([targets[n] for n in outputs.names[:7]])
        assert row["spearman"] == pytest.approx(stats.spearmanr(s[keep], t[keep]).statistic)
    assert by_pair[(1e-3, 1.0)]["nan_rate"] == pytest.approx(1 / 7)
    assert by_pair[(1e-2, 1.0)]["nan_rate"] == 0
    # agreement: mean Spearman with the pairs one grid step away
    s, left, down = expected[(1e-2, 1.0)], expected[(1e-2, 1e-1)], expected[(1e-3, 1.0)]

    def rho(a, b):
        keep = np.isfinite(a) & np.isfinite(b)
        return stats.spearmanr(a[keep], b[keep]).statistic

    assert by_pair[(1e-2, 1.0)]["agreement"] == pytest.approx((rho(s, left) + rho(s, down)) / 2)


def row(lo, hi, nan_rate, distinct=1.0, agreement=0.5, spread=1.0):
    return {"w_low": lo, "w_high": hi, "n": 100, "nan_rate": nan_rate, "distinct": distinct,
            "agreement": agreement, "spread": spread}


def pick(rows):
    r = cal.recommend(rows)
    return r["w_low"], r["w_high"]


def test_rule_agreement_first_within_the_nan_cap():
    rows = [
        row(1e-7, 1, nan_rate=0.40, agreement=0.99),
        row(1e-3, 1, nan_rate=0.02, agreement=0.80),  # fewest NaN, but its ranking moves with the weights
        row(1e-7, 1e-2, nan_rate=0.60, agreement=1.00),  # agrees best, but NaN rate > lowest (0.0) + 0.5
        row(1e-1, 1, nan_rate=0.00, agreement=0.70),
    ]
    assert pick(rows) == (1e-7, 1)
    rows.append(row(1e-6, 1, nan_rate=0.30, agreement=0.982))  # within 0.01 of the best agreement: fewer NaN wins
    assert pick(rows) == (1e-6, 1)
    rows.append(row(1e-6, 10, nan_rate=0.30, agreement=0.985, spread=2.0))  # same NaN rate: the larger spread
    assert pick(rows) == (1e-6, 10)


def test_rule_with_nothing_usable():
    assert cal.recommend([row(1e-7, 1, nan_rate=1.0)]) is None
    no_agreement = [row(1e-7, 1, nan_rate=0.1, agreement=math.nan), row(1e-6, 1, nan_rate=0.05, agreement=math.nan)]
    assert pick(no_agreement) == (1e-6, 1)  # no neighbours to agree with: the fewest NaN


def test_outputs_are_the_models_outputs_and_pairs_score_as_score(tmp_path):
    archs = nb201.sample(2, 11)
    items = [cal.Item(nb201.format_arch(a), space="nb201", arch=a) for a in archs]
    weights = [1e-7, 1e-2, 1.0]
    cache = tmp_path / "out.npz"
    outputs = cal.collect_outputs(items, weights, batch_options=BatchOptions(data=CIFAR10, batch_size=8), cache=cache, progress=False)
    batch = cifar10_batch(8)
    for item, arch in zip(items, archs):
        prepared = prepare_model(nb201.to_onnx(arch))
        for i, w in enumerate(weights):
            np.testing.assert_allclose(outputs.arrays[item.name][i], prepared.run(batch, w).reshape(-1), rtol=1e-5, atol=1e-7)
    scores = cal.pair_scores(outputs, [(1e-7, 1.0)])[(1e-7, 1.0)]
    for value, arch in zip(scores, archs):
        direct = score(nb201.to_onnx(arch), CIFAR10, (1e-7, 1.0), batch_size=8).score
        assert (math.isnan(value) and math.isnan(direct)) or value == pytest.approx(direct, rel=1e-5)


def test_the_outputs_file_is_reused(tmp_path, monkeypatch):
    archs = nb201.sample(2, 4)
    items = [cal.Item(nb201.format_arch(a), space="nb201", arch=a) for a in archs]
    cache = tmp_path / "out.npz"
    first = cal.collect_outputs(items, [1e-3, 1.0], batch_options=BatchOptions(data=CIFAR10, batch_size=8), cache=cache, progress=False)
    calls = []
    real = cal._Job.run
    monkeypatch.setattr(cal._Job, "run", lambda self, item: calls.append(item.name) or real(self, item))
    again = cal.collect_outputs(items, [1.0, 1e-3], batch_options=BatchOptions(data=CIFAR10, batch_size=8), cache=cache, progress=False)
    assert calls == []  # same batch and weights (in another order): nothing run again
    for name in first.arrays:
        np.testing.assert_array_equal(again.arrays[name], first.arrays[name][::-1])
    other = cal.collect_outputs(items[:1], [1.0, 1e-3], batch_options=BatchOptions(data=CIFAR10, batch_size=16), cache=cache, progress=False)
    assert calls == [items[0].name] and len(other.arrays) == 1  # another batch: recomputed


class DyingJob(cal._Job):
    """calibrate's job, whose worker process dies (os._exit, as a crash in ONNX
    Runtime would) when it reaches the model named VICTIM. At module level: the
    spawned workers unpickle it by name."""

    VICTIM = nb201.format_arch(nb201.sample(3, 5)[1])

    def run(self, item):
        if item.name == self.VICTIM:
            os._exit(3)
        return super().run(item)


@contextlib.contextmanager
def fails_after(seconds: int):
    """A TimeoutError in this (the main) thread if the block takes longer: a hang fails the test."""

    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds} s: hung")

    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_a_worker_that_dies_costs_its_model_alone_and_the_run_finishes(monkeypatch):
    archs = nb201.sample(3, 5)
    items = [cal.Item(nb201.format_arch(a), space="nb201", arch=a) for a in archs]
    weights = [1e-7, 1.0]
    alone = cal.collect_outputs(items, weights, batch_options=BatchOptions(data=CIFAR10, batch_size=8), progress=False)  # in this process
    monkeypatch.setattr(cal, "_Job", DyingJob)
    with fails_after(240):
        pooled = cal.collect_outputs(items, weights, batch_options=BatchOptions(data=CIFAR10, batch_size=8), workers=2, progress=False)
    victim = DyingJob.VICTIM
    assert pooled.errors == {victim: "the worker process died (exit code 3) while scoring this model (out of memory?)"}
    assert sorted(pooled.arrays) == sorted(i.name for i in items if i.name != victim)
    for name, out in pooled.arrays.items():  # the other workers' outputs: bit for bit those of one process
        np.testing.assert_array_equal(out, alone.arrays[name])


def test_cli_on_model_files(tmp_path):
    paths = []
    for i, c in enumerate((2, 4, 8)):
        path = tmp_path / f"m{i}.onnx"
        onnx.save(conv_bn_relu(c_out=c), path)
        paths.append(path)
    with open(tmp_path / "acc.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["model", "accuracy"])
        for i, path in enumerate(paths):
            writer.writerow([path.name, 90 + i])
    result = run_cli_in_process("calibrate", *paths, "--low", 1e-3, 1e-2, "--high", 1e-1, 1, "--batch-size", 8,
                                "--accuracies", tmp_path / "acc.csv", "--compare", 1e-3, 1, "--format", "json", "--no-progress")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["models"] == 3 and out["weights"] == [1e-3, 1e-2, 1e-1, 1.0]
    assert len(out["pairs"]) == 4 and all("spearman" in p for p in out["pairs"])
    assert out["compared"][0]["w_low"] == 1e-3 and out["compared"][0]["w_high"] == 1.0
    assert out["recommended"] in out["pairs"]


@pytest.mark.parametrize("args, fragments", [
    (("nb999", "--sample", 3), ("not a search space", "nb999")),
    (("nb201",), ("exactly one of --sample N or --archs FILE",)),
    (("nb201", "--sample", 2, "--compare", 1e-7, 3), ("--compare 1e-07 3 is not a pair of the grid",)),
    (("nb201", "--sample", 2, "--low", 1, 1e-3), ("backwards",)),
    (("nb201", "--sample", 2, "--outputs", "x.txt"), ("--outputs must name an .npz",)),
    (("nb201", "--sample", 2, "--plot", "x.jpg2"), ("name it .png",)),
])
def test_cli_bad_input(args, fragments):
    assert_user_error(run_cli_in_process("calibrate", *args), *fragments)
