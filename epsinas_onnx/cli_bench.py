"""The bench, results and evaluate commands (registered in cli.py).

Import epsinas_onnx.cli, not this module on its own: it borrows cli.py's
option helpers and is imported at the end of cli.py.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import click

from epsinas_onnx.cli import (FORMATS, SPACES, init_settings, input_options, mode_option, policy_options, render,
                              side_table_option, target_source_options, weights_option)
from epsinas_onnx.errors import UserError
from epsinas_onnx.limits import check_sample
from epsinas_onnx.stop_signals import stoppable
from epsinas_onnx.modes import DEFAULT_MODE

DEFAULT_STORE = "epsinas_results.sqlite"  # = bench.DEFAULT_STORE (not imported: keeps --help fast)


@click.command()
@click.argument("space", type=SPACES)
@click.option("--all", "everything", is_flag=True, help="Every architecture of the space (nb201: 15,625; nlp: the 291 WikiText-2 recipes).")
@click.option("--sample", "n", type=int, default=None, help="N architectures drawn uniformly (with replacement: repeats are scored once).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of --sample.")
@click.option("--archs", "arch_file", type=click.Path(dir_okay=False), default=None,
              help="A file of architectures, one per line in the space's encoding; nb101 also takes naslib_500.csv / "
                   "test_143.csv, nlp wt2_summary.csv; packaged:NAME takes those of a table shipped with epsinas-onnx "
                   "(packaged:nb101_test_143, packaged:nb101_naslib_500, packaged:nlp_wt2_summary).")
@click.option("--limit", type=int, default=None, help="Score at most K architectures not yet stored, then stop (rerun to go on).")
@weights_option(default=None)
@input_options(bench=True)
@policy_options
@click.option("--resolution", type=int, default=None, help="Input size (nb201: 32, or 16 for ImageNet16-120; nb101: 32).")
@click.option("--vocab-size", type=int, default=None, help="Vocabulary size (nlp; default 10,000, PTB's).")
@click.option("--store", default=DEFAULT_STORE, show_default=True, type=click.Path(dir_okay=False), help="The SQLite results file (created if absent).")
@click.option("--workers", type=int, default=None,
              help="Architectures scored at a time: local, worker processes (default 1); ray, at most this many "
                   "tasks (default: the cluster's CPUs / --threads).")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help='local: worker processes on this machine; ray: tasks on a Ray cluster (pip install "epsinas-onnx[ray]"). '
                   "Either way this process alone writes the store.")
@click.option("--address", default=None,
              help="Ray: the cluster to use (HOST:PORT of its head, or auto); default RAY_ADDRESS, else a new local Ray instance.")
@click.option("--chunk", type=int, default=None,
              help="Ray: architectures per task (default: enough for 4 tasks per worker, at most 16).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="A progress bar on stderr.")
@mode_option
@stoppable  # SIGTERM / SIGHUP are Ctrl-C from here on, before the slow imports
def bench(space, everything, n, seed, arch_file, limit, weights, data, batch_size, shuffle_seed, norm, synthetic,
          input_seed, seq_len, token_layout, input_name, output, device, collapse, threads, timeout, bn_gamma, bias, embedding,
          weight_init, weight_seed, resolution, vocab_size, store, workers, executor, address, chunk, progress,
          mode):
    """Score architectures of a benchmark SPACE into a results store.

    Rows already stored under the same weights, batch and settings are skipped,
    so a rerun of an interrupted (or killed) command resumes it. --weights
    default: the space's reference pair (nb201 1e-7 1, nb101 1e-4 10, nlp 1e-5 1e-3).
    """
    from epsinas_onnx.bench import BenchInterrupted, load_arch_file, run_bench
    from epsinas_onnx.spaces import get_space

    module = get_space(space)
    chosen = sum([everything, n is not None, arch_file is not None])
    if chosen != 1:
        raise UserError("give exactly one of --all, --sample N or --archs FILE")
    if everything:
        if not hasattr(module, "all_archs"):
            raise UserError(f"{space} cannot be enumerated here; use --sample N or --archs FILE")
        archs = module.all_archs()
    elif n is not None:
        check_sample(n)
        archs = module.sample(n, seed)
    else:
        archs = load_arch_file(module, arch_file)
    export = {"resolution": resolution, "vocab_size": vocab_size}
    settings = {"bn_gamma": bn_gamma, "bias": bias, "embedding": embedding, "output": output, "input_name": input_name,
                "collapse": collapse, **init_settings(weight_init, weight_seed)}
    try:
        summary = run_bench(
            space, archs, weights, data=data, batch_size=batch_size, norm=norm, synthetic=synthetic,
            shuffle_seed=shuffle_seed, seed=input_seed, seq_len=seq_len, token_layout=token_layout,
            export=export, settings=settings, store_path=store, workers=workers, device=device, threads=threads,
            limit=limit, progress=progress, executor=executor, address=address, chunk=chunk, timeout=timeout or None, mode=mode,
        )
    except BenchInterrupted as stop:
        click.echo(str(stop), err=True)
        raise SystemExit(128 + stop.signum) from None  # Ctrl-C 130, SIGTERM 143, SIGHUP 129
    for warning in summary.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(summary.line())


def _open(store):
    from epsinas_onnx.store import ResultStore

    return ResultStore(store, create=False)


LIST_COLUMNS = ("space", "arch", "score", "nan_reason", "error", "params", "seconds")
FULL_COLUMNS = (*LIST_COLUMNS, "weights", "data", "data_description", "settings", "config", "device", "created")


@click.command()
@click.option("--store", default=DEFAULT_STORE, show_default=True, type=click.Path(dir_okay=False))
@click.option("--space", type=SPACES, default=None, help="Only this space.")
@click.option("--config", default=None, help="Only this config id (weights + batch + settings; see --format csv).")
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True,
              help="table: the main columns; csv and json: every column.")
def results(store, space, config, fmt):
    """List the rows of a results store."""
    with _open(store) as db:
        rows = db.rows(space)
    if config is not None:
        rows = [r for r in rows if r["config"] == config]
    columns = LIST_COLUMNS if fmt == "table" else FULL_COLUMNS
    rows = [{c: r[c] for c in columns} for r in rows]
    if fmt == "json":
        rows = [{**r, "weights": json.loads(r["weights"]), "settings": json.loads(r["settings"])} for r in rows]
    click.echo(render(rows, fmt), nl=False)


def config_rows(store, space: str | None, config: str | None, mode: str | None = None) -> tuple[str, list[dict]]:
    """The stored rows of one space (the given one, or the only one there is)
    and one config (see select_config); with `mode`, among that mode's rows only."""
    space, rows = space_rows(store, space)
    if mode is not None:
        rows = [r for r in rows if row_mode(r) == mode]
        if not rows:
            raise UserError(f"the store {store} holds no {space} rows scored in --mode {mode}")
    return space, select_config(rows, config)


