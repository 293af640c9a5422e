"""tensorflow-datasets as a source: any of its image classifications, read whole into numpy arrays.

``load(name, split)`` reads a split with ``tfds.data_source`` (ArrayRecord, no TensorFlow needed),
downloading and preparing it into tensorflow-datasets' data folder on first use; ``info(name)`` gives its
classes from the builder's metadata (``builder.info.features``). ``jaxtrain.sources.registry.load`` and ``info``
come here for every name that is not built in, a folder or an npz file. tensorflow-datasets itself is
imported only when one of these runs.

Reading a prepared dataset needs no TensorFlow; preparing one does (tensorflow-datasets writes its files
with it), and jaxtrain does not install it: ``pip install 'jaxtrain[tfds-prepare]'`` does. Without it, a
dataset not yet prepared is refused in one line that says so, before anything is downloaded.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import numpy as np

from jaxtrain.sources.checks import NAMES_EXPECTED, DatasetInfo, check_labels, first_line, validate
from jaxtrain.sources.download import DatasetUnavailableError

# What tensorflow-datasets needs to prepare a dataset and does not install: TensorFlow, and importlib_resources,
# which tensorflow-datasets 4.9 imports to prepare but declares only for Python < 3.9. The tfds-prepare extra.
PREPARE_NEEDS = ("tensorflow", "importlib_resources")
PREPARE_INSTALL = "pip install 'jaxtrain[tfds-prepare]' (or pip install tensorflow importlib_resources)"


def load(name: str, split: str, data_dir: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Reads a whole tensorflow-datasets image-classification split through ``tfds.data_source``.

    Args:
      name: a tensorflow-datasets image-classification name, e.g. "mnist", "fashion_mnist" or "cifar10".
      split: "train" or "test".
      data_dir: tensorflow-datasets' data folder; None for its default.

    Returns:
      ``images: (N, H, W, C) float32`` in [0, 1] and ``labels: (N,) int32``, checked by ``validate``.

    Raises:
      DatasetUnavailableError: the split could be neither found prepared nor downloaded, or it is not
        prepared and preparing it needs TensorFlow (``PREPARE_INSTALL``).

    Example:
      >>> images, labels = load("cifar10", "test")
    """
    builder, image_key, label_key = _builder(name, data_dir)
    shape = tuple(builder.info.features[image_key].shape)
    num_classes = builder.info.features[label_key].num_classes
    source = f"tensorflow-datasets {name}/{split}"
    held = "a tensorflow-datasets folder that holds it prepared"
    missing = [module for module in PREPARE_NEEDS if importlib.util.find_spec(module) is None]
    if missing and not _is_prepared(builder):
        # Checked here, before tensorflow-datasets downloads what it could not then prepare.
        raise DatasetUnavailableError(
            f"{name!r} is not prepared in {builder.data_path}, and tensorflow-datasets prepares a dataset only "
            f"with {' and '.join(missing)}, which jaxtrain does not install: {PREPARE_INSTALL}; "
            f"or pass --data-dir (data_dir=) {held}"
        )
    try:
        import tensorflow_datasets as tfds

        # ArrayRecord, the format that data_source reads: with a data_dir, tensorflow-datasets would otherwise
        # prepare the builder's default, TFRecord, and then refuse to read it.
        data = tfds.data_source(name, split=split, data_dir=data_dir, download=True,
                                builder_kwargs={"file_format": "array_record"})
        examples = [data[i] for i in range(len(data))]
    except ModuleNotFoundError as error:  # a module some dataset's preparation needs: the network is not the cause
        module = (error.name or "").split(".")[0]
        install = PREPARE_INSTALL if module in PREPARE_NEEDS or not module else f"pip install {module}"
        raise DatasetUnavailableError(
            f"tensorflow-datasets could not prepare {name!r}: {first_line(error)}: {install}; "
            f"or pass --data-dir (data_dir=) {held}"
        ) from error
    except Exception as error:
        raise DatasetUnavailableError(
            f"could not load {name!r} split {split!r} through tensorflow-datasets "
            f"(tfds.data_source, download=True): {type(error).__name__}: {first_line(error)}. "
            f"Run once with network access (it is downloaded and prepared into tensorflow-datasets' folder), "
            f"pass --data-dir (data_dir=) {held}, or use your own data: folder:PATH or npz:FILE"
        ) from error
    if not examples:
        raise ValueError(f"images ({source}): no examples; expected at least one")
    images = np.stack([np.asarray(example[image_key]) for example in examples])
    labels = np.array([example[label_key] for example in examples])
    if images.shape[1:] != shape:  # a grayscale image may come without its channel axis
        images = images.reshape(len(images), *shape)
    check_labels(labels, num_classes, source)
    images = np.asarray(images, np.float32) / np.float32(255)
    validate(images, labels, num_classes, source, image_shape=shape)
    return images, labels.astype(np.int32)


