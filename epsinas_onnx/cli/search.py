"""The search, calibrate and ablate commands: experiments over stored or freshly computed scores."""

from __future__ import annotations

import json
import math

import click

from epsinas_onnx.cli.option_groups import (DEFAULT_STORE, SPACES, TABLE_OR_JSON, Number, OutputFile, arch_column_option,
                                            batch_options, batch_size_option, collapse_option, data_option, dataset_option, device_option,
                                            direction_option, format_option, init_settings, input_seed_option, norm_option, seq_len_option, mode_option,
                                            plot_option, policy_options, progress_option, rank_by_option,
                                            target_column_option, target_source_options, weights_option)
from epsinas_onnx.cli.render import say, show_rows, top64_text
from epsinas_onnx.core.errors import UserError
VARIANTS = ("random", "random+warmup", "evolution", "evolution+warmup", "evolution+move", "evolution+warmup+move")


def _options(fn, options):
    for option in reversed(options):
        fn = option(fn)
    return fn


def target_options(fn):
    """Where the targets ("trained accuracies") come from, as for `evaluate`."""
    return _options(target_source_options(fn), [
        dataset_option, arch_column_option, target_column_option, direction_option,
    ])


def store_options(fn):
    """The store the scores come from (--mode: its rows in that scoring mode), and the input options for
    scoring missing architectures on demand."""
    return _options(mode_option(fn), [
        rank_by_option,
        click.option("--store", default=DEFAULT_STORE, show_default=True, type=OutputFile(),
                     help="The results store the scores come from; architectures it lacks are scored into it."),
        click.option("--space", type=SPACES, default=None, help="Default: the only space in the store."),
        click.option("--config", default=None, help="The config id, when the store holds several for the space."),
        # on-demand scoring: the batch the store was made with (as `bench`)
        batch_options, device_option,
        click.option("--workers", type=int, default=1, show_default=True, help="On-demand scoring: worker processes."),
        progress_option,
    ])


def run_options(runs_default: int):
    def decorate(fn):
        return _options(fn, [
            click.option("--runs", type=int, default=runs_default, show_default=True, help="Independent runs."),
            click.option("--seed", type=int, default=0, show_default=True, help="Run r draws from seed + r."),
            click.option("--format", "fmt", type=TABLE_OR_JSON, default="table", show_default=True),
        ])
    return decorate


class _Context:
    """Targets and scores of one search command."""

    def __init__(self, opts: dict, needs_scores: bool, select_column: str | None = None):
        from epsinas_onnx.experiments import search
        from epsinas_onnx.experiments.selection import space_of_store, store_scores

        self.opts = opts
        space = opts["space"]
        self.scores = None
        self.config = None
        if needs_scores:
            space, self.scores, self.config = store_scores(opts)
        elif space is None:
            space = space_of_store(opts["store"])
        self.space_name = space
        from epsinas_onnx.spaces import get_space

        self.space = get_space(space)
        from epsinas_onnx.experiments import benchmark_tables

        table = benchmark_tables.targets_table(
            space, accuracies=opts["accuracies"], benchmark_file=opts["benchmark_file"],
            archs=list(self.scores.known) if self.scores is not None else None)
        self.targets = search.load_targets(
            space, table, dataset=opts["dataset"], arch_column=opts["arch_column"],
            target_column=opts["target_column"], lower_is_better=opts["lower_is_better"], select_column=select_column,
        )

    def header(self) -> dict:
        t = self.targets
        out = {"space": self.space_name, "target": t.name, "lower_is_better": t.lower_is_better,
               "best_in_table": t.best()}
        if t.selection_name:
            out["select_by"] = t.selection_name
        if self.config is not None:
            out["config"] = self.config
            out["scored_on_demand"] = self.scores.filled
        return out


def _fmt(stats: dict, digits: int = 2) -> str:
    if not stats["n"]:
        return "-"
    return f"{stats['mean']:.{digits}f} \u00b1 {stats['std']:.{digits}f}"


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _header_line(ctx: _Context) -> str:
    h = ctx.header()
    where = ""
    if ctx.config is not None:
        c = ctx.config
        where = (f"; scores: config {c['id']} (weights {c['weights']}, {c['data_description']}, {c['rows']} stored"
                 f", {h['scored_on_demand']} scored on demand)")
    direction = "lower is better" if h["lower_is_better"] else "higher is better"
    return f"{h['space']}, target {h['target']} ({direction}; best in the table {h['best_in_table']:.4g}){where}"


