"""Any tensorflow-datasets image classification, read through tfds.data_source without TensorFlow
(jaxtrain.tfds_source, reached through jaxtrain.datasets' load, load_mnist and info)."""

import sys

import numpy as np
import pytest

from jaxtrain import DatasetUnavailableError, load_mnist
from jaxtrain.datasets import info, load


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


def test_tensorflow_datasets_labels_are_checked_too(monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")
    examples = [{"image": np.zeros((28, 28, 1), np.uint8), "label": label} for label in (0, 12, 3)]
    monkeypatch.setattr(tfds, "data_source", lambda *args, **kwargs: examples)
    with pytest.raises(ValueError) as error:
        load_mnist("test")
    assert str(error.value) == (
        "labels (tensorflow-datasets mnist/test): 1 of 3 outside 0..9 (values 12); expected class indices in 0..9"
    )


@pytest.mark.parametrize("name, shape", [("fashion_mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))])
def test_any_tensorflow_datasets_image_classification_loads_by_name(name, shape):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=9):
        images, labels = load(name, "test")
        about = info(name)
    assert images.shape == (9, *shape) and images.dtype == np.float32 and 0 <= images.min() and images.max() <= 1
    assert labels.dtype == np.int32 and labels.max() < 10
    assert about.num_classes == 10 and len(about.class_names) == 10  # from builder.info.features
    assert "tensorflow" not in sys.modules
