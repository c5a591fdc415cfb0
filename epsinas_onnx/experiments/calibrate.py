"""calibrate: choose the weight pair without accuracies.

Every architecture (or model file) is prepared once and run once at every
weight of a grid (`prepare_model(...).run(batch, w)` takes any w); the score of
each pair (w_low < w_high) is then the metric of two stored outputs, so a grid
of G weights costs G forward passes per model instead of two per pair.

Per pair `pair_table` reports, over the sampled models:

    nan_rate      share of NaN scores (those cannot be ranked)
    distinct      share of distinct values among the finite scores (reported, not
                  used: NAS-Bench-201's isomorphic cells tie at every pair)
    spread        IQR / median of the finite scores
    agreement     mean Spearman rho between this pair's scores and those of the
                  pairs one grid step away (on the models both score): how
                  stable the ranking is when the weights move a little
    spearman ...  with --accuracies: the evaluate statistics (NaN dropped, as
                  the paper), and Spearman with NaN ranked last

`recommend` picks a pair from those label-free columns only (RULE below);
docs/search-and-ablations.md reports how its pick compares with the paper's
hand-picked pairs on NAS-Bench-201, -101 and -NLP.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import warnings
from pathlib import Path

import numpy as np

from epsinas_onnx.core.atomic import write_atomically
from epsinas_onnx.core.errors import UserError
from epsinas_onnx.core.options import (CALIBRATE_EXECUTION, CALIBRATE_KEY, BatchOptions, ExecutionOptions, RunOptions,
                                       ScoringSettings)
from epsinas_onnx.core.scoring.metric import epsinas_score
from epsinas_onnx.experiments.executors import ExecutionJob, check_run_options, progress_bar, run_job

RULE = (
    "among the pairs whose NaN rate is at most the grid's lowest NaN rate + 0.5, the pair with the highest "
    "agreement (mean Spearman rho of its scores with the pairs one grid step away); within 0.01 of that "
    "agreement, the lowest NaN rate, then the largest spread"
)
# Why agreement: where both weights sit on a plateau (w_low small enough that the
# paths through convolutions have vanished, w_high large enough that batch
# statistics have removed the scale) the score measures a limit of the network,
# and moving either weight a decade leaves the ranking as it is; a pair on a
# transition ranks by where each network happens to cross it. The NaN cap keeps
# out pairs that rank few models (e.g. NAS-Bench-NLP at large weights, where the
# recurrent cells saturate), while allowing NAS-Bench-201's 42 % of
# architectures that are NaN at every small w_low.
NAN_SLACK = 0.5
AGREEMENT_TIE = 0.01
SAVE_EVERY = 25  # models between two saves of the --outputs cache


# ---------------------------------------------------------------- the grid


def decades(low: float, high: float, per_decade: int = 1) -> list[float]:
    """low, ..., high in `per_decade` log-even steps per decade (low and high included)."""
    if not (low > 0 and high > 0 and math.isfinite(low) and math.isfinite(high)):
        raise UserError(f"grid ends must be positive finite numbers, not {low:g} and {high:g}")
    if low > high:
        raise UserError(f"grid range {low:g}..{high:g} runs backwards: give the smaller end first")
    if per_decade < 1:
        raise UserError(f"--per-decade must be at least 1, not {per_decade}")
    steps = round(math.log10(high / low) * per_decade)
    values = np.logspace(math.log10(low), math.log10(high), steps + 1) if steps else np.array([low])
    return [float(f"{v:.6g}") for v in values]


def weight_grid(low=(1e-9, 1e-1), high=(1e-3, 1e2), per_decade: int = 1) -> tuple[list[float], list[tuple[float, float]]]:
    """The weights to run and the pairs (w_low from `low`, w_high from `high`, w_low < w_high)."""
    lows, highs = decades(*low, per_decade), decades(*high, per_decade)
    pairs = [(a, b) for a in lows for b in highs if a < b]
    if not pairs:
        raise UserError("the grid holds no pair with w_low < w_high")
    return sorted(set(lows) | set(highs)), pairs


# ---------------------------------------------------------------- running the models


@dataclasses.dataclass
class Item:
    """One model: a name, and what prepare_model takes (a path) or how to build it."""

    name: str
    space: str | None = None  # with `arch`: built by epsinas_onnx.spaces.<space>.to_onnx(arch, **export)
    arch: object = None
    path: str | None = None


@dataclasses.dataclass
class CalibrateJob(ExecutionJob):
    """An executors.Job: an Item's (name, outputs at every weight, error)."""

    label = "calibrate"  # executors.Job: for the executor's messages
    noun = "model"

    batch: np.ndarray
    weights: list[float]
    scoring: ScoringSettings
    execution: ExecutionOptions

    def run(self, item: Item) -> tuple[str, np.ndarray | None, str | None]:
        from epsinas_onnx.core.scoring.scorer import prepare_model

        try:
            if item.space is not None:
                from epsinas_onnx.spaces import get_space

                model, check = get_space(item.space).to_onnx(item.arch), False
            else:
                model, check = item.path, True
            prepared = prepare_model(model, self.scoring, dataclasses.replace(self.execution, check=check))
            out = np.stack([np.asarray(prepared.run(self.batch, w), dtype=np.float32).reshape(-1) for w in self.weights])
            return item.name, out, None
        except Exception as exc:  # one model that fails is reported, not fatal
            text = (str(exc).strip().splitlines() or [""])[0][:300]
            return item.name, None, text if isinstance(exc, UserError) else f"{type(exc).__name__}: {text}"

    def died(self, item: Item, error: str) -> tuple[str, None, str]:
        """A model whose worker process died running it: an error like any other."""
        return item.name, None, error


