"""evaluate: how well stored scores rank architectures (reference-semantics §8).

`statistics(score, target)` computes, over the architectures whose score and
target are both finite (the dropped count is reported):

    spearman, kendall              global rank correlations (scipy.stats)
    spearman_top10, kendall_top10  the same on the top 10 % by target (target > P90)
    top10_top10                    100 * |target > P90(target) and score > P90(score)| / |score > P90(score)|
    top64_top5                     how many of the 64 best-scored have target > P95(target)

With nan="last" NaN scores are kept and ranked below every other score (tied
among themselves) instead of dropped. For a target where lower is better (a
loss), "top" means the lowest values, and the correlations are negative when
the score works.

`evaluate` joins a results store with a table of targets (accuracies) and
optional side tables of other proxies (each a tables.Table or a csv path).
epsinas, its other stored modes and the parameter count are computed on
every scored architecture with a target; a side table's proxies on the
architectures that table covers, with epsinas beside them on the same ones
where they are fewer. scipy and matplotlib are the `eval` extra, imported on use.
"""

from __future__ import annotations

import dataclasses
import math
import re
import warnings

import numpy as np

from epsinas_onnx.core.tables import as_table, number_or_nan, pick_column
from epsinas_onnx.core.errors import UserError
from epsinas_onnx.core.options import TargetOptions

EXTRA_HINT = 'pip install "epsinas-onnx[eval]"'

# columns of a side table that are not proxies
NOT_PROXIES = {"index", "dataset", "task", "naslib_idx", "naslib_tuple", "arch", "arch_str", "cell", "adjacency", "ops",
               "recepie", "recepie_id", "status", "epochs_logged"}
DATASET_COLUMNS = ("dataset", "task")  # a table of several data sets' rows names each row's in one of these
FAILED_MARKER = -1e8  # baselines.csv: a failed Zen-score


def scipy_stats():
    """scipy.stats, or one line naming the extra that installs it."""
    try:
        from scipy import stats
    except ImportError:
        raise UserError(f"evaluate needs scipy: {EXTRA_HINT}") from None
    return stats


# ---------------------------------------------------------------- the statistics


