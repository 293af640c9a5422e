"""The PyTorch side of the study: the primer's classes, the torch mirrors of jaxtrain's models, and the
primer's program timed (``torch_run``).

torch is imported on first use, never by ``import jaxtrain``: ``pip install 'jaxtrain[compare]'``.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import time
import types
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from jaxtrain import experiment
from jaxtrain.config import MODELS, Config
from jaxtrain.sources import registry

TORCH_VARIANTS = ("dataloader", "tensors", "compile")


@functools.cache
def _torch() -> types.SimpleNamespace:
    """torch and the primer's classes (``primer_script``'s), imported on first use so that ``import jaxtrain``
    never loads torch."""
    try:
        import torch
    except ImportError as error:
        raise ImportError(f"{error}; the comparison with PyTorch needs it: pip install 'jaxtrain[compare]'") from None
    from torch import nn
    from torch.utils.data import DataLoader as TorchDataLoader

    from jaxtrain.compare import primer_script  # imports torch: the primer's classes, written once, there

    optimizers = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
    return types.SimpleNamespace(
        torch=torch, nn=nn, DataLoader=TorchDataLoader, MyDataset=primer_script.MyDataset, MyModel=primer_script.MyModel,
        CNN=primer_script.CNN, optimizers=optimizers
    )


def torch_model(
    name: str, image_size: int | tuple[int, int], dropout: float = 0.25, channels: int = 1, num_classes: int = 10
) -> Any:
    """The torch counterpart of ``jaxtrain.nn.linen``' ``MLP()`` (the primer's ``MyModel``) or ``CNN(dropout=...)``,
    and of their NNX twins.

    Args:
      name: a name of ``config.MODELS``: "mlp", "cnn", "nnx-mlp", "nnx-cnn".
      image_size: the side of square input images (28 for MNIST, 8 for digits), or their ``(H, W)``.
      dropout: the CNN's dropout rate before its head.
      channels: the images' channels (1 for grayscale, 3 for RGB).
      num_classes: the outputs of the last layer.

    Returns:
      A ``torch.nn.Module`` in float32, initialized by torch (seed it with ``torch.manual_seed``).

    Example:
      >>> model = torch_model("cnn", 28, dropout=0.0)
    """
    t = _torch()
    if name not in MODELS:
        raise ValueError(f"model={name!r}; expected one of {', '.join(MODELS)}")
    mirror = getattr(t, MODELS[name].torch)
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    if mirror is t.MyModel:
        return mirror(in_features=height * width * channels, num_classes=num_classes)
    return mirror(image_size=(height, width), dropout=dropout, in_channels=channels, num_classes=num_classes)


def flatten_shape(name: str, image_shape: Sequence[int]) -> tuple[int, int, int] | None:
    """The (C, H, W) activation that model ``name`` flattens before its first Linear, for images of
    ``image_shape`` (H, W, C): ``interop``'s ``flatten_shape``. None for an MLP, which flattens its input.

    Example:
      >>> flatten_shape("cnn", (32, 32, 3))
      (128, 4, 4)
    """
    parameters = inspect.signature(MODELS[name].module.__init__).parameters
    if "channels" not in parameters:
        return None
    blocks = tuple(parameters["channels"].default)
    return blocks[-1], image_shape[0] // 2 ** len(blocks), image_shape[1] // 2 ** len(blocks)


def to_nchw(images: np.ndarray) -> Any:
    """(N, H, W, C) numpy images → an (N, C, H, W) torch tensor, as torch's convolutions expect."""
    return _torch().torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


def to_labels(labels: np.ndarray) -> Any:
    """Integer labels → the int64 tensor that ``nn.CrossEntropyLoss`` expects."""
    return _torch().torch.from_numpy(np.asarray(labels, np.int64))


def torch_optimizer(config: Any, parameters) -> Any:
    """The ``torch.optim`` twin of ``optim.OPTIMIZERS[config.optimizer]``, with ``config.optimizer_args()``."""
    return _torch().optimizers[config.optimizer](parameters, **config.optimizer_args())


def torch_step(net: Any, optimizer: Any, criterion: Any, inputs: Any, targets: Any) -> Any:
    """The primer's training step, in place: ``zero_grad``, forward, loss, ``backward``, ``step``; the loss."""
    net.train()
    optimizer.zero_grad()
    loss = criterion(net(inputs), targets)
    loss.backward()
    optimizer.step()
    return loss.detach()


def torch_accuracy(net: Any, images: Any, labels: Any, batch_size: int) -> float:
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


