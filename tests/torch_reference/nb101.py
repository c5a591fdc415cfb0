"""NAS-Bench-101 reference network for the tests.

The network itself is the independent PyTorch implementation of the PyPI
package nasbench-pytorch==1.3.1 (romulus0914/NASBench-PyTorch, Apache-2.0),
which ports the official model_builder.py / model_spec.py: it prunes the cell
with its own ModelSpec. Install it without its (unpinned) dependencies:

    pip install --no-deps nasbench-pytorch==1.3.1

This file only adds what the package lacks: BatchNorm with batch statistics
(as the reference epsinas code runs it) and the correspondence between its
parameter names and the exporter's initialiser names.
"""

from __future__ import annotations

import re

import numpy as np
from nasbench_pytorch.model import Network
from torch import nn


def make_network(arch, num_classes: int = 1, batch_stats: bool = True) -> nn.Module:
    """nasbench-pytorch's Network for arch = (matrix, ops); with batch_stats,
    every BatchNorm normalises with the current batch's statistics, also in
    eval mode (track_running_stats=False, no running buffers)."""
    matrix, ops = arch
    net = Network((np.array(matrix), list(ops)), num_labels=num_classes)
    if batch_stats:
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.track_running_stats = False
                m.running_mean = None
                m.running_var = None
                m.num_batches_tracked = None
    return net


# Parameters of the package that do nothing in the forward pass: the weightless
# `Placeholder` modules carry a scalar `a`, every Cell an empty `dev_param`.
UNUSED = re.compile(r"(\.a|\.dev_param|\.num_batches_tracked)$")


def float64_score(arch, x, weights) -> float:
    """The exact score of `arch` (its float64 PyTorch network, the float64 formula)."""
    from tests.torch_reference.metric import float64_score as score

    return score(lambda: make_network(arch, num_classes=1, batch_stats=True), x, weights)


def onnx_names(net: nn.Module) -> dict[str, str]:
    """nasbench-pytorch state_dict key -> the exporter's initialiser name, for
    every key used in the forward pass."""
    cell_number = {layer: i for i, layer in enumerate(sorted(net.cell_indices))}
    bn_or_conv = {"0": "conv", "1": "bn"}
    names = {}
    for key in net.state_dict():
        if UNUSED.search(key) or ".last_inop." in key:  # last_inop: an alias of input_op[-1]
            continue
        if key.startswith("classifier."):
            names[key] = key
        elif m := re.fullmatch(r"layers\.0\.conv_bn_relu\.([01])\.(\w+)", key):
            names[key] = f"stem.{bn_or_conv[m[1]]}.{m[2]}"
        elif m := re.fullmatch(r"layers\.(\d+)\.input_op\.(\d+)\.conv_bn_relu\.([01])\.(\w+)", key):
            cell = cell_number[int(m[1])]
            names[key] = f"cells.{cell}.input_proj_{m[2]}.{bn_or_conv[m[3]]}.{m[4]}"
        elif m := re.fullmatch(r"layers\.(\d+)\.vertex_op\.(\d+)\.conv[13]x[13]\.conv_bn_relu\.([01])\.(\w+)", key):
            cell = cell_number[int(m[1])]
            names[key] = f"cells.{cell}.vertex_{m[2]}.{bn_or_conv[m[3]]}.{m[4]}"
        else:
            raise KeyError(f"unexpected nasbench-pytorch parameter {key}")
    return names
