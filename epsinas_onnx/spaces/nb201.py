"""NAS-Bench-201: the cell-based TinyNetwork (C = 16, N = 5) as an ONNX model.

An architecture is a tuple of six op names, one per cell edge, in the order
the arch string lists them: edges into node 1 from 0; into node 2 from 0, 1;
into node 3 from 0, 1, 2 (see EDGES). The string form is the benchmark's own,
`|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`.

Network (reference-semantics §4): stem Conv3x3(3->C) + BN; N cells at C;
ResNet reduction block C->2C; N cells at 2C; reduction 2C->4C; N cells at 4C;
BN + ReLU; global average pool; Linear(4C -> num_classes).
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import numpy as np
import onnx
import onnx_ir as ir
from onnx import TensorProto, helper

from epsinas_onnx.core.errors import UserError
from epsinas_onnx.core.options import ExecutionOptions, ScoringSettings
from epsinas_onnx.spaces import pieces
from epsinas_onnx.spaces.graph_builder import OPSET, GraphBuilder
from epsinas_onnx.spaces.protocol import Space

if TYPE_CHECKING:  # the pieces import ONNX Runtime when they are made, not with the space
    from epsinas_onnx.core.scoring import runtime

NAME = "nb201"

# The op list in NAS-Bench-201's own order.
OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
# (to_node, from_node) of each edge, in arch-string order.
EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
NUM_NODES = 4

C = 16  # channels of the first stage; the others have 2C and 4C
N = 5  # cells per stage
STAGE_CHANNELS = (C, 2 * C, 4 * C)
CONV_KERNEL = {"nor_conv_1x1": 1, "nor_conv_3x3": 3}

Arch = tuple  # six op names, see EDGES

ARCH_FORMAT = "|op~0|+|op~0|op~1|+|op~0|op~1|op~2|"


# ---------------------------------------------------------------------------
# encoding


def parse(text: str) -> Arch:
    """`|op~0|+|op~0|op~1|+|op~0|op~1|op~2|` -> tuple of six op names."""
    if not isinstance(text, str):
        raise UserError(f"NAS-Bench-201 arch must be a string like {ARCH_FORMAT}, got {type(text).__name__}")
    text = text.strip()
    groups = text.split("+")
    if len(groups) != NUM_NODES - 1:
        raise UserError(
            f"NAS-Bench-201 arch {text!r} has {len(groups)} node group(s) separated by '+', "
            f"expected {NUM_NODES - 1}: write it as {ARCH_FORMAT}"
        )
    arch = []
    for node, group in enumerate(groups, start=1):
        if len(group) < 2 or not (group.startswith("|") and group.endswith("|")):
            raise UserError(
                f"NAS-Bench-201 arch {text!r}: node {node} group {group!r} must start and end with '|' "
                f"(format {ARCH_FORMAT})"
            )
        edges = group[1:-1].split("|")
        if len(edges) != node:
            raise UserError(
                f"NAS-Bench-201 arch {text!r}: node {node} has {len(edges)} incoming edge(s), "
                f"expected {node} (format {ARCH_FORMAT})"
            )
        for source, edge in enumerate(edges):
            op, sep, index = edge.partition("~")
            if not sep or index != str(source):
                raise UserError(
                    f"NAS-Bench-201 arch {text!r}: edge {edge!r} into node {node} must read "
                    f"'op~{source}' (the {source}th input of node {node})"
                )
            _check_op(op, f"arch {text!r}")
            arch.append(op)
    return tuple(arch)


def format_arch(arch: Arch) -> str:
    """Tuple of six op names -> `|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`."""
    validate(arch)
    groups = []
    for node in range(1, NUM_NODES):
        edges = [f"{op}~{src}" for (to, src), op in zip(EDGES, arch) if to == node]
        groups.append("|" + "|".join(edges) + "|")
    return "+".join(groups)


def validate(arch: Arch) -> None:
    """Raise UserError unless `arch` is a tuple of six known op names."""
    if isinstance(arch, str):
        raise UserError(f"NAS-Bench-201 arch {arch!r} is a string: parse it first (epsinas_onnx.spaces.nb201.parse)")
    if not isinstance(arch, tuple) or len(arch) != len(EDGES):
        raise UserError(
            f"NAS-Bench-201 arch must be a tuple of {len(EDGES)} op names (edges "
            f"{', '.join(f'{t}<-{s}' for t, s in EDGES)}), got {arch!r}"
        )
    for op in arch:
        _check_op(op, f"arch {arch!r}")


def _check_op(op, where: str) -> None:
    if op not in OPS:
        raise UserError(f"NAS-Bench-201 {where}: unknown op {op!r}, choose one of {', '.join(OPS)}")


def _as_arch(arch) -> Arch:
    """Accept the string form too, where a function takes an arch."""
    if isinstance(arch, str):
        return parse(arch)
    validate(arch)
    return arch


# ---------------------------------------------------------------------------
# the space


def all_archs() -> list[Arch]:
    """All 5^6 = 15,625 architectures, as a product over OPS with the last edge
    varying fastest. This is NOT the official NAS-Bench-201 index order: that
    order is the benchmark's own (it follows no product or sort of the op
    names), so map to it through the arch string (accuracies.csv, `arch`)."""
    return list(itertools.product(OPS, repeat=len(EDGES)))


def sample(n: int, seed: int) -> list[Arch]:
    """n architectures drawn uniformly with replacement (numpy default_rng(seed))."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(OPS), size=(n, len(EDGES)))
    return [tuple(OPS[i] for i in row) for row in picks]


