"""TransNAS-Bench-101's micro (cell) space (Duan et al., CVPR 2021) as ONNX models.

An architecture is one 4-node cell: six edge ops in the order of the
benchmark's net code `64-41414-a_bc_def` (node 1 <- 0: a; node 2 <- 0, 1:
b c; node 3 <- 0, 1, 2: d e f), each one of

    0  zero          1  skip (identity; FactorizedReduce where the shape changes)
    2  ReLU-Conv1x1-BN    3  ReLU-Conv3x3-BN

NASLib (and the shared tables) write the same six digits as a tuple,
"(a, b, c, d, e, f)"; `parse` reads both. The network is the benchmark's
`MacroNet(net_code, structure='backbone')` (yawen-d/TransNASBench,
lib/models/net_infer/net_macro.py, cell_micro.py, net_ops/cell_ops.py) with
the classification tasks' decoder (task_models/decoder.py FFDecoder), on the
256x256 Taskonomy images it was trained on:

    stem    Conv3x3(3 -> 32, stride 2) BN, ReLU-Conv3x3(32 -> 64, stride 2)-BN
    body    the macro skeleton "41414", two cells per digit: 4 = stride 2
            and twice the channels (the first cell reduces), 1 = neither;
            64 -> 128 -> 256 -> 512 channels, 10 cells
    head    global average pool, Linear(512 -> num_classes)

In a cell (MicroCell), node j sums op(j, i)(node i) over i < j and the cell
outputs node 3. Edges from node 0 take the cell's input width and stride,
the others map the output width to itself. Ops (cell_ops.py):
  * zero: x * 0; where the shape changes, zeros of the new shape;
  * skip: x where the shape is kept, else FactorizedReduce: ReLU, then two
    Conv1x1(stride 2) of half the channels each, one on x and one on x
    shifted by a pixel (padded at the end), concatenated, BN;
  * ReLU-Conv-BN: ReLU, Conv k x k (stride, padding k // 2, no bias), BN.

As in nb201.py, zero edges are left out of a sum (adding x * 0 to a finite
sum changes nothing), a node whose edges are all zero is x * 0, and the terms
of a node are summed in the order of what they compute, so that cells that
compute the same thing build the same graph (`computation_class`).
"""

from __future__ import annotations

import ast
import itertools

import numpy as np
import onnx
import onnx_ir as ir

from epsinas_onnx.core.errors import UserError
from epsinas_onnx.core.options import ExecutionOptions, ScoringSettings
from epsinas_onnx.spaces import pieces
from epsinas_onnx.spaces.graph_builder import GraphBuilder
from epsinas_onnx.spaces.protocol import Space

NAME = "tnb_micro"

OPS = ("zero", "skip", "conv1x1", "conv3x3")  # by digit, as the benchmark's cell_ops.OPS
CONV_KERNEL = {2: 1, 3: 3}
# (to_node, from_node) of each edge, in net-code order
EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
NUM_NODES = 4

BASE_CHANNELS = 64
MICRO_SKELETON = "41414"
BLOCKS_PER_DIGIT = 2  # cells (micro) or residual blocks (macro) per skeleton digit
RESOLUTION = 256  # the Taskonomy images' size in the benchmark
IN_CHANNELS = 3
HEAD_CLASSES = 63  # class_scene's head (class_object: 100), as the benchmark's params are counted
# the benchmark's tasks, each a column (a row set) of its tables; the classification tasks first
TASKS = ("class_scene", "class_object", "autoencoder", "normal", "jigsaw", "room_layout", "segmentsemantic")

Arch = tuple  # six ints in 0..3, see EDGES


# ---------------------------------------------------------------------------
# encoding


