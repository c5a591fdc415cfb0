"""The experiments' plumbing between a results store and the commands that
read it (evaluate, search, calibrate, ablate): which stored rows, which
space, which targets. Library code: the CLI calls it, it never calls the CLI."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from epsinas_onnx.core.errors import UserError
from epsinas_onnx.core.options import DEFAULT_MODE
from epsinas_onnx.core.textfile import file_status
from epsinas_onnx.experiments.store import ResultStore


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
    with ResultStore(store, create=False) as db:
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
    settings = {k: v for k, v in json.loads(row["settings"]).items() if k not in ("mode", "mode_revision")}
    return row["weights"], row["data"], json.dumps(settings, sort_keys=True)


def rows_by_mode(rows: list[dict], config: str | None,
                 mode: str | None = None) -> tuple[list[dict], dict[str, list[dict]]]:
    """One config's rows (see select_config) and those of the configs that
    differ from it in the scoring mode only (mode -> rows). Without --config a
    store whose configs differ only in the mode is one comparison, the
    reference first. With `mode`, that mode's rows alone (and no others)."""
    groups: dict[tuple, dict[str, list[dict]]] = {}
    for row in rows:
        groups.setdefault(_without_mode(row), {}).setdefault(row_mode(row), []).append(row)
    if config is None and len(groups) == 1:
        (modes,) = groups.values()
        first = DEFAULT_MODE if DEFAULT_MODE in modes else sorted(modes)[0]
    else:
        chosen = select_config(rows, config)
        modes = groups[_without_mode(chosen[0])]
        first = row_mode(chosen[0])
    if mode is None:
        return modes[first], {m: r for m, r in sorted(modes.items()) if m != first}
    if mode not in modes:
        raise UserError(f"the store holds no rows in --mode {mode} for this config (it holds {', '.join(sorted(modes))})")
    return modes[mode], {}


def stored_proxies(store, rows: list[dict]) -> dict[str, dict[str, float]]:
    """The proxies stored (bench --proxies) for the architectures of `rows` (one
    epsinas config): those computed on the same batch and export options, as
    {label: {arch: value}}; the label is the proxy's name, with a short id of
    its settings where one proxy is stored under several."""
    import hashlib

    first = rows[0]
    export = json.loads(first["settings"]).get("export", {})
    with ResultStore(store, create=False) as db:
        found = db.proxy_rows(first["space"])
    keyed: dict[tuple[str, str], dict[str, float]] = {}
    for row in found:
        settings = json.loads(row["settings"])
        if row["data"] != first["data"] or settings.get("export", {}) != export or row["error"] is not None:
            continue
        keyed.setdefault((row["proxy"], row["settings"]), {})[row["arch"]] = row["value"]
    names = [proxy for proxy, _ in keyed]
    return {(proxy if names.count(proxy) == 1 else f"{proxy} [{hashlib.sha256(key.encode()).hexdigest()[:8]}]"): values
            for (proxy, key), values in keyed.items()}


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


def space_of_store(store) -> str:
    """The only space of an existing store (a search without scores needs no store, only its space)."""
    if file_status(store, "the results store") is None:
        raise UserError("give --space (a search without scores reads no store to take it from)")
    with ResultStore(store, create=False) as db:
        spaces = db.spaces()
    if len(spaces) != 1:
        raise UserError(f"the store holds spaces {', '.join(spaces) or '(none)'}: pick one with --space")
    return spaces[0]


def store_scores(opts: dict):
    """The stored scores of the store's config that `opts` (a search command's
    options) picks, with a filler that scores missing architectures on demand."""
    from epsinas_onnx.experiments import search
    from epsinas_onnx.core.options import BatchOptions

    store = opts["store"]
    space, rows = config_rows(store, opts["space"], opts["config"], opts["mode"])
    first = rows[0]
    batch = BatchOptions(data=opts["data"], batch_size=opts["batch_size"], shuffle_seed=opts["shuffle_seed"],
                         norm=opts["norm"], synthetic=opts["synthetic"], seed=opts["input_seed"], seq_len=opts["seq_len"])
    filler = search.BenchFiller(space, store, first, batch, device=opts["device"], workers=opts["workers"],
                                progress=opts["progress"], stored=len(rows))
    config = {"id": first["config"], "weights": json.loads(first["weights"]), "data": first["data"],
              "data_description": first["data_description"], "rows": len(rows)}
    rank_by = opts.get("rank_by") or ()
    if rank_by:
        proxies = stored_proxies(store, rows)
        unknown = [n for n in rank_by if n != "epsinas" and n not in proxies]
        if unknown:
            raise UserError(f"--rank-by {', '.join(unknown)}: not stored with config {first['config']} (stored: "
                            f"{', '.join(proxies) or 'none'}; bench --proxies stores them)")
        columns = {n: search.store_scores(rows) if n == "epsinas" else proxies[n] for n in rank_by}
        config["rank_by"] = list(rank_by)
        return space, search.RankedScores(columns, source=str(store), members=rank_by), config
    return space, search.Scores(search.store_scores(rows), filler, source=str(store)), config