def mutate(arch: Arch, rng: np.random.Generator) -> Arch:
    """Change exactly one edge, chosen uniformly, to one of the other four ops."""
    arch = _as_arch(arch)
    edge = int(rng.integers(len(EDGES)))
    others = [op for op in OPS if op != arch[edge]]
    new = list(arch)
    new[edge] = others[int(rng.integers(len(others)))]
    return tuple(new)


def computation_class(arch: Arch) -> str:
    """What the cell computes, as the exporter builds it: node 3 written out as
    an expression of the cell input x (`_cell_plan`).

    Every cell of the network is this cell, so two architectures with the same
    class export the same graph up to tensor names, dead edges and initial
    weight values. Once every weight of a shape holds the same value (the
    reference's constant weights; not the random-weight ablations, whose R
    depends on the tensor's name) they rewrite to the same graph and give the
    same score bit for bit: 7,871 classes over the 15,625 architectures
    (tests/test_computation_key.py checks them against the rewritten graphs'
    `computation_key`s)."""
    return _cell_plan(_as_arch(arch))[0][-1]


def computation_class_if_finite(arch: Arch) -> str:
    """computation_class, for networks whose every cell input is finite and
    whose biases (BN beta included) are zero: 5,773 classes.

    A node whose edges are all `none` is x * 0, exactly 0 when x is finite;
    every op of the space then maps it to exactly 0 (ReLU-Conv-BN with batch
    statistics gives (0 - 0) / sqrt(0 + eps) * gamma + 0), and adding 0 changes
    no sum. So the terms computed from such a node can be left out, and
    architectures that differ only in those edges compute the same, up to the
    sign of zeros, which neither the network nor the metric can see. With an
    inf in x, x * 0 is NaN and they differ: a caller runs one architecture of
    the class with `to_ir(..., finite_check=True)` and shares its result only
    if FINITE_CHECK_OUTPUT came out finite (`finite_check_passed`)."""
    return _cell_plan(_as_arch(arch), drop_zero_terms=True)[0][-1]


