"""The proxies' memory guard (epsinas_onnx/proxies/memory.py): the estimate
against a peak computed by hand, and a run that would not fit refused with
its one-line error in the library, `score --proxy` and `bench --proxies`,
while the runs it lets through give the same values as without it."""

import json
import math
import sqlite3

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from epsinas_onnx.cli import main
from epsinas_onnx.core.options import BatchOptions
from epsinas_onnx.proxies import engine, memory
from epsinas_onnx.spaces import nb201

ARCH = "|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_3x3~1|skip_connect~2|"
SMALL = BatchOptions(batch_size=16, synthetic="normal")
MESSAGE_END = "is available to it: score on a machine with more memory or a smaller input resolution"


def branching_model() -> onnx.ModelProto:
    """x [N, 16] -> y = x W (W [16, 32], declared to inference as an input: over 1 KiB),
    then two branches of y (Relu, Sigmoid) multiplied, reduced to [N]."""
    weight = helper.make_tensor("w", TensorProto.FLOAT, [16, 32], np.ones(16 * 32, np.float32))
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"]), helper.make_node("Relu", ["y"], ["z"]),
             helper.make_node("Sigmoid", ["y"], ["s"]), helper.make_node("Mul", ["z", "s"], ["t"]),
             helper.make_node("ReduceMean", ["t"], ["out"], axes=[1], keepdims=0)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)], [weight])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def estimate(model: onnx.ModelProto, examples: int, runs: int = 1) -> int:
    shapes = memory.Shapes(model, "x", (16,))
    steps = [(tuple(n.output), tuple(n.input)) for n in model.graph.node]
    return memory.peak_bytes(steps, ["x"], ["out"], shapes, examples, runs)


def test_the_estimate_is_the_peak_of_the_live_tensors_computed_by_hand():
    n = 5
    x, wide, out, weight = 16 * n * 4, 32 * n * 4, n * 4, 16 * 32 * 4
    # MatMul: x and y live; Relu: y, z; Sigmoid: y, z, s (the peak), then y freed; Mul: z, s, t;
    # ReduceMean: t, out. The output again (Python's copy), and the weight.
    peak = max(x + wide, 2 * wide, 3 * wide, 3 * wide, wide + out)
    assert peak == 3 * wide
    assert estimate(branching_model(), n) == peak + out + weight
    # two runs of one shape: the peak twice (ONNX Runtime's memory pattern beside the first run's blocks)
    assert estimate(branching_model(), n, runs=2) == 2 * peak + out + weight
    # the symbolic batch axis takes the batch's size
    assert estimate(branching_model(), 2 * n) == 2 * peak + 2 * out + weight


def test_a_run_that_would_not_fit_is_an_error_and_the_others_still_run(monkeypatch):
    model = nb201.to_onnx(nb201.parse(ARCH), num_classes=10)
    monkeypatch.setattr(memory, "available_memory", lambda: 2**20)  # 1 MiB
    got = engine.compute(model, ["naswot", "zen", "meco", "params"], SMALL)
    for name, images in (("naswot", 16), ("zen", 16), ("meco", 1)):
        result = got[name]
        assert math.isnan(result.value) and result.nan_reason is None, name
        assert result.error.startswith(f"{name}'s run of {images} images at 3x32x32 would need about "), result.error
        assert result.error.endswith(f"MiB and 0 MiB {MESSAGE_END}") and "\n" not in result.error
        assert result.to_dict()["error"] == result.error
    assert got["params"].error is None and got["params"].value == nb201.num_params(nb201.parse(ARCH), num_classes=10)


def test_the_runs_it_lets_through_give_the_values_of_a_run_without_the_guard(monkeypatch):
    model = nb201.to_onnx(nb201.parse(ARCH), num_classes=10)
    names = ["naswot", "zen", "meco"]
    monkeypatch.setattr(memory, "available_memory", lambda: None)  # no figure: the guard lets everything run
    free = engine.compute(model, names, SMALL)
    needs, refusal = {}, memory.refusal

    def record(name, feed, need, taken=0):
        needs[name] = need

    monkeypatch.setattr(memory, "refusal", record)
    monkeypatch.setattr(memory, "available_memory", lambda: 1)  # past the quick bound: every run estimated
    engine.compute(model, names, SMALL)
    monkeypatch.setattr(memory, "refusal", refusal)
    assert set(needs) == set(names) and needs["meco"] < needs["naswot"]  # one image against 16
    # the quick bound lets nothing through that the estimate refuses
    monkeypatch.setattr(memory, "available_memory", lambda: int((needs["naswot"] - 1) / memory.RUN_MEMORY_SHARE))
    assert engine.compute(model, ["naswot"], SMALL)["naswot"].error
    # room for MeCo's run but not NASWOT's (the same initialisation): MeCo's value bit for bit
    room = (needs["meco"] + needs["naswot"]) / 2
    monkeypatch.setattr(memory, "available_memory", lambda: int(room / memory.RUN_MEMORY_SHARE))
    partly = engine.compute(model, names, SMALL)
    assert partly["naswot"].error and partly["meco"].error is None
    assert partly["meco"].value == free["meco"].value
    monkeypatch.setattr(memory, "available_memory", lambda: 64 * 2**30)
    allowed = engine.compute(model, names, SMALL)
    for name in names:
        assert allowed[name].error is None and allowed[name].value == free[name].value, name


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(nb201.to_onnx(nb201.parse(ARCH), num_classes=10).SerializeToString())
    return path


