"""How jaxtrain's steps are compiled: ``jit``, which is ``jax.jit`` with the XLA options that suit the
precision in use (``COMPILER_OPTIONS``), and ``cache_compilations``, which keeps compiled programs on disk
for the next process.

XLA:CPU hands the convolutions, matrix products and reductions of a program to the YNNPACK library
(jaxlib 0.10's default). For float32 convolutions, XLA:CPU's own (Eigen) kernels are the faster ones:
with them the CNN's training step took about two thirds of the time and ran as fast inside
``lax.scan`` as alone, while the reductions (BatchNorm's statistics and gradient) are faster
in YNNPACK than in XLA's own loops. So float32 steps keep YNNPACK's reductions and matrix products and
give it no convolution. In float64 it is the other way round, Eigen's convolutions several times slower
than YNNPACK's, so with 64-bit JAX (``jax_enable_x64``) steps compile with XLA's defaults; bfloat16
convolutions, too, are slower in Eigen. ``benchmarks/cnn_step.py`` measures the choices side by side.

The option is one of XLA:CPU's experimental ones, so it is given only to the jaxlib releases known to
have it (0.9.2 to 0.10; measured with 0.10.2); with others every step compiles with XLA's defaults.
Other backends do not read it.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jaxlib
from jax.experimental.compilation_cache import compilation_cache

# The fusion types that XLA:CPU gives to YNNPACK: XLA's default list without the convolutions.
YNN_FUSIONS = "LIBRARY_FUSION_TYPE_REDUCE,LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".")[:3] if part.isdigit())


COMPILER_OPTIONS: dict[str, str] | None = (
    {"xla_cpu_experimental_ynn_fusion_type": YNN_FUSIONS} if (0, 9, 2) <= _release(jaxlib.__version__) < (0, 11) else None
)


def jit(fn: Callable, **jit_kwargs: Any) -> Callable:
    """``jax.jit(fn, **jit_kwargs)``, compiled with ``COMPILER_OPTIONS`` unless 64-bit JAX is on.

    The choice is made at each call (and ``.lower``), so turning ``jax_enable_x64`` on or off between
    calls takes effect; each choice keeps its own compilations.
    """
    plain = jax.jit(fn, **jit_kwargs)
    if COMPILER_OPTIONS is None:  # nothing to choose between
        return plain
    tuned = jax.jit(fn, compiler_options=COMPILER_OPTIONS, **jit_kwargs)
    pick = lambda: plain if jax.config.jax_enable_x64 else tuned  # noqa: E731

    @functools.wraps(fn)
    def call(*args, **kwargs):
        return pick()(*args, **kwargs)

    call.lower = lambda *args, **kwargs: pick().lower(*args, **kwargs)
    return call


# Programs that compiled faster than this are not worth a file: a cached read costs milliseconds.
CACHE_MIN_SECONDS = 0.2


def default_cache_dir() -> Path:
    """Where ``python -m jaxtrain`` keeps compiled programs: ``$JAXTRAIN_COMPILE_CACHE``, else
    ``$XDG_CACHE_HOME/jaxtrain/xla`` (``~/.cache/jaxtrain/xla``)."""
    if os.environ.get("JAXTRAIN_COMPILE_CACHE"):
        return Path(os.environ["JAXTRAIN_COMPILE_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "jaxtrain" / "xla"


def cache_compilations(directory: str | os.PathLike | None) -> None:
    """Keeps each program that takes over ``CACHE_MIN_SECONDS`` to compile in ``directory``, so that a later
    process compiling the same program (same code, shapes, options, jax and device) loads it instead: JAX's
    persistent compilation cache, turned on (or moved to ``directory``) from this process's next compilation.
    ``None`` turns it off, whatever JAX's own settings (``JAX_COMPILATION_CACHE_DIR``) say.

    Tracing and lowering still run; README.md's compile table has what the cache saves. The files are XLA
    executables, tens to hundreds of kB each, never evicted: delete the folder to clear it. Of several
    processes, only process 0 writes.

    Example:
      >>> cache_compilations(default_cache_dir())
    """
    jax.config.update("jax_enable_compilation_cache", directory is not None)
    if directory is not None:
        jax.config.update("jax_compilation_cache_dir", os.fspath(directory))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", CACHE_MIN_SECONDS)
    compilation_cache.reset_cache()  # a cache already opened in this process would keep its folder
