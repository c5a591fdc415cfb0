"""Channel collapse computes the function of the full-width graph.

Agreement criterion (issue: collapsed vs full width): scores within 1e-4
relative or 1e-6 absolute, and the same NaN verdict. The larger samples
(500 NAS-Bench-201, 50 NAS-Bench-101 architectures) run in
benchmarks/collapse_agreement.py; these are the CI-sized versions.
"""

import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from epsinas_onnx import prepare_model
from epsinas_onnx.core.scoring.metric import score_with_reason
from epsinas_onnx.spaces import nb101, nb201
from epsinas_onnx.core.options import ExecutionOptions, ScoringSettings
from tests.conftest import cifar10_batch
from tests.onnx_graphs import model, out


def both_scores(proto, x, weights):
    results = {}
    for collapse in (False, True):
        prepared = prepare_model(proto, ScoringSettings(collapse=collapse), ExecutionOptions(threads=1))
        results[collapse] = score_with_reason({w: prepared.run(x, w) for w in weights})
    return results[False], results[True], prepared.rewritten.collapse


def assert_agree(full, collapsed):
    (s_full, why_full), (s_col, why_col) = full, collapsed
    assert (why_full is None) == (why_col is None), (why_full, why_col)
    if why_full is None:
        assert abs(s_full - s_col) <= max(1e-4 * abs(s_full), 1e-6), (s_full, s_col)


NB201_CASES = [
    "|skip_connect~0|+|none~0|skip_connect~1|+|none~0|none~1|skip_connect~2|",  # no conv at all
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|",  # NaN
    "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|",
    "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|",  # all none: constant output
]


@pytest.mark.parametrize("arch", NB201_CASES + [nb201.format_arch(a) for a in nb201.sample(8, 7)])
def test_nb201_collapsed_equals_full_width(arch):
    full, collapsed, report = both_scores(nb201.to_onnx(nb201.parse(arch)), cifar10_batch(16), (1e-7, 1.0))
    assert_agree(full, collapsed)
    assert report.skipped is None and not report.expanded  # the whole network runs at one channel


def test_collapsed_parameters_are_shared_and_convs_are_pools():
    # 97 convs and 96 BNs need only a few distinct one-channel parameters (one per
    # kernel size and input multiplicity): one node each, so the graph that is
    # serialised and loaded stays small. Each one-channel conv is an average pool
    # (3x3) or nothing (1x1) times a scalar, and the scalar folds into the BN after it
    arch = nb201.parse("|nor_conv_3x3~0|+|nor_conv_1x1~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_1x1~1|nor_conv_3x3~2|")
    prepared = prepare_model(nb201.to_onnx(arch), ScoringSettings(collapse=True), ExecutionOptions(threads=1))
    graph = prepared.rewritten.model.graph
    ops = [n.op_type for n in graph]
    assert "Conv" not in ops
    # 4 3x3 convs in each of 15 cells, 2 per reduction block and its 2x2 shortcut pool, the stem
    assert ops.count("AveragePool") == 4 * 15 + 2 * 3 + 1
    bns = [n for n in graph if n.op_type == "BatchStatNorm_FLOAT_rank4"]  # the rank from channel collapse
    assert len(bns) == 97 - 2 + 1  # a BN after every conv but the 2 shortcuts, + the last
    # every BN after a conv reads the pool (3x3) or the ReLU (1x1) itself: the scale is folded
    assert sorted({n.inputs[0].producer().op_type for n in bns}) == ["AveragePool", "Relu", "Sum"]
    scalar_ops = ops.count("Constant") + ops.count("Mul") + ops.count("Div") + ops.count("Sign")
    assert scalar_ops <= 60, scalar_ops  # 2 of the Muls scale the shortcut convs' pools, the rest are scalars


@pytest.mark.parametrize("index", range(3))
def test_nb101_concat_of_uneven_widths(index):
    """NAS-Bench-101 sums up to 512 identical channels: the full-width float32
    graph rounds there (seen: 2e-4 relative off the float64 score), the
    collapsed graph multiplies instead and stays within 1e-5 of float64. So
    collapsed is checked against float64, and full width against collapsed
    with the looser bound its own rounding needs."""
    from tests.torch_reference.nb101 import float64_score

    arch = nb101.sample(3, 11)[index]
    x = cifar10_batch(8)
    (s_full, why_full), (s_col, why_col), report = both_scores(nb101.to_onnx(arch), x, (1e-4, 10.0))
    exact = float64_score(arch, x, (1e-4, 10.0))
    assert (why_col is None) == (why_full is None) == (not math.isnan(exact))
    if why_col is None:
        assert s_col == pytest.approx(exact, rel=1e-4)
        assert s_full == pytest.approx(s_col, rel=1e-3)
    assert report.collapsed_ops > 0


def test_per_channel_constant_falls_back_locally():
    """A per-channel scale after a conv breaks uniformity: the graph is
    expanded there and still computes the full-width function."""
    scale = np.arange(1, 5, dtype=np.float32).reshape(4, 1, 1)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Mul", ["c", "scale"], ["scaled"]),
        helper.make_node("Relu", ["scaled"], ["r"]),
        helper.make_node("Conv", ["r", "w2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["c2"], ["y"]),
    ]
    rng = np.random.default_rng(0)
    proto = model(
        nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])], [out("y")],
        [numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "w"),
         numpy_helper.from_array(scale, "scale"),
         numpy_helper.from_array(rng.normal(size=(2, 4, 3, 3)).astype(np.float32), "w2")],
    )
    x = rng.normal(size=(4, 3, 8, 8)).astype(np.float32)
    full, collapsed, report = both_scores(proto, x, (0.5, 2.0))
    assert report.expanded and report.expanded[0].startswith("Mul")
    assert_agree(full, collapsed)
    for w in (0.5, 2.0):
        np.testing.assert_allclose(prepare_model(proto, ScoringSettings(collapse=True)).run(x, w),
                                   prepare_model(proto, ScoringSettings(collapse=False)).run(x, w), rtol=1e-5)


