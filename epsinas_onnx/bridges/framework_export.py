"""What epsinas_onnx.torch and epsinas_onnx.keras share: score the ONNX file
an exporter writes into a temporary folder, and keep the exporters quiet."""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import warnings
from pathlib import Path

from epsinas_onnx.core.options import BatchOptions, ExecutionOptions, ScoringSettings
from epsinas_onnx.core.scoring.scorer import ScoreResult, score_with


def score_exported(write, weights, batch: BatchOptions, scoring: ScoringSettings,
                   execution: ExecutionOptions) -> ScoreResult:
    """The score (scorer.score_with) of the file that write(path) exports to
    `path`, in a temporary folder removed afterwards; write returns the
    warnings to report with the result (say, that an exporter fell back)."""
    with tempfile.TemporaryDirectory(prefix="epsinas-export-") as folder:
        path = Path(folder) / "model.onnx"
        notes = write(path)
        result = score_with(path, weights, batch, scoring, execution)
    result.warnings[:0] = notes
    return result


@contextlib.contextmanager
def quiet():
    """Exporters print progress on stdout, log warnings (torch: torchvision's
    ops missing), write the graphs a failed torch.export traced to stderr,
    and raise Python warnings: none of it is the user's business; the outcome
    is, and the callers report it."""
    disabled = logging.root.manager.disable
    logging.disable(max(disabled, logging.WARNING))  # the frameworks' loggers set their own levels: this reaches all
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(disabled)