def torch_run(config: Config, variant: str = "dataloader", log: Callable[[str], None] | None = print) -> dict[str, Any]:
    """The primer's PyTorch program, timed: ``jaxtrain.experiment.run``'s counterpart, with its report.

    The program is the primer's: ``MyDataset`` and ``DataLoader(shuffle=True)``, ``MyModel`` (or the CNN
    that mirrors ``jaxtrain.nn.linen.CNN``), ``CrossEntropyLoss``, the optimizer that ``config`` names, and
    per step ``zero_grad``, forward, ``backward``, ``step`` and ``running_loss += loss.item()``; then
    ``model.eval()`` and ``torch.no_grad()`` over the test set after each epoch. torch is seeded with
    ``config.seed`` and keeps its default threads. Where CUDA is available the model trains there, as the
    primer's GPU version does: the DataLoader's batches are moved with ``.to(device)`` each step, while
    the other variants keep the whole dataset on the GPU.

    Args:
      config: what to train, as for ``experiment.run``.
      variant: "dataloader", the primer as written; "tensors", the same loop slicing batches out of two
        tensors with a ``torch.randperm`` order (no DataLoader, no per-example ``__getitem__``);
        "compile", "tensors" with ``torch.compile(model)`` (slow to compile).
      log: where the primer's ``Epoch N, Loss: …`` lines go (None: nowhere).

    Returns:
      The keys of ``experiment.run``'s report: ``history`` per epoch (``epoch``, ``train_loss``,
      ``test_loss``, ``test_accuracy``, ``seconds``, ``samples_per_second``, ``eval_seconds``), ``test_accuracy``,
      ``compile_seconds`` (the first step's seconds, data included), ``samples_per_second``
      (``experiment.steady_speed``), ``eval_seconds`` (the last epoch's evaluation), ``device`` and the rest.

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
    train_images, train_labels = registry.load(config.dataset, "train", config.data_dir)
    test_images, test_labels = registry.load(config.dataset, "test", config.data_dir)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    data, labels = to_nchw(train_images), to_labels(train_labels)
    test_data, test_targets = to_nchw(test_images), to_labels(test_labels)
    if variant != "dataloader":  # the DataLoader reads from host memory, as the primer's does
        data, labels, test_data, test_targets = (a.to(device) for a in (data, labels, test_data, test_targets))

    model = torch_model(config.model, train_images.shape[1:3], channels=train_images.shape[3], num_classes=registry.info(config.dataset, config.data_dir).num_classes).to(device)
    criterion = t.nn.CrossEntropyLoss()
    optimizer = torch_optimizer(config, model.parameters())
    forward = torch.compile(model) if variant == "compile" else model

    if variant == "dataloader":
        dataloader = t.DataLoader(t.MyDataset(data, labels), batch_size=config.batch_size, shuffle=True)
        test_loader = t.DataLoader(t.MyDataset(test_data, test_targets), batch_size=config.eval_batch_size)
        epoch_batches = lambda: dataloader  # noqa: E731
    else:
        test_loader = [(test_data[i : i + config.eval_batch_size], test_targets[i : i + config.eval_batch_size])
                       for i in range(0, len(test_targets), config.eval_batch_size)]

        def epoch_batches():
            order = torch.randperm(len(labels), device=device)
            for start in range(0, len(labels), config.batch_size):
                index = order[start : start + config.batch_size]
                yield data[index], labels[index]

    def test():
        model.eval()
        loss_sum, correct = 0.0, 0
        with torch.no_grad():
            for inputs, targets in test_loader:
                inputs, targets = inputs.to(device), targets.to(device)
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
            inputs, targets = inputs.to(device), targets.to(device)
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
        start = time.perf_counter()
        test_loss, test_accuracy = test()
        history.append({
            "epoch": epoch, "train_loss": running_loss / steps, "seconds": seconds,
            "samples_per_second": len(labels) / seconds, "test_loss": test_loss, "test_accuracy": test_accuracy,
            "eval_seconds": time.perf_counter() - start,
        })
    # The last epoch's evaluation is the final one: nothing trains between it and here.
    test_loss, test_accuracy = history[-1]["test_loss"], history[-1]["test_accuracy"]
    if log:
        log(f"Accuracy on the {len(test_targets)} test images: {100 * test_accuracy:.2f}%")
    return {
        "dataset": config.dataset,
        "model": config.model,
        "batch_size": config.batch_size,
        "device": (f"cuda: {torch.cuda.get_device_name()}, torch {torch.__version__}" if device.type == "cuda"
                   else f"cpu: torch {torch.__version__}, {torch.get_num_threads()} threads"),
        "config": dataclasses.asdict(config),
        "train_examples": len(labels),
        "test_examples": len(test_targets),
        "history": history,
        "test_accuracy": test_accuracy,
        "test_loss": test_loss,
        "compile_seconds": compile_seconds,
        "eval_seconds": history[-1]["eval_seconds"],
        "samples_per_second": experiment.steady_speed(history),
    }


