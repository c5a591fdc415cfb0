"""Dead-code elimination: nodes whose outputs nobody reads, and unread initialisers.

What onnx-ir's RemoveUnusedNodesPass does for this pipeline, at half its cost:
that pass also trims each live node's unused optional outputs, looking up the
node's schema to know which are optional, which doubled the time on a
NAS-Bench-201 graph (1.9-2.2 -> 0.9-1.1 ms per architecture, a fiftieth of
scoring it). An unused optional output costs nothing here: ONNX Runtime
computes it or not as it likes, and no pass reads it.
"""

from __future__ import annotations

import onnx_ir as ir

from epsinas_onnx.core.rewriting.passes.build import subgraphs


class RemoveDeadNodesPass(ir.passes.InPlacePass):
    """Removes, in every (sub)graph, each node none of whose outputs is read
    or a graph output, and the main graph's initialisers nobody reads (graph
    inputs and outputs are kept)."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        count = _remove_dead_nodes(model.graph)
        graph = model.graph
        for name, value in list(graph.initializers.items()):
            if not value.uses() and not value.is_graph_output() and not value.is_graph_input():
                del graph.initializers[name]
                count += 1
        return ir.passes.PassResult(model, modified=bool(count))


def _remove_dead_nodes(graph: ir.Graph) -> int:
    outputs = frozenset(graph.outputs)
    count = 0
    # last to first: a removed node releases its inputs, so the nodes that
    # only fed it are dead by the time the walk reaches them
    for n in reversed(graph):
        if any(v in outputs or v.uses() for v in n.outputs):
            for subgraph in subgraphs(n):
                count += _remove_dead_nodes(subgraph)
        else:
            graph.remove(n, safe=True)
            count += 1
    return count
