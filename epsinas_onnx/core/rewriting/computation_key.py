"""A digest of what a rewritten model computes, so that a search space's
architectures that compute the same thing are run once.

Many architectures of a benchmark space are the same network: NAS-Bench-201
cells that differ only in edges whose output is never used, or in which edge
of a dead branch is `none`, rewrite (and prune) to the same graph. The key is
a Merkle digest over the graph's data flow: each value is named by what
produces it (op, attributes, the digests of its inputs in order, constant
bytes), never by its name or its node's position in the list. Equal keys mean
the same ops on the same inputs in the same order, so the same numbers come
out, bit for bit; input order is kept even for commutative ops, because a
float sum in another order can round differently.
"""

from __future__ import annotations

import hashlib

import onnx_ir as ir

# attributes whose repr() is their exact value; a tensor is digested by its bytes;
# any other kind (subgraphs, tensor lists, sparse tensors, types) means no key
_PLAIN_ATTRIBUTES = (
    ir.AttributeType.INT, ir.AttributeType.INTS, ir.AttributeType.FLOAT, ir.AttributeType.FLOATS,
    ir.AttributeType.STRING, ir.AttributeType.STRINGS,
)


def computation_key(model: ir.Model, output: str) -> str | None:
    """The digest of how `model`'s output `output` is computed from its
    inputs; None for a model this does not cover (control flow: subgraphs
    read outer values by name), which is then simply run."""
    graph = model.graph
    digest: dict[ir.Value, bytes] = {}
    for value in graph.inputs:
        digest[value] = _hash(b"input", value.name, str(value.dtype), str(value.shape))
    for value in graph.initializers.values():
        if value.const_value is None:
            return None  # declared without data: nothing to compare
        digest[value] = _tensor_digest(value.const_value)
    for n in graph:
        parts = [n.domain, n.op_type, n.overload]
        for name, attr in sorted(n.attributes.items()):
            if not isinstance(attr, ir.Attr):
                return None  # a reference to a function attribute
            if attr.type in _PLAIN_ATTRIBUTES:
                parts += [name, str(attr.type), repr(attr.value)]
            elif attr.type == ir.AttributeType.TENSOR and attr.value is not None:
                parts += [name, str(attr.type), _tensor_digest(attr.value)]
            else:
                return None  # a subgraph (control flow), tensor list, sparse tensor or type
        for v in n.inputs:
            if v is None:
                parts.append(b"")
            elif v in digest:
                parts.append(digest[v])
            else:
                return None  # a value from nowhere: not a graph this key understands
        node_digest = _hash(*parts)
        for index, v in enumerate(n.outputs):
            digest[v] = _hash(node_digest, str(index))
    target = next((v for v in graph.outputs if v.name == output), None)
    if target is None or target not in digest:
        return None
    # model-local functions (the full-width batch-statistics BN) by their serialised form
    functions = [ir.to_proto(f).SerializeToString() for _, f in sorted(model.functions.items())]
    opsets = sorted(model.opset_imports.items())
    return _hash(digest[target], repr(opsets), *functions).hex()


def _tensor_digest(tensor) -> bytes:
    return _hash(str(tensor.dtype), str(tuple(tensor.shape)), tensor.tobytes())


def _hash(*parts) -> bytes:
    h = hashlib.blake2b(digest_size=20)
    for part in parts:
        data = part if isinstance(part, bytes) else str(part).encode()
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.digest()
