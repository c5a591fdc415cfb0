"""What the scorer says about exports it cannot score by the reference
semantics: quantized graphs and weights computed at run time (BN folded into
the convs: tests/test_framework_models.py)."""

import math

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import epsinas_onnx
from epsinas_onnx.cli import main
from tests.conftest import ROOT
from tests.onnx_graphs import image_input, init, model, out


def head(nodes, inits, features: str):
    """A float classifier head after `features` (N, 2, H, W): its Gemm weight
    is an ordinary constant, so the model has something to score."""
    nodes += [helper.make_node("GlobalAveragePool", [features], ["pooled"]),
              helper.make_node("Flatten", ["pooled"], ["flat"]),
              helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["y"], transB=1)]
    inits += [init("fc.w", [1, 2]), init("fc.b", [1])]
    return model(nodes, [image_input()], [out("y", 2)], inits)


def test_weight_computed_at_run_time_is_reported():
    """Weight normalisation as exporters write it: W = g * v / ||v||, computed
    in the graph, so there is no constant W to set; it is left as computed."""
    nodes = [helper.make_node("ReduceL2", ["v"], ["norm"], axes=[1, 2, 3], keepdims=1),
             helper.make_node("Div", ["v", "norm"], ["direction"]),
             helper.make_node("Mul", ["direction", "g"], ["W"]),
             helper.make_node("Conv", ["x", "W"], ["c"])]
    proto = head(nodes, [init("v", [2, 3, 1, 1]), init("g", [2, 1, 1, 1])], "c")
    result = epsinas_onnx.score(proto, batch_size=4, device="cpu")
    assert any("1 weight(s) are computed at run time and left as computed" in w for w in result.warnings)
    assert not math.isnan(result.score)  # a number: the Gemm weight was set


def test_partly_quantized_model_is_reported():
    """A QDQ weight (int8 behind DequantizeLinear) is not rewritten: warned twice over."""
    nodes = [helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["W"]),
             helper.make_node("Conv", ["x", "W"], ["c"])]
    inits = [numpy_helper.from_array(np.arange(6, dtype=np.int8).reshape(2, 3, 1, 1), "w_q"),
             numpy_helper.from_array(np.array(0.1, dtype=np.float32), "w_scale"),
             numpy_helper.from_array(np.array(0, dtype=np.int8), "w_zero")]
    result = epsinas_onnx.score(head(nodes, inits, "c"), batch_size=4, device="cpu")
    assert any(w.startswith("the model is quantized") for w in result.warnings), result.warnings
    assert any("computed at run time" in w for w in result.warnings), result.warnings


def test_fully_quantized_model_is_one_clear_error(tmp_path, capsys):
    """onnxruntime.quantization.quantize_dynamic of a real export: every weight
    becomes int8 behind ConvInteger / MatMulInteger, nothing is left to set."""
    quantization = pytest.importorskip("onnxruntime.quantization")
    target = tmp_path / "resnet_int8.onnx"
    quantization.quantize_dynamic(ROOT / "models" / "torch_script_resnet.onnx", target)
    assert "ConvInteger" in {n.op_type for n in onnx.load(target).graph.node}
    assert main(["score", str(target), "--batch-size", "2"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no weights to set" in err[0] and "the model is quantized" in err[0], err
