"""Scoring modes: the reference score, and `ladder` and `upper`, two scores
defined on every architecture that has an input-output path
(docs/score-everywhere.md).

reference  metric.score_runs: the published semantics, NaN included.
ladder     the same two runs, except that where the output at w1 is constant
           (every path through a parametrised layer underflows; the reference
           divides 0 by 0) w1 climbs a ladder of half-decade rungs until the
           output survives; the score then says on which rung it did and
           what the reference formula gives there (LADDER_RULE).
upper      the reference where it is finite; where the output at w1 is
           constant, the reference formula of w2 and a weight a decade above
           it, ranked above every reference-scored architecture (UPPER_RULE),
           NaN where that formula reads float32 rounding only (ROUNDING_GUARD).

Each mode takes the two weights and run(w) -> output, and returns
(score, nan_reason, outputs, pair): pair is the two weights the score was
computed at (None where it is NaN).
"""

from __future__ import annotations

import math

import numpy as np

from epsinas_onnx.core.errors import UserError
from epsinas_onnx.core.scoring.metric import decisive_nan_reason, epsinas_score, score_runs, score_with_reason

MODES = ("reference", "ladder", "upper")
DEFAULT_MODE = "reference"
RUNGS_PER_DECADE = 2
LADDER_RULE = (
    "w1 climbs w1 * 10^(j/2), j = 0, 1, ..., up to w2 / 10, until the reference score s of (rung, w2) is "
    "finite; the score is s / (1 + s) on rung 0 (the reference's order) and 1 + s / (1 + s) on any higher rung"
)


UPPER_STEP = 10.0  # the upper pair is (w2, UPPER_STEP * w2)
UPPER_RULE = (
    "the reference score s of (w1, w2) where it is finite, as s / (1 + s) (the reference's order); where it is "
    "NaN and the output at w2 is not constant, 2 - u / (1 + u), u the reference formula of (w2, 10 * w2)"
)
# u no larger than this many times the rounding floor (the reference formula
# of the outputs at w2 and at the next float32 above it) is rounding
ROUNDING_FACTOR = 10.0
ROUNDING_GUARD = (
    "where u is at most 10 times the rounding floor f, the reference formula of the outputs at w2 and at the next "
    "float32 number above w2 (two weights whose networks differ by rounding only), the upper score is NaN: the "
    "network is the same function at w2 and 10 * w2 up to rounding, so u orders nothing"
)


def check_mode(mode: str, weights=None) -> str:
    """`mode`, or a UserError naming the problem (an unknown mode; for ladder and upper, W1 >= W2)."""
    if mode not in MODES:
        raise UserError(f"unknown scoring mode {mode!r}: choose one of {', '.join(MODES)}")
    if mode in ("ladder", "upper") and weights is not None and not weights[0] < weights[1]:
        what = "climbs from W1 towards W2" if mode == "ladder" else "steps up from W2"
        raise UserError(f"--mode {mode} {what}, so W1 must be the smaller weight "
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


def squash(value: float) -> float:
    """s / (1 + s): a reference-formula value mapped into [0, 1), its order kept."""
    return value / (1.0 + value)


def ladder_value(rung: int, value: float) -> float:
    """The ladder score of reference score `value` found on rung `rung` (LADDER_RULE)."""
    return squash(value) if rung == 0 else 1.0 + squash(value)


def score_ladder(weights, run):
    """The ladder mode (LADDER_RULE): (score, nan_reason, outputs, pair)."""
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
            return ladder_value(j, value), None, outputs, (rung, high)
    span = f"{rungs[0]:g}" if len(rungs) == 1 else f"{rungs[0]:g} ... {rungs[-1]:g}"
    return math.nan, f"NaN on every rung of the ladder ({span}); at the last one: {reason}", outputs, None


def upper_weight(weights) -> float:
    """The weight a decade above w2 (UPPER_STEP), to six significant digits as the ladder's rungs."""
    return float(f"{weights[1] * UPPER_STEP:.6g}")


def upper_value(value: float, upper: bool) -> float:
    """The upper mode's score of reference-formula value `value` (UPPER_RULE):
    s / (1 + s) in [0, 1) for the reference pair, 2 - u / (1 + u) in (1, 2] for
    the upper pair, where a smaller u ranks higher."""
    return 2.0 - squash(value) if upper else squash(value)


def score_upper(weights, run):
    """The upper mode (UPPER_RULE): (score, nan_reason, outputs, pair).

    Why the upper pair, and why reversed: at w2 and above, every
    BatchNorm's output is gamma = w times its normalised input, so the
    network is nearly the same function at w2 and at 10 * w2; what differs
    is where a BatchNorm's input variance is not large against its eps.
    On NAS-Bench-201's architectures without a parameter-free path, the
    smaller that difference, the more accurate the network (Spearman 0.69
    within that group, docs/score-everywhere.md), where the ladder's first
    surviving rung ranks them at 0.36."""
    check_mode("upper", weights)
    low, high = weights
    outputs = {low: run(low), high: run(high)}
    reason = decisive_nan_reason(high, outputs[high])
    if reason is not None:  # the high output alone decides: no other pair can help
        return math.nan, reason, outputs, None
    value, reason = score_with_reason({low: outputs[low], high: outputs[high]})
    if not np.isnan(value):
        return upper_value(value, False), None, outputs, (low, high)
    top = upper_weight(weights)
    outputs[top] = run(top)
    upper, why = score_with_reason({high: outputs[high], top: outputs[top]})
    if np.isnan(upper):
        return math.nan, f"{reason}; and at the upper pair ({high:g}, {top:g}): {why}", outputs, None
    rounding = rounding_reason(high, top, upper, outputs, run)
    if rounding is not None:
        return math.nan, f"{reason}; and {rounding}", outputs, None
    return upper_value(upper, True), None, outputs, (high, top)


def rounding_floor(high: float, y_high: np.ndarray, run) -> tuple[float, float]:
    """(f, w): the reference formula of the outputs at `high` and at w, the
    next float32 number above it. The two networks differ by rounding only
    (a relative weight step of 2^-23, which no BatchNorm eps can make
    visible), so f is what float32 rounding alone makes the formula read."""
    step = float(np.nextafter(np.float32(high), np.float32(np.inf)))
    return epsinas_score(y_high, run(step)), step


def rounding_reason(high: float, top: float, u: float, outputs: dict, run) -> str | None:
    """Why u, the reference formula of (high, top), is float32 rounding
    (ROUNDING_GUARD), or None where it is more."""
    floor, _ = rounding_floor(high, outputs[high], run)
    if not u <= ROUNDING_FACTOR * floor:  # a NaN floor guards nothing
        return None
    return (f"at the upper pair ({high:g}, {top:g}) u = {u:.3g} is no more than float32 rounding (at most "
            f"{ROUNDING_FACTOR:g} x the {floor:.3g} of w = {high:g} against the next float32 above it): one function "
            "at both weights")


def score_in_mode(mode: str, weights, run):
    """(score, nan_reason, outputs, pair) of the two weights in `mode`."""
    if check_mode(mode) == "reference":
        value, reason, outputs = score_runs(weights, run)
        return value, reason, outputs, None if np.isnan(value) else tuple(weights)
    return score_ladder(weights, run) if mode == "ladder" else score_upper(weights, run)
