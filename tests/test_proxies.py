"""The proxies (epsinas_onnx/proxies): each against an independent PyTorch or
NumPy computation from the same weights (what the proxies' reference code
computes: BayesWatch's NASWOT hooks, NASLib's Zen-score, MeCo's hooks), the
parameter count exactly against the packaged NAS-Bench-201 table, the
initialisation schemes, the registry, and the NaN reasons."""

import math
import warnings

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from epsinas_onnx.core.errors import UserError
from epsinas_onnx.core.options import BatchOptions
from epsinas_onnx.proxies import engine, registry
from epsinas_onnx.proxies.measures import zen as zen_module
from epsinas_onnx.proxies.proxy import Context, ProxyOptions, register
from epsinas_onnx.spaces import nb201
from torch_reference.nb201 import TinyNetwork

torch.set_num_threads(1)

ARCH = "|nor_conv_3x3~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|skip_connect~0|none~1|nor_conv_3x3~2|"


def images(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, size, size)).astype(np.float32)


def weights_of(model) -> dict:
    return {name: torch.from_numpy(np.array(value.const_value.numpy(), dtype=np.float32))
            for name, value in model.graph.initializers.items()}


def torch_nb201(arch: str, scheme: str, track: bool = True) -> TinyNetwork:
    """The independent PyTorch TinyNetwork holding the weights our proxies of `scheme` use."""
    model = nb201.to_onnx(nb201.parse(arch), num_classes=10)
    net = TinyNetwork(arch, num_classes=10, bn_track_running_stats=track)
    state = net.state_dict()
    ours = weights_of(engine.initialised(model, scheme))
    for name in state:
        if name in ours:
            state[name] = ours[name].reshape(state[name].shape)
    net.load_state_dict(state)
    return net.train()  # BatchNorm on the batch's statistics, as the references score


def ours(model, names, batch: np.ndarray) -> dict:
    return engine.compute(model, names, BatchOptions(data=batch, batch_size=len(batch), norm="none"))


# ---------------------------------------------------------------- NAS-Bench-201 against the reference code


def test_naswot_equals_the_reference_hooks_on_nb201():
    batch = images(128)
    net = torch_nb201(ARCH, "pytorch")
    kernel = np.zeros((128, 128))

    def hook(module, inputs, output):  # BayesWatch/nas-without-training score_networks.py
        x = (inputs[0].reshape(inputs[0].shape[0], -1) > 0).float()
        kernel[:] += (x @ x.t() + (1.0 - x) @ (1.0 - x.t())).numpy()

    for module in net.modules():
        if isinstance(module, torch.nn.ReLU):
            module.register_forward_hook(hook)
    with torch.no_grad():
        net(torch.from_numpy(batch))
    expected = np.linalg.slogdet(kernel)[1]
    got = ours(nb201.to_onnx(nb201.parse(ARCH), num_classes=10), ["naswot"], batch)["naswot"]
    assert got.nan_reason is None
    # a code is the sign of a float32 value: a handful of units near 0 may differ between the two runtimes
    assert got.value == pytest.approx(expected, rel=1e-4)


def test_zen_equals_naslibs_computation_on_nb201():
    batch = images(4)  # only its shape matters: Zen feeds Gaussian images
    net = torch_nb201(ARCH, "gaussian")
    x, mixed = zen_module.Zen().feeds(Context(batch, "input", ProxyOptions()))
    features = []
    net.global_pooling.register_forward_hook(lambda m, inputs, out: features.append(inputs[0]))
    with torch.no_grad():  # NASLib's compute_zen_score: two forwards in training mode
        net(torch.from_numpy(x))
        net(torch.from_numpy(mixed))
    response = torch.sum(torch.abs(features[0] - features[1]), dim=[1, 2, 3]).mean()
    correction = sum(torch.log(torch.sqrt(torch.mean(m.running_var))) for m in net.modules()
                     if isinstance(m, torch.nn.BatchNorm2d))
    expected = float(torch.log(response) + correction)
    got = ours(nb201.to_onnx(nb201.parse(ARCH), num_classes=10), ["zen"], batch)["zen"]
    assert got.nan_reason is None
    assert got.value == pytest.approx(expected, rel=1e-5)


