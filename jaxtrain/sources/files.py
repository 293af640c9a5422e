"""Data a user has as files: torchvision's ``ImageFolder`` layout, ``.npz`` arrays, and image files to
classify. Each loader returns what every source does: ``images (N, H, W, C) float32`` in [0, 1] and
``labels (N,) int32``, validated by ``checks.validate``; ``registry.load`` reaches them by the names
``folder:PATH`` and ``npz:FILE``.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from jaxtrain.sources.checks import DatasetInfo, check_split, first_line, validate

# A folder without train/ and test/ holds this fraction of its images out for testing, drawn by this seed.
FOLDER_TEST_FRACTION, FOLDER_SEED = 0.2, 0
# torchvision's ImageFolder extensions (IMG_EXTENSIONS), those that Pillow reads.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
_GRAYSCALE_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
_SIXTEEN_BIT_MODES = ("I", "I;16", "I;16B", "I;16L")  # Pillow opens a 16-bit grayscale PNG as I;16 (or I)


def load_folder(path: str | Path, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Loads a split of an image folder laid out as torchvision's ``ImageFolder`` expects.

    ``PATH/train/<class>/*.png`` and ``PATH/test/<class>/*.png``; or ``PATH/<class>/*.png`` alone, of which a
    seeded ``FOLDER_TEST_FRACTION`` is held out as the test split. Classes are the folders' names, sorted
    (label 0 is the first), as torchvision numbers them. Images are decoded with Pillow: grayscale if every
    image of the folder is, else RGB; all must share the first image's size. 8-bit pixels are scaled by
    1/255, 16-bit grayscale ones (PNG, TIFF) by 1/65535.

    Args:
      path: the folder.
      split: "train" or "test".

    Returns:
      ``images: (N, H, W, 1 or 3) float32`` in [0, 1] and ``labels: (N,) int32``.

    Raises:
      FileNotFoundError: no such folder, or a class folder without images.
      ValueError: images of different sizes, or an image Pillow cannot read or that is cut short; one line
        naming the file.

    Example:
      >>> images, labels = load_folder("data/pets", "test")
    """
    check_split(split)
    classes, files = _folder(path)
    from PIL import Image, UnidentifiedImageError

    every = [f for part in files.values() for f, _ in part]
    modes, sizes = [], []
    for file in every:  # headers only: Image.open decodes nothing until asked
        try:
            with Image.open(file) as image:
                modes.append(image.mode)
                sizes.append(image.size)
        except (UnidentifiedImageError, OSError) as error:
            raise ValueError(f"image ({file}): not an image that Pillow can read ({error}); expected {', '.join(IMAGE_EXTENSIONS)}") from None
    for file, size in zip(every, sizes):
        if size != sizes[0]:
            raise ValueError(
                f"image ({file}): {size[0]}×{size[1]} pixels (width×height); expected {sizes[0][0]}×{sizes[0][1]}, the size of "
                f"the first image ({every[0]}): resize the images to one size"
            )
    mode = "L" if all(m in _GRAYSCALE_MODES for m in modes) else "RGB"
    images = []
    for file, _ in files[split]:
        try:
            with Image.open(file) as image:
                images.append(_pixels(image, mode))
        except OSError as error:  # a file cut short shows only now, as its pixels are decoded
            raise ValueError(f"image ({file}): {error}; expected a whole image file") from None
    images = np.stack(images)
    labels = np.array([label for _, label in files[split]], np.int32)
    validate(images, labels, len(classes), f"folder {path}, {split}")
    return images, labels


