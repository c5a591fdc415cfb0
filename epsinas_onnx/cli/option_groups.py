"""The command-line options, each declared once, grouped as the commands share
them. A command stacks the groups it takes; tests/test_cli_options.py checks
that a shared option reads the same in every command.

Imports click, epsinas_onnx.core.options and the spaces' names only: --help must not wait for onnx.
"""

from __future__ import annotations

import click

from epsinas_onnx.core.options import (DEFAULT_BATCH_SIZE, DEFAULT_MODE, DEFAULT_SEQ_LEN, DEFAULT_WEIGHTS,
                                  EMBEDDING_CHOICES, MODE_CHOICES, NORM_CHOICES, SYNTHETIC_CHOICES,
                                  WEIGHT_INIT_CHOICES)
from epsinas_onnx.spaces import SPACES as SPACE_NAMES  # the names only: no space module is imported

# = limits.PER_CPU, limits.BENCH_TIMEOUT, bench.DEFAULT_STORE (tests/test_cli_options.py checks they agree)
PER_CPU = 4
BENCH_TIMEOUT = 300.0
DEFAULT_STORE = "epsinas_results.sqlite"

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


BN_GAMMA_HELP = (
    "BatchNorm gamma: 'w' (default) sets it to the shared weight as the reference code does; "
    "'one' follows the paper's prose, which on NAS-Bench-201 inverts the ranking "
    "(Spearman -0.77 instead of +0.89)."
)

DATA_HELP = (
    "Images: an .npz ('images' or its only array) or .npy of NHWC uint8 or NCHW float32; a folder of PNG / JPEG "
    "images (class sub-folders allowed; sorted relative paths; needs the 'images' extra); the CIFAR-10 / CIFAR-100 "
    "binary version (test_batch.bin, test.bin, or their folder). For token models, a text file. Pickles are never read."
)

SYNTHETIC_HELP = (
    "Synthetic images instead of --data, fed as they are (no --norm): grey (one value per image, black to white), "
    "normal N(0, 1), uniform U(-1, 1), uniform+ U(0, 1). With neither, image models get grey: on 500 NAS-Bench-201 "
    "architectures its Spearman is 0.854, against 0.877 for real CIFAR-10 images and 0.477 for normal "
    "(docs/search-and-ablations.md). Token models get random ids below the embedding size."
)

BENCHMARK_FILE_HELP = (
    "Targets from an official benchmark file instead of the packaged table: nb201 a NAS-Bench-201 .pth or the "
    "NATS-Bench topology file NATS-tss-*-full.pickle.pbz2 (pip install \"epsinas-onnx[nasbench]\"; these files are pickles, and "
    "loading a pickle runs code in it: name only a file you trust); nb101 nasbench_only108.tfrecord (read "
    "without TensorFlow; cifar_acc_108 and val_accuracy, means over the repeats); nlp the NAS-Bench-NLP "
    "training logs (folder or .zip)."
)


# ---------------------------------------------------------------- weights and mode


def weights_option(default=DEFAULT_WEIGHTS):
    """--weights; default None (bench, ablate): the space's reference pair."""
    return click.option(
        "--weights", nargs=2, type=float, default=default, show_default=True, metavar="W1 W2",
        help="The two constant shared weights (NAS-Bench-201 1e-7 1; NAS-Bench-101 1e-4 10; NAS-Bench-NLP 1e-5 1e-3).",
    )


mode_option = click.option(
    "--mode", type=click.Choice(MODE_CHOICES), default=DEFAULT_MODE, show_default=True,
    help="reference: the published score (NaN where the output at W1 is constant); ladder: where it is, "
    "W1 climbs half-decade rungs until the output survives; upper: where it is, W2 is scored against "
    "10 x W2, ranked above the rest. Both give a score to every model whose output depends on its input "
    "(docs/score-everywhere.md).",
)

format_option = click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
progress_option = click.option("--progress/--no-progress", default=True, show_default=True, help="A progress bar on stderr.")
device_option = click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
collapse_option = click.option(
    "--collapse/--no-collapse", default=True, show_default=True,
    help="Run at the reduced channel width that constant weights allow (the same function, faster on CPU); "
    "--no-collapse runs the full-width graph (faster on CUDA).")


def plot_option(help: str):
    return click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None, help=help)


# ---------------------------------------------------------------- the batch


data_option = click.option("--data", type=click.Path(), default=None, help=DATA_HELP)
batch_size_option = click.option("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, show_default=True)
shuffle_seed_option = click.option(
    "--shuffle-seed", type=click.IntRange(min=0), default=None,
    help="Draw the batch at random with this seed instead of taking the first items.")
norm_option = click.option(
    "--norm", type=click.Choice(NORM_CHOICES), default="auto", show_default=True,
    help="Per-channel normalisation; auto = cifar10 for uint8 images, none for float arrays.")
synthetic_option = click.option("--synthetic", type=click.Choice(SYNTHETIC_CHOICES), default=None, help=SYNTHETIC_HELP)
seq_len_option = click.option("--seq-len", type=click.IntRange(min=1), default=DEFAULT_SEQ_LEN, show_default=True,
                              help="Time steps for token models.")
token_layout_option = click.option(
    "--token-layout", type=click.Choice(["seq-first", "batch-first"]), default=None,
    help="Token input layout; default: from the model's fixed dims, else seq-first.")
input_name_option = click.option("--input", "input_name", default=None, help="The model input to feed, when it has several.")
output_option = click.option("--output", default=None, help="The model output to score (default: the first).")
# score's --seed; the commands with a --seed of their own (the sample's) call it --input-seed
seed_option = click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
                           help="Seed of synthetic inputs and default tokens.")