def test_params_equal_the_packaged_table_exactly():
    from epsinas_onnx.core.tables import packaged

    rows = {row["arch"]: row for row in packaged("nb201_accuracies").rows}
    for arch in nb201.sample(6, seed=3) + [nb201.parse(ARCH)]:
        text = nb201.format_arch(arch)
        got = engine.compute(nb201.to_onnx(arch, num_classes=10), ["params"])["params"].value
        assert got == nb201.num_params(arch)
        assert got == round(float(rows[text]["params_m"]) * 1e6)  # a whole count in millions, 6 decimals
    # over the whole table the count the proxy equals matches params_m for all but 204 architectures, whose
    # table value is no count of their network (199 fractional, e.g. index 15403: 0.14797266666666667;
    # 5 a count of another network, e.g. index 5065: 0.923946 for a network of 802,426)
    differ = [r["index"] for r in rows.values() if nb201.num_params(nb201.parse(r["arch"])) != float(r["params_m"]) * 1e6
              and nb201.num_params(nb201.parse(r["arch"])) != round(float(r["params_m"]) * 1e6)]
    assert len(differ) == 204 and {"15403", "5065"} <= set(differ)


def test_flops_count_the_multiply_accumulates_of_nb201():
    arch = nb201.parse(ARCH)
    macs = 3 * 16 * 9 * 32 * 32  # the stem
    for channels, size in ((16, 32), (32, 16), (64, 8)):
        per_cell = sum({"nor_conv_3x3": 9, "nor_conv_1x1": 1}.get(op, 0) for op in arch) * channels * channels
        macs += 5 * per_cell * size * size
    for c_in, c_out, size in ((16, 32, 16), (32, 64, 8)):  # reductions: conv_a (stride 2), conv_b, shortcut
        macs += (c_in * c_out * 9 + c_out * c_out * 9 + c_in * c_out) * size * size
    macs += 64 * 10  # the classifier
    got = ours(nb201.to_onnx(arch, num_classes=10), ["flops"], images(3))["flops"]
    assert got.value == macs


# ---------------------------------------------------------------- a small network built by hand


def small_model(relu: bool = True, pool: bool = True) -> onnx.ModelProto:
    """conv-BN-ReLU, conv-BN, + a 1x1 shortcut, ReLU, 3x3 average pool, global pool, Gemm."""
    rng = np.random.default_rng(1)

    def init(name, *shape):
        return helper.make_tensor(name, TensorProto.FLOAT, shape, rng.standard_normal(shape).astype(np.float32).ravel())

    act = "Relu" if relu else "Tanh"
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("BatchNormalization", ["c1", "g1", "b1", "m1", "v1"], ["n1"], name="bn1"),
        helper.make_node(act, ["n1"], ["r1"], name="act1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("BatchNormalization", ["c2", "g2", "b2", "m2", "v2"], ["n2"], name="bn2"),
        helper.make_node("Conv", ["x", "w3"], ["c3"], name="shortcut"),
        helper.make_node("Add", ["n2", "c3"], ["s"], name="add"),
        helper.make_node(act, ["s"], ["r2"], name="act2"),
        helper.make_node("AveragePool", ["r2"], ["p"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], name="pool"),
    ]
    if pool:
        nodes += [helper.make_node("GlobalAveragePool", ["p"], ["gp"], name="gap"),
                  helper.make_node("Flatten", ["gp"], ["f"], name="flatten")]
    else:
        nodes += [helper.make_node("Flatten", ["p"], ["f"], name="flatten")]
    features = 8 if pool else 8 * 8 * 8
    nodes.append(helper.make_node("Gemm", ["f", "w4", "b4"], ["y"], transB=1, name="head"))
    inits = [init("w1", 8, 3, 3, 3), init("w2", 8, 8, 3, 3), init("w3", 8, 3, 1, 1), init("w4", 5, features),
             init("b4", 5)] + [init(f"{k}{i}", 8) for i in (1, 2) for k in ("g", "b", "m")] \
        + [helper.make_tensor(f"v{i}", TensorProto.FLOAT, [8], np.ones(8, np.float32)) for i in (1, 2)]
    graph = helper.make_graph(nodes, "small", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 5])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def torch_small(weights: dict, x: torch.Tensor, relu: bool = True) -> dict:
    """The small model's layers in torch.nn.functional, BatchNorm on the batch's statistics."""
    act = torch.relu if relu else torch.tanh
    F = torch.nn.functional

    def bn(v, i):
        return F.batch_norm(v, None, None, weights[f"g{i}"], weights[f"b{i}"], training=True, eps=1e-5)

    out = {"c1": F.conv2d(x, weights["w1"], padding=1)}
    out["n1"] = bn(out["c1"], 1)
    out["r1"] = act(out["n1"])
    out["c2"] = F.conv2d(out["r1"], weights["w2"], padding=1)
    out["n2"] = bn(out["c2"], 2)
    out["c3"] = F.conv2d(x, weights["w3"])
    out["s"] = out["n2"] + out["c3"]
    out["r2"] = act(out["s"])
    out["p"] = F.avg_pool2d(out["r2"], 3, stride=1, padding=1, count_include_pad=False)  # ONNX AveragePool's default
    out["gp"] = out["p"].mean(dim=(2, 3), keepdim=True)
    return out