def model_targets(path, names: list[str], target_column: str | None) -> dict[str, float]:
    """Targets of model files: a csv with a `model` column (the file's path or name)."""
    from epsinas_onnx.core.tables import as_table, number_or_nan

    table = as_table(path)
    columns, rows = table.columns, table.rows
    if "model" not in columns:
        raise UserError(f"{path} has no 'model' column (the model files' paths or names); its columns are {', '.join(columns)}")
    if target_column is None:
        others = [c for c in columns if c != "model"]
        if len(others) != 1:
            raise UserError(f"{path} has several columns besides 'model' ({', '.join(others)}): name one with --target-column")
        target_column = others[0]
    elif target_column not in columns:
        raise UserError(f"{path} has no column {target_column!r}; its columns are {', '.join(columns)}")
    by_key = {r["model"]: number_or_nan(r[target_column]) for r in rows}
    out = {}
    for name in names:
        for key in (name, Path(name).name, Path(name).stem):
            if key in by_key:
                out[name] = by_key[key]
                break
    return out


@dataclasses.dataclass(frozen=True)
class CalibrationTargets:
    """What `calibrate` runs and compares: the models (calibrate.Item), the
    space they come from (None for model files), their targets where
    accuracies were given, and the weight pair compared by default."""

    items: list
    space: str | None
    targets: dict[str, float] | None
    lower_is_better: bool
    reference_pair: tuple[float, float] | None


def calibration_targets(what: list[str], *, sample: int | None = None, seed: int = 0, arch_file=None,
                        accuracies=None, dataset=None, arch_column=None, target_column=None,
                        lower_is_better: bool | None = None) -> CalibrationTargets:
    """calibrate's WHAT: one benchmark space (with `sample` N or `arch_file`)
    or ONNX model files; with `accuracies` ("packaged" for the space's packaged
    table, else a csv; for model files, one with a `model` column) the targets."""
    from epsinas_onnx.experiments import calibrate, search
    from epsinas_onnx.spaces import SPACES, get_space

    lower = bool(lower_is_better)
    if len(what) == 1 and what[0] in SPACES:
        from epsinas_onnx.experiments.bench import load_arch_file
        from epsinas_onnx.experiments.benchmark_tables import PACKAGED, targets_table

        space = get_space(what[0])
        if (sample is None) == (arch_file is None):
            raise UserError(f"give exactly one of --sample N or --archs FILE for {space.name}")
        if sample is not None and sample < 1:
            raise UserError(f"--sample must be at least 1, not {sample}")
        archs = space.sample(sample, seed) if sample is not None else load_arch_file(space, arch_file)
        unique = {}
        for arch in archs:
            unique.setdefault(space.format_arch(arch), arch)
        items = [calibrate.Item(name, space=space.name, arch=a) for name, a in unique.items()]
        targets = None
        if accuracies:
            table = targets_table(space.name, accuracies=None if accuracies == PACKAGED else accuracies, archs=list(unique))
            loaded = search.load_targets(space.name, table, dataset=dataset, arch_column=arch_column,
                                         target_column=target_column, lower_is_better=lower_is_better)
            targets, lower = loaded.values, loaded.lower_is_better
        return CalibrationTargets(items, space.name, targets, lower, space.reference_weights)
    missing = [p for p in what if file_status(p, "model file") is None]
    if missing:
        raise UserError(f"not a search space ({', '.join(SPACES)}) and no such model file: {missing[0]}")
    if sample is not None or arch_file is not None:
        raise UserError(f"--sample / --archs are for a search space ({', '.join(SPACES)}), not model files")
    items = [calibrate.Item(p, path=p) for p in dict.fromkeys(what)]
    if accuracies == "packaged":
        raise UserError("--accuracies without a file is for a search space; for model files give a csv with "
                        "a 'model' column")
    targets = model_targets(accuracies, [i.name for i in items], target_column) if accuracies else None
    return CalibrationTargets(items, None, targets, lower, None)
