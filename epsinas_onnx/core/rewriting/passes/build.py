"""Small helpers for making nodes and constants with onnx-ir (public: the passes and the
spaces build graphs with them).

They build ir.Node and ir.Tensor directly: onnx-ir's convenience
constructors check types through typing protocols, which dominated the
rewrite time of a whole search space.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir


def attribute(name: str, value) -> ir.Attr:
    """An attribute from a Python value (what onnx.helper.make_attribute takes,
    for the kinds the passes and exporters use)."""
    if isinstance(value, bool) or isinstance(value, (int, np.integer)):
        return ir.AttrInt64(name, int(value))
    if isinstance(value, (float, np.floating)):
        return ir.AttrFloat32(name, float(value))
    if isinstance(value, str):
        return ir.AttrString(name, value)
    if isinstance(value, ir.DataType):
        return ir.AttrInt64(name, int(value))
    if isinstance(value, (list, tuple)) and all(isinstance(v, (int, np.integer)) for v in value):
        return ir.AttrInt64s(name, [int(v) for v in value])
    if isinstance(value, (list, tuple)) and all(isinstance(v, (float, np.floating)) for v in value):
        return ir.AttrFloat32s(name, [float(v) for v in value])
    if isinstance(value, np.ndarray):
        value = ir.Tensor(value)
    if isinstance(value, ir.Tensor):
        return ir.AttrTensor(name, value)
    if isinstance(value, ir.Graph):
        return ir.AttrGraph(name, value)
    raise TypeError(f"unsupported attribute {name}={value!r}")


def node(op_type: str, inputs, **attributes) -> ir.Node:
    """A one-output node of the default domain."""
    return ir.Node("", op_type, inputs, attributes=[attribute(k, v) for k, v in attributes.items()])


def constant(array: np.ndarray) -> ir.Node:
    """A Constant node, so the value lives in the same (sub)graph as its reader."""
    return ir.Node("", "Constant", [], attributes=[ir.AttrTensor("value", ir.Tensor(np.asarray(array)))])


_GRAPH_ATTRIBUTES = (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS)


def subgraphs(n: ir.Node) -> list[ir.Graph]:
    """The graphs held by `n`'s attributes (Scan / Loop / If bodies)."""
    found = []
    for attr in n.attributes.values():
        if isinstance(attr, ir.Attr) and attr.type in _GRAPH_ATTRIBUTES:
            found.extend(attr.value if attr.type == ir.AttributeType.GRAPHS else (attr.value,))
    return found


def all_nodes(graph: ir.Graph):
    """Every node of `graph` and of its subgraphs, recursively.
    What ir.traversal.RecursiveGraphIterator gives, without its cost per
    node (a third of a pass's time on a flat graph of a few hundred nodes)."""
    for n in graph:
        yield n
        for subgraph in subgraphs(n):
            yield from all_nodes(subgraph)


def insert_at_start(graph: ir.Graph, nodes: list[ir.Node]) -> None:
    first = next(iter(graph), None)
    if first is None:
        graph.extend(nodes)
    else:
        graph.insert_before(first, nodes)


def default_opset(model: ir.Model | ir.Graph) -> int:
    """The default-domain opset of a model or (main) graph."""
    return model.opset_imports.get("", model.opset_imports.get("ai.onnx", 1))
