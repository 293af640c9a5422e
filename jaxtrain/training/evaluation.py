"""Evaluation over a whole loader, the primer's test loop: ``evaluate`` runs the compiled ``eval_step`` on
each batch (a short last one padded and masked) and reads the sums once, at the end.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from jaxtrain.data.collate import select
from jaxtrain.data.loader import DataLoader
from jaxtrain.parallel import devices
from jaxtrain.training.metrics import Metric
from jaxtrain.training.metrics import resolve as resolve_metrics
from jaxtrain.training.step import Batch, Key, TrainState, eval_step


def _pad(batch: Batch, size: int) -> tuple[Batch, np.ndarray]:
    """Pads a short batch to ``size`` examples by repeating its first, and masks the padding out."""
    n = len(batch[1])
    mask = np.arange(size) < n
    if n == size:
        return batch, mask
    fill = np.zeros(size - n, np.int64)
    return jax.tree.map(lambda a: np.concatenate([a, np.take(a, fill, axis=0)]), tuple(batch)), mask


def evaluate(
    state: TrainState,
    loader: DataLoader,
    *,
    inputs: Key = None,
    labels: Key = None,
    metrics: Sequence[str | Metric | Callable] = (),
) -> dict[str, Any]:
    """``model.eval()`` and ``torch.no_grad()`` over a whole loader: every example counted exactly once.

    A short last batch is padded to the loader's batch size and masked, so it reuses the compiled step.
    A state placed on a mesh (the state ``fit`` returns) is evaluated there, each batch split over it.

    Args:
      state: the train state.
      loader: the batches: tuples or dicts.
      inputs: which entry of a batch holds the inputs (``collate.select``): a dict's key or a tuple's position;
        None for position 0 or the first of "image", "images", "inputs", "x", "features". Several keys
        (``("ids", "mask")``) give the model a dict of those entries.
      labels: the same for the labels; None for position 1 or the first of "label", "labels", "target",
        "targets", "y".
      metrics: more metrics (``jaxtrain.training.metrics``), computed in the same compiled step and summed over the
        batches exactly: "top5" (any k), "confusion_matrix", a ``Metric``, or a function
        ``fn(logits, labels) -> (B,)`` whose mean is reported under its name. "accuracy" is always given.

    Returns:
      ``{"loss": mean loss, "accuracy": fraction correct, "count": examples}`` and each metric by its name:
      ``top5_accuracy`` a fraction, ``confusion_matrix`` a ``(C, C)`` int64 array (rows: true classes).

    Example:
      >>> evaluate(state, DataLoader(ArrayDataset(test_images, test_labels), batch_size=1000))
      >>> evaluate(state, test_loader, metrics=("top5", "confusion_matrix"))["confusion_matrix"].trace()
    """
    metrics = resolve_metrics(metrics)
    sums, mesh = [], devices.mesh_of(state)
    for batch in loader:
        batch, mask = _pad(select(batch, inputs, labels), loader.batch_size)
        if mesh is not None:
            sharding = devices.batch_sharding(mesh, loader.batch_size)
            rows = devices.local_rows(sharding, (loader.batch_size,))
            batch, mask = devices.global_batch(jax.tree.map(lambda a: a[rows], (batch, mask)), sharding, loader.batch_size)
        # Without metrics, the call as the step is called elsewhere: a keyword would key another compilation.
        sums.append(eval_step(state, batch, mask, metrics=metrics) if metrics else eval_step(state, batch, mask))
    if not sums:
        raise ValueError("evaluate: the loader yielded no batch")
    sums = jax.device_get(sums)  # host sync: the one read of the evaluation
    # Counts add up as int64, exactly; float sums (the loss, a Mean) in float64.
    wide = lambda a: np.asarray(a, np.int64 if np.issubdtype(np.asarray(a).dtype, np.integer) else np.float64)  # noqa: E731
    totals = jax.tree.map(lambda *batches: sum(map(wide, batches)), *sums)
    count = int(totals["count"])
    loss = float(totals["loss_sum"]) / count
    if not np.isfinite(loss):
        raise FloatingPointError(
            f"evaluate: the loss is {loss}; expected a finite number (labels outside 0..C-1, or a diverged model)"
        )
    results = {metric.name: metric.result(totals[metric.name], count) for metric in metrics}
    return {"loss": loss, "accuracy": float(totals["correct"]) / count, "count": count, **results}
