"""zen: Zen-score (Lin et al., ICCV 2021), as NASLib computes it for
NAS-Bench-Suite-Zero (naslib/predictors/pruners/measures/zen.py, from
Zen-NAS's own code).

Weights N(0, 1), BatchNorm scale 1 and shift 0 (init.py, `gaussian`); x and
e two batches of Gaussian images N(0, 1) of BATCH images, the input's shape;
the network runs on x and on x + 0.01 e, each with its batch's statistics
in every BatchNorm (training mode). With f the feature map that the last
global average pooling reads:

    zen = log( mean over images of sum |f(x) - f(x + 0.01 e)| )
          + sum over BatchNorm layers of log sqrt( mean over channels of running_var )

running_var is what PyTorch's BatchNorm holds after those two forwards, from
its initial 1: m^2 + m (1 - m) v1 + (1 - m) v2, v1 and v2 the unbiased
batch variances of the layer's input in the two runs (the probe reads the
biased ones the batch statistics normalise with, batch_norm.py), m the node's
momentum (ONNX's convention, 0.9 by default: PyTorch's momentum 0.1). Batch
16, Zen-NAS's own; one repeat, as NASLib computes the published
NAS-Bench-201 values (Zen-NAS averages 32 repeats, 32 times the cost).

NaN: token inputs; no global average pooling (GlobalAveragePool, or a
ReduceMean over every spatial axis) to read the feature map before; a feature
map that the perturbation leaves unchanged (log 0).
"""

from __future__ import annotations

import math

import numpy as np
import onnx_ir as ir

from epsinas_onnx.core.rewriting.passes.build import node
from epsinas_onnx.proxies.graph import expose, is_added, output_of, rank
from epsinas_onnx.proxies.proxy import NotApplicable, Outcome, Probe, Proxy, register

BATCH = 16  # Zen-NAS's own (ZeroShotProxy/compute_zen_score.py, --batch_size 16)
MIXUP = 0.01  # the perturbation's scale (mixup_gamma)
ONNX_MOMENTUM = 0.9  # BatchNormalization's default momentum attribute


@register("zen")
class Zen(Proxy):
    summary = "log of the pre-pooling feature map's response to a small input perturbation, plus BN scaling (Lin et al. 2021)"
    init = "gaussian"

    def settings(self, options) -> dict:
        return {"seed": options.seed, "init": self.init, "batch": BATCH, "mixup": MIXUP}

    def probe(self, model) -> Probe:
        graph = model.graph
        pooled = [n for n in graph if not is_added(n) and _is_global_average(n)]
        if not pooled:
            raise NotApplicable("no global average pooling: Zen-score reads the feature map it pools")
        outputs = [expose(graph, pooled[-1].inputs[0], "zen.features")]
        momenta = []
        for bn in [n for n in graph if n.op_type == "BatchNormalization" and not is_added(n)]:
            momentum = bn.attributes.get("momentum")
            momenta.append(momentum.as_float() if momentum is not None else ONNX_MOMENTUM)
            outputs += _variance_outputs(graph, bn)
        return Probe(outputs, {"momenta": momenta})

    def feeds(self, context) -> list[np.ndarray]:
        images = context.images(self.name)
        rng = context.rng("zen inputs")
        shape = (BATCH, *images.shape[1:])
        x = rng.standard_normal(shape, dtype=np.float32)
        e = rng.standard_normal(shape, dtype=np.float32)
        return [x, x + np.float32(MIXUP) * e]

    def value(self, probe, fetched, context) -> Outcome:
        first, second = fetched
        f1, f2 = first[0].astype(np.float64), second[0].astype(np.float64)
        if f1.ndim < 2:
            return Outcome.nan(f"the pooled feature map has rank {f1.ndim}; Zen-score needs examples first")
        response = np.abs(f1 - f2).reshape(f1.shape[0], -1).sum(axis=1).mean()
        if not response > 0 or not math.isfinite(response):
            return Outcome.nan(f"the feature map's response to the perturbation is {response:g}: log is not finite")
        correction = 0.0
        for i, m in enumerate(probe.info["momenta"]):  # each BN: (variance, its input's size) in both runs
            v1, v2 = (_unbiased(run[1 + 2 * i], run[2 + 2 * i]) for run in (first, second))
            running = m * m + m * (1 - m) * v1 + (1 - m) * v2
            correction += math.log(math.sqrt(float(np.mean(running))))
        value = math.log(response) + correction
        if not math.isfinite(value):
            return Outcome.nan("a BatchNorm's running variance is not finite")
        return Outcome(value)


def _unbiased(variance: np.ndarray, size: np.ndarray) -> np.ndarray:
    """PyTorch's running_var update uses the unbiased variance, n / (n - 1) times the biased one;
    n, the elements per channel, is the BN input's size over its channels (one variance each)."""
    n = float(int(np.asarray(size).reshape(-1)[0]) // variance.size)
    return variance.astype(np.float64) * (n / (n - 1) if n > 1 else 1.0)


def _is_global_average(n) -> bool:
    if n.op_type == "GlobalAveragePool":
        return True
    if n.op_type != "ReduceMean":
        return False
    r = rank(n.inputs[0])
    if r is None or r < 3:
        return False
    axes_attr = n.attributes.get("axes")
    if axes_attr is not None:
        axes = axes_attr.as_ints()
    elif len(n.inputs) > 1 and n.inputs[1] is not None and n.inputs[1].const_value is not None:
        axes = n.inputs[1].const_value.numpy().tolist()
    else:
        return False
    return sorted(a % r for a in axes) == list(range(2, r))


def _variance_outputs(graph: ir.Graph, bn: ir.Node) -> list[str]:
    """The biased batch variance per channel that `bn` normalises with (its input 4,
    after TrainingBatchNormPass) and its input's element count, as two graph
    outputs (the count per channel is their quotient: one Size node, not the
    Shape, Slice and Div that would compute it in the graph)."""
    size = node("Size", [bn.inputs[0]])
    return [expose(graph, bn.inputs[4], "zen.variance", ir.DataType.FLOAT),
            output_of(graph, size, "zen.size", ir.DataType.INT64)]
