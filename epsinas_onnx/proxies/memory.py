"""The memory guard of the proxies' runs: before a proxy runs the model at
full width, the memory ONNX Runtime will need for that run is estimated from
the graph's shapes, and a run that would not fit is refused with a one-line
error instead of ending in the out-of-memory killer (TransNAS-Bench-101
macro at 256 x 256: a bench worker's proxies grew to 19.5 GB).

The estimate (peak_bytes) walks the nodes the run executes (the prepared
graph cut to the proxy's outputs) in their topological order, with the
batch's size for every symbolic dimension: each tensor is live from its
producer to its last reader (the run's outputs to the end), and the need is
the peak of the live bytes, plus the outputs again and the initialisers the
run reads. It is an estimate: ONNX Runtime's memory planner reuses buffers
much as this walk frees them, but it also computes in place, fuses nodes,
adds layout copies (NCHWc) and rounds its arena up.
benchmarks/proxies_memory.py measures it against the real peak of a process
making the run (docs/proxies.md). The engine first tries a quick bound of
it per proxy (bounds: no shape inference); only a run that may not fit, or
may reach SHRINK_AFTER_BYTES, by that bound is estimated.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import onnx
import onnx_ir as ir
from onnx import helper

from epsinas_onnx.core.scoring.inputs import available_memory

# A run may take at most this share of the memory available
# (inputs.available_memory) when it starts. Measured (benchmarks/proxies_memory.py), the estimate is
# 0.78-1.06 of the growth of a process making a run of over 0.4 GiB (below
# that, the session's fixed cost dominates): a run let through grows the
# process by at most about 0.65 of what was available, the rest left for
# what the estimate misses and for the machine's other processes (bench's
# other workers among them).
RUN_MEMORY_SHARE = 0.5
_GIB = 2**30

# A run estimated above this gives the arena's unused regions back when it
# ends: the arena of a process keeps the peak of every run it served, so one
# large TransNAS-Bench-101 macro architecture (32 images, 2.5 GiB estimated)
# left its bench worker 4.4 GiB resident for the rest of the job, against
# 0.4-1.0 GiB with the shrinkage (python -m benchmarks.proxies_memory
# --one-process 8 --images 32). Smaller runs keep their pages for the next
# architecture, which would otherwise fault them in anew (NAS-Bench-201's
# runs, at about 0.3 GiB, are 20 % faster for it).
SHRINK_AFTER_BYTES = _GIB


class Shapes:
    """Every tensor's element type and dimensions in a model, from onnx shape
    inference with the fed input's dimensions after the first set to those of
    the batch (`example_shape`; the first, the batch axis, stays as the model
    declares it). It runs on a copy whose large initialisers are declared
    inputs: their shapes are all inference reads of them, and copying their
    data would cost as much as the inference."""

    def __init__(self, proto: onnx.ModelProto, input_name: str, example_shape: tuple[int, ...]):
        inferred = onnx.shape_inference.infer_shapes(_without_weights(proto, input_name, example_shape))
        graph = inferred.graph
        # per tensor: (the bytes of its fixed dimensions, how many are symbolic or unknown)
        self.sizes: dict[str, tuple[int, int]] = {}
        for value in (*graph.input, *graph.value_info, *graph.output):
            tensor = value.type.tensor_type
            if tensor.HasField("shape"):
                fixed, free = _itemsize(tensor.elem_type), 0
                for size in [dim.dim_value for dim in tensor.shape.dim]:
                    if size:
                        fixed *= size
                    else:  # symbolic or unknown (a dimension of 0 too, rare: counted high, never low)
                        free += 1
                self.sizes[value.name] = (fixed, free)
        self.initializers = {t.name: _tensor_bytes(t) for t in proto.graph.initializer}

    def bytes_of(self, name: str, examples: int) -> int:
        """The bytes of tensor `name`, each symbolic or unknown dimension `examples`
        (the batch's size: onnx names the batch axis symbolically); 0 if unknown."""
        if name in self.initializers:
            return self.initializers[name]
        fixed, free = self.sizes.get(name, (0, 0))
        return fixed * examples**free


def _without_weights(proto: onnx.ModelProto, input_name: str, example_shape: tuple[int, ...]) -> onnx.ModelProto:
    """The graph of `proto` (its nodes, inputs, outputs, opsets and functions),
    input `input_name` of one example's shape `example_shape` after its batch
    axis, and the initialisers over 1 KiB declared as graph inputs of their
    type and shape; the small ones and the int64 ones stay (inference reads a
    Reshape's target shape by value)."""
    light = onnx.ModelProto(ir_version=proto.ir_version, opset_import=proto.opset_import, functions=proto.functions)
    graph, source = light.graph, proto.graph
    graph.node.extend(source.node)
    graph.input.extend(source.input)
    graph.output.extend(source.output)
    declared = {v.name for v in source.input}
    for value in graph.input:
        dims = value.type.tensor_type.shape.dim
        if value.name == input_name and len(dims) == len(example_shape) + 1:
            for dim, size in zip(dims[1:], example_shape):
                dim.Clear()
                dim.dim_value = size
    for tensor in source.initializer:
        if _tensor_bytes(tensor) <= 1024 or tensor.data_type == onnx.TensorProto.INT64:
            graph.initializer.append(tensor)
        elif tensor.name not in declared:
            graph.input.append(helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims)))
    return light