def parse(text: str) -> Arch:
    """`64-41414-a_bc_def` (the benchmark's net code) or NASLib's
    `(a, b, c, d, e, f)` -> (a, b, c, d, e, f)."""
    if not isinstance(text, str):
        raise UserError(f"a TransNAS-Bench-101 micro architecture is a string like 64-41414-3_13_333, "
                        f"got {type(text).__name__}")
    stripped = text.strip()
    if stripped[:1] in "([":
        try:
            digits = ast.literal_eval(stripped)
        except (ValueError, SyntaxError):
            digits = None
        if not isinstance(digits, (tuple, list)):
            raise UserError(f"TransNAS-Bench-101 micro architecture {text!r} is not a tuple of six ops 0-3")
        arch = tuple(digits)
    else:
        parts = stripped.split("-")
        if len(parts) != 3 or parts[0] != str(BASE_CHANNELS) or parts[1] != MICRO_SKELETON:
            raise UserError(f"TransNAS-Bench-101 micro architecture {text!r} must read "
                            f"{BASE_CHANNELS}-{MICRO_SKELETON}-a_bc_def (ops 0 zero, 1 skip, 2 conv1x1, 3 conv3x3) "
                            "or (a, b, c, d, e, f)")
        nodes = parts[2].split("_")
        if [len(n) for n in nodes] != [1, 2, 3] or not all(c.isdigit() for c in "".join(nodes)):
            raise UserError(f"TransNAS-Bench-101 micro cell {parts[2]!r} must be a_bc_def: one op into node 1, "
                            "two into node 2, three into node 3, each a digit 0-3")
        arch = tuple(int(c) for c in "".join(nodes))
    validate(arch)
    return arch


def format_arch(arch: Arch) -> str:
    """The benchmark's net code, `64-41414-a_bc_def`."""
    validate(arch)
    a, b, c, d, e, f = arch
    return f"{BASE_CHANNELS}-{MICRO_SKELETON}-{a}_{b}{c}_{d}{e}{f}"


def validate(arch: Arch) -> None:
    if isinstance(arch, str):
        raise UserError(f"TransNAS-Bench-101 micro architecture {arch!r} is a string: parse it first")
    if not isinstance(arch, tuple) or len(arch) != len(EDGES) or not all(
            isinstance(op, (int, np.integer)) and not isinstance(op, bool) and 0 <= op < len(OPS) for op in arch):
        raise UserError(f"a TransNAS-Bench-101 micro architecture is a tuple of {len(EDGES)} ops in 0..3 "
                        f"(0 zero, 1 skip, 2 conv1x1, 3 conv3x3), got {arch!r}")


def _as_arch(arch) -> Arch:
    if isinstance(arch, str):
        return parse(arch)
    validate(arch)
    return tuple(int(op) for op in arch)


# ---------------------------------------------------------------------------
# the space


def all_archs() -> list[Arch]:
    """All 4^6 = 4,096 cells, the last edge varying fastest (NASLib's order)."""
    return list(itertools.product(range(len(OPS)), repeat=len(EDGES)))


def sample(n: int, seed: int) -> list[Arch]:
    """n cells drawn uniformly with replacement (numpy default_rng(seed))."""
    rng = np.random.default_rng(seed)
    return [tuple(int(op) for op in row) for row in rng.integers(0, len(OPS), size=(n, len(EDGES)))]


def mutate(arch: Arch, rng: np.random.Generator) -> Arch:
    """One edge, chosen uniformly, changed to one of the three other ops."""
    arch = _as_arch(arch)
    edge = int(rng.integers(len(EDGES)))
    others = [op for op in range(len(OPS)) if op != arch[edge]]
    return arch[:edge] + (others[int(rng.integers(len(others)))],) + arch[edge + 1:]


_ZEROS = "zeros(x)"


def cell_plan(arch: Arch) -> tuple[list[str], list[list[tuple[str, int, int]]]]:
    """The expression of each cell node (x, then nodes 1-3) and, for nodes
    1-3, the terms summed into it as (expression, source node, op), in the
    order they are summed: zero edges left out, a skip from a node other
    than the input that node itself (a skip from the input is the
    FactorizedReduce of a reduction cell), no terms x * 0, terms sorted by
    their expressions. Every cell of the network follows this plan."""
    exprs = ["x"]
    plan = []
    for node in range(1, NUM_NODES):
        terms = sorted(
            (exprs[src] if op == 1 and src > 0 else f"{OPS[op]}({exprs[src]})", src, op)
            for (to, src), op in zip(EDGES, arch) if to == node and op != 0
        )
        exprs.append(_ZEROS if not terms else terms[0][0] if len(terms) == 1
                     else f"sum({', '.join(t[0] for t in terms)})")
        plan.append(terms)
    return exprs, plan


