"""Export a torch module the way a user would, keeping BatchNorm nodes."""

import contextlib
import io
import warnings

import torch


def export_onnx(module: torch.nn.Module, example: torch.Tensor, path, dynamic_batch: bool = True,
                optimize: bool = False) -> None:
    """optimize=True is torch's default, which folds BatchNorm into the convs."""
    module.eval()
    dynamic = ({0: torch.export.Dim("batch")},) if dynamic_batch else None
    # the exporter reports progress on stdout and warns about optional packages
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), str(path), dynamo=True, optimize=optimize,
                          dynamic_shapes=dynamic, external_data=False)
