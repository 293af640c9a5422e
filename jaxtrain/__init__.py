"""jaxtrain: PyTorch's beginner training loop (Dataset → DataLoader → Module → loss → backward → step),
done the functional way in JAX, with Flax modules and optax optimizers."""

from jaxtrain import devices
from jaxtrain.collate import default_collate, select
from jaxtrain.data import ArrayDataset, ConcatDataset, DataLoader, Dataset, Subset, random_split
from jaxtrain.samplers import WeightedRandomSampler
from jaxtrain.datasets import DatasetUnavailableError, load, load_digits, load_mnist
from jaxtrain.idx import read_idx
from jaxtrain.files import load_folder, load_npz, read_images
from jaxtrain.devices import make_mesh
from jaxtrain.interop import from_torch, to_torch
from jaxtrain.losses import cross_entropy
from jaxtrain.models import CNN, MLP, BatchNorm
from jaxtrain.nnx_models import NNXCNN, NNXMLP, NNXBatchNorm
from jaxtrain.optim import accumulate_gradients, adam, adamw, adjustable_lr, clip_grad_norm, sgd
from jaxtrain.schedules import schedule
from jaxtrain.metrics import ConfusionMatrix, Metric, TopKAccuracy
from jaxtrain.train import TrainState, create_train_state, eval_step, evaluate, predict, train_step
from jaxtrain.callbacks import Callback, EarlyStopping, LambdaCallback, ReduceLROnPlateau, TargetAccuracy
from jaxtrain.loop import compile_fit, fit
from jaxtrain.transfer import prefetch_to_device
from jaxtrain.runs import Run
from jaxtrain.experiment import load_run
from jaxtrain.summary import ModelSummary, summary

__version__ = "0.1.0"

__all__ = [
    "ArrayDataset",
    "BatchNorm",
    "CNN",
    "Callback",
    "ConfusionMatrix",
    "ConcatDataset",
    "DataLoader",
    "Dataset",
    "DatasetUnavailableError",
    "EarlyStopping",
    "LambdaCallback",
    "MLP",
    "Metric",
    "ModelSummary",
    "NNXBatchNorm",
    "NNXCNN",
    "NNXMLP",
    "ReduceLROnPlateau",
    "Run",
    "Subset",
    "TargetAccuracy",
    "TopKAccuracy",
    "TrainState",
    "WeightedRandomSampler",
    "accumulate_gradients",
    "adam",
    "adamw",
    "adjustable_lr",
    "clip_grad_norm",
    "create_train_state",
    "cross_entropy",
    "default_collate",
    "devices",
    "eval_step",
    "evaluate",
    "compile_fit",
    "fit",
    "from_torch",
    "load",
    "load_digits",
    "load_folder",
    "load_mnist",
    "load_npz",
    "load_run",
    "predict",
    "make_mesh",
    "prefetch_to_device",
    "random_split",
    "read_idx",
    "read_images",
    "schedule",
    "select",
    "sgd",
    "summary",
    "to_torch",
    "train_step",
]
