"""Datasets and batch loading: the counterpart of ``torch.utils.data``.

A dataset is anything with ``__getitem__`` and ``__len__``, as in PyTorch; ``Subset``, ``random_split`` and
``ConcatDataset`` make datasets of datasets. ``DataLoader`` yields batches of numpy arrays with torch's
semantics for ``batch_size``, ``shuffle``, ``drop_last``, ``sampler`` (``jaxtrain.data.samplers``) and
``collate_fn`` (``jaxtrain.data.collate``), and draws each epoch's order from ``(seed, epoch)``: a run is
reproducible, and resumes mid-epoch from ``state_dict()``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import jax
import numpy as np

from jaxtrain.data.collate import default_collate
from jaxtrain.data.samplers import Sampler, WeightedRandomSampler


@runtime_checkable
class Dataset(Protocol):
    """What a ``DataLoader`` needs of a dataset: PyTorch's map-style protocol."""

    def __getitem__(self, index: int) -> Any: ...

    def __len__(self) -> int: ...


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _require(name: str, value: Any, ok: bool, expected: str) -> None:
    """Raises the one-line ``name=value; expected ...`` error unless ``ok``."""
    if not ok:
        raise ValueError(f"{name}={value!r}; expected {expected}")


# The arrays of an array-backed dataset: a tuple of them (tuple items) or a dict (dict items).
Arrays = tuple[np.ndarray, ...] | dict[str, np.ndarray]


class ArrayDataset:
    """Equal-length arrays indexed together, like ``torch.utils.data.TensorDataset``.

    Positional arrays give tuple items, ``(image, label)``; named arrays give dict items,
    ``{"image": ..., "label": ...}``, as tensorflow-datasets, grain and Hugging Face datasets yield them.

    Args:
      *arrays: arrays sharing their first dimension, e.g. ``images: (N, 28, 28, 1)`` and ``labels: (N,)``.
      **named: the same, by name (not with positional arrays).

    Example:
      >>> ds = ArrayDataset(np.zeros((3, 2)), np.arange(3))
      >>> len(ds), ds[1][1]
      (3, 1)
      >>> ArrayDataset(image=np.zeros((3, 2)), label=np.arange(3))[1]["label"]
      1
    """

    def __init__(self, *arrays: np.ndarray, **named: np.ndarray):
        if not arrays and not named:
            raise ValueError("ArrayDataset needs at least one array")
        if arrays and named:
            raise ValueError(f"ArrayDataset got {len(arrays)} positional and {len(named)} named arrays; expected one kind")
        self.arrays: tuple[np.ndarray, ...] | dict[str, np.ndarray]
        self.arrays = {k: np.asarray(a) for k, a in named.items()} if named else tuple(np.asarray(a) for a in arrays)
        lengths = [len(a) for a in _columns(self.arrays)]
        if len(set(lengths)) != 1:
            raise ValueError(f"ArrayDataset arrays have lengths {lengths}; expected one common length")

    def __getitem__(self, index):
        if isinstance(self.arrays, dict):
            return {k: a[index] for k, a in self.arrays.items()}
        return tuple(a[index] for a in self.arrays)

    def __len__(self) -> int:
        return len(_columns(self.arrays)[0])


def _columns(arrays: Any) -> list[np.ndarray]:
    """The arrays of a tuple or dict of them, in order."""
    return list(arrays.values()) if isinstance(arrays, dict) else list(arrays)


class Subset:
    """The examples of ``dataset`` at ``indices``, in that order, like ``torch.utils.data.Subset``.

    Of an array-backed dataset, it copies its examples into ``arrays`` on first use, so a loader gathers
    whole batches and ``fit(..., data_on_device=True)`` takes it.

    Example:
      >>> len(Subset(ArrayDataset(np.arange(10)), indices=[0, 1, 2]))
      3
    """

    def __init__(self, dataset: Dataset, indices: Sequence[int]):
        self.dataset, self.indices = dataset, indices
        self._arrays: Arrays | None = None

    def __getitem__(self, index):
        return self.dataset[self.indices[index]]

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def arrays(self) -> Arrays | None:
        """The subset's examples gathered from the dataset's arrays, or None if it has none."""
        if self._arrays is None and (base := _arrays_of(self.dataset)) is not None:
            self._arrays = _take(base, np.asarray(self.indices, np.int64))
        return self._arrays


