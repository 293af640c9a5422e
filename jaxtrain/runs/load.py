"""A finished run put back to use: ``load_run`` reads a run folder's configuration and a checkpoint into a
``TrainState``, the counterpart of ``torch.load`` and ``model.load_state_dict``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import optax

from jaxtrain.build import initial_state
from jaxtrain.config import Config
from jaxtrain.runs import record
from jaxtrain.runs.folder import Run
from jaxtrain.training.step import TrainState, create_train_state


def load_run(folder: str | Path, checkpoint: int | str = "latest") -> tuple[TrainState, Config]:
    """The trained model of a run folder: ``torch.load`` and ``model.load_state_dict`` in one call.

    Args:
      folder: a run folder written by ``experiment.run`` (``python -m jaxtrain train --run-dir``), or by
        ``fit(..., run=Run(folder))`` with jaxtrain's ``MLP`` or ``CNN`` (``jaxtrain.runs.record``: the optimizer's
        state is then left out, and the ``Config``'s dataset is the default, since ``fit`` does not know it).
      checkpoint: "latest", "best" (by validation accuracy, else test accuracy) or a checkpoint's step.

    Returns:
      The ``TrainState`` of that checkpoint and the run's ``Config``.

    Example:
      >>> state, config = load_run("runs/mlp", "best")
      >>> evaluate(state, experiment.loaders(config)["test"])
    """
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"run folder {folder}: no config.json; expected a folder written by --run-dir")
    settings = _read_settings(path)
    if record.made_by_fit(settings):  # made by fit from Python: the model is recorded, not the optimizer
        sample = np.zeros((1, *settings["input_shape"]), settings["input_dtype"])
        with Run(folder) as saved:
            template = create_train_state(record.model(settings, str(folder)), optax.identity(), sample)
            return saved.restore(template, checkpoint, model_only=True)[0], record.config(settings)
    _check_settings(settings, path)
    sample = np.zeros((1, *settings.pop("input_shape")), settings.pop("input_dtype"))
    num_classes = settings.pop("num_classes", 10)
    settings.pop("class_names", None)
    config = Config(**{k: tuple(v) if k == "milestones" else v for k, v in settings.items()})
    saved = Run(folder)
    try:  # the schedule's length changes values, not shapes: 1 batch per epoch builds the same pytree
        state, _ = saved.restore(initial_state(config, sample, 1, num_classes), checkpoint)
    finally:
        saved.close()
    return state, config


def _read_settings(path: Path) -> dict[str, Any]:
    """A run's ``config.json``, refused in one line when it is not a JSON object."""
    try:
        settings = json.loads(path.read_text())
    except ValueError as error:
        raise ValueError(f"{path}: not JSON ({error}); expected the config.json that train --run-dir writes") from None
    if not isinstance(settings, dict):
        raise ValueError(f"{path}: a JSON {type(settings).__name__}; expected an object of settings, as train --run-dir writes")
    return settings


def _check_settings(settings: dict[str, Any], path: Path) -> None:
    """Refuses a ``config.json`` with a setting that this version does not know, or without one it needs: read
    with defaults, either would rebuild another model than the one saved."""
    needed = {field.name for field in dataclasses.fields(Config)} | {"input_shape", "input_dtype"}
    unknown = sorted(set(settings) - needed - {"num_classes", "class_names"})
    if unknown:
        raise ValueError(f"{path}: unknown setting {unknown[0]!r} (written by another version of jaxtrain?); expected those of Config")
    missing = sorted(needed - set(settings))
    if missing:
        raise ValueError(f"{path}: no setting {missing[0]!r}; expected every setting of the run, as train --run-dir writes them")
