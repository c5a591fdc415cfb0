"""Every search space against its declared protocol (epsinas_onnx.spaces.protocol.Space)."""

import dataclasses
import importlib
import inspect

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from epsinas_onnx.core.errors import UserError
from epsinas_onnx.spaces import SPACES, get_space
from epsinas_onnx.spaces.protocol import Space

# smaller models where the paper's size would be slow: the conformance checks do not need it
SMALL = {"nlp": {"vocab_size": 50, "emb": 6, "hidden": 8}, "tnb_micro": {"resolution": 64}, "tnb_macro": {"resolution": 64}}
GARBAGE = ("", "not an architecture", "{}", "|bogus~0|", "[[1]] bad")


@pytest.fixture(params=SPACES)
def space(request) -> Space:
    return get_space(request.param)


def test_get_space_returns_the_declaration_and_refuses_unknown_names(space):
    assert isinstance(space, Space) and space.name in SPACES
    assert space is importlib.import_module(f"epsinas_onnx.spaces.{space.name}").SPACE
    with pytest.raises(UserError, match="unknown search space"):
        get_space("nb999")


def test_declared_export_defaults_are_the_exporter_signature_defaults(space):
    # the store key holds these (bench); before the protocol they came from to_onnx's signature
    for function in (space.to_onnx, space.to_ir):
        signature = inspect.signature(function).parameters
        assert {k: signature[k].default for k in space.export_defaults} == dict(space.export_defaults)
    on_onnx = {k: p.default for k, p in inspect.signature(space.to_onnx).parameters.items()
               if p.default is not inspect.Parameter.empty}
    assert on_onnx == dict(space.export_defaults)
    params = inspect.signature(space.num_params).parameters
    assert set(space.num_params_options) == set(params) & set(space.export_defaults)
    ir_params = inspect.signature(space.to_ir).parameters
    assert space.ir_takes_tied == ("tied" in ir_params)
    assert space.ir_takes_finite_check == ("finite_check" in ir_params)


def test_parse_format_round_trip(space):
    for arch in space.sample(5, 0):
        text = space.format_arch(arch)
        assert space.format_arch(space.parse(text)) == text


@pytest.mark.parametrize("text", GARBAGE)
def test_parse_rejects_garbage_with_a_user_error(space, text):
    with pytest.raises(UserError):
        space.parse(text)


def test_validate_rejects_garbage_with_a_user_error(space):
    for bad in (None, 42, "nonsense", ("x", "y")):
        with pytest.raises(UserError):
            space.validate(bad)
    space.validate(space.sample(1, 0)[0])  # a real architecture passes


def test_sample_is_repeatable(space):
    first = [space.format_arch(a) for a in space.sample(6, 3)]
    assert first == [space.format_arch(a) for a in space.sample(6, 3)]
    assert len(first) == 6


def test_mutate_gives_a_valid_different_neighbour(space):
    rng = np.random.default_rng(0)
    for arch in space.sample(5, 1):
        child = space.mutate(arch, rng)
        space.validate(child)
        assert space.format_arch(child) != space.format_arch(arch)


def test_num_params_is_a_positive_int(space):
    for arch in space.sample(3, 2):
        count = space.num_params(arch)
        assert isinstance(count, (int, np.integer)) and count > 0


def test_to_onnx_and_to_ir_give_a_checked_model_equal_bytes_for_the_same_arch(space):
    arch = space.sample(1, 4)[0]
    options = SMALL.get(space.name, {})
    model = space.to_onnx(arch, **options)
    onnx.checker.check_model(model, full_check=True)
    assert space.to_onnx(space.parse(space.format_arch(arch)), **options).SerializeToString() == \
        model.SerializeToString()
    from_ir = ir.to_proto(space.to_ir(arch, **options))
    onnx.checker.check_model(from_ir, full_check=True)
    assert from_ir.SerializeToString() == model.SerializeToString()


def test_declared_export_options_are_accepted(space):
    arch = space.sample(1, 5)[0]
    given = {**dict(space.export_defaults), **SMALL.get(space.name, {})}
    space.check_export_options(given)
    onnx.checker.check_model(space.to_onnx(arch, **given))
    with pytest.raises(UserError, match="does not apply here"):
        space.check_export_options({"no_such_option": 1})


def test_reference_weights_are_declared(space):
    w1, w2 = space.reference_weights
    # reference-semantics §6; a space without a published pair takes NAS-Bench-201's
    assert {"nb101": (1e-4, 10.0), "nlp": (1e-5, 1e-3)}.get(space.name, (1e-7, 1.0)) == (w1, w2)


def test_declared_tables_are_packaged_and_read_as_declared(space):
    """Each packaged table a space names exists; its architectures parse;
    the default target column is found for every data set the space lists."""
    from epsinas_onnx.core.tables import packaged, pick_column
    from epsinas_onnx.core.options import TargetOptions
    from epsinas_onnx.experiments.evaluation import target_spec

    assert space.target_tables, "a space ships its targets"
    for name in {*space.target_tables, space.baselines_table, space.proxies_table} - {None}:
        table = packaged(name)
        column = pick_column(table.columns, (*space.arch_columns, "arch_str"), "architecture", table, "--arch-column")
        for row in table.rows[:50]:
            space.parse(" ".join(row[c] for c in column.split(",")))
    targets = packaged(space.target_tables[0])
    for dataset in space.datasets or (None,):
        assert target_spec(space, targets, TargetOptions(dataset=dataset)).dataset == dataset
    assert target_spec(space, targets, TargetOptions()).dataset == (space.datasets[0] if space.datasets else None)
    with pytest.raises(UserError):
        space.dataset_or_default("no such data set")


def test_all_archs_where_declared(space):
    if not space.enumerable:
        assert space.all_archs is None
        return
    archs = space.all_archs()
    texts = {space.format_arch(a) for a in archs}
    assert len(texts) == len(archs) > 0
    canonical = space.canonical or (lambda arch: arch)
    assert {space.format_arch(canonical(a)) for a in space.sample(5, 0)} <= texts


def test_computation_classes_come_as_a_declared_set(space):
    # the finer class needs the finite check it relies on
    if space.computation_class_if_finite is not None:
        assert space.computation_class is not None and space.ir_takes_finite_check
        assert space.finite_check_output is not None and space.finite_check_passed is not None
    if space.computation_class is not None:
        arch = space.sample(1, 0)[0]
        assert space.computation_class(arch) == space.computation_class(space.parse(space.format_arch(arch)))


def test_the_declaration_is_frozen(space):
    with pytest.raises(dataclasses.FrozenInstanceError):
        space.name = "other"
