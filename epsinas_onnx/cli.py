"""The epsinas-onnx command line: a thin layer over the library."""

from __future__ import annotations

import csv
import inspect
import io
import json
import math
import os
import sys
from pathlib import Path

import click

from epsinas_onnx import atomic
from epsinas_onnx.errors import UserError
from epsinas_onnx.inputs import NORMS, SYNTHETIC
from epsinas_onnx.limits import BENCH_TIMEOUT, PER_CPU, check_sample
from epsinas_onnx.modes import DEFAULT_MODE, MODES
from epsinas_onnx.passes.constant_weight import EMBEDDINGS, WEIGHT_INITS

FORMATS = click.Choice(["table", "json", "csv"])

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


def weights_option(default=(1e-7, 1.0)):
    return click.option(
        "--weights", nargs=2, type=float, default=default, show_default=True, metavar="W1 W2",
        help="The two constant shared weights (NAS-Bench-201 1e-7 1; NAS-Bench-101 1e-4 10; NAS-Bench-NLP 1e-5 1e-3).",
    )


def mode_option(fn):
    """--mode: which score is computed from the runs (epsinas_onnx/modes.py)."""
    return click.option(
        "--mode", type=click.Choice(MODES), default=DEFAULT_MODE, show_default=True,
        help="reference: the published score (NaN where the output at W1 is constant); ladder: where it is, "
        "W1 climbs half-decade rungs until the output survives, so every model whose output depends on its "
        "input gets a score (docs/score-everywhere.md).",
    )(fn)


def policy_options(fn):
    fn = click.option("--bn-gamma", type=click.Choice(["w", "one"]), default="w", show_default=True, help=BN_GAMMA_HELP)(fn)
    fn = click.option(
        "--bias", type=click.Choice(["zero", "w"]), default=None,
        help="Biases: 'zero' (the reference for CNNs) or 'w' (NAS-Bench-NLP's cells). Default: zero, "
        "unless the model's metadata says otherwise.",
    )(fn)
    fn = click.option(
        "--embedding", type=click.Choice(list(EMBEDDINGS)), default="uniform", show_default=True,
        help="Embedding tables: U(0, 1) from a fixed seed (the reference), or keep the model's values; "
        "the others are the paper's embedding ablation: uniform-0.1 U(0, 0.1), centered U(-1, 1), "
        "centered-0.1 U(-0.1, 0.1), normal N(0, 1), normal-0.1 N(0, 0.1).",
    )(fn)
    fn = click.option(
        "--weight-init", type=click.Choice(list(WEIGHT_INITS)), default="constant", show_default=True,
        help="Weights: 'constant' (every weight is w, the reference) or an ablation: every weight tensor is "
        "w * R, R a fixed random tensor (normal N(0, 1), uniform U(0, 1), kaiming_normal, kaiming_uniform); "
        "such models run at full width.",
    )(fn)
    fn = click.option("--weight-seed", type=click.IntRange(min=0), default=0, show_default=True,
                      help="Seed of the random weights of --weight-init.")(fn)
    return fn


def init_settings(weight_init: str, weight_seed: int) -> dict:
    """--weight-init / --weight-seed as prepare_model settings (None: the reference, constant)."""
    if weight_init == "constant":
        return {"weight_init": None, "weight_seed": None}
    return {"weight_init": weight_init, "weight_seed": weight_seed}


BENCHMARK_FILE_HELP = (
    "Targets from an official benchmark file instead of the packaged table: nb201 a NAS-Bench-201 .pth or the "
    "NATS-Bench topology file NATS-tss-*-full.pickle.pbz2 (pip install \"epsinas-onnx[nasbench]\"; these files are pickles, and "
    "loading a pickle runs code in it: name only a file you trust); nb101 nasbench_only108.tfrecord (read "
    "without TensorFlow; cifar_acc_108 and val_accuracy, means over the repeats); nlp the NAS-Bench-NLP "
    "training logs (folder or .zip)."
)


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


