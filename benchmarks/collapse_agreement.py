"""Collapsed vs full-width scores on a sample of NAS-Bench-201 and -101 architectures.

    python benchmarks/collapse_agreement.py --nb201 500 --nb101 50 [--batch-size 256]

For each architecture: the score of the full-width rewritten graph and of the
channel-collapsed one (same batch: the first CIFAR-10 test images), whether
they agree (1e-4 relative or 1e-6 absolute, and the same NaN verdict), and
whether the full-width output at the small weight has subnormal values
(below 1.18e-38), where float32 summation order decides the digits.
Prints one line per disagreement and a summary per space. --float64 (needs
torch) adds, for each NAS-Bench-101 disagreement, the exact score of the same
network in float64 PyTorch (tests/torch_reference), to show which side is off.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from epsinas_onnx import ExecutionOptions, ScoringSettings, prepare_model  # noqa: E402
from epsinas_onnx.core.scoring.inputs import NORMS  # noqa: E402
from epsinas_onnx.core.scoring.metric import score_with_reason  # noqa: E402
from epsinas_onnx.spaces import nb101, nb201  # noqa: E402

TINY = np.finfo(np.float32).tiny  # 1.18e-38


def cifar10(n: int) -> np.ndarray:
    images = np.load(ROOT.parent / "shared" / "data" / "inputs" / "cifar10_test_1000.npz")["images"][:n]
    mean, std = (np.array(v, np.float32) / 255 for v in NORMS["cifar10"])
    return ((images.astype(np.float32) / 255 - mean) / std).transpose(0, 3, 1, 2).copy()


def compare(space, archs, weights, x):
    agree = nan_both = subnormal = 0
    disagreements = []
    start = time.perf_counter()
    for arch in archs:
        proto = space.to_onnx(arch)
        scores = {}
        for collapse in (False, True):
            prepared = prepare_model(proto, ScoringSettings(collapse=collapse), ExecutionOptions(threads=1))
            outputs = {w: prepared.run(x, w) for w in weights}
            scores[collapse] = score_with_reason(outputs)
            if not collapse:
                low = np.abs(outputs[weights[0]])
                has_subnormal = bool(np.any((low > 0) & (low < TINY)))
        (full, why_full), (col, why_col) = scores[False], scores[True]
        subnormal += has_subnormal
        same_nan = (why_full is None) == (why_col is None)
        close = why_full is not None or abs(full - col) <= max(1e-4 * abs(full), 1e-6)
        if same_nan and close:
            agree += 1
            nan_both += why_full is not None
        else:
            disagreements.append((space.format_arch(arch), full, col, has_subnormal))
    seconds = time.perf_counter() - start
    return agree, nan_both, subnormal, disagreements, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nb201", type=int, default=500)
    parser.add_argument("--nb101", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--float64", action="store_true", help="exact float64 scores for NAS-Bench-101 disagreements")
    args = parser.parse_args()
    x = cifar10(args.batch_size)
    for space, n, weights in ((nb201, args.nb201, (1e-7, 1.0)), (nb101, args.nb101, (1e-4, 10.0))):
        if n == 0:
            continue
        archs = space.sample(n, args.seed)
        agree, nan_both, subnormal, bad, seconds = compare(space, archs, weights, x)
        closer = 0
        for arch, full, col, sub in bad:
            exact = ""
            if args.float64 and space is nb101:
                from tests.torch_reference.nb101 import float64_score  # needs torch: only with --float64

                value = float64_score(space.parse(arch), x, weights)
                closer += abs(col - value) < abs(full - value)
                exact = f" float64 {value:.7g}"
            print(f"  {space.NAME} disagree: full {full:.7g} collapsed {col:.7g}{exact} subnormal={sub} {arch}")
        print(f"{space.NAME}: {agree}/{n} agree ({nan_both} NaN in both), {len(bad)} disagree, "
              f"{subnormal} with subnormal full-width outputs at w = {weights[0]:g}; "
              f"batch {args.batch_size}, {seconds:.0f} s")
        if args.float64 and space is nb101 and bad:
            print(f"{space.NAME}: of the {len(bad)} disagreements, the collapsed score is the closer to float64 in {closer}")


if __name__ == "__main__":
    main()
