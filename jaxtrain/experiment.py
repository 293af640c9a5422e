"""One training run from a flat configuration: the primer's whole program, and the report it yields.

``python -m jaxtrain train`` maps its flags onto ``Config`` (``jaxtrain.config``) and calls ``run``; tests
and scripts call it directly.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import statistics
import time
from pathlib import Path
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
import optax
from flax import nnx

from jaxtrain import auto, datasets, devices, models, nnx_models, optim, record, schedules
from jaxtrain.compiler import Compilations
from jaxtrain import callbacks
from jaxtrain.config import COMPUTE_DTYPES, MODELS, Config
from jaxtrain.data import ArrayDataset, DataLoader, random_split
from jaxtrain.reports import deliver
from jaxtrain.runs import Run
from jaxtrain.loop import compile_fit, fit
from jaxtrain.train import TrainState, create_train_state, evaluate
from jaxtrain.transfer import fits_on_device

# Settings of fit's feeding modes (fit's docstring), as the benchmark names them.
FEEDING_MODES: dict[str, dict[str, Any]] = {
    "per-step": {"steps_per_call": 1, "data_on_device": False},
    "fused": {"steps_per_call": 32, "data_on_device": False},  # past a few dozen, the saved dispatches no longer show
    "device-resident": {"steps_per_call": "epoch", "data_on_device": True},
}


def feeding(config: Config, loader: DataLoader) -> auto.Feeding:
    """``fit``'s ``steps_per_call`` and ``data_on_device`` for ``config`` (``.settings()``), its "auto" settings
    resolved for this backend and model by ``jaxtrain.auto``'s table, and why (``.why``)."""
    # This process's own device: another process's device reports no memory.
    fits = fits_on_device(sum(a.nbytes for a in jax.tree.leaves(loader.arrays())), jax.local_devices()[0])
    family = MODELS[config.model].family
    return auto.resolve(config.steps_per_call, config.data_on_device, family, jax.default_backend(), len(loader), fits)


def build_model(
    config: Config, num_classes: int = 10, input_shape: Sequence[int] | None = None
) -> models.MLP | models.CNN | nnx_models.NNXMLP | nnx_models.NNXCNN:
    """The Flax module that ``config`` names, with its dropout, BatchNorm and compute dtype.

    Args:
      config: the run.
      num_classes: the outputs of the last layer: the data's classes (``datasets.info``).
      input_shape: the shape of one input, e.g. ``(32, 32, 3)``; an NNX module needs it, since it is built
        with its weights (seeded by ``config.seed``).

    Example:
      >>> build_model(Config(model="nnx-cnn"), num_classes=10, input_shape=(32, 32, 3))
    """
    options = {"dropout": config.dropout, "batch_norm": config.batch_norm}
    options = {name: value for name, value in options.items() if value is not None}
    module = MODELS[config.model].module
    options.update(num_classes=num_classes, dtype=COMPUTE_DTYPES[config.dtype])
    if issubclass(module, nnx.Module):
        if input_shape is None:
            raise ValueError(f"input_shape=None; expected the shape of one input, e.g. (28, 28, 1), to build {config.model!r}")
        return module(tuple(input_shape), rngs=nnx.Rngs(config.seed), **options)
    return module(**options)


