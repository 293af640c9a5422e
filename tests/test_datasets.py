import gzip
import sys

import numpy as np
import pytest

from jaxtrain import DatasetUnavailableError, load_digits, load_mnist, read_idx
from jaxtrain.datasets import load


def _idx_bytes(array: np.ndarray) -> bytes:
    types = {np.uint8: 0x08, np.int32: 0x0C, np.float32: 0x0D}
    header = bytes([0, 0, types[array.dtype.type], array.ndim]) + np.array(array.shape, ">u4").tobytes()
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def _write_mnist(folder, n_train=5, n_test=3, gz=True):
    rng = np.random.default_rng(0)
    data = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            raw = _idx_bytes(array)
            name = f"{prefix}-{kind}-ubyte"
            if gz:
                (folder / (name + ".gz")).write_bytes(gzip.compress(raw))
            else:
                (folder / name).write_bytes(raw)
        data[prefix] = (images, labels)
    return data


@pytest.mark.parametrize("array", [np.arange(24, dtype=np.uint8).reshape(2, 3, 4), np.array([-5, 7], np.int32),
                                   np.array([[1.5, -2.0]], np.float32)])
def test_read_idx_round_trips_each_type(tmp_path, array):
    (tmp_path / "a").write_bytes(_idx_bytes(array))
    (tmp_path / "a.gz").write_bytes(gzip.compress(_idx_bytes(array)))
    for name in ("a", "a.gz"):
        out = read_idx(tmp_path / name)
        assert out.dtype == array.dtype and out.dtype.isnative
        np.testing.assert_array_equal(out, array)


def test_read_idx_rejects_a_bad_file(tmp_path):
    (tmp_path / "bad").write_bytes(b"PK\x03\x04rest")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(_idx_bytes(np.zeros((4, 2), np.uint8))[:-3])
    with pytest.raises(ValueError, match="asks for"):
        read_idx(tmp_path / "short")


@pytest.mark.parametrize("gz", [True, False])
def test_load_mnist_from_an_idx_folder(tmp_path, gz):
    data = _write_mnist(tmp_path, gz=gz)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = load_mnist(split, tmp_path)
        assert images.shape == (len(data[prefix][1]), 28, 28, 1) and images.dtype == np.float32
        assert labels.dtype == np.int32
        assert 0 <= images.min() and images.max() <= 1
        np.testing.assert_array_equal(images[..., 0], data[prefix][0] / np.float32(255))
        np.testing.assert_array_equal(labels, data[prefix][1])


def test_load_mnist_says_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        load_mnist("train", tmp_path)
    with pytest.raises(FileNotFoundError, match="not a folder"):
        load_mnist("train", tmp_path / "nowhere")
    with pytest.raises(ValueError, match="split='validation'"):
        load_mnist("validation", tmp_path)


def test_load_mnist_through_tensorflow_datasets_without_tensorflow():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=7):
        images, labels = load_mnist("train")
    assert images.shape == (7, 28, 28, 1) and images.dtype == np.float32
    assert labels.shape == (7,) and labels.dtype == np.int32
    assert 0 <= images.min() and images.max() <= 1
    assert "tensorflow" not in sys.modules


def test_load_mnist_explains_how_to_provide_the_data(tmp_path, monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")

    def offline(*args, **kwargs):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(tfds, "data_source", offline)
    with pytest.raises(DatasetUnavailableError, match="no route to host.*--data-dir"):
        load_mnist("test")


def test_load_digits_is_a_fixed_seeded_split():
    train_images, train_labels = load_digits("train")
    test_images, test_labels = load_digits("test")
    assert train_images.shape == (1348, 8, 8, 1) and test_images.shape == (449, 8, 8, 1)
    assert train_images.dtype == np.float32 and train_labels.dtype == np.int32
    assert 0 <= train_images.min() and train_images.max() == 1
    np.testing.assert_array_equal(load_digits("test")[0], test_images)
    assert not np.array_equal(load_digits("test", seed=1)[1], test_labels)
    with pytest.raises(ValueError, match="dataset='cifar'"):
        load("cifar", "train")


def test_real_mnist_folder(mnist_dir):
    images, labels = load_mnist("test", mnist_dir)
    assert images.shape == (10000, 28, 28, 1)
    assert np.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
