"""meco: MeCo (Jiang et al., NeurIPS 2023), the minimum eigenvalue of the
correlation of each layer's feature maps, from one image and one forward pass.

The network runs on one image (a batch of 1, the first of the batch; BatchNorm
on that batch's statistics, as the reference's network in training mode) with
PyTorch's default initialisation (init.py, `pytorch`). For every layer's output
Y of rank >= 3 (C channels first after the batch axis), the C x C Pearson
correlation of its channels over the positions of Y[0]; undefined entries (a
constant channel) are 0, as in the reference; the layer contributes the
smallest eigenvalue of that matrix, and MeCo is the sum over the layers.

A layer here is a node of the graph: Conv, BatchNormalization, Relu, pooling,
Add / Sum, ... every node whose output is a feature map. The reference hooks
every PyTorch module instead (HamsterMimi/MeCo, correlation/NAS_Bench_201.py),
so a feature map that several modules return (a Sequential and its last layer,
an Identity edge) counts there once per module, here once; a layer of rank 2
(pooled features, logits) contributes 0 in both (one observation per channel).

The probe adds a Slice of the first example of each layer output, so that the
same session also serves a proxy's batch of 128 for the price of a copy of
one image per layer.

NaN: token inputs; no feature map of rank >= 3 in the model; every channel of
every feature map constant over its positions (a constant image: the
reference's undefined-entries-0 would make MeCo 0 there).
"""

from __future__ import annotations


import numpy as np

from epsinas_onnx.core.rewriting.passes.build import constant, node
from epsinas_onnx.proxies.graph import add_nodes, is_added, output_of, rank
from epsinas_onnx.proxies.proxy import NotApplicable, Outcome, Probe, Proxy, register

FLOAT_TYPES = ("FLOAT", "FLOAT16", "DOUBLE", "BFLOAT16")


@register("meco")
class Meco(Proxy):
    summary = "sum over layers of the minimum eigenvalue of the channel correlation of one image's feature maps (Jiang et al. 2023)"
    init = "pytorch"

    def settings(self, options) -> dict:
        return {"seed": options.seed, "init": self.init, "batch": 1}

    def probe(self, model) -> Probe:
        graph = model.graph
        maps = [value for n in list(graph) if not is_added(n) and n.op_type not in ("Constant", "Shape", "Size")
                for value in n.outputs
                if value.dtype is not None and value.dtype.name in FLOAT_TYPES and (rank(value) or 0) >= 3]
        if not maps:
            raise NotApplicable("no feature map of rank >= 3 in the model (MeCo correlates a layer's channels "
                                "over its positions)")
        start = constant(np.array([0], dtype=np.int64))
        stop = constant(np.array([1], dtype=np.int64))
        add_nodes(graph, [start, stop])
        outputs = [output_of(graph, node("Slice", [value, start.outputs[0], stop.outputs[0], start.outputs[0]]),
                             "meco", value.dtype) for value in maps]
        return Probe(outputs)

    def feeds(self, context) -> list[np.ndarray]:
        return [context.images(self.name)[:1]]

    def value(self, probe, fetched, context) -> Outcome:
        maps = [m[0] for m in fetched[0]]
        if not any(varies_over_positions(m) for m in maps):
            # the reference's nan-to-0 would give MeCo = 0 here, a number that ranks but means nothing
            return Outcome.nan("every channel of every feature map is constant over its positions (a constant "
                               "input image, such as the grey default): no correlation is defined; give --data images")
        return Outcome(float(sum(min_correlation_eigenvalue(m) for m in maps)))


def varies_over_positions(feature_map: np.ndarray) -> bool:
    """Whether any channel (the first axis) of `feature_map` takes two values."""
    rows = feature_map.reshape(feature_map.shape[0], -1)
    return rows.shape[1] >= 2 and bool(np.any(rows.max(axis=1) > rows.min(axis=1)))


def min_correlation_eigenvalue(feature_map: np.ndarray) -> float:
    """The smallest eigenvalue of the channels' Pearson correlation matrix
    (channels = the first axis of `feature_map`), undefined entries 0.

    The matrix is positive semi-definite (a correlation matrix, with zero rows
    and columns for constant channels), and singular when a channel is
    constant or when there are at least as many channels as positions (the
    centred rows lie in a space of dimension positions - 1): its smallest
    eigenvalue is then exactly 0, which is returned without the O(C^3)
    eigendecomposition that would give 0 up to rounding (NAS-Bench-101's
    512-channel maps at 8 x 8 positions: most of MeCo's arithmetic)."""
    channels = feature_map.shape[0]
    rows = feature_map.reshape(channels, -1)
    positions = rows.shape[1]
    if channels < 1 or positions < 2:  # one position: every correlation undefined, the matrix 0
        return 0.0
    if channels >= positions or np.any(rows.max(axis=1) == rows.min(axis=1)):
        return 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = np.atleast_2d(np.corrcoef(rows.astype(np.float64)))
    return float(np.linalg.eigvalsh(corr)[0])
