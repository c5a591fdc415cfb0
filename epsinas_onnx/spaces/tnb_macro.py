"""TransNAS-Bench-101's macro (skeleton) space (Duan et al., CVPR 2021) as ONNX models.

An architecture is a ResNet-style skeleton of 4 to 6 stages, one digit each
(the benchmark's net code `64-<digits>-basic`):

    1  keep channels and resolution     2  double the channels
    3  halve the resolution             4  both

with 1 to 4 stages that halve the resolution and 1 to 3 that double the
channels: 3,256 skeletons. NASLib (and the shared tables) write the digits as
a tuple of six, zero-padded, "(2, 3, 1, 3, 4, 0)"; `parse` reads both.

The network is the benchmark's `MacroNet(net_code, structure='backbone')`
(yawen-d/TransNASBench, lib/models/net_infer/net_macro.py, cell_micro.py)
with the classification tasks' decoder, on 256x256 images: the stem and the
head of tnb_micro (imported from there), and per digit two ResNet basic
blocks (ResNetBasicblock), the first changing the shape as the digit says:

    ReLU-Conv3x3(stride)-BN, ReLU-Conv3x3-BN, plus the input, through
    Conv1x1(stride)-BN where the shape changes (the `downsample`).
"""

from __future__ import annotations

import ast
import functools

import numpy as np
import onnx
import onnx_ir as ir

from epsinas_onnx.core.errors import UserError
from epsinas_onnx.spaces import pieces
from epsinas_onnx.spaces.graph_builder import GraphBuilder
from epsinas_onnx.spaces.protocol import Space
from epsinas_onnx.spaces.tnb_micro import (BASE_CHANNELS, HEAD_CLASSES, HEAD_OUTPUT, RESOLUTION, STEM_OUTPUT, TASKS,
                                           check_export, head, relu_conv_bn, skeleton_layers, stem, stem_params,
                                           step_pieces_for)

NAME = "tnb_macro"

DIGITS = (1, 2, 3, 4)
MIN_STAGES, MAX_STAGES = 4, 6
REDUCTIONS = (1, 4)  # how many stages may halve the resolution (digits 3, 4)
DOUBLINGS = (1, 3)  # how many may double the channels (digits 2, 4)

Arch = tuple  # 4 to 6 ints in 1..4


# ---------------------------------------------------------------------------
# encoding


def parse(text: str) -> Arch:
    """`64-231341-basic` (the benchmark's net code) or NASLib's zero-padded
    `(2, 3, 1, 3, 4, 1)` -> (2, 3, 1, 3, 4, 1)."""
    if not isinstance(text, str):
        raise UserError(f"a TransNAS-Bench-101 macro architecture is a string like 64-41414-basic, "
                        f"got {type(text).__name__}")
    stripped = text.strip()
    if stripped[:1] in "([":
        try:
            digits = ast.literal_eval(stripped)
        except (ValueError, SyntaxError):
            digits = None
        if not isinstance(digits, (tuple, list)) or not all(isinstance(d, int) for d in digits):
            raise UserError(f"TransNAS-Bench-101 macro architecture {text!r} is not a tuple of stage digits")
        arch = tuple(d for d in digits if d != 0)  # NASLib pads to six with zeros
    else:
        parts = stripped.split("-")
        if len(parts) != 3 or parts[0] != str(BASE_CHANNELS) or parts[2] != "basic" or not parts[1].isdigit():
            raise UserError(f"TransNAS-Bench-101 macro architecture {text!r} must read {BASE_CHANNELS}-<4 to 6 "
                            "digits 1-4>-basic (1 keep, 2 double the channels, 3 halve the resolution, 4 both) "
                            "or a tuple like (2, 3, 1, 3, 4, 0)")
        arch = tuple(int(c) for c in parts[1])
    validate(arch)
    return arch


def format_arch(arch: Arch) -> str:
    """The benchmark's net code, `64-<digits>-basic`."""
    validate(arch)
    return f"{BASE_CHANNELS}-{''.join(map(str, arch))}-basic"


