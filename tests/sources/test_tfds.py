"""Any tensorflow-datasets image classification, read through tfds.data_source without TensorFlow, and one
not yet prepared refused in one line that says what to install (jaxtrain.sources.tfds, reached through
jaxtrain.sources.registry' load and info)."""

import importlib.util
import subprocess
import sys

import numpy as np
import pytest

import jaxtrain.sources.tfds as tfds_source
from jaxtrain import DatasetUnavailableError
from jaxtrain.sources.registry import info, load

pytestmark = pytest.mark.quick  # fast: the whole file is in the quick tier


@pytest.fixture
def tfds(monkeypatch):
    """tensorflow-datasets, with every dataset taken as prepared (tfds.testing.mock_data fakes the reading,
    not the folder that ``is_prepared`` looks at)."""
    tfds = pytest.importorskip("tensorflow_datasets")
    monkeypatch.setattr(tfds.core.DatasetBuilder, "is_prepared", lambda self: True)
    return tfds


@pytest.fixture
def without_tensorflow(monkeypatch):
    """A Python where TensorFlow and importlib_resources are not installed, whatever this one has."""
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name in tfds_source.PREPARE_NEEDS else find_spec(name, *args))


def test_a_prepared_dataset_is_read_without_tensorflow(tfds):
    with tfds.testing.mock_data(num_examples=7):
        images, labels = tfds_source.load("mnist", "train")
    assert images.shape == (7, 28, 28, 1) and images.dtype == np.float32
    assert labels.shape == (7,) and labels.dtype == np.int32
    assert 0 <= images.min() and images.max() <= 1
    assert "tensorflow" not in sys.modules


def test_a_dataset_not_prepared_says_what_to_install_before_any_download(tfds, monkeypatch, tmp_path,
                                                                        without_tensorflow):
    monkeypatch.setattr(tfds.core.DatasetBuilder, "is_prepared", lambda self: False)
    monkeypatch.setattr(tfds, "data_source", lambda *args, **kwargs: pytest.fail("downloaded"))
    with pytest.raises(DatasetUnavailableError) as error:
        load("fashion_mnist", "test", tmp_path)
    assert str(error.value) == (
        f"'fashion_mnist' is not prepared in {tmp_path / 'fashion_mnist' / '3.0.1'}, and tensorflow-datasets "
        f"prepares a dataset only with tensorflow and importlib_resources, which jaxtrain does not install: "
        f"pip install 'jaxtrain[tfds-prepare]' (or pip install tensorflow importlib_resources); "
        f"or pass --data-dir (data_dir=) a tensorflow-datasets folder that holds it prepared"
    )


@pytest.mark.parametrize("module, install", [
    ("tensorflow", "pip install 'jaxtrain[tfds-prepare]' (or pip install tensorflow importlib_resources)"),
    ("scipy.io", "pip install scipy"),
])
def test_a_module_missing_while_preparing_is_named_not_the_network(tfds, monkeypatch, module, install):
    def prepare(*args, **kwargs):
        raise ModuleNotFoundError(f"No module named '{module}'", name=module)

    monkeypatch.setattr(tfds, "data_source", prepare)
    with pytest.raises(DatasetUnavailableError) as error:
        load("cifar10", "test")
    assert str(error.value) == (
        f"tensorflow-datasets could not prepare 'cifar10': No module named '{module}': {install}; "
        f"or pass --data-dir (data_dir=) a tensorflow-datasets folder that holds it prepared"
    )


def test_a_failed_download_explains_how_to_provide_the_data(tfds, monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(tfds, "data_source", offline)
    with pytest.raises(DatasetUnavailableError, match="no route to host.*--data-dir") as error:
        load("fashion_mnist", "test")
    assert "\n" not in str(error.value)


def test_a_dataset_is_prepared_in_the_one_format_data_source_reads(tfds, monkeypatch, tmp_path):
    # With a data_dir and no file_format, tensorflow-datasets prepares TFRecord files, which data_source
    # then refuses ("Random access data source for file format FileFormat.TFRECORD is not supported").
    calls = []
    examples = [{"image": np.zeros((28, 28, 1), np.uint8), "label": 3}]
    monkeypatch.setattr(tfds, "data_source", lambda *args, **kwargs: calls.append(kwargs) or examples)
    assert load("fashion_mnist", "test", tmp_path)[1].tolist() == [3]
    assert calls[0]["data_dir"] == tmp_path and calls[0]["download"] is True
    assert calls[0]["builder_kwargs"] == {"file_format": "array_record"}


def test_tensorflow_datasets_labels_are_checked_too(tfds, monkeypatch):
    examples = [{"image": np.zeros((28, 28, 1), np.uint8), "label": label} for label in (0, 12, 3)]
    monkeypatch.setattr(tfds, "data_source", lambda *args, **kwargs: examples)
    with pytest.raises(ValueError) as error:
        load("fashion_mnist", "test")
    assert str(error.value) == (
        "labels (tensorflow-datasets fashion_mnist/test): 1 of 3 outside 0..9 (values 12); "
        "expected class indices in 0..9"
    )


@pytest.mark.parametrize("name, shape", [("fashion_mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))])
def test_any_tensorflow_datasets_image_classification_loads_by_name(tfds, name, shape):
    with tfds.testing.mock_data(num_examples=9):
        images, labels = load(name, "test")
        about = info(name)
    assert images.shape == (9, *shape) and images.dtype == np.float32 and 0 <= images.min() and images.max() <= 1
    assert labels.dtype == np.int32 and labels.max() < 10
    assert about.num_classes == 10 and len(about.class_names) == 10  # from builder.info.features
    assert "tensorflow" not in sys.modules



def test_the_command_line_refuses_a_dataset_not_prepared_in_one_line(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    if all(importlib.util.find_spec(module) for module in tfds_source.PREPARE_NEEDS):
        pytest.skip("TensorFlow is installed here: the dataset would be downloaded and prepared")
    command = [sys.executable, "-m", "jaxtrain", "train", "--dataset", "fashion_mnist", "--data-dir", str(tmp_path)]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert done.stderr.startswith(
        f"jaxtrain train: error: 'fashion_mnist' is not prepared in {tmp_path / 'fashion_mnist' / '3.0.1'}, "
    )
    # One line: neither tensorflow-datasets' own warnings nor a traceback below it.
    assert "pip install 'jaxtrain[tfds-prepare]'" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "downloads").exists()
