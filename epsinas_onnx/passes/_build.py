"""Small helpers for making nodes and constants with onnx-ir."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir


def node(op_type: str, inputs, **attributes) -> ir.Node:
    """A one-output node of the default domain."""
    return ir.node(op_type, inputs, attributes=attributes or None)


def constant(array: np.ndarray) -> ir.Node:
    """A Constant node, so the value lives in the same (sub)graph as its reader."""
    return ir.node("Constant", [], attributes={"value": ir.tensor(np.asarray(array))})


def insert_at_start(graph: ir.Graph, nodes: list[ir.Node]) -> None:
    first = next(iter(graph), None)
    if first is None:
        graph.extend(nodes)
    else:
        graph.insert_before(first, nodes)


def default_opset(model: ir.Model) -> int:
    return model.opset_imports.get("", model.opset_imports.get("ai.onnx", 1))
