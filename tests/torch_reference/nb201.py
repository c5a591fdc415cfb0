"""NAS-Bench-201 TinyNetwork in PyTorch, written from reference-semantics §4.

Independent of epsinas_onnx/spaces/nb201.py (it parses the arch string itself). Module
names are chosen so that state_dict keys equal the exporter's initialiser
names, e.g. `cells.3.edge_2_0.conv.weight`, `cells.5.downsample.conv.weight`.
"""

from torch import nn

EDGE_ORDER = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))


def parse_arch(arch_str: str) -> dict:
    """`|op~0|+|op~0|op~1|+|...|` -> {(to_node, from_node): op}."""
    ops = {}
    for to_node, group in enumerate(arch_str.split("+"), start=1):
        for item in group.strip("|").split("|"):
            op, src = item.split("~")
            ops[(to_node, int(src))] = op
    assert sorted(ops) == sorted(EDGE_ORDER), arch_str
    return ops


class Zero(nn.Module):
    def forward(self, x):
        return x.mul(0.0)


class Identity(nn.Module):
    def forward(self, x):
        return x


class ReLUConvBN(nn.Module):
    def __init__(self, c_in, c_out, kernel, stride, track):
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=1e-5, track_running_stats=track)

    def forward(self, x):
        return self.bn(self.conv(self.relu(x)))


class AvgPool3x3(nn.Module):
    def __init__(self):
        super().__init__()
        self.pool = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)

    def forward(self, x):
        return self.pool(x)


def make_op(name, channels, track):
    if name == "none":
        return Zero()
    if name == "skip_connect":
        return Identity()
    if name == "nor_conv_1x1":
        return ReLUConvBN(channels, channels, 1, 1, track)
    if name == "nor_conv_3x3":
        return ReLUConvBN(channels, channels, 3, 1, track)
    if name == "avg_pool_3x3":
        return AvgPool3x3()
    raise ValueError(name)


class Cell(nn.Module):
    def __init__(self, ops: dict, channels: int, track: bool):
        super().__init__()
        self.edges = list(EDGE_ORDER)
        for (to_node, from_node) in self.edges:
            self.add_module(f"edge_{to_node}_{from_node}", make_op(ops[(to_node, from_node)], channels, track))

    def forward(self, x):
        nodes = [x]
        for j in (1, 2, 3):
            total = None
            for i in range(j):
                y = getattr(self, f"edge_{j}_{i}")(nodes[i])
                total = y if total is None else total + y
            nodes.append(total)
        return nodes[3]


class Downsample(nn.Module):
    def __init__(self, c_in, c_out):
        super().__init__()
        self.pool = nn.AvgPool2d(2, stride=2, padding=0)
        self.conv = nn.Conv2d(c_in, c_out, 1, bias=False)

    def forward(self, x):
        return self.conv(self.pool(x))


class ReductionBlock(nn.Module):
    def __init__(self, c_in, c_out, track):
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, 2, track)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, 1, track)
        self.downsample = Downsample(c_in, c_out)

    def forward(self, x):
        return self.downsample(x) + self.conv_b(self.conv_a(x))


class Stem(nn.Module):
    def __init__(self, c, track):
        super().__init__()
        self.conv = nn.Conv2d(3, c, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c, track_running_stats=track)

    def forward(self, x):
        return self.bn(self.conv(x))


class LastAct(nn.Module):
    def __init__(self, c, track):
        super().__init__()
        self.bn = nn.BatchNorm2d(c, track_running_stats=track)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.bn(x))


class TinyNetwork(nn.Module):
    """C = 16, N = 5. With bn_track_running_stats=False every BN normalises by
    the statistics of the current batch, in eval mode too (the reference code)."""

    def __init__(self, arch_str: str, num_classes: int = 1, C: int = 16, N: int = 5,
                 bn_track_running_stats: bool = True):
        super().__init__()
        track = bn_track_running_stats
        ops = parse_arch(arch_str)
        self.stem = Stem(C, track)
        channels = [C] * N + [2 * C] + [2 * C] * N + [4 * C] + [4 * C] * N
        is_reduction = [False] * N + [True] + [False] * N + [True] + [False] * N
        cells = []
        c_prev = C
        for c, reduction in zip(channels, is_reduction):
            cells.append(ReductionBlock(c_prev, c, track) if reduction else Cell(ops, c, track))
            c_prev = c
        self.cells = nn.ModuleList(cells)
        self.lastact = LastAct(c_prev, track)
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, num_classes)

    def forward(self, x):
        x = self.stem(x)
        for cell in self.cells:
            x = cell(x)
        x = self.lastact(x)
        x = self.global_pooling(x).flatten(1)
        return self.classifier(x)
