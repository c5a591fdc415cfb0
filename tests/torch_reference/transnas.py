"""TransNAS-Bench-101's MacroNet with the classification decoder, in PyTorch,
written from the benchmark's own code (yawen-d/TransNASBench:
lib/models/net_infer/net_macro.py, cell_micro.py, net_ops/cell_ops.py,
task_models/decoder.py FFDecoder): micro cells (`64-41414-a_bc_def`) and
ResNet basic blocks (`64-<digits>-basic`).

Independent of epsinas_onnx/spaces/tnb_micro.py and tnb_macro.py: it parses
the net code itself, builds every edge of a cell (zero edges included, as
Zero modules) and sums a node's edges in the benchmark's order
(torch.stack(...).sum(0)). Module names are chosen so that state_dict keys
equal the exporter's initialiser names (`cells.3.edge_2_0.conv.weight`,
`layer1.0.downsample.conv.weight`, `decoder.fc.weight`, ...).
"""

import torch
from torch import nn


class ReLUConvBN(nn.Module):
    def __init__(self, c_in, c_out, kernel, stride, track):
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, track_running_stats=track)

    def forward(self, x):
        return self.bn(self.conv(self.relu(x)))


class Zero(nn.Module):
    """cell_ops.Zero, as written there."""

    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.c_in, self.c_out, self.stride = c_in, c_out, stride

    def forward(self, x):
        if self.c_in == self.c_out:
            if self.stride == 1:
                return x.mul(0.0)
            return x[:, :, ::self.stride, ::self.stride].mul(0.0)
        shape = list(x.shape)
        shape[1], shape[2], shape[3] = self.c_out, (shape[2] + 1) // self.stride, (shape[3] + 1) // self.stride
        return x.new_zeros(shape)


class Identity(nn.Module):
    def forward(self, x):
        return x


class FactorizedReduce(nn.Module):
    """cell_ops.FactorizedReduce: ReLU, two 1x1 convs (the second on the map
    padded at the end and shifted by one), concatenated, BN."""

    def __init__(self, c_in, c_out, stride, track):
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        halves = [c_out // 2, c_out - c_out // 2]
        self.convs = nn.ModuleList([nn.Conv2d(c_in, h, 1, stride=stride, padding=0, bias=False) for h in halves])
        self.pad = nn.ConstantPad2d((0, 1, 0, 1), 0)
        self.bn = nn.BatchNorm2d(c_out, track_running_stats=track)

    def forward(self, x):
        x = self.relu(x)
        y = self.pad(x)
        return self.bn(torch.cat([self.convs[0](x), self.convs[1](y[:, :, 1:, 1:])], dim=1))


def make_op(digit, c_in, c_out, stride, track):
    if digit == "0":
        return Zero(c_in, c_out, stride)
    if digit == "1":
        return Identity() if stride == 1 and c_in == c_out else FactorizedReduce(c_in, c_out, stride, track)
    return ReLUConvBN(c_in, c_out, 1 if digit == "2" else 3, stride, track)


class MicroCell(nn.Module):
    def __init__(self, cell_code, c_in, c_out, stride, track):
        """cell_code: ['', 'a', 'bc', 'def']: node j's ops from nodes 0..j-1."""
        super().__init__()
        self.cell_code = cell_code
        for node in range(1, len(cell_code)):
            for src, digit in enumerate(cell_code[node]):
                op = make_op(digit, c_in, c_out, stride, track) if src == 0 else make_op(digit, c_out, c_out, 1, track)
                self.add_module(f"edge_{node}_{src}", op)

    def forward(self, x):
        nodes = [x]
        for node in range(1, len(self.cell_code)):
            terms = [getattr(self, f"edge_{node}_{src}")(nodes[src]) for src in range(node)]
            nodes.append(torch.stack(terms).sum(0))
        return nodes[-1]


class ResNetBasicblock(nn.Module):
    def __init__(self, c_in, planes, stride, track):
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, planes, 3, stride, track)
        self.conv_b = ReLUConvBN(planes, planes, 3, 1, track)
        self.downsample = None
        if stride != 1 or c_in != planes:
            self.downsample = nn.Sequential()
            self.downsample.add_module("conv", nn.Conv2d(c_in, planes, 1, stride=stride, padding=0, bias=False))
            self.downsample.add_module("bn", nn.BatchNorm2d(planes, track_running_stats=track))

    def forward(self, x):
        feature = self.conv_b(self.conv_a(x))
        residual = x if self.downsample is None else self.downsample(x)
        return residual + feature


class Stem(nn.Module):
    def __init__(self, base, track):
        super().__init__()
        self.conv = nn.Conv2d(3, base // 2, 3, stride=2, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(base // 2, track_running_stats=track)
        self.relu_conv_bn = ReLUConvBN(base // 2, base, 3, 2, track)

    def forward(self, x):
        return self.relu_conv_bn(self.bn(self.conv(x)))


class Decoder(nn.Module):
    """FFDecoder: AdaptiveAvgPool2d(1), flatten, Linear."""

    def __init__(self, channels, num_classes):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.avgpool(x), 1))


class MacroNet(nn.Module):
    """MacroNet(net_code) + FFDecoder. net_code: '64-41414-3_13_333' (micro)
    or '64-231341-basic' (macro)."""

    def __init__(self, net_code: str, num_classes: int = 1, bn_track_running_stats: bool = True):
        super().__init__()
        track = bn_track_running_stats
        parts = net_code.split("-")
        base, macro_code = int(parts[0]), parts[1]
        basic = parts[-1] == "basic"
        cell_code = None if basic else [""] + parts[2].split("_")
        self.stem = Stem(base, track)
        inplanes = base
        blocks = []
        for digit in macro_code:
            digit = int(digit)
            target = inplanes * 2 if digit % 2 == 0 else inplanes
            stride = 2 if digit > 2 else 1
            layer = []
            for i in range(2):
                c_in, s = (inplanes, stride) if i == 0 else (target, 1)
                layer.append(ResNetBasicblock(c_in, target, s, track) if basic else MicroCell(cell_code, c_in, target, s, track))
            inplanes = target
            blocks.append(layer)
        if basic:  # module names as the exporter's: layer{i}.{j}
            for i, layer in enumerate(blocks):
                self.add_module(f"layer{i}", nn.ModuleList(layer))
        else:  # cells.{k}
            self.cells = nn.ModuleList([cell for layer in blocks for cell in layer])
        self.blocks = [f"layer{i}" for i in range(len(blocks))] if basic else None
        self.decoder = Decoder(inplanes, num_classes)

    def forward(self, x):
        x = self.stem(x)
        if self.blocks is None:
            for cell in self.cells:
                x = cell(x)
        else:
            for name in self.blocks:
                for block in getattr(self, name):
                    x = block(x)
        return self.decoder(x)