def _folder(path: str | Path) -> tuple[tuple[str, ...], dict[str, list[tuple[Path, int]]]]:
    """An image folder's class names and each split's ``(file, label)``, in a fixed order."""
    root = Path(path)
    layout = "expected PATH/<class>/*.png, or PATH/train/<class>/*.png and PATH/test/<class>/*.png"
    if not root.is_dir():
        raise FileNotFoundError(f"folder:{path}: not a folder; {layout}")
    split_folders = (root / "train").is_dir() and (root / "test").is_dir()
    top = root / "train" if split_folders else root
    classes = tuple(sorted(d.name for d in top.iterdir() if d.is_dir() and not d.name.startswith(".")))
    if not classes:
        raise FileNotFoundError(f"folder:{path}: no class folders in {top}; {layout}")

    def images_of(folder: Path) -> list[tuple[Path, int]]:
        found = []
        for name in classes:
            files = sorted(f for f in (folder / name).glob("*") if f.suffix.lower() in IMAGE_EXTENSIONS) if (folder / name).is_dir() else []
            if not files and folder == top:
                raise FileNotFoundError(f"folder:{path}: class folder {folder / name} has no images; expected {', '.join(IMAGE_EXTENSIONS)} files")
            found += [(f, classes.index(name)) for f in files]
        return found

    if split_folders:
        extra = sorted(d.name for d in (root / "test").iterdir() if d.is_dir() and d.name not in classes and not d.name.startswith("."))
        if extra:
            raise ValueError(f"folder:{path}: test/{extra[0]} is not a class of train/ ({', '.join(classes)}); expected the same classes")
        return classes, {"train": images_of(root / "train"), "test": images_of(root / "test")}
    every = images_of(root)
    order = np.random.default_rng(FOLDER_SEED).permutation(len(every))
    n_test = min(max(1, round(len(every) * FOLDER_TEST_FRACTION)), len(every) - 1)
    if n_test < 1:
        raise ValueError(f"folder:{path}: {len(every)} image; expected at least 2, to hold some out for testing")
    return classes, {"train": [every[i] for i in sorted(order[n_test:])], "test": [every[i] for i in sorted(order[:n_test])]}


_NPZ_KEYS = {"train": ("x_train", "y_train"), "test": ("x_test", "y_test")}


