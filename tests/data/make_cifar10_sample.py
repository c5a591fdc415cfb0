"""Cut the CIFAR-10 images the tests score from the development data.

    python tests/data/make_cifar10_sample.py [--data ../shared/data]

writes tests/data/cifar10_test_32.npz: the first 32 images of the development
data's inputs/cifar10_test_1000.npz (the same arrays, uint8 NHWC RGB, with
their labels, class names and source paths), so that the scorer's PyTorch
reference comparisons run on a fresh clone without the development data and
give there what they give beside it. tests/data/README.md says where the
images come from; tests/test_test_data.py checks the file against its source
when the data folder is present.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
SOURCE = Path("inputs") / "cifar10_test_1000.npz"
OUT = Path(__file__).resolve().parent / "cifar10_test_32.npz"
COUNT = 32  # the largest batch a test scores (test_gpu_check's 32); 32 images are 85 KB compressed


def cut(data: Path, out: Path = OUT, count: int = COUNT) -> None:
    with np.load(data / SOURCE) as source:
        arrays = {key: source[key] for key in source.files}
    sample = {key: value[:count] for key, value in arrays.items() if key != "classes"}
    np.savez_compressed(out, classes=arrays["classes"], **sample)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data",
                        help="the development data folder (default: ../shared/data from the project root)")
    args = parser.parse_args()
    if not (args.data / SOURCE).is_file():
        print(f"error: {args.data / SOURCE} not found: pass --data with the development data folder", file=sys.stderr)
        return 1
    cut(args.data)
    print(f"wrote {OUT.relative_to(ROOT)} ({OUT.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
