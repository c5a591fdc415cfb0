"""Image data as users have it, read item by item: only the items of the batch
are ever held in memory, whatever the size of the file.

A source says how many items it holds and their shape and type from the
file's headers alone; `take(indices)` then reads those items (in that order).

- .npy: memory-mapped (np.load mmap_mode="r"); pickled object arrays refused.
- .npz: its `images` member, else its only one, streamed through once (the
  zip's CRC is checked at the end); its declared size is checked against its
  npy header before anything is read.
- CIFAR-10 / CIFAR-100 binary version: `test_batch.bin` (records of 1 label
  byte + 3,072 pixel bytes), `test.bin` (2 label bytes + 3,072), or their
  folder (`cifar-10-batches-bin`, `cifar-100-binary`: the test set).
- a folder of PNG / JPEG images, class sub-folders allowed, in the order of
  their sorted relative paths (Pillow: the `images` extra).

No pickle is ever read: the CIFAR python version is refused with a pointer
to the binary version.
"""

from __future__ import annotations

import dataclasses
import math
import zipfile
import zlib
from pathlib import Path
from typing import Callable

import numpy as np

from epsinas_onnx.core.errors import UserError, first_line

CIFAR_PIXELS = 3 * 32 * 32
CIFAR_LABEL_BYTES = {"CIFAR-10": 1, "CIFAR-100": 2}
CIFAR_FILES = {"test_batch.bin": "CIFAR-10", "test.bin": "CIFAR-100", "train.bin": "CIFAR-100"}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
PICKLE_SUFFIXES = (".pkl", ".pickle", ".pt", ".pth")
STREAM_CHUNK_BYTES = 16 * 2**20  # an .npz member is read this much at a time
NO_PICKLE = "pickles are never loaded, as loading one runs code"


@dataclasses.dataclass
class ImageSource:
    """Items of a data file, read only when taken."""

    count: int
    item_shape: tuple[int, ...]
    dtype: np.dtype
    description: str
    take: Callable[[np.ndarray], np.ndarray]  # indices -> the items, in that order
    working_bytes: int = 0  # memory that taking holds beyond the items and one read chunk

    @property
    def shape(self) -> list[int]:
        return [self.count, *self.item_shape]


def open_source(data) -> ImageSource:
    """The image source behind `data`: an array, or the path of a file or folder."""
    if isinstance(data, np.ndarray):
        def take(indices: np.ndarray) -> np.ndarray:
            if np.array_equal(indices, np.arange(len(indices))):
                return data[:len(indices)]  # the first items: a view (a 224x224 batch of 256 is 154 MB)
            return data[indices]

        return ImageSource(data.shape[0] if data.ndim else 0, tuple(data.shape[1:]), data.dtype, "array", take)
    path = Path(data)
    if not path.exists():
        raise UserError(f"data file not found: {path} (check the path)")
    if path.is_dir():
        return _open_folder(path)
    _refuse_pickle(path)
    if path.suffix == ".npy":
        return _open_npy(path)
    if path.suffix == ".npz":
        return _open_npz(path)
    if path.suffix == ".bin":
        return _open_cifar_binary(path)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        raise UserError(f"{path} is one image; pass the folder that holds the images")
    raise UserError(
        f"{path}: image data must be an .npz or .npy file, a CIFAR binary file (.bin) or a folder of images; "
        "a text file is only for token models"
    )


def _refuse_pickle(path: Path) -> None:
    if path.suffix in PICKLE_SUFFIXES:
        raise UserError(f"{path} is a pickle ({NO_PICKLE}): save the images with numpy.save or numpy.savez")
    if path.name in ("test_batch", "data_batch_1", "test", "train", "batches.meta", "meta") or path.parent.name in (
        "cifar-10-batches-py", "cifar-100-python"
    ):
        with open(path, "rb") as handle:
            if handle.read(1) == b"\x80":  # the pickle protocol opcode
                _refuse_cifar_python(path)


def _refuse_cifar_python(path: Path):
    raise UserError(
        f"{path} is the CIFAR python version, which is pickles ({NO_PICKLE}): use the binary version "
        "(cifar-10-binary.tar.gz: cifar-10-batches-bin/test_batch.bin; cifar-100-binary.tar.gz: cifar-100-binary/test.bin)"
    )


def _check_header(path: Path, shape: tuple, dtype: np.dtype) -> None:
    if dtype.hasobject:
        raise UserError(f"{path} holds Python objects, which numpy stores as pickles ({NO_PICKLE}): save numeric arrays")
    if len(shape) == 0:
        raise UserError(f"{path} holds a single number, not a batch of images")
    if 0 in shape:
        raise UserError(f"{path} holds an array of shape {list(shape)}, which is empty: it has no pixels to feed")


