"""``python -m jaxtrain bench``: the speed of each way of feeding the steps, beside the primer's PyTorch loop.

In one run, on the same data and machine: the primer's PyTorch loop (when torch is installed); jaxtrain
per step, fused and device-resident; a hand-written ``lax.scan`` epoch as a reference; and the machine's
matrix-product rate and copy bandwidth, which bound what any of them can reach. Each configuration runs
in a child process of its own (``compare.measure_in_child``), so that its peak memory is its own.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from jaxtrain import compare, experiment

# Fused mode's steps per call: past a few dozen, the saved dispatches no longer show (README, "Speed").
FUSED_STEPS = 32
MODES: dict[str, dict[str, Any]] = {
    "per-step": {"steps_per_call": 1, "data_on_device": False},
    "fused": {"steps_per_call": FUSED_STEPS, "data_on_device": False},
    "device-resident": {"steps_per_call": "epoch", "data_on_device": True},
}


def machine_rates(size: int = 2048, copy_mib: int = 256, repeats: int = 5) -> dict[str, float]:
    """The matrix-product rate (float32, GFLOP/s) and copy bandwidth (GB/s, bytes read + written) that XLA
    reaches on the default device; medians over ``repeats``."""
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
    matmul = median_seconds(jax.jit(lambda x: x @ x), a)
    b = jnp.arange(copy_mib * 2**20 // 4, dtype=jnp.float32)
    copy = median_seconds(jax.jit(lambda x: x + 1), b)
    return {"matmul_gflops": 2 * size**3 / matmul / 1e9, "copy_gbps": 2 * b.nbytes / copy / 1e9}


def flops_per_example(config: experiment.Config) -> float:
    """A training step's floating-point operations per example, as XLA counts them for ``config``."""
    import jax.numpy as jnp

    from jaxtrain.train import create_train_state, train_step

    images, _ = experiment.datasets.load(config.dataset, "test", config.data_dir)
    batch = (jnp.asarray(images[: config.batch_size]), jnp.zeros(config.batch_size, jnp.int32))
    state = create_train_state(experiment.build_model(config), experiment.build_optimizer(config), images[:1])
    cost = train_step.lower(state, batch).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost["flops"]) / config.batch_size


def scan_reference(config: experiment.Config) -> dict[str, Any]:
    """A hand-written epoch: ``lax.scan`` over device-resident data, plain Flax and ``optax.adam``.

    The baseline that jaxtrain's fastest mode must match, written as a JAX user would without the library.
    """
    import jax
    import jax.numpy as jnp
    import optax

    images, labels = (jnp.asarray(a) for a in experiment.datasets.load(config.dataset, "train", config.data_dir))
    model = experiment.build_model(config)
    params = model.init(jax.random.key(config.seed), images[:1])["params"]
    tx = optax.adam(config.lr)

    def loss_fn(params, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(model.apply({"params": params}, x), y).mean()

    @jax.jit
    def epoch(params, opt_state, order):
        def step(carry, index):
            params, opt_state = carry
            loss, grads = jax.value_and_grad(loss_fn)(params, images[index], labels[index])
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), order)
        return params, opt_state, losses.mean()

    opt_state = tx.init(params)
    n = len(labels) // config.batch_size * config.batch_size
    history = []
    for e in range(config.epochs):
        order = np.random.default_rng([config.seed, e]).permutation(len(labels))[:n].reshape(-1, config.batch_size)
        start = time.perf_counter()
        params, opt_state, loss = epoch(params, opt_state, order)
        loss = float(loss)
        seconds = time.perf_counter() - start
        history.append({"epoch": e + 1, "train_loss": loss, "seconds": seconds, "samples_per_second": n / seconds})
    return {"history": history, "compile_seconds": None, "eval_seconds": None, "test_accuracy": None}


def _steady(report: dict[str, Any]) -> float:
    """The median training throughput over the epochs after the first (which may include compilation)."""
    epochs = report["history"][1:] or report["history"]
    return statistics.median(e["samples_per_second"] for e in epochs)


def bench(config: experiment.Config, torch: bool = True, log: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Measures every mode on ``config`` (its dataset, model, batch size, epochs) in one run.

    Returns:
      ``machine`` (rates), ``flops_per_example``, ``arithmetic_bound`` (examples/s at the matrix-product
      rate), ``config``, and ``rows``: per mode its samples/s (median of the epochs after the first), its
      ratio to the primer's PyTorch loop, its fraction of the arithmetic bound, compile and evaluation
      seconds, peak memory, final test accuracy and the full report.
    """
    machine, _ = compare.measure_in_child(machine_rates)
    flops, _ = compare.measure_in_child(flops_per_example, config)
    bound = machine["matmul_gflops"] * 1e9 / flops
    runs: dict[str, tuple[dict, float]] = {}
    if torch:
        runs["PyTorch primer"] = compare.measure_in_child(compare.torch_run, config, "dataloader", log=None)
    for name, mode in MODES.items():
        runs[f"jaxtrain {name}"] = compare.measure_in_child(experiment.run, dataclasses.replace(config, **mode), log=None)
    if config.model == "mlp":
        runs["hand-written lax.scan"] = compare.measure_in_child(scan_reference, config)
    baseline = _steady(runs["PyTorch primer"][0]) if torch else None
    rows = []
    for name, (report, peak) in runs.items():
        speed = _steady(report)
        rows.append({
            "mode": name,
            "samples_per_second": speed,
            "vs_pytorch": speed / baseline if baseline else None,
            "of_bound": speed / bound,
            "compile_seconds": report.get("compile_seconds"),
            "eval_seconds": report.get("eval_seconds"),
            "peak_memory_mib": peak,
            "test_accuracy": report.get("test_accuracy"),
            "report": report,
        })
        if log:
            log(format_row(rows[-1]))
    return {"machine": machine, "flops_per_example": flops, "arithmetic_bound": bound,
            "config": dataclasses.asdict(config), "rows": rows}


def format_row(row: dict) -> str:
    fmt = lambda value, spec, unit="": "—" if value is None else format(value, spec) + unit
    return (
        f"| {row['mode']} | {row['samples_per_second']:,.0f} | {fmt(row['vs_pytorch'], '.2f', '×')} "
        f"| {row['of_bound']:.0%} | {fmt(row['compile_seconds'], '.2f')} | {fmt(row['eval_seconds'], '.3f')} "
        f"| {row['peak_memory_mib']:,.0f} | {fmt(row['test_accuracy'] and 100 * row['test_accuracy'], '.2f')} |"
    )


def table(result: dict) -> str:
    """The result as a Markdown table, with the machine's rates above it."""
    m = result["machine"]
    lines = [
        f"matrix product {m['matmul_gflops']:.0f} GFLOP/s, copy {m['copy_gbps']:.1f} GB/s; "
        f"{result['flops_per_example'] / 1e6:.2f} MFLOP per example → bound {result['arithmetic_bound']:,.0f} examples/s",
        "",
        "| mode | samples/s | vs PyTorch | of bound | compile s | eval s | peak MiB | test acc % |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    return "\n".join(lines + [format_row(row) for row in result["rows"]])
