"""Pictures of a benchmark: test accuracy per epoch, and speed by batch size. matplotlib is imported on use."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_bench(result: dict[str, Any], path: str | Path) -> None:
    """Draws one row per model: each program's test accuracy per epoch (at the first batch size), and its
    samples/s by batch size (log scales), from a ``compare.bench`` result.

    Example:
      >>> plot_bench(bench(Config(dataset="digits", epochs=3), programs=PRESETS["frameworks"]), "bench.png")
    """
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(row["model"] for row in result["rows"]))
    programs = list(dict.fromkeys(row["program"] for row in result["rows"]))
    fig, axes = plt.subplots(len(models), 2, figsize=(10, 3.2 * len(models)), squeeze=False)
    for (acc_ax, speed_ax), model in zip(axes, models):
        for i, program in enumerate(programs):
            runs = [r for r in result["runs"] if r["model"] == model and r["program"] == program]
            rows = [r for r in result["rows"] if r["model"] == model and r["program"] == program]
            if not runs:
                continue
            history = [h for h in runs[0]["history"] if h.get("test_accuracy") is not None]
            if history:
                acc_ax.plot([h["epoch"] for h in history], [100 * h["test_accuracy"] for h in history], "-o",
                            color=f"C{i}", ms=3, label=program)
            speed_ax.plot([r["batch_size"] for r in rows], [r["samples_per_second"] for r in rows], "-o",
                          color=f"C{i}", ms=4, label=program)
        acc_ax.set(title=f"{model}: test accuracy per epoch (batch {result['rows'][0]['batch_size']})",
                   xlabel="epoch", ylabel="accuracy (%)")
        speed_ax.set(title=f"{model}: training speed", xlabel="batch size", ylabel="samples/s", xscale="log", yscale="log")
        for ax in (acc_ax, speed_ax):
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)


def plot_batch_sizes(result: dict[str, Any], path: str | Path) -> None:
    """Draws one panel per model: each program's samples/s by batch size (log scales), from a
    ``compare.bench`` result that swept several batch sizes.

    Example:
      >>> result = bench(Config(dataset="digits", epochs=2), models=("mlp", "cnn"), batch_sizes=(32, 128, 512))
      >>> plot_batch_sizes(result, "sweep.png")
    """
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(row["model"] for row in result["rows"]))
    programs = list(dict.fromkeys(row["program"] for row in result["rows"]))
    batch_sizes = sorted({row["batch_size"] for row in result["rows"]})
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 3.6), squeeze=False)
    for ax, model in zip(axes[0], models):
        for i, program in enumerate(programs):
            rows = sorted((r for r in result["rows"] if r["model"] == model and r["program"] == program),
                          key=lambda r: r["batch_size"])
            if rows:
                ax.plot([r["batch_size"] for r in rows], [r["samples_per_second"] for r in rows], "-o",
                        color=f"C{i}", ms=4, label=program)
        ax.set(title=f"{model}: training speed by batch size", xlabel="batch size", ylabel="samples/s",
               xscale="log", yscale="log")
        ax.set_xticks(batch_sizes)
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)
