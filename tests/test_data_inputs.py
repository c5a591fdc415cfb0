"""Data as users have it (image folders, the CIFAR binary version), read so
that memory follows the batch, and every bad data file one clear error."""

import pickle
import struct
import subprocess
import sys
import textwrap
import zlib

import numpy as np
import onnx
import pytest

from epsinas_onnx.core.scoring.datasets import STREAM_CHUNK_BYTES
from epsinas_onnx.core.scoring.inputs import InputSpec, prepare_batch
from tests.conftest import CIFAR10, CIFAR10_IMAGES, ROOT, run_cli, run_cli_in_process
from tests.onnx_graphs import conv_bn_relu

PIL = pytest.importorskip("PIL.Image")

N = CIFAR10_IMAGES  # images written per test (32): enough for two batches of 16 and a shuffle


def image_spec(hw=32):
    return InputSpec("x", np.dtype(np.float32), ["batch", 3, hw, hw])


@pytest.fixture(scope="module")
def cifar():
    """The first N real CIFAR-10 test images (NHWC uint8) and their labels."""
    with np.load(CIFAR10) as loaded:
        return loaded["images"][:N], loaded["labels"][:N]


def same_batch(a, b):
    assert a.array.dtype == b.array.dtype and a.array.shape == b.array.shape
    assert a.array.tobytes() == b.array.tobytes()


def write_image_folder(folder, images, labels, suffix=".png"):
    """Class sub-folders; returns the images in the documented order (sorted relative paths)."""
    paths = []
    for i, (image, label) in enumerate(zip(images, labels)):
        path = folder / f"class_{int(label)}" / f"{i:04d}{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        PIL.fromarray(image).save(path)
        paths.append(path)
    order = sorted(range(len(paths)), key=lambda i: paths[i].relative_to(folder).as_posix())
    return images[order]


def write_cifar_binary(path, images, labels, label_bytes):
    """The binary version's records: label byte(s), then the R, G, B planes row by row."""
    planes = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    heads = np.repeat(labels.astype(np.uint8)[:, None], label_bytes, axis=1)  # CIFAR-100: coarse, fine
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.concatenate([heads, planes], axis=1).tobytes())


@pytest.mark.parametrize("shuffle_seed", [None, 4])
def test_png_folder_gives_the_npz_batch(tmp_path, cifar, shuffle_seed):
    images, labels = cifar
    ordered = write_image_folder(tmp_path / "folder", images, labels)
    np.savez(tmp_path / "same.npz", images=ordered)
    options = dict(batch_size=16, shuffle_seed=shuffle_seed, norm="cifar10")
    folder = prepare_batch(image_spec(), tmp_path / "folder", **options)
    same_batch(folder, prepare_batch(image_spec(), tmp_path / "same.npz", **options))
    assert folder.description.startswith(f"folder/ ({N} images)")
    # resized to a smaller model as the .npz is
    same_batch(prepare_batch(image_spec(16), tmp_path / "folder", **options),
               prepare_batch(image_spec(16), tmp_path / "same.npz", **options))


def test_jpeg_and_grey_images_are_read_as_rgb(tmp_path, cifar):
    images, labels = cifar
    write_image_folder(tmp_path / "jpeg", images[:8], labels[:8], suffix=".jpg")
    batch = prepare_batch(image_spec(), tmp_path / "jpeg", batch_size=8, norm="none")
    ordered = images[:8][np.argsort([f"class_{int(l)}/{i:04d}" for i, l in enumerate(labels[:8])])]
    expected = ordered.transpose(0, 3, 1, 2) / 255.0
    assert np.abs(batch.array - expected).mean() < 0.05  # JPEG is lossy, the order and layout are not
    PIL.fromarray(images[0, :, :, 0]).save(tmp_path / "grey.png")  # mode L
    (tmp_path / "grey_only").mkdir()
    (tmp_path / "grey.png").rename(tmp_path / "grey_only" / "a.png")
    grey = prepare_batch(image_spec(), tmp_path / "grey_only", batch_size=1, norm="none").array
    np.testing.assert_array_equal(grey[0, 0], grey[0, 2])


