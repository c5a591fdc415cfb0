"""The one declared shape of a benchmark search space.

Each space module ends with `SPACE = Space(...)`; `get_space(name)` returns
that object, so bench, search, calibrate and the CLI read what a space offers
from its declaration instead of probing the module (hasattr / inspect).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Space:
    name: str
    parse: Callable[[str], Any]  # the benchmark's own encoding -> architecture; UserError when it is not one
    format_arch: Callable[[Any], str]  # architecture -> the benchmark's own encoding
    validate: Callable[[Any], None]  # raises UserError naming what is wrong
    sample: Callable[[int, int], list]  # (n, seed) -> n architectures drawn uniformly, repeatable
    mutate: Callable[[Any, Any], Any]  # (arch, numpy Generator) -> one single-edit neighbour
    num_params: Callable[..., int]  # (arch, **num_params_options) -> the parameter count
    to_onnx: Callable[..., Any]  # (arch, **export_defaults' keys) -> onnx.ModelProto
    to_ir: Callable[..., Any]  # to_onnx's model as onnx_ir.Model (bench rewrites it directly)
    # the keyword options to_onnx / to_ir accept and their defaults, in order; the
    # store key holds them explicitly (bench), so a default changed here changes keys
    export_defaults: Mapping[str, Any]
    num_params_options: tuple[str, ...]  # export options num_params also takes
    reference_weights: tuple[float, float]  # the (w1, w2) pair of the paper's setting
    all_archs: Callable[[], list] | None = None  # the whole space, where it can be enumerated
    # where an architecture has other encodings of the same network (nb101: unpruned
    # cells, other vertex orders): arch -> the member of all_archs that is its network
    canonical: Callable[[Any], Any] | None = None
    # the computation class of an architecture under constant weights (bench
    # scores one member per class), and the finer one that holds where the
    # FINITE_CHECK_OUTPUT output passes finite_check_passed
    computation_class: Callable[[Any], str] | None = None
    computation_class_if_finite: Callable[[Any], str] | None = None
    finite_check_output: str | None = None
    finite_check_passed: Callable[[Any], bool] | None = None
    ir_takes_tied: bool = False  # to_ir(tied=True): one initialiser per kind and shape (constant weights)
    ir_takes_finite_check: bool = False  # to_ir(finite_check=True) adds finite_check_output
    read_csv_archs: Callable[[Any], list] | None = None  # architectures of a .csv file of the benchmark
    # (export, scoring: ScoringSettings, batch, execution: ExecutionOptions, input_name) -> a
    # runner whose output(arch, weight, finite_check, timeout) is the generic path's logits bit
    # for bit, with sessions made once (bench), or None where it does not apply for those settings;
    # without computation_class, the runner also gives computation_key(arch): equal keys, equal logits
    pieces_for: Callable[..., Any] | None = None
    # what the benchmark's tables hold and how to read them (evaluate, search,
    # calibrate, bench --archs packaged:NAME): packaged tables are
    # epsinas_onnx/data/NAME.csv.gz, built by tools/build_tables.py
    target_tables: tuple[str, ...] = ()  # packaged tables of trained results, the first the default
    baselines_table: str | None = None  # packaged table of other proxies over the space (--baselines)
    proxies_table: str | None = None  # packaged table of proxies on a subset (--proxies)
    arch_columns: tuple[str, ...] = ("arch",)  # the architecture column: the first present ("a,b" joins two)
    target_columns: tuple[str, ...] = ()  # the target column: the first present (after a data set's own)
    # data sets (or tasks) the tables hold targets of; --dataset picks one
    # (default the first): the target column of that name if there is one,
    # the baselines' zen_<dataset> column, and in a table with a `dataset`
    # (or `task`) column the rows of that data set
    datasets: tuple[str, ...] = ()
    lower_is_better: bool = False  # the target's direction (a loss: True)

    @property
    def enumerable(self) -> bool:
        return self.all_archs is not None

    def export_options(self) -> tuple[str, ...]:
        return tuple(self.export_defaults)

    def export(self, arch, **options):
        """to_onnx's model, with metadata naming the space and its reference
        pair (`epsinas.space`, `epsinas.weights`): `score` without --weights
        scores the file at that pair, as bench scores the space."""
        from epsinas_onnx.core.options import SPACE_METADATA_KEY, WEIGHTS_METADATA_KEY

        model = self.to_onnx(arch, **options)
        recorded = {SPACE_METADATA_KEY: self.name,
                    WEIGHTS_METADATA_KEY: " ".join(repr(float(w)) for w in self.reference_weights)}
        kept = [(p.key, p.value) for p in model.metadata_props if p.key not in recorded]
        del model.metadata_props[:]
        for key, value in [*kept, *recorded.items()]:
            model.metadata_props.add(key=key, value=value)
        return model

    def check_export_options(self, given: Mapping[str, Any], what: str | None = None) -> None:
        """UserError for an option to_onnx does not take (message as bench's before the protocol)."""
        from epsinas_onnx.core.errors import UserError

        accepted = ("arch", *self.export_defaults)
        for key in given:
            if key not in accepted:
                raise UserError(f"{what or self.name + ' export'} option {key!r} does not apply here "
                                f"(accepted: {', '.join(accepted)})")

    def dataset_or_default(self, dataset: str | None) -> str | None:
        """--dataset checked against `datasets`: None picks the first; None
        for a space without data sets (UserError if one was given)."""
        from epsinas_onnx.core.errors import UserError

        if not self.datasets:
            if dataset is not None:
                raise UserError(f"--dataset does not apply to {self.name} (its tables have one target): "
                                "pick the column with --target-column")
            return None
        if dataset is None:
            return self.datasets[0]
        if dataset not in self.datasets:
            raise UserError(f"unknown --dataset {dataset!r} for {self.name}: choose one of {', '.join(self.datasets)}")
        return dataset

    def target_candidates(self, dataset: str | None) -> tuple[str, ...]:
        """The default target column's candidates: the data set's own column, then `target_columns`."""
        return ((dataset,) if dataset is not None else ()) + self.target_columns

    def num_params_kwargs(self, export: Mapping[str, Any]) -> dict:
        """The export options that also size num_params, but the head: params are counted with the 10-class head."""
        return {k: v for k, v in export.items() if k in self.num_params_options and k != "num_classes"}
