"""One training run from a flat configuration: the primer's whole program, and the report it yields.

``python -m jaxtrain train`` maps its flags onto ``Config`` and calls ``run``; tests and scripts call it
directly.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxtrain import datasets, models, optim
from jaxtrain.data import ArrayDataset, DataLoader, fits_on_device
from jaxtrain.train import compile_fit, create_train_state, evaluate, fit

MODELS = ("mlp", "cnn")
OPTIMIZERS = ("adam", "sgd", "adamw")
DATASETS = ("mnist", "digits")
SCHEDULES = ("constant", "step", "cosine")
# The MLP keeps the primer's constant learning rate. The CNN anneals it: with a constant 1e-3 its test
# accuracy swung between 98.4% and 98.8% from one epoch to the next (README, "Measured").
DEFAULT_SCHEDULE = {"mlp": "constant", "cnn": "cosine"}
DTYPES = {"float32": None, "bfloat16": jnp.bfloat16}  # the model's compute dtype; None keeps float32


@dataclasses.dataclass(frozen=True)
class Config:
    """A training run. The defaults are the primer's: MLP, Adam at 1e-3, batch 32, 10 epochs, constant lr.

    Model: ``dropout`` and ``batch_norm`` of None keep the model's own default (the MLP has neither; the CNN
    has BatchNorm and dropout 0.25). ``dtype`` is the compute dtype; parameters and optimizer state stay
    float32.

    Learning rate: ``schedule`` is "auto" (``DEFAULT_SCHEDULE`` of the model), "constant", "step" (torch's ``StepLR(step_size, gamma)``, with
    ``step_size`` in epochs as torch scripts step it once per epoch; the defaults are those of
    pytorch/examples' MNIST script) or "cosine" (``CosineAnnealingLR`` to 0 over the run), after
    ``warmup_steps`` optimizer steps of linear warmup. ``grad_accum`` batches make one optimizer step;
    ``clip_norm`` clips the gradient's global norm first.
    """

    dataset: str = "digits"
    data_dir: str | None = None
    model: str = "mlp"
    dropout: float | None = None
    batch_norm: bool | None = None
    dtype: str = "float32"
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.0
    weight_decay: float = 0.0
    schedule: str = "auto"  # "auto": DEFAULT_SCHEDULE[model]
    warmup_steps: int = 0
    step_size: int = 1
    gamma: float = 0.7
    grad_accum: int = 1
    clip_norm: float | None = None
    seed: int = 0
    eval_batch_size: int = 1000
    steps_per_call: int | str = "auto"  # an int, "epoch" or "auto" (DEFAULT_STEPS_PER_CALL)
    data_on_device: bool | None = None  # None: when the training set fits (data.fits_on_device)

    def __post_init__(self):
        if self.schedule == "auto":
            object.__setattr__(self, "schedule", DEFAULT_SCHEDULE.get(self.model, "constant"))
        for name, allowed in (
            ("dataset", DATASETS),
            ("model", MODELS),
            ("optimizer", OPTIMIZERS),
            ("schedule", SCHEDULES),
            ("dtype", tuple(DTYPES)),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r}; expected one of {', '.join(allowed)}")
        for name in ("epochs", "batch_size", "eval_batch_size", "step_size", "grad_accum"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)!r}; expected a positive integer")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps={self.warmup_steps!r}; expected an integer >= 0")
        for name in ("lr", "gamma"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)!r}; expected a positive number")
        if self.dropout is not None and not 0 <= self.dropout < 1:
            raise ValueError(f"dropout={self.dropout!r}; expected a probability in [0, 1)")
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise ValueError(f"clip_norm={self.clip_norm!r}; expected a positive number")
        if self.steps_per_call not in ("auto", "epoch") and not (isinstance(self.steps_per_call, int) and self.steps_per_call >= 1):
            raise ValueError(f"steps_per_call={self.steps_per_call!r}; expected a positive integer, 'epoch' or 'auto'")


# Measured with `python -m jaxtrain bench` (README, "Speed"): the MLP's step is so cheap that per-call
# overhead dominates, and a whole epoch per call over device-resident data is fastest. Inside lax.scan,
# XLA:CPU runs the CNN's step slower than the same step compiled alone, so the CNN takes one step a call.
DEFAULT_STEPS_PER_CALL = {"mlp": "epoch", "cnn": 1}


def feed(config: Config, loader: DataLoader) -> dict[str, Any]:
    """``fit``'s ``steps_per_call`` and ``data_on_device`` for ``config``, its "auto" settings resolved."""
    steps = DEFAULT_STEPS_PER_CALL[config.model] if config.steps_per_call == "auto" else config.steps_per_call
    on_device = config.data_on_device
    if on_device is None:
        on_device = fits_on_device(sum(a.nbytes for a in loader.arrays()))
    return {"steps_per_call": len(loader) if steps == "epoch" else steps, "data_on_device": on_device}


def build_model(config: Config) -> models.MLP | models.CNN:
    """The Flax module that ``config`` names, with its dropout, BatchNorm and compute dtype."""
    options = {"dropout": config.dropout, "batch_norm": config.batch_norm}
    options = {name: value for name, value in options.items() if value is not None}
    return {"mlp": models.MLP, "cnn": models.CNN}[config.model](dtype=DTYPES[config.dtype], **options)


def build_schedule(config: Config, batches_per_epoch: int) -> optax.Schedule:
    """The learning-rate schedule that ``config`` names, counted in optimizer steps.

    The step decay is torch's ``StepLR(step_size, gamma)`` stepped once per epoch: the lr falls at the first
    optimizer step of every ``step_size``-th epoch (counted from the end of the warmup). An epoch is
    ``batches_per_epoch / grad_accum`` optimizer steps, not always a whole number, so the decays are placed
    as milestones (``MultiStepLR``) rather than at a fixed period.

    Example:
      >>> lr = build_schedule(Config(schedule="cosine", epochs=5), batches_per_epoch=100)
      >>> lr(0), lr(250), lr(500)   # 1e-3, 5e-4, 0.0 (float32)
    """
    steps_per_decay = config.step_size * batches_per_epoch
    return optim.schedule(
        "multistep" if config.schedule == "step" else config.schedule,
        config.lr,
        total_steps=_optimizer_steps(config, batches_per_epoch, config.epochs),
        milestones=[m * steps_per_decay // config.grad_accum for m in range(1, config.epochs // config.step_size + 1)],
        gamma=config.gamma,
        warmup_steps=config.warmup_steps,
    )


def _optimizer_steps(config: Config, batches_per_epoch: int, epochs: int) -> int:
    """Optimizer steps completed after ``epochs`` epochs (accumulation carries over epoch boundaries)."""
    return epochs * batches_per_epoch // config.grad_accum


def build_optimizer(config: Config, batches_per_epoch: int | None = None) -> optax.GradientTransformation:
    """The optax optimizer that ``config`` names, with torch's semantics, its schedule, clipping and accumulation.

    Args:
      config: the run.
      batches_per_epoch: ``len(train_loader)``, which turns epochs into steps; needed by every schedule but
        a constant learning rate without warmup.

    Returns:
      ``accumulate_gradients(clip_grad_norm(optimizer(schedule), clip_norm), grad_accum)``, leaving out the
      parts that the configuration does not ask for.
    """
    lr: optim.ScalarOrSchedule = config.lr
    if config.schedule != "constant" or config.warmup_steps:
        if batches_per_epoch is None:
            raise ValueError(
                f"schedule={config.schedule!r}, warmup_steps={config.warmup_steps}; "
                f"expected batches_per_epoch (len(train_loader)) to count the schedule's steps"
            )
        lr = build_schedule(config, batches_per_epoch)
    if config.optimizer == "sgd":
        tx = optim.sgd(lr, momentum=config.momentum, weight_decay=config.weight_decay)
    else:
        tx = getattr(optim, config.optimizer)(lr, weight_decay=config.weight_decay)
    if config.clip_norm is not None:
        tx = optim.clip_grad_norm(tx, config.clip_norm)
    return optim.accumulate_gradients(tx, config.grad_accum)


def epoch_learning_rates(config: Config, batches_per_epoch: int) -> list[float]:
    """The learning rate in effect at the start of each epoch: that of the epoch's first optimizer step."""
    lr = build_schedule(config, batches_per_epoch)
    # str() of the float32 is its shortest decimal form: 0.001 rather than 0.0010000000474974513.
    return [float(str(np.float32(lr(_optimizer_steps(config, batches_per_epoch, e))))) for e in range(config.epochs)]


def device_name() -> str:
    device = jax.devices()[0]
    return f"{device.platform}: {device.device_kind}"


def run(config: Config, log: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Trains and evaluates as ``config`` says; returns the report.

    Returns:
      ``dataset``, ``model``, ``batch_size``, ``device``, ``config``, ``model_options`` (the model's
      resolved ``dropout``, ``batch_norm`` and ``dtype``), ``history`` (per epoch: ``epoch``, ``lr``,
      ``train_loss``, ``test_loss``, ``test_accuracy``, ``seconds``, ``samples_per_second``), and the
      final ``test_accuracy`` (a fraction), ``compile_seconds`` (the first train step's compilation)
      and ``samples_per_second`` (the fastest epoch's training throughput).
    """
    train_images, train_labels = datasets.load(config.dataset, "train", config.data_dir)
    test_images, test_labels = datasets.load(config.dataset, "test", config.data_dir)
    train_loader = DataLoader(ArrayDataset(train_images, train_labels), config.batch_size, shuffle=True, seed=config.seed)
    test_loader = DataLoader(ArrayDataset(test_images, test_labels), config.eval_batch_size)

    model, batches_per_epoch = build_model(config), len(train_loader)
    state = create_train_state(model, build_optimizer(config, batches_per_epoch), train_images[:1], seed=config.seed)
    how = feed(config, train_loader)
    compile_seconds = compile_fit(state, train_loader, **how)
    state, history = fit(state, train_loader, config.epochs, test_loader, log=log, **how)
    # The schedule is a pure function of the step, so each epoch's lr comes from it, not from the state.
    lrs = epoch_learning_rates(config, batches_per_epoch)
    history = [{"epoch": record["epoch"], "lr": lr, **record} for record, lr in zip(history, lrs)]
    start = time.perf_counter()
    final = evaluate(state, test_loader)
    eval_seconds = time.perf_counter() - start
    if log:
        log(f"Accuracy on the {final['count']} test images: {100 * final['accuracy']:.2f}%")
    return {
        "dataset": config.dataset,
        "model": config.model,
        "batch_size": config.batch_size,
        "device": device_name(),
        "config": dataclasses.asdict(config),
        "model_options": {"dropout": model.dropout, "batch_norm": model.batch_norm, "dtype": config.dtype},
        **how,
        "train_examples": len(train_labels),
        "test_examples": final["count"],
        "history": history,
        "test_accuracy": final["accuracy"],
        "test_loss": final["loss"],
        "compile_seconds": compile_seconds,
        "eval_seconds": eval_seconds,
        "samples_per_second": max(epoch["samples_per_second"] for epoch in history),
    }


def write_json(path: str | Path, data: Any) -> None:
    """Writes JSON atomically: a crash mid-write leaves any earlier file at ``path`` whole."""
    path = Path(path)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as out:
        json.dump(data, out, indent=2)
        out.write("\n")
    os.replace(out.name, path)
