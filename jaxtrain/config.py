"""A run's configuration: ``Config``, the flat dataclass that ``python -m jaxtrain train`` maps its flags
onto, the registries its names come from (``MODELS``, ``COMPUTE_DTYPES``), and ``check_config``, the one
validation path of every configuration, whose ``ConfigError`` names the field out of range.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp

from jaxtrain.sources import registry
from jaxtrain.training import optim, schedules


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A network that the CLI, parity and the benchmark know by name.

    Attributes:
      where: its Flax module's class, ``"package.module:Class"``, imported when ``module`` is first read (an
        NNX class imports ``flax.nnx``, which a run of a Linen model never needs).
      torch: the class of ``jaxtrain.compare.torch_side`` that mirrors it layer for layer.
      schedule: the learning-rate schedule that ``Config(schedule="auto")`` gives it.
      family: its row of ``jaxtrain.training.feeding.TABLE``, which gives ``Config(steps_per_call="auto")`` per backend.
    """

    where: str
    torch: str
    schedule: str
    family: str

    @property
    def module(self) -> type:
        """The Flax module: a Linen one, or an NNX one (built with the input's shape and ``nnx.Rngs``)."""
        path, name = self.where.split(":")
        return getattr(importlib.import_module(path), name)


# The MLP keeps the primer's constant rate; the CNN anneals its rate (cosine: with a constant rate its test
# accuracy swung from epoch to epoch). How each is fed, per backend, is jaxtrain.training.feeding's table.
# The NNX twins compute the same, from parameters laid out the same.
MODELS = {
    "mlp": ModelSpec("jaxtrain.nn.linen:MLP", torch="MyModel", schedule="constant", family="mlp"),
    "cnn": ModelSpec("jaxtrain.nn.linen:CNN", torch="CNN", schedule="cosine", family="cnn"),
    "nnx-mlp": ModelSpec("jaxtrain.nn.nnx:NNXMLP", torch="MyModel", schedule="constant", family="mlp"),
    "nnx-cnn": ModelSpec("jaxtrain.nn.nnx:NNXCNN", torch="CNN", schedule="cosine", family="cnn"),
}
# The built-in datasets; Config.dataset also takes a tensorflow-datasets name, folder:PATH and npz:FILE.
DATASETS = registry.BUILT_IN
COMPUTE_DTYPES = {"float32": None, "bfloat16": jnp.bfloat16}  # the model's compute dtype; None keeps float32


class ConfigError(ValueError):
    """A setting out of range: ``str()`` names the field, the CLI the flag."""

    def __init__(self, field: str, value: Any, expected: str):
        super().__init__(f"{field}={value!r}; expected {expected}")
        self.field, self.value, self.expected = field, value, expected

    def by_flag(self) -> str:
        """The error as the command line says it: the field by the flag that sets it."""
        return f"{self.field.replace('_', ' ')} {self.value!r} (--{self.field.replace('_', '-')}): expected {self.expected}"


_CHOICES = {"model": tuple(MODELS), "optimizer": tuple(optim.OPTIMIZERS), "schedule": schedules.SCHEDULES}
_POSITIVE_INTEGERS = ("epochs", "batch_size", "eval_batch_size", "step_size", "grad_accum", "steps")
_POSITIVE_NUMBERS = ("lr", "gamma", "clip_norm")
_NON_NEGATIVE_NUMBERS = ("momentum", "weight_decay", "dampening")


