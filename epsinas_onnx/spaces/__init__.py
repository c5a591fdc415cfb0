"""Benchmark search spaces as ONNX models.

Each module here is one search space and declares what it offers as
`SPACE`, a protocol.Space (get_space returns it), so that `bench`, `search`
and `calibrate` treat spaces alike without probing modules. Its members:

    NAME                          the space's short name ("nb201", ...)
    parse(text) -> Arch           the benchmark's own encoding -> architecture
    format_arch(arch) -> str      architecture -> the benchmark's own encoding
    validate(arch) -> None        raises UserError naming what is wrong
    sample(n, seed) -> list[Arch] uniform sample, repeatable
    mutate(arch, rng) -> Arch     one single-edit neighbour (ageing evolution)
    num_params(arch, num_classes=10) -> int
    to_onnx(arch, ...) -> onnx.ModelProto
    to_ir(arch, ...) -> onnx_ir.Model   the same model, not serialised (bench rewrites it directly)

Models are built directly as onnx-ir graphs (no torch): building a graph takes
milliseconds, torch.onnx.export a second or two, which matters for a
15,625-architecture space.
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from epsinas_onnx.spaces.protocol import Space

SPACES = ("nb201", "nb101", "nlp")


def get_space(name: str) -> "Space":
    """The declared protocol.Space of search space `name`, its module imported on demand."""
    import importlib

    from epsinas_onnx.errors import UserError

    if name not in SPACES:
        raise UserError(f"unknown search space {name!r}: choose one of {', '.join(SPACES)}")
    return importlib.import_module(f"epsinas_onnx.spaces.{name}").SPACE
