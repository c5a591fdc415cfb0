"""A small residual CNN, the PyTorch model the README scores:

    epsinas-onnx score --torch examples.small_resnet:Net --input-shape 1x3x32x32 --weights 1e-7 1

Any `MODULE:CALLABLE` that returns an nn.Module works the same way (a class,
or a function such as torchvision.models:resnet18). The residual add matters:
with one constant weight, a chain without branches computes the same output
at both weights up to a scale, and its score is float32 rounding noise
(docs/commands/rewrite.md, "What the scorer says about the rest").
"""

from torch import nn


def conv_bn(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


class Block(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.body = nn.Sequential(conv_bn(width, width), conv_bn(width, width))

    def forward(self, x):
        return x + self.body(x)


class Net(nn.Module):
    """stem -> `blocks` residual blocks -> global pooling -> `num_classes` logits."""

    def __init__(self, width: int = 16, blocks: int = 2, num_classes: int = 10):
        super().__init__()
        self.stem = conv_bn(3, width)
        self.blocks = nn.Sequential(*(Block(width) for _ in range(blocks)))
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)).mean(dim=(2, 3)))