def check_config(config: Any, **choices: Sequence[str]) -> None:
    """Checks every field of a configuration dataclass that has a rule here, by its name.

    The one validation path of ``Config`` and of ``jaxtrain.compare.ParityConfig``: a field means the same
    in both, so it is checked the same way. ``choices`` adds or overrides the allowed values of fields.

    Raises:
      ConfigError: the first field out of range.
    """
    values = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    for name, allowed in {**_CHOICES, **choices}.items():
        if name in values and values[name] not in allowed:
            raise ConfigError(name, values[name], f"one of {', '.join(allowed)}")
    for name in _POSITIVE_INTEGERS:
        value = values.get(name, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(name, value, "a positive integer")
    for name in _POSITIVE_NUMBERS:
        value = values.get(name)
        if value is not None and not (isinstance(value, int | float) and 0 < value < math.inf):
            raise ConfigError(name, value, "a positive finite number")
    for name in _NON_NEGATIVE_NUMBERS:
        value = values.get(name)
        if value is not None and not (isinstance(value, int | float) and 0 <= value < math.inf):
            raise ConfigError(name, value, "a finite number >= 0")
    if not 0 <= values.get("warmup_steps", 0):
        raise ConfigError("warmup_steps", values["warmup_steps"], "an integer >= 0")
    if values.get("dropout") is not None and not 0 <= values["dropout"] < 1:
        raise ConfigError("dropout", values["dropout"], "a probability in [0, 1)")
    seed = values.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ConfigError("seed", seed, "an integer in [0, 2**32)")
    if "dataset" in values and (expected := registry.unknown_name(values["dataset"])):
        raise ConfigError("dataset", values["dataset"], expected)
    if values.get("data_dir") is not None and values.get("dataset") == "digits":
        raise ConfigError("data_dir", values["data_dir"], "none with dataset='digits', which is bundled")
    if values.get("data_dir") is not None and str(values.get("dataset")).startswith(("folder:", "npz:")):
        raise ConfigError("data_dir", values["data_dir"], f"none with dataset={values['dataset']!r}, which names its path")


@dataclasses.dataclass(frozen=True)
class Config:
    """A training run. The defaults are the primer's: MLP, Adam at 1e-3, batch 32, 10 epochs, constant lr.

    Data: ``dataset`` is "digits", "mnist" (from IDX files in ``data_dir``, or tensorflow-datasets), any
    tensorflow-datasets image-classification name ("fashion_mnist", "cifar10"; ``data_dir`` its data
    folder), "folder:PATH" (an image folder) or "npz:FILE" (``registry.load``). The model takes the data's
    image shape and number of classes.

    Model: ``dropout`` and ``batch_norm`` of None keep the model's own default (the MLP has neither; the CNN
    has BatchNorm and dropout 0.25). ``dtype`` is the compute dtype; parameters and optimizer state stay
    float32.

    Learning rate: ``schedule`` is "auto" (the model's ``ModelSpec.schedule``) or one of
    ``schedules.SCHEDULES``: "constant"; "step", torch's ``StepLR(step_size, gamma)`` with ``step_size`` in
    epochs, as torch scripts step it once per epoch (the defaults are those of pytorch/examples' MNIST
    script); "multistep", ``MultiStepLR(milestones, gamma)`` with milestones in epochs; or "cosine",
    ``CosineAnnealingLR`` to 0 over the run. Any of them after ``warmup_steps`` optimizer steps of linear
    warmup; or "plateau", torch's ``ReduceLROnPlateau`` on the validation loss, once per epoch, with
    ``factor``, ``patience``, ``threshold``, ``cooldown`` and ``min_lr`` (torch's defaults).
    ``grad_accum`` batches make one optimizer step; ``clip_norm`` clips the gradient's global norm
    first. ``momentum`` applies to SGD only.

    Stopping: ``early_stopping`` epochs without a lower validation loss stop the run, which ends on the best
    epoch's state; ``stop_at_accuracy`` stops after the first epoch whose test accuracy reaches it.

    Devices: ``devices`` per process (None: all) train data-parallel; ``batch_size`` is the global batch,
    split over them, so it must be a multiple of their number.
    """

    dataset: str = "digits"
    data_dir: str | None = None
    model: str = "mlp"
    dropout: float | None = None
    batch_norm: bool | None = None
    dtype: str = "float32"
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.0
    weight_decay: float = 0.0
    schedule: str = "auto"  # "auto": the model's ModelSpec.schedule
    warmup_steps: int = 0
    step_size: int = 1
    milestones: tuple[int, ...] = ()
    gamma: float = 0.7
    grad_accum: int = 1
    clip_norm: float | None = None
    seed: int = 0
    val_fraction: float = 0.0
    eval_batch_size: int = 1000
    steps_per_call: int | str = "auto"  # an int, "epoch" or "auto" (per backend and model: jaxtrain.training.feeding.TABLE)
    data_on_device: bool | None = None  # None: when the training set fits (transfer.fits_on_device)
    devices: int | None = None  # devices per process to train on, data-parallel; None: all of them
    # Stopping and the plateau schedule (jaxtrain.training.callbacks), each stepped once per epoch:
    early_stopping: int | None = None  # patience in epochs on the validation loss; None: no early stopping
    stop_at_accuracy: float | None = None  # stop after the first epoch whose test accuracy reaches this
    factor: float = 0.1  # plateau: torch's ReduceLROnPlateau defaults, on the validation loss
    patience: int = 10
    threshold: float = 1e-4
    cooldown: int = 0
    min_lr: float = 0.0

    def __post_init__(self):
        if self.schedule == "auto" and self.model in MODELS:
            object.__setattr__(self, "schedule", MODELS[self.model].schedule)
        object.__setattr__(self, "milestones", tuple(self.milestones))
        check_config(self, dtype=tuple(COMPUTE_DTYPES))
        if self.devices is not None and (isinstance(self.devices, bool) or not isinstance(self.devices, int) or self.devices < 1):
            raise ConfigError("devices", self.devices, "a positive integer, or None for every device")
        if self.steps_per_call not in ("auto", "epoch") and not (isinstance(self.steps_per_call, int) and self.steps_per_call >= 1):
            raise ConfigError("steps_per_call", self.steps_per_call, "a positive integer, 'epoch' or 'auto'")
        if self.momentum and self.optimizer != "sgd":
            raise ConfigError("momentum", self.momentum, f"0 with optimizer={self.optimizer!r} (momentum is sgd's)")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError("val_fraction", self.val_fraction, "a fraction in [0, 1) of the training data")
        if self.schedule == "multistep" and not self.milestones:
            raise ConfigError("milestones", self.milestones, "at least one epoch with schedule='multistep'")
        self._check_stopping()
        self.optimizer_args()  # the optimizer's own checks, before any work

    def _check_stopping(self) -> None:
        """Early stopping and the plateau schedule follow the validation loss: they need a validation split."""
        if self.early_stopping is not None:
            if isinstance(self.early_stopping, bool) or not isinstance(self.early_stopping, int) or self.early_stopping < 1:
                raise ConfigError("early_stopping", self.early_stopping, "a positive integer (patience in epochs)")
            if not self.val_fraction:
                raise ConfigError("early_stopping", self.early_stopping, "a validation split too (--val-fraction F): "
                                  "it stops on the validation loss")
        if self.stop_at_accuracy is not None and not (isinstance(self.stop_at_accuracy, int | float) and 0 < self.stop_at_accuracy <= 1):
            raise ConfigError("stop_at_accuracy", self.stop_at_accuracy, "an accuracy in (0, 1]")
        if not (isinstance(self.factor, int | float) and 0 <= self.factor < 1):
            raise ConfigError("factor", self.factor, "a number in [0, 1), as torch's ReduceLROnPlateau")
        for name in ("patience", "cooldown"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(name, value, "an integer >= 0 (epochs)")
        for name in ("threshold", "min_lr"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0 <= value < math.inf):
                raise ConfigError(name, value, "a finite number >= 0")
        if self.schedule == "plateau" and not self.val_fraction:
            raise ConfigError("schedule", self.schedule, "a validation split too (--val-fraction F) for 'plateau', "
                              "which follows the validation loss")
        if self.schedule == "plateau" and self.warmup_steps:
            raise ConfigError("warmup_steps", self.warmup_steps, "0 with schedule='plateau'")

    def plateau_args(self) -> dict[str, Any]:
        """``callbacks.ReduceLROnPlateau``'s arguments (torch's ``ReduceLROnPlateau``'s) for the plateau schedule."""
        names = ("factor", "patience", "threshold", "cooldown", "min_lr")
        return {"lr": self.lr, **{name: getattr(self, name) for name in names}}

    def optimizer_args(self) -> dict[str, Any]:
        """The keyword arguments of ``optim.OPTIMIZERS[self.optimizer]`` (and of its ``torch.optim`` twin),
        the learning rate as a float."""
        args = {"lr": self.lr, "weight_decay": self.weight_decay}
        return {**args, "momentum": self.momentum} if self.optimizer == "sgd" else args