def input_options(bench: bool = False):
    """The options that say which batch is fed and how the model runs, for
    `score` and, with bench=True, for `bench`: there --seed is the sample's
    seed, so the synthetic batch's is --input-seed, and --threads counts per
    worker, default 1 (two 1-thread processes beat one 2-thread one)."""
    if bench:
        seed = click.option("--input-seed", type=click.IntRange(min=0), default=0, show_default=True,
                            help="Seed of synthetic inputs and default tokens (`score --seed`).")
        threads = click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
                               help=f"ONNX Runtime threads per worker (at most {PER_CPU} per CPU; EPSINAS_MAX_THREADS raises it).")
        timeout = click.option("--timeout", type=click.FloatRange(min=0), default=BENCH_TIMEOUT, show_default=True,
                               help="Seconds one ONNX Runtime run may take; an architecture past it is an error row (0: no limit).")
    else:
        seed = click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
                            help="Seed of synthetic inputs and default tokens.")
        threads = click.option("--threads", type=click.IntRange(min=1), default=None,
                               help=f"ONNX Runtime intra-op threads (default: all cores; at most {PER_CPU} per CPU, "
                                    "EPSINAS_MAX_THREADS raises it).")
        timeout = click.option("--timeout", type=click.FloatRange(min=0), default=0, show_default=True,
                               help="Seconds one ONNX Runtime run may take before it is stopped (0: no limit).")
    options = [
        click.option("--data", type=click.Path(), help=DATA_HELP),
        click.option("--batch-size", type=int, default=256, show_default=True),
        click.option("--shuffle-seed", type=click.IntRange(min=0), default=None, help="Draw the batch at random with this seed instead of taking the first items."),
        click.option("--norm", type=click.Choice(["auto", *NORMS, "none"]), default="auto", show_default=True, help="Per-channel normalisation; auto = cifar10 for uint8 images, none for float arrays."),
        click.option("--synthetic", type=click.Choice(SYNTHETIC), default=None, help=SYNTHETIC_HELP),
        seed,
        click.option("--seq-len", type=click.IntRange(min=1), default=70, show_default=True, help="Time steps for token models."),
        click.option("--token-layout", type=click.Choice(["seq-first", "batch-first"]), default=None, help="Token input layout; default: from the model's fixed dims, else seq-first."),
        click.option("--input", "input_name", default=None, help="The model input to feed, when it has several."),
        click.option("--output", default=None, help="The model output to score (default: the first)."),
        click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True),
        click.option("--collapse/--no-collapse", default=True, show_default=True, help="Run at the reduced channel width that constant weights allow (the same function, faster on CPU); --no-collapse runs the full-width graph (faster on CUDA)."),
        threads,
        timeout,
    ]

    def decorate(fn):
        for option in reversed(options):
            fn = option(fn)
        return fn

    return decorate


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="epsinas-onnx")
def cli():
    """epsinas: rank untrained networks with two constant shared weights."""


def torch_options(fn):
    """score --torch: a PyTorch module from a factory, exported and scored in place of MODEL."""
    fn = click.option(
        "--input-shape", metavar="NxCxHxW", default=None, callback=_shape,
        help="The shape of the example input the --torch module is exported with (zeros, float32; the batch "
        "dim is exported as dynamic, so --batch-size still decides the batch scored).",
    )(fn)
    fn = click.option(
        "--torch-kwargs", metavar="JSON", default=None, callback=_json_object,
        help="Keyword arguments for the --torch factory, a JSON object, e.g. '{\"num_classes\": 10}'.",
    )(fn)
    fn = click.option(
        "--torch", "torch_factory", metavar="MODULE:CALLABLE", default=None,
        help="Score the nn.Module this class or function returns (e.g. torchvision.models:resnet18; MODULE is "
        "imported from the current directory or the installed packages), exported to ONNX as the README "
        'documents; needs torch (pip install "epsinas-onnx[export]").',
    )(fn)
    return fn


def _json_object(ctx, param, value):
    if value is None:
        return None
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON ({exc.msg}): {value}") from None
    if not isinstance(parsed, dict):
        raise click.BadParameter(f"must be a JSON object ({{...}}), not {value}")
    return parsed


def _shape(ctx, param, value):
    if value is None:
        return None
    try:
        dims = tuple(int(d) for d in value.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"dims joined by x, like 1x3x224x224, not {value}") from None
    if min(dims) < 1:
        raise click.BadParameter(f"dims must be positive, not {value}")
    return dims


