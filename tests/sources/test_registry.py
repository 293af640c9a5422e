import gzip

import numpy as np
import pytest

from jaxtrain import load_digits, load_folder, load_mnist, load_npz
from jaxtrain.sources.checks import DatasetInfo
from jaxtrain.sources.files import FOLDER_TEST_FRACTION
from jaxtrain.sources.registry import info, load, unknown_name

pytestmark = pytest.mark.quick  # fast: the whole file is in the quick tier


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


# Bad input: each case stops at load time with one line that names the file.

_IDX_TYPES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D}


def _write_idx(path, array, gz=False):
    header = bytes([0, 0, _IDX_TYPES[array.dtype], array.ndim]) + np.array(array.shape, ">u4").tobytes()
    raw = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def _one_line_error(call, *args):
    with pytest.raises(ValueError) as info:
        call(*args)
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    return message


@pytest.mark.parametrize(
    "labels, described",
    [
        (np.array([3, 10, 0, 255, 10], np.uint8), "3 of 5 outside 0..9 (values 10, 255)"),
        (np.array([3, -1, 0, 9, 1], np.int8), "1 of 5 outside 0..9 (values -1)"),  # not class 9
    ],
)
def test_labels_outside_the_classes_are_refused_naming_the_file(tmp_path, labels, described):
    _write_mnist(tmp_path)
    path = _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels, gz=True)
    message = _one_line_error(load_mnist, "train", tmp_path)
    assert message == f"labels ({path}): {described}; expected class indices in 0..9"


def test_float_labels_are_refused(tmp_path):
    _write_mnist(tmp_path)
    path = _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([1.5, 2, 3], np.float32), gz=True)
    assert _one_line_error(load_mnist, "test", tmp_path) == (
        f"labels ({path}): dtype float32; expected integer class indices in 0..9"
    )


def test_a_truncated_gzip_file_is_named(tmp_path):
    _write_mnist(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-30])
    assert _one_line_error(load_mnist, "train", tmp_path) == (
        f"IDX file ({path}): truncated gzip data; expected a complete .gz file (download it again)"
    )


def test_a_gzip_file_with_a_wrong_crc_is_named(tmp_path):
    _write_mnist(tmp_path)
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(path.read_bytes())
    raw[-8] ^= 0xFF  # the CRC-32 of the gzip trailer
    path.write_bytes(bytes(raw))
    assert _one_line_error(load_mnist, "test", tmp_path) == (
        f"IDX file ({path}): corrupt gzip data (CRC check failed); expected a complete .gz file (download it again)"
    )


def test_images_of_another_size_are_refused_at_load_time(tmp_path):
    _write_mnist(tmp_path)
    path = _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((3, 20, 20), np.uint8), gz=True)
    assert _one_line_error(load_mnist, "test", tmp_path) == (
        f"images ({path}): shape (3, 20, 20); expected (N, 28, 28), MNIST's images"
    )


def test_images_out_of_range_and_empty_splits_are_refused(tmp_path):
    _write_mnist(tmp_path)
    path = _write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.full((5, 28, 28), 300, np.float32), gz=True)
    message = _one_line_error(load_mnist, "train", tmp_path)
    assert message.startswith(f"images ({path}): 3920 of 3920 values outside [0, 1] (min 1.17")
    assert message.endswith("; expected floats in [0, 1] (uint8 pixels: images / 255)")
    images = _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((0, 28, 28), np.uint8), gz=True)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(0, np.uint8), gz=True)
    assert _one_line_error(load_mnist, "test", tmp_path) == (
        f"images ({images}): shape (0, 28, 28, 1), no examples; expected at least one"
    )


def test_labels_and_images_must_pair_up(tmp_path):
    _write_mnist(tmp_path, gz=False)
    path = _write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(4, np.uint8))
    assert _one_line_error(load_mnist, "train", tmp_path) == (
        f"labels ({path}): 4 labels for the 5 images of train-images-idx3-ubyte; expected one label per image"
    )


def test_digits_refuses_a_split_left_empty_and_a_negative_seed():
    assert _one_line_error(load_digits, "test", 0, 1e-4) == (
        "test_fraction=0.0001; expected a fraction that leaves both splits non-empty"
    )
    assert _one_line_error(load_digits, "train", -1) == "seed=-1; expected an integer >= 0"


def test_validate_accepts_good_arrays_and_names_each_problem():
    from jaxtrain.sources.checks import validate

    rng = np.random.default_rng(0)
    images, labels = rng.random((6, 8, 8, 1), np.float32), np.arange(6) % 3
    validate(images, labels, 3, "mine")  # no error
    assert _one_line_error(validate, (images * 255).astype(np.uint8), labels, 3, "mine") == (
        "images (mine): dtype uint8; expected floats in [0, 1] (uint8 pixels: images / 255)"
    )
    nan = images.copy()
    nan[0, 0, 0, 0] = np.nan
    assert _one_line_error(validate, nan, labels, 3, "mine") == (
        "images (mine): 1 of 384 values outside [0, 1] (min nan, max nan); expected floats in [0, 1]"
    )
    assert _one_line_error(validate, images, labels, 2, "mine") == (
        "labels (mine): 2 of 6 outside 0..1 (values 2); expected class indices in 0..1"
    )
    assert _one_line_error(validate, images, labels[:, None], 3, "mine") == (
        "labels (mine): shape (6, 1); expected (N,), one class index per example"
    )
    assert _one_line_error(validate, images, labels[:5], 3, "mine") == (
        "labels (mine): 5 labels for 6 images; expected one label per image"
    )
    assert _one_line_error(validate, images[:0], labels[:0], 3, "mine") == (
        "images (mine): shape (0, 8, 8, 1), no examples; expected at least one"
    )
    assert _one_line_error(validate, images, labels, 0, "mine") == "num_classes=0; expected a positive integer"
    many = np.arange(6) + 10
    assert "(values 10, 11, 12, 13, 14, … (6 distinct))" in _one_line_error(validate, images, many, 3, "mine")


