"""Measuring without disturbing: each program in a fresh process, and the machine it runs on.

Every benchmarked program runs in a child process of its own (``measure_in_child``), so that no framework
loaded by another leaks into its memory or its threads, and its peak memory is its own.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from jaxtrain import build, experiment
from jaxtrain.sources import registry
from jaxtrain.config import Config


def measure_in_child(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """Runs ``fn(*args, **kwargs)`` in a fresh process and returns its result and the process's peak memory.

    The process is started with "spawn", so it inherits no framework already loaded here: its peak
    resident set (``getrusage(RUSAGE_SELF).ru_maxrss``) is the run's own, interpreter and libraries
    included. ``fn``, its arguments and its result must pickle (a module-level function, say).

    Returns:
      ``(result, peak_mib)``.

    Example:
      >>> report, peak_mib = measure_in_child(experiment.run, Config(dataset="digits"), log=None)
    """
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        return pool.submit(_call_and_measure, fn, args, kwargs).result()


def _call_and_measure(fn: Callable[..., Any], args: tuple, kwargs: dict) -> tuple[Any, float]:
    import resource

    result = fn(*args, **kwargs)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return result, peak / (2**20 if sys.platform == "darwin" else 2**10)  # bytes on macOS, KiB on Linux


def facts() -> dict[str, Any]:
    """The machine and the software that a measurement ran on: ``cpu`` (its model), ``cpus`` (the cores
    this process sees), ``system``, ``device`` (JAX's default one, as "platform: kind"), and the versions of
    ``jax``, ``flax``, ``optax`` and ``torch`` (None where it is not installed). Run it in a child process:
    it starts JAX's backend.

    Example:
      >>> about, _ = measure_in_child(facts)
      >>> about["device"]
      'cpu: cpu'
    """
    import importlib.metadata

    import jax

    def version(package: str) -> str | None:
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return None

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "system": f"{platform.system()} {platform.machine()}",
        "device": experiment.device_name(),
        "jax": jax.__version__,
        **{package: version(package) for package in ("flax", "optax", "torch")},
    }


def machine(size: int = 2048, copy_mib: int = 256, repeats: int = 5) -> dict[str, Any]:
    """The machine in facts and rates: ``facts()``, and the float32 matrix-product rate (``matmul_gflops``)
    and copy bandwidth (``copy_gbps``, bytes read + written) that XLA reaches on the default device, medians
    over ``repeats``. Run it in a child process."""
    import jax
    import jax.numpy as jnp

    def median_seconds(fn, x) -> float:
        jax.block_until_ready(fn(x))
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            jax.block_until_ready(fn(x))
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
    b = jnp.arange(copy_mib * 2**20 // 4, dtype=jnp.float32)
    return {
        **facts(),
        "matmul_gflops": 2 * size**3 / median_seconds(jax.jit(lambda x: x @ x), a) / 1e9,
        "copy_gbps": 2 * b.nbytes / median_seconds(jax.jit(lambda x: x + 1), b) / 1e9,
    }


def flops_per_example(config: Config) -> float:
    """A training step's floating-point operations per example, as XLA counts them for ``config``."""
    import jax.numpy as jnp
    import numpy as np

    from jaxtrain.training.step import create_train_state, train_step

    images, _ = registry.load(config.dataset, "test", config.data_dir)
    # A whole batch even where the test set is smaller (digits' 449 images against a batch of 512).
    rows = np.arange(config.batch_size) % len(images)
    batch = (jnp.asarray(images[rows]), jnp.zeros(config.batch_size, jnp.int32))
    num_classes = registry.info(config.dataset, config.data_dir).num_classes
    model = build.build_model(config, num_classes, images.shape[1:])
    state = create_train_state(model, build.build_optimizer(config, 1), images[:1])
    cost = train_step.lower(state, batch).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost["flops"]) / config.batch_size


def checkpoint_seconds(config: Config, repeats: int = 5) -> dict[str, float]:
    """The median seconds of one checkpoint save (until it is complete on disk) and one restore of
    ``config``'s initial ``TrainState``, and its size in MB."""
    import tempfile

    import jax
    import numpy as np

    from jaxtrain.runs.folder import Run

    images, _ = registry.load(config.dataset, "test", config.data_dir)
    state = build.initial_state(config, images[:1], 1, registry.info(config.dataset, config.data_dir).num_classes)
    saves, restores = [], []
    with tempfile.TemporaryDirectory() as folder:
        run = Run(folder, keep=repeats)
        for step in range(1, repeats + 1):
            start = time.perf_counter()
            run.save(state.replace(step=state.step + step), {})
            run.manager.wait_until_finished()
            saves.append(time.perf_counter() - start)
        for _ in range(repeats):
            start = time.perf_counter()
            jax.block_until_ready(run.restore(state)[0])
            restores.append(time.perf_counter() - start)
        run.close()
    megabytes = sum(np.asarray(leaf).nbytes for leaf in jax.tree.leaves((state.params, state.opt_state, state.batch_stats))) / 1e6
    return {"save_seconds": statistics.median(saves), "restore_seconds": statistics.median(restores), "megabytes": megabytes}