@pytest.mark.parametrize("kind, name, folder, label_bytes", [
    ("CIFAR-10", "test_batch.bin", "cifar-10-batches-bin", 1),
    ("CIFAR-100", "test.bin", "cifar-100-binary", 2),
])
@pytest.mark.parametrize("shuffle_seed", [None, 1])
def test_cifar_binary_gives_the_npz_batch(tmp_path, cifar, kind, name, folder, label_bytes, shuffle_seed):
    images, labels = cifar
    write_cifar_binary(tmp_path / folder / name, images, labels, label_bytes)
    np.savez(tmp_path / "same.npz", images=images, labels=labels)
    options = dict(batch_size=20, shuffle_seed=shuffle_seed, norm="cifar100")
    expected = prepare_batch(image_spec(), tmp_path / "same.npz", **options)
    from_file = prepare_batch(image_spec(), tmp_path / folder / name, **options)
    same_batch(from_file, expected)
    same_batch(prepare_batch(image_spec(), tmp_path / folder, **options), expected)
    assert f"({kind} binary)" in from_file.description


def test_cli_scores_a_folder_as_its_npz(tmp_path, cifar):
    images, labels = cifar
    model = tmp_path / "m.onnx"
    onnx.save(conv_bn_relu(), model)
    ordered = write_image_folder(tmp_path / "folder", images, labels)
    np.savez(tmp_path / "same.npz", images=ordered)
    scores = []
    for data in (tmp_path / "folder", tmp_path / "same.npz"):
        result = run_cli_in_process("score", model, "--data", data, "--batch-size", 8, "--format", "csv")
        assert result.returncode == 0, result.stderr
        scores.append(result.stdout.splitlines()[1].split(",")[1])
    assert scores[0] == scores[1] and scores[0] not in ("", "nan")


def test_npz_is_read_in_chunks_through_to_its_crc(tmp_path):
    """A member larger than one read chunk: the batch is the same as numpy's
    own loader gives, first items and a shuffle spread over every chunk."""
    item = (3, 64, 64)
    count = 3 * STREAM_CHUNK_BYTES // (4 * int(np.prod(item))) + 7
    images = np.random.default_rng(0).standard_normal((count, *item), dtype=np.float32)
    np.savez_compressed(tmp_path / "big.npz", images=images)
    spec = InputSpec("x", np.dtype(np.float32), ["batch", *item])
    for seed in (None, 3):
        batch = prepare_batch(spec, tmp_path / "big.npz", batch_size=count if seed is None else 50, shuffle_seed=seed)
        chosen = np.arange(count) if seed is None else np.random.default_rng(seed).permutation(count)[:50]
        np.testing.assert_array_equal(batch.array, images[chosen])


def test_a_fortran_order_npz_gives_the_same_batch(tmp_path, cifar):
    images, _ = cifar
    np.savez(tmp_path / "c.npz", images=images)
    np.savez(tmp_path / "f.npz", images=np.asfortranarray(images))
    for seed in (None, 2):
        same_batch(prepare_batch(image_spec(), tmp_path / "f.npz", batch_size=10, shuffle_seed=seed),
                   prepare_batch(image_spec(), tmp_path / "c.npz", batch_size=10, shuffle_seed=seed))


# ---------------------------------------------------------------- memory follows the batch

SPARSE_GIB = 1  # the large data file: sparse, so it costs no disk and no time


def sparse_npy(path, shape, dtype=np.uint8):
    """An .npy of zeros of any size, written as a sparse file (header, then a hole)."""
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": shape})
        handle.truncate(handle.tell() + int(np.prod(shape)) * np.dtype(dtype).itemsize)
    return path


def bounded_run(code: str, extra_bytes: int) -> subprocess.CompletedProcess:
    """Run `code` after the imports, in a process whose address space may grow
    by only `extra_bytes` more (RLIMIT_AS)."""
    script = textwrap.dedent("""
        import resource, sys
        import numpy as np
        from epsinas_onnx.core.scoring.inputs import InputSpec, prepare_batch
        with open("/proc/self/status") as f:
            vm = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmSize:"))
        resource.setrlimit(resource.RLIMIT_AS, (vm + int(sys.argv[1]), resource.RLIM_INFINITY))
    """) + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script, str(extra_bytes)], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc are Linux's")
