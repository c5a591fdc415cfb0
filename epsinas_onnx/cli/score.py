"""The score, rewrite, export and space commands: one model (or several) at a time."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from pathlib import Path

import click

from epsinas_onnx.cli.option_groups import (FORMATS, SPACES, Number, OptionGroup, OutputFile, format_option,
                                            policy_group, proxies_option, rank_by_option, score_batch_group,
                                            score_execution_group, scoring_group,
                                            weights_option)
from epsinas_onnx.cli.render import say, show_rows, warn, write_atomically
from epsinas_onnx.core.errors import UserError


@dataclasses.dataclass(frozen=True)
class TorchSource:
    """score --torch: a PyTorch module from a factory, exported and scored in place of MODEL."""

    factory: str | None = None  # MODULE:CALLABLE; None: no module
    kwargs: dict | None = None
    input_shape: tuple | None = None


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


torch_group = OptionGroup("torch", lambda **values: TorchSource(**values), (
    click.option(
        "--torch", "factory", metavar="MODULE:CALLABLE", default=None,
        help="Score the nn.Module this factory returns, e.g. examples.small_resnet:Net (docs/exporting.md)."),
    click.option(
        "--torch-kwargs", "kwargs", metavar="JSON", default=None, callback=_json_object,
        help="The --torch factory's keyword arguments, a JSON object."),
    click.option(
        "--input-shape", metavar="NxCxHxW", default=None, callback=_shape,
        help="The --torch example input's shape (zeros; the batch dim is exported dynamic)."),
))


def _score_torch_factory(models, source: TorchSource, weights, options: tuple):
    """score --torch: build the module and score it (epsinas_onnx/bridges/torch.py)."""
    if models:
        raise UserError(f"give MODEL or --torch, not both (got {' '.join(models)} and --torch {source.factory})")
    if source.input_shape is None:
        raise UserError("--torch needs --input-shape, the example input's shape (e.g. 1x3x224x224)")
    from epsinas_onnx.bridges import torch as torch_scoring

    if os.getcwd() not in sys.path:  # the user's own factory module, as `python -m` would find it
        sys.path.insert(0, os.getcwd())
    module = torch_scoring.module_from_factory(source.factory, source.kwargs)
    return torch_scoring.score_with(module, source.input_shape, weights, *options)


@click.command()
@click.argument("models", nargs=-1, type=click.Path(), metavar="[MODEL...]")
@weights_option("the pair the model's metadata records (a model `export` wrote), else 1e-7 1")
@score_batch_group
@scoring_group
@score_execution_group
@torch_group
@proxies_option
@rank_by_option
@format_option
def score(models, weights, batch, scoring, execution, torch, proxies, proxy_seed, rank_by, fmt):
    """Score MODEL (an .onnx file), rank several (files, a glob, folders of
    *.onnx) on one batch, or with --torch score a PyTorch module. Exit 0
    whenever a score, NaN included, was computed. Every option at length:
    docs/commands/score.md."""
    from epsinas_onnx.core.scoring.scorer import score_with

    _check_model_arguments(models)
    if torch.factory is not None and (proxies or rank_by):
        raise UserError("--proxy and --rank-by take ONNX models: export the --torch module first (docs/exporting.md)")
    if torch.factory is not None:
        result = _score_torch_factory(models, torch, weights, (batch, scoring, execution))
        model = torch.factory
    elif not models:
        raise UserError("give MODEL (an .onnx file, several, or a folder) or --torch MODULE:CALLABLE")
    elif torch.input_shape is not None or torch.kwargs is not None:
        raise UserError("--input-shape and --torch-kwargs go with --torch")
    elif len(models) == 1 and not _is_folder(models[0]):
        if rank_by:
            raise UserError("--rank-by ranks several models against each other: give two or more")
        model = models[0]
        result = score_with(model, weights, batch, scoring, execution)
    else:
        _rank(models, weights, (batch, scoring, execution), fmt, proxies, rank_by, proxy_seed)
        return
    for warning in result.warnings:
        warn(warning)
    row = {"model": model, **result.to_dict()}
    if proxies:
        from epsinas_onnx.proxies import engine

        values = engine.compute(model, proxies, batch, _proxy_options(proxy_seed), execution)
        errors = engine.errors_line(values)
        if errors:  # a proxy that could not be computed (its run would not fit in memory): one line, exit 1
            raise UserError(errors)
        row.update(_proxy_columns(values, fmt))
    show_rows([row], fmt, single=True)


def _proxy_options(seed: int):
    from epsinas_onnx.proxies.proxy import ProxyOptions

    return ProxyOptions(seed=seed)


def _proxy_columns(values: dict, fmt: str) -> dict:
    """Each proxy's value as a column (and its NaN reason, where it has one); json also its seconds."""
    columns = {}
    for name, result in values.items():
        columns[name] = result.value
        if result.nan_reason:
            columns[f"{name}_nan_reason"] = result.nan_reason
    if fmt == "json":
        columns["proxy_seconds"] = {name: result.seconds for name, result in values.items()}
    return columns


