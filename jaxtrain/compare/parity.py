"""Parity: the same network trained in PyTorch and in jaxtrain from the same weights on the same batches,
and how far apart their losses, weights and BatchNorm statistics end up.

  python -m jaxtrain compare parity --model cnn --optimizer adam --dtype float64 --steps 600
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxtrain import build, experiment, interop
from jaxtrain.sources import registry
from jaxtrain.training import optim
from jaxtrain.compare.torch_side import _torch, flatten_shape, to_labels, to_nchw, torch_accuracy, torch_model, torch_optimizer, torch_step
from jaxtrain.config import Config, check_config
from jaxtrain.data.loader import ArrayDataset, DataLoader
from jaxtrain.training.evaluation import evaluate
from jaxtrain.training.step import create_train_state, train_step

PARITY_DTYPES = ("float32", "float64")


@dataclasses.dataclass(frozen=True)
class ParityConfig:
    """A parity run: both frameworks, the same start and the same batches.

    The optimizer fields carry torch.optim's names; ``lr=None`` means 1e-3 for adam and adamw and 1e-2 for
    sgd, ``weight_decay=None`` the optimizer's default (1e-2 for adamw, else 0). ``float64_reference``
    (float32 runs only) also trains torch in float64 from the same start, as the exact computation that
    both float32 runs approximate.
    """

    model: str = "mlp"
    optimizer: str = "adam"
    dtype: str = "float64"
    steps: int = 600
    lr: float | None = None
    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False
    weight_decay: float | None = None
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    dataset: str = "digits"
    data_dir: str | None = None
    batch_size: int = 32
    seed: int = 0
    float64_reference: bool = False

    def __post_init__(self):
        check_config(self, dtype=PARITY_DTYPES)
        if self.optimizer != "sgd" and (self.momentum or self.dampening or self.nesterov):
            raise ValueError(f"momentum, dampening and nesterov apply to sgd; expected none of them with optimizer={self.optimizer!r}")
        if self.optimizer == "sgd" and (tuple(self.betas) != (0.9, 0.999) or self.eps != 1e-8):
            raise ValueError("betas and eps apply to adam and adamw; expected neither with optimizer='sgd'")
        if self.float64_reference and self.dtype != "float32":
            raise ValueError(f"float64_reference with dtype={self.dtype!r}; expected dtype='float32'")
        optim.OPTIMIZERS[self.optimizer](**self.optimizer_args())  # the optimizer's own checks, before any work

    def optimizer_args(self) -> dict[str, Any]:
        """The optimizer's keyword arguments, which ``jaxtrain.training.optim`` and ``torch.optim`` share."""
        lr = self.lr if self.lr is not None else (1e-2 if self.optimizer == "sgd" else 1e-3)
        weight_decay = self.weight_decay if self.weight_decay is not None else (1e-2 if self.optimizer == "adamw" else 0.0)
        if self.optimizer == "sgd":
            return dict(lr=lr, momentum=self.momentum, dampening=self.dampening, nesterov=self.nesterov, weight_decay=weight_decay)
        return dict(lr=lr, betas=tuple(self.betas), eps=self.eps, weight_decay=weight_decay)


