"""Datasets as numpy arrays: MNIST (IDX files or tensorflow-datasets) and scikit-learn's bundled digits.

Every loader returns ``(images, labels)``: ``images: (N, H, W, 1) float32`` in [0, 1] and
``labels: (N,) int32``. Wrap them in ``jaxtrain.ArrayDataset`` to batch them.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

SPLITS = ("train", "test")
_IDX_PREFIX = {"train": "train", "test": "t10k"}
# The element type byte of an IDX header (http://yann.lecun.com/exdb/mnist/).
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class DatasetUnavailableError(RuntimeError):
    """The data could be neither read locally nor downloaded."""


def read_idx(path: str | Path) -> np.ndarray:
    """Reads one IDX file, gzipped or not, into an array of the shape and type its header gives.

    Example:
      >>> read_idx("mnist/t10k-labels-idx1-ubyte.gz").shape
      (10000,)
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (header {raw[:4].hex()}; expected 0000 <type> <ndim>)")
    ndim = raw[3]
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    offset = 4 + 4 * ndim
    expected = offset + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(f"{path}: {len(raw)} bytes; the header {shape} asks for {expected}")
    return np.frombuffer(raw, dtype, offset=offset).reshape(shape).astype(dtype.newbyteorder("="))


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split={split!r}; expected one of {SPLITS}")


def _as_images(images: np.ndarray, labels: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """uint8-range images (N, H, W[, 1]) and labels → float32 (N, H, W, 1) in [0, 1] and int32."""
    images = np.asarray(images, np.float32).reshape(len(images), *images.shape[1:3], 1) / np.float32(scale)
    return images, np.asarray(labels, np.int32)


def _find_idx(data_dir: Path, stem: str) -> Path:
    names = [stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"]
    for name in names:
        if (data_dir / name).is_file():
            return data_dir / name
    raise FileNotFoundError(f"{data_dir}: none of {names} found; expected MNIST's IDX files in this folder")


def load_mnist(split: str = "train", data_dir: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Loads an MNIST split: from IDX files in ``data_dir``, or else through tensorflow-datasets.

    With ``data_dir`` it reads ``{train,t10k}-{images-idx3,labels-idx1}-ubyte``, gzipped or not. Without it,
    it reads MNIST with ``tfds.data_source`` (ArrayRecord, no TensorFlow needed), downloading and preparing
    it into tensorflow-datasets' data folder on first use.

    Args:
      split: "train" or "test".
      data_dir: a folder holding the four IDX files, or None for tensorflow-datasets.

    Returns:
      ``images: (N, 28, 28, 1) float32`` in [0, 1] and ``labels: (N,) int32``.

    Raises:
      DatasetUnavailableError: tensorflow-datasets could neither find nor download MNIST.

    Example:
      >>> images, labels = load_mnist("test", data_dir="data/mnist")
    """
    _check_split(split)
    if data_dir is not None:
        data_dir = Path(data_dir)
        if not data_dir.is_dir():
            raise FileNotFoundError(f"data_dir={str(data_dir)!r} is not a folder; expected one holding MNIST's IDX files")
        prefix = _IDX_PREFIX[split]
        images = read_idx(_find_idx(data_dir, f"{prefix}-images-idx3-ubyte"))
        labels = read_idx(_find_idx(data_dir, f"{prefix}-labels-idx1-ubyte"))
        if images.ndim != 3 or labels.shape != images.shape[:1]:
            raise ValueError(f"{data_dir}: images {images.shape} and labels {labels.shape} do not pair up")
        return _as_images(images, labels, 255)
    return _load_tfds("mnist", split)


def _load_tfds(name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Reads a whole tensorflow-datasets image split through ``tfds.data_source``."""
    import tensorflow_datasets as tfds  # heavy: imported only on this path

    try:
        source = tfds.data_source(name, split=split, download=True)
        examples = [source[i] for i in range(len(source))]
    except Exception as error:
        raise DatasetUnavailableError(
            f"could not load {name!r} split {split!r} through tensorflow-datasets "
            f"(tfds.data_source, download=True): {type(error).__name__}: {error}. "
            f"Run once with network access, or pass data_dir= a folder with the IDX files "
            f"(CLI: --data-dir DIR)."
        ) from error
    images = np.stack([example["image"] for example in examples])
    labels = np.array([example["label"] for example in examples])
    return _as_images(images, labels, 255)


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
    return _as_images(digits.images[chosen], digits.target[chosen], 16)


def load(name: str, split: str, data_dir: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Loads a dataset by name: "mnist" or "digits"."""
    if name == "mnist":
        return load_mnist(split, data_dir)
    if name == "digits":
        return load_digits(split)
    raise ValueError(f"dataset={name!r}; expected 'mnist' or 'digits'")


def read_images(paths: list[str | Path], shape: tuple[int, int, int]) -> np.ndarray:
    """Image files as a batch the way the training data comes: ``(N, H, W, C) float32`` in [0, 1].

    PNG, JPEG and the other formats Pillow reads are converted to grayscale (C = 1) or RGB (C = 3) and
    resized to H × W; ``.npy`` files hold one image ``(H, W[, C])`` or a batch ``(N, H, W[, C])``, uint8 in
    0..255 (scaled by 1/255) or floats in [0, 1]. MNIST's digits are white on black: invert a scan of dark
    ink on white paper first.

    Args:
      paths: the files, in order.
      shape: ``(H, W, C)`` of the model's input.

    Returns:
      The images, file by file (a ``.npy`` batch adds all of its images).

    Example:
      >>> read_images(["seven.png"], (28, 28, 1)).shape
      (1, 28, 28, 1)
    """
    height, width, channels = shape
    images = []
    for path in map(Path, paths):
        if path.suffix.lower() == ".npy":
            array = np.load(path)
            if channels == 1 and array.shape[-2:] == (height, width):
                array = array[..., None]  # (H, W) grayscale
            if array.shape[1:] != tuple(shape):
                array = array[None]
            if array.shape[1:] != tuple(shape):
                raise ValueError(f"{path}: an array of shape {np.load(path).shape}; expected an image {tuple(shape)} or a batch of them")
            images.extend(_unit_range(array, path))
            continue
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as image:
                image = image.convert("L" if channels == 1 else "RGB").resize((width, height), Image.Resampling.BILINEAR)
                images.append(np.asarray(image, np.float32).reshape(height, width, channels) / np.float32(255))
        except (UnidentifiedImageError, OSError) as error:
            raise ValueError(f"{path}: not an image that Pillow can read ({error}); expected a PNG, JPEG or .npy file") from None
    return np.stack(images) if images else np.zeros((0, *shape), np.float32)


def _unit_range(array: np.ndarray, path: Path) -> np.ndarray:
    """uint8 images scaled into [0, 1], float images checked to be there already."""
    if array.dtype == np.uint8:
        return array.astype(np.float32) / np.float32(255)
    array = array.astype(np.float32)
    if array.size and not (0 <= array.min() and array.max() <= 1):
        raise ValueError(f"{path}: values in [{array.min()}, {array.max()}]; expected uint8 0..255 or floats in [0, 1]")
    return array