@dataclasses.dataclass
class Outputs:
    """Per model, its output at every weight (rows follow `weights`)."""

    weights: list[float]
    names: list[str]
    arrays: dict[str, np.ndarray]  # name -> (len(weights), L) float32
    errors: dict[str, str]
    fingerprint: str
    batch_description: str
    settings: str
    seconds: float = 0.0

    def keep(self, result: tuple, cache, bar) -> None:
        """One CalibrateJob result, kept; the cache saved every SAVE_EVERY models."""
        name, out, error = result
        if error is None:
            self.arrays[name] = out
        else:
            self.errors[name] = error
        bar.update(1)
        if cache and (len(self.arrays) + len(self.errors)) % SAVE_EVERY == 0:  # keep what is done if the run is stopped
            self.save(cache)

    def save(self, path) -> None:
        path = Path(path)
        payload = {"meta": np.array(json.dumps({
            "weights": self.weights, "names": list(self.arrays), "errors": self.errors, "fingerprint": self.fingerprint,
            "batch": self.batch_description, "settings": self.settings,
        }))}
        for i, name in enumerate(self.arrays):
            payload[f"out{i}"] = self.arrays[name]
        write_atomically(path, lambda f: np.savez_compressed(f, **payload))


def _load_cache(path, fingerprint: str, weights: list[float], settings: str) -> dict[str, np.ndarray]:
    """Outputs already computed for the same batch, weights and settings. The
    file is opened as every user file is (a FIFO or a device is refused: it is
    written back at the end); one that is not ours, or whose arrays would
    inflate past a quarter of the memory available, is recomputed (and replaced)."""
    import zipfile

    from epsinas_onnx.core.scoring.inputs import available_memory
    from epsinas_onnx.core.textfile import file_status, open_regular_file

    if file_status(path, "--outputs file") is None:
        return {}
    with open_regular_file(path, "--outputs file", kind=": it is read back and written again; name an .npz file") as handle:
        try:
            inflated = sum(i.file_size for i in zipfile.ZipFile(handle).infolist())
            available = available_memory()
            if available is not None and inflated > available / 4:
                return {}
            handle.seek(0)
            with np.load(handle) as data:
                meta = json.loads(str(data["meta"]))
                if (meta["fingerprint"], meta["settings"]) != (fingerprint, settings):
                    return {}
                index = [meta["weights"].index(w) for w in weights]
                return {name: data[f"out{i}"][index] for i, name in enumerate(meta["names"])}
        except (ValueError, KeyError, OSError, json.JSONDecodeError, RecursionError, zipfile.BadZipFile, EOFError,
                TypeError, IndexError):
            return {}  # another batch, other weights, or not ours: recompute


def collect_outputs(items: list[Item], weights: list[float], batch: BatchOptions = BatchOptions(),
                    scoring: ScoringSettings = ScoringSettings(), execution: ExecutionOptions = CALIBRATE_EXECUTION,
                    run: RunOptions = RunOptions(store=None, workers=1)) -> Outputs:
    """Run every item at every weight, run.workers at a time (executors.run_job);
    run.store, an .npz (None: none), keeps outputs between runs (reused when
    the batch, weights and settings match; saved every SAVE_EVERY models and
    at the end, so an interrupted run resumes)."""
    from epsinas_onnx.spaces import get_space

    from epsinas_onnx.core.scoring.scorer import batch_for, prepare_model
    from epsinas_onnx.experiments.store import fingerprint, settings_key

    if not items:
        raise UserError("no models to calibrate on")
    check_run_options(run)
    cache = run.store
    first = items[0]
    model = get_space(first.space).to_onnx(first.arch) if first.space else first.path
    probe = prepare_model(model, scoring, execution)
    fed = batch_for(probe, batch)
    kept = Outputs(list(weights), [i.name for i in items], {}, {}, fingerprint(fed.array), fed.description,
                   settings_key(scoring.key(rule=CALIBRATE_KEY)))
    if cache:
        kept.arrays.update(_load_cache(cache, kept.fingerprint, weights, kept.settings))
    todo = [item for item in items if item.name not in kept.arrays]
    job = CalibrateJob(fed.array, list(weights), scoring, dataclasses.replace(execution, device=probe.device))
    start = time.perf_counter()
    try:
        with progress_bar(len(todo), "calibrate", "model", run.progress) as bar:
            run_job(job, todo, run, lambda result: kept.keep(result, cache, bar))
    finally:
        if cache and todo:
            kept.save(cache)
    kept.seconds = time.perf_counter() - start
    return kept


