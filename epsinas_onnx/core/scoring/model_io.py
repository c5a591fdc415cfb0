"""Loading models with errors a user can act on.

A model's weights stored as external data are checked when the model is
loaded and read only when something asks for their values: the scoring
rewrite replaces every conv / linear weight by the shared constant, so
their bytes (98 MiB for ResNet-50) are never read at all."""

from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path

import onnx
import onnx_ir as ir
from google.protobuf.message import DecodeError

from epsinas_onnx.core.errors import UserError, first_line
from epsinas_onnx.core.textfile import open_regular_file, path_error, read_regular_file

MAX_MODEL_BYTES = 2**31 - 1  # protobuf's limit on one message

ModelLike = "str | os.PathLike | onnx.ModelProto | ir.Model"


def load_model(model, check: bool = True) -> ir.Model:
    """An ir.Model from a path, a ModelProto or an ir.Model (copied, never changed).
    check=False skips onnx.checker for a ModelProto the caller built itself."""
    if isinstance(model, ir.Model):
        return ir.from_proto(ir.to_proto(model))
    if isinstance(model, onnx.ModelProto):
        if check:
            _check(model, "the model")
        _check_outputs(model, "the model")
        return _to_ir(model, "the model")
    path = Path(model)
    proto = _parse(_read_model_file(path), path)
    if not proto.graph.node and not proto.graph.output:
        raise UserError(f"{path} is not an ONNX model (no graph found); is it truncated or another format?")
    deferred = _defer_external_initializers(proto, path)
    _load_external_data(proto, path)
    _check(_checkable(proto, deferred), str(path))
    _check_outputs(proto, str(path))
    ir_model = _to_ir(proto, str(path))
    for record in deferred:
        value = ir_model.graph.initializers[record.name]
        value.const_value = ir.LazyTensor(functools.partial(record.read, path), value.const_value.dtype,
                                          value.const_value.shape, name=record.name)
    return ir_model


def _check_outputs(proto: onnx.ModelProto, what: str) -> None:
    """What the checker lets through but a score cannot use: no outputs, or an
    output that is a stored constant rather than something computed."""
    if not proto.graph.output:
        raise UserError(f"{what} has no graph outputs: there is nothing to score")
    constants = {t.name for t in proto.graph.initializer}
    for value in proto.graph.output:
        if value.name in constants:
            raise UserError(f"{what}: output {value.name!r} is an initializer (a stored constant), not computed "
                            "from the input; export the model with only computed outputs")


def _read_model_file(path: Path) -> bytes:
    """The bytes of a model file: a regular file no larger than protobuf can
    parse (2 GiB: larger models keep their weights in external data files)."""
    return read_regular_file(
        path, "model file", MAX_MODEL_BYTES,
        "a protobuf model file can hold; save the weights as external data (onnx.save(..., save_as_external_data=True))",
        kind="; give the path of an .onnx file",
    )


def _parse(payload: bytes, path: Path) -> onnx.ModelProto:
    try:
        return onnx.load_model_from_string(payload)
    except (DecodeError, RuntimeWarning, ValueError) as exc:
        raise UserError(f"{path} is not a readable ONNX model ({first_line(exc)}); is it truncated or another format?") from None


def _to_ir(proto: onnx.ModelProto, what: str) -> ir.Model:
    """The in-memory graph; a proto the checker passes can still hold what
    onnx-ir refuses (a name that is not UTF-8, a malformed dimension)."""
    try:
        return ir.from_proto(proto)
    except Exception as exc:  # onnx-ir raises SerdeError wrapping any of several types
        raise UserError(f"{what} cannot be read as an ONNX graph ({first_line(exc)}); is the file corrupted?") from None


