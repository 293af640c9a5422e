"""From examples to batches, and from a batch to its inputs and labels.

``default_collate`` stacks a dataset's examples into a batch with ``torch.utils.data.default_collate``'s
rules; ``DataLoader`` calls it on the examples of a dataset that has no arrays to gather from. ``select``
reads the ``(inputs, labels)`` of a batch that is a tuple or a dict, as tensorflow-datasets, grain, Hugging
Face datasets and torch code yield them.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, MutableMapping, MutableSequence, Sequence
from typing import Any

import numpy as np


def default_collate(items: Sequence[Any]) -> Any:
    """Stacks a list of examples into a batch with ``torch.utils.data.default_collate``'s rules.

    Arrays, numpy scalars, Python numbers and bools stack along a new axis 0 with torch's dtypes (int64,
    float64, bool for Python's); strings into a numpy string array. Mappings collate key by key, sequences
    position by position, recursively, rebuilt as their own type where torch rebuilds them (a namedtuple,
    an ``OrderedDict``, a dict subclass), else as a dict or a list; a tuple stays a tuple (torch: a list).

    Args:
      items: the examples, e.g. ``[(image, label), ...]`` from a dataset's ``__getitem__``.

    Returns:
      The batch, structured as one example. Ragged examples raise a ``ValueError`` naming the field
      (``batch[0]``, ``batch['image']``) and two shapes; other types (``None``) a ``TypeError``.

    Example:
      >>> default_collate([{"x": np.zeros(2), "y": 1}, {"x": np.ones(2), "y": 0}])["x"].shape
      (2, 2)
    """
    if len(items) == 0:
        raise ValueError(f"items={items!r}; expected at least one example")
    return _collate(list(items), "batch")


def _collate(items: list, path: str) -> Any:
    """``default_collate`` of one field of every example; ``path`` names the field in errors."""
    first = items[0]
    if isinstance(first, Mapping):
        values = {key: _collate([item[key] for item in items], f"{path}[{key!r}]") for key in first}
        try:  # rebuilt as torch does: a copy updated in place, else the type called on a dict
            if isinstance(first, MutableMapping):
                clone = copy.copy(first)
                clone.update(values)
                return clone
            return type(first)(values)
        except TypeError:
            return values
    if isinstance(first, str | bytes):
        return np.array(items)
    if isinstance(first, Sequence):
        if (i := next((i for i, item in enumerate(items) if len(item) != len(first)), None)) is not None:
            message = f"{path} has length {len(first)} in item 0 but {len(items[i])} in item {i}"
            raise ValueError(f"default_collate: {message}")
        named = isinstance(first, tuple) and hasattr(first, "_fields")  # a namedtuple
        names = [f".{name}" for name in first._fields] if named else [f"[{i}]" for i in range(len(first))]
        columns = [_collate(list(column), path + name) for name, column in zip(names, zip(*items))]
        if named:
            return type(first)(*columns)
        try:  # rebuilt as torch does
            if isinstance(first, MutableSequence):
                clone = copy.copy(first)
                for i, column in enumerate(columns):
                    clone[i] = column
                return clone
            return type(first)(columns)
        except TypeError:  # a type that cannot be rebuilt from a list, e.g. range
            return columns
    if isinstance(first, int | float) or hasattr(first, "__array__"):
        arrays = [np.asarray(item) for item in items]
        if (i := next((i for i, a in enumerate(arrays) if a.shape != arrays[0].shape), None)) is not None:
            message = f"{path} has shape {arrays[0].shape} in item 0 but {arrays[i].shape} in item {i}"
            raise ValueError(f"default_collate: {message}; pad ragged fields in a collate_fn")
        if (i := next((i for i, a in enumerate(arrays) if a.dtype == object), None)) is not None:
            raise TypeError(f"default_collate: {path} is an object array in item {i}; expected numbers or strings")
        return np.stack(arrays)
    expected = "arrays, numbers, strings, or tuples, lists and mappings of them"
    raise TypeError(f"default_collate: {path} is a {type(first).__name__} in item 0; expected {expected}")


# The names that ``select`` looks for in a dict batch, in order: those of tfds, grain, Hugging Face and torch code.
INPUT_NAMES = ("image", "images", "inputs", "x", "features")
LABEL_NAMES = ("label", "labels", "target", "targets", "y")


def select(
    batch: Any, inputs: str | int | Sequence[str | int] | None = None, labels: str | int | None = None
) -> tuple[Any, Any]:
    """The ``(inputs, labels)`` of a batch (or an item) that is a tuple or a dict.

    Args:
      batch: a tuple (or list, namedtuple) or a mapping, e.g. ``{"image": (B, 28, 28, 1), "label": (B,)}``.
      inputs: which entry holds the inputs: a key of a dict, a position (or a field name) of a tuple. None:
        position 0 of a tuple; of a dict, the first key present of ``INPUT_NAMES`` ("image", "images",
        "inputs", "x", "features"). A list or tuple of keys picks several entries, which the model takes as
        one dict keyed by them (``{"ids": ..., "mask": ...}``), as a Keras model takes named inputs.
      labels: the same for the labels: None is position 1, or the first of ``LABEL_NAMES`` ("label",
        "labels", "target", "targets", "y").

    Returns:
      ``(inputs, labels)``.

    Raises:
      ValueError: one line naming the entries the batch has, e.g. ``inputs='img'; expected a key of the
        batch: 'image', 'label'``.

    Example:
      >>> select({"pixels": x, "label": y}, inputs="pixels")   # (x, y)
      >>> select({"ids": t, "mask": m, "label": y}, inputs=("ids", "mask"))   # ({"ids": t, "mask": m}, y)
    """
    if isinstance(inputs, list | tuple):
        if not inputs:
            raise ValueError(f"inputs={inputs!r}; expected a key of the batch, or a list of several")
        chosen = {key: _entry(batch, key, INPUT_NAMES, 0, "inputs") for key in inputs}
    else:
        chosen = _entry(batch, inputs, INPUT_NAMES, 0, "inputs")
    return chosen, _entry(batch, labels, LABEL_NAMES, 1, "labels")


def _entry(batch: Any, key: str | int | None, names: tuple[str, ...], position: int, role: str) -> Any:
    """One entry of ``select``; ``role`` ("inputs" or "labels") names the argument in errors."""
    if isinstance(batch, Mapping):
        present = ", ".join(repr(k) for k in batch) or "none"
        if key is None:
            key = next((name for name in names if name in batch), None)
            if key is None:
                raise ValueError(
                    f"{role}=None and the batch has none of the keys {', '.join(names)}; "
                    f"expected {role}= one of its keys: {present}"
                )
        if key not in batch:
            raise ValueError(f"{role}={key!r}; expected a key of the batch: {present}")
        return batch[key]
    if isinstance(batch, Sequence) and not isinstance(batch, str | bytes | np.ndarray):
        fields = getattr(batch, "_fields", ())  # a namedtuple's
        index = position if key is None else fields.index(key) if key in fields else key
        if isinstance(index, bool) or not isinstance(index, int) or not -len(batch) <= index < len(batch):
            named = f" or a field: {', '.join(fields)}" if fields else ""
            raise ValueError(f"{role}={key!r}; expected a position of the batch's {len(batch)} entries (0..{len(batch) - 1}){named}")
        return batch[index]
    raise ValueError(f"batch ({type(batch).__name__}): neither a tuple nor a dict; expected (inputs, labels) or a dict of them")
