"""Make the sample models in this folder.

    python exporters/make_sample_models.py          # needs the `export` extra (torch)

- nb201_cifar10_best.onnx: the best NAS-Bench-201 architecture on CIFAR-10
  (index 6111, 94.37 % test accuracy), built by epsinas_onnx.spaces.nb201 (no torch needed for this one).
- tiny_resnet.onnx: a small ResNet written in PyTorch and exported with
  torch.onnx.export (dynamo, optimize=False so BatchNorm stays a node), as a
  user's own model would be.
"""

import sys
from pathlib import Path

import onnx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the spaces and the test networks live in the project
MODELS = ROOT / "models"  # where the sample models live
BEST_NB201 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"


def main() -> None:
    from epsinas_onnx.spaces import nb201

    onnx.save(nb201.to_onnx(nb201.parse(BEST_NB201)), MODELS / "nb201_cifar10_best.onnx")

    import torch

    from tests.torch_export import export_onnx
    from tests.torch_reference.cnns import TinyResNet

    torch.manual_seed(0)
    export_onnx(TinyResNet(track=True), torch.randn(2, 3, 32, 32), MODELS / "tiny_resnet.onnx")


if __name__ == "__main__":
    main()
