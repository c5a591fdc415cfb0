"""The one batch the score is computed on: images, tokens or synthetic data,
shaped for the model's input."""

from __future__ import annotations

import array as py_array
import contextlib
import dataclasses
import io
import math
import os
import stat
from pathlib import Path

import numpy as np
import onnx_ir as ir

from epsinas_onnx.core.scoring.datasets import open_source
from epsinas_onnx.core.errors import UserError
from epsinas_onnx.core.textfile import file_status, open_regular_file
from epsinas_onnx.core.options import DEFAULT_SEQ_LEN, BatchOptions  # noqa: F401 (inputs.DEFAULT_SEQ_LEN as before)

# reference-semantics §5 (per channel, in 0..255 units)
NORMS = {
    "cifar10": ((125.3, 123.0, 113.9), (63.0, 62.1, 66.7)),
    "cifar100": ((129.3, 124.1, 112.4), (68.2, 65.4, 70.4)),
    "imagenet16": ((122.68, 116.66, 104.01), (63.22, 61.26, 65.09)),
}
SYNTHETIC = ("grey", "normal", "uniform", "uniform+")
# The batch of an image model given no data. Measured on NAS-Bench-201 (500
# architectures, docs/search-and-ablations.md §3.2): Spearman 0.854 with the
# grey batch, 0.877 with real CIFAR-10 images, 0.477 with normal noise
DEFAULT_SYNTHETIC = "grey"


@dataclasses.dataclass
class InputSpec:
    """A model input as the model declares it."""

    name: str
    dtype: np.dtype
    shape: list  # ints for fixed dims, strings or None for symbolic ones

    @property
    def is_tokens(self) -> bool:
        return np.issubdtype(self.dtype, np.integer)

    def describe(self) -> str:
        dims = ", ".join(str(d) if d is not None else "?" for d in self.shape)
        return f"{self.name!r} [{dims}] {self.dtype.name}"


@dataclasses.dataclass
class Batch:
    array: np.ndarray
    description: str


def model_input(model: ir.Model, name: str | None, exclude: set[str]) -> InputSpec:
    """The input the batch goes to: the only one, or the one named."""
    candidates = [v for v in model.graph.inputs if v.name not in exclude and not v.is_initializer()]
    if name is not None:
        found = [v for v in candidates if v.name == name]
        if not found:
            raise UserError(f"the model has no input {name!r}; its inputs are: {', '.join(v.name for v in candidates)}")
        value = found[0]
        others = [v.name for v in candidates if v is not value]
        if others:
            raise UserError(f"the model's other inputs ({', '.join(others)}) would need values too; only one fed input is supported")
    elif len(candidates) == 1:
        value = candidates[0]
    elif not candidates:
        raise UserError("the model has no input to feed a batch to")
    else:
        raise UserError(
            f"the model has {len(candidates)} inputs ({', '.join(v.name for v in candidates)}); "
            "name the one to feed with --input"
        )
    if value.dtype is None or value.shape is None:
        raise UserError(f"the model does not declare the type and shape of input {value.name!r}")
    shape = [d if isinstance(d, int) else (d.value if isinstance(d, ir.SymbolicDim) else None) for d in value.shape]
    return InputSpec(value.name, np.dtype(value.dtype.numpy()), shape)


def prepare_batch(spec: InputSpec, options: BatchOptions = BatchOptions(), vocab_size: int | None = None,
                  channel_sum: bool = False) -> Batch:
    """The batch for `spec` that `options` describe: from options.data (a path
    or an array), synthetic data, or the default. vocab_size: a token model's
    embedding rows (default token ids stay below it). channel_sum: the batch
    summed over axis 1 (sum_channels), for a model that takes that sum
    (rewriting/passes/channel_sum_input.py); images read from data are summed
    CHANNEL_SUM_CHUNK at a time, so the whole batch is never held."""
    data, batch_size, seq_len, synthetic = options.data, options.batch_size, options.seq_len, options.synthetic
    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, not {batch_size}")
    if seq_len < 1:
        raise UserError(f"--seq-len must be at least 1, not {seq_len}")
    if synthetic is not None and data is not None:
        raise UserError("give either --data or --synthetic, not both")
    if spec.is_tokens:
        if synthetic is not None:
            raise UserError(f"--synthetic makes images, but input {spec.describe()} takes integer token ids; pass a text file with --data")
        return _token_batch(spec, data, batch_size, seq_len, vocab_size, options.token_layout, options.seed)
    _check_fixed_batch(spec, 0, batch_size)
    if data is None:
        batch = _synthetic_batch(spec, synthetic or DEFAULT_SYNTHETIC, batch_size, options.seed, default=synthetic is None)
        return Batch(sum_channels(batch.array), batch.description) if channel_sum else batch
    return _image_batch(spec, data, batch_size, options.norm, options.shuffle_seed, channel_sum)


