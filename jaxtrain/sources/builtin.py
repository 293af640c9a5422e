"""The two datasets built in: MNIST, from its IDX files (downloaded once, ``jaxtrain.sources.download``), and
scikit-learn's bundled 8×8 digits, which need no network. Each loader returns ``images: (N, H, W, 1)
float32`` in [0, 1] and ``labels: (N,) int32``, checked by ``checks.validate``.
"""

from __future__ import annotations

import numbers
from pathlib import Path

import numpy as np

from jaxtrain.sources import download
from jaxtrain.sources.checks import check_images, check_labels, check_split, validate
from jaxtrain.sources.download import DatasetUnavailableError
from jaxtrain.sources.idx import read_idx

_IDX_PREFIX = {"train": "train", "test": "t10k"}

def _as_images(images: np.ndarray, scale: float) -> np.ndarray:
    """uint8-range images (N, H, W[, 1]) → float32 (N, H, W, 1), divided by ``scale``: converted and divided in
    one pass into one new array, not a converted copy and then its quotient."""
    return np.divide(images.reshape(len(images), *images.shape[1:3], 1), np.float32(scale), dtype=np.float32)


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
    (``jaxtrain.sources.download``). No TensorFlow, no tensorflow-datasets.

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
    check_split(split)
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
    check_labels(labels, 10, labels_path)
    if len(labels) != len(images):
        raise ValueError(
            f"labels ({labels_path}): {len(labels)} labels for the {len(images)} images of {images_path.name}; "
            f"expected one label per image"
        )
    images = _as_images(images, 255)
    check_images(images, images_path)
    return images, labels.astype(np.int32)


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
    check_split(split)
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