def _score_torch_factory(models, factory, factory_kwargs, input_shape, data, weights, settings):
    """score --torch: build the module and score it (epsinas_onnx/torch.py)."""
    if models:
        raise UserError(f"give MODEL or --torch, not both (got {' '.join(models)} and --torch {factory})")
    if input_shape is None:
        raise UserError("--torch needs --input-shape, the example input's shape (e.g. 1x3x224x224)")
    from epsinas_onnx import torch as torch_scoring

    if os.getcwd() not in sys.path:  # the user's own factory module, as `python -m` would find it
        sys.path.insert(0, os.getcwd())
    module = torch_scoring.module_from_factory(factory, factory_kwargs)
    return torch_scoring.score(module, input_shape, data, weights, **settings)


@cli.command()
@click.argument("models", nargs=-1, type=click.Path(), metavar="[MODEL...]")
@weights_option()
@input_options()
@policy_options
@torch_options
@mode_option
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
def score(models, weights, data, batch_size, shuffle_seed, norm, synthetic, seed, seq_len, token_layout,
          input_name, output, device, collapse, threads, timeout, bn_gamma, bias, embedding, weight_init, weight_seed, mode,
          torch_factory, torch_kwargs, input_shape, fmt):
    """Score MODEL (an .onnx file), rank several (files, a shell glob, or
    folders of *.onnx) on the same batch, highest first, or with --torch score
    a PyTorch module. Exit 0 whenever a score, NaN included, was computed;
    ranking several, exit 1 if any of them could not be scored (its row says why)."""
    from epsinas_onnx.scorer import score as score_model

    options = dict(
        output=output, input_name=input_name, batch_size=batch_size, norm=norm,
        synthetic=synthetic, shuffle_seed=shuffle_seed, seed=seed, seq_len=seq_len, token_layout=token_layout,
        device=device, threads=threads, bn_gamma=bn_gamma, bias=bias, embedding=embedding, collapse=collapse,
        timeout=timeout or None, **init_settings(weight_init, weight_seed), mode=mode,
    )
    if torch_factory is not None:
        result = _score_torch_factory(models, torch_factory, torch_kwargs, input_shape, data, weights, options)
        model = torch_factory
    elif not models:
        raise UserError("give MODEL (an .onnx file, several, or a folder) or --torch MODULE:CALLABLE")
    elif input_shape is not None or torch_kwargs is not None:
        raise UserError("--input-shape and --torch-kwargs go with --torch")
    elif len(models) == 1 and not Path(models[0]).is_dir():
        model = models[0]
        result = score_model(model, data, weights, **options)
    else:
        _rank(models, data, weights, options, fmt)
        return
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    row = {"model": model, **result.to_dict()}
    click.echo(render([row], fmt, single=True), nl=False)