# ---------------------------------------------------------------- the table


def pair_scores(outputs: Outputs, pairs) -> dict[tuple[float, float], np.ndarray]:
    """The score of every model (in outputs.names order; NaN for a failed model) at every pair."""
    index = {w: i for i, w in enumerate(outputs.weights)}
    names = [n for n in outputs.names if n in outputs.arrays]
    out = {}
    for lo, hi in pairs:
        values = np.full(len(outputs.names), np.nan)
        for j, name in enumerate(outputs.names):
            arr = outputs.arrays.get(name)
            if arr is not None:
                values[j] = epsinas_score(arr[index[lo]], arr[index[hi]])
        out[(lo, hi)] = values
    del names
    return out


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy import stats

    keep = np.isfinite(a) & np.isfinite(b)
    if keep.sum() < 3 or np.all(a[keep] == a[keep][0]) or np.all(b[keep] == b[keep][0]):
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(stats.spearmanr(a[keep], b[keep]).statistic)


def _neighbours(pair, pairs: list, lows: list[float], highs: list[float]) -> list:
    lo, hi = pair
    i, j = lows.index(lo), highs.index(hi)
    out = []
    for di, dj in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        if 0 <= i + di < len(lows) and 0 <= j + dj < len(highs):
            other = (lows[i + di], highs[j + dj])
            if other in pairs:
                out.append(other)
    return out


def pair_table(outputs: Outputs, pairs, targets: dict[str, float] | None = None, *, lower_is_better: bool = False) -> list[dict]:
    """One row per pair: label-free columns, then (with targets) the evaluate statistics."""
    from epsinas_onnx.experiments.evaluation import statistics

    pairs = list(pairs)
    scores = pair_scores(outputs, pairs)
    lows = sorted({p[0] for p in pairs})
    highs = sorted({p[1] for p in pairs})
    failed = np.array([n not in outputs.arrays for n in outputs.names])
    target = None
    if targets is not None:
        target = np.array([targets.get(n, math.nan) for n in outputs.names], dtype=np.float64)
    rows = []
    for pair in pairs:
        s = scores[pair]
        usable = ~failed
        finite = s[np.isfinite(s) & usable]
        n = int(usable.sum())
        row = {"w_low": pair[0], "w_high": pair[1], "n": n,
               "nan_rate": float(1 - len(finite) / n) if n else math.nan,
               "distinct": float(len(np.unique(finite)) / len(finite)) if len(finite) else 0.0}
        if len(finite) >= 2:
            q25, med, q75 = np.quantile(finite, [0.25, 0.5, 0.75])
            row["spread"] = float((q75 - q25) / med) if med > 0 else math.nan
        else:
            row["spread"] = math.nan
        near = [_spearman(s, scores[o]) for o in _neighbours(pair, pairs, lows, highs)]
        near = [v for v in near if math.isfinite(v)]
        row["agreement"] = float(np.mean(near)) if near else math.nan
        if target is not None:
            dropped = statistics(s, target, lower_is_better=lower_is_better)
            last = statistics(s, target, nan="last", lower_is_better=lower_is_better)
            row.update({
                "n_ranked": dropped["n"], "spearman": dropped["spearman"], "kendall": dropped["kendall"],
                "spearman_top10": dropped["spearman_top10"], "top10_top10": dropped["top10_top10"],
                "spearman_nan_last": last["spearman"], "kendall_nan_last": last["kendall"],
            })
        rows.append(row)
    return rows


def recommend(rows: list[dict]) -> dict | None:
    """The pair RULE picks from the label-free columns (nan_rate, agreement,
    spread); None when no pair has a finite score."""
    usable = [r for r in rows if r["n"] and math.isfinite(r["nan_rate"]) and r["nan_rate"] < 1]
    if not usable:
        return None
    lowest = min(r["nan_rate"] for r in usable)
    candidates = [r for r in usable if r["nan_rate"] <= lowest + NAN_SLACK + 1e-12]

    def finite(v):
        return v if math.isfinite(v) else -math.inf

    top = max(finite(r["agreement"]) for r in candidates)
    if math.isfinite(top):
        candidates = [r for r in candidates if finite(r["agreement"]) >= top - AGREEMENT_TIE - 1e-12]
    return min(candidates, key=lambda r: (r["nan_rate"], -finite(r["spread"])))


def find_pair(rows: list[dict], pair) -> dict | None:
    for r in rows:
        if math.isclose(r["w_low"], pair[0], rel_tol=1e-9) and math.isclose(r["w_high"], pair[1], rel_tol=1e-9):
            return r
    return None


# ---------------------------------------------------------------- the plot


