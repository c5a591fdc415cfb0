"""NAS-Bench-Macro (Su et al., CVPR 2021) as ONNX models.

An architecture is 8 searchable layers, each one of three blocks, written as
the benchmark writes it: 8 digits, e.g. "01201120".

    0  identity
    1  MobileNetV2 inverted residual, kernel 3, expansion 3 ("ir_3x3_t3")
    2  MobileNetV2 inverted residual, kernel 5, expansion 6 ("ir_5x5_t6")

The network is the benchmark's `Network` (xiusu/NAS-Bench-Macro,
train/model.py), on 32x32 CIFAR-10 images:

    stem    Conv3x3(3 -> 32) BN ReLU
    stages  of 2, 3 and 3 layers; a stage's first layer has stride 2 and
            doubles the channels (32 -> 64 -> 128 -> 256), the others keep both
    out     Conv1x1(256 -> 1280) BN ReLU, global average pool
    head    Linear(1280 -> num_classes)

Blocks (convs without bias, each followed by BN):
  * identity: nothing where the shape is kept; where the layer changes it (a
    stage's first layer) Conv1x1(stride 2, c -> 2c) BN;
  * inverted residual (expansion t, kernel k), hidden = t * c_in:
    Conv1x1(c_in -> hidden) BN ReLU, depthwise Conv k x k (stride, groups =
    hidden) BN ReLU, Conv1x1(hidden -> c_out) BN; plus the input where the
    shape is kept.

The benchmark trains `get_real_arch(key)` for each key (train/utils.py): a
stage's identity layers after its first layer moved to the stage's end. Such
a layer computes nothing (stride 1, same channels), so the key's network and
the trained one are the same function; the model built here is the trained
one's, so keys with one trained network export the same graph
(`computation_class`: 3,969 networks for 6,561 keys).
"""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import onnx_ir as ir

from epsinas_onnx.core.errors import UserError
from epsinas_onnx.core.options import ExecutionOptions, ScoringSettings
from epsinas_onnx.spaces import pieces
from epsinas_onnx.spaces.graph_builder import GraphBuilder
from epsinas_onnx.spaces.protocol import Space

NAME = "macro"

OPS = ("id", "ir_3x3_t3", "ir_5x5_t6")  # the benchmark's candidate_OP, by digit
# (kernel, expansion) of the inverted residual blocks
BLOCKS = {1: (3, 3), 2: (5, 6)}
STAGES = (2, 3, 3)  # layers per stage
NUM_LAYERS = sum(STAGES)
STEM_CHANNELS = 32
OUT_CHANNELS = 1280
IN_CHANNELS = 3

Arch = tuple  # 8 ints in 0..2, one per searchable layer


# ---------------------------------------------------------------------------
# encoding


def parse(text: str) -> Arch:
    """"01201120" (the benchmark's key) -> (0, 1, 2, 0, 1, 1, 2, 0)."""
    if not isinstance(text, str):
        raise UserError(f"a NAS-Bench-Macro architecture is 8 digits 0-2 like '01201120', got {type(text).__name__}")
    digits = text.strip()
    if len(digits) != NUM_LAYERS or any(c not in "012" for c in digits):
        raise UserError(f"NAS-Bench-Macro architecture {text!r} must be {NUM_LAYERS} digits, each 0 (identity), "
                        "1 (inverted residual k3 e3) or 2 (k5 e6), e.g. '01201120'")
    return tuple(int(c) for c in digits)


def format_arch(arch: Arch) -> str:
    validate(arch)
    return "".join(map(str, arch))


def validate(arch: Arch) -> None:
    """UserError unless `arch` is a tuple of 8 ints in 0..2."""
    if isinstance(arch, str):
        raise UserError(f"NAS-Bench-Macro architecture {arch!r} is a string: parse it first")
    if not isinstance(arch, tuple) or len(arch) != NUM_LAYERS or not all(
            isinstance(op, (int, np.integer)) and not isinstance(op, bool) and 0 <= op < len(OPS) for op in arch):
        raise UserError(f"a NAS-Bench-Macro architecture is a tuple of {NUM_LAYERS} ints in 0..2, got {arch!r}")


def _as_arch(arch) -> Arch:
    if isinstance(arch, str):
        return parse(arch)
    validate(arch)
    return tuple(int(op) for op in arch)


