"""score(): the epsinas score of one model, as a library call."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import onnx_ir as ir
import onnx
from onnx import inliner

from epsinas_onnx.core.errors import UserError
from epsinas_onnx.core.limits import check_threads
from epsinas_onnx.core.scoring.inputs import Batch, InputSpec, model_input, prepare_batch
from epsinas_onnx.core.scoring.metric import output_type_warnings, output_warnings
from epsinas_onnx.core.scoring.modes import DEFAULT_MODE, check_mode, score_in_mode
from epsinas_onnx.core.scoring.model_io import load_model
from epsinas_onnx.core.rewriting.passes import WEIGHT_INPUT
from epsinas_onnx.core.rewriting.rewrite import Rewritten, policy_for, rewrite_for_scoring
from epsinas_onnx.core.rewriting.roles import Role
from epsinas_onnx.core.scoring import runtime

from epsinas_onnx.core.options import (DEFAULT_WEIGHTS, SPACE_METADATA_KEY, WEIGHTS_METADATA_KEY, BatchOptions,
                                       ExecutionOptions, ScoringSettings, options_from_keywords)


@dataclasses.dataclass
class ScoreResult:
    score: float  # NaN is a legitimate result; nan_reason says why
    nan_reason: str | None
    weights: tuple[float, float]
    batch_size: int
    device: str
    seconds: float
    output: str
    input: str
    warnings: list[str]
    mode: str = DEFAULT_MODE
    scored_weights: tuple[float, float] | None = None  # the two weights the score is of (ladder: the rung used, w2)

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["score"] = None if np.isnan(self.score) else self.score
        data["weights"] = list(self.weights)
        data["scored_weights"] = None if self.scored_weights is None else list(self.scored_weights)
        return data


@dataclasses.dataclass
class PreparedModel:
    """A rewritten model in a session, ready to be run at any weight."""

    session: object
    output: str
    input_spec: InputSpec
    rewritten: Rewritten
    device: str
    timeout: float | None = None  # seconds per run (runtime.run_outputs)

    def run(self, batch: np.ndarray, weight: float) -> np.ndarray:
        (y,) = self.run_outputs(batch, weight, [self.output])
        if y.dtype.kind in "OSU":  # strings where the model declared no type (_choose_output refuses declared ones)
            raise UserError(f"output {self.output!r} holds strings, not numbers: there is nothing to score "
                            "(pick a numeric output with --output)")
        return y

    def run_outputs(self, batch: np.ndarray, weight: float, names: list[str]) -> list[np.ndarray]:
        """Several outputs of one run (run() fetches the scored one only)."""
        feeds = {self.input_spec.name: batch, WEIGHT_INPUT: np.array(weight, dtype=np.float32)}
        return runtime.run_outputs(self.session, names, feeds, self.timeout)


def prepare_model(model, scoring: ScoringSettings = ScoringSettings(),
                  execution: ExecutionOptions = ExecutionOptions(), input_name: str | None = None, *,
                  channel_sum: bool = False) -> PreparedModel:
    """Load, rewrite and open a session. scoring: what is computed (the
    output, the init policy, collapse: run at the reduced channel width that
    constant weights allow, the same function; passes/channel_collapse.py);
    a random scoring.weight_init (an ablation: every weight tensor w * R, R a
    fixed random tensor, passes/constant_weight.py) runs at full width,
    collapse or not. execution: how fast and where, never what is computed
    (check=False skips onnx.checker for a ModelProto the caller built;
    graph_optimization: ONNX Runtime's level, all | basic | none; timeout:
    seconds an ONNX Runtime run may take before it is stopped,
    runtime.RunTimeout). input_name: the model input to feed, when it has several.
    channel_sum: where the collapsed model reads its input only summed over
    the channels, feed it that sum instead (passes/channel_sum_input.py: the
    same score, without the full batch in memory); then feed it batch_for's
    batch, which is that sum (rewritten.takes_channel_sum says whether).
    score() does; a caller feeding its own batch leaves it off."""
    runtime.providers_for(execution.device)  # a device that cannot run, or absurd threads: say so before the rewrite
    check_threads(execution.threads)
    staged = rewrite_model(model, scoring, input_name, check=execution.check, channel_sum=channel_sum)
    return open_session(staged, execution)


@dataclasses.dataclass
class RewrittenModel:
    """prepare_model's first half: the rewritten model, before any session."""

    rewritten: Rewritten
    output: str
    input_spec: InputSpec


