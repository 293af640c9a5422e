"""The benchmark: the primer's PyTorch program and jaxtrain's, timed on the same data and machine.

One runner, one row format and one definition of speed: samples/s is the median over the epochs after the
first (which may include compilation). Presets choose the programs; every program runs in a fresh process
of its own (``measure.measure_in_child``), one after the other, never two at once.

  python -m jaxtrain compare bench --preset frameworks --models mlp cnn --dataset mnist --data-dir DIR
  python -m jaxtrain compare bench --preset feeding --models mlp --batch-sizes 32 128 512
"""

from __future__ import annotations

import dataclasses
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen
import numpy as np

from jaxtrain import build, experiment
from jaxtrain.sources import registry
from jaxtrain.compare.measure import checkpoint_seconds, flops_per_example, machine, measure_in_child
from jaxtrain.compare.torch_side import TORCH_VARIANTS, torch_run
from jaxtrain.config import MODELS, Config, ConfigError
from jaxtrain.runs.folder import Run

PRIMER = "pytorch-dataloader"  # the primer's program as written: every ratio is to it
PROGRAMS = (
    *(f"pytorch-{variant}" for variant in TORCH_VARIANTS),
    "jaxtrain",  # the defaults of `python -m jaxtrain train`
    *(f"jaxtrain-{mode}" for mode in experiment.FEEDING_MODES),
    "lax.scan",  # a hand-written epoch without jaxtrain (models without BatchNorm)
    "jaxtrain-checkpoints",  # jaxtrain's defaults in a run folder, checkpointing by the default policy
    "jaxtrain-checkpoint-each-epoch",  # the same, checkpointing at every epoch's end
)
PRESETS = {
    # The PyTorch program in its variants beside jaxtrain's defaults.
    "frameworks": (PRIMER, "pytorch-tensors", "jaxtrain"),
    # jaxtrain's feeding modes beside the primer and a hand-written lax.scan epoch.
    "feeding": (PRIMER, *(f"jaxtrain-{mode}" for mode in experiment.FEEDING_MODES), "lax.scan"),
    # What checkpoints cost: jaxtrain's defaults without a run folder, with the default policy, every epoch.
    "checkpoints": ("jaxtrain", "jaxtrain-checkpoints", "jaxtrain-checkpoint-each-epoch"),
}
CHECKPOINT_SECONDS = {"jaxtrain-checkpoints": 60.0, "jaxtrain-checkpoint-each-epoch": 0.0}


def scan_reference(config: Config) -> dict[str, Any]:
    """A hand-written epoch: ``lax.scan`` over device-resident data, plain Flax and ``optax.adam``.

    The baseline that jaxtrain's fastest mode must match, written as a JAX user would without the library
    (for the Linen models without BatchNorm).
    """
    import jax
    import jax.numpy as jnp
    import optax

    images, labels = (jnp.asarray(a) for a in registry.load(config.dataset, "train", config.data_dir))
    model = build.build_model(config, registry.info(config.dataset, config.data_dir).num_classes)
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
        loss = float(loss)  # host sync: the epoch's end
        seconds = time.perf_counter() - start
        history.append({"epoch": e + 1, "train_loss": loss, "seconds": seconds, "samples_per_second": n / seconds})
    return {"history": history, "compile_seconds": None, "eval_seconds": None, "test_accuracy": None}


def run_in_folder(config: Config, checkpoint_seconds: float) -> dict[str, Any]:
    """``experiment.run`` in a temporary run folder, checkpointing at most once every ``checkpoint_seconds``."""
    with tempfile.TemporaryDirectory() as folder:
        return experiment.run(config, log=None, folder=Run(folder, checkpoint_seconds=checkpoint_seconds))


def _program(name: str, config: Config) -> tuple[Callable[..., Any], tuple, dict]:
    """The function, arguments and keywords that run program ``name`` on ``config``."""
    if name.startswith("pytorch-"):
        return torch_run, (config, name.removeprefix("pytorch-")), {"log": None}
    if name == "lax.scan":
        return scan_reference, (config,), {}
    if name in CHECKPOINT_SECONDS:
        return run_in_folder, (config, CHECKPOINT_SECONDS[name]), {}
    mode = experiment.FEEDING_MODES.get(name.removeprefix("jaxtrain-"), {})
    return experiment.run, (dataclasses.replace(config, **mode),), {"log": None}


def check(config: Config, models: Sequence[str], programs: Sequence[str]) -> None:
    """Refuses, before any work, what ``bench`` could not run."""
    for name in programs:
        if name not in PROGRAMS:
            raise ValueError(f"program={name!r}; expected one of {', '.join(PROGRAMS)}")
    for name in models:
        if name not in MODELS:
            raise ValueError(f"model={name!r}; expected one of {', '.join(MODELS)}")
    if config.epochs < 2:
        raise ConfigError("epochs", config.epochs, "at least 2 (samples/s is the median after the first)")


