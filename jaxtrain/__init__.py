"""jaxtrain: PyTorch's beginner training loop (Dataset → DataLoader → Module → loss → backward → step),
done the functional way in JAX, with Flax modules and optax optimizers.

One wing per concept of the primer, each named after it: ``data`` (``torch.utils.data``), ``sources``
(``torchvision.datasets``), ``nn`` (the models), ``training`` (step, fit, losses, optimizers, schedules,
callbacks), ``runs`` (run folders: checkpoints, resume, reports), ``parallel`` (devices and compilation);
``config``, ``build`` and ``experiment`` make a run from a flat configuration; ``cli`` maps flags onto them;
``compare`` sets PyTorch's program beside jaxtrain's. Every public name is here; the NNX models are imported
at their first use, since they import ``flax.nnx``, which a run of a Linen model does not need.
"""

import importlib

from jaxtrain.config import Config
from jaxtrain.data.collate import default_collate, select
from jaxtrain.data.loader import ArrayDataset, ConcatDataset, DataLoader, Dataset, Subset, random_split
from jaxtrain.data.samplers import WeightedRandomSampler
from jaxtrain.data.transfer import prefetch_to_device
from jaxtrain.experiment import run
from jaxtrain.interop import from_torch, to_torch
from jaxtrain.nn.linen import CNN, MLP, BatchNorm
from jaxtrain.parallel import devices
from jaxtrain.parallel.compiler import cache_compilations, jit
from jaxtrain.parallel.devices import initialize, make_mesh
from jaxtrain.runs.curves import plot_runs, write_tensorboard
from jaxtrain.runs.folder import Run
from jaxtrain.runs.load import load_run
from jaxtrain.sources.builtin import load_digits, load_mnist
from jaxtrain.sources.checks import DatasetInfo, validate
from jaxtrain.sources.download import DatasetUnavailableError
from jaxtrain.sources.files import load_folder, load_npz, read_images
from jaxtrain.sources.idx import read_idx
from jaxtrain.sources.registry import info, load
from jaxtrain.summary import ModelSummary, summary
from jaxtrain.training.callbacks import Callback, EarlyStopping, LambdaCallback, ReduceLROnPlateau, TargetAccuracy
from jaxtrain.training.evaluation import evaluate
from jaxtrain.training.fit import compile_fit, fit
from jaxtrain.training.losses import cross_entropy
from jaxtrain.training.metrics import ConfusionMatrix, Mean, Metric, TopKAccuracy
from jaxtrain.training.monitors import TensorBoard
from jaxtrain.training.optim import accumulate_gradients, adam, adamw, adjustable_lr, clip_grad_norm, sgd
from jaxtrain.training.schedules import Plateau, schedule, scheduled
from jaxtrain.training.step import TrainState, create_train_state, eval_step, predict, train_step

__version__ = "0.1.0"
_NNX_MODELS = ("NNXCNN", "NNXMLP", "NNXBatchNorm")

__all__ = [
    "ArrayDataset",
    "BatchNorm",
    "CNN",
    "Callback",
    "ConcatDataset",
    "ConfusionMatrix",
    "Config",
    "DataLoader",
    "Dataset",
    "DatasetInfo",
    "DatasetUnavailableError",
    "EarlyStopping",
    "LambdaCallback",
    "MLP",
    "Mean",
    "Metric",
    "ModelSummary",
    "NNXBatchNorm",
    "NNXCNN",
    "NNXMLP",
    "Plateau",
    "ReduceLROnPlateau",
    "Run",
    "Subset",
    "TargetAccuracy",
    "TensorBoard",
    "TopKAccuracy",
    "TrainState",
    "WeightedRandomSampler",
    "accumulate_gradients",
    "adam",
    "adamw",
    "adjustable_lr",
    "cache_compilations",
    "clip_grad_norm",
    "compile_fit",
    "create_train_state",
    "cross_entropy",
    "default_collate",
    "devices",
    "eval_step",
    "evaluate",
    "fit",
    "from_torch",
    "info",
    "initialize",
    "jit",
    "load",
    "load_digits",
    "load_folder",
    "load_mnist",
    "load_npz",
    "load_run",
    "make_mesh",
    "plot_runs",
    "predict",
    "prefetch_to_device",
    "random_split",
    "read_idx",
    "read_images",
    "run",
    "schedule",
    "scheduled",
    "select",
    "sgd",
    "summary",
    "to_torch",
    "train_step",
    "validate",
    "write_tensorboard",
]


def __getattr__(name: str):
    if name in _NNX_MODELS:
        return getattr(importlib.import_module("jaxtrain.nn.nnx"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_NNX_MODELS})
