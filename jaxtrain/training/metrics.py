"""Metrics of an evaluation: accuracy, top-k accuracy, a confusion matrix, or a function of one's own.

A metric is two small functions, as torchmetrics' ``update`` and ``compute``: ``sums`` runs inside the
compiled evaluation step (``step.eval_step``) and returns what one batch adds, counts wherever it can;
``evaluate`` adds those sums over the batches on the host, exactly (integers), and ``result`` turns the
totals into the metric. So an accuracy over 10 000 examples is a count of correct ones divided once by
10 000, never a mean of batch means, and nothing is read from the device until the last batch is done.

Names follow Keras and torchmetrics: ``"accuracy"``, ``"top5"`` (Keras' ``SparseTopKCategoricalAccuracy(k=5)``,
torchmetrics' ``MulticlassAccuracy(top_k=5)``), ``"confusion_matrix"`` (``MulticlassConfusionMatrix``: rows
are the true classes, columns the predicted ones, as in torchmetrics and scikit-learn).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


class Metric:
    """A metric of ``evaluate``: what each batch adds (in the compiled step), and the result of the totals.

    Subclasses are frozen dataclasses: a metric is part of the compiled program, so it must be hashable,
    and two equal metrics share the program.
    """

    name: str

    def sums(self, logits: jax.Array, labels: jax.Array, mask: jax.Array) -> Any:
        """A batch's contribution, traced inside the evaluation step.

        Args:
          logits: ``(B, C)`` the model's outputs.
          labels: ``(B,)`` integer class indices.
          mask: ``(B,)`` booleans: the real examples of a padded batch.

        Returns:
          A pytree of arrays whose sum over the batches ``result`` reads; padding must add nothing.
        """
        raise NotImplementedError

    def result(self, total: Any, count: int) -> Any:
        """The metric from the summed ``sums`` (numpy, int64 or float64) and the number of examples."""
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class Accuracy(Metric):
    """The fraction of examples whose highest logit is their label's (``argmax``, ties to the lowest class)."""

    name: str = "accuracy"

    def sums(self, logits: jax.Array, labels: jax.Array, mask: jax.Array) -> jax.Array:
        return jnp.sum((jnp.argmax(logits, -1) == labels) & mask)

    def result(self, total: np.ndarray, count: int) -> float:
        return float(total) / count


@dataclasses.dataclass(frozen=True)
class TopKAccuracy(Metric):
    """The fraction of examples whose label is among the ``k`` highest logits (``torch.topk``'s choice on ties).

    Example:
      >>> evaluate(state, test_loader, metrics=[TopKAccuracy(5)])["top5_accuracy"]
    """

    k: int = 5
    name: str = ""

    def __post_init__(self):
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"TopKAccuracy(k={self.k!r}); expected a positive integer")
        if not self.name:
            object.__setattr__(self, "name", f"top{self.k}_accuracy")

    def sums(self, logits: jax.Array, labels: jax.Array, mask: jax.Array) -> jax.Array:
        classes = logits.shape[-1]
        if self.k > classes:  # at trace time: the number of classes is the logits' static shape
            raise ValueError(f"{self.name}: k={self.k} but the model gives {classes} classes; expected k <= {classes}")
        _, top = jax.lax.top_k(logits, self.k)
        return jnp.sum(jnp.any(top == labels[:, None], -1) & mask)

    def result(self, total: np.ndarray, count: int) -> float:
        return float(total) / count


@dataclasses.dataclass(frozen=True)
class ConfusionMatrix(Metric):
    """``(C, C)`` counts: row ``i``, column ``j`` is the examples of class ``i`` predicted as ``j`` (argmax).

    Its row sums are the examples of each class and its trace the correct ones. Labels outside ``0..C-1``
    are counted nowhere.
    """

    name: str = "confusion_matrix"

    def sums(self, logits: jax.Array, labels: jax.Array, mask: jax.Array) -> jax.Array:
        classes = logits.shape[-1]
        predicted = jnp.argmax(logits, -1)
        return jnp.zeros((classes, classes), jnp.int32).at[labels, predicted].add(mask.astype(jnp.int32), mode="drop")

    def result(self, total: np.ndarray, count: int) -> np.ndarray:
        return np.asarray(total, np.int64)


@dataclasses.dataclass(frozen=True)
class Mean(Metric):
    """The mean over the examples of ``fn(logits, labels) -> (B,)``: a metric of one's own, summed per example.

    Example:
      >>> def margin(logits, labels):   # the label's logit above the best other one
      ...     true = jnp.take_along_axis(logits, labels[:, None], -1)[:, 0]
      ...     return true - jnp.max(jnp.where(jax.nn.one_hot(labels, logits.shape[-1]) > 0, -jnp.inf, logits), -1)
      >>> evaluate(state, test_loader, metrics=[margin])["margin"]
    """

    fn: Callable[[jax.Array, jax.Array], jax.Array]
    name: str = ""

    def __post_init__(self):
        if not self.name:
            object.__setattr__(self, "name", getattr(self.fn, "__name__", type(self.fn).__name__))

    def sums(self, logits: jax.Array, labels: jax.Array, mask: jax.Array) -> jax.Array:
        values = self.fn(logits, labels)
        if jnp.shape(values) != labels.shape:
            raise ValueError(f"metric {self.name!r}: gave shape {jnp.shape(values)}; expected one value per example, {labels.shape}")
        return jnp.sum(jnp.where(mask, values, 0).astype(jnp.float32))

    def result(self, total: np.ndarray, count: int) -> float:
        return float(total) / count


_TOP_K = re.compile(r"top_?(\d+)(_accuracy)?")


def get(metric: str | Metric | Callable) -> Metric:
    """The metric a name stands for: "accuracy", "top5" (or "top_5", "top5_accuracy"), "confusion_matrix";
    a ``Metric`` as it is; any other callable as ``Mean(fn)``.

    Raises:
      ValueError: an unknown name, in one line listing the known ones.
    """
    if isinstance(metric, Metric):
        return metric
    if isinstance(metric, str):
        if metric == "accuracy":
            return Accuracy()
        if metric == "confusion_matrix":
            return ConfusionMatrix()
        if match := _TOP_K.fullmatch(metric):
            return TopKAccuracy(int(match.group(1)))
        raise ValueError(f"metrics: {metric!r}; expected 'accuracy', 'topK' (e.g. 'top5'), 'confusion_matrix', a Metric or a function")
    if callable(metric):
        return Mean(metric)
    raise ValueError(f"metrics: {metric!r}; expected 'accuracy', 'topK' (e.g. 'top5'), 'confusion_matrix', a Metric or a function")


def resolve(metrics: Sequence[str | Metric | Callable]) -> tuple[Metric, ...]:
    """``get`` of each, in order, without accuracy (``evaluate`` always gives it) and refusing a name twice."""
    if isinstance(metrics, str | Metric) or callable(metrics):
        metrics = (metrics,)
    resolved = tuple(m for m in map(get, metrics) if m != Accuracy())
    names = [m.name for m in resolved]
    if clash := next((n for n in names if names.count(n) > 1 or n in ("loss", "accuracy", "count")), None):
        raise ValueError(f"metrics: two named {clash!r} (with loss, accuracy and count, which evaluate always gives); expected one")
    return resolved
