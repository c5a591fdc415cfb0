"""Score a PyTorch nn.Module directly: export it to ONNX as docs/exporting.md
documents ("Exporting your own models so the score is meaningful"), into a
temporary folder, and score that file with the usual scorer.

    import torch, epsinas_onnx.torch
    result = epsinas_onnx.torch.score(model, torch.zeros(1, 3, 32, 32), weights=(1e-7, 1.0))

Needs the `export` extra (torch 2.13 and onnxscript, the dynamo exporter's
ONNX library). torch is imported here only, when a function is called, so
`import epsinas_onnx` never needs it.
"""

from __future__ import annotations

import importlib

from epsinas_onnx.core.errors import UserError, first_line
from epsinas_onnx.bridges.framework_export import quiet, score_exported
from epsinas_onnx.core.scoring.scorer import DEFAULT_WEIGHTS, ScoreResult

EXTRA_HINT = 'pip install "epsinas-onnx[export]"'


def score(module, example_batch, data=None, weights=DEFAULT_WEIGHTS, **settings) -> ScoreResult:
    """The epsinas score of `module`, exported as export() does.

    example_batch: a tensor (or array) the module takes, or its shape as a
    tuple of ints (a zero float32 batch); it only shapes the export (the batch
    dim is exported as dynamic). data and the keyword settings are
    epsinas_onnx.score's: the batch scored is `data` (a path, an array or a
    tensor), or the default batch when it is None. Raises UserError when
    torch is missing or neither exporter can export the module.
    """
    torch = _import_torch()
    if torch.is_tensor(data):
        data = data.detach().cpu().numpy()
    return score_exported(lambda path: export(module, example_batch, path), data, weights, settings)


def export(module, example_batch, path) -> list[str]:
    """Write `module` to `path` as ONNX with BatchNormalization kept: the
    dynamo exporter with optimize=False (its default optimize=True folds BN
    into the convs) and a dynamic batch dim; if it fails, the TorchScript
    exporter with TrainingMode.PRESERVE (in eval mode it would fold BN too).
    The module is exported in eval mode and left in the modes it was in.
    Returns the warnings to report (why the fallback was used), if any."""
    torch = _import_torch()
    if not isinstance(module, torch.nn.Module):
        raise UserError(f"expected a torch.nn.Module to score, got {type(module).__name__}")
    example = _example_tensor(torch, example_batch)
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        try:
            with quiet():
                torch.onnx.export(module, (example,), str(path), dynamo=True, optimize=False,
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
            return []
        except Exception as exc:  # any failure of the dynamo exporter: try the older one
            dynamo_error = first_line(exc.__cause__ or exc)  # the cause: torch.export's own words
        try:
            with quiet():
                torch.onnx.export(module, (example,), str(path), dynamo=False,
                                  training=torch.onnx.TrainingMode.PRESERVE,
                                  input_names=["input"], dynamic_axes={"input": {0: "batch"}})
        except Exception as exc:
            raise UserError(f"the module cannot be exported to ONNX: the dynamo exporter says '{dynamo_error}', "
                            f"the TorchScript exporter '{first_line(exc)}'") from None
        return [f"the dynamo exporter failed ({dynamo_error}); exported with the TorchScript exporter "
                "(training=TrainingMode.PRESERVE) instead"]
    finally:
        for m, training in modes:
            m.training = training


def module_from_factory(spec: str, kwargs: dict | None = None):
    """The nn.Module that `package.module:callable` returns, called with
    kwargs: a class or a function, e.g. torchvision.models:resnet18."""
    torch = _import_torch()
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise UserError(f"a factory is MODULE:CALLABLE (e.g. torchvision.models:resnet18), not {spec!r}")
    try:
        target = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or whatever the module raises while importing
        raise UserError(f"cannot import {module_name} for {spec} ({type(exc).__name__}: {first_line(exc)})") from None
    for name in attribute.split("."):
        if not hasattr(target, name):
            raise UserError(f"{module_name} has no {attribute} (check the name after the colon in {spec})")
        target = getattr(target, name)
    if not callable(target):
        raise UserError(f"{spec} is not callable: it must be a class or a function that returns an nn.Module")
    try:
        module = target(**(kwargs or {}))
    except Exception as exc:
        raise UserError(f"calling {spec} with {kwargs or {}} failed ({type(exc).__name__}: {first_line(exc)})") from None
    if not isinstance(module, torch.nn.Module):
        raise UserError(f"{spec} returned a {type(module).__name__}, not a torch.nn.Module")
    return module


def _example_tensor(torch, example_batch):
    if isinstance(example_batch, tuple) and all(isinstance(d, int) for d in example_batch):
        if not example_batch or min(example_batch) < 1:
            raise UserError(f"an input shape needs positive dims, not {example_batch}")
        return torch.zeros(example_batch)
    try:
        example = example_batch if torch.is_tensor(example_batch) else torch.as_tensor(example_batch)
    except (TypeError, ValueError, RuntimeError):
        raise UserError(f"the example batch must be a tensor, an array or a shape (a tuple of ints), "
                        f"not a {type(example_batch).__name__}") from None
    if example.ndim < 1:
        raise UserError("the example batch needs a batch dim (it is a scalar)")
    return example


def _import_torch():
    try:
        import onnxscript  # noqa: F401  (the dynamo exporter writes its graphs with it)
        import torch
    except ImportError as exc:
        raise UserError(f"scoring a PyTorch module needs torch and onnxscript ({exc.name} is missing): {EXTRA_HINT}") from None
    return torch
