"""Ablation options: random weight initialisations (w * R), embedding
initialisations, their place in the store key, and `ablate`."""

import json
import math
import sqlite3

import numpy as np
import pytest
from onnx import TensorProto, helper

from epsinas_onnx.experiments import ablation, bench
from epsinas_onnx.core.errors import UserError
from epsinas_onnx.core.options import BatchOptions, ScoringSettings
from epsinas_onnx.core.rewriting.passes.constant_weight import EMBEDDING_SEED, InitPolicy, embedding_table, random_weight
from epsinas_onnx.core.scoring.scorer import prepare_model
from epsinas_onnx.spaces import nb201
from tests.conftest import CIFAR10, cifar10_batch, packaged_csv, run_cli_in_process
from tests.onnx_graphs import init, model, out
from tests.test_cli_errors import assert_user_error

SHAPE = (64, 32, 3, 3)


@pytest.mark.parametrize("kind, mean, std, low, high", [
    ("normal", 0.0, 1.0, None, None),
    ("uniform", 0.5, math.sqrt(1 / 12), 0.0, 1.0),
    ("kaiming_normal", 0.0, math.sqrt(2 / (64 * 9)), None, None),  # fan_out = 64 * 3 * 3
    ("kaiming_uniform", 0.0, math.sqrt(6 / (32 * 9)) / math.sqrt(3), -math.sqrt(6 / (32 * 9)), math.sqrt(6 / (32 * 9))),
])
def test_random_weight_distributions(kind, mean, std, low, high):
    r = random_weight(kind, SHAPE, "conv.w")
    assert r.shape == SHAPE
    assert r.mean() == pytest.approx(mean, abs=4 * std / math.sqrt(r.size))
    assert r.std() == pytest.approx(std, rel=0.03)
    if low is not None:
        assert low <= r.min() and r.max() <= high
    np.testing.assert_array_equal(r, random_weight(kind, SHAPE, "conv.w"))  # fixed
    assert not np.array_equal(r, random_weight(kind, SHAPE, "conv2.w"))  # per tensor
    assert not np.array_equal(r, random_weight(kind, SHAPE, "conv.w", seed=1))  # per seed


def test_unknown_weight_init_is_refused():
    with pytest.raises(ValueError, match="weight_init"):
        InitPolicy(weight_init="xavier")
    with pytest.raises(UserError, match="weight_init"):
        prepare_model(gemm_model(), weight_init="xavier")


def gemm_model():
    nodes = [helper.make_node("Gemm", ["x", "fc.w"], ["y"], transB=1)]
    return model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 5])], [out("y", 2)],
                 [init("fc.w", [3, 5])])


