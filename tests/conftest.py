import atexit
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import pytest

from jaxtrain.parallel.compiler import CACHE_MIN_SECONDS, cache_compilations

# The checkout, for the files that are not installed (examples/, README.md, docs/, benchmarks/): by default the
# folder above tests/. CI runs this suite against the installed package from outside the checkout and names the
# checkout with JAXTRAIN_REPO; JAXTRAIN_TEST_INSTALLED=1 then makes test_package.py assert that the package
# imported is not the source tree.
ROOT = Path(os.environ.get("JAXTRAIN_REPO") or Path(__file__).resolve().parents[1]).resolve()
MNIST_DIR = ROOT.parent / "shared" / "data" / "mnist"

# One compilation cache for the whole session, in-process and in the command lines that tests start, so
# that a program compiled by one test loads in the next and nothing is written to the user's cache.
_CACHE = tempfile.mkdtemp(prefix="jaxtrain-compile-cache-")
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
os.environ["JAXTRAIN_COMPILE_CACHE"] = _CACHE
cache_compilations(_CACHE)
# The benchmark's child processes, which the command line's flag does not reach, through JAX's own settings.
os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = str(CACHE_MIN_SECONDS)


def pytest_configure(config):
    # Also in pyproject.toml; here too, so that `-m quick` is known however pytest finds its configuration.
    config.addinivalue_line("markers", "quick: a fast tier that covers every module (pytest -m quick)")


_compiles = [0]


def _count(event: str, duration: float, **kwargs) -> None:
    if event == "/jax/core/compile/backend_compile_duration":  # loads from the compilation cache included
        _compiles[0] += 1


jax.monitoring.register_event_duration_secs_listener(_count)


@contextlib.contextmanager
def _count_compiles():
    start = _compiles[0]
    yield lambda: _compiles[0] - start


@pytest.fixture
def count_compiles():
    """Counts XLA compilations inside a block, loads from the compilation cache included:
    ``with count_compiles() as n: ...; n()``."""
    return _count_compiles


@pytest.fixture
def mnist_dir() -> Path:
    """The real MNIST IDX folder beside the checkout; the test is skipped where it is absent."""
    if not MNIST_DIR.is_dir():
        pytest.skip(f"{MNIST_DIR} not found")
    return MNIST_DIR


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


@pytest.fixture
def x64():
    """64-bit JAX for one test, restored afterwards."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)


@pytest.fixture
def run_cli():
    """Runs ``python -m jaxtrain ARGS...`` in a fresh process: ``run_cli("train", ...)``.

    It runs in an empty folder, not the checkout, so that ``python -m`` imports the installed package rather
    than the source tree beside it; relative paths in ARGS are therefore relative to that folder.
    """
    outside = tempfile.mkdtemp(prefix="jaxtrain-cwd-")

    def run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "jaxtrain", *args]
        return subprocess.run(command, cwd=outside, capture_output=True, text=True, timeout=timeout)

    yield run
    shutil.rmtree(outside, ignore_errors=True)


@pytest.fixture
def configs(monkeypatch):
    """The Configs that the train command would run, captured without running them."""
    from jaxtrain import experiment

    seen = []
    monkeypatch.setattr(experiment, "run", lambda config, **_: seen.append(config) or {})
    return seen
