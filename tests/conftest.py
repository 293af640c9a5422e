import contextlib
from pathlib import Path

import jax
import pytest

MNIST_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"

_compiles = [0]


def _count(event: str, duration: float, **kwargs) -> None:
    if event == "/jax/core/compile/backend_compile_duration":
        _compiles[0] += 1


jax.monitoring.register_event_duration_secs_listener(_count)


@contextlib.contextmanager
def count_compiles():
    """Counts XLA compilations inside the block: ``with count_compiles() as n: ...; n()``."""
    start = _compiles[0]
    yield lambda: _compiles[0] - start


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