def _is_prepared(builder) -> bool:
    """``builder.is_prepared()``, without the warning it logs for a dataset not prepared: a second line
    under the one that says what to do."""
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)
    try:
        return builder.is_prepared()
    finally:
        absl.setLevel(level)


def knows(name: str) -> bool:
    """Whether tensorflow-datasets has a dataset ``name`` (a ``name:version/config`` too), from its own list,
    without the network."""
    import tensorflow_datasets as tfds  # heavy: imported only for a name that needs it

    try:
        tfds.builder_cls(name.split(":")[0].split("/")[0])
    except Exception:  # tfds' DatasetNotFoundError, or a malformed name
        return False
    return True


def unknown(name: str) -> str | None:
    """What is expected instead of ``name`` if tensorflow-datasets has no dataset of that name; None if it has."""
    if not isinstance(name, str) or not name:
        return NAMES_EXPECTED
    if knows(name):
        return None
    return (
        f"{NAMES_EXPECTED}; {name!r} is not a tensorflow-datasets name "
        f"(python -c 'import tensorflow_datasets as tfds; print(tfds.list_builders())' lists them)"
    )


def info(name: str, data_dir: str | Path | None = None) -> DatasetInfo:
    """The number of classes of tensorflow-datasets' ``name`` and their names, from ``builder.info.features``.

    Example:
      >>> info("cifar10").class_names[:2]
      ('airplane', 'automobile')
    """
    builder, _, label_key = _builder(name, data_dir)
    label = builder.info.features[label_key]
    return DatasetInfo(label.num_classes, tuple(label.names))


def _builder(name: str, data_dir: str | Path | None = None):
    """The tensorflow-datasets builder of ``name``, and the keys of its image and label features.

    Raises:
      ValueError: ``name`` is not a tensorflow-datasets name, or not an image classification of one size.
    """
    problem = unknown(name)
    if problem:
        raise ValueError(f"dataset={name!r}; expected {problem}")
    import tensorflow_datasets as tfds  # heavy: imported only on this path

    builder = tfds.builder(name, data_dir=data_dir)
    features = builder.info.features
    images = [key for key, f in features.items() if isinstance(f, tfds.features.Image)]
    labels = [key for key, f in features.items() if isinstance(f, tfds.features.ClassLabel)]
    pick = lambda keys, name: name if name in keys else keys[0] if len(keys) == 1 else None  # noqa: E731
    image_key, label_key = pick(images, "image"), pick(labels, "label")
    if image_key is None or label_key is None:
        kinds = ", ".join(f"{key} ({type(f).__name__})" for key, f in features.items())
        raise ValueError(
            f"dataset={name!r}: its features are {kinds}; expected an image classification: "
            f"one Image feature and one ClassLabel (or ones named image and label)"
        )
    shape = features[image_key].shape
    if None in shape:
        raise ValueError(
            f"images (tensorflow-datasets {name}): shape {shape} varies from image to image; expected one size "
            f"(resize them, then use folder:PATH or npz:FILE)"
        )
    return builder, image_key, label_key