def _cell_plan(arch: Arch, drop_zero_terms: bool = False) -> tuple[list[str], list[list[tuple[str, int, str]]]]:
    """The expression of each cell node (x, then nodes 1-3) and, for nodes 1-3,
    the terms summed into it as (expression, source node, op), in the order
    they are summed. The rules: `none` edges are left out, `skip_connect` is
    its input itself, one term is not summed, no terms is x * 0, and the terms
    are summed in the order of what they compute (their expressions), not of
    the edges: PyTorch's edge order would make cells that differ only in which
    edge carries which term round differently, and so be different networks
    (9,387 classes instead of 7,871); the sum is the same up to float32
    rounding either way. drop_zero_terms: also leave out the terms computed
    from a node that is x * 0 (computation_class_if_finite; never for export)."""
    exprs = ["x"]
    plan = []
    for node in range(1, NUM_NODES):
        terms = sorted(
            (exprs[src] if op == "skip_connect" else f"{op}({exprs[src]})", src, op)
            for (to, src), op in zip(EDGES, arch)
            if to == node and op != "none" and not (drop_zero_terms and exprs[src] == _ZEROS)
        )
        if not terms:
            exprs.append(_ZEROS)
        else:
            exprs.append(terms[0][0] if len(terms) == 1 else f"sum({', '.join(t[0] for t in terms)})")
        plan.append(terms)
    return exprs, plan


_ZEROS = "zeros(x)"

# to_ir(finite_check=True)'s second output: the global average of every cell's
# input, per stage summed over its cells; finite only if every cell input is
FINITE_CHECK_OUTPUT = "cell_inputs_sum"


def finite_check_passed(values: np.ndarray) -> bool:
    """Whether FINITE_CHECK_OUTPUT proves every cell input finite. A sum of
    finite numbers may still overflow to inf: that only fails the check."""
    return bool(np.isfinite(values).all())


def num_params(arch: Arch, num_classes: int = 10) -> int:
    """Trainable parameters of the PyTorch TinyNetwork: conv weights, BN gamma
    and beta, classifier weight and bias. A formula, no graph: fast enough to
    run over the whole space."""
    arch = _as_arch(arch)
    total = 3 * C * 9 + 2 * C  # stem conv + BN
    for c_in, c_out in zip(STAGE_CHANNELS, STAGE_CHANNELS[1:]):
        total += _reduction_params(c_in, c_out)
    for channels in STAGE_CHANNELS:
        per_cell = sum(_edge_params(op, channels) for op in arch)
        total += N * per_cell
    last = STAGE_CHANNELS[-1]
    total += 2 * last  # final BN
    total += last * num_classes + num_classes  # classifier
    return total


def _edge_params(op: str, channels: int) -> int:
    if op not in CONV_KERNEL:
        return 0
    k = CONV_KERNEL[op]
    return channels * channels * k * k + 2 * channels  # ReLU-Conv-BN


def _reduction_params(c_in: int, c_out: int) -> int:
    conv_a = c_in * c_out * 9 + 2 * c_out
    conv_b = c_out * c_out * 9 + 2 * c_out
    shortcut = c_in * c_out  # 1x1 conv, no bias
    return conv_a + conv_b + shortcut


# ---------------------------------------------------------------------------
# the ONNX model


def to_onnx(arch: Arch, num_classes: int = 1, resolution: int = 32, seed: int = 0) -> onnx.ModelProto:
    """The TinyNetwork of `arch` as an ONNX model: input "input" (batch, 3, H, W)
    float32 with H = W = resolution (32 for CIFAR, 16 for ImageNet16-120),
    output "logits" (batch, num_classes). Initialisers are random-looking
    (seeded by `seed`); BN nodes are inference-mode with mean 0, variance 1."""
    return ir.to_proto(to_ir(arch, num_classes=num_classes, resolution=resolution, seed=seed))


