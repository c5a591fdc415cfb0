"""Small graph edits the proxies' probes share: a probe adds nodes and graph
outputs to the initialised model, and the engine runs it."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from epsinas_onnx.core.rewriting.passes.build import constant, node

ADDED_PREFIX = "proxy_"  # the names of every node the proxies' passes add (not the model's layers)
PROBE_PREFIX = ADDED_PREFIX + "probe."


def add_nodes(graph: ir.Graph, nodes: list[ir.Node]) -> None:
    name_added(nodes, PROBE_PREFIX, len(graph))
    graph.extend(nodes)


def name_added(nodes: list[ir.Node], prefix: str, start: int) -> None:
    """Unique names under `prefix` (one of ADDED_PREFIX's), numbered from `start`."""
    for i, n in enumerate(nodes, start=start):
        n.name = f"{prefix}{i}.{n.op_type}"


def expose(graph: ir.Graph, value: ir.Value, label: str, dtype: ir.DataType | None = None) -> str:
    """Make `value` a graph output under a fresh name (an Identity of it, so the
    original name and any existing output stay as they are); returns the name.
    dtype: the element type, where `value` does not know it (a probe's node)."""
    identity = node("Identity", [value])
    add_nodes(graph, [identity])
    out = identity.outputs[0]
    out.name = f"{PROBE_PREFIX}{label}.{len(graph.outputs)}"
    out.dtype = value.dtype or dtype or ir.DataType.FLOAT
    out.shape = value.shape
    graph.outputs.append(out)
    return out.name


def output_of(graph: ir.Graph, n: ir.Node, label: str, dtype: ir.DataType | None = None) -> str:
    """Add `n` (a probe node) and make its first output a graph output."""
    add_nodes(graph, [n])
    return expose(graph, n.outputs[0], label, dtype)


def scalar_like(value: ir.Value, number: float) -> ir.Node:
    """A Constant of `value`'s element type (float32 when unknown)."""
    dtype = value.dtype.numpy() if value.dtype is not None else np.float32
    return constant(np.array(number, dtype=dtype))


def is_added(n: ir.Node) -> bool:
    """Whether a proxies' pass added `n` (a probe, the batch statistics), rather than the model having it."""
    return (n.name or "").startswith(ADDED_PREFIX)


def rank(value: ir.Value) -> int | None:
    return None if value.shape is None else len(value.shape)