# ---------------------------------------------------------------------------
# the space


def all_archs() -> list[Arch]:
    """All 3^8 = 6,561 keys, in the benchmark's own order (itertools.product
    over the digits, the last layer varying fastest)."""
    return list(itertools.product(range(len(OPS)), repeat=NUM_LAYERS))


def sample(n: int, seed: int) -> list[Arch]:
    """n keys drawn uniformly with replacement (numpy default_rng(seed))."""
    rng = np.random.default_rng(seed)
    return [tuple(int(op) for op in row) for row in rng.integers(0, len(OPS), size=(n, NUM_LAYERS))]


def mutate(arch: Arch, rng: np.random.Generator) -> Arch:
    """One layer, chosen uniformly, changed to one of the two other blocks."""
    arch = _as_arch(arch)
    layer = int(rng.integers(NUM_LAYERS))
    others = [op for op in range(len(OPS)) if op != arch[layer]]
    return arch[:layer] + (others[int(rng.integers(len(others)))],) + arch[layer + 1:]


def real_arch(arch: Arch) -> Arch:
    """The network the benchmark trains for this key (utils.get_real_arch):
    in each stage, the identity layers after the first moved to its end."""
    arch = _as_arch(arch)
    result, start = [], 0
    for size in STAGES:
        first, rest = arch[start], arch[start + 1:start + size]
        blocks = [op for op in rest if op != 0]
        result += [first, *blocks, *[0] * (len(rest) - len(blocks))]
        start += size
    return tuple(result)


def computation_class(arch: Arch) -> str:
    """Keys with the same trained network export the same graph: the real
    architecture's digits."""
    return "".join(map(str, real_arch(arch)))


def _layers(arch: Arch):
    """(layer index, op, c_in, c_out, stride) of every layer of `arch`."""
    channels, index = STEM_CHANNELS, 0
    for size in STAGES:
        for position in range(size):
            stride = 2 if position == 0 else 1
            c_out = channels * 2 if position == 0 else channels
            yield index, arch[index], channels, c_out, stride
            channels, index = c_out, index + 1


def num_params(arch: Arch, num_classes: int = 10) -> int:
    """Trainable parameters (conv weights, BN gamma and beta, classifier
    weight and bias), as the benchmark counts them (its `params` column,
    10-class head). A formula, no graph."""
    arch = _as_arch(arch)
    total = IN_CHANNELS * STEM_CHANNELS * 9 + 2 * STEM_CHANNELS
    c_last = STEM_CHANNELS
    for _, op, c_in, c_out, stride in _layers(arch):
        if op == 0:
            if stride != 1 or c_in != c_out:
                total += c_in * c_out + 2 * c_out
        else:
            kernel, expansion = BLOCKS[op]
            hidden = c_in * expansion
            total += c_in * hidden + 2 * hidden  # expand
            total += hidden * kernel * kernel + 2 * hidden  # depthwise
            total += hidden * c_out + 2 * c_out  # project
        c_last = c_out
    total += c_last * OUT_CHANNELS + 2 * OUT_CHANNELS
    return total + OUT_CHANNELS * num_classes + num_classes


# ---------------------------------------------------------------------------
# the ONNX model


def to_onnx(arch: Arch, num_classes: int = 1, resolution: int = 32, seed: int = 0) -> onnx.ModelProto:
    """The network of `arch`: input "input" (batch, 3, r, r), output "logits"
    (batch, num_classes). Initialisers are random-looking (seeded by `seed`);
    BN nodes are inference-mode with mean 0, variance 1 (the scorer switches
    them to batch statistics)."""
    return ir.to_proto(to_ir(arch, num_classes=num_classes, resolution=resolution, seed=seed))


