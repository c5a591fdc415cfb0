"""NAS-Bench-Macro exporter: encoding, the space, parameter counts against the
benchmark's table, forward equivalence with an independent PyTorch Network
(tests/torch_reference/macro.py), and epsinas scores against it."""

import csv
import functools
import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from epsinas_onnx.core.errors import UserError
from epsinas_onnx.spaces import macro
from tests.conftest import cifar10_batch
from tests.torch_reference.macro import Network
from tests.torch_reference.metric import torch_score

torch.set_num_threads(1)


@functools.lru_cache(maxsize=None)
def table_rows(data) -> list[dict]:
    with open(data / "macro" / "accuracies.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def rows(shared_data):
    return table_rows(shared_data)


# ---------------------------------------------------------------------------
# encoding and the space


def test_parse_format_round_trip_and_the_whole_space_is_the_tables(rows):
    assert [macro.format_arch(macro.parse(r["arch"])) for r in rows] == [r["arch"] for r in rows]
    # all_archs is the benchmark's own order (itertools.product over the digits)
    assert [macro.format_arch(a) for a in macro.all_archs()] == [r["arch"] for r in rows]


@pytest.mark.parametrize("text", ["", "0120112", "012011200", "01201123", "0120112a", " 0 1201120"])
def test_malformed_keys_are_one_line_user_errors(text):
    with pytest.raises(UserError) as info:
        macro.parse(text)
    assert "\n" not in str(info.value) and "NAS-Bench-Macro" in str(info.value)


def test_sample_and_mutate():
    drawn = macro.sample(3000, seed=1)
    assert drawn == macro.sample(3000, seed=1) and len(drawn) == 3000
    counts = np.bincount(np.array(drawn).ravel(), minlength=3)
    assert all(7200 < c < 8800 for c in counts), counts  # 8000 expected per digit
    rng = np.random.default_rng(0)
    arch = (0, 1, 2, 0, 1, 2, 0, 1)
    children = {macro.mutate(arch, rng) for _ in range(300)}
    assert len(children) == 16  # 8 layers x 2 other blocks
    assert all(sum(a != b for a, b in zip(arch, c)) == 1 for c in children)


def test_real_arch_moves_a_stages_later_identities_to_its_end():
    # utils.get_real_arch: "10201022" -> stages "10" "201" "022" -> "10" "210" "022"
    assert macro.real_arch(macro.parse("10201022")) == macro.parse("10210022")
    assert macro.real_arch(macro.parse("00000000")) == macro.parse("00000000")
    assert len({macro.computation_class(a) for a in macro.all_archs()}) == 3969  # as the data README counts


def test_keys_of_one_trained_network_share_its_table_row(rows):
    """The benchmark stores get_real_arch(key)'s result under every key."""
    by_key = {r["arch"]: r for r in rows}
    for r in rows[::7]:
        real = by_key[macro.computation_class(macro.parse(r["arch"]))]
        assert (r["mean_acc"], r["params"], r["flops"]) == (real["mean_acc"], real["params"], real["flops"])


# ---------------------------------------------------------------------------
# parameters


def test_num_params_equals_the_benchmarks_for_all_6561(rows):
    wrong = [r["arch"] for r in rows if macro.num_params(macro.parse(r["arch"])) != int(r["params"])]
    assert not wrong, wrong[:5]


def onnx_trainable_params(model) -> int:
    """Conv weights, BN scale and B, Gemm weight and bias: what the graph holds (not BN mean / var)."""
    sizes = {t.name: int(np.prod(t.dims)) for t in model.graph.initializer}
    slots = {"Conv": (1, 2), "BatchNormalization": (1, 2), "Gemm": (1, 2)}
    counted = {n.input[i] for n in model.graph.node for i in slots.get(n.op_type, ()) if i < len(n.input)}
    return sum(sizes[name] for name in counted if name in sizes)


def test_exported_graphs_hold_the_benchmarks_params(rows):
    """Counted from the graphs themselves (no ONNX Runtime) on 100 keys
    spread over the space, the extremes included; the formula above covers
    all 6,561 (the graphs of all of them would be a minute of CI)."""
    picked = rows[::66] + [rows[0], rows[-1]]
    for r in picked:
        model = macro.to_onnx(macro.parse(r["arch"]), num_classes=10)
        assert onnx_trainable_params(model) == int(r["params"]), r["arch"]


# ---------------------------------------------------------------------------
# the network against the benchmark's, in PyTorch


def run_onnx(model, x):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"input": x})[0]


