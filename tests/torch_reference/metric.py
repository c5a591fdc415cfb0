"""The epsinas score as the reference code computes it, in torch float32.

Written independently of epsinas_onnx.core.scoring.metric so the two can be compared.
"""

import torch
from torch import nn


def reference_score(out_low: torch.Tensor, out_high: torch.Tensor) -> float:
    rows = []
    for y in (out_low, out_high):
        y = y.detach().reshape(-1).to(torch.float32)
        lo = torch.min(y[~torch.isnan(y)])
        hi = torch.max(y[~torch.isnan(y)])
        rows.append((y - lo) / (hi - lo))
    p = torch.stack(rows)
    p[p == 0] = float("nan")
    mae = torch.abs(p[0] - p[1])
    return float(torch.nanmean(mae) / torch.nanmean(p))


def init_reference(module: nn.Module, w: float, bn_gamma: str = "w") -> None:
    """Constant shared weight w on conv / linear / norm gamma, zero biases,
    as the reference code initialises every module with a `weight`."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Linear)):
                m.weight.fill_(w)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)):
                if getattr(m, "weight", None) is not None:
                    m.weight.fill_(w if bn_gamma == "w" else 1.0)
                if getattr(m, "bias", None) is not None:
                    m.bias.zero_()


def torch_score(make_module, x: torch.Tensor, weights=(1e-7, 1.0)) -> float:
    """Build the module twice (batch-statistics BN), initialise each with one
    weight, forward x, score the two outputs."""
    outs = []
    for w in weights:
        m = make_module()
        init_reference(m, w)
        m.eval()
        with torch.no_grad():
            outs.append(m(x))
    return reference_score(outs[0], outs[1])


def float64_score(make_module, x, weights) -> float:
    """The exact score: the module in float64, the formula in float64 (numpy
    x in, any float dtype)."""
    import numpy as np

    outputs = []
    for w in weights:
        m = make_module().double()
        init_reference(m, w)
        m.eval()
        with torch.no_grad():
            y = m(torch.from_numpy(np.asarray(x)).double()).numpy().ravel()
        outputs.append((y - y.min()) / (y.max() - y.min()))
    p = np.stack(outputs)
    p[p == 0] = np.nan
    return float(np.nanmean(np.abs(p[0] - p[1])) / np.nanmean(p))