# ---------------------------------------------------------------- .npy


def _open_npy(path: Path) -> ImageSource:
    try:
        with open(path, "rb") as handle:
            shape, _, dtype = _read_npy_header(handle)
        _check_header(path, shape, dtype)
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except UserError:
        raise
    except (ValueError, OSError, EOFError) as exc:
        raise UserError(f"{path} is not a readable .npy file ({first_line(exc, 200)})") from None
    return ImageSource(shape[0], tuple(shape[1:]), dtype, path.name, lambda indices: np.asarray(array[indices]))


def _read_npy_header(handle) -> tuple[tuple, bool, np.dtype]:
    version = np.lib.format.read_magic(handle)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(handle)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(handle)
    raise ValueError(f"npy format version {version[0]}.{version[1]} is not supported; save it with numpy.save")


# ---------------------------------------------------------------- .npz


def _open_npz(path: Path) -> ImageSource:
    try:
        archive = zipfile.ZipFile(path)
    except NPZ_ERRORS as exc:
        raise _npz_error(path, exc) from None
    with archive:
        names = {(n[:-4] if n.endswith(".npy") else n): n for n in archive.namelist() if not n.endswith("/")}
        if "images" in names:
            name = "images"
        elif len(names) == 1:
            name = next(iter(names))
        elif not names:
            raise UserError(f"{path} holds no arrays")
        else:
            raise UserError(f"{path} holds arrays {', '.join(names)}: name one 'images' or keep only one")
        info = archive.getinfo(names[name])
        shape, fortran, dtype = _npz_header(path, archive, info)
    source = f"{path.name}[{name}]"

    def take(indices: np.ndarray) -> np.ndarray:
        try:
            with zipfile.ZipFile(path) as reopened, reopened.open(info) as member:
                _read_npy_header(member)
                return _stream_items(member, shape, fortran, dtype, indices)
        except NPZ_ERRORS as exc:
            raise _npz_error(path, exc) from None

    whole = math.prod(shape) * dtype.itemsize if fortran and len(shape) > 1 else 0
    return ImageSource(shape[0], tuple(shape[1:]), dtype, source, take, whole)


# what zipfile and zlib raise on a damaged archive (RuntimeError: encrypted)
NPZ_ERRORS = (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, NotImplementedError, RuntimeError)


def _npz_error(path: Path, exc: BaseException) -> UserError:
    if isinstance(exc, zlib.error) or "CRC" in str(exc) or isinstance(exc, EOFError):
        return UserError(f"{path} is corrupted ({first_line(exc, 200)}): copy or write the file again")
    return UserError(f"{path} is not a readable .npz file ({first_line(exc, 200)})")


def _npz_header(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo):
    try:
        with archive.open(info) as member:
            shape, fortran, dtype = _read_npy_header(member)
            header_bytes = member.tell()
    except NPZ_ERRORS as exc:
        raise _npz_error(path, exc) from None
    _check_header(path, shape, dtype)
    declared = header_bytes + math.prod(shape) * dtype.itemsize
    if info.file_size != declared:
        raise UserError(
            f"{path} is corrupted: its array {list(shape)} {dtype} needs {declared} bytes, but the zip declares "
            f"{info.file_size}: write the file again"
        )
    return shape, fortran, dtype