# ---------------------------------------------------------------- the commands


@click.group()
def search():
    """NAS search with stored scores: pick one of N, random search, ageing
    evolution, and their curves (reference-semantics §9). "Training" is a
    lookup of the target in the packaged table (or --accuracies /
    --benchmark-file). The input options (--data, --batch-size, --norm, ...)
    are for scoring on demand the architectures the store lacks: give those
    the store was made with."""


@search.command()
@click.option("--n", "n", type=int, default=1000, show_default=True, help="Architectures drawn per run.")
@run_options(500)
@click.option("--plot", "plot_path", type=OutputFile(), default=None, help="Histogram of the picks (.png/.pdf/.svg).")
@target_options
@store_options
def pick(n, runs, seed, fmt, plot_path, **opts):
    """Draw N random architectures (with replacement, run r with seed + r),
    keep the best-scored (NaN never), report its target: the paper's Table 3."""
    from epsinas_onnx.experiments import plots
    from epsinas_onnx.experiments import search as lib

    if plot_path:
        plots.check_plot_path(plot_path)
    ctx = _Context(opts, needs_scores=True)
    result = lib.pick_one_of_n(ctx.space, ctx.targets, ctx.scores, n, runs, seed)
    stats = lib.summary(result.targets)
    if plot_path:
        plots.pick_histogram(result, ctx.targets, plot_path, title=f"{ctx.space_name}: pick 1 of {n}, {runs} runs")
    out = {**ctx.header(), "n": n, "runs": runs, "seed": seed, **stats, "all_nan_runs": result.all_nan_runs,
           "distinct_picks": len({p for p in result.picked if p is not None})}
    if fmt == "json":
        click.echo(json.dumps(_clean(out), indent=2))
        return
    say(_header_line(ctx))
    say(
        f"pick 1 of {n}, {runs} runs (seed {seed}): {ctx.targets.name} {_fmt(stats)} "
        f"(median {stats['median']:.2f}, quartiles {stats['q25']:.2f}..{stats['q75']:.2f}, "
        f"{out['distinct_picks']} distinct picks; {result.all_nan_runs} runs drew only NaN scores)"
    )


def _curve_output(ctx: _Context, curves: dict, fmt: str, plot_path, title: str, extra: dict) -> None:
    from epsinas_onnx.experiments import plots
    from epsinas_onnx.experiments import search as lib

    summaries = {name: lib.curve_summary(ctx.targets, c) for name, c in curves.items()}
    if plot_path:
        plots.search_curves(curves, ctx.targets, plot_path, title=title)
    if fmt == "json":
        if len(summaries) == 1:
            (name, s), = summaries.items()
            out = {**ctx.header(), **extra, "variant": name, **s}
        else:
            out = {**ctx.header(), **extra, "variants": summaries}
        click.echo(json.dumps(_clean(out), indent=2))
        return
    say(_header_line(ctx))
    rows = []
    for name, s in summaries.items():
        row = {"variant": name, "runs": s["runs"]}
        for mark, stats in s["at"].items():
            row[f"best@{mark}"] = _fmt(stats)
        row["median"] = round(s["median"], 2)
        rows.append(row)
    show_rows(rows, "table")


@search.command(name="random")
@click.option("--warmup", type=int, default=0, show_default=True,
              help="Score W random architectures and train them best score first (0: plain random search, no scores).")
@click.option("--budget", type=int, default=300, show_default=True, help="Architectures trained per run.")
@run_options(100)
@click.option("--plot", "plot_path", type=OutputFile(), default=None, help="The curve (.png/.pdf/.svg).")
@target_options
@store_options
def random_(warmup, budget, runs, seed, fmt, plot_path, **opts):
    """Random search, plain or with a zero-cost warm-up; the best target found
    after each trained architecture."""
    from epsinas_onnx.experiments import plots
    from epsinas_onnx.experiments import search as lib

    if plot_path:
        plots.check_plot_path(plot_path)
    if warmup and warmup < budget:
        raise UserError(f"--warmup ({warmup}) must be at least --budget ({budget}): the warm-up pool is what is "
                        "trained (or 0 for plain random search)")
    ctx = _Context(opts, needs_scores=warmup > 0)
    curves = lib.random_search(ctx.space, ctx.targets, ctx.scores, budget=budget, warmup=warmup, runs=runs, seed=seed)
    name = f"random+warmup {warmup}" if warmup else "random"
    _curve_output(ctx, {name: curves}, fmt, plot_path, f"{ctx.space_name}: {name}",
                  {"warmup": warmup, "budget": budget, "seed": seed})


