"""Rank candidate models by epsinas and other proxies together: every model
scored on the same batch (core/scoring/ranking.rank_models), its proxies
computed (engine.compute), and with `rank_by` the population ordered by the
aggregate of those scores (aggregate.py); without it, by epsinas as before."""

from __future__ import annotations

import dataclasses
import math

from epsinas_onnx.core.errors import UserError
from epsinas_onnx.core.options import BatchOptions, ExecutionOptions, ScoringSettings
from epsinas_onnx.core.scoring.ranking import rank_models as rank_by_epsinas
from epsinas_onnx.core.scoring.scorer import DEFAULT_WEIGHTS, ScoreResult
from epsinas_onnx.proxies import engine
from epsinas_onnx.proxies.aggregate import of_members
from epsinas_onnx.proxies.proxy import ProxyOptions

EPSINAS = "epsinas"  # the name of the epsinas score among the --rank-by members


@dataclasses.dataclass
class Candidate:
    model: str
    result: ScoreResult | None  # None: the model could not be scored (error says why)
    proxies: dict = dataclasses.field(default_factory=dict)  # name -> engine.ProxyResult
    error: str | None = None
    aggregate: float | None = None  # with rank_by
    rank: int | None = None  # 1 = the best; None for errors (and, by epsinas alone, NaN)

    def value(self, name: str) -> float:
        if name == EPSINAS:
            return self.result.score
        return self.proxies[name].value


def check_rank_by(rank_by, proxies) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(rank_by, the proxies to compute: those asked plus those rank_by names)."""
    rank_by = tuple(rank_by or ())
    extra = tuple(name for name in dict.fromkeys(rank_by) if name != EPSINAS and name not in (proxies or ()))
    return rank_by, tuple(proxies or ()) + extra


def rank_models(models, weights=DEFAULT_WEIGHTS, batch_options: BatchOptions = BatchOptions(),
                scoring: ScoringSettings = ScoringSettings(), execution: ExecutionOptions = ExecutionOptions(),
                proxies=(), rank_by=(), proxy_options: ProxyOptions = ProxyOptions()) -> list[Candidate]:
    """Score each model with epsinas and `proxies`; rank by the aggregate of
    `rank_by` (names among "epsinas" and the proxies; one listed twice counts twice) when given, else by
    epsinas. A model that cannot be scored keeps its error and ranks last."""
    rank_by, proxies = check_rank_by(rank_by, proxies)
    scored = rank_by_epsinas(models, weights, batch_options, scoring, execution)
    candidates = [Candidate(entry.model, entry.result, error=entry.error, rank=entry.rank) for entry in scored]
    for candidate in candidates:
        if candidate.result is not None and proxies:
            try:
                candidate.proxies = engine.compute(candidate.model, proxies, batch_options, proxy_options, execution)
            except UserError as exc:  # the model scored, its proxies failed: an error row, as a model that cannot be scored
                candidate.error, candidate.result = f"proxies: {exc}", None
                continue
            errors = engine.errors_line(candidate.proxies)
            if errors:  # a proxy whose run would not fit in memory: an error row too, not a NaN that ranks
                candidate.error, candidate.result = f"proxies: {errors}", None
    if not rank_by:
        return candidates
    ranked = [c for c in candidates if c.result is not None]
    values = of_members({name: [c.value(name) for c in ranked] for name in rank_by}, rank_by)
    for candidate, value in zip(ranked, values):
        candidate.aggregate = float(value)
    ranked.sort(key=lambda c: -c.aggregate)  # stable: ties keep the order given
    for position, candidate in enumerate(ranked, start=1):
        candidate.rank = position
    return ranked + [c for c in candidates if c.result is None]


def nan_reasons(candidate: Candidate) -> str | None:
    """The NaN reasons of a candidate's values, one line."""
    reasons = []
    if candidate.result is not None and math.isnan(candidate.result.score):
        reasons.append(f"epsinas: {candidate.result.nan_reason}")
    reasons += [f"{name}: {r.nan_reason}" for name, r in candidate.proxies.items() if r.nan_reason]
    return "; ".join(reasons) or None
