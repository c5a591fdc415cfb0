"""Scoring modes (epsinas_onnx/core/scoring/modes.py, docs/score-everywhere.md): the ladder
and upper modes are finite where the reference is NaN; the ladder's score
there is the reference formula on the first rung where the output survives,
the upper mode's the reference formula of (w2, 10 * w2), reversed (each
checked against the same computation in PyTorch); and the reference mode, its
store keys and its scores are what they were."""

import json
import math
import sqlite3

import numpy as np
import pytest

from epsinas_onnx.experiments import bench
from epsinas_onnx.core.scoring.metric import epsinas_score, score_runs
from epsinas_onnx.core.scoring.modes import (ROUNDING_FACTOR, ladder, ladder_value, rounding_floor, score_in_mode,
                                             score_ladder, score_upper, upper_value)
from epsinas_onnx.core.options import BatchOptions, ScoringSettings
from epsinas_onnx.spaces import nb201
from tests.conftest import CIFAR10, cifar10_batch, packaged_csv, run_cli_in_process
from tests.test_cli_errors import assert_user_error

BATCH = 32


# ---------------------------------------------------------------- the ladder on stand-in outputs


def test_the_ladder_climbs_half_decades_up_to_a_tenth_of_w2():
    assert ladder((1e-7, 1.0)) == [1e-7, 3.16228e-7, 1e-6, 3.16228e-6, 1e-5, 3.16228e-5, 1e-4, 3.16228e-4,
                                   1e-3, 3.16228e-3, 1e-2, 3.16228e-2, 0.1]
    assert ladder((1e-5, 1e-3)) == [1e-5, 3.16228e-5, 1e-4]
    assert ladder((1e-4, 10.0))[-1] == 1.0
    assert ladder((0.5, 1.0)) == [0.5]  # no rung below w2 / 10: w1 alone


def stand_in(survives_from: float):
    """run(w) of a network whose output is constant below `survives_from`."""
    rng = np.random.default_rng(0)
    base, bend = rng.normal(size=64).astype(np.float32), rng.normal(size=64).astype(np.float32)
    ran = []

    def run(w):
        ran.append(w)
        if w < survives_from * (1 - 1e-9):
            return np.zeros(64, np.float32)
        return (base + np.float32(min(w, 1.0)) * bend).astype(np.float32)

    return run, ran


def test_the_score_is_the_reference_formula_on_the_first_surviving_rung():
    run, ran = stand_in(1e-3)
    value, reason, outputs, pair = score_ladder((1e-7, 1.0), run)
    assert reason is None and pair == (1e-3, 1.0)
    s = epsinas_score(outputs[1e-3], outputs[1.0])
    assert value == 1.0 + s / (1.0 + s)  # above rung 0: 1 + s / (1 + s)
    assert ran == [1e-7, 1.0] + ladder((1e-7, 1.0))[1:9]  # w1, w2, then the rungs up to the first that survives


def test_on_rung_0_the_order_is_the_reference_scores():
    scores = []
    for shift in (0.1, 0.5, 2.0):
        rng = np.random.default_rng(1)
        y_low = rng.normal(size=64).astype(np.float32)
        y_high = (y_low + np.float32(shift) * rng.normal(size=64)).astype(np.float32)
        outputs = {1e-7: y_low, 1.0: y_high}
        reference, _, _ = score_runs((1e-7, 1.0), outputs.__getitem__)
        value, _, _, pair = score_ladder((1e-7, 1.0), outputs.__getitem__)
        assert pair == (1e-7, 1.0) and value == ladder_value(0, reference) < 1.0
        upper, _, _, pair = score_upper((1e-7, 1.0), outputs.__getitem__)
        assert pair == (1e-7, 1.0) and upper == value  # the same squashed reference score
        scores.append((reference, value))
    assert sorted(scores) == sorted(scores, key=lambda pair: pair[1])