@search.command(name="evolution")
@click.option("--warmup", type=int, default=0, show_default=True,
              help="First population = the best-scored of W random architectures (0: random).")
@click.option("--move", is_flag=True, help="The parent is the tournament member with the best score, not accuracy.")
@click.option("--population", type=int, default=64, show_default=True)
@click.option("--tournament", type=int, default=10, show_default=True)
@click.option("--budget", type=int, default=300, show_default=True, help="Architectures trained per run (the first population included).")
@click.option("--select-by", "select_column", default=None,
              help="Column the tournament compares (default: the target; the reference compares validation "
                   "accuracy, e.g. cifar10_valid, and reports test accuracy).")
@run_options(100)
@click.option("--plot", "plot_path", type=OutputFile(), default=None, help="The curve (.png/.pdf/.svg).")
@target_options
@store_options
def evolution_(warmup, move, population, tournament, budget, select_column, runs, seed, fmt, plot_path, **opts):
    """Ageing evolution (Real et al.), plain, with a zero-cost warm-up, and/or
    with zero-cost parent selection (--move)."""
    from epsinas_onnx.experiments import plots
    from epsinas_onnx.experiments import search as lib

    if plot_path:
        plots.check_plot_path(plot_path)
    ctx = _Context(opts, needs_scores=bool(warmup or move), select_column=select_column)
    curves = lib.evolution(ctx.space, ctx.targets, ctx.scores, budget=budget, population=population,
                           tournament=tournament, warmup=warmup, move=move, runs=runs, seed=seed)
    name = "evolution" + (f"+warmup {warmup}" if warmup else "") + ("+move" if move else "")
    _curve_output(ctx, {name: curves}, fmt, plot_path, f"{ctx.space_name}: {name}",
                  {"warmup": warmup, "move": move, "population": population, "tournament": tournament,
                   "budget": budget, "seed": seed})


@search.command()
@click.option("--warmup", type=int, default=3000, show_default=True)
@click.option("--population", type=int, default=64, show_default=True)
@click.option("--tournament", type=int, default=10, show_default=True)
@click.option("--budget", type=int, default=300, show_default=True)
@click.option("--variants", default=",".join(VARIANTS), show_default=True,
              help=f"Comma-separated, of: {', '.join(VARIANTS)}.")
@click.option("--select-by", "select_column", default=None, help="As for `search evolution`.")
@run_options(100)
@click.option("--plot", "plot_path", type=OutputFile(), default=None,
              help="All variants in one figure (.png/.pdf/.svg): the paper's Fig. 5.")
@target_options
@store_options
def curves(warmup, population, tournament, budget, variants, select_column, runs, seed, fmt, plot_path, **opts):
    """Best target found against trained architectures for random search and
    ageing evolution, with and without the zero-cost warm-up and move."""
    from epsinas_onnx.experiments import plots
    from epsinas_onnx.experiments import search as lib

    if plot_path:
        plots.check_plot_path(plot_path)
    chosen = [v.strip() for v in variants.split(",") if v.strip()]
    unknown = [v for v in chosen if v not in VARIANTS]
    if unknown or not chosen:
        raise UserError(f"unknown variant(s) {', '.join(unknown) or '(none given)'}: choose from {', '.join(VARIANTS)}")
    needs_scores = any("warmup" in v or "move" in v for v in chosen)
    if warmup < 1 and needs_scores:
        raise UserError("--warmup must be at least 1 for the warm-up variants")
    if any("random+warmup" == v for v in chosen) and warmup < budget:
        raise UserError(f"--warmup ({warmup}) must be at least --budget ({budget}) for random+warmup")
    ctx = _Context(opts, needs_scores=needs_scores, select_column=select_column)
    out = {}
    for v in chosen:
        w = warmup if "warmup" in v else 0
        if v.startswith("random"):
            out[v] = lib.random_search(ctx.space, ctx.targets, ctx.scores, budget=budget, warmup=w, runs=runs, seed=seed)
        else:
            out[v] = lib.evolution(ctx.space, ctx.targets, ctx.scores, budget=budget, population=population,
                                   tournament=tournament, warmup=w, move="move" in v, runs=runs, seed=seed)
    title = (f"{ctx.space_name} {ctx.targets.name}: warm-up {warmup}, population {population}, tournament "
             f"{tournament}" + (f", tournament by {select_column}" if select_column else "")
             + f"\n{runs} runs: mean (line) and quartiles (band)")
    _curve_output(ctx, out, fmt, plot_path, title,
                  {"warmup": warmup, "population": population, "tournament": tournament, "budget": budget, "seed": seed})


