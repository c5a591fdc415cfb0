"""TransNAS-Bench-101 exporters (tnb_micro: the 4,096 cells; tnb_macro: the
3,256 skeletons): encoding, the spaces, parameter counts against the
benchmark's tables, forward equivalence with an independent PyTorch MacroNet
(tests/torch_reference/transnas.py), epsinas scores against it, and the
computation classes bench shares results by."""

import csv
import functools
import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from epsinas_onnx.core.errors import UserError
from epsinas_onnx.core.rewriting.computation_key import computation_key
from epsinas_onnx.core.scoring.scorer import rewrite_model
from epsinas_onnx.spaces import tnb_macro, tnb_micro
from tests.conftest import cifar10_batch
from tests.torch_reference.metric import float64_score, torch_score
from tests.torch_reference.transnas import MacroNet

torch.set_num_threads(1)

# the benchmark's heads, by task, as its `params` count them (model_builder.py)
HEADS = {"class_scene": 63, "class_object": 100, "room_layout": 9}


@functools.lru_cache(maxsize=None)
def read(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def batch(resolution: int, n: int = 8) -> np.ndarray:
    """CIFAR-10 test images resized (bilinear) to the network's resolution."""
    x = torch.from_numpy(cifar10_batch(n))
    return torch.nn.functional.interpolate(x, size=(resolution, resolution), mode="bilinear",
                                           align_corners=False).numpy()


# ---------------------------------------------------------------------------
# encoding and the spaces


def test_micro_encodings_and_the_whole_space_are_the_tables(shared_data):
    rows = read(shared_data / "transnas" / "micro_all.csv")
    archs = [tnb_micro.parse(r["arch"]) for r in rows]
    assert set(archs) == set(tnb_micro.all_archs()) and len(archs) == 4096
    # NASLib's tuple is the net code's digits in its order: "(a, b, c, d, e, f)" is 64-41414-a_bc_def
    assert tnb_micro.format_arch(tnb_micro.parse("(2, 3, 1, 0, 2, 3)")) == "64-41414-2_31_023"
    for arch in archs[::97]:
        assert tnb_micro.parse(tnb_micro.format_arch(arch)) == arch


def test_micro_cells_without_an_input_output_path_are_the_tables_chance_level(shared_data):
    """The digit order is the benchmark's: the 64 cells whose three edges into
    node 3 (the last three digits) are zero output zeros, and trained to
    chance on every task (class_scene: the same 7.48 % for all 64)."""
    rows = read(shared_data / "transnas" / "micro_all.csv")
    dead = [r for r in rows if tnb_micro.parse(r["arch"])[3:] == (0, 0, 0)]
    assert len(dead) == 64 and len({r["class_scene"] for r in dead}) == 1
    assert all(tnb_micro.computation_class(tnb_micro.parse(r["arch"])) == "zeros(x)" for r in dead)


def test_macro_space_is_the_3256_skeletons_and_holds_the_tables(shared_data):
    space = tnb_macro.all_archs()
    assert len(space) == len(set(space)) == 3256
    rows = read(shared_data / "transnas" / "proxies_macro.csv")
    assert {tnb_macro.parse(r["arch"]) for r in rows} <= set(space)
    assert tnb_macro.format_arch(tnb_macro.parse("(3, 3, 2, 1, 1, 0)")) == "64-33211-basic"


@pytest.mark.parametrize("module, text", [
    (tnb_micro, "64-41414-3_13_33"), (tnb_micro, "64-41414-3_13_334"), (tnb_micro, "64-4141-3_13_333"),
    (tnb_micro, "(1, 2, 3)"), (tnb_micro, "(1, 2, 3, 4, 0, 0)"), (tnb_micro, "3_13_333"),
    (tnb_macro, "64-111-basic"), (tnb_macro, "64-1111111-basic"), (tnb_macro, "64-1111-basic"),
    (tnb_macro, "64-4444-basic"), (tnb_macro, "64-2525-basic"), (tnb_macro, "(1, 1, 1, 1, 0, 0)"),
])
def test_malformed_architectures_are_one_line_user_errors(module, text):
    with pytest.raises(UserError) as info:
        module.parse(text)
    assert "\n" not in str(info.value) and "TransNAS-Bench-101" in str(info.value)


def test_sample_and_mutate_stay_in_the_space():
    rng = np.random.default_rng(0)
    for module in (tnb_micro, tnb_macro):
        drawn = module.sample(200, seed=3)
        assert drawn == module.sample(200, seed=3)
        whole = set(module.all_archs())
        for arch in drawn[:40]:
            child = module.mutate(arch, rng)
            assert child in whole and child != arch
    children = {tnb_micro.mutate((0, 1, 2, 3, 0, 1), rng) for _ in range(400)}
    assert len(children) == 18  # 6 edges x 3 other ops


# ---------------------------------------------------------------------------
# parameters


@pytest.mark.parametrize("module, table", [(tnb_micro, "proxies_micro.csv"), (tnb_macro, "proxies_macro.csv")])
def test_num_params_equals_the_benchmarks(module, table, shared_data):
    """NASLib's `params` (millions, 6 decimals) of the benchmark's network
    with each task's head, for every architecture of its table."""
    rows = [r for r in read(shared_data / "transnas" / table) if r["task"] in HEADS]
    assert len(rows) > 2000
    wrong = [(r["arch"], r["task"]) for r in rows
             if module.num_params(module.parse(r["arch"]), HEADS[r["task"]]) != round(float(r["params"]) * 1e6)]
    assert not wrong, wrong[:5]


def onnx_trainable_params(model) -> int:
    sizes = {t.name: int(np.prod(t.dims)) for t in model.graph.initializer}
    slots = {"Conv": (1, 2), "BatchNormalization": (1, 2), "Gemm": (1, 2)}
    counted = {n.input[i] for n in model.graph.node for i in slots.get(n.op_type, ()) if i < len(n.input)}
    return sum(sizes[name] for name in counted if name in sizes)


def test_exported_graphs_hold_num_params():
    """Every edge is built, also one whose input is zero (the benchmark has its weights)."""
    for module in (tnb_micro, tnb_macro):
        for arch in module.sample(4, seed=5) + module.all_archs()[:1] + module.all_archs()[-1:]:
            model = module.to_onnx(arch, num_classes=63, resolution=64)
            assert onnx_trainable_params(model) == module.num_params(arch), module.format_arch(arch)


# ---------------------------------------------------------------------------
# the networks against the benchmark's, in PyTorch


def run_onnx(model, x):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"input": x})[0]


