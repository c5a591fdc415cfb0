"""params: the number of trainable parameters, counted from the graph.

Every element of the constant tensors that are a layer's weight, bias,
normalisation scale or shift, or an embedding table (the roles of
core/rewriting/roles.py); normalisation statistics, shapes and other
constants are not parameters. A tensor read by several layers counts once,
as PyTorch's parameters() does. An exporter that folds BatchNorm into the
preceding convolution (torch.onnx's default optimisation) leaves fewer
parameters than the PyTorch module had.
"""

from __future__ import annotations

import numpy as np

from epsinas_onnx.core.rewriting.roles import Role, classify_model
from epsinas_onnx.proxies.proxy import Outcome, Proxy, register

PARAMETER_ROLES = (Role.WEIGHT, Role.BIAS, Role.NORM_SCALE, Role.NORM_BIAS, Role.EMBEDDING)


@register("params")
class Params(Proxy):
    summary = "trainable parameters counted from the graph (weights, biases, norm scales and shifts, embeddings)"

    def measure(self, model, context) -> Outcome:
        total = sum(int(np.prod(entry.shape, dtype=np.int64)) for entry in classify_model(model)
                    if entry.role in PARAMETER_ROLES)
        return Outcome(float(total))
