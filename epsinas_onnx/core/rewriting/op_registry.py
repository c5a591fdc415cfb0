"""A table of per-op rules keyed by (domain, op type, opset range).

The role classifier (roles.py) and channel collapse (passes/channel_collapse.py)
each keep one, in the style of onnx2torch's `@add_converter(op, version)`: a
rule is registered for the opsets it was written against, and a second rule
for the same op and an overlapping opset range is refused when the module
defining it is imported, rather than silently replacing the first.
Standard library only: importing it costs nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Generic, TypeVar

Rule = TypeVar("Rule")

# ONNX names the default domain both "" and "ai.onnx"; one key for both.
DEFAULT_DOMAIN = ""


def canonical_domain(domain: str) -> str:
    return DEFAULT_DOMAIN if domain in ("", "ai.onnx") else domain


def model_opset(opset_imports: Mapping[str, int], domain: str) -> int:
    """The opset a model imports for `domain` (the default domain under either
    of its names); 1 where the model does not say, as ONNX Runtime assumes."""
    domain = canonical_domain(domain)
    if domain == DEFAULT_DOMAIN:
        return opset_imports.get("", opset_imports.get("ai.onnx", 1))
    return opset_imports.get(domain, 1)


@dataclasses.dataclass(frozen=True)
class _Entry(Generic[Rule]):
    since: int
    until: int | None  # last opset the rule is for (inclusive); None: open-ended
    rule: Rule

    def covers(self, opset: int) -> bool:
        return self.since <= opset and (self.until is None or opset <= self.until)

    def overlaps(self, since: int, until: int | None) -> bool:
        return (until is None or self.since <= until) and (self.until is None or since <= self.until)

    def describe(self) -> str:
        return f"opset {self.since}+" if self.until is None else f"opsets {self.since}-{self.until}"


class OpRegistry(Generic[Rule]):
    """Rules by (domain, op type), each for a range of the domain's opsets."""

    def __init__(self, name: str):
        self.name = name  # says which table a duplicate was refused from
        self._entries: dict[tuple[str, str], list[_Entry[Rule]]] = {}

    def add(self, domain: str, op_type: str, rule: Rule, since: int = 1, until: int | None = None) -> None:
        """Register `rule` for `op_type` of `domain` at opsets since..until (inclusive; None: all later ones).
        ValueError if another rule covers any of those opsets."""
        if since < 1 or (until is not None and until < since):
            raise ValueError(f"{self.name}: bad opset range {since}..{until} for {op_type!r}")
        key = (canonical_domain(domain), op_type)
        entries = self._entries.setdefault(key, [])
        for entry in entries:
            if entry.overlaps(since, until):
                new = _Entry(since, until, rule).describe()
                raise ValueError(
                    f"{self.name}: a second rule for {_op_name(*key)} at {new} ({_rule_name(rule)}) overlaps "
                    f"{_rule_name(entry.rule)}, registered for {entry.describe()}"
                )
        entries.append(_Entry(since, until, rule))

    def register(self, *op_types: str, domain: str = DEFAULT_DOMAIN, since: int = 1,
                 until: int | None = None) -> Callable[[Rule], Rule]:
        """Decorator: register the decorated rule for each of `op_types`."""

        def decorate(rule: Rule) -> Rule:
            for op_type in op_types:
                self.add(domain, op_type, rule, since, until)
            return rule

        return decorate

    def lookup(self, domain: str, op_type: str, opset: int) -> Rule | None:
        """The rule for `op_type` of `domain` at `opset`, or None."""
        for entry in self._entries.get((canonical_domain(domain), op_type), ()):
            if entry.covers(opset):
                return entry.rule
        return None

    def rules(self) -> list[Rule]:
        """Every distinct rule of the table, in the order registered."""
        return list(dict.fromkeys(entry.rule for entries in self._entries.values() for entry in entries))

    def op_types(self, domain: str = DEFAULT_DOMAIN) -> Iterable[str]:
        """The op types of `domain` that have a rule at some opset."""
        domain = canonical_domain(domain)
        return sorted(op for d, op in self._entries if d == domain)


def _op_name(domain: str, op_type: str) -> str:
    return op_type if domain == DEFAULT_DOMAIN else f"{domain}.{op_type}"


def _rule_name(rule) -> str:
    return getattr(rule, "__qualname__", repr(rule))