def test_meco_equals_the_reference_eigenvalues_on_a_small_network():
    model = small_model()
    batch = images(4, size=8)
    weights = weights_of(engine.initialised(model, "pytorch"))
    with torch.no_grad():
        layers = torch_small(weights, torch.from_numpy(batch[:1]))  # MeCo: one image
    expected = 0.0
    for name, value in layers.items():  # HamsterMimi/MeCo's hook, per layer output
        feature = value[0].reshape(value.shape[1], -1)
        with warnings.catch_warnings():  # one position (the global pool): every correlation is NaN
            warnings.simplefilter("ignore")
            corr = torch.corrcoef(feature.double())
        corr[torch.isnan(corr)] = 0
        corr[torch.isinf(corr)] = 0
        expected += float(torch.min(torch.real(torch.linalg.eigvals(corr))))
    got = ours(model, ["meco"], batch)["meco"]
    assert got.nan_reason is None
    assert got.value == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_naswot_and_zen_on_a_small_network():
    model = small_model()
    batch = images(16, size=8)
    weights = weights_of(engine.initialised(model, "pytorch"))
    with torch.no_grad():
        layers = torch_small(weights, torch.from_numpy(batch))
    kernel = np.zeros((16, 16))
    for name in ("n1", "s"):  # the two ReLUs' inputs
        c = (layers[name].reshape(16, -1) > 0).double().numpy()
        kernel += c @ c.T + (1 - c) @ (1 - c).T
    got = ours(model, ["naswot", "zen"], batch)
    assert got["naswot"].value == pytest.approx(np.linalg.slogdet(kernel)[1], rel=1e-9)

    gaussian = weights_of(engine.initialised(model, "gaussian"))
    x, mixed = zen_module.Zen().feeds(Context(batch, "x", ProxyOptions()))
    with torch.no_grad():
        first = torch_small(gaussian, torch.from_numpy(x))
        second = torch_small(gaussian, torch.from_numpy(mixed))
    response = (first["p"] - second["p"]).abs().sum(dim=(1, 2, 3)).mean()
    correction = 0.0
    for c in ("c1", "c2"):  # running_var after the two forwards, from 1, momentum 0.1, unbiased variances
        v1, v2 = (run[c].var(dim=(0, 2, 3), unbiased=True) for run in (first, second))
        correction += float(torch.log(torch.sqrt((0.81 + 0.09 * v1 + 0.1 * v2).mean())))
    assert got["zen"].value == pytest.approx(float(torch.log(response)) + correction, rel=1e-5)


# ---------------------------------------------------------------- NaN with its reason


def test_a_proxy_that_does_not_apply_says_why():
    got = ours(small_model(relu=False, pool=False), ["naswot", "zen", "meco", "params"], images(4, size=8))
    assert math.isnan(got["naswot"].value) and "no ReLU" in got["naswot"].nan_reason
    assert math.isnan(got["zen"].value) and "global average pooling" in got["zen"].nan_reason
    assert got["meco"].nan_reason is None and got["params"].value > 0


def test_token_models_get_a_reason_not_a_crash():
    from epsinas_onnx.spaces import nlp

    recipe = nlp.sample(1, seed=0)[0]
    model = nlp.to_onnx(recipe, vocab_size=50, emb=8, hidden=8)
    got = engine.compute(model, ["naswot", "zen", "meco", "params", "flops"], BatchOptions(batch_size=4, seq_len=5))
    for name in ("naswot", "zen", "meco"):
        assert math.isnan(got[name].value) and got[name].nan_reason
    assert got["params"].value > 0 and got["flops"].value > 0


