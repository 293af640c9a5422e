"""read_idx: MNIST's IDX files, gzipped or not, and a damaged one named in one line (jaxtrain.sources.idx)."""

import gzip

import numpy as np
import pytest

from jaxtrain import read_idx

pytestmark = pytest.mark.quick  # fast: the whole file is in the quick tier


def _idx_bytes(array: np.ndarray) -> bytes:
    types = {np.uint8: 0x08, np.int32: 0x0C, np.float32: 0x0D}
    header = bytes([0, 0, types[array.dtype.type], array.ndim]) + np.array(array.shape, ">u4").tobytes()
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


@pytest.mark.parametrize("array", [np.arange(24, dtype=np.uint8).reshape(2, 3, 4), np.array([-5, 7], np.int32),
                                   np.array([[1.5, -2.0]], np.float32)])
def test_read_idx_round_trips_each_type(tmp_path, array):
    (tmp_path / "a").write_bytes(_idx_bytes(array))
    (tmp_path / "a.gz").write_bytes(gzip.compress(_idx_bytes(array)))
    for name in ("a", "a.gz"):
        out = read_idx(tmp_path / name)
        assert out.dtype == array.dtype and out.dtype.isnative
        np.testing.assert_array_equal(out, array)


def test_read_idx_rejects_a_bad_file(tmp_path):
    (tmp_path / "bad").write_bytes(b"PK\x03\x04rest")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(_idx_bytes(np.zeros((4, 2), np.uint8))[:-3])
    with pytest.raises(ValueError, match="asks for"):
        read_idx(tmp_path / "short")


def test_an_idx_header_cut_short_is_named(tmp_path):
    path = tmp_path / "short"
    path.write_bytes(bytes([0, 0, 0x08, 3, 0, 0, 0, 5]))
    with pytest.raises(ValueError) as error:
        read_idx(path)
    assert str(error.value) == f"IDX file ({path}): 8 bytes, cut inside its header; expected 16 header bytes for 3 dimensions"
