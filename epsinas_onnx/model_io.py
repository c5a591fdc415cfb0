"""Loading models with errors a user can act on."""

from __future__ import annotations

from pathlib import Path

import onnx
import onnx_ir as ir
from google.protobuf.message import DecodeError

from epsinas_onnx.errors import UserError

ModelLike = "str | os.PathLike | onnx.ModelProto | ir.Model"


def load_model(model, check: bool = True) -> ir.Model:
    """An ir.Model from a path, a ModelProto or an ir.Model (copied, never changed).
    check=False skips onnx.checker for a ModelProto the caller built itself."""
    if isinstance(model, ir.Model):
        return ir.from_proto(ir.to_proto(model))
    if isinstance(model, onnx.ModelProto):
        if check:
            _check(model, "the model")
        return _to_ir(model, "the model")
    path = Path(model)
    if not path.exists():
        raise UserError(f"model file not found: {path} (check the path)")
    if path.is_dir():
        raise UserError(f"{path} is a directory, not an ONNX model file")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or _first_line(exc)}") from None
    except (DecodeError, RuntimeWarning, ValueError) as exc:
        raise UserError(f"{path} is not a readable ONNX model ({_first_line(exc)}); is it truncated or another format?") from None
    if not proto.graph.node and not proto.graph.output:
        raise UserError(f"{path} is not an ONNX model (no graph found); is it truncated or another format?")
    _load_external_data(proto, path)
    _check(proto, str(path))
    return _to_ir(proto, str(path))


def _to_ir(proto: onnx.ModelProto, what: str) -> ir.Model:
    """The in-memory graph; a proto the checker passes can still hold what
    onnx-ir refuses (a name that is not UTF-8, a malformed dimension)."""
    try:
        return ir.from_proto(proto)
    except Exception as exc:  # onnx-ir raises SerdeError wrapping any of several types
        raise UserError(f"{what} cannot be read as an ONNX graph ({_first_line(exc)}); is the file corrupted?") from None


def _load_external_data(proto: onnx.ModelProto, path: Path) -> None:
    from onnx.external_data_helper import load_external_data_for_model, uses_external_data

    external = [t for t in _all_tensors(proto) if uses_external_data(t)]
    if not external:
        return
    for tensor in external:
        location = next((e.value for e in tensor.external_data if e.key == "location"), None)
        if location is None or not (path.parent / location).exists():
            raise UserError(
                f"{path}: weight {tensor.name!r} is stored in external file {location!r}, "
                f"which is missing next to the model; copy it into {path.parent}"
            )
    try:
        load_external_data_for_model(proto, str(path.parent))
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: cannot read external weight data ({_first_line(exc)})") from None


def _all_tensors(proto: onnx.ModelProto):
    from onnx.external_data_helper import _get_all_tensors

    return _get_all_tensors(proto)


def _check(proto: onnx.ModelProto, what: str) -> None:
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        raise UserError(f"{what} fails the ONNX checker: {_first_line(exc)}") from None
    except ValueError as exc:  # models over 2 GB are checked from disk only
        if "2GB" not in str(exc):
            raise UserError(f"{what} fails the ONNX checker: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