def _check_fixed_batch(spec: InputSpec, axis: int, batch_size: int) -> None:
    fixed = spec.shape[axis] if len(spec.shape) > axis else None
    if isinstance(fixed, int) and fixed != batch_size:
        raise UserError(
            f"input {spec.describe()} has a fixed batch of {fixed}, but the batch size is {batch_size}: "
            f"pass --batch-size {fixed}"
        )


# ---------------------------------------------------------------- images


def _image_batch(spec: InputSpec, data, batch_size: int, norm: str, shuffle_seed: int | None,
                 channel_sum: bool = False) -> Batch:
    """The batch first, then only its items read, converted and normalised:
    memory follows the batch, not the data file (datasets.py). channel_sum:
    summed over axis 1 as it is read (prepare_batch)."""
    source = open_source(data)
    shape = source.shape
    if len(shape) < 2:
        raise UserError(f"{source.description} holds an array of shape {shape}, not a batch of images")
    if 0 in shape[1:]:
        raise UserError(f"{source.description} holds images of shape {shape[1:]}, which are empty: there are no pixels to feed")
    if source.dtype == np.uint8:
        if len(shape) != 4:
            raise UserError(f"uint8 image data must be NHWC (4 dims), got shape {shape}")
        norm = "cifar10" if norm == "auto" else norm
        nchw = [shape[0], shape[3], shape[1], shape[2]]
    elif np.issubdtype(source.dtype, np.floating):
        norm = "none" if norm == "auto" else norm
        nchw = shape
    elif np.issubdtype(source.dtype, np.integer):
        raise UserError(f"{source.description} holds integers of type {source.dtype}, but input {spec.describe()} takes floats: pass images")
    else:
        raise UserError(f"{source.description} holds {source.dtype} values; pass uint8 NHWC images or float32 NCHW arrays")
    n = shape[0]
    if n < batch_size:
        raise UserError(f"{source.description} has {n} items, too few for a batch of {batch_size}: pass --batch-size {n} or a larger file")
    _check_image_memory(spec, source, [batch_size, *nchw[1:]], batch_size)
    if shuffle_seed is None:
        indices = np.arange(batch_size)
    else:
        indices = np.random.default_rng(shuffle_seed).permutation(n)[:batch_size]
    chosen = f"first {batch_size}" if shuffle_seed is None else f"{batch_size} shuffled with seed {shuffle_seed}"
    description = f"{source.description}, {chosen}, norm {norm}"
    if channel_sum:
        return Batch(_summed_images(spec, source, indices, norm), description)
    # the items are freed once converted (the call's argument is its only reference)
    return Batch(_fit_to_input(spec, _normalise(_as_float(source.take(indices)), norm)), description)


def _as_float(items: np.ndarray) -> np.ndarray:
    """Items as the source holds them -> float32 NCHW (uint8 NHWC: divided by 255)."""
    if items.dtype == np.uint8:
        images = items.transpose(0, 3, 1, 2).astype(np.float32)
        images /= 255.0  # in place: the same division without a second copy of the batch
        return images
    return items.astype(np.float32, copy=False)  # take() copied already: no second copy of a float32 batch


# A batch summed over its channels is read, converted, normalised, laid out
# and summed this many items at a time into the summed batch, made once: only
# a chunk of the full-width batch is ever in memory (ResNet-50's 224x224 batch
# of 256 is 147 MiB at full width, 49 summed)
CHANNEL_SUM_CHUNK = 16


def _summed_images(spec: InputSpec, source, indices: np.ndarray, norm: str) -> np.ndarray:
    """_image_batch's batch summed over axis 1, made CHANNEL_SUM_CHUNK items
    at a time: each item goes through the same steps as in the whole batch,
    so the numbers are the same."""
    whole = source.take(indices) if source.reads_whole_file else None  # one pass through the file, not one a chunk
    summed = None
    for start in range(0, len(indices), CHANNEL_SUM_CHUNK):
        part = slice(start, start + CHANNEL_SUM_CHUNK)
        items = source.take(indices[part]) if whole is None else whole[part]
        fitted = _fit_to_input(spec, _normalise(_as_float(items), norm))
        if summed is None:
            summed = np.empty((len(indices), 1, *fitted.shape[2:]), fitted.dtype)
        sum_channels(fitted, out=summed[part])
    return summed


