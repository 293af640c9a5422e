"""Checks of a dataset as loaded, before any training: every source calls ``validate`` on what it read, and so
can a user's own arrays; ``check_splits`` compares a test split with its training split. ``DatasetInfo`` is
what a source says of its classes.

A wrong label, an image out of range or a damaged file stops the program with a one-line ``ValueError``
naming the file, instead of a run that trains to a NaN loss or a traceback from deep inside JAX.
"""

from __future__ import annotations

import dataclasses
import numbers

import numpy as np

SPLITS = ("train", "test")
# What --dataset takes, for messages.
NAMES_EXPECTED = (
    "mnist, digits, a tensorflow-datasets image-classification name (e.g. fashion_mnist, cifar10), "
    "folder:PATH (an image folder) or npz:FILE"
)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a dataset says of its classes.

    Attributes:
      num_classes: the number of classes C; labels are in 0..C - 1.
      class_names: the name of each class, by label; None where the labels are their own names (digits).
    """

    num_classes: int
    class_names: tuple[str, ...] | None = None


def check_split(split: str) -> None:
    """Raises a one-line ValueError unless ``split`` is "train" or "test"."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r}; expected one of {SPLITS}")


def first_line(error: BaseException) -> str:
    """An error's first line, at most 300 characters: what a one-line message quotes of a library's error."""
    return (str(error).strip().splitlines() or [""])[0][:300]


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
    check_images(images, source, image_shape)
    check_labels(labels, num_classes, source)
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


def check_images(images: np.ndarray, source: str, image_shape: tuple[int, ...] | None = None) -> None:
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


def check_labels(labels: np.ndarray, num_classes: int, source: str) -> None:
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
