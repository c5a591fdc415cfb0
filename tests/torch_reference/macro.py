"""NAS-Bench-Macro's Network in PyTorch, written from the benchmark's own
train/model.py (xiusu/NAS-Bench-Macro): blocks, layer order, strides, channel
counts and BN placement as there.

Independent of epsinas_onnx/spaces/macro.py: it builds the network of the
key as given (an identity layer in the middle of a stage is a module that
returns its input), not of the benchmark's `get_real_arch`. Module names are
chosen so that state_dict keys equal the exporter's initialiser names where
the key is its own real architecture (`features.{i}.expand.conv.weight`, ...).
"""

from torch import nn

CANDIDATES = ("id", "ir_3x3_t3", "ir_5x5_t6")


class ConvBN(nn.Module):
    def __init__(self, c_in, c_out, kernel, stride, groups, track):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(c_out, track_running_stats=track)

    def forward(self, x):
        return self.bn(self.conv(x))


class Identity(nn.Module):
    """model.py's Identity: a 1x1 conv + BN only where the shape changes."""

    def __init__(self, c_in, c_out, stride, track):
        super().__init__()
        self.downsample = ConvBN(c_in, c_out, 1, stride, 1, track) if stride != 1 or c_in != c_out else None

    def forward(self, x):
        return x if self.downsample is None else self.downsample(x)


class InvertedResidual(nn.Module):
    """model.py's InvertedResidual with t > 1: pw, dw, pw-linear; shortcut where the shape is kept."""

    def __init__(self, c_in, c_out, stride, t, k, track):
        super().__init__()
        hidden = round(c_in * t)
        self.expand = ConvBN(c_in, hidden, 1, 1, 1, track)
        self.depthwise = ConvBN(hidden, hidden, k, stride, hidden, track)
        self.project = ConvBN(hidden, c_out, 1, 1, 1, track)
        self.relu = nn.ReLU()
        self.use_shortcut = c_in == c_out and stride == 1

    def forward(self, x):
        y = self.project(self.relu(self.depthwise(self.relu(self.expand(x)))))
        return y + x if self.use_shortcut else y


def make_op(name, c_in, c_out, stride, track):
    if name == "id":
        return Identity(c_in, c_out, stride, track)
    if name == "ir_3x3_t3":
        return InvertedResidual(c_in, c_out, stride, 3, 3, track)
    return InvertedResidual(c_in, c_out, stride, 6, 5, track)


class Network(nn.Module):
    """Network(arch) of model.py: arch a string of 8 digits, stages [2, 3, 3], 32 initial channels."""

    def __init__(self, arch: str, num_classes: int = 1, stages=(2, 3, 3), init_channels: int = 32,
                 bn_track_running_stats: bool = True):
        super().__init__()
        track = bn_track_running_stats
        digits = [int(c) for c in arch]
        assert len(digits) == sum(stages)
        self.stem = ConvBN(3, init_channels, 3, 1, 1, track)
        features, channels = [], init_channels
        for stage in stages:
            for idx in range(stage):
                op = CANDIDATES[digits.pop(0)]
                if idx == 0:
                    features.append(make_op(op, channels, channels * 2, 2, track))
                    channels *= 2
                else:
                    features.append(make_op(op, channels, channels, 1, track))
        self.features = nn.Sequential(*features)
        self.out = ConvBN(channels, 1280, 1, 1, 1, track)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(1280, num_classes)

    def forward(self, x):
        x = self.stem(x).relu()
        x = self.features(x)
        x = self.pool(self.out(x).relu())
        return self.classifier(x.view(x.size(0), -1))