def test_nan_on_every_rung_or_at_w2_keeps_its_reason():
    value, reason, _, pair = score_ladder((1e-7, 1.0), lambda w: np.zeros(8, np.float32))
    assert math.isnan(value) and pair is None
    assert reason.startswith("constant output at w = 1")  # w2 decides: no rung can help
    run, ran = stand_in(1.0)  # survives at w2 only: no input-output path below it
    value, reason, _, _ = score_ladder((1e-7, 1.0), run)
    assert math.isnan(value) and "every rung of the ladder (1e-07 ... 0.1)" in reason and "constant output" in reason


def test_the_upper_mode_scores_w2_against_a_decade_above_it_reversed():
    rng = np.random.default_rng(3)
    base, bend = rng.normal(size=64).astype(np.float32), rng.normal(size=64).astype(np.float32)
    ran = []

    def run(w):  # constant at w1 (underflow), a function that still bends between w2 and 10 * w2
        ran.append(w)
        return np.zeros(64, np.float32) if w < 1e-3 else (base + np.float32(np.log10(w)) * bend).astype(np.float32)

    value, reason, outputs, pair = score_upper((1e-7, 1.0), run)
    assert reason is None and pair == (1.0, 10.0)
    # two runs more than the reference, only where it is NaN: 10 * w2, and the next float32 above w2 (the guard's floor)
    assert ran == [1e-7, 1.0, 10.0, float(np.nextafter(np.float32(1.0), np.float32(2.0)))]
    u = epsinas_score(outputs[1.0], outputs[10.0])
    assert 0 < u and value == 2.0 - u / (1.0 + u) == upper_value(u, True)
    # a smaller difference between w2 and 10 * w2 ranks higher, every upper score above every reference score
    assert upper_value(0.01, True) > upper_value(0.1, True) > 1.0 > upper_value(1e6, False)


def test_the_upper_mode_refuses_a_u_that_is_float32_rounding():
    """A network with no BatchNorm eps between w2 and 10 * w2 is one function
    at both, up to a scale: u then measures float32 rounding, and NaN says so
    (modes.ROUNDING_GUARD). Here y(w) = w^3 * f, f fixed, rounded to float32
    at each weight as a network's output is."""
    rng = np.random.default_rng(4)
    f = rng.normal(size=256)

    def run(w):  # constant at w1 (underflow), homogeneous above
        return np.zeros(256, np.float32) if w < 1e-3 else (np.float32(w) ** 3 * f.astype(np.float32)).astype(np.float32)

    value, reason, outputs, pair = score_upper((1e-7, 1.0), run)
    u = epsinas_score(outputs[1.0], outputs[10.0])
    floor, step = rounding_floor(1.0, outputs[1.0], run)
    assert step == float(np.nextafter(np.float32(1.0), np.float32(2.0)))
    assert 0 <= u <= ROUNDING_FACTOR * floor and u < 1e-5  # the scale of float32 rounding
    assert math.isnan(value) and pair is None
    assert reason.startswith("constant output at w = 1e-07") and "no more than float32 rounding" in reason
    # a u far above the floor is kept: the function does bend between w2 and 10 * w2
    bend = rng.normal(size=256).astype(np.float32)
    value, reason, _, pair = score_upper(
        (1e-7, 1.0), lambda w: run(w) * (1 + np.float32(0.01 * np.log10(w)) * bend) if w >= 1e-3 else run(w))
    assert reason is None and pair == (1.0, 10.0) and 1.0 < value < 2.0


def test_the_upper_mode_keeps_the_reasons_of_its_nan():
    value, reason, _, pair = score_upper((1e-7, 1.0), lambda w: np.zeros(8, np.float32))
    assert math.isnan(value) and pair is None and reason.startswith("constant output at w = 1")  # w2 decides
    base = np.linspace(1, 2, 8, dtype=np.float32)
    outputs = {1e-7: np.zeros(8, np.float32), 1.0: base, 10.0: np.full(8, np.inf, np.float32)}
    value, reason, _, _ = score_upper((1e-7, 1.0), outputs.__getitem__)
    assert math.isnan(value) and reason.startswith("constant output at w = 1e-07")
    assert "at the upper pair (1, 10): non-finite output at w = 10" in reason
    with pytest.raises(Exception, match="W1 must be the smaller weight"):
        score_upper((1.0, 1e-7), outputs.__getitem__)


