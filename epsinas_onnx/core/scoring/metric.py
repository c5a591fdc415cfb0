"""The epsinas score, exactly as the reference code computes it (float32).

reference-semantics §1: min-max normalise each output, stack, turn exact
zeros into NaN (the reference's quirk: every row loses at least its
minimum), then mean absolute difference over the joint mean.
"""

from __future__ import annotations

import warnings

import numpy as np


def min_max_normalise(y: np.ndarray) -> np.ndarray:
    """(y - min) / (max - min), NaN-aware, no epsilon: a constant y gives NaN."""
    y = np.asarray(y, dtype=np.float32).reshape(-1)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices
        lo, hi = np.nanmin(y), np.nanmax(y)
        return (y - lo) / (hi - lo)


def epsinas_score(y_low: np.ndarray, y_high: np.ndarray) -> float:
    """The score of two outputs (any shapes with the same number of values)."""
    p = np.stack([min_max_normalise(y_low), min_max_normalise(y_high)])
    p[p == 0] = np.nan
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # mean of empty slice
        mae = np.abs(p[0] - p[1])
        return float(np.float32(np.nanmean(mae)) / np.float32(np.nanmean(p)))


def decisive_nan_reason(w: float, y: np.ndarray) -> str | None:
    """Why this one output makes the score NaN whatever the other output is
    (empty, any inf, all NaN, or constant: its normalised row is all 0 or NaN,
    and every 0 becomes NaN), else None."""
    y = np.asarray(y, dtype=np.float32).reshape(-1)
    finite = np.isfinite(y)
    if y.size == 0:
        return f"empty output at w = {w:g}"
    if np.isinf(y).any():
        return f"non-finite output at w = {w:g}: {int((~finite).sum())} of {y.size} values are inf or NaN"
    if not finite.any():
        return f"non-finite output at w = {w:g}: all {y.size} values are NaN"
    values = y[finite]
    if values.min() == values.max():
        return (
            f"constant output at w = {w:g} (every value is {values[0]:g}): "
            "min-max normalisation divides 0 by 0"
        )
    return None


def nan_reason(outputs: dict[float, np.ndarray]) -> str:
    """Why the score of these outputs (weight -> output) is NaN, in words."""
    for w, y in outputs.items():
        reason = decisive_nan_reason(w, y)
        if reason is not None:
            return reason
    if all(np.asarray(y).size == 1 for y in outputs.values()):
        return "the output has a single value: nothing is left after min-max normalisation"
    return "every normalised value is 0 or NaN at one of the weights"


def score_with_reason(outputs: dict[float, np.ndarray]) -> tuple[float, str | None]:
    """The score and, when it is NaN, why."""
    (w_low, y_low), (w_high, y_high) = outputs.items()
    value = epsinas_score(y_low, y_high)
    if np.isnan(value):
        return value, nan_reason(outputs)
    return value, None


def score_runs(weights, run) -> tuple[float, str | None, dict[float, np.ndarray]]:
    """score_with_reason of {w: run(w)} for the two weights, in order, except
    that the second run is skipped where the first output alone decides a NaN
    (decisive_nan_reason; NAS-Bench-201's 6,399 NaN architectures at 1e-7):
    the same score and reason, one run fewer. Returns the outputs it has."""
    first, second = weights
    outputs = {first: run(first)}
    reason = decisive_nan_reason(first, outputs[first])
    if reason is not None:
        return float("nan"), reason, outputs
    outputs[second] = run(second)
    value, reason = score_with_reason(outputs)
    return value, reason, outputs


def output_warnings(outputs: dict[float, np.ndarray]) -> list[str]:
    """Non-finite values in outputs whose score is still a number: the
    reference's NaN-aware min, max and means skip them, so the score comes
    from the finite values only. (All-NaN or any inf makes the score NaN,
    with its reason from nan_reason.)"""
    notes = []
    for w, y in outputs.items():
        y = np.asarray(y, dtype=np.float32).reshape(-1)
        bad = int((~np.isfinite(y)).sum())
        if 0 < bad < y.size:
            notes.append(
                f"{bad} of {y.size} output values at w = {w:g} are NaN or inf: the score is computed from the "
                "finite ones only (the reference's NaN-aware mean skips them)"
            )
    return notes


def output_type_warnings(outputs: dict[float, np.ndarray]) -> list[str]:
    """A scored output that is not floating point (a bool mask, integer ids):
    scored as numbers like any other, NaN or not, but say so."""
    kinds = sorted({np.asarray(y).dtype.name for y in outputs.values() if not np.issubdtype(np.asarray(y).dtype, np.floating)})
    if not kinds:
        return []
    return [f"the scored output holds {kinds[0]} values, not floats: they are scored as the numbers 0 and 1 "
            "(or integers) in float32, which says little about the network; pick a float output with --output"]
