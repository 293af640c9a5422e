"""``config.json`` of a run folder made from Python, so that ``load_run`` and ``python -m jaxtrain evaluate
--run-dir`` open it as they open one made by ``python -m jaxtrain train``.

The command line writes its whole configuration there. ``fit(..., run=Run(path))`` knows less: the model,
the input's shape and dtype, but not the dataset nor how the optimizer was built. So, where ``config.json``
is missing, it writes what it knows (``describe``): ``"made_by": "fit"``, the model by class and
arguments (jaxtrain's Linen ``MLP`` and ``CNN``; another model by class name only), ``input_shape``,
``input_dtype``, ``num_classes`` and ``"dataset": null``. ``load_run`` then rebuilds the model and
restores its parameters and statistics, leaving the optimizer's state out; ``evaluate`` asks for
``--dataset``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
import numpy as np

from jaxtrain.nn.linen import CNN, MLP
from jaxtrain.data.collate import select
from jaxtrain.config import Config
from jaxtrain.data.loader import DataLoader
from jaxtrain.training.step import TrainState

MADE_BY_FIT = "fit"
_CLASSES = {"MLP": (MLP, "mlp"), "CNN": (CNN, "cnn")}  # the Linen models rebuilt from arguments


def describe(state: TrainState, loader: DataLoader) -> dict[str, Any]:
    """What ``config.json`` holds for a run that ``fit`` started from Python.

    Args:
      state: the run's state (its model is recorded).
      loader: the training data (the shape and dtype of one input are recorded).

    Returns:
      The record, JSON-able.

    Example:
      >>> describe(state, train_loader)["model_args"]["hidden"]
      [256]
    """
    inputs, _ = select(loader.gather(np.arange(1)))
    sample = np.asarray(inputs)
    module = state.model
    args = None
    if type(module).__name__ in _CLASSES and isinstance(module, _CLASSES[type(module).__name__][0]):
        args = {f.name: getattr(module, f.name) for f in dataclasses.fields(module) if f.name not in ("parent", "name")}
        args = {k: list(v) if isinstance(v, tuple | list) else v for k, v in args.items()}
        args["dtype"] = None if args["dtype"] is None else jnp.dtype(args["dtype"]).name
    return {
        "made_by": MADE_BY_FIT,
        "model_class": type(module).__name__,
        "model_args": args,
        "dataset": None,
        "input_shape": list(sample.shape[1:]),
        "input_dtype": str(sample.dtype),
        "num_classes": args and args["num_classes"],
        "class_names": None,
    }


def made_by_fit(settings: dict[str, Any]) -> bool:
    """Whether a ``config.json`` is ``describe``'s, not the command line's."""
    return settings.get("made_by") == MADE_BY_FIT


def model(settings: dict[str, Any], folder: str) -> MLP | CNN:
    """The model that ``describe`` recorded, rebuilt.

    Raises:
      ValueError: a model that jaxtrain cannot rebuild from its record (one line saying what to do).
    """
    if settings.get("model_args") is None or settings.get("model_class") not in _CLASSES:
        raise ValueError(
            f"run folder {folder}: made by fit from Python with a model of its own ({settings.get('model_class')}); "
            f"expected jaxtrain's MLP or CNN to rebuild it, else restore it with Run(folder).restore(state)"
        )
    args = dict(settings["model_args"])
    args["dtype"] = None if args["dtype"] is None else jnp.dtype(args["dtype"])
    return _CLASSES[settings["model_class"]][0](**{k: tuple(v) if isinstance(v, list) else v for k, v in args.items()})


def config(settings: dict[str, Any]) -> Config:
    """A ``Config`` of the recorded model: its name, dropout, BatchNorm and compute dtype, and the defaults
    elsewhere (the dataset among them: ``config.json``'s ``"dataset": null`` says that it is unknown)."""
    args = settings["model_args"]
    return Config(
        model=_CLASSES[settings["model_class"]][1], dropout=args["dropout"], batch_norm=args["batch_norm"],
        dtype="float32" if args["dtype"] in (None, "float32") else args["dtype"],
    )