class ConcatDataset:
    """Datasets one after another, like ``torch.utils.data.ConcatDataset``; array-backed parts whose arrays
    match give ``arrays``. An index out of range is an ``IndexError`` (torch: ``ValueError`` below ``-len``).

    Example:
      >>> len(ConcatDataset([ArrayDataset(np.arange(3)), ArrayDataset(np.arange(2))]))
      5
    """

    def __init__(self, datasets: Sequence[Dataset]):
        self.datasets = list(datasets)
        _require("datasets", datasets, len(self.datasets) > 0, "at least one dataset")
        self.cumulative_sizes = np.cumsum([len(d) for d in self.datasets]).tolist()
        self._arrays: Arrays | None = None

    def __getitem__(self, index):
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of range for a ConcatDataset of {len(self)} examples")
        index %= len(self)
        part = int(np.searchsorted(self.cumulative_sizes, index, side="right"))
        return self.datasets[part][index - (self.cumulative_sizes[part - 1] if part else 0)]

    def __len__(self) -> int:
        return self.cumulative_sizes[-1]

    @property
    def arrays(self) -> Arrays | None:
        """The parts' arrays concatenated, or None unless every part has arrays of the same structure and shapes."""
        if self._arrays is None:
            parts = [_arrays_of(d) for d in self.datasets]
            shapes = lambda p: (jax.tree.structure(p), tuple(a.shape[1:] for a in jax.tree.leaves(p)))  # noqa: E731
            if None not in parts and len({shapes(p) for p in parts}) == 1:
                self._arrays = jax.tree.map(lambda *column: np.concatenate(column), *parts)
        return self._arrays


def _arrays_of(dataset: Any) -> Arrays | None:
    """The arrays behind an array-backed dataset, indexed as the dataset is; None for any other."""
    return dataset.arrays if isinstance(dataset, ArrayDataset | Subset | ConcatDataset) else None


def _take(arrays: Arrays, index: np.ndarray) -> Arrays:
    """The rows ``index`` of each array, in the same structure."""
    return jax.tree.map(lambda a: np.take(a, index, axis=0), arrays)


def random_split(dataset: Dataset, lengths: Sequence[int | float], seed: int = 0) -> list[Subset]:
    """Splits ``dataset`` into disjoint random ``Subset``s, like ``torch.utils.data.random_split``.

    Args:
      dataset: the dataset to split.
      lengths: sizes summing to ``len(dataset)``, or fractions summing to 1 (each subset gets
        ``floor(len * fraction)``, then the remainder one at a time in turn from the first, as in torch).
      seed: seeds numpy's permutation: the same seed, the same split.

    Returns:
      One ``Subset`` per length.

    Example:
      >>> train, val = random_split(ArrayDataset(images, labels), [0.9, 0.1], seed=0)
    """
    _require("seed", seed, _is_int(seed) and seed >= 0, "a non-negative int")
    n, counts = len(dataset), list(lengths)
    if math.isclose(sum(counts), 1) and sum(counts) <= 1:  # fractions, read as torch reads them
        for i, fraction in enumerate(counts):
            _require(f"lengths[{i}]", fraction, 0 <= fraction <= 1, "a fraction between 0 and 1")
        counts = [math.floor(n * fraction) for fraction in counts]
        for i in range(n - sum(counts)):
            counts[i % len(counts)] += 1
        for i in [i for i, count in enumerate(counts) if count == 0]:
            warnings.warn(f"random_split: the subset at index {i} is empty", stacklevel=2)
    valid = all(_is_int(c) and c >= 0 for c in counts) and sum(counts) == n
    _require("lengths", list(lengths), valid, f"ints >= 0 summing to len(dataset)={n}, or fractions summing to 1")
    order = np.random.default_rng(seed).permutation(n).tolist()
    return [Subset(dataset, order[end - count : end]) for end, count in zip(np.cumsum(counts).tolist(), counts)]


