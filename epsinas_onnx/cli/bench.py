"""The bench, results and evaluate commands: a benchmark space into a results store, and back out."""

from __future__ import annotations

import json
import math
from pathlib import Path

import click

from epsinas_onnx.cli.option_groups import (DEFAULT_STORE, FORMATS, SPACES, OutputFile, format_option,
                                            arch_column_option, dataset_option, direction_option,
                                            input_options, mode_option, policy_options, progress_option,
                                            proxies_option, rank_by_option,
                                            sample_seed_option, side_table_option, stored_mode_option,
                                            target_column_option, target_source_options, weights_option)
from epsinas_onnx.cli.render import say, show_rows, top64_text, warn
from epsinas_onnx.core.errors import UserError
from epsinas_onnx.core.stop_signals import stoppable


@click.command()
@click.argument("space", type=SPACES)
@click.option("--all", "everything", is_flag=True, help="Every architecture of the space (nb201: 15,625; nb101: the 423,624 cells; nlp: the 291 WikiText-2 recipes; docs/spaces.md lists them).")
@click.option("--sample", "n", type=int, default=None, help="N architectures drawn uniformly (with replacement: repeats are scored once).")
@sample_seed_option
@click.option("--archs", "arch_file", type=click.Path(dir_okay=False), default=None,
              help="A file of architectures, one per line in the space's encoding; nb101 also takes naslib_500.csv / "
                   "test_143.csv, nlp wt2_summary.csv; packaged:NAME takes those of a table shipped with epsinas-onnx "
                   "(packaged:nb101_test_143, packaged:nb101_naslib_500, packaged:nlp_wt2_summary).")
@click.option("--limit", type=int, default=None, help="Score at most K architectures not yet stored, then stop (rerun to go on).")
@weights_option()
@input_options(bench=True)
@policy_options
@click.option("--resolution", type=int, default=None, help="Input size (default the space's: nb201 32, or 16 for ImageNet16-120; docs/spaces.md).")
@click.option("--vocab-size", type=int, default=None, help="Vocabulary size (nlp; default 10,000, PTB's).")
@click.option("--store", default=DEFAULT_STORE, show_default=True, type=OutputFile(), help="The SQLite results file (created if absent).")
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
@progress_option
@mode_option
@proxies_option
@stoppable  # SIGTERM / SIGHUP are Ctrl-C from here on, before the slow imports
def bench(space, everything, n, seed, arch_file, limit, weights, data, batch_size, shuffle_seed, norm, synthetic,
          input_seed, seq_len, token_layout, input_name, output, device, collapse, threads, timeout, bn_gamma, bias, embedding,
          weight_init, weight_seed, resolution, vocab_size, store, workers, executor, address, chunk, progress,
          mode, proxies, proxy_seed):
    """Score architectures of a benchmark SPACE into a results store.

    Rows already stored under the same weights, batch and settings are skipped,
    so a rerun of an interrupted (or killed) command resumes it. --weights
    default: the space's reference pair (nb201 1e-7 1, nb101 1e-4 10, nlp 1e-5 1e-3).
    """
    from epsinas_onnx.experiments.bench import BenchInterrupted, load_arch_file, run_bench
    from epsinas_onnx.core.options import BatchOptions, ExecutionOptions, ScoringSettings
    from epsinas_onnx.spaces import get_space

    module = get_space(space)
    chosen = sum([everything, n is not None, arch_file is not None])
    if chosen != 1:
        raise UserError("give exactly one of --all, --sample N or --archs FILE")
    if everything:
        if not module.enumerable:
            raise UserError(f"{space} cannot be enumerated here; use --sample N or --archs FILE")
        archs = module.all_archs()
    elif n is not None:
        from epsinas_onnx.core.limits import check_sample

        check_sample(n)
        archs = module.sample(n, seed)
    else:
        archs = load_arch_file(module, arch_file)
    export = {"resolution": resolution, "vocab_size": vocab_size}
    batch = BatchOptions(data=data, batch_size=batch_size, norm=norm, synthetic=synthetic, shuffle_seed=shuffle_seed,
                         seed=input_seed, seq_len=seq_len, token_layout=token_layout, input_name=input_name)
    scoring = ScoringSettings.from_init(weight_init, weight_seed, output=output, bn_gamma=bn_gamma, bias=bias,
                                        embedding=embedding, collapse=collapse, mode=mode)
    execution = ExecutionOptions(device=device, threads=threads, timeout=timeout or None)
    try:
        summary = run_bench(
            space, archs, weights, batch_options=batch, scoring=scoring, execution=execution, export=export,
            store_path=store, workers=workers, limit=limit, progress=progress, executor=executor, address=address,
            chunk=chunk, proxies=proxies, proxy_options=_proxy_options(proxy_seed),
        )
    except BenchInterrupted as stop:
        say(str(stop), err=True)
        raise SystemExit(128 + stop.signum) from None  # Ctrl-C 130, SIGTERM 143, SIGHUP 129
    for warning in summary.warnings:
        warn(warning)
    say(summary.line())


def _proxy_options(seed: int):
    from epsinas_onnx.proxies.proxy import ProxyOptions

    return ProxyOptions(seed=seed)


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
@target_source_options
@dataset_option
@arch_column_option
@target_column_option
@direction_option
@side_table_option("baselines", "Other proxies over the space, side by side (packaged: nb201 NASWOT and Zen-score, "
                   "nb101 naslib_500's proxies)")
@side_table_option("proxies", "Other proxies on a subset, each row on the architectures it covers, epsinas beside them "
                   "(packaged: nb201 the NAS-Bench-Suite-Zero proxies of 725 architectures, nb101 naslib_500's)")
@click.option("--config", default=None, help="The config id, when the store holds several for the space.")
@stored_mode_option
@click.option("--plot", "plot_path", type=OutputFile(), default=None, help="Write score vs target (.png, .pdf, .svg).")
@rank_by_option
@format_option
def evaluate(store, space, accuracies, benchmark_file, dataset, arch_column, target_column, lower_is_better,
             baselines, proxies, config, mode, plot_path, rank_by, fmt):
    """Rank correlations and top-k agreement of stored scores with a target
    (reference-semantics §8), next to other proxies: each row on the
    architectures it covers, the proxies bench --proxies stored on those they
    all cover (docs/commands/bench.md, docs/proxies.md)."""
    from epsinas_onnx.experiments import benchmark_tables, evaluation

    from epsinas_onnx.experiments.selection import row_mode, rows_by_mode, space_rows, stored_proxies

    evaluation.scipy_stats()  # a missing extra: one line, before any work
    space, rows = space_rows(store, space)
    rows, other_modes = rows_by_mode(rows, config, mode)
    targets = benchmark_tables.targets_table(space, accuracies=accuracies, benchmark_file=benchmark_file,
                                             archs=[r["arch"] for r in rows])
    baselines = benchmark_tables.side_table(space, baselines, "baselines")
    proxies = benchmark_tables.side_table(space, proxies, "proxies")
    report = evaluation.evaluate(
        rows, space, targets, dataset=dataset, arch_column=arch_column, target_column=target_column,
        lower_is_better=lower_is_better, baselines=baselines, proxies=proxies, mode=row_mode(rows[0]),
        other_modes=other_modes, stored_proxies=stored_proxies(store, rows), rank_by=rank_by,
    )
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