# ---------------------------------------------------------------- calibrate


@click.command()
@click.argument("what", nargs=-1, required=True)
@click.option("--sample", "n", type=int, default=None, help="SPACE: N architectures drawn uniformly (repeats used once).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of --sample.")
@click.option("--archs", "arch_file", type=click.Path(dir_okay=False), default=None, help="SPACE: a file of architectures, as `bench --archs`.")
@click.option("--low", nargs=2, type=Number(), default=(1e-9, 1e-1), show_default=True, metavar="FROM TO", help="w_low grid range.")
@click.option("--high", nargs=2, type=Number(), default=(1e-3, 1e2), show_default=True, metavar="FROM TO", help="w_high grid range.")
@click.option("--per-decade", type=int, default=1, show_default=True, help="Grid points per decade.")
@click.option("--compare", "compare", multiple=True, nargs=2, type=Number(), metavar="W1 W2",
              help="Also report these pairs (must be on the grid); default for a space: the paper's pair.")
@click.option("--accuracies", type=click.Path(dir_okay=False), is_flag=False, flag_value="packaged", default=None,
              help="Targets: for a SPACE a csv as `evaluate`, or given alone the table packaged for the space; "
                   "for model files a csv with a 'model' column.")
@dataset_option
@arch_column_option
@target_column_option
@direction_option
@batch_options
@collapse_option
@policy_options
@device_option
@click.option("--workers", type=int, default=1, show_default=True, help="Worker processes, one model each at a time.")
@click.option("--outputs", "cache", type=OutputFile(), default=None,
              help="An .npz that keeps every output: a rerun with the same batch and settings reuses it.")
