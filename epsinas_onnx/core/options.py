"""The option objects and the defaults they share: what a command line, a
script or a notebook hands to the library, in one place.

Standard library only (no numpy, no onnx): the CLI builds these before it
imports anything heavy, so `epsinas-onnx --help` stays fast. The choice
lists below mirror the library's tables (inputs.NORMS, passes.constant_weight,
modes); tests/test_cli_options.py checks that they agree.
"""

from __future__ import annotations

import dataclasses

# the two shared weights of a model of no known space: NAS-Bench-201's pair (a
# benchmark space declares its own, Space.reference_weights)
DEFAULT_WEIGHTS = (1e-7, 1.0)
# model metadata `export` writes: the space a model comes from and its reference
# pair, which score takes when no weights are given
SPACE_METADATA_KEY = "epsinas.space"
WEIGHTS_METADATA_KEY = "epsinas.weights"
DEFAULT_SEQ_LEN = 70  # NAS-Bench-NLP's BPTT length
DEFAULT_BATCH_SIZE = 256

NORM_CHOICES = ("auto", "cifar10", "cifar100", "imagenet16", "none")  # auto and none around inputs.NORMS
SYNTHETIC_CHOICES = ("grey", "normal", "uniform", "uniform+")  # inputs.SYNTHETIC
WEIGHT_INIT_CHOICES = ("constant", "normal", "uniform", "kaiming_normal", "kaiming_uniform")
EMBEDDING_CHOICES = ("uniform", "uniform-0.1", "centered", "centered-0.1", "normal", "normal-0.1", "keep")
MODE_CHOICES = ("reference", "ladder", "upper")  # modes.MODES
# a mode whose rule changed after stores were written with it: its store key names
# the revision, so a rerun scores anew rather than resuming rows of the old rule
# (upper, revision 2: the rounding guard, docs/score-everywhere.md)
MODE_REVISIONS = {"upper": 2}
DEFAULT_MODE = "reference"

# prepare_model options that change the speed, never the result (not part of a results-store key)
EXECUTION_OPTIONS = ("device", "threads", "check", "graph_optimization", "timeout")
# settings added after results stores were first written, with the value that
# means "as before": a store key leaves a setting at that value out, so a
# store written before the option existed keeps its key
NEUTRAL_SETTINGS = {"weight_init": "constant", "weight_seed": 0}


@dataclasses.dataclass(frozen=True)
class BatchOptions:
    """Which batch is fed (inputs.prepare_batch) and to which model input."""

    data: object = None  # a path, an array, or None for a synthetic batch
    batch_size: int = DEFAULT_BATCH_SIZE
    norm: str = "auto"
    synthetic: str | None = None
    shuffle_seed: int | None = None
    seed: int = 0  # synthetic inputs and default tokens
    seq_len: int = DEFAULT_SEQ_LEN
    token_layout: str | None = None
    input_name: str | None = None


@dataclasses.dataclass(frozen=True)
class ScoringSettings:
    """What is computed: the output scored, the rewrite's init policy, the
    collapse, the scoring mode. Every field is part of a results-store key."""

    output: str | None = None
    bn_gamma: str = "w"
    bias: str | None = None  # None: zero, unless the model's metadata says otherwise
    embedding: str = "uniform"
    collapse: bool = True
    weight_init: str | None = None  # None (or "constant"): every weight is w, the reference
    weight_seed: int | None = None
    mode: str = DEFAULT_MODE

    @classmethod
    def from_init(cls, weight_init: str, weight_seed: int, **fields) -> ScoringSettings:
        """--weight-init / --weight-seed as the CLI gives them ("constant": the
        reference, which has no seed)."""
        if weight_init == "constant":
            return cls(weight_init=None, weight_seed=None, **fields)
        return cls(weight_init=weight_init, weight_seed=weight_seed, **fields)

    def prepare(self) -> dict:
        """The settings as scorer.prepare_model keywords (mode is not one)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "mode"}

    def key(self, export: dict | None = None, input_name: str | None = None) -> dict:
        """The `settings` part of a results-store key, before store.settings_key
        serialises it: {"export": ..., "prepare": ...} plus {"mode": ...} where
        the mode is not the reference, and {"mode_revision": N} for a mode
        whose rule changed since stores were first written with it
        (MODE_REVISIONS). Otherwise byte-identical to the keys bench has
        written since stores began: every prepare_model setting made explicit
        at its default, a setting at its neutral value (NEUTRAL_SETTINGS) left
        out, no weight_seed without random weights. `export`: the space's
        to_onnx keywords, defaults made explicit by the caller."""
        prepare = {**self.prepare(), "input_name": input_name}
        given = {k: v for k, v in prepare.items() if v is not None}
        given = {k: v for k, v in given.items() if k not in NEUTRAL_SETTINGS or v != NEUTRAL_SETTINGS[k]}
        if "weight_init" not in given:
            given.pop("weight_seed", None)  # no random weights, no seed
        # prepare_model's non-None defaults (the None ones drop out above, as in the keys written so far)
        defaults = {"bn_gamma": "w", "embedding": "uniform", "collapse": True}
        settings = {**defaults, **given}
        key = {"export": dict(export or {}), "prepare": settings}
        if self.mode != DEFAULT_MODE:
            key["mode"] = self.mode
        if self.mode in MODE_REVISIONS:
            key["mode_revision"] = MODE_REVISIONS[self.mode]
        return key


@dataclasses.dataclass(frozen=True)
class ExecutionOptions:
    """How fast and where, never what is computed (EXECUTION_OPTIONS)."""

    device: str = "auto"
    threads: int | None = None
    timeout: float | None = None  # seconds per ONNX Runtime run; None: no limit
    graph_optimization: str = "all"
    check: bool = True

    def __post_init__(self):
        from epsinas_onnx.core.limits import check_timeout

        check_timeout(self.timeout)  # refused here, before any work, not at the first run

    def prepare(self) -> dict:
        return dataclasses.asdict(self)


def score_keywords(batch: BatchOptions, scoring: ScoringSettings, execution: ExecutionOptions) -> dict:
    """The option objects as epsinas_onnx.score's friendly keywords (less `data`),
    which epsinas_onnx.torch.score and epsinas_onnx.keras.score pass on."""
    fields = {**dataclasses.asdict(batch), **dataclasses.asdict(scoring)}
    del fields["data"]
    return {**fields, "device": execution.device, "threads": execution.threads, "timeout": execution.timeout}