@pytest.mark.parametrize("kind", ["normal", "uniform", "kaiming_normal"])
def test_weights_are_w_times_a_fixed_random_tensor(kind):
    x = np.random.default_rng(1).normal(size=(4, 5)).astype(np.float32)
    prepared = prepare_model(gemm_model(), weight_init=kind, weight_seed=3)
    r = random_weight(kind, (3, 5), "fc.w", seed=3).astype(np.float32)
    np.testing.assert_allclose(prepared.run(x, 1.0), x @ r.T, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(prepared.run(x, 0.25), 0.25 * (x @ r.T), rtol=1e-5, atol=1e-6)  # same R for every w


def test_random_weights_run_at_full_width_and_compute_the_same():
    arch = nb201.parse("|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|skip_connect~0|avg_pool_3x3~1|nor_conv_3x3~2|")
    x = cifar10_batch(4)
    constant = prepare_model(nb201.to_onnx(arch))
    assert constant.rewritten.collapse.collapsed_ops > 0
    collapsed = prepare_model(nb201.to_onnx(arch), weight_init="normal")
    full = prepare_model(nb201.to_onnx(arch), weight_init="normal", collapse=False)
    report = collapsed.rewritten.collapse
    assert report.collapsed_ops == 0 and report.skipped is None  # tried, nothing provably channel-uniform
    for w in (1e-3, 1.0):
        np.testing.assert_allclose(collapsed.run(x, w), full.run(x, w), rtol=1e-4, atol=1e-6)
    assert not np.allclose(collapsed.run(x, 1.0), constant.run(x, 1.0))


def embedding_model():
    nodes = [helper.make_node("Gather", ["emb", "tokens"], ["e"]), helper.make_node("MatMul", ["e", "proj"], ["y"])]
    return model(nodes, [helper.make_tensor_value_info("tokens", TensorProto.INT64, ["n"])], [out("y", 2)],
                 [init("emb", [2000, 4]), init("proj", [4, 1])])


@pytest.mark.parametrize("kind, low, high, mean, std", [
    ("uniform", 0.0, 1.0, 0.5, math.sqrt(1 / 12)),
    ("uniform-0.1", 0.0, 0.1, 0.05, 0.1 * math.sqrt(1 / 12)),
    ("centered", -1.0, 1.0, 0.0, math.sqrt(4 / 12)),
    ("centered-0.1", -0.1, 0.1, 0.0, 0.1 * math.sqrt(4 / 12)),
    ("normal", None, None, 0.0, 1.0),
    ("normal-0.1", None, None, 0.0, 0.1),
])
def test_embedding_initialisations(kind, low, high, mean, std):
    tokens = np.arange(2000, dtype=np.int64)
    # with proj = w = 1 each output is the row sum of the table
    got = prepare_model(embedding_model(), embedding=kind).run(tokens, 1.0)[:, 0]
    table = embedding_table(kind, (2000, 4))
    np.testing.assert_allclose(got, table.sum(axis=1), rtol=1e-5, atol=1e-5)
    if low is not None:
        assert low <= table.min() and table.max() <= high
    assert table.mean() == pytest.approx(mean, abs=4 * std / math.sqrt(table.size))
    assert table.std() == pytest.approx(std, rel=0.05)


def test_default_embedding_is_the_reference_draw():
    np.testing.assert_array_equal(embedding_table("uniform", (7, 3)), np.random.default_rng(EMBEDDING_SEED).random((7, 3)))


def stored_settings(path):
    with sqlite3.connect(path) as db:
        return sorted({r[0] for r in db.execute("SELECT settings FROM results")})


def test_store_key(tmp_path):
    """weight_init enters the key when it is not the reference; an explicit
    'constant' keys like the default, so older stores keep their rows."""
    store = tmp_path / "k.sqlite"
    archs = nb201.sample(1, 2)
    common = dict(batch_options=BatchOptions(data=CIFAR10, batch_size=8), store_path=store, progress=False)
    first = bench.run_bench("nb201", archs, **common)
    again = bench.run_bench("nb201", archs, scoring=ScoringSettings(weight_init="constant", weight_seed=0), **common)
    assert first.scored == 1 and again.skipped == 1 and again.scored == 0
    random = bench.run_bench("nb201", archs, scoring=ScoringSettings(weight_init="normal"), **common)
    assert random.scored == 1
    keys = stored_settings(store)
    assert len(keys) == 2
    inits = sorted(json.loads(k)["prepare"].get("weight_init", "-") for k in keys)
    assert inits == ["-", "normal"]
    seeded = bench.run_bench("nb201", archs, scoring=ScoringSettings(weight_init="normal", weight_seed=1), **common)
    assert seeded.scored == 1 and len(stored_settings(store)) == 3


def test_parse_values():
    assert ablation.parse_values("batch-size", "8, 16,32") == [8, 16, 32]
    assert ablation.parse_values("synthetic", "real,grey,uniform+") == ["real", "grey", "uniform+"]
    for kind, text, message in [("batch-size", "8,x", "integers"), ("batch-size", "1", "at least 2"),
                                ("weight-init", "constant,xavier", "xavier"), ("embedding", "keep", "keep"),
                                ("synthetic", "", "empty")]:
        with pytest.raises(UserError, match=message):
            ablation.parse_values(kind, text)


def test_ablate_evaluates_each_value_on_its_own_rows(tmp_path):
    store = tmp_path / "a.sqlite"
    archs = nb201.sample(5, 5)
    acc = packaged_csv("nb201_accuracies", tmp_path / "accuracies.csv")
    kwargs = dict(accuracies=acc, store=store, batch_options=BatchOptions(data=CIFAR10, batch_size=8), progress=False)
    rows = ablation.run_ablation("nb201", archs, "synthetic", ["real", "grey"], **kwargs)
    assert [r["value"] for r in rows] == ["real", "grey"]
    with sqlite3.connect(store) as db:
        count = db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
        configs = db.execute("SELECT COUNT(DISTINCT data) FROM results").fetchone()[0]
    distinct = len({nb201.format_arch(a) for a in archs})
    assert count == 2 * distinct and configs == 2
    # each row is what `evaluate` says about a store holding only that value's bench
    from epsinas_onnx.experiments.evaluation import evaluate
    from epsinas_onnx.experiments.store import ResultStore

    for value, row in zip(["real", "grey"], rows):
        inputs = dict(data=CIFAR10) if value == "real" else dict(synthetic=value)
        other = tmp_path / f"{value}.sqlite"
        bench.run_bench("nb201", archs, batch_options=BatchOptions(batch_size=8, **inputs), store_path=other, progress=False)
        with ResultStore(other, create=False) as db:
            first = evaluate(db.rows("nb201"), "nb201", acc)["rows"][0]
        assert row["n"] == first["n"]
        assert row["spearman"] == pytest.approx(first["spearman"], nan_ok=True)
    # a rerun scores nothing new
    again = ablation.run_ablation("nb201", archs, "synthetic", ["real", "grey"], **kwargs)
    with sqlite3.connect(store) as db:
        assert db.execute("SELECT COUNT(*) FROM results").fetchone()[0] == count
    assert again == rows


def test_ablate_repeats_report_mean_and_std(tmp_path):
    plot = tmp_path / "bs.png"
    acc = packaged_csv("nb201_accuracies", tmp_path / "accuracies.csv")
    result = run_cli_in_process("ablate", "nb201", "--vary", "batch-size", "--values", "8", "--repeats", 2, "--sample", 4,
                                "--seed", 1, "--data", CIFAR10, "--accuracies", acc,
                                "--store", tmp_path / "b.sqlite", "--plot", plot, "--format", "json", "--no-progress")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)["rows"]
    assert rows[0]["draws"] == 2 and "spearman_std" in rows[0]
    with sqlite3.connect(tmp_path / "b.sqlite") as db:
        assert db.execute("SELECT COUNT(DISTINCT data) FROM results").fetchone()[0] == 2  # two shuffled batches
    assert plot.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("args, fragments", [
    (("nb201", "--vary", "synthetic", "--values", "real,grey", "--sample", 3), ("--values real needs", "--data")),
    (("nb201", "--vary", "embedding", "--values", "normal", "--sample", 3), ("for nlp",)),
    (("nb201", "--vary", "weight-init", "--values", "xavier", "--sample", 3), ("unknown weight-init value", "xavier")),
    (("nb201", "--vary", "batch-size", "--values", "8"), ("exactly one of --sample N or --archs FILE",)),
    (("nb201", "--vary", "colour", "--values", "8", "--sample", 2), ("colour",)),
])
def test_cli_bad_input(args, fragments, tmp_path):
    acc = packaged_csv("nb201_accuracies", tmp_path / "accuracies.csv")
    result = run_cli_in_process("ablate", *args, "--accuracies", acc, "--store", tmp_path / "s.sqlite")
    assert_user_error(result, *fragments)