def statistics(score, target, *, nan: str = "drop", lower_is_better: bool = False) -> dict:
    """The §8 statistics of `score` against `target` (equal-length sequences).
    Architectures with a non-finite target are always left out (counted in
    `no_target`); NaN scores are dropped (counted in `nan_dropped`) or, with
    nan="last", ranked last (counted in `nan_last`)."""
    stats = scipy_stats()
    score = np.asarray(score, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if score.shape != target.shape or score.ndim != 1:
        raise ValueError("score and target must be 1-D arrays of the same length")
    has_target = np.isfinite(target)
    missing = ~np.isfinite(score) & has_target
    result = {"n": 0, "nan_dropped": 0, "nan_last": 0, "no_target": int((~has_target).sum())}
    if nan == "drop":
        keep = has_target & ~missing
        s, t = score[keep], target[keep]
        result["nan_dropped"] = int(missing.sum())
    elif nan == "last":
        s = np.where(missing, -np.inf, score)[has_target]
        s = stats.rankdata(s)  # NaN tied below everything; ranks keep every statistic below unchanged
        t = target[has_target]
        result["nan_last"] = int(missing.sum())
    else:
        raise ValueError(f"nan must be 'drop' or 'last', not {nan!r}")
    n = len(s)
    result["n"] = n
    good = -t if lower_is_better else t  # higher = better, for the top-k statistics
    result["spearman"], result["kendall"] = _correlations(stats, s, t)
    if n:
        top = good > np.percentile(good, 90)
        result["n_top10"] = int(top.sum())
        result["spearman_top10"], result["kendall_top10"] = _correlations(stats, s[top], t[top])
        best_scored = s > np.percentile(s, 90)
        result["top10_top10"] = 100.0 * float((top & best_scored).sum()) / best_scored.sum() if best_scored.any() else math.nan
        order = np.argsort(-s, kind="stable")[:64]
        result["n_top64"] = len(order)
        result["top64_top5"] = int((good[order] > np.percentile(good, 95)).sum())
    else:
        result.update(n_top10=0, spearman_top10=math.nan, kendall_top10=math.nan, top10_top10=math.nan,
                      n_top64=0, top64_top5=0)
    return result


def _correlations(stats, s: np.ndarray, t: np.ndarray) -> tuple[float, float]:
    """Spearman rho and Kendall tau; NaN where undefined (fewer than 2 points, a constant)."""
    if len(s) < 2 or np.all(s == s[0]) or np.all(t == t[0]):
        return math.nan, math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rho = stats.spearmanr(s, t).statistic
        tau = stats.kendalltau(s, t).statistic
    return float(rho), float(tau)


# ---------------------------------------------------------------- tables keyed by architecture


def _norm_name(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def read_keyed(path, space, *, arch_column: str, columns: list[str], dataset: str | None = None,
               failed_marker: float | None = None) -> tuple[dict[str, dict[str, float]], int]:
    """{format_arch text: {column: value}} from a csv file; rows repeating an
    architecture are averaged (their number is returned too). A `dataset`
    (or `task`) column, when present and `dataset` is given, keeps only that
    data set's rows."""
    table = as_table(path)
    names, rows = table.columns, table.rows
    for column in [*arch_column.split(","), *columns]:
        if column not in names:
            raise UserError(f"{path} has no column {column!r}; its columns are {', '.join(names)}")
    split = next((c for c in DATASET_COLUMNS if c in names), None)
    if dataset is not None and split is not None:
        rows = [r for r in rows if _norm_name(r[split]) == _norm_name(dataset)]
        if not rows:
            raise UserError(f"{path} has no rows for data set {dataset!r}")
    gathered: dict[str, list[list[float]]] = {}
    canonical: dict[str, str] = {}
    for line, row in enumerate(rows, start=2):
        text = " ".join(row[c] for c in arch_column.split(","))
        key = canonical.get(text)
        if key is None:
            try:
                key = space.format_arch(space.parse(text))
            except UserError as exc:
                raise UserError(f"{path}, line {line}: {exc}") from None
            canonical[text] = key
        values = [number_or_nan(row[c]) for c in columns]
        if failed_marker is not None:
            values = [math.nan if v <= failed_marker else v for v in values]
        gathered.setdefault(key, []).append(values)
    repeated = sum(len(v) > 1 for v in gathered.values())
    out = {}
    for key, lists in gathered.items():
        array = np.array(lists, dtype=np.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
            means = np.nanmean(array, axis=0) if len(lists) > 1 else array[0]
        out[key] = dict(zip(columns, (float(v) for v in means)))
    return out, repeated


def proxy_columns(path, arch_column: str, exclude: set[str]) -> list[str]:
    table = as_table(path)
    names, rows = table.columns, table.rows
    skip = NOT_PROXIES | set(arch_column.split(",")) | exclude
    numeric = []
    for name in names:
        if name in skip or "accuracy" in name or "_acc" in name:  # targets, not proxies
            continue
        if any(number_or_nan(r[name]) == number_or_nan(r[name]) for r in rows[:50]):  # some numeric value
            numeric.append(name)
    return numeric


# ---------------------------------------------------------------- evaluate


@dataclasses.dataclass(frozen=True)
class StoredProxies:
    """The other proxies bench --proxies stored for the architectures
    evaluated (label -> {arch: value}; selection.stored_proxies), and the
    names whose rank aggregate is one more row (--rank-by)."""

    values: dict = dataclasses.field(default_factory=dict)
    rank_by: tuple[str, ...] = ()


def target_spec(space, table, targets: TargetOptions) -> TargetOptions:
    """What a table of targets is read as: `targets` with each choice left
    None set to the space's default (protocol.Space: datasets, arch_columns,
    target_columns, lower_is_better) and `table` as its accuracies."""
    dataset = space.dataset_or_default(targets.dataset)
    names = table.columns
    arch_column = targets.arch_column or pick_column(names, space.arch_columns, "architecture", table, "--arch-column")
    target_column = targets.target_column
    if target_column is None:
        target_column = pick_column(names, space.target_candidates(dataset), "target", table, "--target-column")
    lower_is_better = space.lower_is_better if targets.lower_is_better is None else targets.lower_is_better
    return dataclasses.replace(targets, accuracies=table, dataset=dataset, arch_column=arch_column,
                               target_column=target_column, lower_is_better=lower_is_better)


def evaluate(rows: list[dict], space: str, targets: TargetOptions, *, baselines=None, proxies=None,
             mode: str = "reference", other_modes: dict[str, list[dict]] | None = None,
             stored: StoredProxies = StoredProxies()) -> dict:
    """The statistics of stored `rows` (one space, one config; from
    ResultStore.rows) against the targets (targets.accuracies: a Table or a
    csv path; its other fields pick the column, default the space's), with
    side-by-side rows for the parameter count and any baseline / proxy tables.
    Each row keeps the architectures it has: epsinas and params every one
    scored without error with a finite target; a side table's proxies those
    it covers, where "epsinas (baselines' subset)" / "(proxies' subset)"
    repeats epsinas on them when they are fewer. mode: the scoring mode of
    `rows`; other_modes: the rows of the same config in other modes (mode ->
    rows), each given its two rows beside the first. stored: the proxies
    bench --proxies stored for these architectures (StoredProxies.values:
    label -> {arch: value}), each a row on the architectures every one of
    them covers, with epsinas and params again on those where they are fewer;
    StoredProxies.rank_by: names among "epsinas" (the scores of `rows`) and
    the stored proxies' labels (a name listed twice counts twice): one more
    row, their rank aggregate over those architectures (proxies.aggregate,
    the population being them)."""
    from epsinas_onnx.spaces import get_space

    module = get_space(space)
    # each table read once (a path is read here; a packaged table is decompressed once)
    accuracies = as_table(targets.accuracies)
    baselines = None if baselines is None else as_table(baselines)
    proxies = None if proxies is None else as_table(proxies)
    spec = target_spec(module, accuracies, targets)
    dataset, arch_column, target_column, lower_is_better = (spec.dataset, spec.arch_column, spec.target_column,
                                                            spec.lower_is_better)
    targets, repeated = read_keyed(accuracies, module, arch_column=arch_column, columns=[target_column],
                                   dataset=dataset)

    scored = [r for r in rows if r["error"] is None]
    errors = len(rows) - len(scored)
    with_target = [r for r in scored if math.isfinite(targets.get(r["arch"], {}).get(target_column, math.nan))]
    counts = {"stored": len(rows), "errors": errors, "no_target": len(scored) - len(with_target),
              "repeated_in_target_file": repeated, "compared": len(with_target)}
    if not with_target:
        raise UserError(
            f"none of the {len(scored)} scored {space} architectures has a finite {target_column!r} in {accuracies} "
            f"(is --space, --arch-column or the file right?)"
        )
    target_of = {r["arch"]: targets[r["arch"]][target_column] for r in with_target}
    score_of = {r["arch"]: r["score"] for r in with_target}
    label = mode_label(mode)

    def rows_on(name: str, values: dict, archs, nan_last: bool = False) -> list[dict]:
        """The statistics of `values` (arch -> value) on `archs`; NaN where a value is missing."""
        archs = list(archs)
        value = [values.get(a, math.nan) for a in archs]
        target = [target_of[a] for a in archs]
        out = [{"proxy": name, **statistics(value, target, lower_is_better=lower_is_better)}]
        if nan_last:
            out.append({"proxy": f"{name} (NaN last)",
                        **statistics(value, target, nan="last", lower_is_better=lower_is_better)})
        return out

    # epsinas, each other stored mode and params keep every architecture they have
    table_rows = rows_on(label, score_of, target_of, nan_last=True)
    for other, other_rows in (other_modes or {}).items():
        values = {r["arch"]: r["score"] for r in other_rows if r["error"] is None}
        covered = [a for a in target_of if a in values]
        counts[f"not_in_{other}_mode"] = len(target_of) - len(covered)
        table_rows += rows_on(mode_label(other), values, covered, nan_last=True)
    params_of = {r["arch"]: math.nan if r["params"] is None else r["params"] for r in with_target}
    table_rows += rows_on("params", params_of, target_of)

    # a side table's proxies on the architectures it covers; where that is fewer
    # than epsinas has, epsinas again on those, so that the comparison is like for like
    for kind, side_table in (("baselines", baselines), ("proxies", proxies)):
        if side_table is None:
            continue
        names = side_table.columns
        if kind == "baselines":
            side_arch = pick_column(names, module.arch_columns, "architecture", side_table, "--arch-column")
            wanted = [c for c in proxy_columns(side_table, side_arch, {target_column})
                      if not (c.startswith("zen_") and dataset is not None and c != f"zen_{dataset}")]
            table, _ = read_keyed(side_table, module, arch_column=side_arch, columns=wanted, failed_marker=FAILED_MARKER)
            prefix = ""
        else:
            side_arch = pick_column(names, (*module.arch_columns, "arch_str"), "architecture", side_table, "--arch-column")
            wanted = proxy_columns(side_table, side_arch, {target_column})
            table, _ = read_keyed(side_table, module, arch_column=side_arch, columns=wanted, dataset=dataset)
            prefix = "zc."
        covered = [a for a in target_of if a in table]
        counts[f"not_in_{kind}"] = len(target_of) - len(covered)
        counts[f"in_{kind}"] = len(covered)
        if not covered:
            continue
        if len(covered) < len(target_of):
            table_rows += rows_on(f"{label} ({kind}' subset)", score_of, covered)
        for column in wanted:
            table_rows += rows_on(f"{prefix}{column}", {a: v[column] for a, v in table.items()}, covered)

    table_rows += _stored_rows(stored.values, stored.rank_by, target_of, score_of, params_of, label, counts, rows_on)

    archs = list(target_of)
    return {
        "space": space, "dataset": dataset, "target": target_column, "lower_is_better": lower_is_better,
        "targets_from": str(accuracies), "mode": mode,
        "counts": counts, "rows": table_rows,
        "points": {"score": [score_of[a] for a in archs], "target": [target_of[a] for a in archs],
                   "params": [params_of[a] for a in archs]},
    }


def _stored_rows(stored: dict, rank_by, target_of: dict, score_of: dict, params_of: dict, label: str, counts: dict,
                 rows_on) -> list[dict]:
    """evaluate's rows of the stored proxies and of the rank-by aggregate, on the
    architectures that have every one of them."""
    unknown = [n for n in rank_by if n != "epsinas" and n not in stored]
    if unknown:
        raise UserError(f"--rank-by {', '.join(dict.fromkeys(unknown))}: not stored for these architectures (stored: "
                        f"{', '.join(stored) or 'none'}; bench --proxies {','.join(dict.fromkeys(unknown))} stores them)")
    covered = [a for a in target_of if all(a in values for values in stored.values())]
    if stored:
        counts["in_stored_proxies"] = len(covered)
    if not covered:
        return []
    out = []
    if stored and len(covered) < len(target_of):
        out += rows_on(f"{label} (stored proxies' subset)", score_of, covered, nan_last=True)
        out += rows_on("params (stored proxies' subset)", params_of, covered)
    for name, values in stored.items():
        out += rows_on(f"{name} (stored)", values, covered)
    if rank_by:
        from epsinas_onnx.proxies.aggregate import of_members

        columns = {name: [score_of[a] if name == "epsinas" else stored[name][a] for a in covered] for name in rank_by}
        out += rows_on(f"rank-by {','.join(rank_by)}", dict(zip(covered, of_members(columns, rank_by))), covered)
    return out


FEW_ARCHITECTURES = 30  # fewer than this: a row's statistics are mostly noise


def few_architectures(report: dict) -> list[dict]:
    """The rows of an evaluate report computed on fewer than FEW_ARCHITECTURES architectures."""
    return [r for r in report["rows"] if r["n"] < FEW_ARCHITECTURES]


def mode_label(mode: str) -> str:
    """The name of the epsinas rows of a scoring mode: "epsinas" for the reference."""
    return "epsinas" if mode == "reference" else f"epsinas [{mode}]"


def _score_rows(label: str, score, target, lower_is_better: bool) -> list[dict]:
    """A mode's two rows: NaN dropped, and NaN ranked last."""
    return [
        {"proxy": label, **statistics(score, target, lower_is_better=lower_is_better)},
        {"proxy": f"{label} (NaN last)", **statistics(score, target, nan="last", lower_is_better=lower_is_better)},
    ]


# ---------------------------------------------------------------- the plot