def model_options(config: Config) -> dict[str, Any]:
    """The model's ``dropout``, ``batch_norm`` and ``dtype`` as ``config`` resolves them: its own defaults
    where the configuration leaves them None."""
    defaults = inspect.signature(MODELS[config.model].module.__init__).parameters
    return {
        "dropout": defaults["dropout"].default if config.dropout is None else config.dropout,
        "batch_norm": defaults["batch_norm"].default if config.batch_norm is None else config.batch_norm,
        "dtype": config.dtype,
    }


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
    decay_epochs = config.milestones if config.schedule == "multistep" else range(config.step_size, config.epochs + 1, config.step_size)
    return schedules.schedule(
        "multistep" if config.schedule in ("step", "multistep") else config.schedule,
        config.lr,
        total_steps=_optimizer_steps(config, batches_per_epoch, config.epochs),
        milestones=[_optimizer_steps(config, batches_per_epoch, e) for e in decay_epochs],
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
    if config.schedule not in ("constant", "plateau") or config.warmup_steps:
        if batches_per_epoch is None:
            raise ValueError(
                f"schedule={config.schedule!r}, warmup_steps={config.warmup_steps}; "
                f"expected batches_per_epoch (len(train_loader)) to count the schedule's steps"
            )
        lr = build_schedule(config, batches_per_epoch)
    factory, args = optim.OPTIMIZERS[config.optimizer], {**config.optimizer_args(), "lr": lr}
    # plateau: the rate in the optimizer state, where ReduceLROnPlateau lowers it between epochs
    tx = optim.adjustable_lr(factory, **args) if config.schedule == "plateau" else factory(**args)
    if config.clip_norm is not None:
        tx = optim.clip_grad_norm(tx, config.clip_norm)
    return optim.accumulate_gradients(tx, config.grad_accum)


def epoch_learning_rates(config: Config, batches_per_epoch: int) -> list[float]:
    """The learning rate in effect at the start of each epoch: that of the epoch's first optimizer step."""
    lr = build_schedule(config, batches_per_epoch)
    # str() of the float32 is its shortest decimal form: 0.001 rather than 0.0010000000474974513.
    return [float(str(np.float32(lr(_optimizer_steps(config, batches_per_epoch, e))))) for e in range(config.epochs)]


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
    train = ArrayDataset(*datasets.load(config.dataset, "train", config.data_dir))
    test = ArrayDataset(*datasets.load(config.dataset, "test", config.data_dir))
    datasets.check_splits(train.arrays[0], test.arrays[0])
    splits = {"train": train, "test": test}
    if config.val_fraction:
        splits["train"], splits["val"] = random_split(train, [1 - config.val_fraction, config.val_fraction], seed=config.seed)
    return {
        name: DataLoader(data, config.batch_size, shuffle=True, seed=config.seed)
        if name == "train" else DataLoader(data, config.eval_batch_size)
        for name, data in splits.items()
    }


def initial_state(config: Config, sample: np.ndarray, batches_per_epoch: int, num_classes: int = 10) -> TrainState:
    """The run's model and optimizer at step 0, seeded by ``config.seed``, for inputs like ``sample`` and
    ``num_classes`` classes."""
    optimizer = build_optimizer(config, batches_per_epoch)
    model = build_model(config, num_classes, np.shape(sample)[1:])
    return create_train_state(model, optimizer, sample, seed=config.seed)


def run(
    config: Config, log: Callable[[str], None] | None = print, folder: Run | None = None,
    callbacks: Sequence[callbacks.Callback] = (),
) -> dict[str, Any]:
    """Trains and evaluates as ``config`` says; returns the report.

    Args:
      config: the run.
      log: where the primer's lines go (None: nowhere).
      folder: a ``runs.Run``: the run's folder, where ``config.json``, ``metrics.jsonl``, the checkpoints and
        ``report.json`` go; with ``resume``, the run continues from its latest checkpoint. The folder is
        claimed before any work (``jaxtrain.ownership``), and closed at the end.
      callbacks: more of ``fit``'s callbacks (``jaxtrain.callbacks.TensorBoard``, a user's own), after the
        run's own (its lr record, early stopping, the plateau schedule, a target accuracy).

    Returns:
      ``dataset``, ``model``, ``batch_size``, ``device``, ``devices`` and ``processes`` (what the run
      was split over), ``config``, ``model_options`` (the model's
      resolved ``dropout``, ``batch_norm`` and ``dtype``), ``num_classes`` and ``class_names`` (None where
      the labels are their own names), ``history`` (per epoch: ``epoch``, ``lr``,
      ``train_loss``, ``test_loss``, ``test_accuracy``, with a validation split ``val_loss`` and
      ``val_accuracy``, ``seconds``, ``samples_per_second``), ``steps_per_call`` and ``data_on_device`` as
      run, ``feeding`` (those, the ``backend``, and ``why``: what chose each, ``jaxtrain.auto``), and the
      final ``test_accuracy`` (a fraction), ``compile_seconds`` (the calls' compilation), ``compilations``
      (every XLA program of the run: ``compiler.Compilations``) and ``samples_per_second`` (``steady_speed``). Of several processes, only process 0 logs and writes.
    """
    if not devices.is_main_process():
        log = None
    if folder:
        folder.claim()  # owned (locked, checked) before any work: a second process is refused at once
    mesh = devices.make_mesh(config.devices)
    devices.check_batch_size(mesh, config.batch_size)
    data = loaders(config)
    about = datasets.info(config.dataset, config.data_dir)
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
    start = time.perf_counter()
    final = evaluate(state, test_loader)
    eval_seconds = time.perf_counter() - start
    if log:
        log(f"Accuracy on the {final['count']} test images: {100 * final['accuracy']:.2f}%")
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
        "test_examples": final["count"],
        "history": history,
        "test_accuracy": final["accuracy"],
        "test_loss": final["loss"],
        "compile_seconds": compile_seconds,
        "compilations": compiled.stop().as_dict(),
        "eval_seconds": eval_seconds,
        "samples_per_second": steady_speed(history),
        **stop_report(stopping, history),
    }
    if folder and devices.is_main_process():
        deliver(report, folder.folder / "report.json", "report")  # a full disk: printed on stdout instead
    return report


