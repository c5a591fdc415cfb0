"""Export PyTorch models the ways users do, and record what each should score.

    python exporters/make_framework_models.py      # needs the `export` extra (torch 2.13)

For each network (tests/torch_reference: a ResNet-style CNN, a MobileNetV2-
style CNN with depthwise convs, an nn.LSTM and an nn.GRU language model with
nn.Embedding, a Transformer encoder) and each exporter:

- torch_dynamo_<net>.onnx: torch.onnx.export(dynamo=True, optimize=False);
  optimize=False keeps BatchNormalization nodes (the default optimize=True
  folds them into the convs).
- torch_script_<net>.onnx: the older TorchScript exporter, torch.onnx.export(
  dynamo=False, training=torch.onnx.TrainingMode.PRESERVE); in eval mode the
  TorchScript exporter folds BN into the convs, PRESERVE keeps it.

Every parameter is randomised before export (the values then identify each
tensor, see _common.expected_roles). The expected score is computed by torch
itself on a fresh network with the reference initialisation
(tests/torch_reference/sequence.init_reference_all, batch-statistics BN) and
written to expected_scores.json with the expected role of every tensor.
"""

from __future__ import annotations

import contextlib
import io
import sys
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # the test networks live in the project
sys.path.insert(0, str(HERE))
SHARED_DATA = ROOT.parent / "shared" / "data"
MODELS = ROOT / "models"  # where the exported models and expected_scores.json live

import onnx  # noqa: E402
import torch  # noqa: E402

from _common import cifar10_nchw, default_tokens, expected_roles, update_expected  # noqa: E402
from _common import reference_score as numpy_reference_score  # noqa: E402
from tests.torch_reference.cnns import TinyMobileNet, TinyResNet  # noqa: E402
from tests.torch_reference.metric import reference_score  # noqa: E402
from tests.torch_reference.sequence import RNNLM, TinyTransformer, expected_role, init_reference_all  # noqa: E402

WEIGHT_PAIRS = [(1e-7, 1.0), (1e-4, 10.0), (1e-5, 1e-3)]  # the three reference pairs
IMAGE_BATCH = 16
TOKEN_BATCH, SEQ_LEN, VOCAB = 8, 12, 50

# name -> (factory(export: bool), input kind, token layout)
NETS = {
    "resnet": (lambda export: TinyResNet(track=export), "images", None),
    "mobilenet": (lambda export: TinyMobileNet(track=export), "images", None),
    "lstm_lm": (lambda export: RNNLM("lstm", vocab=VOCAB), "tokens", "seq-first"),
    "gru_lm": (lambda export: RNNLM("gru", vocab=VOCAB), "tokens", "seq-first"),
    "transformer": (lambda export: TinyTransformer(vocab=VOCAB), "tokens", "batch-first"),
}


# Scores that float32 cannot reproduce, and why (the test checks the reason
# against score_float64 instead of comparing the float32 scores).
NOT_COMPARABLE = {
    "transformer": (
        "with constant weights every Linear that reads a LayerNorm output computes w * sum(LayerNorm(x)) * w, "
        "and a LayerNorm output sums to 0 over the features: attention and feed-forward outputs are float32 "
        "rounding noise, so the float32 score is noise too (torch's own fast and slow paths disagree); in "
        "float64 the score is ~0 (score_float64)"
    ),
}


def example_and_axes(kind: str, layout: str | None):
    """An example input, its dynamic dims for each exporter."""
    if kind == "images":
        return torch.randn(2, 3, 32, 32), {0: "batch"}
    # The TorchScript exporter bakes the example's sequence length into
    # nn.MultiheadAttention's reshapes (dynamic_axes notwithstanding): the
    # example has the length the models are scored at.
    if layout == "seq-first":
        return torch.randint(0, VOCAB, (SEQ_LEN, 3)), {0: "seq", 1: "batch"}
    return torch.randint(0, VOCAB, (3, SEQ_LEN)), {0: "batch", 1: "seq"}