def torch_with_onnx_weights(model, key: str, num_classes: int) -> Network:
    net = Network(key, num_classes=num_classes, bn_track_running_stats=True)
    state = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    assert set(weights) == set(state), set(weights) ^ set(state)
    net.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in weights.items()}, strict=False)
    return net.eval()


# keys that are their own real architecture, so that layer i is features.i on both sides
FORWARD_KEYS = ["12012012", "20221110", "00000000", "22222222", "01120221"]


@pytest.mark.parametrize("key", FORWARD_KEYS)
def test_forward_matches_the_benchmarks_network(key):
    assert macro.format_arch(macro.real_arch(macro.parse(key))) == key
    model = macro.to_onnx(macro.parse(key), num_classes=10)
    net = torch_with_onnx_weights(model, key, 10)
    x = cifar10_batch(8)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    got = run_onnx(model, x)
    assert got.shape == (8, 10)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


# keys whose network is another key's (identities mid-stage), and the extremes
SCORE_KEYS = ["10201022", "21010100", "00000000", "22222222"]


@pytest.mark.parametrize("key", SCORE_KEYS)
def test_score_matches_the_torch_reference(key):
    """The torch network of the key as given (identity modules mid-stage)
    against the exported trained network. At the reference pair both are
    NaN for every network (each path goes through convs whose float32 output
    underflows at 1e-7). Elsewhere the float32 scores of this deep network
    are compared with the same torch network in float64: the collapsed ONNX
    graph agrees with it to 1e-4, torch's float32 only to ~1e-3 (at 1e-4,
    where the deepest networks reach float32's subnormal range, not at all:
    22222222 at (1e-4, 0.1) gives 0.163 in torch float32, 0.381 in float64
    and in the collapsed graph); a score whose exact value is ~1e-14
    (00000000) is float32 noise of ~1e-6 in both."""
    from epsinas_onnx import score
    from tests.torch_reference.metric import float64_score

    x = cifar10_batch(16)
    model = macro.to_onnx(macro.parse(key))
    make = lambda: Network(key, num_classes=1, bn_track_running_stats=False)  # noqa: E731
    assert math.isnan(torch_score(make, torch.from_numpy(x), (1e-7, 1.0)))
    assert math.isnan(score(model, data=x, weights=(1e-7, 1.0), norm="none", batch_size=len(x), threads=1).score)
    for weights in ((1e-4, 0.1), (1e-3, 1.0), (1e-2, 10.0)):
        exact = float64_score(make, x, weights)
        got = score(model, data=x, weights=weights, norm="none", batch_size=len(x), threads=1).score
        assert got == pytest.approx(exact, rel=1e-4, abs=1e-5), weights
        if weights[0] >= 1e-3:
            assert torch_score(make, torch.from_numpy(x), weights) == pytest.approx(exact, rel=1e-3, abs=1e-5)


def test_cli_space_export_and_score(tmp_path, capsys):
    from epsinas_onnx.cli import main

    assert main(["space", "macro", "--sample", "3"]) == 0
    listed = capsys.readouterr().out.split()
    assert len(listed) == 3 and all(macro.format_arch(macro.parse(k)) == k for k in listed)
    path = tmp_path / "m.onnx"
    assert main(["export", "macro", "12012012", "-o", str(path)]) == 0
    assert main(["score", str(path), "--weights", "1e-4", "0.1", "--batch-size", "8", "--threads", "1",
                 "--format", "json"]) == 0
    import json

    result = json.loads(capsys.readouterr().out)
    assert result[0]["score"] > 0 if isinstance(result, list) else result["score"] > 0


# ---------------------------------------------------------------------------
# the network run layer by layer (macro.LayerPieces, what bench runs)

PIECES_EXECUTION = dict(device="cpu", threads=1, graph_optimization="none")
# an identity opening each stage (a downsampling layer), identities mid-stage (no layer at all),
# keys sharing their first layers with the key before them (the kept outputs), the templates
PIECES_KEYS = ["00000000", "01201120", "01201122", "01211120", "10201022", "21010100", "22222222", "11111111"]