def _check_model_arguments(models) -> None:
    """A MODEL that is a number and no file is a third --weights value (--weights takes two)."""
    for model in models:
        try:
            float(model)
        except ValueError:
            continue
        if _status(model) is None:
            raise click.UsageError(f"MODEL {model!r} is a number, not a file: --weights takes exactly two values "
                                   "(W1 W2), and what follows them is a model")


def _rank(models, weights, options: tuple, fmt: str, proxies=(), rank_by=(), proxy_seed: int = 0) -> None:
    from epsinas_onnx.core.scoring.ranking import model_paths, rank_models

    if proxies or rank_by:
        _rank_population(model_paths(models), weights, options, fmt, proxies, rank_by, proxy_seed)
        return
    ranked = rank_models(model_paths(models), weights, *options)
    scoring_mode = options[1].mode
    failed = 0
    rows = []
    for entry in ranked:
        if entry.result is None:
            failed += 1
            details = {"score": None, "nan_reason": None}
        else:
            for warning in entry.result.warnings:
                warn(f"{entry.model}: {warning}")
            details = entry.result.to_dict()
        # every row names the mode and the pair its score is of (the upper mode scores some at (w2, 10 w2))
        pair = {"mode": details.get("mode", scoring_mode), "scored_weights": details.get("scored_weights")}
        if fmt == "table":
            note = f"error: {entry.error}" if entry.error else details["nan_reason"]
            score_value = entry.result.score if entry.result is not None else None  # nan stays nan, an error is blank
            rows.append({"rank": entry.rank, "score": score_value, **pair, "model": entry.model, "note": note})
        else:
            rows.append({"rank": entry.rank, "model": entry.model, "score": details["score"], "nan_reason": details["nan_reason"],
                         "error": entry.error, **pair, "weights": details.get("weights"), "seconds": details.get("seconds"),
                         "input": details.get("input"), "warnings": details.get("warnings", [])})
    show_rows(rows, fmt)
    if failed:
        raise UserError(f"{failed} of {len(ranked)} models could not be scored (their rows say why)")


def _rank_population(paths, weights, options: tuple, fmt: str, proxies, rank_by, proxy_seed: int) -> None:
    """Several models with their proxies, ranked by the aggregate of rank_by (else by epsinas)."""
    from epsinas_onnx.proxies.population import nan_reasons, rank_models

    ranked = rank_models(paths, weights, *options, proxies=proxies, rank_by=rank_by,
                         proxy_options=_proxy_options(proxy_seed))
    rows, failed = [], 0
    for entry in ranked:
        row = {"rank": entry.rank}
        if rank_by:
            row["aggregate"] = entry.aggregate
        row["epsinas"] = entry.result.score if entry.result is not None else None
        for name in dict.fromkeys((*proxies, *(n for n in rank_by if n != "epsinas"))):
            row[name] = entry.proxies[name].value if name in entry.proxies else None
        row["model"] = entry.model
        if entry.result is None:
            failed += 1
        elif fmt != "table":
            for warning in entry.result.warnings:
                warn(f"{entry.model}: {warning}")
        row["note"] = f"error: {entry.error}" if entry.error else nan_reasons(entry)
        rows.append(row)
    show_rows(rows, fmt)
    if failed:
        raise UserError(f"{failed} of {len(ranked)} models could not be scored (their rows say why)")


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--weight", type=Number(), default=None, help="Bake this weight in; without it the model keeps the scalar input 'epsinas_weight'.")
@click.option("-o", "--out", "out", type=OutputFile(), default=None, help="Where to write the rewritten model.")
@click.option("--explain", is_flag=True, help="What channel collapse did, and the constant tensors of each role.")
@click.option("--tensors", is_flag=True, help="With --explain: every constant tensor on its own row, not grouped by role.")
@click.option("--collapse/--no-collapse", default=False, show_default=True, help="Also collapse channels (the graph then runs at reduced width).")
@policy_group
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
def rewrite(model, weight, out, explain, tensors, collapse, scoring, fmt):
    """Write MODEL rewritten for scoring, and/or explain the role of each tensor."""
    from epsinas_onnx.core.scoring.model_io import load_model
    from epsinas_onnx.core.rewriting.rewrite import fix_weight, policy_for, rewrite_for_scoring, to_onnx

    if tensors and not explain:
        raise UserError("--tensors goes with --explain")
    if out is None and not explain:
        raise UserError("rewrite needs -o OUT.onnx, --explain, or both")
    if weight is not None and not math.isfinite(weight):
        raise UserError(f"--weight must be a finite number, not {weight}")
    if weight is not None:
        from epsinas_onnx.core.scoring.scorer import check_float32

        check_float32(weight, "--weight")
    ir_model = load_model(model)
    policy = policy_for(ir_model, scoring)
    rewritten = rewrite_for_scoring(ir_model, policy, collapse=collapse)
    for warning in rewritten.warnings:
        warn(warning)
    if explain:
        # what collapse would do, also when the written model stays full width; first, on stdout
        # for a table (on stderr for json / csv, whose stdout is the rows alone)
        report = rewritten.collapse or rewrite_for_scoring(load_model(model), policy, collapse=True).collapse
        say(report.summary(), err=fmt != "table")
        for where in report.expanded:
            say(f"  expanded to full width at {where}", err=fmt != "table")
        rows = [
            {"tensor": r.name, "shape": "x".join(map(str, r.shape)) or "scalar", "role": r.role.value,
             "read by": " ".join(r.readers) or "-", "also": " ".join(a.value for a in r.also)}
            for r in rewritten.roles
        ]
        show_rows(rows if tensors else _roles_grouped(rows), fmt)
    if out is not None:
        if weight is not None:
            fix_weight(rewritten.model, weight)
        write_atomically(Path(out), to_onnx(rewritten.model).SerializeToString())
        say(f"wrote {out}", err=True)


