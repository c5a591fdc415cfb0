"""The bench, results and evaluate commands: a benchmark space into a results store, and back out."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import click

from epsinas_onnx.cli.option_groups import (DEFAULT_STORE, FORMATS, PROXY_OPTIONS, SPACES, TARGET_SOURCE_OPTIONS,
                                            OptionGroup, OutputFile, all_option, arch_column_option, archs_group, bench_batch_group,
                                            bench_execution_group, dataset_option, direction_option, format_option, progress_option,
                                            rank_by_option, run_group, sample_seed_option, scoring_group,
                                            side_table_option, store_option, stored_mode_option, target_column_option, target_group,
                                            weights_option)
from epsinas_onnx.cli.render import say, show_rows, top64_text, warn
from epsinas_onnx.core.stop_signals import stoppable


# the space's to_onnx keywords bench takes (those the space does not take are refused)
export_group = OptionGroup("export", lambda **values: values, (
    click.option("--resolution", type=int, default=None,
                 help="Input size (default the space's: nb201 32, or 16 for ImageNet16-120; docs/spaces.md)."),
    click.option("--vocab-size", type=int, default=None, help="Vocabulary size (nlp; default 10,000, PTB's)."),
))


@click.command()
@click.argument("space", type=SPACES)
@archs_group(
    all_option,
    click.option("--sample", type=int, default=None,
                 help="N architectures drawn uniformly (with replacement: repeats are scored once)."),
    sample_seed_option,
    click.option("--archs", "arch_file", type=click.Path(dir_okay=False), default=None,
                 help="A file of architectures, one per line in the space's encoding; nb101 also takes naslib_500.csv / "
                      "test_143.csv, nlp wt2_summary.csv; packaged:NAME takes those of a table shipped with epsinas-onnx "
                      "(packaged:nb101_test_143, packaged:nb101_naslib_500, packaged:nlp_wt2_summary)."))
@weights_option()
@bench_batch_group
@scoring_group
@bench_execution_group
@export_group
@run_group(
    store_option,
    click.option("--workers", type=int, default=None,
                 help="Architectures scored at a time: local, worker processes (default 1); ray, at most this many "
                      "tasks (default: the cluster's CPUs / --threads)."),
    click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
                 help='local: worker processes on this machine; ray: tasks on a Ray cluster (pip install '
                      '"epsinas-onnx[ray]"). Either way this process alone writes the store.'),
    click.option("--address", default=None,
                 help="Ray: the cluster to use (HOST:PORT of its head, or auto); default RAY_ADDRESS, else a new local "
                      "Ray instance."),
    click.option("--chunk", type=int, default=None,
                 help="Ray: architectures per task (default: enough for 4 tasks per worker, at most 16)."),
    click.option("--limit", type=int, default=None,
                 help="Score at most K architectures not yet stored, then stop (rerun to go on)."),
    progress_option,
    *PROXY_OPTIONS)
@stoppable  # SIGTERM / SIGHUP are Ctrl-C from here on, before the slow imports
def bench(space, archs, weights, batch, scoring, execution, export, run):
    """Score architectures of a benchmark SPACE into a results store.

    Rows already stored under the same weights, batch and settings are skipped,
    so a rerun of an interrupted (or killed) command resumes it. --weights
    default: the space's reference pair (nb201 1e-7 1, nb101 1e-4 10, nlp 1e-5 1e-3).
    """
    from epsinas_onnx.experiments.bench import BenchInterrupted, run_bench, selected_archs
    from epsinas_onnx.spaces import get_space

    chosen = selected_archs(get_space(space), archs, offers_all=True)
    try:
        summary = run_bench(space, chosen, weights, batch=batch, scoring=scoring, execution=execution, export=export,
                            run=run)
    except BenchInterrupted as stop:
        say(str(stop), err=True)
        raise SystemExit(128 + stop.signum) from None  # Ctrl-C 130, SIGTERM 143, SIGHUP 129
    for warning in summary.warnings:
        warn(warning)
    say(summary.line())
    if summary.proxies_line():
        say(summary.proxies_line())


def _open(store):
    from epsinas_onnx.experiments.store import ResultStore

    return ResultStore(store, create=False)


LIST_COLUMNS = ("space", "arch", "score", "nan_reason", "error", "params", "seconds")
FULL_COLUMNS = (*LIST_COLUMNS, "weights", "data", "data_description", "settings", "config", "device", "created")


@click.command()
@click.option("--store", default=DEFAULT_STORE, show_default=True, type=OutputFile())
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
    show_rows(rows, fmt)


@click.command()
@click.option("--store", default=DEFAULT_STORE, show_default=True, type=OutputFile())
@click.option("--space", type=SPACES, default=None, help="Default: the only space in the store.")
@target_group(*TARGET_SOURCE_OPTIONS, dataset_option, arch_column_option, target_column_option, direction_option)
@side_table_option("baselines", "Other proxies over the space, side by side (packaged: nb201 NASWOT and Zen-score, "
                   "nb101 naslib_500's proxies)")
@side_table_option("proxies", "Other proxies on a subset, each row on the architectures it covers, epsinas beside them "
                   "(packaged: nb201 the NAS-Bench-Suite-Zero proxies of 725 architectures, nb101 naslib_500's)")
@click.option("--config", default=None, help="The config id, when the store holds several for the space.")
@stored_mode_option
@click.option("--plot", "plot_path", type=OutputFile(), default=None, help="Write score vs target (.png, .pdf, .svg).")
@rank_by_option
@format_option
def evaluate(store, space, targets, baselines, proxies, config, mode, plot_path, rank_by, fmt):
    """Rank correlations and top-k agreement of stored scores with a target
    (reference-semantics §8), next to other proxies: each row on the
    architectures it covers, the proxies bench --proxies stored on those they
    all cover (docs/commands/bench.md, docs/proxies.md)."""
    from epsinas_onnx.experiments import benchmark_tables, evaluation

    from epsinas_onnx.experiments.selection import row_mode, rows_by_mode, space_rows, stored_proxies

    evaluation.scipy_stats()  # a missing extra: one line, before any work
    space, rows = space_rows(store, space)
    rows, other_modes = rows_by_mode(rows, config, mode)
    table = benchmark_tables.targets_table(space, accuracies=targets.accuracies, benchmark_file=targets.benchmark_file,
                                           archs=[r["arch"] for r in rows])
    baselines = benchmark_tables.side_table(space, baselines, "baselines")
    proxies = benchmark_tables.side_table(space, proxies, "proxies")
    report = evaluation.evaluate(rows, space, dataclasses.replace(targets, accuracies=table), baselines=baselines,
                                 proxies=proxies, mode=row_mode(rows[0]), other_modes=other_modes,
                                 stored=evaluation.StoredProxies(stored_proxies(store, rows), rank_by))
    first = rows[0]
    report["config"] = {"id": first["config"], "weights": json.loads(first["weights"]), "data": first["data"],
                        "data_description": first["data_description"], "settings": json.loads(first["settings"])}
    if plot_path is not None:
        from epsinas_onnx.experiments import plots

        plots.score_vs_target(report, Path(plot_path))
    few = evaluation.few_architectures(report)
    if few:
        listed = ", ".join(f"{r['proxy']} {r['n']}" for r in few[:4]) + (", ..." if len(few) > 4 else "")
        warn(f"{len(few)} row(s) rest on fewer than {evaluation.FEW_ARCHITECTURES} architectures "
             f"({listed}): their statistics are mostly noise")
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
        say(
            f"{space} vs {report['target']} ({direction}; from {report['targets_from']}), config {first['config']} (weights {first['weights']}, "
            f"{first['data_description']}): {c['stored']} stored, {c['errors']} errors, "
            f"{c['no_target']} without a target; {c['compared']} compared{extra}"
        )
    show_rows(table, fmt)


def _clean(v):
    return None if isinstance(v, float) and math.isnan(v) else v


def _table_row(r: dict) -> dict:
    return {
        "proxy": r["proxy"], "n": r["n"], "nan": r["nan_dropped"] or r["nan_last"],
        "spearman": _round(r["spearman"]), "n_top10": r["n_top10"], "spearman_top10": _round(r["spearman_top10"]),
        "kendall": _round(r["kendall"]), "kendall_top10": _round(r["kendall_top10"]),
        "top10_top10": _round(r["top10_top10"], 2), "top64_top5": top64_text(r["top64_top5"], r["n_top64"]),
    }


def _round(v: float, digits: int = 3):
    return v if math.isnan(v) else round(v, digits)
