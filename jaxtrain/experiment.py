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
import optax

from jaxtrain import datasets, models, optim
from jaxtrain.data import ArrayDataset, DataLoader, fits_on_device
from jaxtrain.train import compile_fit, create_train_state, evaluate, fit

MODELS = ("mlp", "cnn")
OPTIMIZERS = ("adam", "sgd", "adamw")
DATASETS = ("mnist", "digits")


@dataclasses.dataclass(frozen=True)
class Config:
    """A training run. The defaults are the primer's: MLP, Adam at 1e-3, batch 32, 10 epochs."""

    dataset: str = "digits"
    data_dir: str | None = None
    model: str = "mlp"
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.0
    weight_decay: float = 0.0
    seed: int = 0
    eval_batch_size: int = 1000
    steps_per_call: int | str = "auto"  # an int, "epoch" or "auto" (DEFAULT_STEPS_PER_CALL)
    data_on_device: bool | None = None  # None: when the training set fits (data.fits_on_device)

    def __post_init__(self):
        for name, allowed in (("dataset", DATASETS), ("model", MODELS), ("optimizer", OPTIMIZERS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r}; expected one of {', '.join(allowed)}")
        for name in ("epochs", "batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)!r}; expected a positive integer")
        if not self.lr > 0:
            raise ValueError(f"lr={self.lr!r}; expected a positive number")
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


def build_model(config: Config):
    """The Flax module that ``config`` names."""
    return {"mlp": models.MLP, "cnn": models.CNN}[config.model]()


def build_optimizer(config: Config) -> optax.GradientTransformation:
    """The optax optimizer that ``config`` names, with torch's semantics."""
    if config.optimizer == "sgd":
        return optim.sgd(config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return getattr(optim, config.optimizer)(config.lr, weight_decay=config.weight_decay)


def device_name() -> str:
    device = jax.devices()[0]
    return f"{device.platform}: {device.device_kind}"


def run(config: Config, log: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Trains and evaluates as ``config`` says; returns the report.

    Returns:
      ``dataset``, ``model``, ``batch_size``, ``device``, ``config``, ``history`` (per epoch: ``epoch``,
      ``train_loss``, ``test_loss``, ``test_accuracy``, ``seconds``, ``samples_per_second``), and the
      final ``test_accuracy`` (a fraction), ``compile_seconds`` (the first train step's compilation)
      and ``samples_per_second`` (the fastest epoch's training throughput).
    """
    train_images, train_labels = datasets.load(config.dataset, "train", config.data_dir)
    test_images, test_labels = datasets.load(config.dataset, "test", config.data_dir)
    train_loader = DataLoader(ArrayDataset(train_images, train_labels), config.batch_size, shuffle=True, seed=config.seed)
    test_loader = DataLoader(ArrayDataset(test_images, test_labels), config.eval_batch_size)

    state = create_train_state(build_model(config), build_optimizer(config), train_images[:1], seed=config.seed)
    how = feed(config, train_loader)
    compile_seconds = compile_fit(state, train_loader, **how)
    state, history = fit(state, train_loader, config.epochs, test_loader, log=log, **how)
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
