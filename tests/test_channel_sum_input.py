"""The channel-sum input (passes/channel_sum_input.py): the model takes the
channel sum of its batch, read a chunk at a time (inputs.sum_channels), and
every score is the one of the model that sums the batch itself, bit for bit."""

from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import epsinas_onnx
from epsinas_onnx.core.options import BatchOptions, ExecutionOptions, ScoringSettings
from epsinas_onnx.core.rewriting.passes.channel_sum_input import MAX_CHANNELS
from epsinas_onnx.core.rewriting.passes.constant_weight import InitPolicy
from epsinas_onnx.core.rewriting.rewrite import rewrite_for_scoring
from epsinas_onnx.core.scoring import inputs
from epsinas_onnx.core.scoring.inputs import InputSpec, prepare_batch, sum_channels
from epsinas_onnx.core.scoring.scorer import batch_for, prepare_model, score_prepared
from tests.onnx_graphs import conv_bn_relu, image_input, init, model, out

MODELS = Path(__file__).resolve().parents[1] / "models"
PACKAGED_IMAGE_MODELS = ["nb201_cifar10_best.onnx", "tiny_resnet.onnx", "torch_dynamo_mobilenet.onnx",
                         "torch_dynamo_resnet.onnx", "torch_script_mobilenet.onnx", "torch_script_resnet.onnx"]


# ---------------------------------------------------------------- the sum is ONNX Runtime's


def reduce_sum_session(channels: int, opset: int, threads: int) -> ort.InferenceSession:
    if opset >= 13:
        nodes = [helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=1)]
        inits = [helper.make_tensor("axes", TensorProto.INT64, [1], [1])]
    else:
        nodes = [helper.make_node("ReduceSum", ["x"], ["y"], axes=[1], keepdims=1)]
        inits = []
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", channels, "h", "w"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])


def adversarial(rng, shape) -> np.ndarray:
    """Magnitudes from 1e-30 to 1e30 (sums that cancel and round), and in a
    third of the places +-0, +-inf, NaN, subnormals and the largest floats."""
    x = rng.standard_normal(shape).astype(np.float32) * np.float32(10.0) ** rng.integers(-30, 31, shape).astype(np.float32)
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -1e-45, 3.4e38, -3.4e38, 1.0, -1.0, 2.0**24],
                       np.float32)
    where = rng.random(shape) < 0.3
    x[where] = rng.choice(special, int(where.sum()))
    return x


def assert_same_floats(got: np.ndarray, expected: np.ndarray) -> None:
    """Bit for bit, NaN payloads aside (NaN at the same places: to the score a NaN is a NaN)."""
    assert got.shape == expected.shape and got.dtype == expected.dtype
    nan = np.isnan(expected)
    np.testing.assert_array_equal(np.isnan(got), nan)
    np.testing.assert_array_equal(got[~nan].view(np.uint32), expected[~nan].view(np.uint32))


@pytest.mark.parametrize("channels", range(1, MAX_CHANNELS + 1))
@pytest.mark.parametrize("opset", [11, 13])
def test_sum_channels_is_onnx_runtimes_reduce_sum(channels, opset):
    rng = np.random.default_rng(channels * 100 + opset)
    for threads in (1, 2):
        session = reduce_sum_session(channels, opset, threads)
        for shape in [(1, channels, 1, 1), (5, channels, 3, 7), (16, channels, 17, 13), (3, channels, 64, 64)]:
            for x in (rng.standard_normal(shape).astype(np.float32) * 1000, adversarial(rng, shape),
                      np.where(rng.random(shape) < 0.5, -0.0, 0.0).astype(np.float32)):
                (expected,) = session.run(None, {"x": x})
                assert_same_floats(sum_channels(x), expected)
                into = np.full((shape[0] + 4, 1, *shape[2:]), np.nan, np.float32)
                sum_channels(x, out=into[2:2 + shape[0]])  # into a slice of a larger batch, as the reader does
                assert_same_floats(into[2:2 + shape[0]], expected)


# ---------------------------------------------------------------- the pass


def rewritten(proto: onnx.ModelProto, collapse: bool = True):
    return rewrite_for_scoring(ir.from_proto(proto), InitPolicy(), collapse, channel_sum_input="x")


@pytest.mark.parametrize("opset", [11, 17])  # the ReduceSum's axes: an attribute, a constant input
def test_a_conv_stem_takes_the_channel_sum(opset):
    proto = conv_bn_relu()
    proto.opset_import[0].version = opset
    result = rewritten(proto)
    assert result.takes_channel_sum and result.channel_sum.declined is None
    graph = result.model.graph
    x = next(v for v in graph.inputs if v.name == "x")
    assert [d if isinstance(d, int) else str(d) for d in x.shape] == ["batch", 1, 8, 8]
    assert not any(n.op_type == "ReduceSum" for n in graph)
    assert len(x.uses()) == 1  # the collapsed stem conv (a pool here)
    onnx.checker.check_model(ir.to_proto(result.model), full_check=True)


