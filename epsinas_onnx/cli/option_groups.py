"""The command-line options, each declared once, and the option groups that
parse them into the library's option objects (core/options.py).

An OptionGroup adds its options to a command and hands the command, in their
place, the one frozen object it builds from them: `batch` (BatchOptions),
`scoring` (ScoringSettings), `execution` (ExecutionOptions), `run`
(RunOptions), `archs` (ArchSelection), `targets` (TargetOptions), `scores`
(StoredScores). A group's variants (bench's --threads counts per worker;
ablate varies the synthetic batch itself) are other lists of the same
options. tests/test_cli_options.py checks that a shared option reads the same
in every command, and parses each group in-process.

Imports click, epsinas_onnx.core.options / limits and the spaces' names only: --help must not wait for onnx.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable

import click

from epsinas_onnx.core.limits import MAX_TIMEOUT, PER_CPU
from epsinas_onnx.core.options import (BENCH_EXECUTION, CALIBRATE_EXECUTION, DEFAULT_MODE, DEFAULT_STORE,
                                       EMBEDDING_CHOICES, MODE_CHOICES, NORM_CHOICES,
                                       SYNTHETIC_CHOICES, WEIGHT_INIT_CHOICES, ArchSelection, BatchOptions,
                                       ExecutionOptions, RunOptions, ScoringSettings, TargetOptions)
from epsinas_onnx.spaces import SPACES as SPACE_NAMES  # the names only: no space module is imported


class Number(click.FloatRange):
    """The type of every float option: a finite number, within [min, max]
    where given; nan, inf and values out of range are refused with one line
    naming the option (click's FloatRange lets nan through: nan < min is false)."""

    name = "number"

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


class OutputFile(click.Path):
    """The type of every option naming a file to write: a path that names a
    folder (an existing one, or one written with a trailing slash) is refused,
    where Path("newdir/") would quietly become the file "newdir"."""

    def __init__(self):
        super().__init__(dir_okay=False)

    def convert(self, value, param, ctx):
        import os

        text = os.fspath(value)
        if text.endswith(("/", os.sep)) or os.path.isdir(text):
            self.fail(f"{text!r} is a directory (a folder), not a file: name a file, e.g. "
                      f"{text.rstrip('/' + os.sep) or '.'}/NAME", param, ctx)
        return super().convert(value, param, ctx)
FORMATS = click.Choice(["table", "json", "csv"])
TABLE_OR_JSON = click.Choice(["table", "json"])
SPACES = click.Choice(list(SPACE_NAMES))


def stack(*options):
    """One decorator applying `options` in the order listed (the first is the first in --help)."""
    def decorate(fn):
        for option in reversed(options):
            fn = option(fn)
        return fn
    return decorate


def parameter_names(*options) -> tuple[str, ...]:
    """The keyword names click gives the values of `options` (read from a throwaway command)."""
    def probe(**_):
        pass

    return tuple(p.name for p in click.command()(stack(*options)(probe)).params)


@dataclasses.dataclass(frozen=True)
class OptionGroup:
    """Options that a command receives as one object: `build(**their values)`,
    passed to the command as keyword `keyword` in place of the values."""

    keyword: str
    build: Callable[..., object]
    options: tuple

    @functools.cached_property
    def names(self) -> tuple[str, ...]:
        return parameter_names(*self.options)

    def parse(self, args: list[str] | None = None) -> object:
        """The object these command-line arguments give (in-process, as a command receives it)."""
        return click.command()(self(lambda **values: values[self.keyword])).main(
            args=list(args or []), standalone_mode=False)

    def __call__(self, fn):
        @functools.wraps(fn)
        def command(*args, **values):
            built = self.build(**{name: values.pop(name) for name in self.names})
            return fn(*args, **values, **{self.keyword: built})

        return stack(*self.options)(command)


# the helps are one line each; docs/commands/*.md explains every option at length
BN_GAMMA_HELP = "BatchNorm gamma: w (the reference code) or one (the paper's prose; docs/reference-semantics.md)."
DATA_HELP = ("Images (.npz, .npy, a folder of PNG / JPEG, CIFAR binary) or, for token models, a text file "
             "(docs/commands/score.md).")
SYNTHETIC_HELP = "A synthetic batch instead of --data: grey (the default without --data), normal, uniform, uniform+."

BENCHMARK_FILE_HELP = (
    "Targets from an official benchmark file instead of the packaged table: nb201 a NAS-Bench-201 .pth or the "
    "NATS-Bench topology file NATS-tss-*-full.pickle.pbz2 (pip install \"epsinas-onnx[nasbench]\"; these files are pickles, and "
    "loading a pickle runs code in it: name only a file you trust); nb101 nasbench_only108.tfrecord (read "
    "without TensorFlow; cifar_acc_108 and val_accuracy, means over the repeats); nlp the NAS-Bench-NLP "
    "training logs (folder or .zip)."
)


# ---------------------------------------------------------------- weights and mode


def weights_option(default_help: str = "the space's reference pair"):
    """--weights, default None: for bench and ablate the space's reference pair, for score the model's recorded one."""
    return click.option(
        "--weights", nargs=2, type=Number(), default=None, metavar="W1 W2",
        help=f"The two shared weights (nb201 1e-7 1, nb101 1e-4 10, nlp 1e-5 1e-3). Default: {default_help}.",
    )


mode_option = click.option(
    "--mode", type=click.Choice(MODE_CHOICES), default=DEFAULT_MODE, show_default=True,
    help="reference: the published score; ladder, upper: also where it is NaN (docs/score-everywhere.md).",
)

# evaluate: which of the modes a store holds
stored_mode_option = click.option(
    "--mode", type=click.Choice(MODE_CHOICES), default=None,
    help="Evaluate (and plot) this scoring mode's rows only (default: every mode the store holds for the config, "
    "side by side, the plot the first).")

format_option = click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
progress_option = click.option("--progress/--no-progress", default=RunOptions.progress, show_default=True, help="A progress bar on stderr.")
device_option = click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
collapse_option = click.option(
    "--collapse/--no-collapse", default=ScoringSettings.collapse, show_default=True,
    help="Run at the reduced width constant weights allow (the same function); full width is faster on CUDA.")


def plot_option(help: str):
    return click.option("--plot", "plot_path", type=OutputFile(), default=None, help=help)


# ---------------------------------------------------------------- other proxies


def _proxy_names(ctx, param, value):
    if value is None:
        return ()
    from epsinas_onnx.proxies.registry import parse_names

    try:
        return parse_names(value)
    except Exception as exc:  # UserError: one line, as click's own
        raise click.BadParameter(str(exc)) from None


def _rank_by_names(ctx, param, value):
    if value is None:
        return ()
    from epsinas_onnx.proxies.registry import parse_names

    try:
        return parse_names(value, allowed_extra=("epsinas",), repeats=True)
    except Exception as exc:
        raise click.BadParameter(str(exc)) from None


# among epsinas and the proxies; a name listed twice counts twice (proxies/aggregate.py)
rank_by_option = click.option(
    "--rank-by", metavar="NAMES", default=None, callback=_rank_by_names,
    help="Rank by an aggregate (docs/proxies.md).")


# score --proxy and bench --proxies (RunOptions.proxies, .proxy_seed): one option, both spellings
PROXY_OPTIONS = (
    click.option("--proxy", "--proxies", "proxies", metavar="NAMES", default=None, callback=_proxy_names,
                 help="Other proxies, e.g. naswot,zen."),
    click.option("--proxy-seed", type=click.IntRange(min=0), default=0, help="Seed of the proxies' draws."),
)
proxies_option = stack(*PROXY_OPTIONS)


# ---------------------------------------------------------------- the batch


data_option = click.option("--data", type=click.Path(), default=None, help=DATA_HELP)
batch_size_option = click.option("--batch-size", type=int, default=BatchOptions.batch_size, show_default=True)
shuffle_seed_option = click.option(
    "--shuffle-seed", type=click.IntRange(min=0), default=None,
    help="Draw the batch at random with this seed (default: the first items).")
norm_option = click.option(
    "--norm", type=click.Choice(NORM_CHOICES), default=BatchOptions.norm, show_default=True,
    help="Per-channel normalisation (auto: cifar10 for uint8 images, none for floats).")
synthetic_option = click.option("--synthetic", type=click.Choice(SYNTHETIC_CHOICES), default=None, help=SYNTHETIC_HELP)
seq_len_option = click.option("--seq-len", type=click.IntRange(min=1), default=BatchOptions.seq_len, show_default=True,
                              help="Time steps (token models).")
token_layout_option = click.option(
    "--token-layout", type=click.Choice(["seq-first", "batch-first"]), default=None,
    help="Token input layout (default: from the model's dims, else seq-first).")
input_name_option = click.option("--input", "input_name", default=None, help="The model input to feed (default: the only one).")
output_option = click.option("--output", default=None, help="The model output to score (default: the first).")
# --input-seed is the synthetic batch's seed in every command; --seed is a sample's or a search's
input_seed_option = click.option("--input-seed", type=click.IntRange(min=0), default=BatchOptions.seed, show_default=True,
                                 help="Seed of synthetic batches and default tokens.")
# score's name for --input-seed before it was made one across commands, still read
legacy_seed_option = click.option("--seed", "legacy_seed", type=click.IntRange(min=0), default=None, hidden=True)


def legacy_input_seed(input_seed: int, legacy_seed: int | None) -> int:
    """score's --input-seed, or the --seed it was once called."""
    if legacy_seed is None:
        return input_seed
    if input_seed not in (0, legacy_seed):
        raise click.UsageError(f"--seed is the old name of --input-seed: give one of them, not --seed {legacy_seed} "
                               f"and --input-seed {input_seed}")
    return legacy_seed


def batch_options(input_seed: int = BatchOptions.seed, legacy_seed: int | None = None, **fields) -> BatchOptions:
    """The batch's options; --input-seed (or score's old --seed) is BatchOptions.seed."""
    return BatchOptions(**fields, seed=input_seed if legacy_seed is None else legacy_input_seed(input_seed, legacy_seed))


BATCH_OPTIONS = (data_option, batch_size_option, shuffle_seed_option, norm_option, synthetic_option,
                 input_seed_option, seq_len_option)
# the batch as calibrate and search's on-demand scoring take it
batch_group = OptionGroup("batch", batch_options, BATCH_OPTIONS)
# bench: the batch of models whose input and token layout may need naming
bench_batch_group = OptionGroup("batch", batch_options, (*BATCH_OPTIONS, token_layout_option, input_name_option))
# score: the same, reading --seed, --input-seed's old name, too
score_batch_group = OptionGroup("batch", batch_options, (*BATCH_OPTIONS, legacy_seed_option, token_layout_option,
                                                         input_name_option))
# ablate: the synthetic batch and the shuffle are what --vary synthetic / batch-size vary
ablate_batch_group = OptionGroup("batch", batch_options, (data_option, batch_size_option, norm_option,
                                                           input_seed_option, seq_len_option))


# ---------------------------------------------------------------- the scoring settings


# the init policy, listed as --help has always shown them
POLICY_OPTIONS = (
    click.option("--weight-seed", type=click.IntRange(min=0), default=0, show_default=True,
                 help="Seed of --weight-init's random weights."),
    click.option(
        "--weight-init", type=click.Choice(list(WEIGHT_INIT_CHOICES)), default="constant", show_default=True,
        help="constant: every weight is w (the reference); the others, w * R, R random (docs/commands/rewrite.md)."),
    click.option(
        "--embedding", type=click.Choice(list(EMBEDDING_CHOICES)), default=ScoringSettings.embedding, show_default=True,
        help="Embedding tables: uniform U(0, 1) (the reference), keep, or an ablation (docs/commands/rewrite.md)."),
    click.option(
        "--bias", type=click.Choice(["zero", "w"]), default=None,
        help="Biases: zero (CNNs) or w (NAS-Bench-NLP's cells); default: zero, unless the model's metadata says w."),
    click.option("--bn-gamma", type=click.Choice(["w", "one"]), default=ScoringSettings.bn_gamma, show_default=True, help=BN_GAMMA_HELP),
)


def _scoring_settings(weight_init: str = "constant", weight_seed: int = 0, **fields) -> ScoringSettings:
    return ScoringSettings.from_init(weight_init, weight_seed, **fields)


# score and bench: everything that changes the score
scoring_group = OptionGroup("scoring", _scoring_settings, (output_option, collapse_option, *POLICY_OPTIONS,
                                                           mode_option))
# calibrate: the reference mode, the first output
calibrate_scoring_group = OptionGroup("scoring", _scoring_settings, (collapse_option, *POLICY_OPTIONS))
# rewrite: the init policy only (its --collapse, default off, is its own)
policy_group = OptionGroup("scoring", _scoring_settings, POLICY_OPTIONS)


# ---------------------------------------------------------------- execution


def execution_group(base: ExecutionOptions, *options) -> OptionGroup:
    """ExecutionOptions: `base` with the values of `options` (--timeout 0: no limit)."""
    def build(**values) -> ExecutionOptions:
        if "timeout" in values:
            values["timeout"] = values["timeout"] or None
        return dataclasses.replace(base, **values)

    return OptionGroup("execution", build, options)


score_execution_group = execution_group(
    ExecutionOptions(), device_option,
    click.option("--threads", type=click.IntRange(min=1), default=None,
                 help=f"ONNX Runtime threads (default: all cores, at most {PER_CPU} per CPU)."),
    click.option("--timeout", type=Number(0, MAX_TIMEOUT), default=0, show_default=True,
                 help="Seconds one ONNX Runtime run may take (0: no limit)."))
# bench: --threads counts per worker (two 1-thread processes beat one 2-thread one); a run that hangs is an error row
bench_execution_group = execution_group(
    BENCH_EXECUTION, device_option,
    click.option("--threads", type=click.IntRange(min=1), default=BENCH_EXECUTION.threads, show_default=True,
                 help=f"ONNX Runtime threads per worker (at most {PER_CPU} per CPU)."),
    click.option("--timeout", type=Number(0, MAX_TIMEOUT), default=BENCH_EXECUTION.timeout, show_default=True,
                 help="Seconds one ONNX Runtime run may take (0: no limit); past it, an error row."))
# ablate and search: benches, on the device given
device_group = execution_group(BENCH_EXECUTION, device_option)
calibrate_execution_group = execution_group(CALIBRATE_EXECUTION, device_option)


# ---------------------------------------------------------------- runs of many items


store_option = click.option("--store", default=DEFAULT_STORE, show_default=True, type=OutputFile(),
                            help="The SQLite results file (created if absent).")


def run_group(*options) -> OptionGroup:
    """RunOptions from `options` (the others at their defaults)."""
    return OptionGroup("run", lambda **values: RunOptions(**values), options)


# ---------------------------------------------------------------- targets


def side_table_option(name: str, what: str):
    """--baselines / --proxies: alone, the packaged table; with a value, a csv."""
    return click.option(
        f"--{name}", type=click.Path(dir_okay=False), is_flag=False, flag_value="packaged", default=None,
        help=f"{what}; given alone (or as 'packaged'), the table packaged for the space, else a csv file.",
    )


DATASET_HELP = ("For a space whose tables hold a target per data set or task: which one (its target column, "
                "the baselines' zen_ column, the proxies' rows); default the space's first, e.g. nb201's cifar10.")
dataset_option = click.option("--dataset", default=None, help=DATASET_HELP)
arch_column_option = click.option("--arch-column", default=None,
                                  help="Architecture column (default per space; 'a,b' joins two, e.g. adjacency,ops).")
target_column_option = click.option("--target-column", default=None, help="Target column (default per space, as `evaluate`).")
direction_option = click.option("--lower-is-better/--higher-is-better", "lower_is_better", default=None,
                                help="The target's direction (default: the space's, e.g. lower for nlp's loss).")


def target_group(*options) -> OptionGroup:
    """TargetOptions from `options` (the others at their defaults)."""
    return OptionGroup("targets", lambda **values: TargetOptions(**values), options)


TARGET_SOURCE_OPTIONS = (
    click.option("--accuracies", type=click.Path(dir_okay=False), default=None,
                 help="Your own csv of targets per architecture (default: the table packaged for the space: nb201 "
                      "all 15,625 test accuracies; nb101 test_143 or naslib_500, whichever holds more of the stored "
                      "cells; nlp the WikiText-2 runs)."),
    click.option("--benchmark-file", type=click.Path(), default=None, help=BENCHMARK_FILE_HELP),
)


# ---------------------------------------------------------------- architectures of a space


all_option = click.option("--all", "everything", is_flag=True,
                          help="Every architecture of the space (nb201: 15,625; nb101: the 423,624 cells; nlp: the 291 "
                               "WikiText-2 recipes; docs/spaces.md lists them).")
sample_option = click.option("--sample", type=int, default=None, help="N architectures drawn uniformly.")
sample_seed_option = click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of --sample.")
archs_option = click.option("--archs", "arch_file", type=click.Path(dir_okay=False), default=None,
                            help="A file of architectures, as `bench --archs`.")


def archs_group(*options) -> OptionGroup:
    """ArchSelection from `options` (--all, --sample, --seed, --archs)."""
    return OptionGroup("archs", lambda **values: ArchSelection(**values), options)
