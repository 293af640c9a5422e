"""The study: PyTorch's training program beside jaxtrain's, proven equivalent and measured.

``parity`` runs both frameworks from the same weights on the same batches and reports how far apart their
losses, weights and BatchNorm statistics end up. ``torch_run`` times the primer's PyTorch program with
the same ``Config`` and report that ``jaxtrain.experiment.run`` uses for jaxtrain's, and ``bench`` puts
the two side by side, each configuration in a fresh process so that its peak memory is its own.

torch is imported only when a function here is called: ``pip install 'jaxtrain[compare]'``.

  python -m jaxtrain compare parity --model cnn --optimizer adam --dtype float64 --steps 600
  python -m jaxtrain compare bench --dataset mnist --data-dir DIR --report bench.json --plot bench.png
"""

from __future__ import annotations

import concurrent.futures
import copy
import dataclasses
import functools
import multiprocessing
import os
import platform
import statistics
import sys
import time
import types
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxtrain import datasets, experiment, interop, models, optim
from jaxtrain.data import ArrayDataset, DataLoader
from jaxtrain.experiment import Config
from jaxtrain.train import create_train_state, evaluate, train_step

TORCH_VARIANTS = ("dataloader", "tensors", "compile")
DTYPES = ("float32", "float64")


# --- The PyTorch side ------------------------------------------------------------------------------------


