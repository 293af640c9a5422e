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

A float32 program with convolutions also compiles with XLA:CPU's older fusion emitters
(``CONVOLUTION_OPTIONS``): XLA compiled the CNN's step in about 60% of the time with them and the step ran
as fast, while the MLP's steps, whose time is in their fusions, ran markedly slower, so programs without
convolutions keep the newer ones (``benchmarks/compile_time.py`` measures both). ``jit`` looks at each
program once, at its first call.

The YNNPACK option is one of XLA:CPU's experimental ones, so both options are given only to the jaxlib
releases known to have it (0.9.2 to 0.10; measured with 0.10.2); with others every step compiles with
XLA's defaults. Other backends do not read them.
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


CONVOLUTION_OPTIONS: dict[str, Any] | None = COMPILER_OPTIONS and {**COMPILER_OPTIONS, "xla_cpu_use_fusion_emitters": False}


def has_convolution(jaxpr: Any) -> bool:
    """Whether a (closed) jaxpr convolves anywhere, in its sub-jaxprs (loops, calls, gradients) too."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "conv_general_dilated":
            return True
        for value in eqn.params.values():
            for sub in value if isinstance(value, tuple | list) else (value,):
                if hasattr(sub, "eqns") or hasattr(getattr(sub, "jaxpr", None), "eqns"):
                    if has_convolution(sub):
                        return True
    return False


def jit(fn: Callable, **jit_kwargs: Any) -> Callable:
    """``jax.jit(fn, **jit_kwargs)``, compiled with ``COMPILER_OPTIONS`` (``CONVOLUTION_OPTIONS`` for a
    program with convolutions) unless 64-bit JAX is on.

    The choice is made at each call (and ``.lower``), so turning ``jax_enable_x64`` on or off between
    calls takes effect; each choice keeps its own compilations. Whether a program convolves depends on
    its arguments' structure (the model and its dtype are static parts of the state), which is looked at
    once: the first call of a structure traces it for the choice, and that trace serves the compilation.
    """
    plain = jax.jit(fn, **jit_kwargs)
    if COMPILER_OPTIONS is None:  # nothing to choose between
        return plain
    tuned = jax.jit(fn, compiler_options=COMPILER_OPTIONS, **jit_kwargs)
    convolutional = jax.jit(fn, compiler_options=CONVOLUTION_OPTIONS, **jit_kwargs)
    chosen: dict[Any, Callable] = {}  # the arguments' tree structure → the jit that compiles it

    def pick(args: tuple, kwargs: dict) -> Callable:
        if jax.config.jax_enable_x64:
            return plain
        structure = jax.tree.structure((args, kwargs))
        if structure not in chosen:
            convolves = has_convolution(convolutional.trace(*args, **kwargs).jaxpr)
            chosen[structure] = convolutional if convolves else tuned
        return chosen[structure]

    @functools.wraps(fn)
    def call(*args, **kwargs):
        return pick(args, kwargs)(*args, **kwargs)

    call.lower = lambda *args, **kwargs: pick(args, kwargs).lower(*args, **kwargs)
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