input_seed_option = click.option("--input-seed", type=click.IntRange(min=0), default=0, show_default=True,
                                 help="Seed of synthetic inputs and default tokens (`score --seed`).")

# the batch as calibrate, ablate and search's on-demand scoring take it
batch_options = stack(data_option, batch_size_option, shuffle_seed_option, norm_option, synthetic_option,
                      input_seed_option, seq_len_option)


def input_options(bench: bool = False):
    """The options that say which batch is fed and how the model runs, for
    `score` and, with bench=True, for `bench`: there --seed is the sample's
    seed, so the synthetic batch's is --input-seed, and --threads counts per
    worker, default 1 (two 1-thread processes beat one 2-thread one)."""
    if bench:
        seed = input_seed_option
        threads = click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
                               help=f"ONNX Runtime threads per worker (at most {PER_CPU} per CPU; EPSINAS_MAX_THREADS raises it).")
        timeout = click.option("--timeout", type=click.FloatRange(min=0), default=BENCH_TIMEOUT, show_default=True,
                               help="Seconds one ONNX Runtime run may take; an architecture past it is an error row (0: no limit).")
    else:
        seed = seed_option
        threads = click.option("--threads", type=click.IntRange(min=1), default=None,
                               help=f"ONNX Runtime intra-op threads (default: all cores; at most {PER_CPU} per CPU, "
                                    "EPSINAS_MAX_THREADS raises it).")
        timeout = click.option("--timeout", type=click.FloatRange(min=0), default=0, show_default=True,
                               help="Seconds one ONNX Runtime run may take before it is stopped (0: no limit).")
    return stack(data_option, batch_size_option, shuffle_seed_option, norm_option, synthetic_option, seed,
                 seq_len_option, token_layout_option, input_name_option, output_option, device_option,
                 collapse_option, threads, timeout)


# ---------------------------------------------------------------- the init policy


# listed as --help has always shown them
policy_options = stack(
    click.option("--weight-seed", type=click.IntRange(min=0), default=0, show_default=True,
                 help="Seed of the random weights of --weight-init."),
    click.option(
        "--weight-init", type=click.Choice(list(WEIGHT_INIT_CHOICES)), default="constant", show_default=True,
        help="Weights: 'constant' (every weight is w, the reference) or an ablation: every weight tensor is "
        "w * R, R a fixed random tensor (normal N(0, 1), uniform U(0, 1), kaiming_normal, kaiming_uniform); "
        "such models run at full width."),
    click.option(
        "--embedding", type=click.Choice(list(EMBEDDING_CHOICES)), default="uniform", show_default=True,
        help="Embedding tables: U(0, 1) from a fixed seed (the reference), or keep the model's values; "
        "the others are the paper's embedding ablation: uniform-0.1 U(0, 0.1), centered U(-1, 1), "
        "centered-0.1 U(-0.1, 0.1), normal N(0, 1), normal-0.1 N(0, 0.1)."),
    click.option(
        "--bias", type=click.Choice(["zero", "w"]), default=None,
        help="Biases: 'zero' (the reference for CNNs) or 'w' (NAS-Bench-NLP's cells). Default: zero, "
        "unless the model's metadata says otherwise."),
    click.option("--bn-gamma", type=click.Choice(["w", "one"]), default="w", show_default=True, help=BN_GAMMA_HELP),
)


def init_settings(weight_init: str, weight_seed: int) -> dict:
    """--weight-init / --weight-seed as prepare_model settings (None: the reference, constant)."""
    if weight_init == "constant":
        return {"weight_init": None, "weight_seed": None}
    return {"weight_init": weight_init, "weight_seed": weight_seed}


# ---------------------------------------------------------------- targets


def target_source_options(fn):
    """Where the targets come from: the packaged table of the space (default),
    the user's own csv, or an official benchmark file."""
    fn = click.option("--benchmark-file", type=click.Path(), default=None, help=BENCHMARK_FILE_HELP)(fn)
    fn = click.option(
        "--accuracies", type=click.Path(dir_okay=False), default=None,
        help="Your own csv of targets per architecture (default: the table packaged for the space: nb201 all "
        "15,625 test accuracies; nb101 test_143 or naslib_500, whichever holds more of the stored cells; "
        "nlp the WikiText-2 runs).",
    )(fn)
    return fn


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


# ---------------------------------------------------------------- architectures of a space


sample_option = click.option("--sample", "n", type=int, default=None, help="N architectures drawn uniformly.")
sample_seed_option = click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of --sample.")
archs_option = click.option("--archs", "arch_file", type=click.Path(dir_okay=False), default=None,
                            help="A file of architectures, as `bench --archs`.")