def to_ir(arch: Arch, num_classes: int = 1, resolution: int = 32, seed: int = 0, tied: bool = False) -> ir.Model:
    """to_onnx's model as onnx-ir objects, not serialised (what bench
    rewrites). tied: one initialiser per kind and shape of parameter
    (GraphBuilder.tied_parameter), for scoring under constant weights only."""
    key = _as_arch(arch)
    if not isinstance(resolution, int) or resolution < 8:
        raise UserError(f"NAS-Bench-Macro resolution must be an integer >= 8 (three stride-2 stages), got {resolution!r}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise UserError(f"num_classes must be a positive integer, got {num_classes!r}")
    built = real_arch(key)

    g = GraphBuilder(seed, tied=tied)
    x = g.input("input", ["batch", IN_CHANNELS, resolution, resolution])
    x = _conv_bn(g, x, "stem", IN_CHANNELS, STEM_CHANNELS, 3, 1)
    x = g.op("Relu", x, name="stem.relu")
    for index, op, c_in, c_out, stride in _layers(built):
        prefix = f"features.{index}"
        if op == 0:
            if stride != 1 or c_in != c_out:
                x = _conv_bn(g, x, f"{prefix}.downsample", c_in, c_out, 1, stride)
        else:
            x = _inverted_residual(g, x, prefix, c_in, c_out, stride, *BLOCKS[op])
    x = _conv_bn(g, x, "out", c_out, OUT_CHANNELS, 1, 1)
    x = g.op("Relu", x, name="out.relu")
    x = g.op("GlobalAveragePool", x, name="out.pool")
    x = g.op("Flatten", x, name="flatten", axis=1)
    x = g.linear(x, "classifier", OUT_CHANNELS, num_classes)
    g.output(x, "logits", ["batch", num_classes])
    text = format_arch(key)
    return g.ir_model(graph_name=f"macro_{text}", doc=f"NAS-Bench-Macro {text} (trained as {computation_class(key)})")


def _conv_bn(g: GraphBuilder, x: str, prefix: str, c_in: int, c_out: int, kernel: int, stride: int,
             groups: int = 1) -> str:
    """Conv (no bias, padding kernel // 2) then BN."""
    weight = g.weight(f"{prefix}.conv.weight", (c_out, c_in // groups, kernel, kernel))
    pad = kernel // 2
    y = g.op("Conv", [x, weight], name=f"{prefix}.conv", kernel_shape=[kernel, kernel], strides=[stride, stride],
             pads=[pad] * 4, group=groups)
    return g.batch_norm(y, f"{prefix}.bn", c_out)


def _inverted_residual(g: GraphBuilder, x: str, prefix: str, c_in: int, c_out: int, stride: int, kernel: int,
                       expansion: int) -> str:
    hidden = c_in * expansion
    y = g.op("Relu", _conv_bn(g, x, f"{prefix}.expand", c_in, hidden, 1, 1), name=f"{prefix}.expand.relu")
    y = g.op("Relu", _conv_bn(g, y, f"{prefix}.depthwise", hidden, hidden, kernel, stride, groups=hidden),
             name=f"{prefix}.depthwise.relu")
    y = _conv_bn(g, y, f"{prefix}.project", hidden, c_out, 1, 1)
    if stride == 1 and c_in == c_out:
        y = g.op("Add", [y, x], name=f"{prefix}.add")
    return y


# ---------------------------------------------------------------------------
# the network run layer by layer
#
# Under constant weights a layer computes the same wherever its (position,
# block) occurs: its input is the previous layer's output, whatever made it.
# So a worker rewrites three template architectures with the generic path
# (every layer an identity, every layer block 1, every layer block 2: each
# (position, block) of a real architecture is in one of them), once, and cuts
# the stem, each layer and the head out of the rewritten graphs
# (pieces.Cutter, by the tensor names to_ir gives); an architecture is its
# real architecture's layers called in order. Every node run is a node of the
# generic rewrite fed the same inputs, so the logits are the generic path's
# bit for bit (tests/test_export_macro.py). The stem's output is the same for
# every architecture: made once per weight. So is a layer's output for every
# architecture with the same layers up to it: the previous architecture's
# outputs at that weight are kept, and the layers it shares from the first on
# are not run again (the whole space in its order shares long prefixes).

TEMPLATES = tuple((op,) * NUM_LAYERS for op in range(len(OPS)))
STEM_OUTPUT = "stem.relu"
HEAD_OUTPUT = "logits"


def _layer_output(index: int, op: int, c_in: int, c_out: int, stride: int) -> str | None:
    """The tensor to_ir's layer `index` ends in; None for an identity that computes nothing."""
    keeps_shape = stride == 1 and c_in == c_out
    if op == 0:
        return None if keeps_shape else f"features.{index}.downsample.bn"
    return f"features.{index}.add" if keeps_shape else f"features.{index}.project.bn"


class LayerPieces:
    """The sessions of the stem, of every (position, block) and of the head,
    made once, and the batch they run on. output(arch, weight) is the logits
    the generic path's session gives for `arch` at `weight`, bit for bit."""

    def __init__(self, templates: list[onnx.ModelProto], batch: np.ndarray, threads: int | None,
                 graph_optimization: str):
        from epsinas_onnx.core.scoring import runtime

        self.layers = {}  # (position, block) -> Piece; identities that compute nothing have none
        for template, model in zip(TEMPLATES, templates):  # each template is its own real architecture
            cutter = pieces.Cutter(model, threads, graph_optimization)
            source = STEM_OUTPUT
            for index, op, c_in, c_out, stride in _layers(template):
                output = _layer_output(index, op, c_in, c_out, stride)
                if output is not None:
                    self.layers[index, op] = cutter.cut([source], output)
                    source = output
            if template[0] == 0:
                self.stem = cutter.cut(["input"], STEM_OUTPUT)
            else:
                self.head = cutter.cut([source], HEAD_OUTPUT)  # the last template's
        self._array = np.ascontiguousarray(batch, dtype=np.float32)  # the memory of the value below
        self.batch = runtime.cpu_value(self._array)
        # per weight: the weight's value, the stem's output, the last architecture's layers and their outputs
        self._weights = pieces.WeightValues(lambda runs, w: {"stem": self.stem(runs, self.batch, w), "last": ((), [])})

    @property
    def sessions(self) -> int:
        return 2 + len(self.layers)

    def output(self, arch, weight: float, finite_check: bool = False,
               timeout: float | None = None) -> tuple[np.ndarray, None]:
        """The logits of `arch` at `weight` (no finite check: the space declares
        none). timeout bounds all the architecture's pieces together."""
        from epsinas_onnx.core.scoring import runtime

        layers = [(index, op) for index, op, c_in, c_out, stride in _layers(real_arch(arch))
                  if _layer_output(index, op, c_in, c_out, stride) is not None]
        with runtime.WatchedRuns(timeout) as runs:
            w, kept = self._weights(runs, weight)
            last_layers, last_outputs = kept["last"]
            shared = 0
            while shared < min(len(layers), len(last_layers)) and layers[shared] == last_layers[shared]:
                shared += 1
            outputs = last_outputs[:shared]
            x = outputs[-1] if outputs else kept["stem"]
            for layer in layers[shared:]:
                x = self.layers[layer](runs, x, w)
                outputs.append(x)
            kept["last"] = (layers, outputs)
            return self.head(runs, x, w).numpy(), None


def pieces_declines(scoring: ScoringSettings, input_name: str | None, device: str) -> str | None:
    """Why the layer pieces would not compute what the generic path does for
    these settings (prepare_model's) on `device`; None where they do."""
    return pieces.declines(scoring, input_name, device, HEAD_OUTPUT)


def pieces_for(export: dict, scoring: ScoringSettings, batch: np.ndarray, execution: ExecutionOptions,
               input_name: str | None = None) -> LayerPieces | None:
    """Space.pieces_for: the layer pieces for networks exported with `export`
    and rewritten with `scoring` and `input_name`, on `batch`; None where they
    do not apply (`pieces_declines`)."""
    if pieces_declines(scoring, input_name, execution.device) is not None:
        return None
    templates = [pieces.rewritten_template(to_ir(t, **export, tied=True), scoring, input_name) for t in TEMPLATES]
    return LayerPieces(templates, batch, execution.threads, execution.graph_optimization)


SPACE = Space(
    name=NAME, parse=parse, format_arch=format_arch, validate=validate, sample=sample, mutate=mutate,
    num_params=num_params, to_onnx=to_onnx, to_ir=to_ir,
    export_defaults={"num_classes": 1, "resolution": 32, "seed": 0}, num_params_options=("num_classes",),
    reference_weights=(1e-7, 1.0), all_archs=all_archs, computation_class=computation_class, ir_takes_tied=True,
    pieces_for=pieces_for, target_tables=("macro_accuracies",), baselines_table="macro_baselines", target_columns=("mean_acc",),
)
