"""Small CNNs for end-to-end tests, in the reference style: convs without
bias followed by BatchNorm, a 1-output linear head."""

from torch import nn


def conv_bn(c_in, c_out, k=3, stride=1, groups=1, track=False):
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out, track_running_stats=track),
    )


class ResidualBlock(nn.Module):
    def __init__(self, c_in, c_out, stride, track):
        super().__init__()
        self.a = conv_bn(c_in, c_out, 3, stride, track=track)
        self.b = conv_bn(c_out, c_out, 3, 1, track=track)
        self.shortcut = (
            nn.Identity() if stride == 1 and c_in == c_out
            else nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(c_in, c_out, 1, bias=False))
        )

    def forward(self, x):
        return self.b(self.a(x).relu()) + self.shortcut(x)


class TinyResNet(nn.Module):
    def __init__(self, track=False):
        super().__init__()
        self.stem = conv_bn(3, 8, track=track)
        self.blocks = nn.Sequential(ResidualBlock(8, 8, 1, track), ResidualBlock(8, 16, 2, track), ResidualBlock(16, 16, 1, track))
        self.head = nn.Sequential(nn.BatchNorm2d(16, track_running_stats=track), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 1))

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))


class SkipPoolCell(nn.Module):
    """A NAS-Bench-201-like cell: conv, average-pool and skip edges summed."""

    def __init__(self, c, track):
        super().__init__()
        self.conv = nn.Sequential(nn.ReLU(), conv_bn(c, c, 3, track=track))
        self.conv1 = nn.Sequential(nn.ReLU(), conv_bn(c, c, 1, track=track))
        self.pool = nn.AvgPool2d(3, 1, 1, count_include_pad=False)

    def forward(self, x):
        n1 = self.conv(x)
        n2 = self.pool(x) + self.conv1(n1)
        return n2 + x


class CellNet(nn.Module):
    def __init__(self, track=False):
        super().__init__()
        self.stem = conv_bn(3, 8, track=track)
        self.cells = nn.Sequential(SkipPoolCell(8, track), SkipPoolCell(8, track))
        self.head = nn.Sequential(nn.BatchNorm2d(8, track_running_stats=track), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 1))

    def forward(self, x):
        return self.head(self.cells(self.stem(x)))


class InvertedResidual(nn.Module):
    """MobileNetV2's block: expand 1x1, depthwise 3x3 (groups = channels), project 1x1."""

    def __init__(self, c, expand, track):
        super().__init__()
        hidden = c * expand
        self.body = nn.Sequential(
            conv_bn(c, hidden, 1, track=track), nn.ReLU6(),
            conv_bn(hidden, hidden, 3, groups=hidden, track=track), nn.ReLU6(),
            conv_bn(hidden, c, 1, track=track),
        )

    def forward(self, x):
        return x + self.body(x)


class TinyMobileNet(nn.Module):
    def __init__(self, track=False):
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, 8, 3, 2, track=track), nn.ReLU6())
        self.blocks = nn.Sequential(InvertedResidual(8, 4, track), InvertedResidual(8, 4, track))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 1))

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))


CNNS = {"tiny_resnet": TinyResNet, "cell_net": CellNet, "tiny_mobilenet": TinyMobileNet}