def to_ir(arch: Arch, num_classes: int = 1, resolution: int = 32, seed: int = 0,
          finite_check: bool = False, tied: bool = False) -> ir.Model:
    """to_onnx's model as onnx-ir objects, not serialised (what bench rewrites).
    finite_check: add the output FINITE_CHECK_OUTPUT (see
    computation_class_if_finite); the logits stay the first output. tied: one
    initialiser per kind and shape of parameter (GraphBuilder.tied_parameter),
    for scoring under constant weights only."""
    arch = _as_arch(arch)
    if not isinstance(resolution, int) or resolution < 4 or resolution % 4:
        raise UserError(
            f"NAS-Bench-201 resolution must be a positive multiple of 4 (two stride-2 stages), got {resolution!r}"
        )
    if not isinstance(num_classes, int) or num_classes < 1:
        raise UserError(f"num_classes must be a positive integer, got {num_classes!r}")

    g = GraphBuilder(seed, tied=tied)
    x = g.input("input", ["batch", 3, resolution, resolution])
    x = g.conv(x, "stem.conv", 3, C, 3)
    x = g.batch_norm(x, "stem.bn", C)

    index = 0  # module index in the PyTorch `cells` list, reductions included
    stage_checks = []
    for stage, channels in enumerate(STAGE_CHANNELS):
        if stage > 0:
            x = _reduction_block(g, x, f"cells.{index}", STAGE_CHANNELS[stage - 1], channels)
            index += 1
        cell_inputs = []
        for _ in range(N):
            cell_inputs.append(x)
            x = _cell(g, x, arch, f"cells.{index}", channels)
            index += 1
        if finite_check:
            means = [g.op("GlobalAveragePool", v, name=f"finite_check.mean_{i}") for i, v in enumerate(cell_inputs)]
            stage_checks.append(g.add_all(means, name=f"finite_check.stage{stage}"))

    last = STAGE_CHANNELS[-1]
    x = g.batch_norm(x, "lastact.bn", last)
    x = g.op("Relu", x, name="lastact.relu")
    x = g.op("GlobalAveragePool", x, name="global_pooling")
    x = g.op("Flatten", x, name="flatten", axis=1)
    x = g.linear(x, "classifier", last, num_classes)
    g.output(x, "logits", ["batch", num_classes])
    if finite_check:
        check = g.op("Concat", stage_checks, name="finite_check.concat", axis=1)
        g.output(check, FINITE_CHECK_OUTPUT, ["batch", sum(STAGE_CHANNELS), 1, 1])
    return g.ir_model(graph_name=f"nb201_{format_arch(arch)}", doc=format_arch(arch))


def _cell(g: GraphBuilder, x: str, arch: Arch, prefix: str, channels: int) -> str:
    """Node j = sum of op(j, i)(node i) over i < j, in `_cell_plan`'s order;
    the cell outputs node 3. `none` edges are skipped rather than multiplied by
    zero; a node whose edges are all `none` is x * 0 (PyTorch's Zero is
    `x.mul(0.)`, so NaN / inf inputs still give NaN, and finite ones exact zeros)."""
    nodes = [x]
    for node, node_terms in enumerate(_cell_plan(arch)[1], start=1):
        terms = [_edge(g, op, nodes[src], f"{prefix}.edge_{node}_{src}", channels) for _, src, op in node_terms]
        if terms:
            nodes.append(g.add_all(terms, name=f"{prefix}.node{node}"))
        else:
            nodes.append(g.op("Mul", [x, _zero(g)], name=f"{prefix}.node{node}_zeros"))
    return nodes[-1]


def _zero(g: GraphBuilder) -> str:
    """A scalar 0.0 from a Constant node (not an initialiser, so that a
    weight-rewriting pass does not mistake it for a weight)."""
    return g.constant_node("zero", np.float32(0.0))


def _edge(g: GraphBuilder, op: str, x: str, prefix: str, channels: int) -> str:
    if op == "skip_connect":
        return x
    if op == "avg_pool_3x3":
        return g.op("AveragePool", x, name=f"{prefix}.pool", kernel_shape=[3, 3], strides=[1, 1],
                    pads=[1, 1, 1, 1], count_include_pad=0)
    return _relu_conv_bn(g, x, prefix, channels, channels, CONV_KERNEL[op], stride=1)


def _relu_conv_bn(g: GraphBuilder, x: str, prefix: str, c_in: int, c_out: int, kernel: int, stride: int) -> str:
    x = g.op("Relu", x, name=f"{prefix}.relu")
    x = g.conv(x, f"{prefix}.conv", c_in, c_out, kernel, stride=stride)
    return g.batch_norm(x, f"{prefix}.bn", c_out)


