"""One training run from a flat configuration: the primer's whole program, and the report it yields.

``python -m jaxtrain train`` maps its flags onto ``Config`` (``jaxtrain.config``) and calls ``run``; tests
and scripts call it directly. What the run starts from (model, optimizer, state) is built by
``jaxtrain.build``; a finished run folder is read back by ``jaxtrain.runs.load.load_run``.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from jaxtrain.build import epoch_learning_rates, initial_state, model_options
from jaxtrain.config import MODELS, Config
from jaxtrain.data.loader import ArrayDataset, DataLoader, random_split
from jaxtrain.data.transfer import fits_on_device
from jaxtrain.parallel import devices
from jaxtrain.parallel.compiler import Compilations
from jaxtrain.runs.folder import Run
from jaxtrain.runs.reports import deliver
from jaxtrain.sources import checks, registry
from jaxtrain.training import callbacks
from jaxtrain.training.feeding import Feeding, resolve
from jaxtrain.training.fit import compile_fit, fit

# Settings of fit's feeding modes (fit's docstring), as the benchmark names them.
FEEDING_MODES: dict[str, dict[str, Any]] = {
    "per-step": {"steps_per_call": 1, "data_on_device": False},
    "fused": {"steps_per_call": 32, "data_on_device": False},  # past a few dozen, the saved dispatches no longer show
    "device-resident": {"steps_per_call": "epoch", "data_on_device": True},
}


def feeding(config: Config, loader: DataLoader) -> Feeding:
    """``fit``'s ``steps_per_call`` and ``data_on_device`` for ``config`` (``.settings()``), its "auto" settings
    resolved for this backend and model by ``jaxtrain.training.feeding``'s table, and why (``.why``)."""
    # This process's own device: another process's device reports no memory.
    fits = fits_on_device(sum(a.nbytes for a in jax.tree.leaves(loader.arrays())), jax.local_devices()[0])
    family = MODELS[config.model].family
    return resolve(config.steps_per_call, config.data_on_device, family, jax.default_backend(), len(loader), fits)


class _ScheduledLr(callbacks.Callback):
    """Each epoch's record (and ``metrics.jsonl`` line) gets the learning rate of its first optimizer step,
    from the schedule, a pure function of the step; a rate held in the state (plateau) is recorded by fit."""

    def __init__(self, lrs: Sequence[float]):
        self.lrs = lrs

    def on_epoch_end(self, context: callbacks.Context) -> None:
        context.record.setdefault("lr", self.lrs[context.epoch - 1])


def stop_callbacks(config: Config) -> dict[str, callbacks.Callback]:
    """The callbacks that ``config``'s stopping and plateau settings ask for, by name: "plateau"
    (``ReduceLROnPlateau`` on the validation loss), "early" (``EarlyStopping`` on it, ending on the best
    epoch's state) and "target" (``TargetAccuracy`` on the test accuracy)."""
    chosen: dict[str, callbacks.Callback] = {}
    if config.schedule == "plateau":
        chosen["plateau"] = callbacks.ReduceLROnPlateau("val_loss", **config.plateau_args())
    if config.early_stopping:
        chosen["early"] = callbacks.EarlyStopping("val_loss", patience=config.early_stopping, restore_best=True)
    if config.stop_at_accuracy:
        chosen["target"] = callbacks.TargetAccuracy(config.stop_at_accuracy)
    return chosen


