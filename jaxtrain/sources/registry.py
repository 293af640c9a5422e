"""Datasets by name: where ``--dataset``'s names lead. MNIST (IDX files, downloaded once) and scikit-learn's
bundled digits (``builtin``), and a user's own: any image-classification dataset of tensorflow-datasets, a folder of images in torchvision's
``ImageFolder`` layout, or an ``.npz`` file. ``load(name, split)`` reads any of them by name:

  mnist, digits          the two built in (``jaxtrain.sources.builtin``)
  fashion_mnist, cifar10 any tensorflow-datasets image-classification name (``jaxtrain.sources.tfds``)
  folder:PATH            PATH/train/<class>/*.png and PATH/test/<class>/*.png, or PATH/<class>/*.png (``files``)
  npz:FILE               a NumPy archive holding x_train, y_train, x_test, y_test (``files``)

Every loader returns ``(images, labels)``: ``images: (N, H, W, C) float32`` in [0, 1] and
``labels: (N,) int32``; ``info(name)`` gives the number of classes and their names. Wrap them in
``jaxtrain.ArrayDataset`` to batch them.

Every loader checks what it read before returning it (``jaxtrain.sources.checks.validate``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxtrain.sources import files, tfds
from jaxtrain.sources.builtin import load_digits, load_mnist
from jaxtrain.sources.checks import NAMES_EXPECTED, DatasetInfo, check_split

BUILT_IN = ("mnist", "digits")


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
    return tfds.unknown(name)


def info(name: str, data_dir: str | Path | None = None) -> DatasetInfo:
    """The number of classes of dataset ``name``, and their names where it has them.

    From tensorflow-datasets' metadata (``builder.info.features``), an image folder's class folders, an npz
    file's ``class_names`` array or its largest label; 10 for mnist and digits.

    Example:
      >>> info("folder:data/pets")
      DatasetInfo(num_classes=2, class_names=('cat', 'dog'))
    """
    kind, _, path = name.partition(":")
    if name in BUILT_IN:
        return DatasetInfo(10)
    if kind == "folder":
        return DatasetInfo(len(classes := files.classes(path)), classes)
    if kind == "npz":
        return files.npz_info(path)
    return tfds.info(name, data_dir)


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
    check_split(split)
    kind, _, path = name.partition(":") if isinstance(name, str) else ("", "", "")
    if kind in ("folder", "npz") and not path:
        raise ValueError(f"dataset={name!r}; expected {unknown_name(name)}")
    if name == "mnist":
        return load_mnist(split, data_dir)
    if name == "digits":
        return load_digits(split)
    if kind == "folder" and path:
        return files.load_folder(path, split)
    if kind == "npz" and path:
        return files.load_npz(path, split)
    return tfds.load(name, split, data_dir)
