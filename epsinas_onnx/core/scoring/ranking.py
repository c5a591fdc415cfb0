"""Rank candidate models: every one scored on the same batch (the same data
and rules; an image model of another input size gets the same images
resized), highest score first, NaN after the numbers with its reason, and
models that could not be scored last with their error."""

from __future__ import annotations

import dataclasses
import math
import stat
from pathlib import Path

from epsinas_onnx.core.errors import UserError
from epsinas_onnx.core.textfile import file_status
from epsinas_onnx.core.options import BatchOptions, ExecutionOptions, ScoringSettings
from epsinas_onnx.core.scoring.scorer import ScoreResult, score_with


@dataclasses.dataclass
class Ranked:
    model: str
    result: ScoreResult | None  # None: the model could not be scored
    error: str | None = None
    rank: int | None = None  # 1 = the highest score; None for NaN and errors


def model_paths(arguments) -> list[Path]:
    """The models named: files as given, folders as the *.onnx files inside
    them (sorted by name); a file named twice is scored once."""
    paths: list[Path] = []
    for argument in arguments:
        path = Path(argument)
        status = file_status(path, "model file")
        if status is not None and stat.S_ISDIR(status.st_mode):
            inside = sorted(p for p in path.glob("*.onnx") if p.is_file())
            if not inside:
                raise UserError(f"{path} is a folder with no .onnx file in it")
            paths.extend(inside)
        else:
            paths.append(path)
    unique, seen = [], set()
    for path in paths:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(path)
    return unique


def rank_models(models, weights=None, batch_options: BatchOptions = BatchOptions(),
                scoring: ScoringSettings = ScoringSettings(),
                execution: ExecutionOptions = ExecutionOptions()) -> list[Ranked]:
    """Score each model on the same batch (scorer.score_with) and rank them
    (weights None: each model's recorded pair, else DEFAULT_WEIGHTS). A
    model that cannot be scored (a UserError) keeps its error on its row; when
    none can, the first error is raised, as for one model."""
    rows = []
    for model in models:
        try:
            rows.append(Ranked(str(model), score_with(model, weights, batch_options, scoring, execution)))
        except UserError as exc:
            rows.append(Ranked(str(model), None, str(exc)))
    if all(row.result is None for row in rows):
        raise UserError(rows[0].error if len(rows) == 1 else f"{rows[0].model}: {rows[0].error}")
    pairs = {row.result.weights for row in rows if row.result is not None}
    if len(pairs) > 1:  # no weights given, and the models record different pairs
        for row in rows:
            if row.result is not None:
                row.result.warnings.append(
                    f"the models were scored at {len(pairs)} different weight pairs (each its recorded one), whose "
                    "scores do not compare: give --weights to rank them at one pair")

    def order(row: Ranked):
        if row.result is None:
            return (2, 0.0)
        if math.isnan(row.result.score):
            return (1, 0.0)
        return (0, -row.result.score)

    ranked = sorted(rows, key=order)  # stable: ties keep the order given
    for position, row in enumerate(ranked, start=1):
        if row.result is not None and not math.isnan(row.result.score):
            row.rank = position
    return ranked