def _generic_logits(arch, x, weight, scoring, export):
    from epsinas_onnx.core.options import ExecutionOptions
    from epsinas_onnx.core.scoring.scorer import open_session, rewrite_model

    staged = rewrite_model(macro.to_ir(arch, **export), scoring, in_place=True)  # untied, as `score` exports
    return open_session(staged, ExecutionOptions(**PIECES_EXECUTION)).run(x, weight)


@pytest.mark.parametrize("settings, export", [
    ({}, {}),  # bench's default: collapsed
    ({"collapse": False}, {"resolution": 8}),  # full width
    ({"bias": "w", "bn_gamma": "one"}, {"num_classes": 3}),
])
def test_layer_pieces_give_the_generic_logits_bit_for_bit(settings, export):
    from epsinas_onnx.core.options import ExecutionOptions, ScoringSettings

    scoring = ScoringSettings(**settings)
    x = cifar10_batch(8)
    if export.get("resolution") == 8:
        x = np.ascontiguousarray(x[:, :, ::4, ::4])
    pieces = macro.pieces_for(export, scoring, x, ExecutionOptions(**PIECES_EXECUTION))
    archs = [macro.parse(k) for k in PIECES_KEYS] + macro.sample(4, 5)
    # a third weight makes the pieces drop the oldest of the two weights they keep
    for weight in (1e-7, 1.0, 1e-3):
        for arch in archs:
            expected = _generic_logits(arch, x, weight, scoring, export)
            got, check = pieces.output(arch, weight)
            assert check is None and got.dtype == expected.dtype and got.shape == expected.shape
            assert np.array_equal(got, expected, equal_nan=True), (macro.format_arch(arch), weight)


def test_bench_rows_are_the_generic_paths_with_the_layer_pieces():
    """Every score, NaN reason and mode as the generic path's, to the bit."""
    from epsinas_onnx.core.options import ExecutionOptions, ScoringSettings
    from epsinas_onnx.experiments.bench import BenchJob, ExportRunner, PiecesRunner, score_architecture

    export = dict(macro.SPACE.export_defaults)
    execution = ExecutionOptions(**PIECES_EXECUTION)
    x = cifar10_batch(8)
    pieces = macro.pieces_for(export, ScoringSettings(), x, execution)
    for mode, weights in (("reference", (1e-7, 1.0)), ("reference", (1e-3, 1.0)), ("ladder", (1e-7, 1.0))):
        job = BenchJob(macro.SPACE, export, ScoringSettings(mode=mode), None, execution, x, weights)
        for key in PIECES_KEYS[:4]:
            rows = [score_architecture(job, macro.parse(key), runner=runner)
                    for runner in (ExportRunner(job, keyed=False), PiecesRunner(pieces, None))]
            assert rows[0]["error"] is None and rows[1]["error"] is None, rows
            assert np.array_equal(rows[0]["score"], rows[1]["score"], equal_nan=True), (mode, key, rows)
            assert rows[0]["nan_reason"] == rows[1]["nan_reason"]
        assert not math.isnan(rows[1]["score"]) or weights[0] == 1e-7  # not NaN everywhere: a real comparison


@pytest.mark.parametrize("settings, input_name, device, why", [
    ({"weight_init": "normal", "weight_seed": 0}, None, "cpu", "random weights"),
    ({}, None, "cuda", "CPU only"),
    ({"output": "features"}, None, "cpu", "network's output"),
    ({}, "image", "cpu", "network's input"),
])
def test_layer_pieces_decline_where_they_would_compute_something_else(settings, input_name, device, why):
    from epsinas_onnx.core.options import ExecutionOptions, ScoringSettings

    scoring = ScoringSettings(**settings)
    assert why in macro.pieces_declines(scoring, input_name, device)
    execution = ExecutionOptions(**{**PIECES_EXECUTION, "device": device})
    assert macro.pieces_for({}, scoring, cifar10_batch(4), execution, input_name) is None
    assert macro.pieces_declines(ScoringSettings(collapse=False, bias="w"), None, "cpu") is None
