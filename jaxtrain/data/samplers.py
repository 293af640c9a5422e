"""Samplers: which examples each epoch visits, the counterpart of ``torch.utils.data.Sampler``.

A sampler gives ``indices(seed, epoch)``, a pure function of the loader's seed and the epoch, so that a run
that resumes draws what an uninterrupted one would; ``DataLoader(sampler=...)`` batches those examples.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Sampler(Protocol):
    """What ``DataLoader(sampler=...)`` needs: each epoch's dataset indices, a pure function of ``(seed, epoch)``."""

    def indices(self, seed: int, epoch: int) -> np.ndarray: ...

    def __len__(self) -> int: ...


class WeightedRandomSampler:
    """Draws examples in proportion to ``weights``, like ``torch.utils.data.WeightedRandomSampler``.

    For imbalanced classes, weight each example by ``1 / count(its class)``. Epoch ``e`` draws
    ``indices(seed, e)``, a pure function of the loader's seed and the epoch: runs and resumptions agree.

    Args:
      weights: ``(N,)`` non-negative weights, one per dataset example; they need not sum to 1.
      num_samples: draws per epoch, which ``len(loader)`` follows.
      replacement: draw with replacement; without, an example appears at most once per epoch.

    Example:
      >>> sampler = WeightedRandomSampler(1.0 / np.bincount(labels)[labels], num_samples=len(labels))
      >>> loader = DataLoader(ArrayDataset(images, labels), batch_size=32, sampler=sampler, seed=0)
    """

    def __init__(self, weights: Sequence[float] | np.ndarray, num_samples: int, replacement: bool = True):
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples <= 0:
            raise ValueError(f"num_samples={num_samples!r}; expected a positive int")
        if not isinstance(replacement, bool):
            raise ValueError(f"replacement={replacement!r}; expected a bool")
        self.weights = w = np.asarray(weights, np.float64)
        if w.ndim != 1:
            raise ValueError(f"weights.shape={w.shape!r}; expected one dimension, (N,)")
        positive = int(np.sum(w > 0))
        if not (np.all(np.isfinite(w)) and np.all(w >= 0) and positive > 0):
            shown = np.array2string(w, threshold=6)  # one line, however many weights
            raise ValueError(f"weights={shown}; expected finite, non-negative numbers, at least one positive")
        if not replacement and num_samples > positive:
            expected = f"at most {positive}, the examples with a positive weight, when replacement=False"
            raise ValueError(f"num_samples={num_samples!r}; expected {expected}")
        self.num_samples, self.replacement = num_samples, replacement

    def indices(self, seed: int, epoch: int) -> np.ndarray:
        """Epoch ``epoch``'s draws: ``(num_samples,)`` int64 dataset indices."""
        p = self.weights / self.weights.sum()
        draws = np.random.default_rng([seed, epoch]).choice(len(p), self.num_samples, self.replacement, p)
        return draws.astype(np.int64)

    def __len__(self) -> int:
        return self.num_samples