def test_init_pair_compares_two_independent_initialisations(tmp_path):
    """The paper's protocol: seeds 0 and 1 at w = 1, BN gamma 1; the rows are
    the statistics of exactly those scores."""
    from epsinas_onnx.experiments.evaluation import statistics
    from epsinas_onnx.core.scoring.metric import epsinas_score

    archs = nb201.sample(4, 8)
    acc = packaged_csv("nb201_accuracies", tmp_path / "accuracies.csv")
    rows = ablation.run_ablation("nb201", archs, "init-pair", ["normal"], accuracies=acc,
                                 batch_options=BatchOptions(data=CIFAR10, batch_size=8), progress=False)
    x = cifar10_batch(8)
    from epsinas_onnx.experiments.search import load_targets

    targets = load_targets("nb201", acc)
    texts = list(dict.fromkeys(nb201.format_arch(a) for a in archs))
    scores = []
    for text in texts:
        y = [prepare_model(nb201.to_onnx(nb201.parse(text)), weight_init="normal", weight_seed=s, bn_gamma="one").run(x, 1.0)
             for s in (0, 1)]
        assert not np.allclose(y[0], y[1])  # two different networks
        scores.append(epsinas_score(y[0], y[1]))
    expected = statistics(scores, [targets.values[t] for t in texts])
    assert rows[0]["value"] == "normal" and rows[0]["n"] == expected["n"]
    assert rows[0]["spearman"] == pytest.approx(expected["spearman"], rel=1e-4, nan_ok=True)


def test_weight_init_on_the_command_line(tmp_path):
    """score --weight-init gives the library's score; bench --weight-init puts it in the store key."""
    import onnx

    from epsinas_onnx.core.scoring.scorer import score
    from tests.onnx_graphs import conv_bn_relu

    path = tmp_path / "m.onnx"
    onnx.save(conv_bn_relu(c_out=6), path)
    got = run_cli_in_process("score", path, "--weight-init", "kaiming_uniform", "--weight-seed", 4, "--batch-size", 8,
                             "--weights", 1e-3, 1, "--format", "json")
    assert got.returncode == 0, got.stderr
    expected = score(str(path), None, (1e-3, 1.0), batch_size=8, weight_init="kaiming_uniform", weight_seed=4)
    constant = score(str(path), None, (1e-3, 1.0), batch_size=8)
    assert json.loads(got.stdout)["score"] == pytest.approx(expected.score, rel=1e-6)
    assert expected.score != pytest.approx(constant.score, rel=1e-3)
    store = tmp_path / "s.sqlite"
    made = run_cli_in_process("bench", "nb201", "--sample", 1, "--batch-size", 8, "--weight-init", "normal", "--store", store,
                              "--no-progress")
    assert made.returncode == 0, made.stderr
    assert [json.loads(k)["prepare"]["weight_init"] for k in stored_settings(store)] == ["normal"]