def reduce_then_conv(axes, keepdims=1, c=3, also=None, output_sum=False):
    """x -> ReduceSum(axes, keepdims) -> Conv (a one-channel kernel), by hand;
    also: another op reading x (its output a second graph output)."""
    nodes = [helper.make_node("ReduceSum", ["x", "axes"], ["s"], keepdims=keepdims),
             helper.make_node("Conv", ["s", "w"], ["y"])]
    outputs = [out("y")]
    if also:
        nodes.append(helper.make_node(also, ["x"], ["z"]))
        outputs.append(out("z"))
    if output_sum:
        outputs.append(out("s"))
    inits = [init("w", [2, 1, 3, 3]), helper.make_tensor("axes", TensorProto.INT64, [len(axes)], axes)]
    return model(nodes, [image_input(c=c)], outputs, inits)


def test_the_sum_of_a_hand_built_graph_and_axis_minus_3():
    for axes in ([1], [-3]):
        assert rewritten(reduce_then_conv(axes), collapse=False).takes_channel_sum


@pytest.mark.parametrize("proto, reason", [
    (reduce_then_conv([2]), "does not sum over the channel axis alone"),
    (reduce_then_conv([1, 2]), "does not sum over the channel axis alone"),
    (reduce_then_conv([1], also="Relu"), "has 2 readers"),
    (reduce_then_conv([1], output_sum=True), "is a graph output"),
    (reduce_then_conv([1], c=MAX_CHANNELS + 1), f"has {MAX_CHANNELS + 1} channels"),
    (conv_bn_relu(), "is read by Conv"),  # without collapse the stem conv reads the input itself
])
def test_the_pass_declines_with_its_reason(proto, reason):
    result = rewritten(proto, collapse=proto.graph.node[0].op_type != "Conv")
    assert not result.takes_channel_sum
    assert reason in result.channel_sum.declined
    assert [d if isinstance(d, int) else str(d) for d in result.model.graph.inputs[0].shape][1] != 1


def test_keepdims_0_and_the_input_as_output_are_declined():
    assert "keepdims=0" in rewritten(reduce_then_conv([1], keepdims=0), collapse=False).channel_sum.declined
    proto = conv_bn_relu()
    proto.graph.output.append(image_input())
    assert "also a graph output" in rewritten(proto).channel_sum.declined


def test_only_the_single_model_path_takes_it():
    # a caller feeding its own batch (bench's runners, calibrate, ablations) gets the model as declared
    assert prepare_model(conv_bn_relu()).rewritten.channel_sum is None
    assert prepare_model(conv_bn_relu(), channel_sum=True).rewritten.takes_channel_sum


# ---------------------------------------------------------------- the batch, a chunk at a time


@pytest.fixture(scope="module")
def data_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("channel_sum")
    rng = np.random.default_rng(5)
    np.savez(folder / "cifar.npz", images=rng.integers(0, 256, size=(60, 32, 32, 3), dtype=np.uint8))
    np.save(folder / "floats.npy", rng.standard_normal((50, 3, 24, 24)).astype(np.float32))
    return folder


@pytest.mark.parametrize("name, hw, options", [
    ("cifar.npz", 32, dict(norm="cifar10")),
    ("cifar.npz", 40, dict(norm="cifar10", shuffle_seed=2)),  # bilinear resize
    ("cifar.npz", 16, dict(norm="imagenet16")),  # block averaging
    ("floats.npy", 24, dict()),
    ("floats.npy", 32, dict(shuffle_seed=1)),
])
def test_the_summed_batch_is_the_sum_of_the_batch(data_files, name, hw, options):
    spec = InputSpec("x", np.dtype(np.float32), ["batch", 3, hw, hw])
    batch_options = BatchOptions(data=data_files / name, batch_size=37, **options)  # not a whole number of chunks
    whole = prepare_batch(spec, batch_options)
    summed = prepare_batch(spec, batch_options, channel_sum=True)
    assert summed.description == whole.description
    np.testing.assert_array_equal(summed.array.view(np.uint32), sum_channels(whole.array).view(np.uint32))


