"""Callbacks: code of one's own inside ``fit``, at the boundaries it already has, as Keras' and Lightning's.

``fit(..., callbacks=[...])`` calls each ``Callback``'s hooks on the host: at the start and end of the fit
and of each epoch, and after every compiled call (``Callback.every`` makes a call end every that many steps
of an epoch). A hook sees a ``Context``: the state, the epoch, the history, this epoch's metrics once they
are read. It may stop the run (``context.stop(reason)``), change the learning rate (``context.lr = ...``,
a new value for the same compiled step) or replace the state. A hook never runs inside a compiled call,
so it adds no host sync there; the epoch's metrics are read once, before ``on_epoch_end``.

``EarlyStopping``, ``ReduceLROnPlateau`` and ``TargetAccuracy`` are callbacks, and so are ``fit``'s own
epoch line, progress bar and divergence guard, and TensorBoard's events (``jaxtrain.training.monitors``).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from jaxtrain.training import optim
from jaxtrain.training.arguments import check_integer, check_number, is_number
from jaxtrain.training.schedules import Plateau
from jaxtrain.training.step import TrainState

_IMPORTED = time.monotonic()


def process_seconds() -> float:
    """Seconds since this process started (Linux: from ``/proc``), else since jaxtrain was imported: the
    clock of a time-to-accuracy, as MLPerf's training benchmarks count it."""
    try:
        after_name = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started = int(after_name[19]) / os.sysconf("SC_CLK_TCK")  # field 22: start time, in ticks since boot
        return float(Path("/proc/uptime").read_text().split()[0]) - started
    except (OSError, IndexError, ValueError):
        return time.monotonic() - _IMPORTED


class Context:
    """What a hook sees and may change: one per ``fit``.

    Attributes:
      state: the current ``TrainState``; a hook may assign another (the next call takes it).
      epoch: the epoch under way (1-based; 0 before the first).
      epochs: the epochs that ``fit`` was asked for.
      step: optimizer steps (batches) taken, counted on the host.
      history: the records of the epochs done (``fit``'s history).
      record: this epoch's metrics in ``on_epoch_end`` (``train_loss``, ``val_loss``, ``lr`` ...); a hook may
        add entries, which go into the history and ``metrics.jsonl``. None before.
      losses: the batch losses of the epoch so far, on the device and unread (reading them is a host sync).
      examples: examples taken in the last call (``on_call_end``).
      stop_reason: why the run stops, once a hook has called ``stop``.
      run: the run folder that ``fit`` saves into (``jaxtrain.runs.folder.Run``), or None.
    """

    def __init__(self, state: TrainState, epochs: int, history: list[dict[str, Any]], run: Any = None):
        self.state, self.epochs, self.history, self.run = state, epochs, history, run
        self.epoch, self.step, self.examples = 0, 0, 0
        self.record: dict[str, Any] | None = None
        self.losses: list[jax.Array] = []
        self.stop_reason: str | None = None

    def stop(self, reason: str) -> None:
        """Ends the run after this epoch (or after this call, in ``on_call_end``), for ``reason``, which
        ``fit`` prints and the report keeps. The first reason given wins."""
        self.stop_reason = self.stop_reason or reason

    @property
    def lr(self) -> float | None:
        """The learning rate held in the optimizer state (``optim.adjustable_lr``), or None (one host read)."""
        return optim.learning_rate(self.state.opt_state)

    @lr.setter
    def lr(self, value: float) -> None:
        """Sets the learning rate from the next call on, without recompiling (``optim.set_learning_rate``)."""
        self.state = self.state.replace(opt_state=optim.set_learning_rate(self.state.opt_state, value))


class Callback:
    """The hooks of ``fit``; each does nothing until overridden.

    ``every``: if set, ``fit`` also ends a compiled call every this many steps of an epoch, so that
    ``on_call_end`` sees those boundaries (a fused call is cut there, never read inside).

    Example:
      >>> class Halve(Callback):
      ...     def on_epoch_end(self, context):
      ...         if context.epoch == 3:
      ...             context.lr = context.lr / 2
    """

    every: int | None = None

    def on_fit_start(self, context: Context) -> None:
        """Before the first epoch (after a resumed run's state is restored)."""

    def on_epoch_start(self, context: Context) -> None:
        """Before an epoch's first call."""

    def on_call_end(self, context: Context) -> None:
        """After each compiled call; ``context.losses`` holds the epoch's losses so far, unread."""

    def on_epoch_end(self, context: Context) -> None:
        """After an epoch, its loss read and its evaluations done: ``context.record``."""

    def on_fit_end(self, context: Context) -> None:
        """After the last epoch, or the one a hook stopped at."""

    def state_dict(self) -> dict[str, Any] | None:
        """What a resumed run needs to continue this callback (JSON, into the checkpoint), or None."""
        return None

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continues from ``state_dict()``'s values."""