def bench(
    config: Config,
    models: Sequence[str] = ("mlp",),
    programs: Sequence[str] = PRESETS["frameworks"],
    batch_sizes: Sequence[int] | None = None,
    log: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Times ``programs`` for each of ``models`` and ``batch_sizes`` on ``config``'s data, in one run.

    Args:
      config: the training run that all share (dataset, epochs, lr, seed); its ``model`` and
        ``batch_size`` are replaced by each of ``models`` and ``batch_sizes``.
      models: names of ``config.MODELS``.
      programs: names of ``PROGRAMS`` (``PRESETS`` has two views). "lax.scan" is left out for models
        with BatchNorm, which it does not handle.
      batch_sizes: the batch sizes to sweep; None: ``config.batch_size``.
      log: where each measurement's start and end go as they happen, and each row once measured
        (None: nowhere). Every program is a process of its own (seconds to compile on a GPU), so a preset
        takes minutes: these lines say where it is.

    Returns:
      ``config``, ``machine`` (``measure.machine``: facts and rates), ``rows``, ``runs`` (the programs'
      full reports, in the rows' order) and ``checkpoints`` (with a checkpointing program: per model,
      ``measure.checkpoint_seconds``). A row: ``model``, ``batch_size``, ``program``,
      ``samples_per_second`` (``experiment.steady_speed``), ``vs_primer`` (that divided by the primer's, for the same
      model and batch size; None without the primer), ``of_bound`` (that divided by what the machine's
      matrix-product rate allows for the step's FLOPs), ``compile_seconds``, ``epoch_seconds`` (median),
      ``eval_seconds``, ``test_accuracy`` and ``peak_memory_mib``.

    Example:
      >>> result = bench(Config(dataset="digits", epochs=2), models=("mlp",), programs=PRESETS["feeding"])
    """
    check(config, models, programs)
    step = _stepper(log)
    facts, _ = step("the machine's matrix-product and copy rates", measure_in_child, machine)
    rows, runs, saves = [], [], {}
    for model in models:
        for batch_size in batch_sizes or (config.batch_size,):
            run_config = dataclasses.replace(config, model=model, batch_size=batch_size, schedule="auto")
            flops, _ = step(f"{model} batch {batch_size}: a step's FLOPs (compiling it)", measure_in_child, flops_per_example, run_config)
            if set(programs) & set(CHECKPOINT_SECONDS):
                saves[model], _ = step(f"{model}: checkpoint save and restore", measure_in_child, checkpoint_seconds, run_config)
            primer = None
            for name in programs:
                linen = issubclass(MODELS[model].module, flax.linen.Module)
                if name == "lax.scan" and (build.model_options(run_config)["batch_norm"] or not linen):
                    continue
                fn, args, kwargs = _program(name, run_config)
                report, peak = step(f"{model} batch {batch_size}: {name}", measure_in_child, fn, *args, **kwargs)
                speed = experiment.steady_speed(report["history"])
                primer = speed if name == PRIMER else primer
                rows.append({
                    "model": model,
                    "batch_size": batch_size,
                    "program": name,
                    "samples_per_second": speed,
                    "vs_primer": speed / primer if primer else None,
                    "of_bound": speed * flops / (facts["matmul_gflops"] * 1e9),
                    "compile_seconds": report["compile_seconds"],
                    "epoch_seconds": statistics.median(e["seconds"] for e in report["history"][1:]),
                    "eval_seconds": report["eval_seconds"],
                    "test_accuracy": report["test_accuracy"],
                    "peak_memory_mib": peak,
                })
                runs.append({"model": model, "batch_size": batch_size, "program": name, **report})
                if log:
                    log(format_row(rows[-1]))
    return {"config": dataclasses.asdict(config), "machine": facts, "rows": rows, "runs": runs, "checkpoints": saves}


def _stepper(log: Callable[[str], None] | None) -> Callable[..., Any]:
    """``step(what, fn, *args)``: ``fn(*args)``, saying on ``log`` when it starts and how long it took."""
    began = time.perf_counter()

    def step(what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if log:
            log(f"[{time.perf_counter() - began:6.1f} s] {what}: started")
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        if log:
            log(f"[{time.perf_counter() - began:6.1f} s] {what}: done in {time.perf_counter() - start:.1f} s")
        return result

    return step


def format_row(row: dict[str, Any]) -> str:
    """One row of ``format_bench``'s table."""
    fmt = lambda value, spec: "—" if value is None else format(value, spec)  # noqa: E731
    accuracy = row["test_accuracy"] and 100 * row["test_accuracy"]
    return (
        f"| {row['model']} | {row['batch_size']} | {row['program']} | {row['samples_per_second']:,.0f} "
        f"| {fmt(row['vs_primer'], '.2f')} | {row['of_bound']:.0%} | {fmt(row['compile_seconds'], '.2f')} "
        f"| {row['epoch_seconds']:.2f} | {fmt(row['eval_seconds'], '.3f')} | {row['peak_memory_mib']:,.0f} "
        f"| {fmt(accuracy, '.2f')} |"
    )


def format_machine(result: dict[str, Any]) -> str:
    """The line above a result's table: the machine, its rates, the data and what samples/s means."""
    m, c = result["machine"], result["config"]
    return (
        f"{m['cpu']}, {m['cpus']} CPUs, {m['system']}; jax {m['jax']} on {m['device']}: matrix product "
        f"{m['matmul_gflops']:.0f} GFLOP/s, copy {m['copy_gbps']:.1f} GB/s. {c['dataset']}, {c['epochs']} epochs; "
        f"samples/s: the median of epochs 2–{c['epochs']}."
    )


def format_bench(result: dict[str, Any]) -> str:
    """The result as a Markdown table, the machine above it (``format_machine``)."""
    lines = [
        format_machine(result),
        "",
        "| model | batch | program | samples/s | ×primer | of bound | first step / compile s | epoch s | eval s "
        "| peak MiB | test acc. % |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    saves = [f"{model}: checkpoint save {s['save_seconds']:.3f} s, restore {s['restore_seconds']:.3f} s ({s['megabytes']:.1f} MB)"
             for model, s in result.get("checkpoints", {}).items()]
    return "\n".join(lines + [format_row(row) for row in result["rows"]] + ([""] + saves if saves else []))