def test_the_batch_is_read_a_chunk_at_a_time(data_files, monkeypatch):
    taken = []
    open_source = inputs.open_source

    def spying(data):
        source = open_source(data)
        take = source.take
        source.take = lambda indices: taken.append(len(indices)) or take(indices)
        return source

    monkeypatch.setattr(inputs, "open_source", spying)
    spec = InputSpec("x", np.dtype(np.float32), ["batch", 3, 24, 24])
    prepare_batch(spec, BatchOptions(data=data_files / "floats.npy", batch_size=40), channel_sum=True)
    assert taken == [16, 16, 8]


def test_npy_items_read_in_any_order(data_files):
    spec = InputSpec("x", np.dtype(np.float32), ["batch", 3, 24, 24])
    array = np.load(data_files / "floats.npy")
    order = np.random.default_rng(3).permutation(50)[:20]
    batch = prepare_batch(spec, BatchOptions(data=data_files / "floats.npy", batch_size=20, shuffle_seed=3))
    np.testing.assert_array_equal(batch.array, array[order])


# ---------------------------------------------------------------- the score, bit for bit


def score_summing_in_the_model(proto, options: BatchOptions, mode: str, weights):
    """The score of the model as declared (its own ReduceSum on the 3-channel batch)."""
    prepared = prepare_model(proto, ScoringSettings(mode=mode), ExecutionOptions(threads=1))
    assert not prepared.rewritten.takes_channel_sum
    return score_prepared(prepared, batch_for(prepared, options), weights, options.batch_size, 0.0, mode)


def assert_same_score(proto, options: BatchOptions, mode="reference", weights=(1e-4, 10.0)):
    prepared = prepare_model(proto, ScoringSettings(mode=mode), ExecutionOptions(threads=1), channel_sum=True)
    assert prepared.rewritten.takes_channel_sum, prepared.rewritten.channel_sum.declined
    full = prepare_model(proto, ScoringSettings(mode=mode), ExecutionOptions(threads=1))
    summed_batch, full_batch = batch_for(prepared, options).array, batch_for(full, options).array
    assert summed_batch.shape[1] == 1 and full_batch.shape[1] == 3
    for w in weights:
        np.testing.assert_array_equal(prepared.run(summed_batch, w).view(np.uint32),
                                      full.run(full_batch, w).view(np.uint32))
    fields = {k: getattr(options, k) for k in ("batch_size", "norm", "synthetic", "shuffle_seed", "seed")}
    got = epsinas_onnx.score(proto, options.data, weights, mode=mode, threads=1, **fields)
    expected = score_summing_in_the_model(proto, options, mode, weights)
    assert (got.score, got.nan_reason, got.scored_weights, got.input) == (
        expected.score, expected.nan_reason, expected.scored_weights, expected.input) or (
        np.isnan(got.score) and np.isnan(expected.score) and got.nan_reason == expected.nan_reason)


def conv_stem_net() -> onnx.ModelProto:
    """A 3-channel conv stem, BN, ReLU, a second conv, global pool and a Gemm."""
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("BatchNormalization", ["c1", "g", "b", "m", "v"], ["n1"]),
        helper.make_node("Relu", ["n1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["c2"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "fc"], ["y"], transB=1),
    ]
    inits = [init("w1", [8, 3, 3, 3]), init("g", [8]), init("b", [8]), init("m", [8]), init("v", [8], 1.0),
             init("w2", [8, 8, 3, 3]), init("fc", [10, 8])]
    return model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 24, 24])],
                 [out("y", 2)], inits)


@pytest.mark.parametrize("mode", ["reference", "ladder", "upper"])
def test_scores_are_the_same_small_models(data_files, mode):
    for proto in (conv_bn_relu(), conv_stem_net()):
        for options in (BatchOptions(data=data_files / "cifar.npz", batch_size=20, norm="cifar10"),
                        BatchOptions(data=data_files / "floats.npy", batch_size=19, shuffle_seed=4),
                        BatchOptions(synthetic="normal", batch_size=8, seed=3),
                        BatchOptions(batch_size=8)):  # the default grey batch
            assert_same_score(proto, options, mode)
    rng = np.random.default_rng(0)
    assert_same_score(conv_stem_net(), BatchOptions(data=rng.standard_normal((9, 3, 24, 24)).astype(np.float32),
                                                    batch_size=9), mode)


@pytest.mark.parametrize("name", PACKAGED_IMAGE_MODELS)
def test_scores_are_the_same_packaged_models(data_files, name):
    options = BatchOptions(data=data_files / "cifar.npz", batch_size=16, norm="cifar10", shuffle_seed=1)
    for mode, weights in (("reference", (1e-4, 10.0)), ("ladder", (1e-7, 1.0))):
        assert_same_score(MODELS / name, options, mode, weights)