def sum_channels(images: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """The sum over axis 1, kept ([N, 1, ...]): bit for bit what ONNX Runtime's
    ReduceSum over that axis gives for up to channel_sum_input.MAX_CHANNELS
    channels (numpy adds them in the same order; tests/test_channel_sum_input.py)."""
    with np.errstate(over="ignore", invalid="ignore"):  # inf or NaN, as the model's ReduceSum would make them
        return np.sum(images, axis=1, keepdims=True, out=out)


# Converting, normalising and laying out the batch holds a few float32 copies of it at once
CONVERSION_COPIES = 3


def _check_image_memory(spec: InputSpec, source, nchw: list[int], batch_size: int) -> None:
    """Refuse, before anything is read, a batch (as converted, and as resized
    to the model's input) that this machine cannot hold, saying what to change."""
    available = available_memory()
    if available is None:
        return
    batch_bytes = math.prod(nchw) * 4
    resized = _planned_shape(spec, nchw)
    resized_bytes = math.prod(resized) * 4
    need = CONVERSION_COPIES * max(batch_bytes, resized_bytes)
    if source.working_bytes > available / 4:  # a Fortran-order .npz member is read whole
        raise UserError(
            f"{source.description} must be read whole ({source.working_bytes / 2**30:.1f} GiB; it is stored in "
            f"Fortran order) and this machine has {available / 2**30:.1f} GiB available: save it in C order "
            "(numpy.savez of numpy.ascontiguousarray)"
        )
    if need <= available * BATCH_MEMORY_SHARE:
        return
    what = f"a batch of {batch_size} image(s) of shape {nchw[1:]}"
    if resized[1:] != nchw[1:]:
        what += f" ({resized[1:]} as the model takes them)"
    if batch_size > 1:
        fix = "pass a smaller --batch-size"
    elif resized_bytes > batch_bytes:
        fix = "the model's input is too large to score on this machine"
    else:
        fix = f"use smaller images (the model takes {resized[1:]})"
    raise UserError(
        f"{what} takes {need / 2**30:.1f} GiB to prepare and several times that to score; this machine has "
        f"{available / 2**30:.1f} GiB available: {fix}"
    )


def _planned_shape(spec: InputSpec, nchw: list[int]) -> list[int]:
    """The batch's shape once _fit_to_input has laid it out for the model."""
    if len(spec.shape) != len(nchw) or len(nchw) != 4:
        return nchw
    channels_last, spatial = _layout(spec, nchw[1])
    shape = [nchw[0], nchw[2], nchw[3], nchw[1]] if channels_last else list(nchw)
    for axis in spatial:
        if isinstance(spec.shape[axis], int):
            shape[axis] = spec.shape[axis]
    return shape


def _layout(spec: InputSpec, channels: int) -> tuple[bool, tuple[int, int]]:
    """Whether the model takes its images channels-last, and its spatial axes."""
    shape = spec.shape
    channels_last = shape[1] != channels and shape[3] == channels
    return channels_last, ((1, 2) if channels_last else (2, 3))


def _normalise(images: np.ndarray, norm: str) -> np.ndarray:
    if norm == "none":
        return images
    if norm not in NORMS:
        raise UserError(f"unknown --norm {norm!r}: choose one of {', '.join(NORMS)}, none")
    mean, std = (np.array(v, dtype=np.float32) / 255.0 for v in NORMS[norm])
    if images.ndim != 4 or images.shape[1] != 3:
        raise UserError(f"--norm {norm} is for 3-channel images, but the data has shape {list(images.shape)}: use --norm none")
    normalised = images - mean[:, None, None]  # a new array: a caller's images are never changed
    normalised /= std[:, None, None]  # in place: the same division without a third copy
    return normalised


def _fit_to_input(spec: InputSpec, images: np.ndarray) -> np.ndarray:
    """NCHW images -> the model's layout and spatial size."""
    shape = spec.shape
    if len(shape) != images.ndim:
        raise UserError(f"input {spec.describe()} does not take images of shape {list(images.shape)}")
    if images.ndim != 4:
        _check_dims(spec, images)
        return images
    channels_last, spatial = _layout(spec, images.shape[1])
    if channels_last:
        images = images.transpose(0, 2, 3, 1)
    target = [shape[a] if isinstance(shape[a], int) else images.shape[a] for a in spatial]
    if [images.shape[a] for a in spatial] != target:
        images = resize(images, target, spatial)
    _check_dims(spec, images)
    return np.ascontiguousarray(images.astype(spec.dtype, copy=False))


def _check_dims(spec: InputSpec, array: np.ndarray) -> None:
    for declared, actual in zip(spec.shape[1:], array.shape[1:]):
        if isinstance(declared, int) and declared != actual:
            raise UserError(f"input {spec.describe()} does not match the data's shape {list(array.shape)}")


# Bilinear resizing works through the batch this many images at a time, into
# the output made once: its temporaries are a slice's, not the batch's (`score`
# of ResNet-50 on 256 CIFAR-10 images resized to 224x224 peaks at 378 MiB,
# 598 with the whole batch's temporaries)
RESIZE_CHUNK = 16


def resize(images: np.ndarray, size: list[int], axes: tuple[int, int]) -> np.ndarray:
    """Resize two axes: block averaging for integer shrink factors, bilinear otherwise."""
    out = images
    for axis, target in zip(axes, size):
        source = out.shape[axis]
        if source == target:
            continue
        if source > target and source % target == 0:
            factor = source // target
            new_shape = out.shape[:axis] + (target, factor) + out.shape[axis + 1 :]
            out = out.reshape(new_shape).mean(axis=axis + 1)
            continue
        # bilinear, pixel centres aligned (half-pixel), as image libraries do
        coords = (np.arange(target) + 0.5) * source / target - 0.5
        coords = np.clip(coords, 0, source - 1)
        lo = np.floor(coords).astype(int)
        hi = np.minimum(lo + 1, source - 1)
        frac = (coords - lo).astype(np.float32)
        shape = [1] * out.ndim
        shape[axis] = target
        frac = frac.reshape(shape)
        out = _bilinear(out, lo, hi, frac, axis)
    return out.astype(np.float32, copy=False)


def _bilinear(images: np.ndarray, lo: np.ndarray, hi: np.ndarray, frac: np.ndarray, axis: int) -> np.ndarray:
    """images[lo] * (1 - frac) + images[hi] * frac along `axis`, the same
    operations on every element, computed RESIZE_CHUNK items of axis 0 at a
    time into one output (one slice when axis 0 is the one resized)."""
    dtype = np.result_type(images.dtype, frac.dtype)  # as images[lo] * (1 - frac) computes in

    def rows(part: np.ndarray) -> np.ndarray:
        low = np.take(part, lo, axis=axis).astype(dtype, copy=False)
        low *= 1 - frac
        high = np.take(part, hi, axis=axis).astype(dtype, copy=False)
        high *= frac
        low += high
        return low

    if axis == 0:
        return rows(images)
    shape = list(images.shape)
    shape[axis] = len(lo)
    resized = np.empty(shape, dtype)
    for start in range(0, len(images), RESIZE_CHUNK):
        resized[start:start + RESIZE_CHUNK] = rows(images[start:start + RESIZE_CHUNK])
    return resized


# ---------------------------------------------------------------- synthetic


def _concrete_shape(spec: InputSpec, batch_size: int) -> list[int]:
    shape = [batch_size]
    for i, d in enumerate(spec.shape[1:], start=1):
        if not isinstance(d, int):
            raise UserError(f"input {spec.describe()} has a symbolic dimension {i} ({d}); give data with --data")
        shape.append(d)
    return shape


def synthetic_images(kind: str, shape: list[int], seed: int = 0) -> np.ndarray:
    """reference-semantics §5: grey (one value per image, black to white across
    the batch), normal(0, 1), uniform(-1, 1), uniform+ = uniform(0, 1)."""
    rng = np.random.default_rng(seed)
    if kind == "grey":
        levels = np.linspace(0.0, 1.0, shape[0], dtype=np.float32)
        return np.broadcast_to(levels.reshape([-1] + [1] * (len(shape) - 1)), shape).copy()
    if kind == "normal":
        return rng.standard_normal(shape, dtype=np.float32)
    if kind == "uniform":
        return rng.uniform(-1.0, 1.0, shape).astype(np.float32)
    if kind == "uniform+":
        return rng.uniform(0.0, 1.0, shape).astype(np.float32)
    raise UserError(f"unknown --synthetic {kind!r}: choose one of {', '.join(SYNTHETIC)}")


# Scoring holds the batch, its activations and two outputs, several times the
# batch itself (an embedding multiplies token ids by its width): a batch made
# here may take at most this share of the memory available
BATCH_MEMORY_SHARE = 1 / 16


def available_memory(cgroup_root: str = "/sys/fs/cgroup") -> int | None:
    """Bytes of memory available to a new allocation, or None: the system's
    (Linux: MemAvailable) or, in a container whose memory cgroup has a limit
    below it, the limit less what the cgroup uses beyond its reclaimable page
    cache (the figure `docker stats` shows), which the system's figure does
    not see: a process past the limit meets the out-of-memory killer with
    MemAvailable still large."""
    system = system_available_memory()
    room = cgroup_available(cgroup_root)
    if room is None:
        return system
    return room if system is None else min(system, room)


def system_available_memory() -> int | None:
    """The system's memory available to a new allocation (Linux: MemAvailable), or None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


# The files of a memory cgroup, v2 (one hierarchy) then v1: (limit, usage, the stat key of reclaimable cache)
_CGROUP_FILES = (("memory.max", "memory.current", "inactive_file"),
                 ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes", "total_inactive_file"))
_NO_LIMIT = 2**60  # cgroup v1 writes "no limit" as about 2^63 rounded to pages; v2 writes "max"


def cgroup_available(root: str = "/sys/fs/cgroup") -> int | None:
    """The memory the cgroup mounted at `root` (the process's own, as a
    container sees it) still allows, or None where it sets no limit or
    cannot be read."""
    for limit_file, usage_file, cache_key in _CGROUP_FILES:
        try:
            limit_text = Path(root, limit_file).read_text().strip()
            usage = int(Path(root, usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit_text == "max" or not limit_text.isdigit() or int(limit_text) >= _NO_LIMIT:
            return None
        cache = 0
        try:
            stat_file = Path(root, Path(usage_file).parent, "memory.stat")
            for line in stat_file.read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == cache_key and value.strip().isdigit():
                    cache = int(value)
        except OSError:
            pass
        return max(int(limit_text) - max(usage - cache, 0), 0)
    return None


@contextlib.contextmanager
def _allocation(shape: list[int], sizes: dict[str, int], itemsize: int = 8):
    """A batch too large for this machine (or for numpy) is a user error, said
    before it is made: one that fits but leaves no room to score it would
    otherwise end in the out-of-memory killer, not in a message.
    sizes: the options behind the shape and their values ({"--batch-size": 8});
    itemsize: bytes per element while it is made (numpy draws in 64 bits)."""
    need = math.prod(int(d) for d in shape) * itemsize
    available = available_memory()
    if available is not None and need > available * BATCH_MEMORY_SHARE:
        raise UserError(
            f"a batch of shape {list(shape)} takes {need / 2**30:.1f} GiB to make and several times that to score; "
            f"this machine has {available / 2**30:.1f} GiB available: {_smaller(shape, sizes)}"
        )
    try:
        yield
    except (MemoryError, ValueError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise UserError(f"a batch of shape {list(shape)} is too large ({first}): {_smaller(shape, sizes)}") from None


def _smaller(shape: list[int], sizes: dict[str, int]) -> str:
    """What to pass instead: the options behind the batch's shape that can still shrink."""
    options = [option for option, value in sizes.items() if value > 1]
    if options:
        return "pass a smaller " + " or ".join(options)
    return f"the model's input {list(shape[1:])} is too large for this machine"


def _synthetic_batch(spec: InputSpec, kind: str, batch_size: int, seed: int, default: bool) -> Batch:
    shape = _concrete_shape(spec, batch_size)
    with _allocation(shape, {"--batch-size": batch_size}):
        array = synthetic_images(kind, shape, seed).astype(spec.dtype)
    # the grey ramp draws nothing: no seed to name
    label = f"synthetic {kind}" + ("" if kind == "grey" else f", seed {seed}") + (" (default: no --data given)" if default else "")
    return Batch(array, label)


# ---------------------------------------------------------------- tokens


def read_token_stream(path: Path) -> tuple[np.ndarray, int]:
    """Token ids of a whitespace-tokenised text, `<eos>` at each line end;
    the vocabulary numbers words in order of first appearance."""
    what = "text file"
    kind = ": token models need a text file of whitespace-separated tokens"
    with open_regular_file(path, what, kind=kind) as raw:
        size = os.fstat(raw.fileno()).st_size
        if size == 0:
            raise UserError(f"{path} is empty{kind}")
        # the whole text is the stream the batch's columns are cut from (as the
        # reference batchifies it): at most one id (8 bytes) per 2 bytes of text,
        # plus the vocabulary and the batch: refuse a text far past that
        available = available_memory()
        if available is not None and 10 * size > available:
            raise UserError(
                f"{path} ({size / 2**30:.1f} GiB) is too large to tokenise in the {available / 2**30:.1f} GiB available: "
                "pass a shorter text (the batch needs only --seq-len x --batch-size tokens of it)"
            )
        vocabulary: dict[str, int] = {}
        ids = py_array.array("q")
        try:
            for number, line in enumerate(io.TextIOWrapper(raw, encoding="utf-8"), start=1):
                if "\0" in line:
                    raise UserError(f"{path} is binary (a NUL byte on line {number}), not text{kind}")
                for word in line.split() + ["<eos>"]:
                    ids.append(vocabulary.setdefault(word, len(vocabulary)))
        except UnicodeDecodeError:
            raise UserError(f"{path} is not UTF-8 text{kind}") from None
    return np.frombuffer(ids, dtype=np.int64), len(vocabulary)


def _token_batch(spec, data, batch_size, seq_len, vocab_size, token_layout, seed) -> Batch:
    if len(spec.shape) != 2:
        raise UserError(f"input {spec.describe()} takes tokens but is not 2-D (sequence x batch); not supported")
    layout = token_layout or _guess_token_layout(spec, batch_size)
    if layout not in ("seq-first", "batch-first"):
        raise UserError(f"unknown token layout {layout!r}: choose seq-first or batch-first")
    seq_axis = 0 if layout == "seq-first" else 1
    _check_fixed_batch(spec, 1 - seq_axis, batch_size)
    if isinstance(spec.shape[seq_axis], int):
        seq_len = spec.shape[seq_axis]
    if data is None:
        if vocab_size is None:
            raise UserError(f"input {spec.describe()} takes token ids; give a text file with --data")
        with _allocation([seq_len, batch_size], {"--batch-size": batch_size, "--seq-len": seq_len}):
            columns = np.random.default_rng(seed).integers(0, vocab_size, size=(seq_len, batch_size))
        label = f"random tokens below {vocab_size}, seed {seed} (default: no --data given)"
    else:
        if isinstance(data, np.ndarray):
            if not np.issubdtype(data.dtype, np.integer):
                raise UserError(f"input {spec.describe()} takes integer token ids, but the data holds {data.dtype} values")
            stream, label = data.reshape(-1).astype(np.int64), "token array"
        else:
            path = Path(data)
            status = file_status(path, "data file")
            if status is None:
                raise UserError(f"data file not found: {path} (check the path)")
            if stat.S_ISDIR(status.st_mode) or path.suffix in (".npz", ".npy", ".bin"):
                raise UserError(f"input {spec.describe()} takes integer token ids, but {path.name} holds images: pass a text file")
            stream, words = read_token_stream(path)
            label = f"{path.name} ({words} words)"
        # batchify as the reference: the stream cut into batch_size contiguous columns
        rows = stream.size // batch_size
        if rows < seq_len:
            raise UserError(
                f"the text has {stream.size} tokens, too few for {seq_len} steps x {batch_size} columns "
                f"(needs {seq_len * batch_size}); pass a longer text or a smaller --batch-size"
            )
        columns = stream[: rows * batch_size].reshape(batch_size, rows).T[:seq_len]
        if vocab_size is not None and columns.max() >= vocab_size:
            raise UserError(
                f"the text needs {int(columns.max()) + 1} distinct tokens in its first {seq_len} steps, more than the "
                f"model's embedding of {vocab_size} rows; use a model with a larger vocabulary or a shorter text"
            )
        label += f", {seq_len} steps x {batch_size} columns"
    tokens = columns if layout == "seq-first" else columns.T
    return Batch(np.ascontiguousarray(tokens.astype(spec.dtype)), label)


def _guess_token_layout(spec: InputSpec, batch_size: int) -> str:
    first, second = spec.shape
    if isinstance(second, int) and second == batch_size and first != batch_size:
        return "seq-first"
    if isinstance(first, int) and first == batch_size:
        return "batch-first"
    return "seq-first"  # NAS-Bench-NLP and torch's nn.RNN default