def load_run(folder: str | Path, checkpoint: int | str = "latest") -> tuple[TrainState, Config]:
    """The trained model of a run folder: ``torch.load`` and ``model.load_state_dict`` in one call.

    Args:
      folder: a run folder written by ``run`` (``python -m jaxtrain train --run-dir``), or by
        ``fit(..., run=Run(folder))`` with jaxtrain's ``MLP`` or ``CNN`` (``jaxtrain.record``: the optimizer's
        state is then left out, and the ``Config``'s dataset is the default, since ``fit`` does not know it).
      checkpoint: "latest", "best" (by validation accuracy, else test accuracy) or a checkpoint's step.

    Returns:
      The ``TrainState`` of that checkpoint and the run's ``Config``.

    Example:
      >>> state, config = load_run("runs/mlp", "best")
      >>> evaluate(state, loaders(config)["test"])
    """
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"run folder {folder}: no config.json; expected a folder written by --run-dir")
    settings = _read_settings(path)
    if record.made_by_fit(settings):  # made by fit from Python: the model is recorded, not the optimizer
        sample = np.zeros((1, *settings["input_shape"]), settings["input_dtype"])
        with Run(folder) as saved:
            template = create_train_state(record.model(settings, str(folder)), optax.identity(), sample)
            return saved.restore(template, checkpoint, model_only=True)[0], record.config(settings)
    _check_settings(settings, path)
    sample = np.zeros((1, *settings.pop("input_shape")), settings.pop("input_dtype"))
    num_classes = settings.pop("num_classes", 10)
    settings.pop("class_names", None)
    config = Config(**{k: tuple(v) if k == "milestones" else v for k, v in settings.items()})
    saved = Run(folder)
    try:  # the schedule's length changes values, not shapes: 1 batch per epoch builds the same pytree
        state, _ = saved.restore(initial_state(config, sample, 1, num_classes), checkpoint)
    finally:
        saved.close()
    return state, config


def _read_settings(path: Path) -> dict[str, Any]:
    """A run's ``config.json``, refused in one line when it is not a JSON object."""
    try:
        settings = json.loads(path.read_text())
    except ValueError as error:
        raise ValueError(f"{path}: not JSON ({error}); expected the config.json that train --run-dir writes") from None
    if not isinstance(settings, dict):
        raise ValueError(f"{path}: a JSON {type(settings).__name__}; expected an object of settings, as train --run-dir writes")
    return settings


def _check_settings(settings: dict[str, Any], path: Path) -> None:
    """Refuses a ``config.json`` with a setting that this version does not know, or without one it needs: read
    with defaults, either would rebuild another model than the one saved."""
    needed = {field.name for field in dataclasses.fields(Config)} | {"input_shape", "input_dtype"}
    unknown = sorted(set(settings) - needed - {"num_classes", "class_names"})
    if unknown:
        raise ValueError(f"{path}: unknown setting {unknown[0]!r} (written by another version of jaxtrain?); expected those of Config")
    missing = sorted(needed - set(settings))
    if missing:
        raise ValueError(f"{path}: no setting {missing[0]!r}; expected every setting of the run, as train --run-dir writes them")
