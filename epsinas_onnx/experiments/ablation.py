"""ablate: one bench option varied over a sample, each value evaluated (paper section 6).

Every value is an ordinary bench run into the results store (resumable, and a
value already stored is not scored again), then `evaluation.evaluate` on the
rows of that value's config. With `repeats` R > 1 each value is run R times
with another random draw (a shuffled batch, a synthetic seed, a weight seed)
and the statistics are given as mean and standard deviation over the draws.

    synthetic    real (the --data batch), grey, normal, uniform, uniform+
    batch-size   integers; repeats draw random batches (--shuffle-seed r)
    weight-init  constant, normal, uniform, kaiming_normal, kaiming_uniform
                 (every weight w * R; repeats change R's seed)
    embedding    uniform, uniform-0.1, centered, centered-0.1, normal, normal-0.1
    init-pair    normal, uniform, kaiming_normal, kaiming_uniform: the paper's own
                 initialisation ablation (NAS-Bench-201/Ablations.ipynb), which
                 compares two *independent* random initialisations (weight seeds
                 2r and 2r + 1) at w = 1 with BatchNorm gamma 1, instead of one
                 constant at two weights; computed directly, not stored
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np

from epsinas_onnx.core.errors import UserError
from epsinas_onnx.core.options import (BENCH_EXECUTION, BatchOptions, ExecutionOptions, RunOptions, ScoringSettings,
                                       TargetOptions)
from epsinas_onnx.experiments.executors import ExecutionJob

KINDS = ("synthetic", "batch-size", "weight-init", "embedding", "init-pair")
STATISTICS = ("spearman", "kendall", "spearman_top10", "kendall_top10", "top10_top10", "top64_top5")


def parse_values(kind: str, text: str) -> list:
    from epsinas_onnx.core.scoring.inputs import SYNTHETIC
    from epsinas_onnx.core.rewriting.passes.constant_weight import EMBEDDINGS, WEIGHT_INITS

    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values:
        raise UserError("--values is empty")
    allowed = {"synthetic": ("real", *SYNTHETIC), "weight-init": WEIGHT_INITS,
               "embedding": tuple(k for k in EMBEDDINGS if k != "keep"),
               "init-pair": tuple(k for k in WEIGHT_INITS if k != "constant")}.get(kind)
    if kind == "batch-size":
        try:
            values = [int(v) for v in values]
        except ValueError:
            raise UserError(f"--values for batch-size must be integers, not {text!r}") from None
        if min(values) < 2:
            raise UserError("batch sizes must be at least 2 (min-max normalisation needs two outputs)")
        return values
    bad = [v for v in values if v not in allowed]
    if bad:
        raise UserError(f"unknown {kind} value(s) {', '.join(bad)}: choose from {', '.join(allowed)}")
    return values


@dataclasses.dataclass(frozen=True)
class Ablation:
    """What an ablation varies: `kind` (KINDS), its values, and the draws per value."""

    kind: str
    values: tuple
    repeats: int = 1


def _draw(kind: str, value, repeat: int, repeats: int, base: BatchOptions) -> tuple[BatchOptions, dict]:
    """(the batch, the varied settings) of one value and draw."""
    batch = base
    settings: dict = {}
    if kind == "synthetic":
        if value == "real":
            batch = dataclasses.replace(base, shuffle_seed=repeat if repeats > 1 else base.shuffle_seed)
        else:
            batch = dataclasses.replace(base, data=None, synthetic=value, seed=repeat)
    elif kind == "batch-size":
        batch = dataclasses.replace(base, batch_size=value, shuffle_seed=repeat if repeats > 1 else base.shuffle_seed)
    elif kind == "weight-init":
        if value != "constant":
            settings = {"weight_init": value, "weight_seed": repeat}
    elif kind == "embedding":
        settings = {"embedding": value}
    return batch, settings


def _matches(row_settings: str, wanted: dict) -> bool:
    """The stored settings hold the varied setting's value (absent = the neutral default)."""
    from epsinas_onnx.core.options import NEUTRAL_SETTINGS

    prepare = json.loads(row_settings).get("prepare", {})
    for key in ("weight_init", "weight_seed", "embedding"):
        if key in wanted:
            if prepare.get(key, NEUTRAL_SETTINGS.get(key)) != wanted[key]:
                return False
        elif key in NEUTRAL_SETTINGS and prepare.get(key, NEUTRAL_SETTINGS[key]) != NEUTRAL_SETTINGS[key]:
            return False
        elif key == "embedding" and prepare.get(key, "uniform") != "uniform":
            return False
    return True