@plot_option("Heat maps over the grid (.png/.pdf/.svg).")
@progress_option
@format_option
def calibrate(what, n, seed, arch_file, low, high, per_decade, compare, accuracies, dataset, arch_column, target_column,
              lower_is_better, data, batch_size, shuffle_seed, norm, synthetic, input_seed, seq_len, collapse, bn_gamma,
              bias, embedding, weight_init, weight_seed, device, workers, cache, plot_path, progress, fmt):
    """Sweep weight pairs over a grid and recommend one without accuracies.

    WHAT is a benchmark space (with --sample N or --archs FILE) or a list of
    ONNX model files. Each model runs once per grid weight; every pair
    w_low < w_high is scored from those outputs. Reported per pair: NaN rate,
    share of distinct scores, spread (IQR / median), agreement with the
    neighbouring pairs, and with --accuracies the rank correlations."""
    import stat
    from pathlib import Path

    from epsinas_onnx.experiments import plots

    from epsinas_onnx.experiments import calibrate as lib
    from epsinas_onnx.experiments import evaluation
    from epsinas_onnx.experiments.selection import calibration_targets
    from epsinas_onnx.core.options import BatchOptions

    evaluation.scipy_stats()  # a missing extra: one line, before any work
    if plot_path:
        plots.check_plot_path(plot_path)
    if cache and Path(cache).suffix != ".npz":
        raise UserError(f"--outputs must name an .npz file, not {cache}")
    if cache:
        from epsinas_onnx.core.textfile import check_regular_file, file_status

        folder = file_status(Path(cache).parent, "--outputs folder")
        if folder is None or not stat.S_ISDIR(folder.st_mode):
            raise UserError(f"cannot write {cache}: folder {Path(cache).parent} does not exist")
        if file_status(cache, "--outputs file") is not None:  # read back at the start, written at the end
            check_regular_file(cache, "--outputs file", kind=": it is read back and written again; name an .npz file")
    weights, pairs = lib.weight_grid(low, high, per_decade)
    chosen = calibration_targets(list(what), sample=n, seed=seed, arch_file=arch_file, accuracies=accuracies,
                                 dataset=dataset, arch_column=arch_column, target_column=target_column,
                                 lower_is_better=lower_is_better)
    items, space, targets, lower = chosen.items, chosen.space, chosen.targets, chosen.lower_is_better
    compare = list(compare) or ([chosen.reference_pair] if chosen.reference_pair else [])
    for pair in compare:
        if lib.find_pair([{"w_low": a, "w_high": b} for a, b in pairs], pair) is None:
            raise UserError(f"--compare {pair[0]:g} {pair[1]:g} is not a pair of the grid (w_low in {low[0]:g}..{low[1]:g}, "
                            f"w_high in {high[0]:g}..{high[1]:g}, {per_decade} per decade)")
    # the policy options at their defaults stay out of the settings, so that an --outputs cache
    # written before calibrate took them keeps its key
    settings = {"bn_gamma": bn_gamma, "collapse": collapse, "bias": bias,
                **({"embedding": embedding} if embedding != "uniform" else {}), **init_settings(weight_init, weight_seed)}
    batch = BatchOptions(data=data, batch_size=batch_size, norm=norm, synthetic=synthetic, shuffle_seed=shuffle_seed,
                         seed=input_seed, seq_len=seq_len)
    outputs = lib.collect_outputs(items, weights, batch_options=batch, settings=settings, device=device,
                                  workers=workers, cache=cache, progress=progress)
    rows = lib.pair_table(outputs, pairs, targets, lower_is_better=lower)
    pick = lib.recommend(rows)
    if plot_path:
        plots.calibration_grid(rows, plot_path, title=f"{space or 'models'}: {len(outputs.arrays)} models, {outputs.batch_description}")
    compared = [dict(lib.find_pair(rows, p), compared="yes") for p in compare]
    if fmt == "json":
        out = {"what": space or "models", "models": len(items), "failed": outputs.errors, "weights": weights,
               "batch": outputs.batch_description, "rule": lib.RULE, "recommended": pick,
               "compared": compared, "pairs": rows, "seconds": outputs.seconds}
        click.echo(json.dumps(_clean(out), indent=2))
        return
    table = [{k: (round(v, 3) if isinstance(v, float) and k not in ("w_low", "w_high") else v) for k, v in r.items()}
             for r in rows]
    if fmt == "csv":
        show_rows(table, "csv")
        return
    say(f"{space or 'models'}: {len(outputs.arrays)} of {len(items)} models ran at {len(weights)} weights "
               f"({outputs.batch_description}; {outputs.seconds:.0f} s){'; failed: ' + str(len(outputs.errors)) if outputs.errors else ''}")
    show_rows(table, "table")
    say(f"rule: {lib.RULE}")
    if pick is None:
        say("recommended: none (every score is NaN)")
        return
    for label, r in [("recommended", pick)] + [("compare", c) for c in compared]:
        line = (f"{label}: [{r['w_low']:g}, {r['w_high']:g}]  NaN rate {r['nan_rate']:.2f}, distinct {r['distinct']:.2f}, "
                f"agreement {r['agreement']:.3f}")
        if "spearman" in r:
            line += (f"; Spearman {r['spearman']:.3f} over {r['n_ranked']} (NaN dropped), "
                     f"{r['spearman_nan_last']:.3f} (NaN last)")
        say(line)


# ---------------------------------------------------------------- ablate


@click.command()
@click.argument("space", type=SPACES)
@click.option("--vary", type=click.Choice(["synthetic", "batch-size", "weight-init", "embedding", "init-pair"]),
              required=True, help="The bench option to vary; init-pair: the paper's initialisation ablation (two "
              "independent random initialisations at w = 1, BN gamma 1; computed directly, not stored).")
@click.option("--values", "values_text", required=True,
              help="Comma-separated values, e.g. real,grey,normal,uniform,uniform+ or 8,16,32 or constant,normal.")