class DataLoader:
    """Batches a dataset with ``torch.utils.data.DataLoader``'s semantics, yielding numpy arrays.

    Each ``iter(loader)`` is one epoch. Epoch ``e`` visits the examples in the order ``loader.indices(e)``:
    in order, or with ``shuffle=True`` a permutation drawn from ``(seed, e)``, or the ``sampler``'s draws
    for ``(seed, e)``: a new order each epoch, the same orders for the same seed. An array-backed dataset
    (``ArrayDataset``, or a ``Subset`` or ``ConcatDataset`` of them) is gathered with one fancy index per
    array and batch; any other item by item, then ``collate_fn`` (``default_collate``).

    Resuming: ``state_dict()`` holds the position (``epoch`` and the ``batches_taken`` in it) and the
    settings that fix the order, as JSON-able ints and bools. After ``load_state_dict(state)`` the next
    ``iter()`` yields the rest of that epoch, then the epochs an uninterrupted loader would. Otherwise each
    ``iter()`` starts a new epoch, as in torch, even when the last one was left early.

    Deliberate differences from torch:

    - Strings (and string arrays) collate to a numpy string array, not a list of ``str``.
    - Mixed Python numbers follow numpy's promotion: ``[1, 2.5]`` is float64 (torch: float32).
    - A tuple collates to a tuple (torch: a list, for backward compatibility); a list to a list.
    - Ragged fields raise a one-line ``ValueError`` naming the field and shapes (torch: ``RuntimeError``).
    - An error in the dataset's ``__getitem__`` ends the epoch's iterator, a generator.
    - ``shuffle`` must be a bool (torch takes any truthy value).
    - A sampler gives ``indices(seed, epoch)`` (torch: any iterable of indices). Orders are numpy's draws,
      not torch's, for a seed. No ``batch_sampler``, ``batch_size=None`` or workers.

    Args:
      dataset: a ``Dataset``: ``__getitem__`` and ``__len__``.
      batch_size: examples per batch, a positive int.
      shuffle: draw a new permutation each epoch instead of visiting examples in order.
      drop_last: drop the last batch when it is short.
      seed: seeds the permutations and the sampler's draws, a non-negative int.
      collate_fn: turns a list of examples into a batch.
      sampler: chooses each epoch's examples instead (e.g. ``WeightedRandomSampler``); not with shuffle.

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
        sampler: Sampler | None = None,
    ):
        _require("dataset", dataset, isinstance(dataset, Dataset), "an object with __getitem__ and __len__")
        _require("batch_size", batch_size, _is_int(batch_size) and batch_size > 0, "a positive int, not a bool")
        _require("shuffle", shuffle, isinstance(shuffle, bool), "a bool")
        _require("drop_last", drop_last, isinstance(drop_last, bool), "a bool")
        _require("seed", seed, _is_int(seed) and seed >= 0, "a non-negative int")
        _require("collate_fn", collate_fn, collate_fn is None or callable(collate_fn), "a callable or None")
        if sampler is not None:
            expected = "an object with indices(seed, epoch) and __len__"
            _require("sampler", sampler, isinstance(sampler, Sampler), expected)
            _require("shuffle", shuffle, not shuffle, "False with a sampler, which sets the order itself")
            if isinstance(sampler, WeightedRandomSampler):
                n = len(sampler.weights)
                _require("len(sampler.weights)", n, n <= len(dataset), f"at most len(dataset)={len(dataset)}")
        _require("len(dataset)", len(dataset), len(dataset) > 0 or not shuffle, "at least 1 with shuffle=True")
        self.dataset, self.batch_size, self.shuffle, self.drop_last = dataset, batch_size, shuffle, drop_last
        self.seed, self.collate_fn, self.sampler = seed, collate_fn, sampler
        self._epoch, self._taken, self._resume = 0, 0, False

    def __len__(self) -> int:
        n = self._num_samples()
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _num_samples(self) -> int:
        return len(self.sampler if self.sampler is not None else self.dataset)

    def indices(self, epoch: int) -> np.ndarray:
        """The order in which epoch ``epoch`` visits the dataset, truncated as ``drop_last`` asks."""
        if self.sampler is not None:
            order = np.asarray(self.sampler.indices(self.seed, epoch))
        elif self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(len(self.dataset))
        else:
            order = np.arange(len(self.dataset))
        return order[: len(self) * self.batch_size]

    @property
    def position(self) -> tuple[int, int]:
        """``(epoch, batches_taken)`` of the batches handed out, a finished epoch as ``(epoch + 1, 0)``."""
        if self._taken and self._taken >= len(self):
            return self._epoch + 1, 0
        return self._epoch, self._taken

    @property
    def next_start(self) -> tuple[int, int]:
        """``(epoch, first batch)`` where the next ``iter()`` or ``next_epoch()`` begins: a new epoch, except
        after ``load_state_dict``, which continues the saved one."""
        epoch, taken = self.position
        return (epoch, taken) if self._resume or not taken else (epoch + 1, 0)

    def _start(self) -> tuple[int, int]:
        """Begins a pass at ``next_start``."""
        (self._epoch, self._taken), self._resume = self.next_start, False
        return self._epoch, self._taken

    def next_epoch(self) -> np.ndarray:
        """The indices ``iter()`` would gather next, taken without gathering, for loops that gather batches
        themselves (on the device, say): a whole epoch, or after ``load_state_dict`` its rest from batch
        ``next_start[1]`` (read it first)."""
        epoch, taken = self._start()
        self._epoch, self._taken = epoch + 1, 0
        return self.indices(epoch)[taken * self.batch_size :]

    def __iter__(self) -> Iterator[Any]:
        epoch, taken = self._start()
        order = self.indices(epoch)
        for start in range(taken * self.batch_size, len(order), self.batch_size):
            batch = self.gather(order[start : start + self.batch_size])
            self._taken += 1
            yield batch

    def state_dict(self, position: tuple[int, int] | None = None) -> dict[str, int | bool]:
        """The position and the settings that fix the order: ``{"epoch", "batches_taken", "seed", "batch_size",
        "shuffle", "drop_last", "length", "num_samples"}``, JSON-able ints and bools.

        Args:
          position: ``(epoch, batches_taken)`` to save instead of ``self.position``, for loops whose steps
            lag the loader (prefetched, stacked or device-gathered batches) and count what they consumed.

        Example:
          >>> json.dump(loader.state_dict(), file)
        """
        epoch, taken = self.position if position is None else position
        self._check_position(epoch, taken)
        return {"epoch": epoch, "batches_taken": taken, **self._settings()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Moves to a saved position: the next ``iter()`` or ``next_epoch()`` continues that epoch. A state
        whose settings differ from this loader's raises a ``ValueError`` naming the setting.

        Example:
          >>> loader.load_state_dict(json.load(file))
        """
        for key, value in self._settings().items():
            if key not in state or state[key] != value:
                raise ValueError(f"state[{key!r}]={state.get(key)!r}; expected {value!r}, this loader's {key}")
        self._check_position(state["epoch"], state["batches_taken"])
        self._epoch, self._taken, self._resume = state["epoch"], state["batches_taken"], True

    def _settings(self) -> dict[str, int | bool]:
        """What fixes every epoch's batches."""
        order = dict(seed=self.seed, batch_size=self.batch_size, shuffle=self.shuffle, drop_last=self.drop_last)
        return {**order, "length": len(self.dataset), "num_samples": self._num_samples()}

    def _check_position(self, epoch: Any, taken: Any) -> None:
        _require("epoch", epoch, _is_int(epoch) and epoch >= 0, "a non-negative int")
        _require("batches_taken", taken, _is_int(taken) and 0 <= taken <= len(self), f"an int from 0 to {len(self)}")

    def gather(self, index: np.ndarray) -> Any:
        """The batch of the examples at ``index``: one fancy index per array, or item by item and collated."""
        arrays = self.arrays()
        if arrays is not None:
            return _take(arrays, index)
        return (self.collate_fn or default_collate)([self.dataset[int(i)] for i in index])

    def arrays(self) -> Arrays | None:
        """The dataset's arrays (a tuple, or a dict for named arrays) when batches are gathered from them
        directly (an array-backed dataset and no ``collate_fn``), else None: ``gather(index)`` is then each
        array's rows ``index``, in the same structure."""
        return _arrays_of(self.dataset) if self.collate_fn is None else None