def _rank(models, data, weights, options: dict, fmt: str) -> None:
    from epsinas_onnx.ranking import model_paths, rank_models

    ranked = rank_models(model_paths(models), data, weights, **options)
    failed = 0
    rows = []
    for entry in ranked:
        if entry.result is None:
            failed += 1
            details = {"score": None, "nan_reason": None}
        else:
            for warning in entry.result.warnings:
                click.echo(f"warning: {entry.model}: {warning}", err=True)
            details = entry.result.to_dict()
        if fmt == "table":
            note = f"error: {entry.error}" if entry.error else details["nan_reason"]
            score_value = entry.result.score if entry.result is not None else None  # nan stays nan, an error is blank
            rows.append({"rank": entry.rank, "score": score_value, "model": entry.model, "note": note})
        else:
            rows.append({"rank": entry.rank, "model": entry.model, "score": details["score"], "nan_reason": details["nan_reason"],
                         "error": entry.error, "seconds": details.get("seconds"), "input": details.get("input"),
                         "weights": details.get("weights"), "warnings": details.get("warnings", [])})
    click.echo(render(rows, fmt), nl=False)
    if failed:
        raise UserError(f"{failed} of {len(ranked)} models could not be scored (their rows say why)")


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--weight", type=float, default=None, help="Bake this weight in; without it the model keeps the scalar input 'epsinas_weight'.")
@click.option("-o", "--out", "out", type=click.Path(dir_okay=False), default=None, help="Where to write the rewritten model.")
@click.option("--explain", is_flag=True, help="List every constant tensor with its role, and what channel collapse did.")
@click.option("--collapse/--no-collapse", default=False, show_default=True, help="Also collapse channels (the graph then runs at reduced width).")
@policy_options
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
def rewrite(model, weight, out, explain, collapse, bn_gamma, bias, embedding, weight_init, weight_seed, fmt):
    """Write MODEL rewritten for scoring, and/or explain the role of each tensor."""
    from epsinas_onnx.model_io import load_model
    from epsinas_onnx.rewrite import fix_weight, policy_for, rewrite_for_scoring, to_onnx

    if out is None and not explain:
        raise UserError("rewrite needs -o OUT.onnx, --explain, or both")
    if weight is not None and not math.isfinite(weight):
        raise UserError(f"--weight must be a finite number, not {weight}")
    if weight is not None:
        from epsinas_onnx.scorer import check_float32

        check_float32(weight, "--weight")
    ir_model = load_model(model)
    policy = policy_for(ir_model, bn_gamma, bias, embedding, **init_settings(weight_init, weight_seed))
    rewritten = rewrite_for_scoring(ir_model, policy, collapse=collapse)
    for warning in rewritten.warnings:
        click.echo(f"warning: {warning}", err=True)
    if explain:
        # what collapse would do, also when the written model stays full width
        report = rewritten.collapse or rewrite_for_scoring(load_model(model), policy, collapse=True).collapse
        click.echo(report.summary(), err=True)
        for where in report.expanded:
            click.echo(f"  expanded to full width at {where}", err=True)
        rows = [
            {"tensor": r.name, "shape": "x".join(map(str, r.shape)) or "scalar", "role": r.role.value,
             "read by": " ".join(r.readers) or "-", "also": " ".join(a.value for a in r.also)}
            for r in rewritten.roles
        ]
        click.echo(render(rows, fmt), nl=False)
    if out is not None:
        if weight is not None:
            fix_weight(rewritten.model, weight)
        write_atomically(Path(out), to_onnx(rewritten.model).SerializeToString())
        click.echo(f"wrote {out}", err=True)


SPACES = click.Choice(["nb201", "nb101", "nlp"])


@cli.command()
@click.argument("space", type=SPACES)
@click.argument("arch")
@click.option("-o", "--out", "out", type=click.Path(dir_okay=False), required=True, help="Where to write the model.")
@click.option("--num-classes", type=int, default=None, help="Classifier outputs (nb201, nb101; default 1, as scored).")
@click.option("--resolution", type=int, default=None, help="Input size (nb201: 32, or 16 for ImageNet16-120).")
@click.option("--vocab-size", type=int, default=None, help="Vocabulary size (nlp).")
def export(space, arch, out, num_classes, resolution, vocab_size):
    """Export ARCH of a benchmark SPACE to ONNX.

    \b
    nb201: the arch string, e.g. '|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|'
    nb101: JSON {"matrix": [[...]], "ops": [...]} or a file holding it
    nlp:   a recipe JSON file, or the JSON itself
    """
    from epsinas_onnx.spaces import get_space

    module = get_space(space)
    options = {"num_classes": num_classes, "resolution": resolution, "vocab_size": vocab_size}
    given = {k: v for k, v in options.items() if v is not None}
    accepted = inspect.signature(module.to_onnx).parameters
    for key in given:
        if key not in accepted:
            raise UserError(f"--{key.replace('_', '-')} does not apply to {space}")
    parsed = module.parse(_text_or_file(arch))
    model = module.to_onnx(parsed, **given)
    write_atomically(Path(out), model.SerializeToString())
    click.echo(f"wrote {out} ({space} {module.format_arch(parsed)})", err=True)


