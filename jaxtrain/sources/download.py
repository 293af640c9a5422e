"""Downloading a dataset's files once into a cache folder, each checked against its recorded size and
sha256: MNIST's four IDX files, from the mirror that tensorflow-datasets uses, with the checksums it records.

``mnist_files(split)`` gives the two files of a split, downloading those the cache lacks; ``fetch`` is the
download of one file. Both need no TensorFlow and no package beyond the standard library.

The cache folder is ``$JAXTRAIN_DATA``, else ``$XDG_CACHE_HOME/jaxtrain/datasets``, else
``~/.cache/jaxtrain/datasets``; MNIST goes in its ``mnist/`` subfolder. ``$JAXTRAIN_MNIST_URL`` replaces
the mirror (a folder URL ending in ``/``, ``file://`` too) for a machine that reaches another copy of the
same files. A file is written under a temporary name and renamed when it is complete and verified, so the
cache never holds a partial or unverified file, even when the download is interrupted.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import tempfile
import time
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.request import urlopen

# The CVDF mirror of http://yann.lecun.com/exdb/mnist/, as tensorflow-datasets 4.9 downloads it.
MNIST_URL = "https://storage.googleapis.com/cvdf-datasets/mnist/"
# Each file's size in bytes and sha256, as tensorflow-datasets records them (url_checksums/mnist.txt).
MNIST_FILES = {
    "train-images-idx3-ubyte.gz": (9912422, "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
    "train-labels-idx1-ubyte.gz": (28881, "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
    "t10k-images-idx3-ubyte.gz": (1648877, "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
    "t10k-labels-idx1-ubyte.gz": (4542, "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
}
_MNIST_PREFIX = {"train": "train", "test": "t10k"}
# Seconds without a byte from the server before a download gives up.
TIMEOUT_S = 60
_CHUNK = 1 << 16  # small enough that a slow connection still shows its progress


class DatasetUnavailableError(RuntimeError):
    """The data could be neither read locally nor downloaded."""


def cache_dir() -> Path:
    """The folder that holds downloaded datasets, one subfolder each.

    Returns:
      ``$JAXTRAIN_DATA``, else ``$XDG_CACHE_HOME/jaxtrain/datasets``, else ``~/.cache/jaxtrain/datasets``.

    Example:
      >>> cache_dir() / "mnist"
      PosixPath('/home/me/.cache/jaxtrain/datasets/mnist')
    """
    if os.environ.get("JAXTRAIN_DATA"):
        return Path(os.environ["JAXTRAIN_DATA"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "jaxtrain" / "datasets"


def mnist_files(split: str, folder: str | Path | None = None) -> tuple[Path, Path]:
    """MNIST's image and label IDX files of a split, downloaded into ``folder`` unless they are already there.

    Args:
      split: "train" or "test".
      folder: where the files are kept; None for ``cache_dir() / "mnist"``.

    Returns:
      The paths of the split's images and labels, e.g. ``(…/train-images-idx3-ubyte.gz,
      …/train-labels-idx1-ubyte.gz)``, both verified against ``MNIST_FILES``.

    Raises:
      DatasetUnavailableError: a file could not be downloaded, or what came differs from the recorded
        size or sha256; one line that names the URL and what to do instead.

    Example:
      >>> images, labels = mnist_files("test")
    """
    if split not in _MNIST_PREFIX:
        raise ValueError(f"split={split!r}; expected one of {tuple(_MNIST_PREFIX)}")
    folder = Path(folder) if folder is not None else cache_dir() / "mnist"
    base = os.environ.get("JAXTRAIN_MNIST_URL") or MNIST_URL
    if not base.endswith("/"):
        base += "/"
    # What a user whose machine cannot download can do instead.
    instead = (
        f"download {{train,t10k}}-{{images-idx3,labels-idx1}}-ubyte.gz from {base} into a folder "
        f"and pass --data-dir FOLDER (data_dir=)"
    )
    paths = []
    for kind in ("images-idx3", "labels-idx1"):
        name = f"{_MNIST_PREFIX[split]}-{kind}-ubyte.gz"
        size, sha256 = MNIST_FILES[name]
        paths.append(fetch(base + name, folder / name, size, sha256, instead=instead))
    return paths[0], paths[1]


def fetch(
    url: str, path: str | Path, size: int, sha256: str, *, instead: str = "", timeout: float = TIMEOUT_S
) -> Path:
    """Downloads ``url`` into ``path`` unless ``path`` already holds it, and checks its size and sha256.

    A file already at ``path`` with the right size and sha256 is used as it is, without the network; one
    that differs is downloaded again. The download goes to a temporary file beside ``path``, renamed to
    ``path`` only once complete and verified, and removed on any failure. A download of more than a few
    seconds shows its progress on stderr.

    Args:
      url: what to download, ``https://``, ``http://`` or ``file://``.
      path: where the file is kept.
      size: the file's size in bytes.
      sha256: the file's sha256, in hex.
      instead: what a user can do when the download fails, added to the message: "download … and pass …".
      timeout: seconds to wait for the server, for the connection and for each read.

    Returns:
      ``path``.

    Raises:
      DatasetUnavailableError: one line naming the URL: an HTTP error, no network, a file that differs from
        ``size`` and ``sha256``, or a folder that cannot be written.

    Example:
      >>> fetch(MNIST_URL + "t10k-labels-idx1-ubyte.gz", "mnist/t10k-labels-idx1-ubyte.gz",
      ...       *MNIST_FILES["t10k-labels-idx1-ubyte.gz"])
    """
    path = Path(path)
    if path.is_file() and path.stat().st_size == size and _sha256(path) == sha256:
        return path
    advice, alternative = (f"; instead, {instead}", f", or {instead}") if instead else ("", "")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    except OSError as error:
        raise DatasetUnavailableError(
            f"cannot write {path.parent}: {error.strerror or error}; "
            f"set JAXTRAIN_DATA to a writable folder{alternative}"
        ) from None
    try:
        with os.fdopen(handle, "wb") as out:
            got, digest = _download(url, out, size, timeout, advice)
        if got != size or digest != sha256:
            came = f"more than {size} bytes" if got > size else f"{got} bytes with sha256 {digest}"
            raise DatasetUnavailableError(
                f"{url}: {came}; expected {size} bytes with sha256 {sha256}, the recorded checksum; "
                f"nothing was kept: try again{alternative}"
            )
        os.chmod(temporary, 0o644)  # mkstemp's 0600 would keep a shared cache from its other users
        os.replace(temporary, path)
    except BaseException:  # an interrupt too: no partial file is left behind
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def _download(url: str, out, size: int, timeout: float, advice: str) -> tuple[int, str]:
    """Streams ``url`` into the open file ``out``; returns how many bytes came and their sha256.

    Reads at most ``size + 1`` bytes: enough to see that a file is too long, without filling the disk.
    """
    digest, got = hashlib.sha256(), 0
    progress = _Progress(url, size)
    done = False
    try:
        with urlopen(url, timeout=timeout) as response:
            while got <= size and (chunk := response.read(min(_CHUNK, size + 1 - got))):
                out.write(chunk)
                digest.update(chunk)
                got += len(chunk)
                progress.show(got)
        done = True
    except HTTPError as error:
        raise DatasetUnavailableError(f"could not download {url}: HTTP {error.code} {error.reason}{advice}") from None
    except URLError as error:  # no network, a name that does not resolve, a refused connection
        raise DatasetUnavailableError(f"could not download {url}: {error.reason}{advice}") from None
    except (OSError, http.client.HTTPException) as error:  # a timeout or a connection cut during the transfer
        raise DatasetUnavailableError(
            f"could not download {url}: {type(error).__name__}: {error or 'connection lost'}{advice}"
        ) from None
    finally:
        progress.end(done)
    return got, digest.hexdigest()


class _Progress:
    """One line on stderr for a download that takes a while: the URL, then how much has come.

    Nothing for the first two seconds, so that small or cached files stay quiet; on a terminal the line
    is rewritten in place, elsewhere (a log file) it is printed once and finished with the total.
    """

    _AFTER_S, _EVERY_S = 2.0, 0.5

    def __init__(self, url: str, size: int):
        self.url, self.size = url, size
        self.start = self.last = time.monotonic()
        self.shown = False
        self.tty = sys.stderr.isatty()

    def show(self, got: int) -> None:
        now = time.monotonic()
        if now - self.start < self._AFTER_S or (self.shown and (not self.tty or now - self.last < self._EVERY_S)):
            return
        if not self.shown:
            print(f"downloading {self.url} ({self.size / 1e6:.1f} MB)", end="", file=sys.stderr, flush=True)
        if self.tty:
            done = f"{got / 1e6:.1f} of {self.size / 1e6:.1f} MB"
            print(f"\rdownloading {self.url}: {done}", end="", file=sys.stderr, flush=True)
        self.shown, self.last = True, now

    def end(self, done: bool) -> None:
        if self.shown:
            print(f" done in {time.monotonic() - self.start:.0f} s" if done else "", file=sys.stderr, flush=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