@dataclasses.dataclass(frozen=True)
class ExternalData:
    """Where a tensor's bytes lie outside the model file, and what it holds:
    plain values, so that a tensor read later holds nothing of the parsed model."""

    name: str
    data_type: int
    dims: tuple[int, ...]
    fields: tuple[tuple[str, str], ...]  # its external_data entries: location, offset, length

    @classmethod
    def of(cls, tensor: onnx.TensorProto) -> "ExternalData":
        return cls(tensor.name, tensor.data_type, tuple(tensor.dims), tuple((e.key, e.value) for e in tensor.external_data))

    def proto(self, raw_data: bytes = b"") -> onnx.TensorProto:
        tensor = onnx.TensorProto(name=self.name, data_type=self.data_type, dims=self.dims)
        if raw_data:
            tensor.raw_data = raw_data
        return tensor

    def contents(self, path: Path, read: bool = True) -> bytes | None:
        """Its bytes, every check of _external_bytes made again on this read
        (read=False: the checks alone, nothing read)."""
        return _external_bytes(self.proto(), dict(self.fields), path.parent.resolve(), path, read)

    def read(self, path: Path) -> ir.TensorProtocol:
        """The tensor, read from its file now (an ir.LazyTensor's function)."""
        return ir.from_proto(self.proto(self.contents(path)))


def _defer_external_initializers(proto: onnx.ModelProto, path: Path) -> list[ExternalData]:
    """The main graph's initializers stored as external data, checked where
    they lie but not read, and taken out of the proto (left without data): a
    later ir.LazyTensor reads each one, checked again, if its values are ever
    asked for. Other external tensors (a Constant's value, a subgraph's
    initializer) are read with the model (_load_external_data)."""
    from onnx.external_data_helper import uses_external_data

    deferred = []
    for tensor in proto.graph.initializer:
        if uses_external_data(tensor) and _tensor_bytes(tensor) is not None:
            record = ExternalData.of(tensor)
            record.contents(path, read=False)
            del tensor.external_data[:]
            tensor.data_location = onnx.TensorProto.DEFAULT
            deferred.append(record)
    return deferred


def _checkable(proto: onnx.ModelProto, deferred: list[ExternalData]) -> onnx.ModelProto:
    """The model as onnx.checker can take it: each deferred initializer (no
    data in the proto) stands as a graph input of its type and shape; its
    bytes, location and size were checked by _defer_external_initializers."""
    if not deferred:
        return proto
    names = {record.name for record in deferred}
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    for i in reversed(range(len(copy.graph.initializer))):
        if copy.graph.initializer[i].name in names:
            del copy.graph.initializer[i]
    inputs = {value.name for value in copy.graph.input}
    copy.graph.input.extend(onnx.helper.make_tensor_value_info(r.name, r.data_type, r.dims)
                            for r in deferred if r.name not in inputs)
    return copy


def _load_external_data(proto: onnx.ModelProto, path: Path) -> None:
    """Read every tensor stored in an external file into the model, checking
    each file ourselves rather than trusting the onnx release installed (older
    ones follow symlinks out of the folder): the file must lie in the model's
    folder (a relative path that resolves inside it), be a regular file with
    one link (a symlink, or a hard link whose other names may be anywhere, is
    refused: copy the file instead), and hold the tensor's bytes at its offset."""
    from onnx.external_data_helper import uses_external_data

    folder = path.parent.resolve()
    for tensor in _all_tensors(proto):
        if uses_external_data(tensor):
            fields = {e.key: e.value for e in tensor.external_data}
            tensor.raw_data = _external_bytes(tensor, fields, folder, path)
            del tensor.external_data[:]
            tensor.data_location = onnx.TensorProto.DEFAULT