@click.option("--repeats", type=int, default=1, show_default=True,
              help="Draws per value (shuffled batches, synthetic seeds, weight seeds): mean and std over them.")
@click.option("--sample", "n", type=int, default=None, help="N architectures drawn uniformly.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of --sample.")
@click.option("--archs", "arch_file", type=click.Path(dir_okay=False), default=None, help="A file of architectures, as `bench --archs`.")
@weights_option()
@target_source_options
@dataset_option
@target_column_option
@data_option
@batch_size_option
@norm_option
@input_seed_option
@seq_len_option
@click.option("--store", default=DEFAULT_STORE, show_default=True, type=OutputFile(),
              help="The results store every value is benched into (values already there are not scored again).")
@click.option("--workers", type=int, default=1, show_default=True)
@device_option
@progress_option
@plot_option("Rank correlations per value (.png/.pdf/.svg); batch sizes on a log axis.")
@format_option
def ablate(space, vary, values_text, repeats, n, seed, arch_file, weights, accuracies, benchmark_file, dataset, target_column, data,
           batch_size, norm, input_seed, seq_len, store, workers, device, progress, plot_path, fmt):
    """Vary one bench option over a sample and evaluate each value (the
    paper's ablations: synthetic inputs, batch size, weight initialisation,
    NLP embedding). The weight pair ablation is `calibrate`."""
    from epsinas_onnx.experiments import plots
    from epsinas_onnx.experiments import ablation, evaluation
    from epsinas_onnx.core.options import BatchOptions
    from epsinas_onnx.experiments.bench import load_arch_file
    from epsinas_onnx.spaces import get_space


    evaluation.scipy_stats()
    if plot_path:
        plots.check_plot_path(plot_path)
    values = ablation.parse_values(vary, values_text)
    module = get_space(space)
    if (n is None) == (arch_file is None):
        raise UserError("give exactly one of --sample N or --archs FILE")
    if n is not None and n < 1:
        raise UserError(f"--sample must be at least 1, not {n}")
    archs = module.sample(n, seed) if n is not None else load_arch_file(module, arch_file)
    if vary == "synthetic" and "real" in values and data is None:
        raise UserError("--values real needs the real batch: give --data")
    from epsinas_onnx.experiments.benchmark_tables import targets_table

    targets = targets_table(space, accuracies=accuracies, benchmark_file=benchmark_file,
                            archs=[module.format_arch(a) for a in archs])
    rows = ablation.run_ablation(space, archs, vary, values, accuracies=targets, dataset=dataset,
                                 target_column=target_column, store=store, repeats=repeats, weights=weights,
                                 batch_options=BatchOptions(data=data, batch_size=batch_size, norm=norm, seed=input_seed,
                                                            seq_len=seq_len),
                                 workers=workers, device=device, progress=progress)
    if plot_path:
        archs_n = len({module.format_arch(a) for a in archs})
        plots.ablation_series(rows, vary, plot_path, title=f"{space}: --vary {vary}, {archs_n} architectures, "
                      f"{repeats} draw(s) per value (error bars: std over draws)")
    if fmt == "json":
        click.echo(json.dumps(_clean({"space": space, "vary": vary, "repeats": repeats, "rows": rows}), indent=2))
        return
    table = []
    for r in rows:
        line = {"value": r["value"], "n": r["n"], "nan": r["nan"]}
        for key in (*ablation.STATISTICS, "spearman_nan_last"):
            v, std = r[key], r.get(f"{key}_std", math.nan) if repeats > 1 else math.nan
            if key == "top64_top5":  # as evaluate prints it: hits / the best-scored looked at
                line[key] = top64_text(v if repeats > 1 else int(v) if math.isfinite(v) else v, r["n_top64"],
                                       std if math.isfinite(std) else None)
                continue
            digits = 1 if key == "top10_top10" else 3
            text = "nan" if not math.isfinite(v) else f"{v:.{digits}f}"
            if math.isfinite(std):
                text += f" \u00b1 {std:.{digits}f}"
            line[key] = text
        table.append(line)
    if fmt == "table":
        say(f"{space}: --vary {vary}, {len({module.format_arch(a) for a in archs})} architectures, "
                   f"{repeats} draw(s) per value; store {store}")
    show_rows(table, fmt)