def validate(arch: Arch) -> None:
    if isinstance(arch, str):
        raise UserError(f"TransNAS-Bench-101 macro architecture {arch!r} is a string: parse it first")
    if not isinstance(arch, tuple) or not all(
            isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d in DIGITS for d in arch):
        raise UserError(f"a TransNAS-Bench-101 macro architecture is a tuple of stage digits 1-4, got {arch!r}")
    if not MIN_STAGES <= len(arch) <= MAX_STAGES:
        raise UserError(f"a TransNAS-Bench-101 macro skeleton has {MIN_STAGES} to {MAX_STAGES} stages, not {len(arch)}")
    reductions = sum(d in (3, 4) for d in arch)
    doublings = sum(d in (2, 4) for d in arch)
    if not REDUCTIONS[0] <= reductions <= REDUCTIONS[1]:
        raise UserError(f"a TransNAS-Bench-101 macro skeleton halves the resolution {REDUCTIONS[0]} to "
                        f"{REDUCTIONS[1]} times (digits 3, 4), {arch!r} does {reductions}")
    if not DOUBLINGS[0] <= doublings <= DOUBLINGS[1]:
        raise UserError(f"a TransNAS-Bench-101 macro skeleton doubles the channels {DOUBLINGS[0]} to "
                        f"{DOUBLINGS[1]} times (digits 2, 4), {arch!r} does {doublings}")


def _as_arch(arch) -> Arch:
    if isinstance(arch, str):
        return parse(arch)
    validate(arch)
    return tuple(int(d) for d in arch)


def _is_valid(arch: Arch) -> bool:
    try:
        validate(arch)
    except UserError:
        return False
    return True


# ---------------------------------------------------------------------------
# the space


@functools.lru_cache(maxsize=1)
def _space() -> tuple[Arch, ...]:
    import itertools

    return tuple(arch for stages in range(MIN_STAGES, MAX_STAGES + 1)
                 for arch in itertools.product(DIGITS, repeat=stages) if _is_valid(arch))


def all_archs() -> list[Arch]:
    """All 3,256 skeletons: by length, then in product order of the digits."""
    return list(_space())


def sample(n: int, seed: int) -> list[Arch]:
    """n skeletons drawn uniformly from the 3,256, with replacement (numpy default_rng(seed))."""
    space = _space()
    return [space[int(i)] for i in np.random.default_rng(seed).integers(0, len(space), size=n)]


def _neighbours(arch: Arch) -> list[Arch]:
    """Every valid skeleton one edit away: a digit changed, inserted or removed."""
    found = set()
    for i in range(len(arch) + 1):
        for d in DIGITS:
            found.add(arch[:i] + (d,) + arch[i:])  # insert
            if i < len(arch):
                found.add(arch[:i] + (d,) + arch[i + 1:])  # change
        if i < len(arch):
            found.add(arch[:i] + arch[i + 1:])  # remove
    found.discard(arch)
    return sorted(a for a in found if _is_valid(a))


def mutate(arch: Arch, rng: np.random.Generator) -> Arch:
    """A valid neighbour drawn uniformly: one stage's digit changed, or one stage inserted or removed."""
    choices = _neighbours(_as_arch(arch))
    return choices[int(rng.integers(len(choices)))]


def num_params(arch: Arch, num_classes: int = HEAD_CLASSES) -> int:
    """Trainable parameters of the benchmark's network (conv weights, BN
    gamma and beta, head weight and bias); default: class_scene's 63-class
    head, as the benchmark's tables count `params` for that task."""
    arch = _as_arch(arch)
    total = stem_params()
    c_last = BASE_CHANNELS
    for c_in, c_out, stride in skeleton_layers(arch):
        total += c_in * c_out * 9 + 2 * c_out + c_out * c_out * 9 + 2 * c_out
        if stride != 1 or c_in != c_out:
            total += c_in * c_out + 2 * c_out
        c_last = c_out
    return total + c_last * num_classes + num_classes


# ---------------------------------------------------------------------------
# the ONNX model


