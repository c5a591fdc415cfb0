"""Benchmark search spaces as ONNX models.

Each module here is one search space and declares what it offers as
`SPACE`, a protocol.Space (get_space returns it), so that `bench`, `search`
and `calibrate` treat spaces alike without probing modules. Its members
(protocol.py says each): name, parse, format_arch, validate, sample, mutate,
num_params, to_onnx, to_ir, export_defaults, reference_weights, and where a
space has them all_archs, computation classes with their finite check, and a
reader of the benchmark's csv files. A new space is a module here ending with
`SPACE = Space(...)`, named in SPACES; tests/test_spaces_conformance.py checks it.

Models are built directly as onnx-ir graphs (no torch): building a graph takes
milliseconds, torch.onnx.export a second or two, which matters for a
15,625-architecture space.
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from epsinas_onnx.spaces.protocol import Space

SPACES = ("nb201", "nb101", "nlp", "macro", "tnb_micro", "tnb_macro")


def get_space(name: str) -> "Space":
    """The declared protocol.Space of search space `name`, its module imported on demand."""
    import importlib

    from epsinas_onnx.core.errors import UserError

    if name not in SPACES:
        raise UserError(f"unknown search space {name!r}: choose one of {', '.join(SPACES)}")
    return importlib.import_module(f"epsinas_onnx.spaces.{name}").SPACE