def _stream_items(member, shape, fortran: bool, dtype: np.dtype, indices: np.ndarray) -> np.ndarray:
    """The items `indices` of the array that follows the npy header in
    `member`, reading it through once in chunks (to its end, so that the zip
    checks its CRC), keeping only those items."""
    if fortran and len(shape) > 1:
        # items are not contiguous in a Fortran-order array: read it whole
        # (the caller checked that the whole file fits in memory)
        whole = np.frombuffer(member.read(), dtype=dtype).reshape(shape, order="F")
        return np.ascontiguousarray(whole[indices])
    item_bytes = math.prod(shape[1:]) * dtype.itemsize
    wanted = np.unique(indices)
    found = np.empty((wanted.size, *shape[1:]), dtype=dtype)
    per_chunk = max(1, STREAM_CHUNK_BYTES // item_bytes)
    position = 0  # the item the next read starts at
    cursor = 0  # how many of `wanted` are filled
    while position < shape[0]:
        count = min(per_chunk, shape[0] - position)
        chunk = member.read(count * item_bytes)
        if len(chunk) != count * item_bytes:
            raise EOFError("the array ends early")
        stop = np.searchsorted(wanted, position + count)
        if stop > cursor:
            rows = np.frombuffer(chunk, dtype=dtype).reshape(count, *shape[1:])
            found[cursor:stop] = rows[wanted[cursor:stop] - position]
            cursor = stop
        position += count
    member.read()  # to the end: the CRC is checked there
    return found[np.searchsorted(wanted, indices)]


# ---------------------------------------------------------------- CIFAR binary


def _open_cifar_binary(path: Path, kind: str | None = None) -> ImageSource:
    size = path.stat().st_size
    kind = kind or CIFAR_FILES.get(path.name) or _cifar_kind_from_size(path, size)
    record = CIFAR_LABEL_BYTES[kind] + CIFAR_PIXELS
    if size == 0 or size % record:
        raise UserError(
            f"{path} is not a {kind} binary file: its {size} bytes are not whole records of {record} bytes "
            f"({CIFAR_LABEL_BYTES[kind]} label byte(s) + 3,072 pixels)"
        )
    records = np.memmap(path, dtype=np.uint8, mode="r", shape=(size // record, record))
    label_bytes = CIFAR_LABEL_BYTES[kind]

    def take(indices: np.ndarray) -> np.ndarray:
        # each record: the label, then 1,024 red, 1,024 green, 1,024 blue bytes, row by row
        pixels = np.asarray(records[indices, label_bytes:]).reshape(-1, 3, 32, 32)
        return np.ascontiguousarray(pixels.transpose(0, 2, 3, 1))  # NHWC, as an .npz of images holds them

    return ImageSource(size // record, (32, 32, 3), np.dtype(np.uint8), f"{path.name} ({kind} binary)", take)


def _cifar_kind_from_size(path: Path, size: int) -> str:
    fits = [kind for kind, labels in CIFAR_LABEL_BYTES.items() if size and size % (labels + CIFAR_PIXELS) == 0]
    if len(fits) != 1:
        raise UserError(
            f"{path}: a .bin file is read as CIFAR binary, but its size fits {'both CIFAR-10 and CIFAR-100' if fits else 'neither CIFAR-10 nor CIFAR-100'} "
            "records: name it test_batch.bin (CIFAR-10) or test.bin (CIFAR-100)"
        )
    return fits[0]


# ---------------------------------------------------------------- folders


def _open_folder(path: Path) -> ImageSource:
    for name, kind in (("test_batch.bin", "CIFAR-10"), ("test.bin", "CIFAR-100")):
        if (path / name).is_file():
            return _open_cifar_binary(path / name, kind)
    if (path / "batches.meta").is_file() or ((path / "meta").is_file() and (path / "test").is_file()):
        _refuse_cifar_python(path)
    files = sorted(
        (p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
         and not any(part.startswith(".") for part in p.relative_to(path).parts)),
        key=lambda p: p.relative_to(path).as_posix(),
    )
    if not files:
        raise UserError(f"{path} holds no PNG or JPEG images (nor CIFAR binary files)")
    image_module = _pillow()
    first = _read_image(image_module, files[0])
    shape = first.shape

    def take(indices: np.ndarray) -> np.ndarray:
        images = np.empty((len(indices), *shape), dtype=np.uint8)
        for slot, index in enumerate(indices):
            image = _read_image(image_module, files[index])
            if image.shape != shape:
                raise UserError(
                    f"{files[index]} is {image.shape[1]}x{image.shape[0]} but {files[0].name} is "
                    f"{shape[1]}x{shape[0]}: the images of a folder must share one size (resize them first)"
                )
            images[slot] = image
        return images

    return ImageSource(len(files), shape, np.dtype(np.uint8), f"{path.name}/ ({len(files)} images)", take)


def _pillow():
    try:
        from PIL import Image
    except ImportError:
        raise UserError('reading a folder of images needs Pillow: pip install "epsinas-onnx[images]"') from None
    return Image


def _read_image(image_module, path: Path) -> np.ndarray:
    """One image as HWC uint8 RGB (grey and palette images converted, alpha dropped)."""
    try:
        with image_module.open(path) as image:
            pixels = np.asarray(image.convert("RGB"))
    except (OSError, ValueError, SyntaxError, EOFError, image_module.DecompressionBombError) as exc:
        raise UserError(f"{path} is not a readable image ({first_line(exc, 200)})") from None
    if 0 in pixels.shape:
        raise UserError(f"{path} is an empty image ({pixels.shape[1]}x{pixels.shape[0]})")
    return pixels

