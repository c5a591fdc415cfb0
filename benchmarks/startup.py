"""Start-up time of the command, beside the bare imports it cannot avoid.

    python benchmarks/startup.py [--runs 7]

Run from the checkout (the processes start in its root, so its epsinas_onnx is
the one timed). Each figure is the median wall time of --runs fresh processes (the first run of
each is not counted: it warms the file cache):
  (a) `python -m epsinas_onnx --help`
  (b) `python -c "import click"`: the floor of any click command
  (c) `python -c "import onnx, onnxruntime"`: the floor of a command that scores
  (d) `python -m epsinas_onnx score models/nb201_cifar10_best.onnx`
and one line per goal of issue 15: --help under 0.3 s; score within 0.5 s of (c).
Timings are machine-dependent, so no test asserts them; this script reports them.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "models" / "nb201_cifar10_best.onnx"

HELP_LIMIT_S = 0.3
SCORE_OVER_IMPORTS_LIMIT_S = 0.5


def median_wall(args: list[str], runs: int) -> float:
    times = []
    for run in range(runs + 1):
        start = time.perf_counter()
        subprocess.run([sys.executable, *args], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if run:  # run 0 warms the file cache
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    runs = parser.parse_args().runs

    commands = {
        "(a) epsinas-onnx --help": ["-m", "epsinas_onnx", "--help"],
        "(b) import click": ["-c", "import click"],
        "(c) import onnx, onnxruntime": ["-c", "import onnx, onnxruntime"],
        "(d) epsinas-onnx score nb201_cifar10_best": ["-m", "epsinas_onnx", "score", str(SAMPLE.relative_to(ROOT))],
    }
    print(f"median wall time of {runs} runs, {sys.executable}")
    walls = []
    for label, args in commands.items():
        walls.append(median_wall(args, runs))
        print(f"  {label:<45} {walls[-1]:7.3f} s")

    help_s, click_s, imports_s, score_s = walls
    print(f"  --help over bare click                        {help_s - click_s:+7.3f} s")
    print(f"  score over bare onnx + onnxruntime imports    {score_s - imports_s:+7.3f} s")

    goals = [
        (f"--help under {HELP_LIMIT_S} s", help_s < HELP_LIMIT_S),
        (f"score within {SCORE_OVER_IMPORTS_LIMIT_S} s of the bare imports",
         score_s - imports_s <= SCORE_OVER_IMPORTS_LIMIT_S),
    ]
    for goal, met in goals:
        print(f"{'PASS' if met else 'FAIL'}  {goal}")
    return 0 if all(met for _, met in goals) else 1


if __name__ == "__main__":
    sys.exit(main())
