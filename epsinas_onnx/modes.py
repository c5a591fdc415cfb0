"""Scoring modes: the reference score, and `ladder`, a score defined on every
architecture that has an input-output path (docs/score-everywhere.md).

reference  metric.score_runs: the published semantics, NaN included.
ladder     the same two runs, except that where the output at w1 is constant
           (every path through a parametrised layer underflows; the reference
           divides 0 by 0) w1 climbs a ladder of half-decade rungs until the
           output survives; the score then says on which rung it did and
           what the reference formula gives there (LADDER_RULE).

Each mode takes the two weights and run(w) -> output, and returns
(score, nan_reason, outputs, low_weight): low_weight is the w1 the score
was computed at (None where it is NaN).
"""

from __future__ import annotations

import math

import numpy as np

from epsinas_onnx.errors import UserError
from epsinas_onnx.metric import decisive_nan_reason, score_runs, score_with_reason

MODES = ("reference", "ladder")
DEFAULT_MODE = "reference"
RUNGS_PER_DECADE = 2
LADDER_RULE = (
    "w1 climbs w1 * 10^(j/2), j = 0, 1, ..., up to w2 / 10, until the reference score s of (rung, w2) is "
    "finite; the score is s / (1 + s) on rung 0 (the reference's order) and 1 + s / (1 + s) on any higher rung"
)


def check_mode(mode: str, weights=None) -> str:
    """`mode`, or a UserError naming the problem (an unknown mode; for ladder, W1 >= W2)."""
    if mode not in MODES:
        raise UserError(f"unknown scoring mode {mode!r}: choose one of {', '.join(MODES)}")
    if mode == "ladder" and weights is not None and not weights[0] < weights[1]:
        raise UserError(f"--mode ladder climbs from W1 towards W2, so W1 must be the smaller weight "
                        f"(got {weights[0]:g} {weights[1]:g}): give them as {weights[1]:g} {weights[0]:g}")
    return mode


def ladder(weights) -> list[float]:
    """The rungs for a weight pair: w1 * 10^(j / 2) while at most w2 / 10 (w1 itself always)."""
    low, high = weights
    rungs = [low]
    j = 1
    while True:
        rung = float(f"{low * 10 ** (j / RUNGS_PER_DECADE):.6g}")
        if rung > high / 10 * (1 + 1e-9):
            return rungs
        rungs.append(rung)
        j += 1


def ladder_value(rung: int, value: float) -> float:
    """The ladder score of reference score `value` found on rung `rung` (LADDER_RULE)."""
    squashed = value / (1.0 + value)
    return squashed if rung == 0 else 1.0 + squashed


def score_ladder(weights, run):
    """The ladder mode (LADDER_RULE): (score, nan_reason, outputs, low_weight)."""
    check_mode("ladder", weights)
    low, high = weights
    rungs = ladder(weights)
    outputs = {low: run(low)}
    outputs[high] = run(high)
    reason = decisive_nan_reason(high, outputs[high])
    if reason is not None:  # the high output alone decides: no rung can help
        return math.nan, reason, outputs, None
    for j, rung in enumerate(rungs):
        if rung not in outputs:
            outputs[rung] = run(rung)
        value, reason = score_with_reason({rung: outputs[rung], high: outputs[high]})
        if not np.isnan(value):
            return ladder_value(j, value), None, outputs, rung
    span = f"{rungs[0]:g}" if len(rungs) == 1 else f"{rungs[0]:g} ... {rungs[-1]:g}"
    return math.nan, f"NaN on every rung of the ladder ({span}); at the last one: {reason}", outputs, None


def score_in_mode(mode: str, weights, run):
    """(score, nan_reason, outputs, low_weight) of the two weights in `mode`."""
    if check_mode(mode) == "reference":
        value, reason, outputs = score_runs(weights, run)
        return value, reason, outputs, None if np.isnan(value) else weights[0]
    return score_ladder(weights, run)