# ---------------------------------------------------------------- initialisation, registry


def test_the_initialisations_follow_their_papers():
    model = engine.initialised(nb201.to_onnx(nb201.parse(ARCH), num_classes=10), "pytorch", seed=5)
    conv = model.graph.initializers["cells.0.edge_1_0.conv.weight"].const_value.numpy()
    assert np.abs(conv).max() <= 1 / math.sqrt(16 * 9) and np.abs(conv).max() > 0.9 / math.sqrt(16 * 9)
    head = model.graph.initializers["classifier.weight"].const_value.numpy()  # Gemm transB: [out, in]
    assert np.abs(head).max() <= 1 / math.sqrt(64)
    gamma = model.graph.initializers["cells.0.edge_1_0.bn.weight"].const_value.numpy()
    assert (gamma == 1).all()
    again = engine.initialised(nb201.to_onnx(nb201.parse(ARCH), num_classes=10), "pytorch", seed=5)
    assert np.array_equal(again.graph.initializers["cells.0.edge_1_0.conv.weight"].const_value.numpy(), conv)
    gaussian = engine.initialised(nb201.to_onnx(nb201.parse(ARCH), num_classes=10), "gaussian")
    values = gaussian.graph.initializers["cells.6.edge_1_0.conv.weight"].const_value.numpy()
    assert abs(values.std() - 1) < 0.05


def test_the_registry_refuses_a_second_proxy_of_one_name():
    assert set(registry.names()) >= {"params", "flops", "naswot", "zen", "meco"}
    registry.get("naswot")
    with pytest.raises(ValueError, match="registered twice"):
        register("naswot")(type("Another", (), {}))
    with pytest.raises(UserError, match="unknown proxy 'nope'"):
        registry.get("nope")
    with pytest.raises(UserError, match="choose among"):
        registry.parse_names("naswot,nope")
    assert registry.parse_names("zen, naswot,zen") == ("zen", "naswot")


def test_meco_on_a_constant_image_is_nan_with_its_reason_not_zero():
    # an all-zero image (the grey default, normalised) leaves every feature map constant: the
    # reference's undefined-correlations-0 would report MeCo 0, a number that ranks but means nothing
    got = ours(small_model(), ["meco"], np.zeros((4, 3, 8, 8), dtype=np.float32))
    assert math.isnan(got["meco"].value) and "constant over its positions" in got["meco"].nan_reason
    assert not math.isnan(ours(small_model(), ["meco"], images(4, size=8))["meco"].value)


def test_meco_layer_term_is_exactly_zero_where_the_correlation_is_singular():
    from epsinas_onnx.proxies.measures.meco import min_correlation_eigenvalue

    rng = np.random.default_rng(3)
    wide = rng.standard_normal((16, 3, 3)).astype(np.float32)  # 16 channels, 9 positions: rank <= 8
    assert min_correlation_eigenvalue(wide) == 0.0
    corr = np.corrcoef(wide.reshape(16, -1).astype(np.float64))
    assert abs(np.linalg.eigvalsh(corr)[0]) < 1e-12  # what the decomposition gives: 0 up to rounding
    tall = rng.standard_normal((4, 6, 6)).astype(np.float32)
    expected = np.linalg.eigvalsh(np.corrcoef(tall.reshape(4, -1).astype(np.float64)))[0]
    assert min_correlation_eigenvalue(tall) == expected > 0
    tall[2] = 1.5  # a constant channel: a zero row and column, so singular
    assert min_correlation_eigenvalue(tall) == 0.0



def test_batch_statistics_square_is_the_product_bit_for_bit():
    """proxies/batch_norm.py squares with Pow(x, 2) (kept off the NCHWc layout, so no reorder of the
    square): ONNX Runtime's Pow by 2 must give x * x exactly, or the proxies' values would move."""
    import onnxruntime as ort

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    graph = helper.make_graph([helper.make_node("Pow", ["x", "two"], ["y"])], "square", [x], [y], [two])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.standard_normal(1 << 16) * scale for scale in (1e-30, 1e-3, 1.0, 1e3, 1e18)])
    values = np.concatenate([values, [0.0, -0.0, 1e-45, np.inf, -np.inf]]).astype(np.float32)
    with np.errstate(over="ignore", under="ignore"):
        expected = values * values
    assert np.array_equal(session.run(None, {"x": values})[0].view(np.uint32), expected.view(np.uint32))