def computation_class(arch: Arch) -> str:
    """What the cell computes, written out (`cell_plan`): architectures with
    the same class build the same graph up to names, dead edges and initial
    weight values, so under constant weights they score the same bit for bit."""
    return cell_plan(_as_arch(arch))[0][-1]


def skeleton_layers(skeleton: str):
    """(c_in, c_out, stride) of each block of a macro skeleton, two per
    digit (MacroNet._make_layer): digit 2 or 4 doubles the channels, 3 or 4
    halves the resolution; the first block of a digit does both."""
    channels = BASE_CHANNELS
    for digit in skeleton:
        digit = int(digit)
        c_out = channels * 2 if digit % 2 == 0 else channels
        stride = 2 if digit > 2 else 1
        for block in range(BLOCKS_PER_DIGIT):
            yield (channels, c_out, stride) if block == 0 else (c_out, c_out, 1)
        channels = c_out


def stem_params() -> int:
    half = BASE_CHANNELS // 2
    return IN_CHANNELS * half * 9 + 2 * half + half * BASE_CHANNELS * 9 + 2 * BASE_CHANNELS


def _edge_params(op: int, c_in: int, c_out: int, stride: int) -> int:
    if op in CONV_KERNEL:
        return c_in * c_out * CONV_KERNEL[op] ** 2 + 2 * c_out
    if op == 1 and (stride != 1 or c_in != c_out):  # FactorizedReduce: two half convs and a BN
        return c_in * c_out + 2 * c_out
    return 0


def num_params(arch: Arch, num_classes: int = HEAD_CLASSES) -> int:
    """Trainable parameters of the benchmark's network (conv weights, BN
    gamma and beta, head weight and bias), every edge counted, also one
    whose input is zero. Default: class_scene's 63-class head, the head of
    the `params` the benchmark's tables list for that task."""
    arch = _as_arch(arch)
    total = stem_params()
    c_last = BASE_CHANNELS
    for c_in, c_out, stride in skeleton_layers(MICRO_SKELETON):
        for (to, src), op in zip(EDGES, arch):
            total += _edge_params(op, c_in, c_out, stride) if src == 0 else _edge_params(op, c_out, c_out, 1)
        c_last = c_out
    return total + c_last * num_classes + num_classes


# ---------------------------------------------------------------------------
# the ONNX model: pieces the macro skeleton space (tnb_macro) builds with too


