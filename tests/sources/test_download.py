"""MNIST by name without TensorFlow: the download of its IDX files into the cache, with the network faked
(jaxtrain.sources.download, reached through load_mnist and the command line)."""

import contextlib
import functools
import gzip
import hashlib
import http.server
import io
import json
import os
import re
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from jaxtrain import DatasetUnavailableError, load, load_mnist
from jaxtrain.sources import download

URL = download.MNIST_URL


def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, ">u4").tobytes()
    return header + array.astype(np.uint8).tobytes()


def _write_mirror(folder: Path, n_train: int = 20, n_test: int = 10) -> dict:
    """MNIST's four files, small, gzipped as the mirror serves them; returns what they hold, by split."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    data = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            (folder / f"{prefix}-{kind}-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(array), mtime=0))
        data[split] = (images, labels)
    return data


def _checksums(folder: Path) -> dict:
    """The size and sha256 of each of the mirror's files, in the form of download.MNIST_FILES."""
    return {name: (len(raw := (folder / name).read_bytes()), hashlib.sha256(raw).hexdigest())
            for name in download.MNIST_FILES}


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A fake network: urlopen serves the files of a local folder at MNIST_URL and records each request.

    The cache goes to tmp_path/cache ($JAXTRAIN_DATA) and the recorded checksums are the local files'.
    """
    folder = tmp_path / "mirror"
    data = _write_mirror(folder)
    monkeypatch.setattr(download, "MNIST_FILES", _checksums(folder))
    monkeypatch.setenv("JAXTRAIN_DATA", str(tmp_path / "cache"))
    monkeypatch.delenv("JAXTRAIN_MNIST_URL", raising=False)
    requests = []

    def urlopen(url, timeout=None):
        requests.append(url)
        assert url.startswith(URL) and timeout == download.TIMEOUT_S
        return io.BytesIO((folder / url[len(URL):]).read_bytes())

    monkeypatch.setattr(download, "urlopen", urlopen)
    return folder, data, requests


def _files(folder: Path) -> list[str]:
    """Every file in ``folder``, hidden ones (a temporary download) included."""
    return sorted(path.name for path in folder.iterdir()) if folder.is_dir() else []


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message and message
    return message


@pytest.mark.quick
def test_load_mnist_downloads_the_split_once_into_the_cache(mirror, tmp_path, monkeypatch):
    folder, data, requests = mirror
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # an import of it would fail: none is needed
    images, labels = load_mnist("train")
    np.testing.assert_array_equal(images[..., 0], data["train"][0] / np.float32(255))
    np.testing.assert_array_equal(labels, data["train"][1])
    assert images.shape == (20, 28, 28, 1) and labels.dtype == np.int32
    assert requests == [URL + "train-images-idx3-ubyte.gz", URL + "train-labels-idx1-ubyte.gz"]
    cache = tmp_path / "cache" / "mnist"
    assert _files(cache) == ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]
    assert (cache / "train-images-idx3-ubyte.gz").read_bytes() == (folder / "train-images-idx3-ubyte.gz").read_bytes()
    np.testing.assert_array_equal(load_mnist("train")[0], images)  # the second load reads the cache alone
    np.testing.assert_array_equal(load("mnist", "train")[1], labels)  # and so does the loader by name
    assert len(requests) == 2
    assert load_mnist("test")[0].shape == (10, 28, 28, 1) and len(requests) == 4


def test_a_cached_file_that_differs_from_its_checksum_is_downloaded_again(mirror, tmp_path):
    folder, data, requests = mirror
    load_mnist("test")
    cached = tmp_path / "cache" / "mnist" / "t10k-labels-idx1-ubyte.gz"
    cached.write_bytes(gzip.compress(_idx_bytes(np.zeros(10, np.uint8))))  # same file name, other contents
    np.testing.assert_array_equal(load_mnist("test")[1], data["test"][1])
    assert requests[2:] == [URL + "t10k-labels-idx1-ubyte.gz"]
    assert cached.read_bytes() == (folder / "t10k-labels-idx1-ubyte.gz").read_bytes()


def test_a_file_that_differs_from_the_recorded_checksum_is_refused_and_not_kept(mirror, tmp_path, monkeypatch):
    folder, _, _ = mirror
    size, _ = download.MNIST_FILES["train-images-idx3-ubyte.gz"]
    monkeypatch.setitem(download.MNIST_FILES, "train-images-idx3-ubyte.gz", (size, "ab" * 32))
    with pytest.raises(DatasetUnavailableError) as error:
        load_mnist("train")
    got = hashlib.sha256((folder / "train-images-idx3-ubyte.gz").read_bytes()).hexdigest()
    assert _one_line(error) == (
        f"{URL}train-images-idx3-ubyte.gz: {size} bytes with sha256 {got}; expected {size} bytes with sha256 "
        f"{'ab' * 32}, the recorded checksum; nothing was kept: try again, or download "
        f"{{train,t10k}}-{{images-idx3,labels-idx1}}-ubyte.gz from {URL} into a folder and pass --data-dir FOLDER "
        f"(data_dir=)"
    )
    assert _files(tmp_path / "cache" / "mnist") == []  # neither the file nor a temporary one


def test_a_file_longer_than_recorded_is_refused_without_reading_it_all(mirror, tmp_path, monkeypatch):
    _, _, _ = mirror
    monkeypatch.setitem(download.MNIST_FILES, "train-labels-idx1-ubyte.gz", (5, "00" * 32))
    with pytest.raises(DatasetUnavailableError) as error:
        load_mnist("train")
    assert _one_line(error).startswith(f"{URL}train-labels-idx1-ubyte.gz: more than 5 bytes; expected 5 bytes")
    assert _files(tmp_path / "cache" / "mnist") == ["train-images-idx3-ubyte.gz"]


@pytest.mark.parametrize(
    "failure, said",
    [
        (urllib.error.HTTPError(URL + "t10k-images-idx3-ubyte.gz", 404, "Not Found", None, None), "HTTP 404 Not Found"),
        (urllib.error.URLError(OSError(-3, "Temporary failure in name resolution")),
         "[Errno -3] Temporary failure in name resolution"),
        (TimeoutError("timed out"), "TimeoutError: timed out"),
    ],
)
def test_no_network_or_an_http_error_says_what_to_do_in_one_line(mirror, tmp_path, monkeypatch, failure, said):
    def urlopen(url, timeout=None):
        raise failure

    monkeypatch.setattr(download, "urlopen", urlopen)
    with pytest.raises(DatasetUnavailableError) as error:
        load_mnist("test")
    assert _one_line(error) == (
        f"could not download {URL}t10k-images-idx3-ubyte.gz: {said}; instead, download "
        f"{{train,t10k}}-{{images-idx3,labels-idx1}}-ubyte.gz from {URL} into a folder and pass --data-dir FOLDER "
        f"(data_dir=)"
    )
    assert _files(tmp_path / "cache" / "mnist") == []


def test_a_connection_cut_during_the_transfer_leaves_no_file(mirror, tmp_path, monkeypatch):
    folder, _, _ = mirror

    class Cut(io.BytesIO):
        def read(self, n=-1):
            if self.tell():
                raise ConnectionResetError(104, "Connection reset by peer")
            return super().read(100)

    monkeypatch.setattr(download, "urlopen", lambda url, timeout=None: Cut((folder / url[len(URL):]).read_bytes()))
    monkeypatch.setattr(download, "_CHUNK", 100)
    with pytest.raises(DatasetUnavailableError) as error:
        load_mnist("train")
    assert "train-images-idx3-ubyte.gz: ConnectionResetError: [Errno 104] Connection reset by peer" in _one_line(error)
    assert _files(tmp_path / "cache" / "mnist") == []


def test_a_data_dir_is_read_without_the_network(mirror, tmp_path):
    folder, data, requests = mirror
    np.testing.assert_array_equal(load_mnist("test", folder)[1], data["test"][1])
    assert requests == [] and not (tmp_path / "cache").exists()


def test_the_cache_folder_and_the_mirror_come_from_the_environment(mirror, tmp_path, monkeypatch):
    folder, _, _ = mirror
    assert download.cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("JAXTRAIN_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert download.cache_dir() == tmp_path / "xdg" / "jaxtrain" / "datasets"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert download.cache_dir() == tmp_path / "home" / ".cache" / "jaxtrain" / "datasets"
    # A mirror of one's own, here a local folder: urllib's own urlopen, no fake.
    monkeypatch.setattr(download, "urlopen", urllib.request.urlopen)
    monkeypatch.setenv("JAXTRAIN_MNIST_URL", folder.as_uri())  # no trailing slash: one is added
    images, _ = load_mnist("test")
    assert images.shape == (10, 28, 28, 1)
    assert _files(tmp_path / "home" / ".cache" / "jaxtrain" / "datasets" / "mnist") == [
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]


class _Mirror(http.server.SimpleHTTPRequestHandler):
    """Serves a folder over HTTP, records each path asked for, and logs nothing."""

    def log_message(self, *args):
        self.server.paths.append(self.path)


@contextlib.contextmanager
def _serve(folder: Path):
    """A local HTTP server on 127.0.0.1 and a free port, serving ``folder``: the network, faked honestly."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Mirror, directory=str(folder)))
    server.paths = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# The command line with the recorded checksums replaced by those of the test's files: the only difference
