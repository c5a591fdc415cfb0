"""The old private name of epsinas_onnx.passes.build, kept only while
channel_collapse.py (being reworked on another branch) still imports it;
import epsinas_onnx.passes.build."""

from epsinas_onnx.passes.build import all_nodes, attribute, constant, default_opset, insert_at_start, node, subgraphs

__all__ = ["all_nodes", "attribute", "constant", "default_opset", "insert_at_start", "node", "subgraphs"]