def check_export(num_classes, resolution, skeleton: str) -> None:
    reductions = sum(int(d) > 2 for d in skeleton)
    step = 4 * 2 ** reductions  # the stem halves twice, each reducing digit once more
    if not isinstance(resolution, int) or resolution < step or resolution % step:
        raise UserError(f"TransNAS-Bench-101 resolution must be a positive multiple of {step} for skeleton "
                        f"{skeleton} (two stride-2 stem convs, {reductions} reductions), got {resolution!r}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise UserError(f"num_classes must be a positive integer, got {num_classes!r}")


def relu_conv_bn(g: GraphBuilder, x: str, prefix: str, c_in: int, c_out: int, kernel: int, stride: int) -> str:
    """cell_ops.ReLUConvBN: ReLU, Conv (padding kernel // 2, no bias), BN."""
    y = g.op("Relu", x, name=f"{prefix}.relu")
    y = g.conv(y, f"{prefix}.conv", c_in, c_out, kernel, stride=stride)
    return g.batch_norm(y, f"{prefix}.bn", c_out)


def stem(g: GraphBuilder, resolution: int) -> str:
    """The input and MacroNet's stem: Conv3x3(3 -> 32, stride 2) BN, then
    ReLU-Conv3x3(32 -> 64, stride 2)-BN."""
    x = g.input("input", ["batch", IN_CHANNELS, resolution, resolution])
    half = BASE_CHANNELS // 2
    x = g.conv(x, "stem.conv", IN_CHANNELS, half, 3, stride=2)
    x = g.batch_norm(x, "stem.bn", half)
    return relu_conv_bn(g, x, "stem.relu_conv_bn", half, BASE_CHANNELS, 3, 2)


def head(g: GraphBuilder, x: str, channels: int, num_classes: int) -> None:
    """FFDecoder: global average pool, Linear(channels -> num_classes); the graph output "logits"."""
    x = g.op("GlobalAveragePool", x, name="decoder.avgpool")
    x = g.op("Flatten", x, name="decoder.flatten", axis=1)
    x = g.linear(x, "decoder.fc", channels, num_classes)
    g.output(x, "logits", ["batch", num_classes])


def to_onnx(arch: Arch, num_classes: int = 1, resolution: int = RESOLUTION, seed: int = 0) -> onnx.ModelProto:
    """The network of `arch`: input "input" (batch, 3, r, r), output "logits"
    (batch, num_classes). Initialisers are random-looking (seeded by `seed`);
    BN nodes are inference-mode with mean 0, variance 1 (the scorer switches
    them to batch statistics)."""
    return ir.to_proto(to_ir(arch, num_classes=num_classes, resolution=resolution, seed=seed))


def to_ir(arch: Arch, num_classes: int = 1, resolution: int = RESOLUTION, seed: int = 0,
          tied: bool = False) -> ir.Model:
    """to_onnx's model as onnx-ir objects, not serialised (what bench
    rewrites). tied: one initialiser per kind and shape of parameter
    (GraphBuilder.tied_parameter), for scoring under constant weights only."""
    arch = _as_arch(arch)
    check_export(num_classes, resolution, MICRO_SKELETON)
    g = GraphBuilder(seed, tied=tied)
    x = stem(g, resolution)
    plan = cell_plan(arch)[1]
    for index, (c_in, c_out, stride) in enumerate(skeleton_layers(MICRO_SKELETON)):
        x = _cell(g, x, plan, f"cells.{index}", c_in, c_out, stride)
    head(g, x, c_out, num_classes)
    return g.ir_model(graph_name=f"tnb_micro_{format_arch(arch)}", doc=format_arch(arch))


def _cell(g: GraphBuilder, x: str, plan, prefix: str, c_in: int, c_out: int, stride: int) -> str:
    nodes = [x]
    for node, terms in enumerate(plan, start=1):
        values = [_edge(g, op, nodes[src], f"{prefix}.edge_{node}_{src}", c_in if src == 0 else c_out, c_out,
                        stride if src == 0 else 1) for _, src, op in terms]
        if values:
            nodes.append(g.add_all(values, name=f"{prefix}.node{node}"))
        else:
            nodes.append(_zeros(g, x, f"{prefix}.node{node}_zeros", c_in, c_out, stride))
    return nodes[-1]


def _edge(g: GraphBuilder, op: int, x: str, prefix: str, c_in: int, c_out: int, stride: int) -> str:
    if op in CONV_KERNEL:
        return relu_conv_bn(g, x, prefix, c_in, c_out, CONV_KERNEL[op], stride)
    if stride == 1 and c_in == c_out:
        return x
    return _factorized_reduce(g, x, prefix, c_in, c_out, stride)


def _factorized_reduce(g: GraphBuilder, x: str, prefix: str, c_in: int, c_out: int, stride: int) -> str:
    """ReLU; Conv1x1(stride) of x and of x shifted one pixel up and left
    (the benchmark pads the end by one and drops the first row and column:
    here the shift is a Slice and the end padding the conv's), each half the
    channels; concatenated; BN."""
    if c_out % 2:
        raise UserError(f"FactorizedReduce needs an even number of output channels, not {c_out}")
    r = g.op("Relu", x, name=f"{prefix}.relu")
    half = c_out // 2
    a = g.conv(r, f"{prefix}.convs.0", c_in, half, 1, stride=stride, pad=0)
    starts = g.constant(f"{prefix}.shift.starts", np.array([1, 1], np.int64))
    ends = g.constant(f"{prefix}.shift.ends", np.array([np.iinfo(np.int64).max] * 2, np.int64))
    axes = g.constant(f"{prefix}.shift.axes", np.array([2, 3], np.int64))
    shifted = g.op("Slice", [r, starts, ends, axes], name=f"{prefix}.shift")
    weight = g.weight(f"{prefix}.convs.1.weight", (c_out - half, c_in, 1, 1))
    b = g.op("Conv", [shifted, weight], name=f"{prefix}.convs.1", kernel_shape=[1, 1], strides=[stride, stride],
             pads=[0, 0, 1, 1])
    y = g.op("Concat", [a, b], name=f"{prefix}.concat", axis=1)
    return g.batch_norm(y, f"{prefix}.bn", c_out)


def _zeros(g: GraphBuilder, x: str, name: str, c_in: int, c_out: int, stride: int) -> str:
    """A node whose edges are all zero: x * 0 (cell_ops.Zero), of the node's
    shape: every stride-th pixel of x (x[:, :, ::stride, ::stride]) where
    the resolution changes, its channels repeated where their number does
    (the benchmark makes new zeros there; x * 0 is the same for a finite x)."""
    if stride != 1:
        starts = g.constant(f"{name}.starts", np.array([0, 0], np.int64))
        ends = g.constant(f"{name}.ends", np.array([np.iinfo(np.int64).max] * 2, np.int64))
        axes = g.constant(f"{name}.axes", np.array([2, 3], np.int64))
        steps = g.constant(f"{name}.steps", np.array([stride, stride], np.int64))
        x = g.op("Slice", [x, starts, ends, axes, steps], name=f"{name}.subsample")
    zero = g.op("Mul", [x, g.constant_node(f"{name}.zero", np.float32(0.0))], name=name)
    if c_out == c_in:
        return zero
    if c_out % c_in:
        raise UserError(f"a zero edge from {c_in} to {c_out} channels: not a multiple")
    return g.op("Concat", [zero] * (c_out // c_in), name=f"{name}.widen", axis=1)


# ---------------------------------------------------------------------------
# the network run piece by piece
#
# Under constant weights a sub-network computes the same wherever its inputs
# are alike. At the benchmark's 256x256 the stem (two stride-2 convs on the
# full image) is four fifths of a collapsed network's run and the same for
# every architecture of both TransNAS spaces: its output is made once per
# weight. After it, an architecture is a list of steps (`cell_steps`; tnb_macro's
# `block_steps`), each keyed by what decides its rewritten nodes: an edge's op
# given the shape it maps (channels in and out, stride, input resolution) and
# its input's channel groups; a FactorizedReduce likewise; a node's sum given
# its terms' groups; a node whose edges are all zero given the cell's shape and
# input groups; the head given its input. The groups are what channel collapse
# keeps of a tensor (one channel per group of equal channels): a conv's output
# is one group, a FactorizedReduce's two (its halves concatenated), a skip
# keeps its input's, zeros widened to more channels repeat them, and a sum
# has the finest of its terms' (they all split the channels into equal
# parts, so the finest is the most parts). The groups only key the pieces:
# a wrong guess would make a piece whose input width ONNX Runtime refuses,
# never another result. A worker cuts a step's piece the first time its key
# is met, out of that architecture rewritten by the generic path
# (pieces.StepPieces), one session each; an edge equal to one already run in
# the cell (the same op from the same node) is not run again. Every node run
# is a node of a generic rewrite fed the same inputs, so the logits are the
# generic path's bit for bit (tests/test_transnas_pieces.py).

STEM_OUTPUT = "stem.relu_conv_bn.bn"  # the tensor the stem ends in (its last BN, named by the builder)
HEAD_OUTPUT = "logits"


def cell_steps(arch: Arch, resolution: int = RESOLUTION) -> tuple[pieces.Step, ...]:
    """The steps that compute the logits of `arch` (at `resolution`) from the stem's output, in order."""
    plan = cell_plan(_as_arch(arch))[1]
    steps: list[pieces.Step] = []

    def step(key, inputs, output):
        steps.append(pieces.Step(key, inputs, output))
        return output

    x, groups, size = STEM_OUTPUT, 1, resolution // 4  # the cell input, its channel groups, its resolution
    for index, (c_in, c_out, stride) in enumerate(skeleton_layers(MICRO_SKELETON)):
        prefix, shape, inner = f"cells.{index}", (c_in, c_out, stride, size), (c_out, c_out, 1, size // stride)
        nodes = [(x, groups)]  # each node's tensor and groups
        for node, terms in enumerate(plan, start=1):
            values = []
            for _, src, op in terms:
                source, source_groups = nodes[src]
                edge = f"{prefix}.edge_{node}_{src}.bn"
                if op in CONV_KERNEL:
                    values.append((step(("conv", op, shape if src == 0 else inner, source_groups), (source,), edge), 1))
                elif src == 0 and shape != inner:  # a skip that changes the shape: FactorizedReduce
                    values.append((step(("reduce", shape, source_groups), (source,), edge), 2))
                else:
                    values.append((source, source_groups))
            if not values:
                name = f"{prefix}.node{node}_zeros" + (".widen" if c_out != c_in else "")
                nodes.append((step(("zeros", shape, groups), (x,), name), groups * c_out // c_in))
            elif len(values) == 1:
                nodes.append(values[0])
            else:
                tensors = tuple(dict.fromkeys(t for t, _ in values))  # a tensor summed twice is fed once
                key = ("sum", inner, tuple((tensors.index(t), g) for t, g in values))
                nodes.append((step(key, tensors, f"{prefix}.node{node}"), max(g for _, g in values)))
        (x, groups), size = nodes[-1], size // stride
    steps.append(pieces.Step(("head", c_out, size, groups), (x,), HEAD_OUTPUT))
    return pieces.needed_steps(steps, HEAD_OUTPUT)


def pieces_declines(scoring: ScoringSettings, input_name: str | None, device: str) -> str | None:
    """Why the pieces would not compute what the generic path does for these
    settings (prepare_model's) on `device`; None where they do."""
    return pieces.declines(scoring, input_name, device, HEAD_OUTPUT)


def step_pieces_for(to_ir, steps, stem_template):
    """Space.pieces_for for a TransNAS space whose to_ir is `to_ir` and whose
    steps(arch, resolution) are its steps after the stem."""
    def pieces_for(export: dict, scoring: ScoringSettings, batch: np.ndarray, execution: ExecutionOptions,
                   input_name: str | None = None) -> pieces.StepPieces | None:
        if pieces_declines(scoring, input_name, execution.device) is not None:
            return None
        resolution = export.get("resolution", RESOLUTION)
        network = pieces.StepNetwork(steps=lambda arch: steps(arch, resolution),
                                     build=lambda arch: to_ir(arch, **export, tied=True),
                                     stem_template=stem_template, stem_output=STEM_OUTPUT, head_output=HEAD_OUTPUT)
        return pieces.StepPieces(network, scoring, input_name, batch, execution.threads, execution.graph_optimization)

    return pieces_for


SPACE = Space(
    name=NAME, parse=parse, format_arch=format_arch, validate=validate, sample=sample, mutate=mutate,
    num_params=num_params, to_onnx=to_onnx, to_ir=to_ir,
    export_defaults={"num_classes": 1, "resolution": RESOLUTION, "seed": 0}, num_params_options=("num_classes",),
    reference_weights=(1e-7, 1.0), all_archs=all_archs, computation_class=computation_class, ir_takes_tied=True,
    target_tables=("tnb_micro_all",), baselines_table="tnb_micro_zen", proxies_table="tnb_micro_proxies",
    datasets=TASKS, pieces_for=step_pieces_for(to_ir, cell_steps, (1,) * len(EDGES)),
)