def _batches(loader: DataLoader, steps: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``steps`` batches from ``loader``, epoch after epoch."""
    taken = 0
    while taken < steps:
        for batch in loader:
            if taken == steps:
                return
            yield batch
            taken += 1
        if taken == 0:
            raise ValueError("the training loader yielded no batch")


def parity(config: ParityConfig, log: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Trains the same network in PyTorch and in jaxtrain, step for step, and measures the difference.

    Both start from torch's initial weights (copied with ``interop.from_torch``) and take the same batches
    in the same order. Dropout is off (p=0), since the two frameworks cannot draw the same masks;
    BatchNorm trains in train mode on both sides, torch's running statistics against
    ``jaxtrain.nn.linen.BatchNorm``'s. Matmuls run at full precision on accelerators.

    Args:
      config: what to train; ``dtype="float64"`` needs ``jax.config.update("jax_enable_x64", True)``
        first (the CLI does it), and runs torch in float64 too.
      log: where the summary goes (None: nowhere).

    Returns:
      ``config``, ``optimizer_args``, ``device``, ``steps``, ``torch`` and ``jax`` (each: ``losses``, the
      per-step batch losses, and ``test_accuracy`` after the run), ``max_rel_loss_diff`` (the largest
      ``|loss_jax - loss_torch| / |loss_torch|``), ``max_param_diff`` and ``max_batch_stats_diff`` (the
      largest absolute difference of any parameter or running statistic at the end; None without
      BatchNorm), ``test_accuracy_diff`` (percentage points), and ``float64_reference``: None, or the
      float64 torch run's ``losses`` and each float32 side's ``torch_max_rel_loss_diff`` and
      ``jax_max_rel_loss_diff`` from them.

    Example:
      >>> report = parity(ParityConfig(model="mlp", optimizer="sgd", momentum=0.9, steps=600))
      >>> report["max_rel_loss_diff"] < 1e-10
      True
    """
    t = _torch()
    torch = t.torch
    if config.dtype == "float64" and not jax.config.jax_enable_x64:
        raise ValueError("dtype='float64' needs 64-bit JAX; expected jax.config.update('jax_enable_x64', True) before the run")
    dtype = np.dtype(config.dtype)
    images, labels = registry.load(config.dataset, "train", config.data_dir)
    test_images, test_labels = registry.load(config.dataset, "test", config.data_dir)
    images, test_images = images.astype(dtype), test_images.astype(dtype)

    # One initialization, torch's, copied across: the two frameworks' initializers differ.
    torch.manual_seed(config.seed)
    num_classes = registry.info(config.dataset, config.data_dir).num_classes
    net = torch_model(config.model, images.shape[1:3], dropout=0.0, channels=images.shape[3], num_classes=num_classes)
    net = net.to(getattr(torch, config.dtype))
    variables = jax.tree.map(jnp.asarray, interop.from_torch(net, flatten_shape(config.model, images.shape[1:])))
    model = build.build_model(Config(model=config.model, dropout=0.0), num_classes, images.shape[1:])

    args = config.optimizer_args()
    optimizer = torch_optimizer(config, net.parameters())
    criterion = t.nn.CrossEntropyLoss()
    state = create_train_state(model, optim.OPTIMIZERS[config.optimizer](**args), images[:1], config.seed, variables=variables)
    if config.float64_reference:
        exact = copy.deepcopy(net).double()  # float32 → float64 is exact: the same start
        exact_optimizer = torch_optimizer(config, exact.parameters())

    loader = DataLoader(ArrayDataset(images, labels), config.batch_size, shuffle=True, seed=config.seed)
    torch_losses, jax_losses, exact_losses = [], [], []
    with jax.default_matmul_precision("highest"):
        for inputs, targets in _batches(loader, config.steps):
            # PyTorch: the primer's step, changing net and optimizer in place.
            torch_losses.append(torch_step(net, optimizer, criterion, to_nchw(inputs), to_labels(targets)))
            # jaxtrain: one pure, compiled step on the same batch.
            state, metrics = train_step(state, (inputs, targets))
            jax_losses.append(metrics["loss"])
            if config.float64_reference:
                exact_losses.append(torch_step(exact, exact_optimizer, criterion, to_nchw(inputs).double(), to_labels(targets)))
        jax_accuracy = evaluate(state, DataLoader(ArrayDataset(test_images, test_labels), 1000))["accuracy"]

    torch_losses = torch.stack(torch_losses).numpy()
    jax_losses = np.asarray(jax.device_get(jnp.stack(jax_losses)))  # host sync: the run's one read
    torch_variables = interop.from_torch(net, flatten_shape(config.model, images.shape[1:]))
    jax_variables = jax.device_get(state.variables)
    torch_acc = torch_accuracy(net, to_nchw(test_images), to_labels(test_labels), 1000)
    report = {
        "config": dataclasses.asdict(config),
        "optimizer_args": args,
        "device": f"torch: cpu; jax: {experiment.device_name()}",
        "steps": len(torch_losses),
        "torch": {"losses": torch_losses.tolist(), "test_accuracy": torch_acc},
        "jax": {"losses": jax_losses.tolist(), "test_accuracy": jax_accuracy},
        "max_rel_loss_diff": float(np.max(np.abs(jax_losses - torch_losses) / np.abs(torch_losses))),
        "max_param_diff": _max_diff(jax_variables["params"], torch_variables["params"]),
        "max_batch_stats_diff": (
            _max_diff(jax_variables["batch_stats"], torch_variables["batch_stats"]) if "batch_stats" in torch_variables else None
        ),
        "test_accuracy_diff": 100 * (jax_accuracy - torch_acc),
        "float64_reference": None,
    }
    if config.float64_reference:
        exact_losses = torch.stack(exact_losses).numpy()
        report["float64_reference"] = {
            "losses": exact_losses.tolist(),
            "torch_max_rel_loss_diff": float(np.max(np.abs(torch_losses - exact_losses) / exact_losses)),
            "jax_max_rel_loss_diff": float(np.max(np.abs(jax_losses - exact_losses) / exact_losses)),
        }
    if log:
        log(format_parity(report))
    return report


def _max_diff(a: Any, b: Any) -> float:
    """The largest absolute elementwise difference between two pytrees of the same structure."""
    return float(max(jax.tree.leaves(jax.tree.map(lambda x, y: np.max(np.abs(np.asarray(x) - np.asarray(y))), a, b))))


def format_parity(report: dict[str, Any]) -> str:
    """A parity report as a few lines of text."""
    c = report["config"]
    args = ", ".join(f"{k}={v}" for k, v in report["optimizer_args"].items())
    stats = report["max_batch_stats_diff"]
    return "\n".join([
        f"{c['model']} {c['optimizer']}({args}) {c['dtype']}, {report['steps']} steps of {c['batch_size']} on {c['dataset']}",
        f"  final loss:  torch {report['torch']['losses'][-1]:.10g}   jax {report['jax']['losses'][-1]:.10g}",
        f"  max relative loss difference: {report['max_rel_loss_diff']:.3g}",
        f"  max parameter difference:     {report['max_param_diff']:.3g}",
        *([f"  max running-stats difference: {stats:.3g}"] if stats is not None else []),
        f"  test accuracy: torch {100 * report['torch']['test_accuracy']:.2f}%   jax {100 * report['jax']['test_accuracy']:.2f}%"
        f"   ({report['test_accuracy_diff']:+.2f} points)",
        *([f"  max relative loss difference from torch float64: torch {ref['torch_max_rel_loss_diff']:.3g}"
           f"   jax {ref['jax_max_rel_loss_diff']:.3g}"] if (ref := report["float64_reference"]) else []),
    ])