def _rows_of(store_path, space: str, weights, data: str, texts: set[str], wanted: dict) -> list[dict]:
    from epsinas_onnx.experiments.store import ResultStore, weights_key

    with ResultStore(store_path, create=False) as db:
        rows = [r for r in db.rows(space) if r["weights"] == weights_key(weights) and r["data"] == data
                and r["arch"] in texts and _matches(r["settings"], wanted)]
    configs = {r["config"] for r in rows}
    if len(configs) > 1:
        raise UserError(f"{store_path} holds {len(configs)} configs that fit this ablation value (other settings "
                        "differ): run the ablation into a store of its own")
    return rows


def run_ablation(space: str, archs: list, study: Ablation, targets: TargetOptions, weights=None,
                 batch: BatchOptions = BatchOptions(), execution: ExecutionOptions = BENCH_EXECUTION,
                 run: RunOptions = RunOptions(workers=1)) -> list[dict]:
    """One row per value of `study`: the evaluate statistics (NaN dropped)
    and Spearman with NaN ranked last, against targets.accuracies (a table or a
    csv; dataset and target_column pick the column); with repeats,
    `<statistic>` is the mean and `<statistic>_std` the standard deviation
    over the draws. Each value is benched into run.store (bench.run_bench)."""
    from epsinas_onnx.experiments import evaluation
    from epsinas_onnx.experiments.bench import run_bench
    from epsinas_onnx.spaces import get_space

    if study.kind not in KINDS:
        raise UserError(f"unknown --vary {study.kind!r}: choose one of {', '.join(KINDS)}")
    if study.repeats < 1:
        raise UserError(f"--repeats must be at least 1, not {study.repeats}")
    if study.kind == "embedding" and space != "nlp":
        raise UserError("--vary embedding is for nlp (the other spaces have no embedding)")
    declared = get_space(space)
    if study.kind == "init-pair":
        return _init_pair_rows(declared, archs, study, targets, batch, execution, run)
    weights = tuple(weights) if weights else declared.reference_weights
    texts = {declared.format_arch(a) for a in archs}
    # the synthetic batch is what --vary synthetic varies; the real batch is the default here
    base = dataclasses.replace(batch, synthetic=None, token_layout=None, input_name=None)
    out = []
    for value in study.values:
        draws = []
        for repeat in range(study.repeats):
            fed, varied = _draw(study.kind, value, repeat, study.repeats, base)
            summary = run_bench(space, archs, weights, batch=fed, scoring=ScoringSettings(**varied),
                                execution=execution, run=run)
            rows = _rows_of(run.store, space, weights, summary.data, texts, varied)
            report = evaluation.evaluate(rows, space, targets)
            dropped, last = report["rows"][0], report["rows"][1]
            draws.append({**{k: dropped[k] for k in STATISTICS}, "n": dropped["n"], "nan": dropped["nan_dropped"],
                          "n_top64": dropped["n_top64"],
                          "spearman_nan_last": last["spearman"], "batch": summary.data_description,
                          "seconds": summary.arch_seconds / max(summary.finished, 1) if summary.finished else None})
        out.append(_summarise(value, draws, study.repeats))
    return out


def _summarise(value, draws: list[dict], repeats: int) -> dict:
    row = {"value": value, "n": draws[0]["n"], "nan": int(round(np.mean([d["nan"] for d in draws]))),
           "draws": len(draws), "n_top64": min(d["n_top64"] for d in draws)}
    for key in (*STATISTICS, "spearman_nan_last"):
        values = np.array([d[key] for d in draws], dtype=np.float64)
        row[key] = float(np.nanmean(values)) if np.isfinite(values).any() else math.nan
        if repeats > 1:
            row[f"{key}_std"] = float(np.nanstd(values)) if np.isfinite(values).any() else math.nan
    row["batch"] = draws[0]["batch"] + (f" (+{repeats - 1} other draws)" if repeats > 1 else "")
    return row