def _tensor_bytes(tensor: onnx.TensorProto) -> int:
    return math.prod(tensor.dims) * _itemsize(tensor.data_type)


@functools.cache
def _itemsize(elem_type: int) -> int:
    try:
        return helper.tensor_dtype_to_np_dtype(elem_type).itemsize
    except (KeyError, TypeError, ValueError):  # strings, undefined types: a pointer each
        return 8


def peak_bytes(steps: list[tuple], inputs: list[str], outputs: list[str], shapes: Shapes, examples: int,
               runs: int = 1) -> int:
    """The estimated bytes of `runs` runs on a batch of `examples` that execute
    `steps`, their nodes in topological order, each (the names it writes, every
    name it reads: its subgraphs' outer names too), for the graph outputs
    `outputs`: the peak of the live tensors (the graph `inputs` the steps read
    among them, the outputs held to the end), plus the outputs once more (the
    copies Python receives), plus the initialisers the steps read. Several
    runs of one shape count the peak twice: after its first run ONNX Runtime
    plans each later one's intermediates as one block (its memory pattern),
    which the shared arena holds beside the first run's blocks (Zen's two
    runs on TransNAS-Bench-101 macro: 3.1 GiB measured, 1.8 without the pattern)."""
    last_read: dict[str, int] = {}
    for position, (_, read) in enumerate(steps):
        for name in read:
            last_read[name] = position
    for name in outputs:
        last_read[name] = len(steps)  # held to the end
    weights = sum(shapes.initializers[name] for name in last_read if name in shapes.initializers)
    freed_at: dict[int, int] = {}  # the bytes freed after each step
    live = 0
    for name in inputs:
        if name in last_read and name not in shapes.initializers:
            size = shapes.bytes_of(name, examples)
            live += size
            freed_at[last_read[name]] = freed_at.get(last_read[name], 0) + size
    peak = live
    for position, (written, _) in enumerate(steps):
        for name in written:
            if name:
                size = shapes.bytes_of(name, examples)
                live += size  # written while the node's inputs are still held
                last = last_read.get(name, position)  # one nothing reads is freed at once
                freed_at[last] = freed_at.get(last, 0) + size
        peak = max(peak, live)
        live -= freed_at.pop(position, 0)
    fetched = sum(shapes.bytes_of(name, examples) for name in dict.fromkeys(outputs))
    return peak * min(runs, 2) + fetched + weights


def bounds(model: ir.Model) -> Shapes:
    """Shapes whose sizes bound those of `model`'s tensors, from the shapes its
    values carry, without a shape inference (on NAS-Bench-201 the estimate's
    costs 3 % of the proxies' time, this a tenth of that): a value without
    one, which the proxies' passes added after shape inference, counts as its
    largest input, the one with the most symbolic dimensions first (they add
    elementwise operations, reductions and slices of feature maps: never
    larger)."""
    shapes = Shapes.__new__(Shapes)
    shapes.initializers = {name: value.const_value.nbytes for name, value in model.graph.initializers.items()
                           if value.const_value is not None}
    sizes = {value.name: _value_size(value) or (0, 0) for value in model.graph.inputs}
    for node in model.graph:  # in topological order
        largest = max((sizes.get(value.name, (0, 0)) for value in node.inputs if value is not None),
                      key=lambda size: (size[1], size[0]), default=(0, 0))
        for value in node.outputs:
            sizes[value.name] = _value_size(value) or largest
    shapes.sizes = sizes
    return shapes


def _value_size(value: ir.Value) -> tuple[int, int] | None:
    """(the bytes of the fixed dimensions, how many are symbolic), as Shapes.sizes holds them."""
    if value.shape is None or value.dtype is None:
        return None
    fixed = math.prod(d for d in value.shape if isinstance(d, int)) * value.dtype.itemsize
    return fixed, sum(1 for d in value.shape if not isinstance(d, int))


def room() -> float | None:
    """The bytes a run may take now: RUN_MEMORY_SHARE of the memory available
    (which counts what ONNX Runtime's shared arena already holds as taken: the
    arena keeps its pages, but a run of other shapes does not always fit in
    them); None where the system does not say."""
    available = available_memory()
    return None if available is None else available * RUN_MEMORY_SHARE


def refusal(proxy: str, feed: np.ndarray, need: int, taken: int = 0) -> str | None:
    """None if the runs of `proxy` on `feed`, estimated at `need` bytes, fit
    in room() now, less `taken` (what the runs of the same model let through
    before them will take); else the one-line error."""
    allowed = room()
    if allowed is None:
        return None
    allowed = max(allowed - taken, 0)
    if need <= allowed:
        return None
    kind = "images" if feed.ndim == 4 and np.issubdtype(feed.dtype, np.floating) else "examples"
    shape = "x".join(str(d) for d in feed.shape[1:])
    return (f"{proxy}'s run of {feed.shape[0]} {kind} at {shape} would need about {_size(need)} and "
            f"{_size(allowed)} is available to it: score on a machine with more memory or a smaller input resolution")


def _size(count: int | float) -> str:
    return f"{count / _GIB:.1f} GiB" if count >= _GIB / 10 else f"{count / 2**20:.0f} MiB"
