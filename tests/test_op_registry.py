"""The op-rule registry: one rule per (domain, op, opset), refused twice."""

import pytest

from epsinas_onnx.core.rewriting import roles
from epsinas_onnx.core.rewriting.op_registry import OpRegistry, model_opset
from epsinas_onnx.core.rewriting.passes import channel_collapse


def rule_a(*args):
    return "a"


def rule_b(*args):
    return "b"


def test_duplicate_registration_is_refused_with_both_rules_named():
    registry = OpRegistry("test rules")
    registry.register("Conv")(rule_a)
    with pytest.raises(ValueError) as refused:
        registry.register("Conv")(rule_b)
    message = str(refused.value)
    assert "test rules" in message and "Conv" in message and "rule_a" in message and "rule_b" in message
    assert registry.lookup("", "Conv", 13) is rule_a  # the first rule stays


@pytest.mark.parametrize("since, until", [(1, None), (5, 12), (12, 12), (1, 10), (17, None)])
def test_overlapping_opset_ranges_are_refused(since, until):
    registry = OpRegistry("test rules")
    registry.add("", "Gemm", rule_a, since=10, until=12)
    registry.add("", "Gemm", rule_a, since=20)
    with pytest.raises(ValueError, match="overlaps"):
        registry.add("", "Gemm", rule_b, since=since, until=until)


def test_the_default_domain_has_one_key_under_both_names():
    registry = OpRegistry("test rules")
    registry.add("ai.onnx", "Relu", rule_a)
    with pytest.raises(ValueError):
        registry.add("", "Relu", rule_b)
    assert registry.lookup("", "Relu", 7) is rule_a


def test_lookup_by_opset_picks_the_rule_for_that_opset():
    registry = OpRegistry("test rules")
    registry.add("", "ReduceSum", rule_a, since=1, until=12)
    registry.add("", "ReduceSum", rule_b, since=13)
    registry.add("com.example", "ReduceSum", rule_b, since=2)
    assert [registry.lookup("", "ReduceSum", v) for v in (1, 12, 13, 21)] == [rule_a, rule_a, rule_b, rule_b]
    assert registry.lookup("com.example", "ReduceSum", 1) is None
    assert registry.lookup("com.example", "ReduceSum", 2) is rule_b
    assert registry.lookup("", "Softmax", 13) is None


def test_bad_opset_range_is_refused():
    registry = OpRegistry("test rules")
    with pytest.raises(ValueError, match="bad opset range"):
        registry.add("", "Conv", rule_a, since=13, until=11)


def test_model_opset_reads_the_domain_from_opset_imports():
    assert model_opset({"": 17, "com.microsoft": 1}, "") == 17
    assert model_opset({"ai.onnx": 11}, "") == 11
    assert model_opset({"": 17, "com.microsoft": 1}, "com.microsoft") == 1


@pytest.mark.parametrize("table", [roles.RULES, channel_collapse.RULES])
def test_every_project_rule_applies_at_every_opset(table):
    # today's rules were written for all opsets: each must answer from opset 1 on
    ops = list(table.op_types())
    assert "Conv" in ops
    for op in ops:
        assert table.lookup("", op, 1) is not None and table.lookup("", op, 23) is table.lookup("", op, 1), op


def test_a_second_collapse_rule_for_conv_is_refused():
    before = channel_collapse.RULES.lookup("", "Conv", 17)
    with pytest.raises(ValueError, match="Conv"):
        channel_collapse.collapse_rule("Conv")(lambda c, n: None)
    assert channel_collapse.RULES.lookup("", "Conv", 17) is before


def test_rules_lists_each_rule_once_in_registration_order():
    registry = OpRegistry("test rules")
    registry.register("Add", "Sub")(rule_b)
    registry.add("", "Relu", rule_a, since=1, until=12)
    registry.add("", "Relu", rule_b, since=13)
    assert registry.rules() == [rule_b, rule_a]