def space_rows(store, space: str | None) -> tuple[str, list[dict]]:
    """Every stored row of one space (the given one, or the only one there is)."""
    with _open(store) as db:
        rows = db.rows(space)
    if space is None:
        spaces = sorted({r["space"] for r in rows})
        if len(spaces) != 1:
            raise UserError(f"the store holds spaces {', '.join(spaces) or '(none)'}: pick one with --space")
        space = spaces[0]
    if not rows:
        raise UserError(f"the store {store} holds no {space} rows")
    return space, rows


def row_mode(row: dict) -> str:
    """The scoring mode of a stored row (the reference where its key names none)."""
    return json.loads(row["settings"]).get("mode", DEFAULT_MODE)


def _without_mode(row: dict) -> tuple:
    settings = {k: v for k, v in json.loads(row["settings"]).items() if k != "mode"}
    return row["weights"], row["data"], json.dumps(settings, sort_keys=True)


def rows_by_mode(rows: list[dict], config: str | None) -> tuple[list[dict], dict[str, list[dict]]]:
    """One config's rows (see select_config) and those of the configs that
    differ from it in the scoring mode only (mode -> rows). Without --config a
    store whose configs differ only in the mode is one comparison, the
    reference first."""
    groups: dict[tuple, dict[str, list[dict]]] = {}
    for row in rows:
        groups.setdefault(_without_mode(row), {}).setdefault(row_mode(row), []).append(row)
    if config is None and len(groups) == 1:
        (modes,) = groups.values()
        first = DEFAULT_MODE if DEFAULT_MODE in modes else sorted(modes)[0]
        return modes[first], {m: r for m, r in sorted(modes.items()) if m != first}
    chosen = select_config(rows, config)
    modes = groups[_without_mode(chosen[0])]
    mode = row_mode(chosen[0])
    return chosen, {m: r for m, r in sorted(modes.items()) if m != mode}