def _overrides(callback: Callback, hook: str) -> bool:
    return hook in vars(callback) or getattr(type(callback), hook) is not getattr(Callback, hook)


def call(callbacks: Sequence[Callback], hook: str, context: Context) -> None:
    """Calls ``hook`` of each callback that has one, in order (``fit``'s dispatch)."""
    for callback in callbacks:
        if _overrides(callback, hook):
            getattr(callback, hook)(context)


def _monitored(context: Context, monitor: str, who: str) -> float:
    record = context.record or {}
    if monitor not in record:
        raise ValueError(
            f"{who}(monitor={monitor!r}): epoch {context.epoch} measured no {monitor!r} (it has {', '.join(record)}); "
            f"expected a metric of the epoch, e.g. val_loss with a validation loader (eval_loader={{'val': ...}})"
        )
    return float(record[monitor])


def _mode(monitor: str, mode: str) -> str:
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode={mode!r}; expected 'auto', 'min' or 'max'")
    return mode if mode != "auto" else "max" if "accuracy" in monitor else "min"


class EarlyStopping(Callback):
    """Stops the run once ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs.

    With ``restore_best``, the state at the end (on a stop, or after the last epoch) is the best epoch's, bit
    for bit: a copy of it is kept on the device (one state's memory); a run folder's last checkpoint is then
    that epoch's too (``Run.save`` drops the checkpoints after it). In a run folder, each new best epoch is
    also checkpointed (even when no save is due) and kept whatever ``Run(keep=...)`` says (``Run.pin``), so
    a resumed run, whose copy on the device is gone, ends on the best epoch from before the resume just as
    well: it reads that checkpoint back. (A run folder saved before this callback kept ``best_step``, or a
    fit without a run folder, cannot: it ends on the best epoch since the resume.)

    Args:
      monitor: the metric of ``Context.record``: "val_loss", "val_accuracy", "test_loss" ...
      patience: epochs without improvement before stopping.
      min_delta: the least change that counts as an improvement.
      mode: "min", "max", or "auto" (max for an accuracy, else min).
      restore_best: end on the best epoch's state.

    Attributes:
      best_epoch: the best epoch so far, ``best`` its value and ``best_step`` the optimizer steps taken by its end.
      restored_epoch: the epoch whose state the run ended on, once the best state was restored (else None).

    Example:
      >>> state, history = fit(state, train, 300, {"val": val}, callbacks=[EarlyStopping(patience=3)])
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 5, min_delta: float = 0.0, mode: str = "auto",
                 restore_best: bool = True):
        check_integer("patience", patience, 0, " (epochs)")
        check_number("min_delta", min_delta)
        self.monitor, self.patience, self.min_delta = monitor, patience, float(min_delta)
        self.mode, self.restore_best = _mode(monitor, mode), restore_best
        self.best, self.best_epoch, self.best_step, self.wait = None, None, None, 0
        self.stopped: str | None = None
        self.restored_epoch: int | None = None  # the epoch whose state the run ended on, once restored
        self._best_state: TrainState | None = None

    def on_fit_start(self, context: Context) -> None:
        if self.restore_best and context.run is not None and self.best_step is not None:
            context.run.pin(self.best_step)  # resumed: the best epoch so far is a checkpoint to keep

    def _improved(self, value: float) -> bool:
        if self.best is None:
            return not math.isnan(value)
        return value < self.best - self.min_delta if self.mode == "min" else value > self.best + self.min_delta

    def on_epoch_end(self, context: Context) -> None:
        value = _monitored(context, self.monitor, "EarlyStopping")
        if self._improved(value):
            self.best, self.best_epoch, self.best_step, self.wait = value, context.epoch, context.step, 0
            if self.restore_best:  # a copy on the device, untouched by the next call's donation (no sync)
                self._best_state = _copy_state(context.state)
                if context.run is not None:  # and on disk, for a resumed run: saved at this epoch's end, kept
                    context.run.pin(context.step)
        else:
            self.wait += 1
            if self.wait >= self.patience and not self.stopped:
                self.stopped = (
                    f"early stopping: {self.monitor} did not improve by more than {self.min_delta:g} for "
                    f"{self.patience} epochs; the best was epoch {self.best_epoch} ({self.monitor} {self.best:.6g})"
                )
                context.stop(self.stopped)
        if self.restore_best and (context.stop_reason or context.epoch == context.epochs):
            if self._best_state is not None:
                context.state, self.restored_epoch = self._best_state, self.best_epoch
            elif context.run is not None and self.best_step is not None and self.best_step != context.step:
                # The best epoch came before a resume: its checkpoint, pinned then, holds its state.
                context.state, _ = context.run.restore(context.state, self.best_step)
                self.restored_epoch = self.best_epoch

    def state_dict(self) -> dict[str, Any]:
        keys = ("best", "best_epoch", "best_step", "wait", "stopped")
        return {key: getattr(self, key) for key in keys}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch, self.wait, self.stopped = (state[k] for k in ("best", "best_epoch", "wait", "stopped"))
        self.best_step = state.get("best_step")  # absent from a checkpoint saved before it was kept


@jax.jit
def _copy_state(state: TrainState) -> TrainState:
    """A copy of every array of ``state`` on its devices, as one compiled program (an eager copy compiles one
    program per distinct shape of its leaves)."""
    return jax.tree.map(jnp.copy, state)


class ReduceLROnPlateau(Callback):
    """``torch.optim.lr_scheduler.ReduceLROnPlateau``, stepped once per epoch on ``monitor``: its rule and
    defaults (``schedules.Plateau``); the new rate goes into the optimizer state (build it with
    ``optim.adjustable_lr``), and each epoch's record keeps the rate it trained with, as ``lr``.

    Args:
      monitor: the metric, "val_loss" by default.
      lr: the starting rate, as torch's optimizer holds it (a Python float); None reads it from the state,
        where it is rounded to the parameters' dtype.
      mode, factor, patience, threshold, threshold_mode, cooldown, min_lr, eps: torch's (``schedules.Plateau``).

    Example:
      >>> state = create_train_state(model, adjustable_lr(adam, 1e-3), images[:1])
      >>> fit(state, train, 50, {"val": val}, callbacks=[ReduceLROnPlateau(lr=1e-3, patience=3)])
    """

    def __init__(self, monitor: str = "val_loss", lr: float | None = None, **plateau: Any):
        self.monitor, self._lr, self._options = monitor, lr, plateau
        self.plateau = Plateau(1.0 if lr is None else lr, **plateau)  # checks the arguments now
        self._loaded = False

    def on_fit_start(self, context: Context) -> None:
        if context.lr is None:
            raise ValueError("ReduceLROnPlateau: the optimizer state holds no learning rate to lower; expected an "
                             "optimizer built with jaxtrain.adjustable_lr, e.g. adjustable_lr(adam, 1e-3)")
        if self._lr is None and not self._loaded:
            self.plateau.lr = context.lr

    def on_epoch_end(self, context: Context) -> None:
        old = context.record["lr"] = self.plateau.lr  # the rate this epoch trained with, as torch holds it
        if self.plateau.step(_monitored(context, self.monitor, "ReduceLROnPlateau")) != old:
            context.lr = self.plateau.lr

    def state_dict(self) -> dict[str, Any]:
        return self.plateau.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.plateau.load_state_dict(state)
        self._loaded = True


class TargetAccuracy(Callback):
    """Stops after the first epoch whose ``monitor`` reaches ``target``: a time to accuracy.

    Attributes:
      epoch: that epoch (None until reached), and ``seconds`` the time then since the process started
        (``process_seconds``).

    Example:
      >>> target = TargetAccuracy(0.9)
      >>> fit(state, train, 100, test, callbacks=[target]); target.epoch, target.seconds
    """

    def __init__(self, target: float, monitor: str = "test_accuracy"):
        if not (is_number(target) and 0 < float(target) <= 1):
            raise ValueError(f"target={target!r}; expected an accuracy in (0, 1]")
        self.target, self.monitor = float(target), monitor
        self.epoch: int | None = None
        self.seconds: float | None = None
        self.stopped: str | None = None

    def on_epoch_end(self, context: Context) -> None:
        value = _monitored(context, self.monitor, "TargetAccuracy")
        if self.epoch is None and value >= self.target:
            self.epoch, self.seconds = context.epoch, process_seconds()
            self.stopped = f"{self.monitor} {value:.4f} reached the target {self.target:g} at epoch {context.epoch}"
            context.stop(self.stopped)

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "seconds": self.seconds, "stopped": self.stopped}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.seconds, self.stopped = state["epoch"], state["seconds"], state["stopped"]


class LambdaCallback(Callback):
    """A callback from functions: ``LambdaCallback(on_epoch_end=lambda context: ...)``, any hook by name.

    Example:
      >>> fit(state, train, 5, callbacks=[LambdaCallback(on_epoch_end=lambda c: print(c.record["train_loss"]))])
    """

    def __init__(self, every: int | None = None, **hooks: Callable[[Context], None]):
        for name, hook in hooks.items():
            if not (name.startswith("on_") and hasattr(Callback, name)) or not callable(hook):
                raise ValueError(f"{name}={hook!r}; expected a function of the context for a hook of Callback (on_epoch_end, ...)")
            setattr(self, name, hook)
        self.every = every