def rewrite_model(model, scoring: ScoringSettings = ScoringSettings(), input_name: str | None = None, *,
                  check: bool = True, in_place: bool = False, channel_sum: bool = False) -> RewrittenModel:
    """Load and rewrite (prepare_model's options of the same names). in_place:
    an ir.Model the caller hands over (an exporter's, used once) is rewritten
    itself, not a copy. input_spec stays the input as the model declared it
    (the batch is prepared for it, then summed)."""
    ir_model = model if in_place and isinstance(model, ir.Model) else load_model(model, check=check)
    output_name = _choose_output(ir_model, scoring.output)
    spec = model_input(ir_model, input_name, exclude={WEIGHT_INPUT})
    rewritten = rewrite_for_scoring(ir_model, policy_for(ir_model, scoring), scoring.collapse,
                                    channel_sum_input=spec.name if channel_sum else None)
    return RewrittenModel(rewritten, output_name, spec)


def open_session(staged: RewrittenModel, execution: ExecutionOptions = ExecutionOptions()) -> PreparedModel:
    """prepare_model's second half: an ONNX Runtime session for a rewritten model."""
    providers = runtime.providers_for(execution.device)
    session = runtime.make_session(session_payload(staged.rewritten.model), providers, execution.threads,
                                   execution.graph_optimization)
    return PreparedModel(session, staged.output, staged.input_spec, staged.rewritten, runtime.device_name(providers),
                         execution.timeout)


def session_payload(model: ir.Model) -> bytes:
    """The serialised model an ONNX Runtime session is made from."""
    return session_proto(model).SerializeToString()


def session_proto(model: ir.Model) -> onnx.ModelProto:
    """session_payload's model before serialisation."""
    proto = ir.to_proto(model)
    if proto.functions:
        # ONNX Runtime would inline the batch-statistics BN function at load, once
        # per call, 3-4 ms per NAS-Bench-201 architecture; onnx's inliner does it
        # in 1 ms (the same nodes, so the same numbers)
        proto = inliner.inline_local_functions(proto)
    return proto


def _choose_output(model: ir.Model, output: str | None) -> str:
    """The scored output: the first, or the one named; never one of strings,
    which has no numbers to normalise."""
    names = [v.name for v in model.graph.outputs]
    if output is None:
        output = names[0]
    elif output not in names:
        raise UserError(f"the model has no output {output!r}; its outputs are: {', '.join(names)}")
    value = model.graph.outputs[names.index(output)]
    if value.dtype == ir.DataType.STRING:
        numeric = [v.name for v in model.graph.outputs if v.dtype != ir.DataType.STRING]
        pick = f"pick one of {', '.join(map(repr, numeric))} with --output" if numeric else "the model has no other"
        raise UserError(f"output {output!r} holds strings, not numbers: there is nothing to score ({pick})")
    return output


def embedding_rows(prepared: PreparedModel) -> int | None:
    """The vocabulary size of a token model: rows of its (first) embedding."""
    for entry in prepared.rewritten.roles:
        if entry.role == Role.EMBEDDING and len(entry.shape) == 2:
            return entry.shape[0]
    return None


def score(model, data=None, weights=None, **keywords) -> ScoreResult:
    """The epsinas score of `model` (a path, onnx.ModelProto or onnx_ir.Model):
    the friendly keyword entry point. Each keyword is a field of one of the
    option objects (core/options.py), at its default there when not given:

        the batch (BatchOptions)      batch_size, norm, synthetic, shuffle_seed, seed,
                                      seq_len, token_layout, input_name
        what is computed              output, bn_gamma, bias, embedding, collapse,
          (ScoringSettings)           weight_init, weight_seed, mode
        how (ExecutionOptions)        device, threads, timeout, graph_optimization, check

    data: a path (.npz / .npy images, or a text file for token models) or an
    array; None uses a synthetic batch (docs/commands/score.md). weights: the
    two constants; None: the pair the model's metadata records (a model
    `epsinas-onnx export` wrote), else DEFAULT_WEIGHTS (NAS-Bench-201's). Raises
    UserError on bad input; a NaN score is a result, with its reason in `nan_reason`. timeout:
    seconds each ONNX Runtime run may take (None: no limit).
    mode: "reference" (the published score), "ladder" or "upper" (defined
    wherever the output depends on the input; docs/score-everywhere.md).
    """
    batch, scoring, execution = options_from_keywords(keywords)
    return score_with(model, weights, dataclasses.replace(batch, data=data), scoring, execution)