def _reduction_block(g: GraphBuilder, x: str, prefix: str, c_in: int, c_out: int) -> str:
    """ResNet basic block with stride 2: b(a(x)) + Conv1x1(AvgPool2x2(x))."""
    a = _relu_conv_bn(g, x, f"{prefix}.conv_a", c_in, c_out, 3, stride=2)
    b = _relu_conv_bn(g, a, f"{prefix}.conv_b", c_out, c_out, 3, stride=1)
    shortcut = g.op("AveragePool", x, name=f"{prefix}.downsample.pool", kernel_shape=[2, 2], strides=[2, 2])
    shortcut = g.conv(shortcut, f"{prefix}.downsample.conv", c_in, c_out, 1)
    return g.op("Add", [shortcut, b], name=f"{prefix}.add")


# ---------------------------------------------------------------------------
# the network run piece by piece
#
# One set of ONNX Runtime sessions per worker, for every architecture.
#
# The generic path (export, rewrite, serialise, session, then the two runs)
# spends about three quarters of an architecture's time around its runs. Yet
# under constant weights the networks of the space are made of a handful of
# pieces that are the same computation wherever they occur: the stem, each
# edge op at each stage's width, the two reduction blocks and the head. So the
# generic path rewrites one template architecture, once, and the pieces are
# cut out of its rewritten graph (onnx.utils.Extractor, by the tensor names
# `to_ir` gives); an architecture is then evaluated by calling the
# pieces in the order of its cell plan (`_cell_plan`), each piece's
# OrtValue feeding the next without a copy.
#
# Why the numbers are the generic path's, bit for bit: every node run is a
# node of the rewrite itself, with the same attributes and constants, fed the
# same inputs; a piece boundary only moves where a tensor lives between two
# nodes, and ONNX Runtime's CPU kernels on one thread compute the same output
# for the same inputs whichever session runs them. What the cell plan adds is
# what the exporter writes: `Sum` of the terms in the plan's order, `x * 0`
# for a node without terms. tests/test_nb201_pieces.py compares the logits
# with the generic path's bit for bit over a sample and every setting this
# applies to; docs/performance.md compares the whole space's store.
#
# It applies only where every layer of one kind holds the same values:
# constant weights (the random-weight ablations draw R per tensor name), the
# space's own output and input, the CPU (a GPU would copy every piece's
# output back). `pieces_declines` says why they do not apply otherwise.

# one architecture with every piece in it: node 1 = conv3x3(x); node 2 =
# conv1x1(x) + node 1; node 3 = avgpool(x) + node 1 + node 2 (a sum of three,
# so that each cell's output is the tensor named "cells.<i>.node3")
TEMPLATE = ("nor_conv_3x3", "nor_conv_1x1", "skip_connect", "avg_pool_3x3", "skip_connect", "skip_connect")
# the template's tensor that each edge op's piece ends in, by its edge in the cell
EDGE_OUTPUT = {"nor_conv_3x3": "edge_1_0.bn", "nor_conv_1x1": "edge_2_0.bn", "avg_pool_3x3": "edge_3_0.pool"}
CELLS_PER_STAGE = N
STAGES = len(STAGE_CHANNELS)
# module index (to_ir's "cells.<i>") of each stage's first cell: cells, then a reduction block
FIRST_CELL = tuple(stage * (CELLS_PER_STAGE + 1) for stage in range(STAGES))
STEM_OUTPUT = "stem.bn"
HEAD_OUTPUT = "logits"


def _cell_input(stage: int) -> str:
    """The tensor the template's first cell of `stage` reads."""
    return STEM_OUTPUT if stage == 0 else f"cells.{FIRST_CELL[stage] - 1}.add"


def _cell_output(index: int) -> str:
    return f"cells.{index}.node3"


