"""Datasets as numpy arrays: MNIST (IDX files, downloaded once), scikit-learn's bundled digits, and a
user's own: any image-classification dataset of tensorflow-datasets, a folder of images in torchvision's
``ImageFolder`` layout, or an ``.npz`` file. ``load(name, split)`` reads any of them by name:

  mnist, digits          the two built in
  fashion_mnist, cifar10 any tensorflow-datasets image-classification name (``jaxtrain.tfds_source``)
  folder:PATH            PATH/train/<class>/*.png and PATH/test/<class>/*.png, or PATH/<class>/*.png
  npz:FILE               a NumPy archive holding x_train, y_train, x_test, y_test

Every loader returns ``(images, labels)``: ``images: (N, H, W, C) float32`` in [0, 1] and
``labels: (N,) int32``; ``info(name)`` gives the number of classes and their names. Wrap them in
``jaxtrain.ArrayDataset`` to batch them.

Every loader checks what it read before returning it (``validate``): a wrong label, an image out of range
or a damaged file stops the program with a one-line ``ValueError`` naming the file, instead of a run that
trains to a NaN loss or a traceback from deep inside JAX.
"""

from __future__ import annotations

import dataclasses
import numbers
from pathlib import Path

import numpy as np

from jaxtrain import download
from jaxtrain.download import DatasetUnavailableError
from jaxtrain.idx import read_idx

SPLITS = ("train", "test")
BUILT_IN = ("mnist", "digits")
# What --dataset takes, for messages.
NAMES_EXPECTED = (
    "mnist, digits, a tensorflow-datasets image-classification name (e.g. fashion_mnist, cifar10), "
    "folder:PATH (an image folder) or npz:FILE"
)
# torchvision's ImageFolder extensions (IMG_EXTENSIONS), those that Pillow reads.
# A folder without train/ and test/ holds this fraction of its images out for testing, drawn by this seed.
FOLDER_TEST_FRACTION, FOLDER_SEED = 0.2, 0
_IDX_PREFIX = {"train": "train", "test": "t10k"}


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split={split!r}; expected one of {SPLITS}")


def _as_images(images: np.ndarray, scale: float) -> np.ndarray:
    """uint8-range images (N, H, W[, 1]) → float32 (N, H, W, 1), divided by ``scale``."""
    return np.asarray(images, np.float32).reshape(len(images), *images.shape[1:3], 1) / np.float32(scale)