def test_the_reference_mode_is_score_runs():
    rng = np.random.default_rng(2)
    for outputs in ({1e-7: rng.normal(size=16), 1.0: rng.normal(size=16)},
                    {1e-7: np.zeros(16), 1.0: rng.normal(size=16)}):
        expected = score_runs((1e-7, 1.0), outputs.__getitem__)
        got = score_in_mode("reference", (1e-7, 1.0), outputs.__getitem__)
        assert got[:2] == expected[:2] or (math.isnan(got[0]) and got[1] == expected[1])


# ---------------------------------------------------------------- real networks, against PyTorch


def torch_ladder(make_module, x, weights) -> tuple[float, float]:
    """The ladder climbed independently in PyTorch: (score, rung)."""
    from tests.torch_reference.metric import torch_score

    for j, rung in enumerate(ladder(weights)):
        s = torch_score(make_module, x, (rung, weights[1]))
        if math.isfinite(s):
            return (s / (1 + s) if j == 0 else 1 + s / (1 + s)), rung
    return math.nan, math.nan


def torch_upper(make_module, x, weights) -> float:
    """The upper mode computed independently in PyTorch, where the reference is NaN."""
    from tests.torch_reference.metric import torch_score

    assert math.isnan(torch_score(make_module, x, weights))
    u = torch_score(make_module, x, (weights[1], 10 * weights[1]))
    return 2 - u / (1 + u)


def plain_cnn():
    """VGG-like Conv-BN-ReLU x 6, no skip path: every path crosses six
    convolutions (four are not enough to underflow float32 at w = 1e-7)."""
    from torch import nn

    from tests.torch_reference.cnns import conv_bn

    layers = []
    for c_in, c_out, stride in ((3, 8, 1), (8, 8, 1), (8, 16, 2), (16, 16, 1), (16, 32, 2), (32, 32, 1)):
        layers += [conv_bn(c_in, c_out, stride=stride), nn.ReLU()]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 1))


def mobilenet_stack():
    """MobileNet's depthwise-separable blocks stacked without residuals
    (depthwise 3x3, pointwise 1x1, each with BN and ReLU6), as in MobileNetV1
    and in MobileNetV2's stride-2 / widening blocks."""
    from torch import nn

    from tests.torch_reference.cnns import conv_bn

    layers = [conv_bn(3, 8, stride=2), nn.ReLU6()]
    for c_in, c_out in ((8, 16), (16, 16), (16, 32)):
        layers += [conv_bn(c_in, c_in, groups=c_in), nn.ReLU6(), conv_bn(c_in, c_out, k=1), nn.ReLU6()]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 1))


def exported(make, tmp_path):
    """`make`'s network exported to ONNX (seed 0), and the score() options both modes' tests use."""
    import torch

    from tests.torch_export import export_onnx

    torch.manual_seed(0)
    torch.set_num_threads(1)
    path = tmp_path / "model.onnx"
    export_onnx(make(), torch.randn(2, 3, 32, 32), path)
    return path, dict(data=CIFAR10, batch_size=BATCH, norm="cifar10", device="cpu", weights=(1e-7, 1.0), threads=1)


@pytest.mark.parametrize("make", [plain_cnn, mobilenet_stack], ids=["plain_cnn", "mobilenet_stack"])
def test_ladder_is_finite_where_the_reference_is_nan_and_equals_pytorch(make, tmp_path):
    """Full width, the ladder's score is PyTorch's. Collapsed, the rung is the
    same but the value is not: the first surviving rung's output is denormal
    (about 1e-40 here), where the one-channel graph rounds differently
    (docs/score-everywhere.md, "Where it does not help")."""
    import torch

    import epsinas_onnx

    path, kwargs = exported(make, tmp_path)
    reference = epsinas_onnx.score(path, **kwargs)
    assert math.isnan(reference.score) and reference.nan_reason.startswith("constant output at w = 1e-07")
    expected, rung = torch_ladder(make, torch.from_numpy(cifar10_batch(BATCH)), (1e-7, 1.0))
    full = epsinas_onnx.score(path, mode="ladder", collapse=False, **kwargs)
    assert full.nan_reason is None and full.mode == "ladder"
    assert full.scored_weights == (rung, 1.0) and rung > 1e-7
    assert full.score == pytest.approx(expected, rel=1e-5, abs=1e-6), (full.score, expected)
    collapsed = epsinas_onnx.score(path, mode="ladder", **kwargs)
    assert collapsed.scored_weights == (rung, 1.0) and 1.0 <= collapsed.score < 2.0