def test_check_splits_refuses_test_images_of_another_shape():
    from jaxtrain.sources.checks import check_splits

    train, test = np.zeros((4, 28, 28, 1), np.float32), np.zeros((3, 8, 8, 1), np.float32)
    check_splits(train, train[:2])  # no error
    assert _one_line_error(check_splits, train, test, "a", "b") == (
        "test images (b): shape (3, 8, 8, 1); expected (3, 28, 28, 1), the image shape of the training images (a)"
    )
    assert _one_line_error(check_splits, train, train.astype(np.float64), "a", "b") == (
        "test images (b): dtype float64; expected float32, the dtype of the training images (a)"
    )


def test_a_name_tensorflow_datasets_does_not_know_says_what_to_do():
    pytest.importorskip("tensorflow_datasets")
    assert unknown_name("cifar10") is None and unknown_name("folder:x") is None and unknown_name("npz:x.npz") is None
    expected = unknown_name("fashion_mnistt")
    assert "\n" not in expected
    assert "'fashion_mnistt' is not a tensorflow-datasets name" in expected
    assert "folder:PATH (an image folder) or npz:FILE" in expected and "tfds.list_builders()" in expected
    assert unknown_name("folder:") == "folder:PATH, a path after folder:"


def _write_images(folder, classes, n=4, size=(10, 12), mode="L", seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    for name in classes:
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            pixels = rng.integers(0, 256, (size[1], size[0], *([3] if mode == "RGB" else [])), dtype=np.uint8)
            Image.fromarray(pixels, mode).save(folder / name / f"{i}.png")


def test_an_image_folder_with_train_and_test_loads_as_torchvisions_image_folder(tmp_path):
    _write_images(tmp_path / "train", ["dog", "cat"], n=3)
    _write_images(tmp_path / "test", ["cat", "dog"], n=2, seed=1)
    images, labels = load(f"folder:{tmp_path}", "train")
    assert images.shape == (6, 12, 10, 1) and images.dtype == np.float32  # grayscale: one channel
    assert labels.tolist() == [0, 0, 0, 1, 1, 1]  # sorted class names: cat is 0, as in torchvision
    from PIL import Image

    first = np.asarray(Image.open(tmp_path / "train" / "cat" / "0.png"), np.float32) / 255
    np.testing.assert_array_equal(images[0, ..., 0], first)
    assert load_folder(tmp_path, "test")[0].shape == (4, 12, 10, 1)
    assert info(f"folder:{tmp_path}") == DatasetInfo(2, ("cat", "dog"))


def test_an_image_folder_of_classes_alone_holds_a_seeded_part_out_for_testing(tmp_path):
    _write_images(tmp_path, ["a", "b", "c"], n=5)
    _write_images(tmp_path, ["c"], n=1, mode="RGB")  # one color image: the whole folder is read as RGB
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    train, test = load_folder(tmp_path, "train"), load_folder(tmp_path, "test")
    assert train[0].shape[1:] == (12, 10, 3) and len(train[1]) + len(test[1]) == 15
    assert len(test[1]) == round(15 * FOLDER_TEST_FRACTION)
    pairs = lambda data: {(img.tobytes(), int(y)) for img, y in zip(*data)}  # noqa: E731
    assert not pairs(train) & pairs(test)  # disjoint
    np.testing.assert_array_equal(load_folder(tmp_path, "test")[0], test[0])  # and the same every time


def test_an_image_folder_is_refused_in_one_line_for_mixed_sizes_and_empty_classes(tmp_path):
    _write_images(tmp_path, ["a"], n=2)
    _write_images(tmp_path, ["b"], n=1, size=(11, 12))
    message = _one_line_error(load_folder, tmp_path)
    assert message.startswith(f"image ({tmp_path / 'b' / '0.png'}): 11×12 pixels (width×height); expected 10×12")
    assert message.endswith("resize the images to one size")
    (tmp_path / "c").mkdir()
    with pytest.raises(FileNotFoundError, match="class folder .*c has no images"):
        load_folder(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a folder"):
        load(f"folder:{tmp_path / 'nowhere'}", "train")


def test_an_npz_file_loads_with_its_classes(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "data.npz"
    np.savez(path, x_train=rng.integers(0, 256, (20, 6, 6), dtype=np.uint8), y_train=np.arange(20) % 4,
             x_test=rng.random((5, 6, 6, 1)), y_test=np.array([0, 1, 2, 3, 5]))
    images, labels = load(f"npz:{path}", "train")
    assert images.shape == (20, 6, 6, 1) and images.dtype == np.float32 and images.max() <= 1
    assert labels.dtype == np.int32 and info(f"npz:{path}") == DatasetInfo(6)
    assert load_npz(path, "test")[0].shape == (5, 6, 6, 1)
    named = tmp_path / "named.npz"
    np.savez(named, x_train=np.zeros((2, 3, 3)), y_train=[0, 1], x_test=np.zeros((1, 3, 3)), y_test=[1],
             class_names=np.array(["no", "yes"]))
    assert info(f"npz:{named}") == DatasetInfo(2, ("no", "yes"))
    np.savez(tmp_path / "bad.npz", x_train=np.zeros((2, 3, 3)), y=np.zeros(2))
    assert _one_line_error(load_npz, tmp_path / "bad.npz") == (
        f"npz file ({tmp_path / 'bad.npz'}): no y_train, x_test, y_test (it has x_train, y); expected x_train, y_train, x_test, y_test"
    )