class Pieces:
    """The sessions of every piece, made once, and the batch they run on.

    output(arch, weight) is the logits the generic path's session gives for
    `arch` at `weight`, bit for bit."""

    def __init__(self, template: onnx.ModelProto, batch: np.ndarray, threads: int | None, graph_optimization: str):
        from epsinas_onnx.core.scoring import runtime

        cut = pieces.Cutter(template, threads, graph_optimization).cut
        self.stem = cut(["input"], STEM_OUTPUT)
        self.edges = {
            (stage, op): cut([_cell_input(stage)], f"cells.{FIRST_CELL[stage]}.{name}")
            for stage in range(STAGES) for op, name in EDGE_OUTPUT.items()
        }
        # reduction block before stage s reads the last cell of stage s - 1
        self.reductions = {
            stage: cut([_cell_output(FIRST_CELL[stage] - 2)], _cell_input(stage)) for stage in range(1, STAGES)
        }
        self.head = cut([_cell_output(FIRST_CELL[-1] + CELLS_PER_STAGE - 1)], HEAD_OUTPUT)
        self.sums = {k: pieces.piece(_sum_model(k), threads, graph_optimization) for k in (2, 3)}
        self.zeros = pieces.piece(_zeros_model(), threads, graph_optimization)
        self.nonfinite = pieces.piece(_nonfinite_model(), threads, graph_optimization)
        self._arrays = [np.ascontiguousarray(batch, dtype=np.float32)]  # the memory of the values below
        self.batch = runtime.cpu_value(self._arrays[0])
        self._weights: dict[float, tuple] = {}  # see _at_weight

    @property
    def sessions(self) -> int:
        pieces = [self.stem, self.head, self.zeros, self.nonfinite, *self.edges.values(), *self.reductions.values(),
                  *self.sums.values()]
        return len(pieces)

    def output(self, arch, weight: float, finite_check: bool = False,
               timeout: float | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """The logits of `arch` at `weight` and, with finite_check, the check
        of every cell input, sum(x * 0): 0 where every element is finite, NaN
        otherwise, never an overflow (finite_check_passed reads it, as it reads
        FINITE_CHECK_OUTPUT; None without). timeout bounds all the
        architecture's pieces together."""
        from epsinas_onnx.core.scoring import runtime

        exprs, plan = _cell_plan(_as_arch(arch))
        checks = []
        with runtime.WatchedRuns(timeout) as runs:
            w, x, shared, _ = self._at_weight(runs, weight)
            for stage in range(STAGES):
                if stage:
                    x = self.reductions[stage](runs, x, w)
                for cell in range(CELLS_PER_STAGE):
                    if finite_check:
                        checks.append(self.nonfinite(runs, x).numpy())
                    x = self._cell(runs, stage, exprs, plan, x, w, shared if stage == cell == 0 else None)
            logits = self.head(runs, x, w).numpy()
        return logits, (np.stack(checks) if finite_check else None)

    def _at_weight(self, runs: runtime.WatchedRuns, weight: float) -> tuple:
        """The weight as a value, the stem's output and the first cell's
        shared edge outputs at `weight`: the same for every architecture, so
        made once. Kept for the last two weights (a pair; a ladder's rungs)."""
        key = float(weight)
        if key not in self._weights:
            from epsinas_onnx.core.scoring import runtime

            while len(self._weights) >= 2:
                self._weights.pop(next(iter(self._weights)))
            array = np.array(weight, dtype=np.float32)
            w = runtime.cpu_value(array)
            self._weights[key] = (w, self.stem(runs, self.batch, w), {}, array)
        return self._weights[key]

    def _cell(self, runs: runtime.WatchedRuns, stage: int, exprs: list[str], plan, x, w, shared: dict | None):
        """One cell as _cell builds it: each node the Sum of its terms in
        the plan's order, one term itself, no term x * 0. An edge op applied to
        nodes of the same expression (`_cell_plan`) is the same computation on
        the same input: it runs once. shared: for the network's first cell,
        whose input is the stem's output, the edge outputs of nodes 0 and 1,
        kept across architectures (at most 3 ops x 5 expressions)."""
        nodes = [x]
        done: dict[tuple[str, str], object] = {}
        for terms in plan:
            values = []
            for _, source, op in terms:
                if op == "skip_connect":
                    values.append(nodes[source])
                    continue
                table = shared if shared is not None and source <= 1 else done
                key = (op, exprs[source])
                if key not in table:
                    table[key] = self.edges[stage, op](runs, nodes[source], w)
                values.append(table[key])
            if not values:
                nodes.append(self.zeros(runs, x))
            elif len(values) == 1:
                nodes.append(values[0])
            else:
                nodes.append(self.sums[len(values)](runs, *values))
        return nodes[-1]


def _small_model(node: onnx.NodeProto, inputs: list[str], before: list | None = None) -> onnx.ModelProto:
    """A graph of `before` then `node`, whose output is the model's, at the exporter's opset."""
    graph = helper.make_graph(
        [*(before or []), node], node.op_type,
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in inputs],
        [helper.make_tensor_value_info(node.output[0], TensorProto.FLOAT, None)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)


def _sum_model(terms: int) -> onnx.ModelProto:
    """The exporter's node sum (GraphBuilder.add_all): one Sum of the terms."""
    names = [f"term{i}" for i in range(terms)]
    return _small_model(helper.make_node("Sum", names, ["sum"]), names)


def _zero_constant(name: str) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=helper.make_tensor(name, TensorProto.FLOAT, [], [0.0]))