def test_upper_is_nan_where_its_pair_reads_rounding_as_float64_confirms(tmp_path):
    """plain_cnn is one chain of Conv-BN-ReLU: from w2 = 1 up every
    BatchNorm's input variance dwarfs eps, so the network is one function at
    1 and 10 up to a scale. Its exact u (PyTorch, float64) is about 1e-15;
    the float32 u is rounding, and the rounding guard makes the score NaN."""
    import re

    import epsinas_onnx
    from tests.torch_reference.metric import float64_score

    path, kwargs = exported(plain_cnn, tmp_path)
    exact = float64_score(plain_cnn, cifar10_batch(BATCH), (1.0, 10.0))
    for collapse in (False, True):
        result = epsinas_onnx.score(path, mode="upper", collapse=collapse, **kwargs)
        assert math.isnan(result.score) and result.scored_weights is None
        assert "no more than float32 rounding" in result.nan_reason
        floor = float(re.search(r"the ([0-9.e+-]+) of w = 1 against", result.nan_reason).group(1))
        assert 0 < floor < 1e-5 and exact < floor / 1000


@pytest.mark.parametrize("make", [mobilenet_stack], ids=["mobilenet_stack"])
def test_upper_is_finite_where_the_reference_is_nan_and_equals_pytorch(make, tmp_path):
    """Both outputs of the upper pair are normal float32 numbers, so the
    collapsed graph agrees with PyTorch as closely as the full-width one
    (u = 1.04 here, far above rounding)."""
    import torch

    import epsinas_onnx

    path, kwargs = exported(make, tmp_path)
    expected = torch_upper(make, torch.from_numpy(cifar10_batch(BATCH)), (1e-7, 1.0))
    for collapse in (False, True):
        result = epsinas_onnx.score(path, mode="upper", collapse=collapse, **kwargs)
        assert result.nan_reason is None and result.mode == "upper" and result.scored_weights == (1.0, 10.0)
        assert 1.0 < result.score <= 2.0
        assert result.score == pytest.approx(expected, rel=1e-5, abs=1e-6), (collapse, result.score, expected)


def test_on_a_small_transformer_the_ladder_is_the_reference_noise():
    """Where the ladder does not help (docs/score-everywhere.md): with constant
    weights every Linear after a LayerNorm computes w * sum(LayerNorm(x)) = 0,
    at every weight; the transformer's output is finite at w1 already, so the
    ladder stays on rung 0 and its score is the reference's rounding noise."""
    import epsinas_onnx
    from tests.test_framework_models import EXPECTED, MODELS, score_kwargs

    name = "torch_dynamo_transformer.onnx"
    kwargs = dict(score_kwargs(EXPECTED[name]), device="cpu", weights=(1e-7, 1.0))
    reference = epsinas_onnx.score(MODELS / name, **kwargs)
    for mode in ("ladder", "upper"):
        result = epsinas_onnx.score(MODELS / name, mode=mode, **kwargs)
        assert result.scored_weights == (1e-7, 1.0) and result.score == ladder_value(0, reference.score)
        assert result.score < 1e-3  # noise, as the reference (its float64 score is ~1e-13)


# ---------------------------------------------------------------- bench, store keys, evaluate