def load_npz(path: str | Path, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Loads a split of a NumPy archive holding ``x_train``, ``y_train``, ``x_test`` and ``y_test``
    (``np.savez("data.npz", x_train=..., ...)``, the layout of ``keras.datasets``' files).

    Images are ``(N, H, W)`` or ``(N, H, W, C)``, uint8 pixels in 0..255 or floats in [0, 1]; labels are
    integer class indices. An optional ``class_names`` array names the classes.

    Args:
      path: the ``.npz`` file.
      split: "train" or "test".

    Returns:
      ``images: (N, H, W, C) float32`` in [0, 1] and ``labels: (N,) int32``.

    Example:
      >>> images, labels = load_npz("data.npz", "train")
    """
    check_split(split)
    x_key, y_key = _NPZ_KEYS[split]
    arrays = _npz(path)
    images, labels = arrays[x_key], arrays[y_key]
    if images.ndim == 3:
        images = images[..., None]  # (N, H, W): one channel
    if images.dtype == np.uint8:
        images = images.astype(np.float32) / np.float32(255)
    elif np.issubdtype(images.dtype, np.floating):
        images = images.astype(np.float32)
    validate(images, labels, npz_info(path).num_classes, f"{path}, {x_key} and {y_key}")
    if images.ndim != 4:
        raise ValueError(f"images ({path}, {x_key}): shape {images.shape}; expected (N, H, W) or (N, H, W, C)")
    return images, labels.astype(np.int32)


def _npz(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of an npz file, refusing one without the four that ``load_npz`` reads."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"npz:{path}: no such file; expected an .npz file holding x_train, y_train, x_test, y_test")
    if not zipfile.is_zipfile(path):  # np.load would try it as a pickle, and say so
        size = Path(path).stat().st_size
        raise ValueError(f"npz file ({path}): {'empty' if not size else 'not a zip archive'}; expected an .npz file (np.savez writes one)")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError) as error:
        raise ValueError(f"npz file ({path}): not readable by np.load ({first_line(error)}); expected an .npz file") from None
    missing = [key for keys in _NPZ_KEYS.values() for key in keys if key not in arrays]
    if missing:
        raise ValueError(
            f"npz file ({path}): no {', '.join(missing)} (it has {', '.join(arrays) or 'no arrays'}); "
            f"expected x_train, y_train, x_test, y_test"
        )
    return arrays


def npz_info(path: str | Path) -> DatasetInfo:
    """An npz file's classes: its ``class_names``, else as many as its largest label + 1."""
    arrays = _npz(path)
    if "class_names" in arrays:
        names = tuple(str(n) for n in arrays["class_names"])
        return DatasetInfo(len(names), names)
    labels = [arrays[key] for key in ("y_train", "y_test") if arrays[key].size]  # an empty split is named later
    if not labels or not all(np.issubdtype(y.dtype, np.integer) for y in labels):
        return DatasetInfo(1)  # validate names what is wrong with the labels
    return DatasetInfo(int(max(y.max() for y in labels)) + 1)


def read_images(paths: list[str | Path], shape: tuple[int, int, int]) -> np.ndarray:
    """Image files as a batch the way the training data comes: ``(N, H, W, C) float32`` in [0, 1].

    PNG, JPEG and the other formats Pillow reads are converted to grayscale (C = 1) or RGB (C = 3) and
    resized to H × W, 16-bit grayscale scaled by 1/65535 (8-bit by 1/255); ``.npy`` files hold one image
    ``(H, W[, C])`` or a batch ``(N, H, W[, C])``, uint8 in 0..255 (scaled by 1/255), uint16 in 0..65535
    (by 1/65535) or floats in [0, 1]. MNIST's digits are white on black: invert a scan of dark
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
            if not len(array):
                raise ValueError(f"{path}: no images (an array of shape {array.shape}); expected at least one")
            images.extend(_unit_range(array, path))
            continue
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as image:
                images.append(_pixels(image, "L" if channels == 1 else "RGB", (width, height)))
        except (UnidentifiedImageError, OSError) as error:
            raise ValueError(f"{path}: not an image that Pillow can read ({error}); expected a PNG, JPEG or .npy file") from None
    return np.stack(images) if images else np.zeros((0, *shape), np.float32)


def _pixels(image, mode: str, size: tuple[int, int] | None = None) -> np.ndarray:
    """A Pillow image as ``(H, W, 1 or 3) float32`` in [0, 1], in ``mode`` ("L" or "RGB"), resized to
    ``size`` (width, height) if given. 16-bit grayscale is scaled by 1/65535: Pillow's own conversion to 8
    bits would clip it (a 1.5% grey, 1000 of 65535, would turn white)."""
    from PIL import Image

    if image.mode in _SIXTEEN_BIT_MODES:
        gray = Image.fromarray(np.asarray(image, np.float32) / np.float32(65535), mode="F")
        gray = gray.resize(size, Image.Resampling.BILINEAR) if size else gray
        pixels = np.asarray(gray, np.float32)[..., None]
        return pixels if mode == "L" else np.repeat(pixels, 3, axis=-1)
    image = image.convert(mode)
    image = image.resize(size, Image.Resampling.BILINEAR) if size else image
    return np.asarray(image, np.float32).reshape(image.height, image.width, -1) / np.float32(255)


def _unit_range(array: np.ndarray, path: Path) -> np.ndarray:
    """uint8 images scaled into [0, 1] by 1/255, uint16 ones by 1/65535; float images checked to be there
    already."""
    if array.dtype in (np.uint8, np.uint16):
        return array.astype(np.float32) / np.float32(np.iinfo(array.dtype).max)
    array = array.astype(np.float32)
    if array.size and not (0 <= array.min() and array.max() <= 1):
        raise ValueError(f"{path}: values in [{array.min()}, {array.max()}]; expected uint8 0..255, uint16 0..65535 or floats in [0, 1]")
    return array


def classes(path: str | Path) -> tuple[str, ...]:
    """The class names of an image folder, in label order."""
    return _folder(path)[0]