def torch_with_onnx_weights(model, net_code: str, num_classes: int) -> MacroNet:
    net = MacroNet(net_code, num_classes=num_classes, bn_track_running_stats=True)
    state = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer
               if t.data_type == onnx.TensorProto.FLOAT}  # not the slices' int64 bounds
    assert set(weights) == set(state), set(weights) ^ set(state)
    net.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in weights.items()}, strict=False)
    return net.eval()


FORWARD = [
    (tnb_micro, "64-41414-3_13_333"),
    (tnb_micro, "64-41414-1_01_100"),  # FactorizedReduce on two edges, zero and skip mixed
    (tnb_micro, "64-41414-0_20_101"),  # node 1 all zero: zeros of the reduced shape
    (tnb_micro, "64-41414-2_02_000"),  # node 3 all zero: the output is constant
    (tnb_micro, "64-41414-1_11_111"),
    (tnb_macro, "64-231341-basic"),
    (tnb_macro, "64-44413-basic"),
    (tnb_macro, "64-1213-basic"),
]


@pytest.mark.parametrize("module, text", FORWARD, ids=[t for _, t in FORWARD])
def test_forward_matches_the_benchmarks_network(module, text):
    model = module.to_onnx(module.parse(text), num_classes=10, resolution=64)
    net = torch_with_onnx_weights(model, text, 10)
    x = batch(64)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    got = run_onnx(model, x)
    assert got.shape == (8, 10)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_forward_at_the_benchmarks_resolution():
    text = "64-41414-1_32_103"
    model = tnb_micro.to_onnx(tnb_micro.parse(text), num_classes=63)
    net = torch_with_onnx_weights(model, text, 63)
    x = batch(256, n=2)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(run_onnx(model, x), expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


SCORED = [FORWARD[i] for i in (1, 2, 3, 5, 7)]


@pytest.mark.parametrize("module, text", SCORED, ids=[t for _, t in SCORED])
def test_score_matches_the_torch_reference(module, text):
    """At 1e-7 1 the torch network's float32 score is NaN for every one of
    these (the stem alone is two conv-BN layers, and every path passes the
    reductions' convs): so is the exported graph's at full width. The
    collapsed graph (what bench runs) is NaN too where the output underflows
    to 0 outright; where it only reaches float32's subnormal range (~1e-44,
    64-1213-basic) the collapsed graph keeps it and scores it, the full-width
    graph and torch flush it to 0 (docs/results.md). Elsewhere the score is
    the same torch network's in float64, as for NAS-Bench-Macro."""
    from epsinas_onnx import score

    x = batch(64, n=8)
    model = module.to_onnx(module.parse(text), resolution=64)
    make = lambda: MacroNet(text, num_classes=1, bn_track_running_stats=False)  # noqa: E731
    assert math.isnan(torch_score(make, torch.from_numpy(x), (1e-7, 1.0)))
    full = score(model, data=x, weights=(1e-7, 1.0), norm="none", batch_size=len(x), threads=1, collapse=False)
    assert math.isnan(full.score)
    for weights in ((1e-3, 1.0),):
        got = score(model, data=x, weights=weights, norm="none", batch_size=len(x), threads=1).score
        expected = torch_score(make, torch.from_numpy(x), weights)
        if math.isnan(expected):  # a constant output (node 3 all zero), at every weight
            assert math.isnan(got) and module.computation_class(module.parse(text)) == "zeros(x)"
            continue
        assert got == pytest.approx(float64_score(make, x, weights), rel=1e-4, abs=1e-5), weights
        assert got == pytest.approx(expected, rel=1e-3, abs=1e-5), weights


def test_cells_of_one_computation_class_rewrite_to_one_graph():
    """bench scores one cell per class (2,102 of 4,096) and gives the others
    its result: the rewritten graphs of a class are the same computation."""
    def key(arch):
        staged = rewrite_model(tnb_micro.to_onnx(arch, resolution=64), check=False)
        return computation_key(staged.rewritten.model, staged.output)

    classes = {}
    for arch in tnb_micro.all_archs():
        classes.setdefault(tnb_micro.computation_class(arch), []).append(arch)
    assert len(classes) == 2102
    rng = np.random.default_rng(0)
    shared = [members for members in classes.values() if len(members) > 1]
    for i in rng.choice(len(shared), 4, replace=False):
        members = shared[i]
        assert len({key(a) for a in (members[0], members[-1])}) == 1, members
    a, b = (classes[c][0] for c in list(classes)[:2])
    assert key(a) != key(b)


def test_cli_space_export_and_score(tmp_path, capsys):
    from epsinas_onnx.cli import main

    for name, arch in (("tnb_micro", "64-41414-1_32_103"), ("tnb_macro", "64-231341-basic")):
        assert main(["space", name, "--sample", "3"]) == 0
        assert len(capsys.readouterr().out.split()) == 3
        path = tmp_path / f"{name}.onnx"
        assert main(["export", name, arch, "-o", str(path), "--resolution", "64"]) == 0
        assert main(["score", str(path), "--weights", "1e-3", "1", "--batch-size", "4", "--threads", "1"]) == 0
        assert "score" in capsys.readouterr().out