def score_with(model, weights, batch: BatchOptions, scoring: ScoringSettings,
               execution: ExecutionOptions = ExecutionOptions()) -> ScoreResult:
    """score() with its options as the option objects (options.py) a command
    builds once. weights None: the pair the model's metadata records (a model
    `epsinas-onnx export` wrote: its space's reference pair), else DEFAULT_WEIGHTS."""
    if weights is not None:
        weights = check_weights(weights)
        check_mode(scoring.mode, weights)
    start = time.perf_counter()
    # one model, one batch of its own: it can take the batch's channel sum
    prepared = prepare_model(model, scoring, execution, batch.input_name, channel_sum=True)
    notes = []
    if weights is None:
        weights, notes = model_weights(prepared.rewritten.model)
        check_mode(scoring.mode, weights)
    result = score_prepared(prepared, batch_for(prepared, batch), weights, batch.batch_size, start, scoring.mode)
    result.warnings[:0] = notes
    return result


def model_weights(model: ir.Model) -> tuple[tuple[float, float], list[str]]:
    """The pair a model is scored at when none is given: the one its metadata
    records (WEIGHTS_METADATA_KEY, written by `export`), with a note saying
    so, else DEFAULT_WEIGHTS."""
    recorded = model.metadata_props.get(WEIGHTS_METADATA_KEY)
    if recorded is None:
        return DEFAULT_WEIGHTS, []
    try:
        weights = check_weights(recorded.split())
    except (UserError, ValueError):
        raise UserError(f"the model's metadata {WEIGHTS_METADATA_KEY!r} = {recorded[:60]!r} is not two weights: "
                        "give --weights W1 W2") from None
    space = model.metadata_props.get(SPACE_METADATA_KEY)
    whose = f"{space}'s reference pair, " if space else ""
    return weights, [f"scored at weights {weights[0]:g} {weights[1]:g}, {whose}which the model's metadata records "
                     "(--weights chooses others)"]


def batch_for(prepared: PreparedModel, options: BatchOptions) -> Batch:
    """The batch `options` describe, shaped for `prepared`'s input (token ids
    below its embedding's size; summed over the channels where the model
    takes that sum)."""
    return prepare_batch(prepared.input_spec, options, vocab_size=embedding_rows(prepared),
                         channel_sum=prepared.rewritten.takes_channel_sum)


def score_prepared(prepared: PreparedModel, batch: Batch, weights, batch_size: int, start: float,
                   mode: str = DEFAULT_MODE) -> ScoreResult:
    value, reason, outputs, pair = score_in_mode(mode, weights, lambda w: prepared.run(batch.array, w))
    scored = {w: outputs[w] for w in pair or ()}
    return ScoreResult(
        score=value,
        nan_reason=reason,
        weights=tuple(weights),
        batch_size=batch_size,
        device=prepared.device,
        seconds=time.perf_counter() - start,
        output=prepared.output,
        input=batch.description,
        warnings=list(prepared.rewritten.warnings) + output_type_warnings(outputs)
        + ([] if np.isnan(value) else output_warnings(scored)),
        mode=mode,
        scored_weights=pair,
    )


def check_weights(weights) -> tuple[float, float]:
    weights = tuple(float(w) for w in weights)
    if len(weights) != 2:
        raise UserError(f"--weights takes exactly two values, got {len(weights)}")
    if weights[0] == weights[1]:
        raise UserError(f"the two weights must differ (both are {weights[0]:g}): the score compares them")
    if not all(np.isfinite(weights)):
        raise UserError("the weights must be finite numbers")
    for w in weights:
        check_float32(w, "--weights")
    if np.float32(weights[0]) == np.float32(weights[1]):
        raise UserError(f"the two weights {weights[0]:g} and {weights[1]:g} are the same number in float32, "
                        "in which the model runs: the score compares them")
    return weights


def check_float32(w: float, option: str) -> None:
    """A weight the float32 model can hold: not overflowing to inf, and not
    a nonzero number that underflows to 0 (which would score a zero network)."""
    with np.errstate(over="ignore", under="ignore"):
        w32 = np.float32(w)
    if not np.isfinite(w32):
        raise UserError(f"{option} {w:g} is beyond float32's range (+-{np.finfo(np.float32).max:.3g}), in which the "
                        "model runs: it would be inf")
    if w != 0 and w32 == 0:
        raise UserError(f"{option} {w:g} is below float32's smallest nonzero value "
                        f"({np.finfo(np.float32).smallest_subnormal:.3g}), in which the model runs: it would be 0")
