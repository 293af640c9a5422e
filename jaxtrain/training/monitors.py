"""Callbacks that watch a run as it goes: ``fit``'s own, called beside the user's (the primer's epoch line,
``EpochLine``; a progress bar, ``ProgressBar``; ``DivergenceGuard``, which stops a run whose loss is no longer
finite), and ``TensorBoard``, which writes each epoch's numbers as TensorBoard events.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from jaxtrain.parallel import devices
from jaxtrain.training.callbacks import Callback, Context


class DivergenceGuard(Callback):
    """Stops the run in one line once an epoch's training loss is not finite (the run diverged)."""

    def on_epoch_end(self, context: Context) -> None:
        loss = context.record["train_loss"]
        if not np.isfinite(loss):
            raise FloatingPointError(
                f"epoch {context.epoch}: the training loss is {loss}; expected a finite number "
                f"(the run diverged: try a lower learning rate, or clipping the gradient norm)"
            )


class EpochLine(Callback):
    """The primer's ``Epoch N, Loss: …`` line after each epoch, followed by its validation and test loss and
    accuracy where they were measured."""

    def __init__(self, log: Callable[[str], None]):
        self.log = log

    def on_epoch_end(self, context: Context) -> None:
        record = context.record
        parts = [f"Epoch {context.epoch}, Loss: {record['train_loss']}"]
        for name in ("val", "test", *sorted({k[:-5] for k in record if k.endswith("_loss")} - {"train", "val", "test"})):
            if f"{name}_loss" in record:
                parts.append(f"{name} loss: {record[f'{name}_loss']:.4f}")
            if f"{name}_accuracy" in record:
                parts.append(f"{name} accuracy: {100 * record[f'{name}_accuracy']:.2f}%")
        self.log(", ".join(parts))


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython") and getattr(sys.modules["IPython"], "get_ipython", lambda: None)()
    return type(shell).__name__ == "ZMQInteractiveShell"


class ProgressBar(Callback):
    """A progress bar of each epoch in examples (``tqdm.auto``: on a terminal, and in Jupyter); it never
    reads the loss. Shown by process 0, where stderr is a terminal or the process is a notebook's kernel."""

    def __init__(self, total: int):
        self.total, self.bar = total, None
        self.shown = devices.is_main_process() and (sys.stderr.isatty() or _in_notebook())

    def on_epoch_start(self, context: Context) -> None:
        if self.shown:
            from tqdm.auto import tqdm  # a dependency of tensorflow-datasets

            self.bar = tqdm(total=self.total, desc=f"epoch {context.epoch}", leave=False, mininterval=0.5, unit="ex", unit_scale=True)

    def on_call_end(self, context: Context) -> None:
        if self.bar is not None:
            self.bar.update(context.examples)

    def on_epoch_end(self, context: Context) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    on_fit_end = on_epoch_end


class TensorBoard(Callback):
    """TensorBoard events written as the run goes: each number of an epoch's record (losses, accuracies,
    ``lr``, ``seconds``) at its epoch, flushed at once, so that ``tensorboard --logdir`` shows a run under way.
    Process 0 writes; needs tensorboardX (``pip install 'jaxtrain[tensorboard]'``).

    Args:
      folder: the events folder, e.g. ``runs/mlp/tensorboard`` (``curves.write_tensorboard``'s, after a run).

    Example:
      >>> fit(state, train, 10, test, callbacks=[TensorBoard("runs/mlp/tensorboard")])
    """

    def __init__(self, folder: str | Path):
        try:
            from tensorboardX import SummaryWriter  # noqa: F401
        except ImportError:
            raise ImportError("TensorBoard needs tensorboardX: pip install 'jaxtrain[tensorboard]'") from None
        self.folder, self.writer = Path(folder), None

    def on_fit_start(self, context: Context) -> None:
        if devices.is_main_process():
            from tensorboardX import SummaryWriter

            self.writer = SummaryWriter(str(self.folder))

    def on_epoch_end(self, context: Context) -> None:
        if self.writer is None:
            return
        for key, value in context.record.items():
            if key != "epoch" and isinstance(value, int | float) and not isinstance(value, bool):
                self.writer.add_scalar(key, value, context.epoch)
        self.writer.flush()

    def on_fit_end(self, context: Context) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