@cli.command()
@click.argument("space", type=SPACES)
@click.option("--sample", "n", type=int, default=None, help="Draw N architectures uniformly.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--all", "everything", is_flag=True, help="Every architecture (nb201 only).")
@click.option("--params", is_flag=True, help="Add the parameter count (10-class head).")
def space(space, n, seed, everything, params):
    """List architectures of a benchmark SPACE, one per line."""
    from epsinas_onnx.spaces import get_space

    module = get_space(space)
    if everything == (n is not None):
        raise UserError("give exactly one of --sample N or --all")
    if everything:
        if not hasattr(module, "all_archs"):
            raise UserError(f"{space} cannot be enumerated here; use --sample N")
        archs = module.all_archs()
    else:
        check_sample(n)
        archs = module.sample(n, seed)
    for arch in archs:
        text = module.format_arch(arch)
        click.echo(f"{text}\t{module.num_params(arch)}" if params else text)


def _text_or_file(arg: str) -> str:
    """An argument that is either the text itself or the path of a file holding it."""
    path = Path(arg)
    if len(arg) < 4096 and path.suffix in (".json", ".txt"):
        from epsinas_onnx.textfile import read_text

        return read_text(path)
    return arg


# ---------------------------------------------------------------- output


def render(rows: list[dict], fmt: str, single: bool = False) -> str:
    if fmt == "json":
        clean = [{k: _json_value(v) for k, v in row.items()} for row in rows]
        return json.dumps(clean[0] if single else clean, indent=2) + "\n"
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else [], lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _text(v) for k, v in row.items()})
        return buffer.getvalue()
    if single and rows:
        width = max(len(k) for k in rows[0])
        return "".join(f"{k:<{width}}  {_text(v)}\n" for k, v in rows[0].items())
    return table(rows)


def table(rows: list[dict]) -> str:
    if not rows:
        return "(no rows)\n"
    columns = list(rows[0])
    cells = [[_text(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in cells]
    return "\n".join(lines) + "\n"


def _json_value(v):
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, tuple):
        return list(v)
    return v


def _text(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.6g}"
    if isinstance(v, (list, tuple)):
        return " ".join(_text(x) for x in v) if not all(isinstance(x, str) for x in v) else "; ".join(v)
    return str(v)


def write_atomically(path: Path, payload: bytes) -> None:
    """Write `payload` to `path` whole or not at all."""
    atomic.write_atomically(path, lambda f: f.write(payload))


# ---------------------------------------------------------------- bench, results, evaluate (cli_bench.py)

from epsinas_onnx import cli_bench  # noqa: E402  (it imports the helpers above)

cli.add_command(cli_bench.bench)
cli.add_command(cli_bench.results)
cli.add_command(cli_bench.evaluate)

from epsinas_onnx import cli_search  # noqa: E402  (search, calibrate, ablate)

cli.add_command(cli_search.search)
cli.add_command(cli_search.calibrate)
cli.add_command(cli_search.ablate)


# ---------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> int:
    """Run the CLI: one line on stderr and exit 1 for any user error, never a traceback."""
    try:
        cli.main(args=argv, prog_name="epsinas-onnx", standalone_mode=False)
    except UserError as exc:
        click.echo(f"error: {exc}", err=True)
        return 1
    except click.UsageError as exc:
        command = exc.ctx.command_path if exc.ctx else "epsinas-onnx"
        click.echo(f"error: {exc.format_message()} (see {command} --help)", err=True)
        return 1
    except click.exceptions.Abort:
        click.echo("error: interrupted", err=True)
        return 130
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        return 1
    except KeyboardInterrupt as stop:  # Ctrl-C 130; SIGTERM / SIGHUP (stop_signals.StopSignal) 143 / 129
        click.echo("error: interrupted", err=True)
        return 128 + getattr(stop, "signum", 2)
    except MemoryError as exc:
        detail = (str(exc).strip().splitlines() or [""])[0][:200]
        click.echo(f"error: out of memory{f' ({detail})' if detail else ''}: try a smaller --batch-size", err=True)
        return 1
    except Exception as exc:  # the promise: never a traceback
        if os.environ.get("EPSINAS_DEBUG"):
            raise
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        click.echo(f"error: internal error ({type(exc).__name__}: {first}); rerun with EPSINAS_DEBUG=1 and report it", err=True)
        return 3
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
