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
from epsinas_onnx.core.options import BatchOptions

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


def _bench_options(kind: str, value, repeat: int, repeats: int, base: dict) -> tuple[dict, dict]:
    """(run_bench input options, settings) for one value and draw."""
    options = dict(base)
    settings: dict = {}
    if kind == "synthetic":
        if value == "real":
            options["shuffle_seed"] = repeat if repeats > 1 else base.get("shuffle_seed")
        else:
            options.update(data=None, synthetic=value, seed=repeat)
    elif kind == "batch-size":
        options["batch_size"] = value
        options["shuffle_seed"] = repeat if repeats > 1 else base.get("shuffle_seed")
    elif kind == "weight-init":
        if value != "constant":
            settings = {"weight_init": value, "weight_seed": repeat}
    elif kind == "embedding":
        settings = {"embedding": value}
    return options, settings


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


def run_ablation(space: str, archs: list, kind: str, values: list, *, accuracies, dataset=None, target_column=None,
                 store="epsinas_results.sqlite", repeats: int = 1, weights=None,
                 batch_options: BatchOptions = BatchOptions(), workers: int = 1,
                 device: str = "auto", progress: bool = True, settings: dict | None = None) -> list[dict]:
    """One row per value: the evaluate statistics (NaN dropped) and Spearman
    with NaN ranked last; with repeats, `<statistic>` is the mean and
    `<statistic>_std` the standard deviation over the draws."""
    from epsinas_onnx.experiments import evaluation
    from epsinas_onnx.experiments.bench import BENCH_EXECUTION, run_bench
    from epsinas_onnx.core.options import ScoringSettings
    from epsinas_onnx.spaces import get_space

    if kind not in KINDS:
        raise UserError(f"unknown --vary {kind!r}: choose one of {', '.join(KINDS)}")
    if repeats < 1:
        raise UserError(f"--repeats must be at least 1, not {repeats}")
    if kind == "embedding" and space != "nlp":
        raise UserError("--vary embedding is for nlp (the other spaces have no embedding)")
    module = get_space(space)
    if kind == "init-pair":
        return _init_pair_rows(module, archs, values, accuracies=accuracies, dataset=dataset,
                               target_column=target_column, repeats=repeats, batch_options=batch_options,
                               device=device, progress=progress)
    weights = tuple(weights) if weights else module.reference_weights
    texts = {module.format_arch(a) for a in archs}
    execution = dataclasses.replace(BENCH_EXECUTION, device=device)
    fed = batch_options
    # the synthetic batch is what --vary synthetic varies; the real batch is the default here
    base = dict(data=fed.data, batch_size=fed.batch_size, norm=fed.norm, synthetic=None, shuffle_seed=fed.shuffle_seed,
                seed=fed.seed, seq_len=fed.seq_len)
    out = []
    for value in values:
        draws = []
        for repeat in range(repeats):
            options, varied = _bench_options(kind, value, repeat, repeats, base)
            summary = run_bench(space, archs, weights, batch_options=BatchOptions(**options),
                                scoring=ScoringSettings(**{**(settings or {}), **varied}), execution=execution,
                                store_path=store, workers=workers, progress=progress)
            rows = _rows_of(store, space, weights, summary.data, texts, varied)
            report = evaluation.evaluate(rows, space, accuracies, dataset=dataset, target_column=target_column)
            dropped, last = report["rows"][0], report["rows"][1]
            draws.append({**{k: dropped[k] for k in STATISTICS}, "n": dropped["n"], "nan": dropped["nan_dropped"],
                          "n_top64": dropped["n_top64"],
                          "spearman_nan_last": last["spearman"], "batch": summary.data_description,
                          "seconds": summary.arch_seconds / max(summary.finished, 1) if summary.finished else None})
        out.append(_summarise(value, draws, repeats))
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


def _init_pair_rows(module, archs, schemes, *, accuracies, dataset, target_column, repeats,
                    batch_options: BatchOptions, device, progress) -> list[dict]:
    """The paper's initialisation ablation: score = epsinas of the outputs of
    two independent random initialisations (seeds 2r, 2r + 1), at w = 1, BN gamma 1."""
    import sys

    from tqdm import tqdm

    from epsinas_onnx.experiments.evaluation import statistics
    from epsinas_onnx.core.scoring.metric import score_with_reason
    from epsinas_onnx.core.scoring.scorer import batch_for, prepare_model
    from epsinas_onnx.experiments.search import load_targets

    space = module.name
    targets = load_targets(space, accuracies, dataset=dataset, target_column=target_column)
    unique = {module.format_arch(a): a for a in archs}
    texts = [t for t in unique if t in targets.values]
    options = dict(device=device, threads=1, check=False, graph_optimization="none", bn_gamma="one")
    probe = prepare_model(module.to_onnx(unique[texts[0]]), **options)
    # --data (or the default batch): this ablation takes no synthetic batch or token layout
    batch = batch_for(probe, dataclasses.replace(batch_options, synthetic=None, token_layout=None))
    target = np.array([targets.values[t] for t in texts], dtype=np.float64)
    out = []
    for scheme in schemes:
        draws = []
        for repeat in range(repeats):
            scores = []
            for text in tqdm(texts, desc=f"init-pair {scheme}", unit="arch", file=sys.stderr, disable=not progress):
                model = module.to_onnx(unique[text])
                outputs = {}
                for k, seed in enumerate((2 * repeat, 2 * repeat + 1)):
                    prepared = prepare_model(model, weight_init=scheme, weight_seed=seed, **options)
                    outputs[float(k)] = prepared.run(batch.array, 1.0)
                scores.append(score_with_reason(outputs)[0])
            dropped = statistics(scores, target, lower_is_better=targets.lower_is_better)
            last = statistics(scores, target, nan="last", lower_is_better=targets.lower_is_better)
            draws.append({**{k: dropped[k] for k in STATISTICS}, "n": dropped["n"], "nan": dropped["nan_dropped"],
                          "n_top64": dropped["n_top64"],
                          "spearman_nan_last": last["spearman"], "batch": batch.description})
        out.append(_summarise(scheme, draws, repeats))
    return out