def validate(
    images: np.ndarray,
    labels: np.ndarray,
    num_classes: int = 10,
    source: str = "arrays",
    *,
    image_shape: tuple[int, ...] | None = None,
) -> None:
    """Checks a classification dataset before any training: the loaders call it, and so can your own data.

    One vectorized pass over each array (its minimum and maximum); the rest looks at shapes and types only.

    Args:
      images: ``(N, ...)`` floats in [0, 1], e.g. ``(N, 28, 28, 1) float32``. Integer images (uint8 pixels in
        0..255, say) are refused: scale them first (``images / 255``).
      labels: ``(N,)`` integer class indices in ``0..num_classes - 1``.
      num_classes: the number of classes C.
      source: what the arrays came from (a file, a split), named in the messages.
      image_shape: the shape of one image, if it is known, e.g. ``(28, 28, 1)``.

    Raises:
      ValueError: one line, ``images (<source>): <problem>; expected <what>`` or the same for labels, e.g.
        ``labels (train-labels-idx1-ubyte): 2 of 60000 outside 0..9 (values 10, 255); expected class
        indices in 0..9``.

    Example:
      >>> validate(images, labels, num_classes=10, source="my_data.npz")
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 1:
        raise ValueError(f"num_classes={num_classes!r}; expected a positive integer")
    _check_images(images, source, image_shape)
    _check_labels(labels, num_classes, source)
    if len(labels) != len(images):
        raise ValueError(f"labels ({source}): {len(labels)} labels for {len(images)} images; expected one label per image")


def check_splits(
    train_images: np.ndarray, test_images: np.ndarray, train_source: str = "train", test_source: str = "test"
) -> None:
    """Checks that the test images have the shape and type of the training images.

    A model's parameters are shaped by the training images; test images of another size would fail only
    when the first evaluation runs, after a whole epoch of training.

    Args:
      train_images: ``(N, ...)`` the training split's images.
      test_images: ``(M, ...)`` the test split's images.
      train_source: what the training images came from, named in the message.
      test_source: what the test images came from, named in the message.

    Raises:
      ValueError: ``test images (<source>): shape (M, 8, 8, 1); expected (M, 28, 28, 1), the image shape of
        train images (<source>)`` and likewise for the dtype.

    Example:
      >>> check_splits(train_images, test_images)
    """
    train, test = np.shape(train_images)[1:], np.shape(test_images)[1:]
    if train != test:
        raise ValueError(
            f"test images ({test_source}): shape {np.shape(test_images)}; "
            f"expected {(len(test_images), *train)}, the image shape of the training images ({train_source})"
        )
    train_dtype, test_dtype = np.asarray(train_images).dtype, np.asarray(test_images).dtype
    if train_dtype != test_dtype:
        raise ValueError(
            f"test images ({test_source}): dtype {test_dtype}; expected {train_dtype}, "
            f"the dtype of the training images ({train_source})"
        )


def _check_images(images: np.ndarray, source: str, image_shape: tuple[int, ...] | None = None) -> None:
    """Raises a one-line ValueError unless ``images`` is a non-empty ``(N, ...)`` float array in [0, 1]."""
    images = np.asarray(images)
    where = f"images ({source})"
    if images.ndim < 2:
        raise ValueError(f"{where}: shape {images.shape}; expected (N, ...), one image per row")
    if image_shape is not None and images.shape[1:] != tuple(image_shape):
        raise ValueError(f"{where}: shape {images.shape}; expected {(len(images), *image_shape)}")
    if len(images) == 0:
        raise ValueError(f"{where}: shape {images.shape}, no examples; expected at least one")
    if not np.issubdtype(images.dtype, np.floating):
        hint = " (uint8 pixels: images / 255)" if np.issubdtype(images.dtype, np.integer) else ""
        raise ValueError(f"{where}: dtype {images.dtype}; expected floats in [0, 1]{hint}")
    low, high = images.min(), images.max()
    if not (0 <= low and high <= 1):  # also false for NaN, which min and max propagate
        bad = int(np.count_nonzero(~((images >= 0) & (images <= 1))))  # the error path only: a second pass
        raise ValueError(
            f"{where}: {bad} of {images.size} values outside [0, 1] (min {low}, max {high}); "
            f"expected floats in [0, 1]{' (uint8 pixels: images / 255)' if high > 1 else ''}"
        )


def _check_labels(labels: np.ndarray, num_classes: int, source: str) -> None:
    """Raises a one-line ValueError unless ``labels`` is ``(N,)`` integers in ``0..num_classes - 1``."""
    labels = np.asarray(labels)
    where = f"labels ({source})"
    if labels.ndim != 1:
        raise ValueError(f"{where}: shape {labels.shape}; expected (N,), one class index per example")
    if not np.issubdtype(labels.dtype, np.integer):
        classes = f" in 0..{num_classes - 1}" if num_classes > 1 else ""  # 1: not known, as the labels are not integers
        raise ValueError(f"{where}: dtype {labels.dtype}; expected integer class indices{classes}")
    if len(labels) and not (0 <= labels.min() and labels.max() < num_classes):
        outside = (labels < 0) | (labels >= num_classes)
        values = np.unique(labels[outside])
        shown = ", ".join(str(v) for v in values[:5]) + (f", … ({len(values)} distinct)" if len(values) > 5 else "")
        raise ValueError(
            f"{where}: {np.count_nonzero(outside)} of {len(labels)} outside 0..{num_classes - 1} (values {shown}); "
            f"expected class indices in 0..{num_classes - 1}"
        )


def _find_idx(data_dir: Path, stem: str) -> Path:
    names = [stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"]
    for name in names:
        if (data_dir / name).is_file():
            return data_dir / name
    raise FileNotFoundError(f"{data_dir}: none of {names} found; expected MNIST's IDX files in this folder")


def load_mnist(split: str = "train", data_dir: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Loads an MNIST split from its IDX files: those in ``data_dir``, or else a copy downloaded once.

    With ``data_dir`` it reads ``{train,t10k}-{images-idx3,labels-idx1}-ubyte``, gzipped or not. Without it,
    it downloads the split's two files on first use from the mirror that tensorflow-datasets uses, checks
    them against the checksums recorded there, and keeps them in ``$JAXTRAIN_DATA/mnist``, else
    ``$XDG_CACHE_HOME/jaxtrain/datasets/mnist``, else ``~/.cache/jaxtrain/datasets/mnist``
    (``jaxtrain.download``). No TensorFlow, no tensorflow-datasets.

    Args:
      split: "train" or "test".
      data_dir: a folder holding the four IDX files, or None for the downloaded copy.

    Returns:
      ``images: (N, 28, 28, 1) float32`` in [0, 1] and ``labels: (N,) int32``.

    Raises:
      DatasetUnavailableError: the files could not be downloaded, or what came is not what the checksums
        record; one line naming the URL and what to do instead.

    Example:
      >>> images, labels = load_mnist("test", data_dir="data/mnist")
    """
    _check_split(split)
    if data_dir is None:
        images_path, labels_path = download.mnist_files(split)
    else:
        data_dir = Path(data_dir)
        if not data_dir.is_dir():
            raise FileNotFoundError(f"data_dir={str(data_dir)!r} is not a folder; expected one holding MNIST's IDX files")
        prefix = _IDX_PREFIX[split]
        images_path = _find_idx(data_dir, f"{prefix}-images-idx3-ubyte")
        labels_path = _find_idx(data_dir, f"{prefix}-labels-idx1-ubyte")
    images, labels = read_idx(images_path), read_idx(labels_path)
    # Checked before the conversions: float labels would be truncated, and any shape but (N, 28, 28)
    # would be reshaped into something else.
    if images.shape[1:] != (28, 28):
        raise ValueError(f"images ({images_path}): shape {images.shape}; expected (N, 28, 28), MNIST's images")
    _check_labels(labels, 10, labels_path)
    if len(labels) != len(images):
        raise ValueError(
            f"labels ({labels_path}): {len(labels)} labels for the {len(images)} images of {images_path.name}; "
            f"expected one label per image"
        )
    images = _as_images(images, 255)
    _check_images(images, images_path)
    return images, labels.astype(np.int32)


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [""])[0][:300]