def to_onnx(arch: Arch, num_classes: int = 1, resolution: int = RESOLUTION, seed: int = 0) -> onnx.ModelProto:
    """The network of `arch`: input "input" (batch, 3, r, r), output "logits"
    (batch, num_classes). Initialisers are random-looking (seeded by `seed`);
    BN nodes are inference-mode with mean 0, variance 1."""
    return ir.to_proto(to_ir(arch, num_classes=num_classes, resolution=resolution, seed=seed))


def to_ir(arch: Arch, num_classes: int = 1, resolution: int = RESOLUTION, seed: int = 0,
          tied: bool = False) -> ir.Model:
    """to_onnx's model as onnx-ir objects, not serialised (what bench
    rewrites). tied: one initialiser per kind and shape of parameter, for
    scoring under constant weights only."""
    arch = _as_arch(arch)
    skeleton = "".join(map(str, arch))
    check_export(num_classes, resolution, skeleton)
    g = GraphBuilder(seed, tied=tied)
    x = stem(g, resolution)
    for index, (c_in, c_out, stride) in enumerate(skeleton_layers(skeleton)):
        x = _basic_block(g, x, f"layer{index // 2}.{index % 2}", c_in, c_out, stride)
    head(g, x, c_out, num_classes)
    return g.ir_model(graph_name=f"tnb_macro_{skeleton}", doc=format_arch(arch))


def _basic_block(g: GraphBuilder, x: str, prefix: str, c_in: int, c_out: int, stride: int) -> str:
    """ResNetBasicblock: conv_b(conv_a(x)) + x, or + downsample(x) where the shape changes."""
    y = relu_conv_bn(g, x, f"{prefix}.conv_a", c_in, c_out, 3, stride)
    y = relu_conv_bn(g, y, f"{prefix}.conv_b", c_out, c_out, 3, 1)
    if stride != 1 or c_in != c_out:
        x = g.conv(x, f"{prefix}.downsample.conv", c_in, c_out, 1, stride=stride, pad=0)
        x = g.batch_norm(x, f"{prefix}.downsample.bn", c_out)
    return g.op("Add", [x, y], name=f"{prefix}.add")


# the network run block by block: the stem's output made once per weight (as
# tnb_micro's pieces), then one piece per block, keyed by what decides its
# rewritten nodes: its input channels and resolution, its output channels and
# stride (under collapse every tensor here is one channel: each block ends
# in a conv's output plus its input or a 1x1 conv of it); the head by its
# input. A worker cuts a block's piece the first time its key is met, out of
# that skeleton rewritten by the generic path (pieces.StepPieces); the logits
# are the generic path's bit for bit (tests/test_transnas_pieces.py).


def block_steps(arch: Arch, resolution: int = RESOLUTION) -> tuple[pieces.Step, ...]:
    """The steps that compute the logits of `arch` (at `resolution`) from the stem's output, in order."""
    steps, x, size = [], STEM_OUTPUT, resolution // 4
    for index, (c_in, c_out, stride) in enumerate(skeleton_layers("".join(map(str, _as_arch(arch))))):
        output = f"layer{index // 2}.{index % 2}.add"
        steps.append(pieces.Step(("block", c_in, c_out, stride, size), (x,), output))
        x, size = output, size // stride
    steps.append(pieces.Step(("head", c_out, size), (x,), HEAD_OUTPUT))
    return tuple(steps)  # every block is read by the next, none computes what another does


SPACE = Space(
    name=NAME, parse=parse, format_arch=format_arch, validate=validate, sample=sample, mutate=mutate,
    num_params=num_params, to_onnx=to_onnx, to_ir=to_ir,
    export_defaults={"num_classes": 1, "resolution": RESOLUTION, "seed": 0}, num_params_options=("num_classes",),
    reference_weights=(1e-7, 1.0), all_archs=all_archs, ir_takes_tied=True,
    # the benchmark's results here are NASLib's validation accuracies of 662 skeletons per task, with its proxies
    target_tables=("tnb_macro_proxies",), proxies_table="tnb_macro_proxies", datasets=TASKS,
    target_columns=("val_accuracy",), pieces_for=step_pieces_for(to_ir, block_steps, (4, 1, 4, 1)),
)