def test_control_flow_is_left_at_full_width():
    from epsinas_onnx.spaces import nlp

    proto = nlp.to_onnx(nlp.load_recipes()[0]["arch"], vocab_size=50, hidden=8, emb=6)
    report = prepare_model(proto, ScoringSettings(collapse=True)).rewritten.collapse
    assert report.skipped and "control flow" in report.skipped


def test_explain_reports_collapse(tmp_path):
    from tests.conftest import run_cli_in_process

    path = tmp_path / "nb201.onnx"
    onnx.save(nb201.to_onnx(nb201.parse(NB201_CASES[2])), path)
    result = run_cli_in_process("rewrite", path, "--explain")
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0]  # the summary first, on stdout
    assert first.startswith("channel collapse:") and "ops run at reduced width" in first


def grouped_conv_model(opset=17) -> onnx.ModelProto:
    """A conv (collapsed to one channel) feeding a group-2 conv, which mixes
    channels within groups, then a Softmax, which has no collapse rule."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="stem"),
        helper.make_node("Conv", ["c", "w2"], ["g"], pads=[1, 1, 1, 1], group=2, name="grouped"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Softmax", ["r"], ["s"], axis=1, name="soft"),
        helper.make_node("Add", ["g", "s"], ["y"], name="join"),
    ]
    return model(
        nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])], [out("y")],
        [numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "w"),
         numpy_helper.from_array(rng.normal(size=(4, 2, 3, 3)).astype(np.float32), "w2")],
        opset=opset,
    )


def test_declined_rules_say_why_in_the_report():
    proto = grouped_conv_model()
    x = np.random.default_rng(1).normal(size=(2, 3, 8, 8)).astype(np.float32)
    full, collapsed, report = both_scores(proto, x, (0.5, 2.0))
    assert_agree(full, collapsed)
    assert report.expanded == [
        "Conv 'grouped': Conv with group=2 mixes channels in groups (only group 1 and depthwise collapse)",
        "Softmax 'soft': no collapse rule for Softmax (ai.onnx, opset 17)",
    ]
    assert "Conv with group=2 mixes channels in groups" in report.summary()


def test_explain_prints_why_collapse_stopped(tmp_path):
    from tests.conftest import run_cli_in_process

    path = tmp_path / "grouped.onnx"
    onnx.save(grouped_conv_model(opset=13), path)
    result = run_cli_in_process("rewrite", path, "--explain")
    assert result.returncode == 0, result.stderr
    assert "expanded to full width at Conv 'grouped': Conv with group=2 mixes channels in groups" in result.stdout
    assert "expanded to full width at Softmax 'soft': no collapse rule for Softmax (ai.onnx, opset 13)" in result.stdout


def shifted_conv_model() -> onnx.ModelProto:
    """TransNAS-Bench-101's FactorizedReduce in small: a map shifted by a
    pixel (a Slice of the spatial axes), a padded 1x1 conv with stride 2 on
    it, every other pixel (a Slice with steps) times zero, concatenated."""
    rng = np.random.default_rng(0)
    ints = lambda name, values: numpy_helper.from_array(np.array(values, np.int64), name)  # noqa: E731
    big = np.iinfo(np.int64).max
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="stem"),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Slice", ["r", "one", "end", "hw"], ["shifted"], name="shift"),
        helper.make_node("Conv", ["shifted", "w1"], ["half"], kernel_shape=[1, 1], strides=[2, 2], pads=[0, 0, 1, 1],
                         name="padded_1x1"),
        helper.make_node("Slice", ["r", "zero", "end", "hw", "two"], ["every_other"], name="subsample"),
        helper.make_node("Constant", [], ["nought"], value=numpy_helper.from_array(np.array(0.0, np.float32))),
        helper.make_node("Mul", ["every_other", "nought"], ["zeros"]),
        helper.make_node("Concat", ["half", "zeros"], ["y"], axis=1),
    ]
    return model(
        nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])], [out("y")],
        [numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "w"),
         numpy_helper.from_array(rng.normal(size=(2, 4, 1, 1)).astype(np.float32), "w1"),
         ints("one", [1, 1]), ints("zero", [0, 0]), ints("end", [big, big]), ints("hw", [2, 3]), ints("two", [2, 2])],
    )


def test_spatial_slices_and_padded_1x1_convs_collapse():
    """A Slice of the spatial axes keeps every channel (any steps); a 1x1
    conv padded by one stays a conv (a 1x1 pool cannot pad by its window)."""
    proto = shifted_conv_model()
    x = np.random.default_rng(1).normal(size=(2, 3, 8, 8)).astype(np.float32)
    for w in (0.5, 2.0):
        np.testing.assert_allclose(prepare_model(proto, ScoringSettings(collapse=True), ExecutionOptions(threads=1)).run(x, w),
                                   prepare_model(proto, ScoringSettings(collapse=False), ExecutionOptions(threads=1)).run(x, w), rtol=1e-5, atol=1e-6)
    report = prepare_model(proto, ScoringSettings(collapse=True)).rewritten.collapse
    assert report.skipped is None and not report.expanded, report.expanded