def load_digits(split: str = "train", seed: int = 0, test_fraction: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """Loads scikit-learn's bundled 8×8 handwritten digits (1,797 images), split by a seeded shuffle.

    It needs no network, which makes it the default dataset of the examples and tests.

    Args:
      split: "train" or "test".
      seed: seeds the train/test split; the same seed gives the same split.
      test_fraction: the share of images in the test split.

    Returns:
      ``images: (N, 8, 8, 1) float32`` in [0, 1] and ``labels: (N,) int32``.

    Example:
      >>> images, labels = load_digits("test")
      >>> images.shape
      (449, 8, 8, 1)
    """
    _check_split(split)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed={seed!r}; expected an integer >= 0")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction={test_fraction!r}; expected a number between 0 and 1")
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError as error:
        raise DatasetUnavailableError(
            "the digits dataset needs scikit-learn: pip install 'jaxtrain[examples]'"
        ) from error
    digits = sklearn_digits()
    order = np.random.default_rng(seed).permutation(len(digits.target))
    n_test = round(len(order) * test_fraction)
    chosen = order[n_test:] if split == "train" else order[:n_test]
    images, labels = _as_images(digits.images[chosen], 16), digits.target[chosen]
    if len(chosen) == 0:
        raise ValueError(f"test_fraction={test_fraction!r}; expected a fraction that leaves both splits non-empty")
    validate(images, labels, 10, f"scikit-learn digits/{split}", image_shape=(8, 8, 1))
    return images, labels.astype(np.int32)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a dataset says of its classes.

    Attributes:
      num_classes: the number of classes C; labels are in 0..C - 1.
      class_names: the name of each class, by label; None where the labels are their own names (digits).
    """

    num_classes: int
    class_names: tuple[str, ...] | None = None


def unknown_name(name: str) -> str | None:
    """What ``load`` expects instead of ``name`` if ``name`` names no dataset it can read; None if it does.

    Looks at the name only (and tensorflow-datasets' list of its datasets, without the network); the files
    of ``folder:`` and ``npz:`` are read by ``load``.

    Example:
      >>> unknown_name("cifar10") is None, unknown_name("folder:") is None
      (True, False)
    """
    if not isinstance(name, str) or not name:
        return NAMES_EXPECTED
    kind, _, path = name.partition(":")
    if kind in ("folder", "npz"):
        return None if path else f"{kind}:{'PATH' if kind == 'folder' else 'FILE'}, a path after {kind}:"
    if name in BUILT_IN:
        return None
    from jaxtrain import tfds_source  # tfds_source builds on this module: imported where it is used

    if not tfds_source.knows(name):
        return (
            f"{NAMES_EXPECTED}; {name!r} is not a tensorflow-datasets name "
            f"(python -c 'import tensorflow_datasets as tfds; print(tfds.list_builders())' lists them)"
        )
    return None


def info(name: str, data_dir: str | Path | None = None) -> DatasetInfo:
    """The number of classes of dataset ``name``, and their names where it has them.

    From tensorflow-datasets' metadata (``builder.info.features``), an image folder's class folders, an npz
    file's ``class_names`` array or its largest label; 10 for mnist and digits.

    Example:
      >>> info("folder:data/pets")
      DatasetInfo(num_classes=2, class_names=('cat', 'dog'))
    """
    from jaxtrain import files, tfds_source  # both build on this module: imported where they are used

    kind, _, path = name.partition(":")
    if name in BUILT_IN:
        return DatasetInfo(10)
    if kind == "folder":
        return DatasetInfo(len(classes := files.classes(path)), classes)
    if kind == "npz":
        return files.npz_info(path)
    return tfds_source.info(name, data_dir)


def load(name: str, split: str, data_dir: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Loads a split of a dataset by name: the one entry point of the command line.

    Args:
      name: "mnist", "digits", a tensorflow-datasets image-classification name ("fashion_mnist",
        "cifar10", …), "folder:PATH" (``load_folder``) or "npz:FILE" (``load_npz``).
      split: "train" or "test".
      data_dir: mnist: a folder of IDX files (None: a copy downloaded once, ``load_mnist``); another
        tensorflow-datasets name: its data folder; None otherwise.

    Returns:
      ``images: (N, H, W, C) float32`` in [0, 1] and ``labels: (N,) int32``, checked by ``validate``.

    Example:
      >>> images, labels = load("folder:data/pets", "train")
    """
    from jaxtrain import files, tfds_source  # both build on this module: imported where they are used

    _check_split(split)
    kind, _, path = name.partition(":") if isinstance(name, str) else ("", "", "")
    if name == "mnist":
        return load_mnist(split, data_dir)
    if name == "digits":
        return load_digits(split)
    if kind == "folder" and path:
        return files.load_folder(path, split)
    if kind == "npz" and path:
        return files.load_npz(path, split)
    return tfds_source.load(name, split, data_dir)
