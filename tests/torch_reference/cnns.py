"""Small CNNs for end-to-end tests, in the reference style: convs without
bias followed by BatchNorm, a 1-output linear head. TinyResNet, TinyMobileNet,
TinyVGG and TinyDenseNet follow the block structure of torchvision's ResNet,
MobileNetV2, VGG (with batch norm) and DenseNet at a few channels."""

import torch
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


class TinyVGG(nn.Module):
    """vgg11_bn's shape: conv-BN-ReLU stages with max pooling, an adaptive
    average pool, and a Linear-ReLU-Dropout-Linear classifier. Not in CNNS:
    a chain with no branch, under constant weights every layer only scales
    its equal channels (BN's eps included), so the output at one w is the
    output at the other times a constant and the exact score is 0 (1.8e-15
    in float64); float32 scores are rounding noise, in torch as here."""

    def __init__(self, track=False):
        super().__init__()
        self.features = nn.Sequential(
            conv_bn(3, 8, track=track), nn.ReLU(), nn.MaxPool2d(2),
            conv_bn(8, 16, track=track), nn.ReLU(), conv_bn(16, 16, track=track), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((2, 2))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Dropout(), nn.Linear(16, 1))

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x)))


class DenseLayer(nn.Module):
    """DenseNet's layer: BN-ReLU-conv 1x1, BN-ReLU-conv 3x3, its output
    concatenated to its input."""

    def __init__(self, c_in, growth, track):
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(c_in, track_running_stats=track), nn.ReLU(), nn.Conv2d(c_in, 2 * growth, 1, bias=False),
            nn.BatchNorm2d(2 * growth, track_running_stats=track), nn.ReLU(),
            nn.Conv2d(2 * growth, growth, 3, padding=1, bias=False),
        )

    def forward(self, x):
        return torch.cat([x, self.body(x)], 1)


class TinyDenseNet(nn.Module):
    def __init__(self, track=False):
        super().__init__()
        self.stem = conv_bn(3, 8, track=track)
        self.block1 = nn.Sequential(DenseLayer(8, 4, track), DenseLayer(12, 4, track))
        self.transition = nn.Sequential(nn.BatchNorm2d(16, track_running_stats=track), nn.ReLU(),
                                        nn.Conv2d(16, 8, 1, bias=False), nn.AvgPool2d(2))
        self.block2 = nn.Sequential(DenseLayer(8, 4, track), DenseLayer(12, 4, track))
        self.head = nn.Sequential(nn.BatchNorm2d(16, track_running_stats=track), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 1))

    def forward(self, x):
        return self.head(self.block2(self.transition(self.block1(self.stem(x)))))


CNNS = {"tiny_resnet": TinyResNet, "cell_net": CellNet, "tiny_mobilenet": TinyMobileNet,
        "tiny_densenet": TinyDenseNet}
# the torchvision-style ones (tests/test_framework_score.py)
TORCHVISION_STYLE = {"resnet": TinyResNet, "mobilenet_v2": TinyMobileNet, "vgg": TinyVGG, "densenet": TinyDenseNet}