def test_a_large_npy_batch_of_4_under_an_address_space_limit(tmp_path):
    """1 GiB of uint8 images, batch 4: the file is memory-mapped (its 1 GiB of
    address space) and only 4 images are read; converting the whole file first,
    as numpy.load then astype(float32) does, needs 5 GiB more."""
    path = sparse_npy(tmp_path / "big.npy", (SPARSE_GIB * 2**30 // 3072, 32, 32, 3))
    limit = SPARSE_GIB * 2**30 + 256 * 2**20
    result = bounded_run(f"""
        batch = prepare_batch(InputSpec("x", np.dtype(np.float32), ["b", 3, 32, 32]), {str(path)!r}, batch_size=4)
        print(batch.array.shape, batch.description)
    """, limit)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "(4, 3, 32, 32) big.npy, first 4" in result.stdout
    # the bound is real: the whole file as float32 does not fit under it
    whole = bounded_run(f"np.load({str(path)!r}).astype(np.float32)", limit)
    assert whole.returncode != 0 and "MemoryError" in whole.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc are Linux's")
def test_a_compressed_npz_is_streamed_under_an_address_space_limit(tmp_path):
    """512 MiB of zeros compressed to ~0.5 MB (a zip bomb, as far as memory
    goes): streamed through in 16 MiB chunks, never held whole."""
    path = tmp_path / "zeros.npz"
    shape = (512 * 2**20 // 3072, 32, 32, 3)
    import zipfile
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive, archive.open("images.npy", "w", force_zip64=True) as member:
        np.lib.format.write_array_header_1_0(member, {"descr": "|u1", "fortran_order": False, "shape": shape})
        zeros = bytes(2**24)
        left = int(np.prod(shape))
        while left:
            member.write(zeros[: min(left, len(zeros))])
            left -= min(left, len(zeros))
    assert path.stat().st_size < 4 * 2**20
    result = bounded_run(f"""
        batch = prepare_batch(InputSpec("x", np.dtype(np.float32), ["b", 3, 32, 32]), {str(path)!r}, batch_size=4, shuffle_seed=0)
        print(batch.array.shape)
    """, 256 * 2**20)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "(4, 3, 32, 32)" in result.stdout


# ---------------------------------------------------------------- bad data: one line, exit 1


def png_of_zero_height(path):
    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    header = struct.pack(">IIBBBBB", 4, 0, 8, 2, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def corrupt_npz(path):
    np.savez(path, images=np.arange(8 * 8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 8, 3))  # stored, not deflated
    raw = bytearray(path.read_bytes())
    at = raw.index(bytes(range(64, 96)))  # inside the first image
    raw[at] ^= 0xFF
    path.write_bytes(bytes(raw))


def make_object_npz(path):
    np.savez(path, images=np.array([{"run": "code"}] * 8, dtype=object))


def make_cifar_python(path):
    path.mkdir()
    (path / "batches.meta").write_bytes(pickle.dumps({"label_names": ["a"]}))
    (path / "test_batch").write_bytes(pickle.dumps({"data": [1, 2, 3]}))


def folder_of_two_sizes(path):
    path.mkdir()
    PIL.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path / "a.png")
    PIL.fromarray(np.zeros((9, 8, 3), np.uint8)).save(path / "b.png")


def text(content: bytes):
    return lambda path: path.write_bytes(content)


def npy(shape, dtype=np.uint8):
    return lambda path: np.save(path, np.zeros(shape, dtype))


BAD_DATA = [
    # (name of the data file, how to make it, fragments of the one error line, for a token model)
    ("objects.npz", make_object_npz, ["Python objects", "pickles are never loaded"], False),
    ("objects.npy", lambda p: np.save(p, np.array([None] * 8, dtype=object), allow_pickle=True), ["Python objects"], False),
    ("crc.npz", corrupt_npz, ["corrupted", "CRC"], False),
    ("cut.npz", lambda p: (np.savez(p, images=np.zeros((8, 8, 8, 3), np.uint8)), p.write_bytes(p.read_bytes()[:300])), ["not a readable .npz"], False),
    ("cut.npy", lambda p: (np.save(p, np.zeros((8, 8, 8, 3), np.uint8)), p.write_bytes(p.read_bytes()[:300])), ["not a readable .npy"], False),
    ("zero_height.npy", npy((8, 0, 8, 3)), ["empty"], False),
    ("zero_height_png", lambda p: png_of_zero_height(p / "a.png"), ["a.png"], False),
    ("not_an_image_png", lambda p: (p.mkdir(), (p / "a.png").write_bytes(b"not a png")), ["not a readable image"], False),
    ("two_sizes", folder_of_two_sizes, ["share one size"], False),
    ("no_images", lambda p: (p.mkdir(), (p / "notes.txt").write_text("x")), ["no PNG or JPEG"], False),
    ("cifar-10-batches-py", make_cifar_python, ["CIFAR python version", "test_batch.bin"], False),
    ("test_batch", lambda p: p.write_bytes(pickle.dumps({"data": 1})), ["CIFAR python version"], False),
    ("images.pkl", lambda p: p.write_bytes(pickle.dumps([1])), ["pickle", "numpy.save"], False),
    ("odd.bin", text(bytes(3073 * 3074)), ["both CIFAR-10 and CIFAR-100"], False),
    ("test_batch.bin", text(bytes(3073 * 2 + 5)), ["not a CIFAR-10 binary file"], False),
    ("empty.npz", lambda p: __import__("zipfile").ZipFile(p, "w").close(), ["holds no arrays"], False),
    ("tokens.txt", text(b""), ["is empty"], True),
    ("binary.txt", text(b"\x00\x01\x02 tokens\n" * 50), ["binary", "NUL"], True),
    ("latin1.txt", text("caf\xe9 ".encode("latin-1") * 500), ["not UTF-8"], True),
    ("folder_for_tokens", lambda p: p.mkdir(), ["takes integer token ids"], True),
]


@pytest.mark.parametrize("name, make, fragments, tokens", BAD_DATA, ids=[row[0] for row in BAD_DATA])
def test_bad_data_is_one_clear_error(tmp_path, name, make, fragments, tokens):
    model = ROOT / "models" / "torch_dynamo_lstm_lm.onnx" if tokens else tmp_path / "m.onnx"
    if not tokens:
        onnx.save(conv_bn_relu(), model)
    data = tmp_path / "data" / name
    data.parent.mkdir()
    make(data)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    result = run_cli_in_process("score", model, "--data", data, "--batch-size", 2, "--seq-len", 4)
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr and not result.stdout
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written


def test_a_batch_too_large_for_memory_says_what_to_change(tmp_path):
    model = tmp_path / "m.onnx"
    onnx.save(conv_bn_relu(), model)
    many = sparse_npy(tmp_path / "many.npy", (2**26, 8, 8, 3))  # 12 GiB of 8x8 images
    result = run_cli("score", model, "--data", many, "--batch-size", 2**26)
    assert result.returncode == 1 and "pass a smaller --batch-size" in result.stderr, result.stderr
    huge = sparse_npy(tmp_path / "huge.npy", (1, 3, 2**17, 2**17), np.float32)  # one 192 GiB image
    result = run_cli("score", model, "--data", huge, "--batch-size", 1)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert "--batch-size" not in lines[0] and "use smaller images" in lines[0], lines[0]


def test_missing_pillow_names_the_extra(tmp_path):
    (tmp_path / "folder").mkdir()
    PIL.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "folder" / "a.png")
    model = tmp_path / "m.onnx"
    onnx.save(conv_bn_relu(), model)
    code = ("import sys; sys.modules['PIL'] = None\n"
            "from epsinas_onnx.cli import main\n"
            f"sys.exit(main(['score', {str(model)!r}, '--data', {str(tmp_path / 'folder')!r}, '--batch-size', '1']))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip() == 'error: reading a folder of images needs Pillow: pip install "epsinas-onnx[images]"'