def stop_report(chosen: dict[str, callbacks.Callback], history: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The report's fields of how the run ended: ``epochs_run`` and ``stopped`` (why it stopped before its
    last epoch, or None); with early stopping ``best_epoch`` (the epoch whose state the run ended on) and
    ``best_val_loss``; with a target accuracy ``epochs_to_accuracy`` and ``time_to_accuracy_seconds`` (from
    the process's start; None where it was not reached)."""
    report: dict[str, Any] = {"epochs_run": len(history), "stopped": None}
    if "early" in chosen:
        report.update(best_epoch=chosen["early"].best_epoch, best_val_loss=chosen["early"].best)
    if "target" in chosen:
        report.update(epochs_to_accuracy=chosen["target"].epoch, time_to_accuracy_seconds=chosen["target"].seconds)
    reasons = [c.stopped for c in chosen.values() if getattr(c, "stopped", None)]
    report["stopped"] = reasons[0] if reasons else None
    return report


def steady_speed(history: Sequence[dict[str, Any]]) -> float:
    """A run's samples/s: the median over the epochs after the first, which may include compilation (over
    the only epoch if there is one). The one definition that reports and the benchmark use."""
    return statistics.median(e["samples_per_second"] for e in history[1:] or history)


def device_name() -> str:
    device = jax.devices()[0]
    return f"{device.platform}: {device.device_kind}"


# Settings that a resumed run may change: they do not change what is computed.
RESUMABLE_CHANGES = ("epochs", "data_dir", "eval_batch_size", "steps_per_call", "data_on_device")


def loaders(config: Config) -> dict[str, DataLoader]:
    """The run's data: "train" (shuffled by ``config.seed``), "test", and "val" when ``val_fraction`` holds
    part of the training data out, through ``random_split`` seeded by ``config.seed``."""
    train = ArrayDataset(*registry.load(config.dataset, "train", config.data_dir))
    test = ArrayDataset(*registry.load(config.dataset, "test", config.data_dir))
    checks.check_splits(train.arrays[0], test.arrays[0])
    splits = {"train": train, "test": test}
    if config.val_fraction:
        splits["train"], splits["val"] = random_split(train, [1 - config.val_fraction, config.val_fraction], seed=config.seed)
    return {
        name: DataLoader(data, config.batch_size, shuffle=True, seed=config.seed)
        if name == "train" else DataLoader(data, config.eval_batch_size)
        for name, data in splits.items()
    }


def run(
    config: Config, log: Callable[[str], None] | None = print, folder: Run | None = None,
    callbacks: Sequence[callbacks.Callback] = (),
) -> dict[str, Any]:
    """Trains and evaluates as ``config`` says; returns the report.

    Args:
      config: the run.
      log: where the primer's lines go (None: nowhere).
      folder: a ``runs.folder.Run``: the run's folder, where ``config.json``, ``metrics.jsonl``, the checkpoints and
        ``report.json`` go; with ``resume``, the run continues from its latest checkpoint. The folder is
        claimed before any work (``jaxtrain.runs.ownership``), and closed at the end.
      callbacks: more of ``fit``'s callbacks (``jaxtrain.training.monitors.TensorBoard``, a user's own), after the
        run's own (its lr record, early stopping, the plateau schedule, a target accuracy).

    Returns:
      ``dataset``, ``model``, ``batch_size``, ``device``, ``devices`` and ``processes`` (what the run
      was split over), ``config``, ``model_options`` (the model's
      resolved ``dropout``, ``batch_norm`` and ``dtype``), ``num_classes`` and ``class_names`` (None where
      the labels are their own names), ``history`` (per epoch: ``epoch``, ``lr``,
      ``train_loss``, ``test_loss``, ``test_accuracy``, with a validation split ``val_loss`` and
      ``val_accuracy``, ``seconds``, ``samples_per_second``, ``eval_seconds``), ``steps_per_call`` and ``data_on_device`` as
      run, ``feeding`` (those, the ``backend``, and ``why``: what chose each, ``jaxtrain.training.feeding``), and the
      final ``test_accuracy`` and ``test_loss`` (those of the epoch the run ended on: the last, or the best that early
      stopping went back to) and its ``eval_seconds``, ``compile_seconds`` (the calls' compilation), ``compilations``
      (every XLA program of the run: ``compiler.Compilations``) and ``samples_per_second`` (``steady_speed``). Of several processes, only process 0 logs and writes.
    """
    if not devices.is_main_process():
        log = None
    if folder:
        folder.claim()  # owned (locked, checked) before any work: a second process is refused at once
    mesh = devices.make_mesh(config.devices)
    devices.check_batch_size(mesh, config.batch_size)
    data = loaders(config)
    about = registry.info(config.dataset, config.data_dir)
    train_loader, test_loader = data["train"], data["test"]
    sample = train_loader.gather(np.arange(1))[0]
    compiled = Compilations().start()  # every program of the run: the initialization's to the last evaluation's
    state = devices.replicate(initial_state(config, sample, len(train_loader), about.num_classes), mesh)
    fed = feeding(config, train_loader)
    mode = fed.settings()
    every = folder.periods if folder else ()
    classes = {"num_classes": about.num_classes, "class_names": about.class_names and list(about.class_names)}
    if folder:  # the input's shape and the classes too, so that the model can be rebuilt without the data
        settings = {**dataclasses.asdict(config), "input_shape": list(sample.shape[1:]), "input_dtype": str(sample.dtype), **classes}
        cosine = "cosine schedule (--schedule cosine) anneals the learning rate to 0" if config.schedule == "cosine" else None
        folder.start(settings, fixed_except=RESUMABLE_CHANGES, fixed_length=cosine)
    try:
        compile_seconds = compile_fit(state, train_loader, **mode, every=every, mesh=mesh)
        evals = {name: data[name] for name in ("val", "test") if name in data}
        stopping = stop_callbacks(config)
        hooks = [_ScheduledLr(epoch_learning_rates(config, len(train_loader))), *stopping.values(), *callbacks]
        state, history = fit(state, train_loader, config.epochs, evals, log=log, run=folder, mesh=mesh, callbacks=hooks, **mode)
    finally:
        if folder:
            folder.close()
    history = [{"epoch": record["epoch"], "lr": record.get("lr"), **record} for record in history]
    # The state the run ended on was evaluated on the test set by fit at the end of its epoch (the last, or
    # the best one that early stopping went back to): its record holds the final numbers.
    early = stopping.get("early")
    ended_on = early.restored_epoch if early is not None and early.restored_epoch else history[-1]["epoch"]
    final = next(record for record in history if record["epoch"] == ended_on)
    test_examples = len(test_loader.dataset)
    if log:
        log(f"Accuracy on the {test_examples} test images: {100 * final['test_accuracy']:.2f}%")
    report = {
        "dataset": config.dataset,
        "model": config.model,
        "batch_size": config.batch_size,
        "device": device_name(),
        "devices": mesh.size,
        "processes": jax.process_count(),
        "config": dataclasses.asdict(config),
        "model_options": model_options(config),
        **classes,
        **mode,
        "feeding": {"backend": jax.default_backend(), **mode, "why": fed.why},
        "train_examples": len(train_loader.dataset),
        "test_examples": test_examples,
        "history": history,
        "test_accuracy": final["test_accuracy"],
        "test_loss": final["test_loss"],
        "compile_seconds": compile_seconds,
        "compilations": compiled.stop().as_dict(),
        "eval_seconds": final["eval_seconds"],
        "samples_per_second": steady_speed(history),
        **stop_report(stopping, history),
    }
    if folder and devices.is_main_process():
        deliver(report, folder.folder / "report.json", "report")  # a full disk: printed on stdout instead
    return report
