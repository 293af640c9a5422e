"""The IDX file format of MNIST (http://yann.lecun.com/exdb/mnist/): ``read_idx`` reads one file, gzipped or
not, into a numpy array, and names the file in one line when it is damaged.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

# The element type byte of an IDX header (http://yann.lecun.com/exdb/mnist/).
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Reads one IDX file, gzipped or not, into an array of the shape and type its header gives.

    Args:
      path: the file, e.g. ``train-labels-idx1-ubyte`` or ``train-labels-idx1-ubyte.gz``.

    Returns:
      The array, in native byte order.

    Raises:
      ValueError: the file is a damaged gzip file, not an IDX file, or shorter or longer than its header
        says; the one-line message names the file.

    Example:
      >>> read_idx("mnist/t10k-labels-idx1-ubyte.gz").shape
      (10000,)
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = _gunzip(raw, path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"IDX file ({path}): header {raw[:4].hex() or 'empty'}, not an IDX file; expected 0000 <type> <ndim>")
    ndim = raw[3]
    offset = 4 + 4 * ndim
    if len(raw) < offset:
        raise ValueError(f"IDX file ({path}): {len(raw)} bytes, cut inside its header; expected {offset} header bytes for {ndim} dimensions")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = offset + math.prod(shape) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(f"IDX file ({path}): {len(raw)} bytes, but the header's shape {shape} asks for {expected}; expected a complete file")
    return np.frombuffer(raw, dtype, offset=offset).reshape(shape).astype(dtype.newbyteorder("="))


def _gunzip(raw: bytes, path: Path) -> bytes:
    """``gzip.decompress``, with a damaged file reported in one line that names it."""
    try:
        return gzip.decompress(raw)
    except EOFError:
        problem = "truncated gzip data"
    except (zlib.error, OSError) as error:  # gzip.BadGzipFile is an OSError: a CRC or length check failed
        problem = f"corrupt gzip data ({error})"
    raise ValueError(f"IDX file ({path}): {problem}; expected a complete .gz file (download it again)") from None