# from `python -m jaxtrain`.
_LAUNCH = (
    "import json, sys; from jaxtrain.sources import download; download.MNIST_FILES.update(json.loads(sys.argv[1])); "
    "from jaxtrain.cli import main; sys.exit(main(sys.argv[2:]))"
)


def test_train_on_mnist_by_name_downloads_trains_and_reports_accuracy(tmp_path):
    folder = tmp_path / "mirror"
    _write_mirror(folder, n_train=64, n_test=32)
    checksums = json.dumps(_checksums(folder))
    command = [sys.executable, "-c", _LAUNCH, checksums, "train", "--dataset", "mnist", "--epochs", "1"]
    with _serve(folder) as server:
        url = f"http://127.0.0.1:{server.server_port}/"
        env = {**os.environ, "JAXTRAIN_DATA": str(tmp_path / "cache"), "JAXTRAIN_MNIST_URL": url}
        done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        accuracy = re.search(r"^Accuracy on the 32 test images: (\d+\.\d+)%$", done.stdout, re.MULTILINE)
        assert accuracy and 0 <= float(accuracy[1]) <= 100, done.stdout
        assert sorted(server.paths) == sorted(f"/{name}" for name in download.MNIST_FILES)
        assert _files(tmp_path / "cache" / "mnist") == sorted(download.MNIST_FILES)
        # `python -m jaxtrain` itself, with MNIST's recorded checksums, refuses the test's files in one line
        # (a file of 21 bytes, so that the line is known in advance).
        (folder / "train-images-idx3-ubyte.gz").write_bytes(b"changed on the mirror")
        env["JAXTRAIN_DATA"] = str(tmp_path / "fresh")
        refused = subprocess.run([sys.executable, "-m", "jaxtrain", *command[4:]], cwd=tmp_path, env=env,
                                 capture_output=True, text=True, timeout=300)
    assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert refused.stderr.startswith(f"jaxtrain train: error: {url}train-images-idx3-ubyte.gz: 21 bytes with sha256 ")
    assert "expected 9912422 bytes with sha256 440fcabf" in refused.stderr and "--data-dir FOLDER" in refused.stderr
    assert _files(tmp_path / "fresh" / "mnist") == []


def test_a_download_that_takes_a_while_shows_its_progress_on_stderr(mirror, monkeypatch, capsys):
    monkeypatch.setattr(download._Progress, "_AFTER_S", 0)
    load_mnist("test")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"downloading {URL}t10k-images-idx3-ubyte.gz (0.0 MB)")
    assert all(line.endswith(" s") and " done in " in line for line in lines)
    load_mnist("test")
    assert capsys.readouterr().err == ""  # nothing to download, nothing said