@functools.cache
def _torch() -> types.SimpleNamespace:
    """torch and the primer's classes, defined on first use so that ``import jaxtrain`` never loads torch."""
    try:
        import torch
    except ImportError as error:
        raise ImportError(f"{error}; the comparison with PyTorch needs it: pip install 'jaxtrain[compare]'") from None
    from torch import nn
    from torch.utils.data import DataLoader as TorchDataLoader
    from torch.utils.data import Dataset

    class MyDataset(Dataset):
        """The primer's dataset: ``data[idx], labels[idx]``, one example at a time."""

        def __init__(self, data, labels):
            self.data = data
            self.labels = labels

        def __len__(self):
            return len(self.data)

        def __getitem__(self, idx):
            return self.data[idx], self.labels[idx]

    class MyModel(nn.Module):
        """The primer's model: ``x.view(-1, 784)`` → Linear(784, 256) → ReLU → Linear(256, 10)."""

        def __init__(self, in_features: int = 784, hidden: int = 256, num_classes: int = 10):
            super().__init__()
            self.in_features = in_features
            self.fc1 = nn.Linear(in_features, hidden)
            self.relu = nn.ReLU()
            self.fc2 = nn.Linear(hidden, num_classes)

        def forward(self, x):
            x = x.view(-1, self.in_features)
            return self.fc2(self.relu(self.fc1(x)))

    class CNN(nn.Module):
        """``jaxtrain.models.CNN`` in torch: [Conv 3×3 (no bias) → BatchNorm2d → ReLU → MaxPool 2] per block,
        flatten, then Dropout → [Linear → ReLU → Dropout] per hidden layer → Linear."""

        def __init__(
            self,
            image_size: int = 28,
            channels: Sequence[int] = tuple(models.CNN.channels),
            hidden: Sequence[int] = tuple(models.CNN.hidden),
            num_classes: int = 10,
            dropout: float = 0.25,
        ):
            super().__init__()
            layers, width = [], 1
            for out in channels:
                layers += [nn.Conv2d(width, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(), nn.MaxPool2d(2)]
                width = out
            self.features = nn.Sequential(*layers)
            width *= (image_size // 2 ** len(channels)) ** 2
            head = [nn.Dropout(dropout)]
            for out in hidden:
                head += [nn.Linear(width, out), nn.ReLU(), nn.Dropout(dropout)]
                width = out
            self.head = nn.Sequential(*head, nn.Linear(width, num_classes))

        def forward(self, x):
            return self.head(torch.flatten(self.features(x), 1))

    optimizers = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
    return types.SimpleNamespace(
        torch=torch, nn=nn, DataLoader=TorchDataLoader, MyDataset=MyDataset, MyModel=MyModel, CNN=CNN, optimizers=optimizers
    )


def torch_model(name: str, image_size: int, dropout: float = 0.25) -> Any:
    """The torch counterpart of ``jaxtrain.models``' ``MLP()`` (the primer's ``MyModel``) or ``CNN(dropout=...)``.

    Args:
      name: "mlp" or "cnn".
      image_size: the side of the square, one-channel input images (28 for MNIST, 8 for digits).
      dropout: the CNN's dropout rate before its head.

    Returns:
      A ``torch.nn.Module`` in float32, initialized by torch (seed it with ``torch.manual_seed``).

    Example:
      >>> model = torch_model("cnn", 28, dropout=0.0)
    """
    t = _torch()
    if name == "mlp":
        return t.MyModel(in_features=image_size * image_size)
    if name == "cnn":
        return t.CNN(image_size=image_size, dropout=dropout)
    raise ValueError(f"model={name!r}; expected one of {', '.join(experiment.MODELS)}")


def _nchw(images: np.ndarray) -> Any:
    """(N, H, W, C) numpy images → an (N, C, H, W) torch tensor, as torch's convolutions expect."""
    return _torch().torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


def _labels(labels: np.ndarray) -> Any:
    """Integer labels → the int64 tensor that ``nn.CrossEntropyLoss`` expects."""
    return _torch().torch.from_numpy(np.asarray(labels, np.int64))


def _torch_optimizer(config: Config, parameters) -> Any:
    """The torch optimizer that ``experiment.build_optimizer(config)`` mirrors."""
    t = _torch()
    if config.optimizer == "sgd":
        return t.torch.optim.SGD(parameters, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return t.optimizers[config.optimizer](parameters, lr=config.lr, weight_decay=config.weight_decay)


# --- Parity ---------------------------------------------------------------------------------------------


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
        for name, allowed in (
            ("model", experiment.MODELS),
            ("optimizer", experiment.OPTIMIZERS),
            ("dtype", DTYPES),
            ("dataset", experiment.DATASETS),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r}; expected one of {', '.join(allowed)}")
        for name in ("steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)!r}; expected a positive integer")
        if self.optimizer != "sgd" and (self.momentum or self.dampening or self.nesterov):
            raise ValueError(f"momentum, dampening and nesterov apply to sgd; expected none of them with optimizer={self.optimizer!r}")
        if self.optimizer == "sgd" and (tuple(self.betas) != (0.9, 0.999) or self.eps != 1e-8):
            raise ValueError("betas and eps apply to adam and adamw; expected neither with optimizer='sgd'")
        if self.float64_reference and self.dtype != "float32":
            raise ValueError(f"float64_reference with dtype={self.dtype!r}; expected dtype='float32'")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"lr={self.lr!r}; expected a positive number")
        getattr(optim, self.optimizer)(**self.optimizer_args())  # the optimizer's own checks, before any work

    def optimizer_args(self) -> dict[str, Any]:
        """The optimizer's keyword arguments, which ``jaxtrain.optim`` and ``torch.optim`` share."""
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
    ``jaxtrain.models.BatchNorm``'s. Matmuls run at full precision on accelerators.

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
    images, labels = datasets.load(config.dataset, "train", config.data_dir)
    test_images, test_labels = datasets.load(config.dataset, "test", config.data_dir)
    images, test_images = images.astype(dtype), test_images.astype(dtype)

    # One initialization, torch's, copied across: the two frameworks' initializers differ.
    torch.manual_seed(config.seed)
    net = torch_model(config.model, images.shape[1], dropout=0.0).to(getattr(torch, config.dtype))
    variables = jax.tree.map(jnp.asarray, interop.from_torch(net))
    model = models.MLP() if config.model == "mlp" else models.CNN(dropout=0.0)

    args = config.optimizer_args()
    optimizer = t.optimizers[config.optimizer](net.parameters(), **args)
    criterion = t.nn.CrossEntropyLoss()
    state = create_train_state(model, getattr(optim, config.optimizer)(**args), images[:1], config.seed, variables=variables)
    if config.float64_reference:
        exact = copy.deepcopy(net).double()  # float32 → float64 is exact: the same start
        exact_optimizer = t.optimizers[config.optimizer](exact.parameters(), **args)

    loader = DataLoader(ArrayDataset(images, labels), config.batch_size, shuffle=True, seed=config.seed)
    torch_losses, jax_losses, exact_losses = [], [], []
    with jax.default_matmul_precision("highest"):
        for inputs, targets in _batches(loader, config.steps):
            # PyTorch: the primer's step, changing net and optimizer in place.
            torch_losses.append(_torch_step(net, optimizer, criterion, _nchw(inputs), _labels(targets)))
            # jaxtrain: one pure, compiled step on the same batch.
            state, metrics = train_step(state, (inputs, targets))
            jax_losses.append(metrics["loss"])
            if config.float64_reference:
                exact_losses.append(_torch_step(exact, exact_optimizer, criterion, _nchw(inputs).double(), _labels(targets)))
        jax_accuracy = evaluate(state, DataLoader(ArrayDataset(test_images, test_labels), 1000))["accuracy"]

    torch_losses = torch.stack(torch_losses).numpy()
    jax_losses = np.asarray(jax.device_get(jnp.stack(jax_losses)))  # host sync: the run's one read
    torch_variables = interop.from_torch(net)
    jax_variables = jax.device_get(state.variables)
    torch_accuracy = _torch_accuracy(net, _nchw(test_images), _labels(test_labels), 1000)
    report = {
        "config": dataclasses.asdict(config),
        "optimizer_args": args,
        "device": f"torch: cpu; jax: {experiment.device_name()}",
        "steps": len(torch_losses),
        "torch": {"losses": torch_losses.tolist(), "test_accuracy": torch_accuracy},
        "jax": {"losses": jax_losses.tolist(), "test_accuracy": jax_accuracy},
        "max_rel_loss_diff": float(np.max(np.abs(jax_losses - torch_losses) / np.abs(torch_losses))),
        "max_param_diff": _max_diff(jax_variables["params"], torch_variables["params"]),
        "max_batch_stats_diff": (
            _max_diff(jax_variables["batch_stats"], torch_variables["batch_stats"]) if "batch_stats" in torch_variables else None
        ),
        "test_accuracy_diff": 100 * (jax_accuracy - torch_accuracy),
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


def _torch_step(net: Any, optimizer: Any, criterion: Any, inputs: Any, targets: Any) -> Any:
    """The primer's training step, in place: ``zero_grad``, forward, loss, ``backward``, ``step``; the loss."""
    net.train()
    optimizer.zero_grad()
    loss = criterion(net(inputs), targets)
    loss.backward()
    optimizer.step()
    return loss.detach()


def _max_diff(a: Any, b: Any) -> float:
    """The largest absolute elementwise difference between two pytrees of the same structure."""
    return float(max(jax.tree.leaves(jax.tree.map(lambda x, y: np.max(np.abs(np.asarray(x) - np.asarray(y))), a, b))))


def _torch_accuracy(net: Any, images: Any, labels: Any, batch_size: int) -> float:
    """The primer's evaluation: ``model.eval()`` and ``torch.no_grad()``, counting correct predictions."""
    torch = _torch().torch
    net.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(labels), batch_size):
            outputs = net(images[start : start + batch_size])
            _, predicted = torch.max(outputs, 1)
            correct += (predicted == labels[start : start + batch_size]).sum().item()
    return correct / len(labels)


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


# --- Benchmark ------------------------------------------------------------------------------------------


def torch_run(config: Config, variant: str = "dataloader", log: Callable[[str], None] | None = print) -> dict[str, Any]:
    """The primer's PyTorch program, timed: ``jaxtrain.experiment.run``'s counterpart, with its report.

    The program is the primer's: ``MyDataset`` and ``DataLoader(shuffle=True)``, ``MyModel`` (or the CNN
    that mirrors ``jaxtrain.models.CNN``), ``CrossEntropyLoss``, the optimizer that ``config`` names, and
    per step ``zero_grad``, forward, ``backward``, ``step`` and ``running_loss += loss.item()``; then
    ``model.eval()`` and ``torch.no_grad()`` over the test set after each epoch. torch is seeded with
    ``config.seed`` and keeps its default threads.

    Args:
      config: what to train, as for ``experiment.run``.
      variant: "dataloader", the primer as written; "tensors", the same loop slicing batches out of two
        tensors with a ``torch.randperm`` order (no DataLoader, no per-example ``__getitem__``);
        "compile", "tensors" with ``torch.compile(model)`` (slow to compile).
      log: where the primer's ``Epoch N, Loss: …`` lines go (None: nowhere).

    Returns:
      The keys of ``experiment.run``'s report: ``history`` per epoch (``epoch``, ``train_loss``,
      ``test_loss``, ``test_accuracy``, ``seconds``, ``samples_per_second``), ``test_accuracy``,
      ``compile_seconds`` (the first step's seconds, data included), ``samples_per_second`` (the fastest
      epoch), ``eval_seconds``, ``device`` and the rest.

    Example:
      >>> report = torch_run(Config(dataset="digits", epochs=1), "tensors", log=None)
      >>> sorted(report) == sorted(experiment.run(Config(dataset="digits", epochs=1), log=None))
      True
    """
    if variant not in TORCH_VARIANTS:
        raise ValueError(f"variant={variant!r}; expected one of {', '.join(TORCH_VARIANTS)}")
    t = _torch()
    torch = t.torch
    torch.manual_seed(config.seed)
    train_images, train_labels = datasets.load(config.dataset, "train", config.data_dir)
    test_images, test_labels = datasets.load(config.dataset, "test", config.data_dir)
    data, labels = _nchw(train_images), _labels(train_labels)
    test_data, test_targets = _nchw(test_images), _labels(test_labels)

    model = torch_model(config.model, train_images.shape[1])
    criterion = t.nn.CrossEntropyLoss()
    optimizer = _torch_optimizer(config, model.parameters())
    forward = torch.compile(model) if variant == "compile" else model

    if variant == "dataloader":
        dataloader = t.DataLoader(t.MyDataset(data, labels), batch_size=config.batch_size, shuffle=True)
        test_loader = t.DataLoader(t.MyDataset(test_data, test_targets), batch_size=config.eval_batch_size)
        epoch_batches = lambda: dataloader  # noqa: E731
    else:
        test_loader = [(test_data[i : i + config.eval_batch_size], test_targets[i : i + config.eval_batch_size])
                       for i in range(0, len(test_targets), config.eval_batch_size)]

        def epoch_batches():
            order = torch.randperm(len(labels))
            for start in range(0, len(labels), config.batch_size):
                index = order[start : start + config.batch_size]
                yield data[index], labels[index]

    def test():
        model.eval()
        loss_sum, correct = 0.0, 0
        with torch.no_grad():
            for inputs, targets in test_loader:
                outputs = forward(inputs)
                loss_sum += criterion(outputs, targets).item() * len(targets)
                correct += (torch.max(outputs, 1)[1] == targets).sum().item()
        return loss_sum / len(test_targets), correct / len(test_targets)

    history, compile_seconds = [], None
    for epoch in range(1, config.epochs + 1):
        model.train()
        start = time.perf_counter()
        running_loss, steps = 0.0, 0
        for inputs, targets in epoch_batches():
            optimizer.zero_grad()
            outputs = forward(inputs)
            loss = criterion(outputs, targets)
            loss.backward()
            optimizer.step()
            running_loss += loss.item()
            steps += 1
            if compile_seconds is None:
                compile_seconds = time.perf_counter() - start
        seconds = time.perf_counter() - start
        if log:
            log(f"Epoch {epoch}, Loss: {running_loss / steps}")
        test_loss, test_accuracy = test()
        history.append({
            "epoch": epoch, "train_loss": running_loss / steps, "seconds": seconds,
            "samples_per_second": len(labels) / seconds, "test_loss": test_loss, "test_accuracy": test_accuracy,
        })
    start = time.perf_counter()
    test_loss, test_accuracy = test()
    eval_seconds = time.perf_counter() - start
    if log:
        log(f"Accuracy on the {len(test_targets)} test images: {100 * test_accuracy:.2f}%")
    return {
        "dataset": config.dataset,
        "model": config.model,
        "batch_size": config.batch_size,
        "device": f"cpu: torch {torch.__version__}, {torch.get_num_threads()} threads",
        "config": dataclasses.asdict(config),
        "train_examples": len(labels),
        "test_examples": len(test_targets),
        "history": history,
        "test_accuracy": test_accuracy,
        "test_loss": test_loss,
        "compile_seconds": compile_seconds,
        "eval_seconds": eval_seconds,
        "samples_per_second": max(epoch["samples_per_second"] for epoch in history),
    }


def measure_in_child(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """Runs ``fn(*args, **kwargs)`` in a fresh process and returns its result and the process's peak memory.

    The process is started with "spawn", so it inherits no framework already loaded here: its peak
    resident set (``getrusage(RUSAGE_SELF).ru_maxrss``) is the run's own, interpreter and libraries
    included. ``fn``, its arguments and its result must pickle (a module-level function, say).

    Returns:
      ``(result, peak_mib)``.

    Example:
      >>> report, peak_mib = measure_in_child(experiment.run, Config(dataset="digits"), log=None)
    """
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        return pool.submit(_call_and_measure, fn, args, kwargs).result()


def _call_and_measure(fn: Callable[..., Any], args: tuple, kwargs: dict) -> tuple[Any, float]:
    import resource

    result = fn(*args, **kwargs)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return result, peak / (2**20 if sys.platform == "darwin" else 2**10)  # bytes on macOS, KiB on Linux


def _jax_run(config: Config) -> dict[str, Any]:
    """jaxtrain's side of the benchmark: ``experiment.run``, quietly, on the same ``Config``."""
    return experiment.run(config, log=None)


def bench(
    config: Config,
    models: Sequence[str] = ("mlp", "cnn"),
    torch_compile: bool = False,
    log: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Times the primer's PyTorch program and jaxtrain's on the same data and machine, in one run.

    For each model: ``torch_run`` with the "dataloader" variant (the primer as written), "tensors" (no
    DataLoader) and, with ``torch_compile``, "compile"; then jaxtrain's ``experiment.run``. Each runs in
    its own fresh process (``measure_in_child``), one after the other.

    Args:
      config: the training run, shared by all (its ``model`` is replaced by each of ``models``).
      models: "mlp" and/or "cnn".
      torch_compile: also time ``torch.compile``.
      log: where progress and the final table go (None: nowhere).

    Returns:
      ``config``, ``machine``, ``rows`` (per run: ``model``, ``program``, ``samples_per_second``,
      ``compile_seconds``, ``epoch_seconds`` (the median epoch), ``eval_seconds`` (one pass over the
      test set), ``test_accuracy``, ``peak_memory_mib`` and ``vs_primer``, the run's figures divided by the primer's for the same model, accuracy as a
      difference in percentage points) and ``runs``, the full reports in the same order.

    Example:
      >>> result = bench(Config(dataset="digits", epochs=1), models=("mlp",), log=None)
      >>> [row["program"] for row in result["rows"]]
      ['pytorch-dataloader', 'pytorch-tensors', 'jaxtrain']
    """
    for name in models:
        if name not in experiment.MODELS:
            raise ValueError(f"model={name!r}; expected one of {', '.join(experiment.MODELS)}")
    variants = [v for v in TORCH_VARIANTS if v != "compile" or torch_compile]
    rows, runs = [], []
    for name in models:
        run_config = dataclasses.replace(config, model=name)
        programs = [(f"pytorch-{v}", torch_run, (run_config, v), {"log": None}) for v in variants]
        programs.append(("jaxtrain", _jax_run, (run_config,), {}))
        primer = None
        for program, fn, args, kwargs in programs:
            if log:
                log(f"{name} {program} ...")
            report, peak = measure_in_child(fn, *args, **kwargs)
            row = {
                "model": name,
                "program": program,
                "samples_per_second": report["samples_per_second"],
                "compile_seconds": report["compile_seconds"],
                "epoch_seconds": statistics.median(epoch["seconds"] for epoch in report["history"]),
                "eval_seconds": report["eval_seconds"],
                "test_accuracy": report["test_accuracy"],
                "peak_memory_mib": peak,
            }
            primer = primer or row
            row["vs_primer"] = {
                **{k: row[k] / primer[k] for k in ("samples_per_second", "compile_seconds", "epoch_seconds", "eval_seconds", "peak_memory_mib")},
                "test_accuracy_points": 100 * (row["test_accuracy"] - primer["test_accuracy"]),
            }
            rows.append(row)
            runs.append({"program": program, **report})
    result = {"config": dataclasses.asdict(config), "machine": machine(), "rows": rows, "runs": runs}
    if log:
        log(format_bench(result))
    return result


def machine() -> str:
    """The host in words: CPU model, core count, OS, and JAX's device."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} CPUs, {platform.system()} {platform.machine()}; jax {experiment.device_name()}"


def format_bench(result: dict[str, Any]) -> str:
    """The bench's rows as a Markdown table."""
    lines = [
        "| model | program | samples/s | ×primer | first step (s) | ×primer | epoch (s) | ×primer | test pass (s) | ×primer "
        "| test acc. | peak MiB | ×primer |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["rows"]:
        v = r["vs_primer"]
        lines.append(
            f"| {r['model']} | {r['program']} | {r['samples_per_second']:,.0f} | {v['samples_per_second']:.2f} "
            f"| {r['compile_seconds']:.3f} | {v['compile_seconds']:.2f} | {r['epoch_seconds']:.2f} | {v['epoch_seconds']:.2f} "
            f"| {r['eval_seconds']:.2f} | {v['eval_seconds']:.2f} | {100 * r['test_accuracy']:.2f}% | {r['peak_memory_mib']:,.0f} | {v['peak_memory_mib']:.2f} |"
        )
    return "\n".join(lines)


def plot_bench(result: dict[str, Any], path: str) -> None:
    """Draws each run's per-epoch train and test loss and its per-epoch test accuracy, one row per model.

    Example:
      >>> plot_bench(bench(Config(dataset="digits", epochs=3)), "bench.png")
    """
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(run["model"] for run in result["runs"]))
    fig, axes = plt.subplots(len(names), 2, figsize=(10, 3.2 * len(names)), squeeze=False)
    for (loss_ax, acc_ax), name in zip(axes, names):
        for i, run in enumerate(r for r in result["runs"] if r["model"] == name):
            epochs = [h["epoch"] for h in run["history"]]
            color = f"C{i}"
            loss_ax.plot(epochs, [h["train_loss"] for h in run["history"]], "-o", color=color, ms=3, label=f"{run['program']} train")
            loss_ax.plot(epochs, [h["test_loss"] for h in run["history"]], "--", color=color, label=f"{run['program']} test")
            acc_ax.plot(epochs, [100 * h["test_accuracy"] for h in run["history"]], "-o", color=color, ms=3, label=run["program"])
        loss_ax.set(title=f"{name}: loss per epoch", xlabel="epoch", ylabel="cross-entropy", yscale="log")
        acc_ax.set(title=f"{name}: test accuracy per epoch", xlabel="epoch", ylabel="accuracy (%)")
        loss_ax.legend(fontsize=7)
        acc_ax.legend(fontsize=7)
        for ax in (loss_ax, acc_ax):
            ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)
