"""Datasets and batch loading: the counterpart of ``torch.utils.data``.

A dataset is anything with ``__getitem__`` and ``__len__``, exactly as in PyTorch. ``DataLoader`` yields
batches of numpy arrays with torch's semantics for ``batch_size``, ``shuffle`` and ``drop_last``, and
draws a fresh permutation for each epoch from ``(seed, epoch)``, so a run is reproducible.
"""

from __future__ import annotations

import math
import os
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

import jax
import numpy as np


@runtime_checkable
class Dataset(Protocol):
    """What a ``DataLoader`` needs of a dataset: PyTorch's map-style protocol."""

    def __getitem__(self, index: int) -> Any: ...

    def __len__(self) -> int: ...


class ArrayDataset:
    """Equal-length arrays indexed together, like ``torch.utils.data.TensorDataset``.

    Args:
      *arrays: arrays sharing their first dimension, e.g. ``images: (N, 28, 28, 1)`` and ``labels: (N,)``.

    Example:
      >>> ds = ArrayDataset(np.zeros((3, 2)), np.arange(3))
      >>> len(ds), ds[1][1]
      (3, 1)
    """

    def __init__(self, *arrays: np.ndarray):
        if not arrays:
            raise ValueError("ArrayDataset needs at least one array")
        self.arrays = tuple(np.asarray(a) for a in arrays)
        lengths = [len(a) for a in self.arrays]
        if len(set(lengths)) != 1:
            raise ValueError(f"ArrayDataset arrays have lengths {lengths}; expected one common length")

    def __getitem__(self, index):
        return tuple(a[index] for a in self.arrays)

    def __len__(self) -> int:
        return len(self.arrays[0])


def default_collate(items: Sequence[Any]) -> Any:
    """Stacks a list of examples into a batch: tuples and dicts field by field, arrays along a new axis 0."""
    first = items[0]
    if isinstance(first, tuple | list):
        return tuple(default_collate([item[i] for item in items]) for i in range(len(first)))
    if isinstance(first, dict):
        return {key: default_collate([item[key] for item in items]) for key in first}
    return np.stack([np.asarray(item) for item in items])


class DataLoader:
    """Batches a dataset with ``torch.utils.data.DataLoader``'s semantics, yielding numpy arrays.

    Each ``iter(loader)`` is one epoch. With ``shuffle=True`` epoch ``e`` visits the examples in the order
    ``loader.indices(e)``, a permutation drawn from ``(seed, e)``: every index once per epoch, a new order
    each epoch, and the same orders for the same seed. An ``ArrayDataset`` is gathered with one fancy
    index per array and batch; any other dataset item by item, then ``collate_fn`` (default: stack).

    Args:
      dataset: a ``Dataset``: ``__getitem__`` and ``__len__``.
      batch_size: examples per batch.
      shuffle: draw a new permutation each epoch instead of visiting examples in order.
      drop_last: drop the last batch when it is short.
      seed: seeds the permutations.
      collate_fn: turns a list of examples into a batch.

    Example:
      >>> loader = DataLoader(ArrayDataset(images, labels), batch_size=32, shuffle=True)
      >>> for inputs, labels in loader: ...
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int = 1,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        collate_fn: Callable[[list], Any] | None = None,
    ):
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r}; expected a positive integer")
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.collate_fn = collate_fn
        self.epoch = 0  # the epoch that the next iter() yields

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def indices(self, epoch: int) -> np.ndarray:
        """The order in which epoch ``epoch`` visits the dataset, truncated as ``drop_last`` asks."""
        n = len(self.dataset)
        order = np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle else np.arange(n)
        return order[: len(self) * self.batch_size] if self.drop_last else order

    def next_epoch(self) -> np.ndarray:
        """Starts the next epoch without gathering anything: returns its order and advances ``epoch``.

        For loops that gather batches themselves (on the device, say) in the order ``iter()`` would.
        """
        order = self.indices(self.epoch)
        self.epoch += 1
        return order

    def __iter__(self) -> Iterator[Any]:
        order = self.next_epoch()
        for start in range(0, len(order), self.batch_size):
            yield self.gather(order[start : start + self.batch_size])

    def gather(self, index: np.ndarray) -> Any:
        """The batch of the examples at ``index``: one fancy index per array, or item by item and collated."""
        arrays = self.arrays()
        if arrays is not None:
            return tuple(np.take(a, index, axis=0) for a in arrays)
        return (self.collate_fn or default_collate)([self.dataset[int(i)] for i in index])

    def arrays(self) -> tuple[np.ndarray, ...] | None:
        """The dataset's arrays when batches are gathered from them directly (an ``ArrayDataset`` and no
        ``collate_fn``), else None."""
        if self.collate_fn is None and isinstance(self.dataset, ArrayDataset):
            return self.dataset.arrays
        return None


def prefetch_to_device(batches: Iterator[Any], size: int = 2, device: jax.Device | None = None) -> Iterator[Any]:
    """Moves batches onto the device in a background thread, ``size`` ahead of the consumer.

    Host-side gathering and the host-to-device copy then overlap the compiled step. The thread stops
    when the input ends, when the consumer stops early (``close()`` or garbage collection), or on error,
    which is re-raised in the consumer.

    Example:
      >>> for inputs, labels in prefetch_to_device(iter(loader)): ...
    """
    slots: queue.Queue = queue.Queue(maxsize=size)
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            for batch in batches:
                if not put(jax.device_put(batch, device)):
                    return
            put(done)
        except BaseException as error:  # handed to the consumer, which re-raises it
            put(error)

    thread = threading.Thread(target=produce, daemon=True, name="jaxtrain-prefetch")
    thread.start()
    try:
        while (item := slots.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


def fits_on_device(nbytes: int, device: jax.Device | None = None, fraction: float = 0.25) -> bool:
    """Whether ``nbytes`` of data take at most ``fraction`` of the device's memory (host RAM for a CPU)."""
    device = device or jax.devices()[0]
    limit = (device.memory_stats() or {}).get("bytes_limit")
    if limit is None:
        limit = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return nbytes <= fraction * limit
