"""The data committed for the tests (tests/data/README.md) is what it says it is."""

import numpy as np

from tests.conftest import CIFAR10, CIFAR10_IMAGES, cifar10_batch


def test_committed_images_are_the_first_of_the_data_folder(shared_data, tmp_path):
    with np.load(CIFAR10) as committed, np.load(shared_data / "inputs" / "cifar10_test_1000.npz") as source:
        assert sorted(committed.files) == sorted(source.files)
        for key in committed.files:
            expected = source[key] if key == "classes" else source[key][:CIFAR10_IMAGES]
            np.testing.assert_array_equal(committed[key], expected)
            assert committed[key].dtype == expected.dtype
    # the script makes them: the same arrays again
    from tests.data.make_cifar10_sample import cut

    cut(shared_data, tmp_path / "again.npz")
    with np.load(CIFAR10) as committed, np.load(tmp_path / "again.npz") as again:
        assert all(np.array_equal(committed[key], again[key]) for key in committed.files)


def test_cifar10_batch_is_the_normalised_images():
    with np.load(CIFAR10) as committed:
        images = committed["images"]
    assert images.shape == (CIFAR10_IMAGES, 32, 32, 3) and images.dtype == np.uint8
    x = cifar10_batch(4)
    assert x.shape == (4, 3, 32, 32) and x.dtype == np.float32
    mean, std = np.array([125.3, 123.0, 113.9]) / 255, np.array([63.0, 62.1, 66.7]) / 255
    np.testing.assert_allclose(x, ((images[:4] / 255 - mean) / std).transpose(0, 3, 1, 2), rtol=1e-5, atol=1e-6)