def _roles_grouped(rows: list[dict]) -> list[dict]:
    """The per-tensor rows of `rewrite --explain` as one row per role: how many
    tensors, the op inputs that read them, and the first one's name."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["role"], []).append(row)
    out = []
    for role, members in groups.items():
        readers = sorted({reader for m in members for reader in m["read by"].split() if reader != "-"})
        out.append({"role": role, "tensors": len(members), "read by": " ".join(readers[:6]) + (" ..." if len(readers) > 6 else ""),
                    "first": members[0]["tensor"]})
    return out


@click.command()
@click.argument("space", type=SPACES)
@click.argument("arch")
@click.option("-o", "--out", "out", type=OutputFile(), required=True, help="Where to write the model.")
@click.option("--num-classes", type=int, default=None, help="Classifier outputs (the image spaces; default 1, as scored).")
@click.option("--resolution", type=int, default=None, help="Input size (default the space's: nb201 32, or 16 for ImageNet16-120; docs/spaces.md).")
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
    for key in given:
        if key not in module.export_defaults:
            raise UserError(f"--{key.replace('_', '-')} does not apply to {space}")
    parsed = module.parse(_text_or_file(arch))
    model = module.export(parsed, **given)
    write_atomically(Path(out), model.SerializeToString())
    pair = " ".join(f"{w:g}" for w in module.reference_weights)
    say(f"wrote {out} ({space} {module.format_arch(parsed)}; `score` takes its reference weights {pair})", err=True)


@click.command()
@click.argument("space", type=SPACES)
@click.option("--sample", "n", type=int, default=None, help="Draw N architectures uniformly.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--all", "everything", is_flag=True, help="Every architecture (nb201: 15,625; nb101: the 423,624 cells; nlp: the 291 WikiText-2 recipes; docs/spaces.md lists them).")
@click.option("--params", is_flag=True, help="Add the parameter count (10-class head).")
def space(space, n, seed, everything, params):
    """List architectures of a benchmark SPACE, one per line."""
    from epsinas_onnx.spaces import get_space

    module = get_space(space)
    if everything == (n is not None):
        raise UserError("give exactly one of --sample N or --all")
    if everything:
        if not module.enumerable:
            raise UserError(f"{space} cannot be enumerated here; use --sample N")
        archs = module.all_archs()
    else:
        from epsinas_onnx.core.limits import check_sample

        check_sample(n)
        archs = module.sample(n, seed)
    # one write: nb101 --all is 423,624 lines
    texts = map(module.format_arch, archs)
    lines = [f"{text}\t{module.num_params(arch)}" for text, arch in zip(texts, archs)] if params else list(texts)
    if lines:
        click.echo("\n".join(lines))


def _status(path):
    """os.stat of a MODEL argument, None where nothing is there (textfile.file_status)."""
    from epsinas_onnx.core.textfile import file_status

    return file_status(path, "model file")


def _is_folder(path) -> bool:
    import stat

    status = _status(path)
    return status is not None and stat.S_ISDIR(status.st_mode)


def _text_or_file(arg: str) -> str:
    """An argument that is either the text itself or the path of a file holding it."""
    path = Path(arg)
    if len(arg) < 4096 and path.suffix in (".json", ".txt"):
        from epsinas_onnx.core.textfile import read_text

        return read_text(path)
    return arg