def select_config(rows: list[dict], config: str | None) -> list[dict]:
    """The rows of one config: the one given, or the only one there is."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["config"], []).append(row)
    if config is not None:
        if config not in groups:
            raise UserError(f"no rows with config {config!r}; the store has {', '.join(groups) or 'none'}")
        return groups[config]
    if len(groups) > 1:
        described = "; ".join(
            f"{cid}: weights {g[0]['weights']}, data {g[0]['data']} ({g[0]['data_description']}), "
            f"settings {g[0]['settings']}, {len(g)} rows"
            for cid, g in groups.items()
        )
        raise UserError(f"the store holds {len(groups)} configs for this space; pick one with --config ({described})")
    return rows


@click.command()
@click.option("--store", default=DEFAULT_STORE, show_default=True, type=click.Path(dir_okay=False))
@click.option("--space", type=SPACES, default=None, help="Default: the only space in the store.")
@target_source_options
@click.option("--dataset", type=click.Choice(["cifar10", "cifar100", "imagenet16_120"]), default=None,
              help="nb201: the target column, the baselines' zen_ column, the proxies' rows (default cifar10).")
@click.option("--arch-column", default=None, help="Architecture column (default per space; 'a,b' joins two, e.g. adjacency,ops).")
@click.option("--target-column", default=None, help="Target column (default nb201: --dataset; nb101: cifar_acc_108 or val_accuracy; nlp: final_test_loss).")
@click.option("--lower-is-better/--higher-is-better", "lower_is_better", default=None,
              help="The target's direction (default: lower for nlp's loss, else higher).")
@side_table_option("baselines", "Other proxies over the space, side by side (packaged: nb201 NASWOT and Zen-score, "
                   "nb101 naslib_500's proxies)")
@side_table_option("proxies", "Other proxies on a subset; every row is then computed on the architectures it covers "
                   "(packaged: nb201 the NAS-Bench-Suite-Zero proxies of 725 architectures, nb101 naslib_500's)")
@click.option("--config", default=None, help="The config id, when the store holds several for the space.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None, help="Write score vs target (.png, .pdf, .svg).")
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
def evaluate(store, space, accuracies, benchmark_file, dataset, arch_column, target_column, lower_is_better,
             baselines, proxies, config, plot_path, fmt):
    """Rank correlations and top-k agreement of stored scores with a target
    (reference-semantics §8), next to other proxies on the same architectures."""
    from epsinas_onnx import benchmark_tables, evaluation

    evaluation._scipy_stats()  # a missing extra: one line, before any work
    space, rows = space_rows(store, space)
    rows, other_modes = rows_by_mode(rows, config)
    targets = benchmark_tables.targets_table(space, accuracies=accuracies, benchmark_file=benchmark_file,
                                             archs=[r["arch"] for r in rows])
    baselines = benchmark_tables.side_table(space, baselines, "baselines")
    proxies = benchmark_tables.side_table(space, proxies, "proxies")
    report = evaluation.evaluate(
        rows, space, targets, dataset=dataset, arch_column=arch_column, target_column=target_column,
        lower_is_better=lower_is_better, baselines=baselines, proxies=proxies, mode=row_mode(rows[0]),
        other_modes=other_modes,
    )
    first = rows[0]
    report["config"] = {"id": first["config"], "weights": json.loads(first["weights"]), "data": first["data"],
                        "data_description": first["data_description"], "settings": json.loads(first["settings"])}
    if plot_path is not None:
        evaluation.plot(report, Path(plot_path))
    if fmt == "json":
        out = {k: v for k, v in report.items() if k != "points"}
        out["rows"] = [{k: _clean(v) for k, v in r.items()} for r in out["rows"]]
        click.echo(json.dumps(out, indent=2))
        return
    table = [_table_row(r) for r in report["rows"]]
    if fmt == "table":
        c = report["counts"]
        direction = "lower is better" if report["lower_is_better"] else "higher is better"
        extra = "".join(f", {c[k]} {k.replace('_', ' ')}" for k in c if k.startswith("not_in_"))
        click.echo(
            f"{space} vs {report['target']} ({direction}; from {report['targets_from']}), config {first['config']} (weights {first['weights']}, "
            f"{first['data_description']}): {c['stored']} stored, {c['errors']} errors, "
            f"{c['no_target']} without a target{extra}; {c['compared']} compared"
        )
    click.echo(render(table, fmt), nl=False)


def _clean(v):
    return None if isinstance(v, float) and math.isnan(v) else v


def _table_row(r: dict) -> dict:
    return {
        "proxy": r["proxy"], "n": r["n"], "nan": r["nan_dropped"] or r["nan_last"],
        "spearman": _round(r["spearman"]), "n_top10": r["n_top10"], "spearman_top10": _round(r["spearman_top10"]),
        "kendall": _round(r["kendall"]), "kendall_top10": _round(r["kendall_top10"]),
        "top10_top10": _round(r["top10_top10"], 2), "top64_top5": f"{r['top64_top5']}/{r['n_top64']}",
    }


def _round(v: float, digits: int = 3):
    return v if math.isnan(v) else round(v, digits)
