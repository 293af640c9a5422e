"""jaxtrain: PyTorch's beginner training loop (Dataset → DataLoader → Module → loss → backward → step),
done the functional way in JAX, with Flax modules and optax optimizers."""

from jaxtrain import devices
from jaxtrain.data import ArrayDataset, DataLoader, Dataset, default_collate, prefetch_to_device
from jaxtrain.datasets import DatasetUnavailableError, load_digits, load_mnist, read_idx
from jaxtrain.devices import make_mesh
from jaxtrain.interop import from_torch, to_torch
from jaxtrain.losses import cross_entropy
from jaxtrain.models import CNN, MLP, BatchNorm
from jaxtrain.optim import accumulate_gradients, adam, adamw, clip_grad_norm, schedule, sgd
from jaxtrain.train import TrainState, create_train_state, eval_step, evaluate, fit, train_step

__version__ = "0.1.0"

__all__ = [
    "ArrayDataset",
    "BatchNorm",
    "CNN",
    "DataLoader",
    "Dataset",
    "DatasetUnavailableError",
    "MLP",
    "TrainState",
    "accumulate_gradients",
    "adam",
    "adamw",
    "clip_grad_norm",
    "create_train_state",
    "cross_entropy",
    "default_collate",
    "devices",
    "eval_step",
    "evaluate",
    "fit",
    "from_torch",
    "load_digits",
    "load_mnist",
    "make_mesh",
    "prefetch_to_device",
    "read_idx",
    "schedule",
    "sgd",
    "to_torch",
    "train_step",
]