@pytest.mark.parametrize("mode", ["ladder", "upper"])
def test_bench_keys_the_mode_and_keeps_the_reference_rows(mode, tmp_path):
    store = tmp_path / "r.sqlite"
    archs = nb201.sample(12, 5)
    common = dict(batch_options=BatchOptions(data=CIFAR10, batch_size=8, norm="cifar10"), store_path=store, progress=False)
    bench.run_bench("nb201", archs, **common)
    bench.run_bench("nb201", archs, scoring=ScoringSettings(mode=mode), **common)
    with sqlite3.connect(store) as db:
        rows = db.execute("SELECT arch, settings, score, nan_reason FROM results").fetchall()
    by_mode = {}
    for arch, settings, value, reason in rows:
        mode = json.loads(settings).get("mode", "reference")
        by_mode.setdefault(mode, {})[arch] = (value, reason, settings)
    reference, ladder_rows = by_mode["reference"], by_mode[mode]
    assert set(reference) == set(ladder_rows) and len(reference) == len({nb201.format_arch(a) for a in archs})
    # a reference key names no mode: stores written before modes existed keep their keys
    assert all('"mode"' not in settings for _, _, settings in reference.values())
    nan = 0
    for arch, (value, reason, _) in reference.items():
        ladder_value_, ladder_reason, _ = ladder_rows[arch]
        if value is not None:  # rung 0: the reference's score, squashed, bit for bit
            assert ladder_value_ == ladder_value(0, value)
        elif nb201.computation_class(nb201.parse(arch)) != nb201.computation_class(nb201.parse(
                "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|")):
            nan += 1
            if mode == "upper" and ladder_value_ is None:  # at batch 8 some outputs are one value and zeros,
                assert "no more than float32 rounding" in ladder_reason  # identical at 1 and 10: u = 0
                continue
            assert ladder_value_ is not None and 1.0 <= ladder_value_ <= 2.0 and ladder_reason is None
    assert nan > 0  # the sample holds architectures the reference cannot score


def test_cli_mode_option_and_evaluate_side_by_side(tmp_path):
    store = tmp_path / "r.sqlite"
    base = ("bench", "nb201", "--sample", 10, "--seed", 1, "--batch-size", 8, "--data", CIFAR10, "--store", store,
            "--no-progress")
    for mode in ("reference", "ladder", "upper"):
        result = run_cli_in_process(*base, "--mode", mode)
        assert result.returncode == 0, result.stderr
    accuracies = packaged_csv("nb201_accuracies", tmp_path / "accuracies.csv")
    result = run_cli_in_process("evaluate", "--store", store, "--accuracies", accuracies, "--format", "json")
    assert result.returncode == 0, result.stderr
    rows = {r["proxy"]: r for r in json.loads(result.stdout)["rows"]}
    assert {"epsinas", "epsinas (NaN last)", "epsinas [ladder]", "epsinas [ladder] (NaN last)",
            "epsinas [upper]", "epsinas [upper] (NaN last)"} <= set(rows)
    assert rows["epsinas [ladder]"]["n"] >= rows["epsinas"]["n"]
    assert rows["epsinas [ladder] (NaN last)"]["n"] == rows["epsinas (NaN last)"]["n"]
    # search reads one mode's rows, and scores the architectures the store lacks in that mode
    before = {mode: len(rows) for mode, rows in stored_by_mode(store).items()}
    for mode in ("reference", "ladder"):
        result = run_cli_in_process("search", "pick", "--store", store, "--accuracies", accuracies, "--n", 4, "--runs", 2,
                                    "--mode", mode, "--data", CIFAR10, "--batch-size", 8, "--no-progress", "--format", "json")
        assert result.returncode == 0, result.stderr
    after = stored_by_mode(store)
    assert set(after) == {"reference", "ladder", "upper"} and len(after["ladder"]) > before["ladder"]
    assert set(after["ladder"]) == set(after["reference"])  # each mode scored the same draws


def stored_by_mode(store) -> dict[str, dict[str, float]]:
    with sqlite3.connect(store) as db:
        rows = db.execute("SELECT arch, settings, score FROM results").fetchall()
    out = {}
    for arch, settings, value in rows:
        out.setdefault(json.loads(settings).get("mode", "reference"), {})[arch] = value
    return out


def test_bad_mode_input(tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(nb201.to_onnx(nb201.parse("|skip_connect~0|+|none~0|none~1|+|none~0|none~1|none~2|"))
                      .SerializeToString())
    assert_user_error(run_cli_in_process("score", model, "--mode", "ladder", "--weights", 1, 1e-7), "W1 must be the smaller")
    assert_user_error(run_cli_in_process("score", model, "--mode", "everywhere"), "--mode")