def test_score_prints_the_refusal_as_one_line(model_file, monkeypatch, capsys):
    monkeypatch.setattr(memory, "available_memory", lambda: 2**20)
    status = main(["score", str(model_file), "--batch-size", "16", "--synthetic", "normal", "--proxy", "naswot"])
    out, err = capsys.readouterr()
    assert status == 1 and out == ""
    assert err.count("\n") == 1 and "naswot's run of 16 images at 3x32x32 would need about" in err
    assert MESSAGE_END in err
    monkeypatch.setattr(memory, "available_memory", lambda: 64 * 2**30)
    assert main(["score", str(model_file), "--batch-size", "16", "--synthetic", "normal", "--proxy", "naswot"]) == 0


def test_rank_by_makes_a_refused_model_an_error_row(model_file, tmp_path, monkeypatch, capsys):
    other = tmp_path / "n.onnx"
    other.write_bytes(model_file.read_bytes())
    monkeypatch.setattr(memory, "available_memory", lambda: 2**20)
    status = main(["score", str(model_file), str(other), "--batch-size", "16", "--synthetic", "normal",
                   "--rank-by", "naswot,params", "--format", "json"])
    out, err = capsys.readouterr()
    assert status == 1 and "2 of 2 models could not be scored" in err
    rows = json.loads(out)
    assert all(r["naswot"] is None and r["note"].startswith("error: proxies: naswot's run of 16 images at 3x32x32")
               and MESSAGE_END in r["note"] for r in rows)


def test_bench_stores_the_refusal_as_an_error_row_and_goes_on(tmp_path, monkeypatch, capsys):
    store = tmp_path / "p.sqlite"
    args = ["bench", "nb201", "--sample", "2", "--seed", "4", "--batch-size", "16", "--synthetic", "normal",
            "--store", str(store), "--proxies", "params,naswot", "--no-progress"]
    monkeypatch.setattr(memory, "available_memory", lambda: 2**20)
    assert main(args) == 0  # one worker: in this process, where the patch holds
    out = capsys.readouterr().out
    assert "naswot" in out and "2 errors" in out
    with sqlite3.connect(store) as db:
        rows = db.execute("SELECT proxy, value, error FROM proxies ORDER BY proxy").fetchall()
    assert [r[0] for r in rows] == ["naswot", "naswot", "params", "params"]
    for proxy, value, error in rows:
        if proxy == "naswot":
            assert value is None and error.startswith("naswot's run of 16 images") and MESSAGE_END in error
        else:
            assert value > 0 and error is None
    # the next run, with the memory, retries the error rows and replaces them with values
    monkeypatch.setattr(memory, "available_memory", lambda: 64 * 2**30)
    assert main(args) == 0
    with sqlite3.connect(store) as db:
        assert db.execute("SELECT COUNT(*) FROM proxies WHERE error IS NULL AND value IS NOT NULL").fetchone()[0] == 4


def test_a_run_counts_what_the_runs_before_it_in_its_session_take(monkeypatch):
    monkeypatch.setattr(memory, "available_memory", lambda: 4 * 2**30)  # room: 2 GiB
    feed = np.zeros((128, 3, 32, 32), np.float32)
    assert memory.refusal("naswot", feed, 2**30) is None
    assert memory.refusal("meco", feed[:1], 2**30, taken=1.5 * 2**30) == (
        f"meco's run of 1 images at 3x32x32 would need about 1.0 GiB and 0.5 GiB {MESSAGE_END}")


def test_a_run_estimated_above_the_shrink_threshold_gives_the_arena_back_and_keeps_its_value(monkeypatch):
    model = nb201.to_onnx(nb201.parse(ARCH), num_classes=10)
    names = ["naswot", "zen", "meco"]
    monkeypatch.setattr(memory, "available_memory", lambda: 64 * 2**30)
    shrunk, run_outputs = [], engine.runtime.run_outputs

    def spy(session, outputs, feeds, timeout=None, shrink_arena=False):
        shrunk.append(shrink_arena)
        return run_outputs(session, outputs, feeds, timeout, shrink_arena=shrink_arena)

    monkeypatch.setattr(engine.runtime, "run_outputs", spy)
    kept = engine.compute(model, names, SMALL)
    assert shrunk and not any(shrunk)  # a 16-image NAS-Bench-201 run is far below 1 GiB
    shrunk.clear()
    monkeypatch.setattr(memory, "SHRINK_AFTER_BYTES", 0)  # every run counts as large
    given_back = engine.compute(model, names, SMALL)
    assert shrunk and all(shrunk)
    for name in names:
        assert given_back[name].value == kept[name].value, name


def test_the_quick_bound_spares_nas_bench_201_the_shape_inference_of_the_estimate(monkeypatch):
    model = nb201.to_onnx(nb201.parse(ARCH), num_classes=10)
    monkeypatch.setattr(memory, "available_memory", lambda: 64 * 2**30)
    inferred = []
    monkeypatch.setattr(memory.Shapes, "__init__", lambda *args: inferred.append(args) or None)
    got = engine.compute(model, ["naswot", "zen", "meco"], BatchOptions(batch_size=128, synthetic="normal"))
    assert not inferred and all(result.error is None for result in got.values())
