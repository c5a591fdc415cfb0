"""Image data as users have it, read item by item: only the items of the batch
are ever held in memory, whatever the size of the file.

A source says how many items it holds and their shape and type from the
file's headers alone; `take(indices)` then reads those items (in that order).

Every file is opened through textfile.open_regular_file: a FIFO, a device
(a link to /dev/zero) or a name the file system cannot hold is one line,
never a read.

- .npy: the items read from the file (C order: each with one read, so
  memory holds the items taken and nothing else; a memory map would keep
  every page read in the process's resident memory); Fortran order
  memory-mapped; pickled object arrays refused.
- .npz: its `images` member, else its only one, streamed through once (the
  zip's CRC is checked at the end); its declared size is checked against its
  npy header before anything is read.
- CIFAR-10 / CIFAR-100 binary version: `test_batch.bin` (records of 1 label
  byte + 3,072 pixel bytes), `test.bin` (2 label bytes + 3,072), or their
  folder (`cifar-10-batches-bin`, `cifar-100-binary`: the test set).
- a folder of PNG / JPEG images (its regular files), class sub-folders
  allowed, in the order of their sorted relative paths (Pillow: the
  `images` extra); each image's size is read from its header, and checked,
  before any image is decoded.

No pickle is ever read: the CIFAR python version is refused with a pointer
to the binary version.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import stat
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Callable

import numpy as np

from epsinas_onnx.core.errors import UserError, first_line
from epsinas_onnx.core.textfile import file_status, open_regular_file

CIFAR_PIXELS = 3 * 32 * 32
CIFAR_LABEL_BYTES = {"CIFAR-10": 1, "CIFAR-100": 2}
CIFAR_FILES = {"test_batch.bin": "CIFAR-10", "test.bin": "CIFAR-100", "train.bin": "CIFAR-100"}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
PICKLE_SUFFIXES = (".pkl", ".pickle", ".pt", ".pth")
STREAM_CHUNK_BYTES = 16 * 2**20  # an .npz member is read this much at a time
NO_PICKLE = "pickles are never loaded, as loading one runs code"
# the most pixels one image may have: Pillow's own Image.MAX_IMAGE_PIXELS, past which it
# warns of a decompression bomb (and refuses at twice it); checked from the header first
MAX_IMAGE_PIXELS = 89_478_485


@dataclasses.dataclass
class ImageSource:
    """Items of a data file, read only when taken."""

    count: int
    item_shape: tuple[int, ...]
    dtype: np.dtype
    description: str
    take: Callable[[np.ndarray], np.ndarray]  # indices -> the items, in that order
    working_bytes: int = 0  # memory that taking holds beyond the items and one read chunk
    reads_whole_file: bool = False  # each take() reads the whole file (.npz): take many items at once

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
    status = file_status(path, "data file")
    if status is None:
        raise UserError(f"data file not found: {path} (check the path)")
    if stat.S_ISDIR(status.st_mode):
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
        with _open(path) as handle:
            if handle.read(1) == b"\x80":  # the pickle protocol opcode
                _refuse_cifar_python(path)


def _refuse_cifar_python(path: Path):
    raise UserError(
        f"{path} is the CIFAR python version, which is pickles ({NO_PICKLE}): use the binary version "
        "(cifar-10-binary.tar.gz: cifar-10-batches-bin/test_batch.bin; cifar-100-binary.tar.gz: cifar-100-binary/test.bin)"
    )


def _open(path: Path):
    """The data file open for reading, if it is a regular file (textfile.open_regular_file)."""
    return open_regular_file(path, "data file", kind="; give an .npz, .npy, .bin or text file, or a folder of images")


def _check_header(path: Path, shape: tuple, dtype: np.dtype) -> None:
    if dtype.hasobject:
        raise UserError(f"{path} holds Python objects, which numpy stores as pickles ({NO_PICKLE}): save numeric arrays")
    if len(shape) == 0:
        raise UserError(f"{path} holds a single number, not a batch of images")
    if 0 in shape:
        raise UserError(f"{path} holds an array of shape {list(shape)}, which is empty: it has no pixels to feed")


# ---------------------------------------------------------------- .npy


def _open_npy(path: Path) -> ImageSource:
    """The array of the checked file itself (np.load would open the path again)."""
    try:
        with _open(path) as handle:
            shape, fortran, dtype = _read_npy_header(handle)
            _check_header(path, shape, dtype)
            offset = handle.tell()
            needed = offset + math.prod(shape) * dtype.itemsize
            size = _file_size(handle)
            if size < needed:
                raise ValueError(f"the array needs {needed} bytes, the file has {size}: is it cut short?")
            if fortran and len(shape) > 1:  # an item is not contiguous: read through a map
                array = np.memmap(handle, dtype=dtype, mode="r", offset=offset, shape=shape, order="F")
                take = lambda indices: np.asarray(array[indices])  # noqa: E731
            else:
                take = lambda indices: _read_npy_items(path, offset, shape, dtype, indices)  # noqa: E731
    except UserError:
        raise
    except (ValueError, OSError, EOFError) as exc:
        raise UserError(f"{path} is not a readable .npy file ({first_line(exc, 200)})") from None
    return ImageSource(shape[0], tuple(shape[1:]), dtype, path.name, take)


def _read_npy_items(path: Path, offset: int, shape: tuple, dtype: np.dtype, indices: np.ndarray) -> np.ndarray:
    """Items `indices` of a C-order .npy array whose data starts at `offset`,
    read into the result (a run of consecutive items with one read)."""
    item_bytes = math.prod(shape[1:]) * dtype.itemsize
    items = np.empty((len(indices), *shape[1:]), dtype)
    into = memoryview(items.reshape(-1).view(np.uint8))
    indices = np.asarray(indices, dtype=np.int64)
    breaks = np.flatnonzero(np.diff(indices) != 1) + 1  # where a run of consecutive items ends
    with _open(path) as handle:
        for run in np.split(np.arange(len(indices)), breaks):
            if not run.size:
                continue
            handle.seek(offset + int(indices[run[0]]) * item_bytes)
            start, stop = int(run[0]) * item_bytes, (int(run[-1]) + 1) * item_bytes
            while start < stop:
                count = handle.readinto(into[start:stop])
                if not count:
                    raise UserError(f"{path} ends before its array does: is it cut short? (write it again)")
                start += count
    return items


def _file_size(handle) -> int:
    return os.fstat(handle.fileno()).st_size


def _read_npy_header(handle) -> tuple[tuple, bool, np.dtype]:
    version = np.lib.format.read_magic(handle)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(handle)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(handle)
    raise ValueError(f"npy format version {version[0]}.{version[1]} is not supported; save it with numpy.save")


# ---------------------------------------------------------------- .npz


def _open_npz(path: Path) -> ImageSource:
    with _open(path) as handle:
        return _open_npz_file(path, handle)


def _open_npz_file(path: Path, handle) -> ImageSource:
    try:
        archive = zipfile.ZipFile(handle)
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
            with _open(path) as handle, zipfile.ZipFile(handle) as reopened, reopened.open(info) as member:
                _read_npy_header(member)
                return _stream_items(member, shape, fortran, dtype, indices)
        except NPZ_ERRORS as exc:
            raise _npz_error(path, exc) from None

    whole = math.prod(shape) * dtype.itemsize if fortran and len(shape) > 1 else 0
    return ImageSource(shape[0], tuple(shape[1:]), dtype, source, take, whole, reads_whole_file=True)


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
    with _open(path) as handle:
        size = _file_size(handle)
        kind = kind or CIFAR_FILES.get(path.name) or _cifar_kind_from_size(path, size)
        record = CIFAR_LABEL_BYTES[kind] + CIFAR_PIXELS
        if size == 0 or size % record:
            raise UserError(
                f"{path} is not a {kind} binary file: its {size} bytes are not whole records of {record} bytes "
                f"({CIFAR_LABEL_BYTES[kind]} label byte(s) + 3,072 pixels)"
            )
        records = np.memmap(handle, dtype=np.uint8, mode="r", shape=(size // record, record))
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
        if (path / name).exists():  # a FIFO or a device of that name is refused when opened
            return _open_cifar_binary(path / name, kind)
    if (path / "batches.meta").is_file() or ((path / "meta").is_file() and (path / "test").is_file()):
        _refuse_cifar_python(path)
    files = sorted(
        (p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
         and not any(part.startswith(".") for part in p.relative_to(path).parts)),
        key=lambda p: p.relative_to(path).as_posix(),
    )  # is_file: regular files (through links); a FIFO or a link to a device is no image
    if not files:
        raise UserError(f"{path} holds no PNG or JPEG images (nor CIFAR binary files)")
    image_module = _pillow()
    width, height = _image_size(image_module, files[0])  # the batch's shape, before anything is decoded
    shape = (height, width, 3)

    def take(indices: np.ndarray) -> np.ndarray:
        images = np.empty((len(indices), *shape), dtype=np.uint8)
        for slot, index in enumerate(indices):
            other_width, other_height = _image_size(image_module, files[index])
            if (other_width, other_height) != (width, height):
                raise UserError(
                    f"{files[index]} is {other_width}x{other_height} but {files[0].name} is "
                    f"{width}x{height}: the images of a folder must share one size (resize them first)"
                )
            images[slot] = _read_image(image_module, files[index])
        return images

    return ImageSource(len(files), shape, np.dtype(np.uint8), f"{path.name}/ ({len(files)} images)", take)


def _pillow():
    try:
        from PIL import Image
    except ImportError:
        raise UserError('reading a folder of images needs Pillow: pip install "epsinas-onnx[images]"') from None
    return Image


IMAGE_ERRORS = (OSError, ValueError, SyntaxError, EOFError)


def _image_size(image_module, path: Path) -> tuple[int, int]:
    """(width, height) from the image's header alone, refused past MAX_IMAGE_PIXELS."""
    try:
        with _open(path) as handle, warnings.catch_warnings():
            warnings.simplefilter("ignore", image_module.DecompressionBombWarning)  # the size is checked below
            with image_module.open(handle) as image:
                width, height = image.size
    except UserError:
        raise
    except (*IMAGE_ERRORS, image_module.DecompressionBombError) as exc:
        raise UserError(f"{path} is not a readable image ({first_line(exc, 200)})") from None
    if width * height > MAX_IMAGE_PIXELS:
        raise UserError(f"{path} is {width}x{height}, over the {MAX_IMAGE_PIXELS:,} pixels one image may have "
                        "(Pillow's decompression-bomb limit): resize it to the size the model takes")
    if width == 0 or height == 0:
        raise UserError(f"{path} is an empty image ({width}x{height})")
    return width, height


@contextlib.contextmanager
def _no_bomb_warning(image_module):
    """Pillow's DecompressionBombWarning as an error, never a warning printed
    (MAX_IMAGE_PIXELS refuses such images first, unless Pillow's limit was lowered)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", image_module.DecompressionBombWarning)
        yield


def _read_image(image_module, path: Path) -> np.ndarray:
    """One image as HWC uint8 RGB (grey and palette images converted, alpha dropped)."""
    try:
        with _open(path) as handle, _no_bomb_warning(image_module), image_module.open(handle) as image:
            pixels = np.asarray(image.convert("RGB"))
    except UserError:
        raise
    except (*IMAGE_ERRORS, image_module.DecompressionBombError, image_module.DecompressionBombWarning) as exc:
        raise UserError(f"{path} is not a readable image ({first_line(exc, 200)})") from None
    if 0 in pixels.shape:
        raise UserError(f"{path} is an empty image ({pixels.shape[1]}x{pixels.shape[0]})")
    return pixels