def _external_bytes(tensor: onnx.TensorProto, fields: dict, folder: Path, path: Path, read: bool = True) -> bytes | None:
    import stat

    where = f"{path}: weight {tensor.name!r}"
    location = fields.get("location")
    if not location:
        raise UserError(f"{where} is marked as external data but names no file; re-save the model")
    if "\0" in location:
        raise UserError(f"{where} is stored in {location!r}, which is not a file name (a NUL byte); is the model corrupted?")
    if os.path.isabs(location) or Path(location).drive:
        raise UserError(f"{where} is stored at the absolute path {location!r}; external data must be a file "
                        f"in the model's folder ({folder}), named relative to it")
    target = folder / location
    if not target.resolve().is_relative_to(folder):
        raise UserError(f"{where} is stored in {location!r}, outside the model's folder; "
                        f"external data must be a file in {folder}")
    try:
        info = os.lstat(target)
    except FileNotFoundError:
        raise UserError(f"{where} is stored in external file {location!r}, which is missing next to the model; "
                        f"copy it into {folder}") from None
    except OSError as exc:
        raise path_error(exc, location, f"{where}: its external file") from None
    if stat.S_ISLNK(info.st_mode):
        raise UserError(f"{where} is stored in {location!r}, a symbolic link; copy the file it points to into {folder}")
    if not stat.S_ISREG(info.st_mode):
        raise UserError(f"{where} is stored in {location!r}, which is not a regular file "
                        "(a directory, device or FIFO)")
    offset, length = _offset_and_length(fields, where)
    expected = _tensor_bytes(tensor)
    if length is None:
        length = expected
    elif expected is not None and length != expected:
        raise UserError(f"{where} needs {expected} bytes but its external data says {length}; is the model corrupted?")
    # opened without following a link and checked again on the descriptor: a
    # symlink or FIFO swapped in since the checks above is refused there
    with open_regular_file(target, f"{where}: its external file", follow_symlinks=False) as file:
        info = os.fstat(file.fileno())
        if info.st_nlink > 1:
            raise UserError(f"{where} is stored in {location!r}, which has {info.st_nlink} hard links (the others "
                            f"may be outside the model's folder); replace the link by a copy (cp, not ln)")
        if length is None:
            length = info.st_size - offset
        if offset + length > info.st_size:
            raise UserError(f"{where} needs bytes {offset} to {offset + length} of {location!r}, which has only "
                            f"{info.st_size}; is the file truncated?")
        if not read:
            return None
        file.seek(offset)
        data = file.read(length)
    if len(data) != length:  # the file shrank since it was checked
        raise UserError(f"{where}: {location!r} ended after {len(data)} of the tensor's {length} bytes; "
                        "is the file being rewritten?")
    return data


def _offset_and_length(fields: dict, where: str) -> tuple[int, int | None]:
    values = []
    for key in ("offset", "length"):
        text = fields.get(key)
        try:
            value = None if text in (None, "") else int(text)
        except ValueError:
            value = -1
        if value is not None and value < 0:
            raise UserError(f"{where}: its external data {key} {text!r} is not a byte count; is the model corrupted?")
        values.append(value)
    return values[0] or 0, values[1]


def _tensor_bytes(tensor: onnx.TensorProto) -> int | None:
    """The raw size of a tensor of fixed-size elements (None for strings)."""
    import math

    try:
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except (KeyError, ValueError, TypeError):
        return None
    if tensor.data_type == onnx.TensorProto.STRING or any(d < 0 for d in tensor.dims):
        return None
    # 4-bit types pack two elements per byte
    packed = tensor.data_type in {getattr(onnx.TensorProto, n, -1) for n in ("INT4", "UINT4", "FLOAT4E2M1")}
    count = math.prod(tensor.dims)
    return (count + 1) // 2 if packed else count * itemsize


def _all_tensors(proto: onnx.ModelProto):
    from onnx.external_data_helper import _get_all_tensors

    return _get_all_tensors(proto)


def _check(proto: onnx.ModelProto, what: str) -> None:
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        raise UserError(f"{what} fails the ONNX checker: {first_line(exc)}") from None
    except ValueError as exc:  # models over 2 GB are checked from disk only
        if "2GB" not in str(exc):
            raise UserError(f"{what} fails the ONNX checker: {first_line(exc)}") from None