def export(module: torch.nn.Module, example: torch.Tensor, axes: dict, path: Path, exporter: str) -> None:
    """exporter: dynamo, script, or script_opset16 (TorchScript at opset 16,
    below LayerNormalization's opset 17: LayerNorm is written out in
    ReduceMean / Sub / Pow / Sqrt / Div / Mul / Add)."""
    module.eval()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            dims = {axis: torch.export.Dim(name) for axis, name in axes.items()}
            torch.onnx.export(module, (example,), str(path), dynamo=True, optimize=False,
                              dynamic_shapes=(dims,), external_data=False)
        else:
            torch.onnx.export(module, (example,), str(path), dynamo=False,
                              training=torch.onnx.TrainingMode.PRESERVE, input_names=["input"],
                              output_names=["output"], dynamic_axes={"input": axes},
                              **({"opset_version": 16} if exporter == "script_opset16" else {}))


def randomise(module: torch.nn.Module) -> dict[str, tuple[np.ndarray, str]]:
    """Distinct random values in every float parameter and buffer; returns
    name -> (values, expected role)."""
    params = {}
    with torch.no_grad():
        for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
            role = expected_role(module, name)
            if role is None or not tensor.is_floating_point():
                continue
            tensor.copy_(torch.randn_like(tensor))
            if name.endswith("running_var"):
                tensor.abs_().add_(0.5)
            params[name] = (tensor.detach().numpy().copy(), role)
    return params


def reference_input(kind: str, layout: str | None) -> tuple[torch.Tensor, dict]:
    """The batch and the epsinas_onnx.score arguments that give the same batch."""
    if kind == "images":
        batch = torch.from_numpy(cifar10_nchw(SHARED_DATA, IMAGE_BATCH))
        return batch, {"data": "inputs/cifar10_test_1000.npz", "batch_size": IMAGE_BATCH, "norm": "cifar10"}
    tokens = default_tokens(VOCAB, SEQ_LEN, TOKEN_BATCH, seed=0)
    if layout == "batch-first":
        tokens = tokens.T
    kwargs = {"batch_size": TOKEN_BATCH, "seq_len": SEQ_LEN, "seed": 0, "token_layout": layout}
    return torch.from_numpy(np.ascontiguousarray(tokens)), kwargs


def torch_scores(factory, batch: torch.Tensor) -> list[dict]:
    """The reference score for each pair (float32, as the reference computes
    it) and the same computed in float64 throughout."""
    torch.set_num_threads(1)
    rows = []
    for pair in WEIGHT_PAIRS:
        row = {"weights": list(pair)}
        for dtype, key in ((torch.float32, "score"), (torch.float64, "score_float64")):
            outs = []
            for w in pair:
                torch.manual_seed(0)
                module = factory(False).to(dtype)
                init_reference_all(module, w)
                module.eval()
                with torch.no_grad():
                    outs.append(module(batch if not batch.is_floating_point() else batch.to(dtype)))
            if dtype == torch.float32:
                value = reference_score(outs[0], outs[1])
            else:
                value = numpy_reference_score(outs[0].numpy(), outs[1].numpy(), dtype=np.float64)
            row[key] = None if np.isnan(value) else value
        rows.append(row)
    return rows


def main() -> None:
    entries = {}
    for net, (factory, kind, layout) in NETS.items():
        batch, score_kwargs = reference_input(kind, layout)
        scores = torch_scores(factory, batch)
        for exporter in ("dynamo", "script") + (("script_opset16",) if net == "transformer" else ()):
            torch.manual_seed(0)
            module = factory(True)
            params = randomise(module)
            example, axes = example_and_axes(kind, layout)
            path = MODELS / f"torch_{exporter}_{net}.onnx"
            export(module, example, axes, path, exporter)
            model = onnx.load(path)
            entries[path.name] = {
                "framework": f"torch {torch.__version__}",
                "exporter": {
                    "dynamo": "torch.onnx.export(dynamo=True, optimize=False)",
                    "script": "torch.onnx.export(dynamo=False, training=TrainingMode.PRESERVE)",
                    "script_opset16": "torch.onnx.export(dynamo=False, training=TrainingMode.PRESERVE, opset_version=16)",
                }[exporter],
                "score_kwargs": score_kwargs,
                "expected": scores,
                "roles": expected_roles(model, params),
            }
            if net in NOT_COMPARABLE:
                entries[path.name]["not_comparable"] = NOT_COMPARABLE[net]
            print(f"{path.name}: {path.stat().st_size} bytes, scores {[s['score'] for s in scores]}")
    update_expected(entries, f"python exporters/make_framework_models.py  (torch {torch.__version__})")


if __name__ == "__main__":
    main()
