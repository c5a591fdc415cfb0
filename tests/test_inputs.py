"""The batch: loading, normalisation, layout, resizing, tokens, synthetic data."""

import numpy as np
import pytest

from epsinas_onnx.core.errors import UserError
from epsinas_onnx.core.options import BatchOptions
from epsinas_onnx.core.scoring import inputs
from epsinas_onnx.core.scoring.inputs import InputSpec, NORMS, prepare_batch, read_token_stream, resize


def image_spec(shape=("batch", 3, 32, 32)):
    return InputSpec("x", np.dtype(np.float32), list(shape))


def token_spec(shape=("seq", "batch")):
    return InputSpec("tokens", np.dtype(np.int64), list(shape))


def test_uint8_nhwc_is_normalised_and_transposed(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, size=(10, 32, 32, 3), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", images=images, labels=np.arange(10))
    batch = prepare_batch(image_spec(), BatchOptions(data=tmp_path / "d.npz", batch_size=4, norm="cifar10"))
    mean, std = (np.array(v, np.float32) / 255 for v in NORMS["cifar10"])
    expected = ((images[:4] / 255.0 - mean) / std).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(batch.array, expected, rtol=1e-5, atol=1e-6)
    assert "first 4" in batch.description and "norm cifar10" in batch.description


def test_shuffle_seed_draws_a_repeatable_subset(tmp_path):
    images = np.arange(20, dtype=np.float32).reshape(20, 1, 1, 1) * np.ones((1, 3, 4, 4), np.float32)
    np.save(tmp_path / "d.npy", images)
    spec = image_spec(("batch", 3, 4, 4))
    a = prepare_batch(spec, BatchOptions(data=tmp_path / "d.npy", batch_size=5, shuffle_seed=3)).array
    b = prepare_batch(spec, BatchOptions(data=tmp_path / "d.npy", batch_size=5, shuffle_seed=3)).array
    np.testing.assert_array_equal(a, b)
    assert sorted(a[:, 0, 0, 0]) != list(range(5))  # not the first five


def test_a_float32_array_batch_of_its_first_items_is_not_copied():
    # a 224x224 batch of 256 is 154 MB: the first items of an array that needs no
    # conversion are its own memory; any other choice of items is a copy of those items
    images = np.random.default_rng(0).standard_normal((12, 3, 32, 32)).astype(np.float32)
    batch = prepare_batch(image_spec(), BatchOptions(data=images, batch_size=8))
    assert np.shares_memory(batch.array, images) and np.array_equal(batch.array, images[:8])
    shuffled = prepare_batch(image_spec(), BatchOptions(data=images, batch_size=8, shuffle_seed=1))
    assert not np.shares_memory(shuffled.array, images)
    normalised = prepare_batch(image_spec(), BatchOptions(data=images, batch_size=8, norm="cifar10"))
    assert not np.shares_memory(normalised.array, images)
    np.testing.assert_array_equal(images, np.random.default_rng(0).standard_normal((12, 3, 32, 32)).astype(np.float32))


def test_resize_by_block_average_and_bilinear():
    images = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    halved = resize(images, [2, 2], (2, 3))
    np.testing.assert_allclose(halved[0, 0], [[2.5, 4.5], [10.5, 12.5]])
    grown = resize(images, [8, 8], (2, 3))
    assert grown.shape == (1, 1, 8, 8)
    assert grown.min() == images.min() and grown.max() == images.max()


@pytest.mark.parametrize("dtype", [np.float32, np.uint8])
def test_bilinear_resize_in_chunks_is_the_whole_batch_formula_bit_for_bit(dtype):
    """resize works RESIZE_CHUNK images at a time into one output; every value
    is still images[lo] * (1 - frac) + images[hi] * frac of the whole batch,
    here written out with NumPy on the whole array, axis after axis."""
    from epsinas_onnx.core.scoring.inputs import RESIZE_CHUNK

    rng = np.random.default_rng(2)
    images = (rng.normal(size=(2 * RESIZE_CHUNK + 5, 3, 7, 9)) * 50 + 100).astype(dtype)
    expected = images
    for axis, target in ((2, 20), (3, 13)):
        source = expected.shape[axis]
        coords = np.clip((np.arange(target) + 0.5) * source / target - 0.5, 0, source - 1)
        lo = np.floor(coords).astype(int)
        hi = np.minimum(lo + 1, source - 1)
        frac = (coords - lo).astype(np.float32).reshape([target if a == axis else 1 for a in range(4)])
        expected = np.take(expected, lo, axis=axis) * (1 - frac) + np.take(expected, hi, axis=axis) * frac
    got = resize(images, [20, 13], (2, 3))
    assert got.dtype == np.float32 and got.shape == expected.shape
    assert got.tobytes() == expected.astype(np.float32).tobytes()


def test_images_resized_to_the_model_size(tmp_path):
    np.save(tmp_path / "d.npy", np.zeros((4, 32, 32, 3), np.uint8))
    batch = prepare_batch(image_spec(("batch", 3, 16, 16)), BatchOptions(data=tmp_path / "d.npy", batch_size=4))
    assert batch.array.shape == (4, 3, 16, 16)


def test_channels_last_model_input(tmp_path):
    np.save(tmp_path / "d.npy", np.zeros((4, 8, 8, 3), np.uint8))
    batch = prepare_batch(image_spec(("batch", 8, 8, 3)), BatchOptions(data=tmp_path / "d.npy", batch_size=4))
    assert batch.array.shape == (4, 8, 8, 3)


@pytest.mark.parametrize("kind", ["grey", "normal", "uniform", "uniform+"])
def test_synthetic_inputs(kind):
    batch = prepare_batch(image_spec(), BatchOptions(synthetic=kind, batch_size=8, seed=1))
    x = batch.array
    assert x.shape == (8, 3, 32, 32) and x.dtype == np.float32
    if kind == "grey":
        assert np.all(np.ptp(x.reshape(8, -1), axis=1) == 0)
        np.testing.assert_allclose(x[:, 0, 0, 0], np.linspace(0, 1, 8), rtol=1e-6)
    elif kind == "uniform":
        assert x.min() >= -1 and x.max() <= 1 and x.min() < 0
    elif kind == "uniform+":
        assert x.min() >= 0 and x.max() <= 1
    np.testing.assert_array_equal(x, prepare_batch(image_spec(), BatchOptions(synthetic=kind, batch_size=8, seed=1)).array)


def test_default_image_input_is_the_grey_batch():
    """No --data: the grey ramp (the best synthetic input measured on
    NAS-Bench-201); the normal batch stays an option, unchanged."""
    batch = prepare_batch(image_spec(), BatchOptions(batch_size=4))
    assert "synthetic grey" in batch.description and "default" in batch.description
    np.testing.assert_array_equal(batch.array, prepare_batch(image_spec(), BatchOptions(synthetic="grey", batch_size=4)).array)
    normal = prepare_batch(image_spec(), BatchOptions(synthetic="normal", batch_size=4, seed=0)).array
    np.testing.assert_array_equal(normal, np.random.default_rng(0).standard_normal((4, 3, 32, 32), dtype=np.float32))


def test_default_token_input_is_unchanged():
    batch = prepare_batch(token_spec(), BatchOptions(batch_size=4, seq_len=5, seed=2), vocab_size=50)
    np.testing.assert_array_equal(batch.array, np.random.default_rng(2).integers(0, 50, size=(5, 4)))
    assert "random tokens" in batch.description


def test_token_text_is_laid_out_in_contiguous_columns(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("a b c\nd e\n" * 20)
    stream, vocabulary = read_token_stream(text)
    assert vocabulary == 6  # a b c <eos> d e
    assert stream[:6].tolist() == [0, 1, 2, 3, 4, 5]
    batch = prepare_batch(token_spec(), BatchOptions(data=text, batch_size=4, seq_len=5), vocab_size=100)
    rows = stream.size // 4
    expected = stream[: rows * 4].reshape(4, rows).T[:5]
    np.testing.assert_array_equal(batch.array, expected)
    assert batch.array.shape == (5, 4)


def test_token_batch_first_layout(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("x y z w\n" * 50)
    batch = prepare_batch(token_spec(("batch", "seq")), BatchOptions(data=text, batch_size=4, seq_len=6, token_layout="batch-first"))
    assert batch.array.shape == (4, 6)


def test_too_short_text_says_how_many_tokens_are_needed(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("a b\n")
    with pytest.raises(UserError, match="needs 280"):
        prepare_batch(token_spec(), BatchOptions(data=text, batch_size=4, seq_len=70))


def test_images_for_a_token_model_and_the_reverse(tmp_path):
    np.save(tmp_path / "d.npy", np.zeros((4, 8, 8, 3), np.uint8))
    with pytest.raises(UserError, match="takes integer token ids"):
        prepare_batch(token_spec(), BatchOptions(data=tmp_path / "d.npy", batch_size=4))
    text = tmp_path / "t.txt"
    text.write_text("a b c\n")
    with pytest.raises(UserError, match="only for token models"):
        prepare_batch(image_spec(), BatchOptions(data=text, batch_size=4))


def test_fixed_batch_dimension_mismatch():
    with pytest.raises(UserError, match="pass --batch-size 1"):
        prepare_batch(image_spec((1, 3, 32, 32)), BatchOptions(batch_size=8))


# ---------------------------------------------------------------- the memory available, in a container too


def _cgroup(root, version: int, limit: str, usage: int, cache: int):
    folder = root if version == 2 else root / "memory"
    folder.mkdir(parents=True, exist_ok=True)
    names = ("memory.max", "memory.current", "inactive_file") if version == 2 else \
        ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")
    (folder / names[0]).write_text(limit + "\n")
    (folder / names[1]).write_text(f"{usage}\n")
    (folder / "memory.stat").write_text(f"anon 1\n{names[2]} {cache}\nfile 2\n")


@pytest.mark.parametrize("version", [1, 2])
def test_a_cgroup_limit_is_the_room_less_what_it_uses_beyond_its_reclaimable_cache(tmp_path, version):
    gib = 2**30
    _cgroup(tmp_path, version, str(4 * gib), usage=3 * gib, cache=gib)
    assert inputs.cgroup_available(str(tmp_path)) == 2 * gib  # 4 - (3 - 1)
    _cgroup(tmp_path, version, str(4 * gib), usage=5 * gib, cache=0)  # over its limit: no room, never negative
    assert inputs.cgroup_available(str(tmp_path)) == 0


@pytest.mark.parametrize("version, limit", [(2, "max"), (1, "9223372036854771712")])
def test_a_cgroup_without_a_limit_leaves_the_systems_figure(tmp_path, version, limit, monkeypatch):
    _cgroup(tmp_path, version, limit, usage=2**30, cache=0)
    assert inputs.cgroup_available(str(tmp_path)) is None
    assert inputs.cgroup_available(str(tmp_path / "absent")) is None
    monkeypatch.setattr(inputs, "system_available_memory", lambda: 7 * 2**30)
    assert inputs.available_memory(str(tmp_path)) == 7 * 2**30


def test_the_smaller_of_the_system_and_the_cgroup_is_available(tmp_path, monkeypatch):
    _cgroup(tmp_path, 2, str(2**30), usage=0, cache=0)
    monkeypatch.setattr(inputs, "system_available_memory", lambda: 7 * 2**30)
    assert inputs.available_memory(str(tmp_path)) == 2**30
    monkeypatch.setattr(inputs, "system_available_memory", lambda: 2**20)
    assert inputs.available_memory(str(tmp_path)) == 2**20
    monkeypatch.setattr(inputs, "system_available_memory", lambda: None)
    assert inputs.available_memory(str(tmp_path)) == 2**30
