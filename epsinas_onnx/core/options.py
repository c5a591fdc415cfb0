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

DEFAULT_STORE = "epsinas_results.sqlite"  # the results store of bench, ablate and search
BENCH_TIMEOUT = 300.0  # seconds per ONNX Runtime run in bench (scorer runs take milliseconds to seconds)


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

    @property
    def random_weights(self) -> bool:
        """An init ablation (every weight w * R) rather than the reference's constant weights."""
        return self.weight_init not in (None, "constant")

    def key(self, export: dict | None = None, input_name: str | None = None, rule: KeyRule | None = None) -> dict:
        """The `settings` part of a results-store key, before store.settings_key
        serialises it: {"export": ..., "prepare": ...} plus {"mode": ...} where
        the mode is not the reference, and {"mode_revision": N} for a mode
        whose rule changed since stores were first written with it
        (MODE_REVISIONS). `rule` (default BENCH_KEY) says which
        settings are written at their default and which are left out at their
        neutral value, so that every key is byte for byte the one written since
        its stores (or caches) began. `export`: the space's to_onnx keywords,
        defaults made explicit by the caller."""
        rule = rule or BENCH_KEY
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "mode"}
        given = {k: v for k, v in {**fields, "input_name": input_name}.items() if v is not None}
        given = {k: v for k, v in given.items() if k not in rule.neutral or v != rule.neutral[k]}
        if "weight_init" not in given:
            given.pop("weight_seed", None)  # no random weights, no seed
        explicit = {name: SCORING_DEFAULTS[name] for name in rule.explicit}
        key = {"export": dict(export or {}), "prepare": {**explicit, **given}}
        if self.mode != DEFAULT_MODE:
            key["mode"] = self.mode
        if self.mode in MODE_REVISIONS:
            key["mode_revision"] = MODE_REVISIONS[self.mode]
        return key


@dataclasses.dataclass(frozen=True)
class KeyRule:
    """How ScoringSettings.key writes the settings: `explicit`, the settings
    written even at their default; `neutral`, settings left out at these
    values (added after a store or cache format was first written, so that
    what was written before keeps its key)."""

    explicit: tuple[str, ...]
    neutral: dict


SCORING_DEFAULTS = {f.name: f.default for f in dataclasses.fields(ScoringSettings)}
# bench's results store: every non-None default written, an init setting at its "as before" value left out
BENCH_KEY = KeyRule(explicit=("bn_gamma", "embedding", "collapse"), neutral={"weight_init": "constant", "weight_seed": 0})
# calibrate's --outputs cache: bn_gamma and collapse written, the embedding only where it is not the default,
# a random init's seed always
CALIBRATE_KEY = KeyRule(explicit=("bn_gamma", "collapse"), neutral={"weight_init": "constant", "embedding": "uniform"})
NEUTRAL_SETTINGS = BENCH_KEY.neutral


@dataclasses.dataclass(frozen=True)
class ExecutionOptions:
    """How fast and where, never what is computed (so never part of a store key)."""

    device: str = "auto"
    threads: int | None = None
    timeout: float | None = None  # seconds per ONNX Runtime run; None: no limit
    graph_optimization: str = "all"
    check: bool = True  # onnx.checker on a model read from a file or a ModelProto

    def __post_init__(self):
        from epsinas_onnx.core.limits import check_timeout

        check_timeout(self.timeout)  # refused here, before any work, not at the first run


# a bench runs many architectures side by side: one thread per worker (two 1-thread
# processes beat one 2-thread one), and a run that hangs becomes an error row
BENCH_EXECUTION = ExecutionOptions(threads=1, timeout=BENCH_TIMEOUT)
# calibrate runs each model at every weight of a grid, one thread per worker
CALIBRATE_EXECUTION = ExecutionOptions(threads=1, graph_optimization="none")


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How a driver runs many items (executors.run_job): who runs them, how
    many at a time, with a progress bar or not, and where the finished results
    are kept, so that a rerun resumes."""

    store: str | None = DEFAULT_STORE  # bench's results store; calibrate's --outputs .npz (None: none kept)
    workers: int | None = None  # local: worker processes (None: 1); ray: the most tasks at a time
    executor: str = "local"  # executors.EXECUTORS
    address: str | None = None  # ray: the cluster
    chunk: int | None = None  # ray: items per task
    limit: int | None = None  # bench: score at most this many not yet stored
    progress: bool = True
    # bench: other proxies (epsinas_onnx/proxies) computed for every item beside epsinas and kept in
    # the store's proxies table, and the seed of their random draws (None: proxies.ProxyOptions' default)
    proxies: tuple[str, ...] = ()
    proxy_seed: int | None = None


@dataclasses.dataclass(frozen=True)
class ArchSelection:
    """Which architectures of a space a command takes: all of them, a uniform
    sample, or those of a file (bench.selected_archs)."""

    everything: bool = False
    sample: int | None = None
    seed: int = 0  # of the sample
    arch_file: str | None = None


@dataclasses.dataclass(frozen=True)
class TargetOptions:
    """Where the targets ("trained accuracies") come from and which column
    they are: the packaged table (default), a csv (`accuracies`) or an
    official benchmark file; None: the space's default column and direction."""

    accuracies: object = None  # a csv path, a core.tables.Table, or "packaged"
    benchmark_file: str | None = None
    dataset: str | None = None  # nb201: the target column
    arch_column: str | None = None
    target_column: str | None = None
    lower_is_better: bool | None = None


def options_from_keywords(keywords: dict) -> tuple[BatchOptions, ScoringSettings, ExecutionOptions]:
    """epsinas_onnx.score's friendly keywords as the option objects: each
    keyword is the field of that name of one of them (input_name: BatchOptions').
    TypeError for a keyword none has, naming those there are."""
    objects = (BatchOptions, ScoringSettings, ExecutionOptions)
    names = [{f.name for f in dataclasses.fields(kind)} for kind in objects]
    unknown = sorted(set(keywords).difference(*names))
    if unknown:
        accepted = ", ".join(sorted(set().union(*names)))
        raise TypeError(f"score() got unexpected keyword(s) {', '.join(unknown)}; it takes {accepted}")
    return tuple(kind(**{k: v for k, v in keywords.items() if k in fields}) for kind, fields in zip(objects, names))


@dataclasses.dataclass(frozen=True)
class StoredScores:
    """Where a search's scores come from: the rows of one space, config and
    scoring mode of the results store run.store (None: the only one there
    is), and how to score on demand the architectures it lacks (the batch the
    store was made with; search.BenchFiller)."""

    space: str | None = None
    config: str | None = None
    mode: str = DEFAULT_MODE
    batch: BatchOptions = BatchOptions()
    execution: ExecutionOptions = BENCH_EXECUTION
    run: RunOptions = RunOptions(workers=1)
    rank_by: tuple[str, ...] = ()  # stored proxies (and epsinas) whose rank aggregate ranks the candidates

    @property
    def store(self) -> str:
        return self.run.store
