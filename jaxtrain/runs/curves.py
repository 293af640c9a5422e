"""Learning curves of run folders: a picture with matplotlib, or TensorBoard events with tensorboardX.

Both read the folders' ``metrics.jsonl``, the lines that ``runs.folder.Run`` appends as a run goes, so a run
can be drawn while it trains or after it crashed. Neither needs TensorFlow.

  python -m jaxtrain plot runs/mlp runs/cnn -o curves.png
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_metrics(folder: str | Path) -> list[dict[str, Any]]:
    """The records of a run folder's ``metrics.jsonl``, in order; a last line cut short by a crash is left out.

    Raises:
      FileNotFoundError: the folder has no ``metrics.jsonl``.
    """
    path = Path(folder) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"run folder {folder}: no metrics.jsonl; expected a folder written by --run-dir")
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line being written when the process was killed
    return records


def plot_runs(folders: list[str | Path], path: str | Path) -> None:
    """Draws the training and evaluation loss and the accuracy per epoch of each run into ``path`` (PNG).

    Example:
      >>> plot_runs(["runs/mlp", "runs/cnn"], "curves.png")
    """
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 3.6))
    for i, folder in enumerate(folders):
        epochs = [r for r in read_metrics(folder) if "step" not in r]
        x = [r["epoch"] for r in epochs]
        name, color = Path(folder).name, f"C{i}"
        loss_ax.plot(x, [r["train_loss"] for r in epochs], "-o", color=color, ms=3, label=f"{name} train")
        for split, style in (("val", ":"), ("test", "--")):
            if any(f"{split}_loss" in r for r in epochs):
                loss_ax.plot(x, [r.get(f"{split}_loss") for r in epochs], style, color=color, label=f"{name} {split}")
                acc_ax.plot(x, [100 * r[f"{split}_accuracy"] if r.get(f"{split}_accuracy") is not None else None
                                for r in epochs], style + "o", color=color, ms=3, label=f"{name} {split}")
    loss_ax.set(title="loss per epoch", xlabel="epoch", ylabel="cross-entropy", yscale="log")
    acc_ax.set(title="accuracy per epoch", xlabel="epoch", ylabel="accuracy (%)")
    for ax in (loss_ax, acc_ax):
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def write_tensorboard(folder: str | Path) -> Path:
    """Writes a run folder's metrics as TensorBoard events into ``<folder>/tensorboard``: each number of an
    epoch's record at its epoch, each logged step's loss at its step.

    Returns:
      The events folder, for ``tensorboard --logdir``.

    Raises:
      ImportError: tensorboardX is not installed (``pip install 'jaxtrain[tensorboard]'``).
    """
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        raise ImportError("--tensorboard needs tensorboardX: pip install 'jaxtrain[tensorboard]'") from None
    out = Path(folder) / "tensorboard"
    with SummaryWriter(str(out)) as writer:
        for record in read_metrics(folder):
            if "step" in record:
                writer.add_scalar("train_loss_steps", record["train_loss"], record["step"])
                continue
            for key, value in record.items():
                if key != "epoch" and isinstance(value, int | float) and not isinstance(value, bool):
                    writer.add_scalar(key, value, record["epoch"])
    return out