def _zeros_model() -> onnx.ModelProto:
    """The exporter's node without terms (_cell): x * 0, a scalar Constant 0."""
    return _small_model(helper.make_node("Mul", ["x", "zero"], ["zeros"]), ["x"], [_zero_constant("zero")])


def _nonfinite_model() -> onnx.ModelProto:
    """sum(x * 0): 0 when every element of x is finite, NaN otherwise."""
    return _small_model(helper.make_node("ReduceSum", ["zeros"], ["total"], keepdims=0), ["x"],
                        [_zero_constant("zero"), helper.make_node("Mul", ["x", "zero"], ["zeros"])])


def pieces_declines(scoring: ScoringSettings, input_name: str | None, device: str) -> str | None:
    """Why the pieces would not compute what the generic path does for these
    settings (prepare_model's) on `device`; None where they do."""
    return pieces.declines(scoring, input_name, device, HEAD_OUTPUT)


def pieces_for(export: dict, scoring: ScoringSettings, batch: np.ndarray, execution: ExecutionOptions,
               input_name: str | None = None) -> Pieces | None:
    """The pieces for networks exported with `export` (to_ir's options) and
    rewritten with `scoring` and `input_name` (prepare_model's), on `batch`,
    with execution's threads and graph optimisation; None where they do not
    apply (`pieces_declines`)."""
    if pieces_declines(scoring, input_name, execution.device) is not None:
        return None
    template = pieces.rewritten_template(to_ir(TEMPLATE, **export), scoring, input_name)
    return Pieces(template, batch, execution.threads, execution.graph_optimization)


SPACE = Space(
    name=NAME, parse=parse, format_arch=format_arch, validate=validate, sample=sample, mutate=mutate,
    num_params=num_params, to_onnx=to_onnx, to_ir=to_ir,
    export_defaults={"num_classes": 1, "resolution": 32, "seed": 0}, num_params_options=("num_classes",),
    reference_weights=(1e-7, 1.0), all_archs=all_archs,
    computation_class=computation_class, computation_class_if_finite=computation_class_if_finite,
    finite_check_output=FINITE_CHECK_OUTPUT, finite_check_passed=finite_check_passed,
    ir_takes_tied=True, ir_takes_finite_check=True, pieces_for=pieces_for,
    target_tables=("nb201_accuracies",), baselines_table="nb201_baselines", proxies_table="nb201_proxies",
    arch_columns=("arch", "arch_str"), datasets=("cifar10", "cifar100", "imagenet16_120"),
)
