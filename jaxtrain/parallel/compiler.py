"""How jaxtrain's steps are compiled: ``jit``, which is ``jax.jit`` with the XLA options that suit the
program and the precision in use (``compiler_options``), and ``cache_compilations``, which keeps compiled
programs on disk for the next process.

XLA:CPU hands the convolutions, matrix products and reductions of a program to the YNNPACK library
(jaxlib's default since 0.10). For float32 convolutions, XLA:CPU's own (Eigen) kernels are the faster ones:
with them the CNN's training step took about two thirds of the time and ran as fast inside
``lax.scan`` as alone, while the reductions (BatchNorm's statistics and gradient) are faster
in YNNPACK than in XLA's own loops. So float32 steps keep YNNPACK's reductions and matrix products and
give it no convolution (``YNN_OPTION``). In float64 it is the other way round, Eigen's convolutions several
times slower than YNNPACK's, so with 64-bit JAX (``jax_enable_x64``) steps compile with XLA's defaults;
bfloat16 convolutions, too, are slower in Eigen. ``benchmarks/cnn_step.py`` measures the choices side by side.

A float32 program with convolutions also compiles with XLA:CPU's older fusion emitters
(``OLDER_EMITTERS``) where XLA still has them (jaxlib 0.10; 0.12 has only the newer ones): XLA compiled the
CNN's step in about 60% of the time with them and the step ran as fast, while the MLP's steps, whose time is
in their fusions, ran markedly slower, so programs without convolutions keep the newer ones.
``benchmarks/compile_time.py`` measures the options by version; docs/compiler.md has its tables.

Both options are experimental ones of XLA:CPU, which come and go between jaxlib releases, so each is given
only where the installed XLA accepts it (``accepts``, a probe at the first compilation); where it does not,
the program compiles as if the option had not been asked for, and ``compiler_options`` says which were
kept. Other backends do not read them.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import logging
import os
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.experimental.compilation_cache import compilation_cache

_log = logging.getLogger(__name__)

# The fusion types that XLA:CPU gives to YNNPACK: XLA's default list without the convolutions.
YNN_FUSIONS = "LIBRARY_FUSION_TYPE_REDUCE,LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"
# For every float32 program: convolutions in XLA's own kernels, products and reductions in YNNPACK.
YNN_OPTION: dict[str, Any] = {"xla_cpu_experimental_ynn_fusion_type": YNN_FUSIONS}
# For float32 programs with convolutions: XLA:CPU's older fusion emitters, which compile them faster.
OLDER_EMITTERS: dict[str, Any] = {"xla_cpu_use_fusion_emitters": False}


@functools.cache
def accepts(name: str, value: Any) -> bool:
    """Whether the installed XLA accepts compiler option ``name`` set to ``value``: a one-line program
    compiles with it on the default backend. XLA refuses an option it does not know and a value it cannot
    parse, at compilation, so this is asked once per option and process, at the first step's compilation
    (a compilation of its own); a refusal is logged at INFO level.

    Args:
      name: an XLA option (``DebugOptions``' field), such as ``"xla_cpu_use_fusion_emitters"``.
      value: its value, as ``jax.jit``'s ``compiler_options`` takes it.

    Returns:
      True where the program compiled.

    Example:
      >>> accepts("xla_cpu_use_fusion_emitters", False)  # jaxlib 0.10: True; 0.12: False
    """
    try:
        _probe({name: value})
    except RuntimeError as error:  # jax.errors.JaxRuntimeError: "No such compile option", "not a valid enum value"
        _log.info("XLA refuses the compiler option %s=%r, so jaxtrain compiles without it: %s", name, value, error)
        return False
    return True


def _probe(options: dict[str, Any]) -> None:
    """Compiles a one-line program with ``options``; XLA raises a RuntimeError at one it refuses."""
    jax.jit(lambda x: x + 1, compiler_options=options).lower(np.float32(0)).compile()


@functools.cache
def _all_accepted() -> bool:
    """Whether XLA accepts every option of ``YNN_OPTION`` and ``OLDER_EMITTERS`` together: one probe, a
    program of its own, where probing each would compile one per option."""
    try:
        _probe({**YNN_OPTION, **OLDER_EMITTERS})
    except RuntimeError:
        return False  # one of them refused: each is probed on its own, and a refusal logged
    return True


def compiler_options(convolutions: bool) -> dict[str, Any]:
    """The options that ``jit`` gives a float32 program (one ``with convolutions`` or without) on the
    installed XLA: ``YNN_OPTION``, and ``OLDER_EMITTERS`` for a program with convolutions, each where XLA
    accepts it (``accepts``); those it refuses are left out, the rest are kept.

    Args:
      convolutions: whether the program convolves (``has_convolution``).

    Returns:
      The options, ``{}`` where XLA accepts none of them, and off the CPU.
    """
    if jax.default_backend() != "cpu":
        return {}  # XLA:CPU's options, which other backends do not read: no probe to compile for them
    wanted = {**YNN_OPTION, **(OLDER_EMITTERS if convolutions else {})}
    if _all_accepted():
        return wanted
    return {name: value for name, value in wanted.items() if accepts(name, value)}


# For a program that runs once, the initialization: XLA:CPU's code optimization off (LLVM's -O0). The
# initialization's random draws then compiled in a third of the time (MLP 0.67 -> 0.21 s, CNN 1.61 ->
# 0.46 s), for code that runs once; its weights differ from the optimized program's by at most 4 ulp in a
# few per cent of them (no fused multiply-adds). A long-standing option of every backend's XLA, not an
# experimental one: no probe. Measured on the CPU only, so given only there.
RUN_ONCE: dict[str, Any] = {"xla_backend_optimization_level": 0}


def run_once_options() -> dict[str, Any]:
    """``jax.jit``'s ``compiler_options`` for a program that runs once, such as the initialization:
    ``RUN_ONCE`` on the CPU, ``{}`` elsewhere."""
    return RUN_ONCE if jax.default_backend() == "cpu" else {}


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
    """``jax.jit(fn, **jit_kwargs)``, compiled with ``compiler_options`` for the program unless 64-bit JAX
    is on (then with XLA's defaults).

    The choice is made at each call (and ``.lower``), so turning ``jax_enable_x64`` on or off between
    calls takes effect; each choice keeps its own compilations. Whether a program convolves depends on
    its arguments' structure (the model and its dtype are static parts of the state), which is looked at
    once: the first call of a structure traces it for the choice, and that trace serves the compilation.
    """
    plain = jax.jit(fn, **jit_kwargs)
    by_options: dict[tuple, Callable] = {(): plain}  # the options' items → the jit that compiles with them
    chosen: dict[Any, Callable] = {}  # the arguments' tree structure → the jit that compiles it

    def with_options(options: dict[str, Any]) -> Callable:
        key = tuple(sorted(options.items()))
        if key not in by_options:
            by_options[key] = jax.jit(fn, compiler_options=options, **jit_kwargs)
        return by_options[key]

    def pick(args: tuple, kwargs: dict) -> Callable:
        if jax.config.jax_enable_x64:
            return plain
        structure = jax.tree.structure((args, kwargs))
        if structure not in chosen:
            # A jit keeps its own traces: the one made here serves the compilation if the program convolves.
            convolutional = with_options(compiler_options(convolutions=True))
            convolves = has_convolution(convolutional.trace(*args, **kwargs).jaxpr)
            chosen[structure] = convolutional if convolves else with_options(compiler_options(convolutions=False))
        return chosen[structure]

    @functools.wraps(fn)
    def call(*args, **kwargs):
        return pick(args, kwargs)(*args, **kwargs)

    call.lower = lambda *args, **kwargs: pick(args, kwargs).lower(*args, **kwargs)
    return call


# jax.monitoring's events: one per XLA program compiled (or loaded from the persistent cache), and one per load.
_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
_CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"


@dataclasses.dataclass
class Compilations:
    """The XLA programs that this process compiles, in any thread, from ``start()`` to ``stop()`` (or until
    the object is dropped): what a run costs before its first step, and what a call that should have reused
    a program gives away. ``count_compilations`` is the same as a ``with`` block.

    Attributes:
      programs: programs compiled, or loaded from the compilation cache (each is one XLA executable).
      loaded: of those, the ones loaded from the compilation cache.
      seconds: the time XLA took over them (loads included).
      names: programs per name, e.g. ``{"jit(gather_steps_fn)": 2}``: one per distinct call shape.

    Example:
      >>> compiled = Compilations().start()
      >>> state = create_train_state(MLP(), adam(1e-3), images[:1])
      >>> compiled.stop().programs
      1
    """

    programs: int = 0
    loaded: int = 0
    seconds: float = 0.0
    names: collections.Counter = dataclasses.field(default_factory=collections.Counter)

    def start(self) -> Compilations:
        """Starts counting; returns ``self``."""
        this = weakref.ref(self)  # the listeners must not keep an abandoned count alive: it stops when dropped

        def on_compile(event: str, seconds: float, **kwargs: Any) -> None:
            if event == _COMPILE_EVENT and (compiled := this()) is not None:
                compiled.programs += 1
                compiled.seconds += seconds
                compiled.names[kwargs.get("fun_name", "?")] += 1

        def on_event(event: str, **kwargs: Any) -> None:
            if event == _CACHE_HIT_EVENT and (compiled := this()) is not None:
                compiled.loaded += 1

        jax.monitoring.register_event_duration_secs_listener(on_compile)
        jax.monitoring.register_event_listener(on_event)
        self._stop = weakref.finalize(self, _unregister, on_compile, on_event)
        return self

    def stop(self) -> Compilations:
        """Stops counting; returns ``self``."""
        self._stop()
        return self

    def as_dict(self) -> dict[str, Any]:
        """For a JSON report: ``{"programs", "loaded", "seconds", "names"}``."""
        return {"programs": self.programs, "loaded": self.loaded, "seconds": self.seconds, "names": dict(self.names)}


def _unregister(on_compile: Callable, on_event: Callable) -> None:
    jax.monitoring.unregister_event_duration_listener(on_compile)
    jax.monitoring.unregister_event_listener(on_event)


@contextlib.contextmanager
def count_compilations() -> Iterator[Compilations]:
    """``Compilations`` counted over a block.

    Example:
      >>> with count_compilations() as compiled:
      ...     predict(state, images[:8])
      >>> compiled.programs   # 0 when predict has already compiled for this shape
    """
    compiled = Compilations().start()
    try:
        yield compiled
    finally:
        compiled.stop()


# Programs that compiled faster than this are not worth a file (a single eager operation, XLA's option probe:
# 10-20 ms). Each of a run's own programs is: the MLP's initialization, evaluation and schedule compile in
# 0.05-0.2 s and load in milliseconds. At 0.2 s a warm MLP run loaded 3 of its 5 programs and compiled
# for 0.18-0.20 s; at 0.05 s it loads 4 and compiles for 0.07 s.
CACHE_MIN_SECONDS = 0.05


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

    Tracing and lowering still run; docs/performance.md's compile table has what the cache saves. The files are XLA
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