@dataclasses.dataclass
class InitPairJob(ExecutionJob):
    """An executors.Job of the init-pair ablation: an architecture's score is
    the epsinas of the outputs of two independent random initialisations
    (`scheme`, seeds 2r and 2r + 1) at w = 1, BN gamma 1."""

    label = "ablate"  # executors.Job: for the executor's messages
    noun = "architecture"

    space: object  # a protocol.Space, sent by name
    batch: np.ndarray
    scheme: str
    repeat: int
    execution: ExecutionOptions

    def run(self, arch) -> tuple[str, float, str | None]:
        """(text, score, None), or (text, NaN, why it could not be scored)."""
        from epsinas_onnx.core.scoring.metric import score_with_reason
        from epsinas_onnx.core.scoring.scorer import prepare_model

        text = self.space.format_arch(arch)
        try:
            model = self.space.to_onnx(arch)
            outputs = {}
            for k, seed in enumerate((2 * self.repeat, 2 * self.repeat + 1)):
                scoring = ScoringSettings(bn_gamma="one", weight_init=self.scheme, weight_seed=seed)
                outputs[float(k)] = prepare_model(model, scoring, self.execution).run(self.batch, 1.0)
            return text, score_with_reason(outputs)[0], None
        except Exception as exc:  # the driver reports it
            return text, math.nan, (str(exc).strip().splitlines() or [type(exc).__name__])[0]

    def died(self, arch, error: str) -> tuple[str, float, str]:
        return self.space.format_arch(arch), math.nan, error

    def __getstate__(self):  # a Space holds functions: send its name
        return {**self.__dict__, "space": self.space.name}

    def __setstate__(self, state):
        from epsinas_onnx.spaces import get_space

        self.__dict__.update({**state, "space": get_space(state["space"])})


def _init_pair_rows(space, archs, study: Ablation, targets: TargetOptions, batch: BatchOptions,
                    execution: ExecutionOptions, run: RunOptions) -> list[dict]:
    """The paper's initialisation ablation (InitPairJob), computed directly, not stored."""
    from epsinas_onnx.core.scoring.scorer import batch_for, prepare_model
    from epsinas_onnx.experiments.evaluation import statistics
    from epsinas_onnx.experiments.executors import check_run_options, progress_bar, run_job
    from epsinas_onnx.experiments.search import load_targets

    check_run_options(run)
    loaded = load_targets(space.name, targets)
    unique = {space.format_arch(a): a for a in archs}
    texts = [t for t in unique if t in loaded.values]
    # one thread per model, no timeout, no checker (the exporter's own models), as the paper's runs
    execution = ExecutionOptions(device=execution.device, threads=1, check=False, graph_optimization="none")
    probe = prepare_model(space.to_onnx(unique[texts[0]]), ScoringSettings(bn_gamma="one"), execution)
    # --data (or the default batch): this ablation takes no synthetic batch or token layout
    fed = batch_for(probe, dataclasses.replace(batch, synthetic=None, token_layout=None))
    target = np.array([loaded.values[t] for t in texts], dtype=np.float64)
    out = []
    for scheme in study.values:
        draws = []
        for repeat in range(study.repeats):
            job = InitPairJob(space, fed.array, scheme, repeat, execution)
            scores: dict[str, float] = {}
            with progress_bar(len(texts), f"init-pair {scheme}", "arch", run.progress) as bar:
                run_job(job, [unique[t] for t in texts], run, lambda result: _keep_pair_score(result, scores, bar))
            dropped = statistics([scores[t] for t in texts], target, lower_is_better=loaded.lower_is_better)
            last = statistics([scores[t] for t in texts], target, nan="last", lower_is_better=loaded.lower_is_better)
            draws.append({**{k: dropped[k] for k in STATISTICS}, "n": dropped["n"], "nan": dropped["nan_dropped"],
                          "n_top64": dropped["n_top64"],
                          "spearman_nan_last": last["spearman"], "batch": fed.description})
        out.append(_summarise(scheme, draws, study.repeats))
    return out


def _keep_pair_score(result: tuple, scores: dict, bar) -> None:
    text, value, error = result
    if error is not None:
        raise UserError(f"init-pair: {text} could not be scored: {error}")
    scores[text] = value
    bar.update(1)
