"""A model's summary, as Keras' ``model.summary()`` and torchinfo give it: each layer's output shape and
parameters, the totals, and the FLOPs of a training step per example, from XLA's cost analysis of the
compiled step.

Flax's ``nn.tabulate`` and ``nnx.tabulate`` record the same layers, by the same means (Linen's method
interception; NNX's methods wrapped for one call), but render a rich table whose total adds the batch
statistics and RNG counters to the parameters. Here the parameters alone make the total, so that it equals
torch's ``sum(p.numel() for p in model.parameters())`` (BatchNorm's running statistics are torch buffers,
counted apart), and the result is data (``ModelSummary``) as well as text.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxtrain.training.losses import cross_entropy
from jaxtrain.nn.adapter import NNXModel
from jaxtrain.training.optim import adam
from jaxtrain.training.step import TrainState, create_train_state, forward, predict, train_step

if TYPE_CHECKING:
    from flax import nnx


@dataclasses.dataclass(frozen=True)
class Layer:
    """One submodule of the model, as its first call saw it.

    Attributes:
      path: where it sits in the model, e.g. ``"Conv_0"`` or ``"Block_1/Dense_0"``.
      kind: its class name, e.g. ``"Dense"``.
      output_shapes: the shape of each of its outputs (one for a layer that returns an array), for the
        sample's batch.
      params: its parameters, its submodules' included.
    """

    path: str
    kind: str
    output_shapes: tuple[tuple[int, ...], ...]
    params: int


@dataclasses.dataclass(frozen=True)
class ModelSummary:
    """What ``summary`` finds; ``str()`` is the table that ``python -m jaxtrain summary`` prints.

    Attributes:
      model: the model's class name.
      input_shape: the sample's shape, batch included.
      layers: the submodules down to ``depth``, in call order.
      params: the trained parameters: torch's ``sum(p.numel() for p in model.parameters())``.
      params_bytes: their size in bytes.
      state: the non-trained state (BatchNorm's running statistics): torch's buffers but
        ``num_batches_tracked``.
      train_flops: FLOPs of one training step (forward, backward and the optimizer's update) per example,
        at ``batch_size``, from XLA's cost analysis of the compiled step; None where the backend gives none.
      forward_flops: the same for ``predict`` (the forward pass in evaluation mode).
      batch_size: the batch the steps were compiled for.
      backend: the platform that compiled them, e.g. "cpu".
    """

    model: str
    input_shape: tuple[int, ...]
    layers: tuple[Layer, ...]
    params: int
    params_bytes: int
    state: int
    train_flops: float | None
    forward_flops: float | None
    batch_size: int
    backend: str

    def to_dict(self) -> dict[str, Any]:
        """The summary as JSON-able data (``--json``)."""
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        rows = [("layer", "type", "output shape", "params")]
        rows += [(l.path, l.kind, ", ".join(_shape(s) for s in l.output_shapes), f"{l.params:,}") for l in self.layers]
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        lines = [f"{self.model}, input {_shape(self.input_shape)}"]
        lines += ["  ".join([*(cell.ljust(w) for cell, w in zip(row[:3], widths)), row[3].rjust(widths[3])]) for row in rows]
        lines.append(f"parameters: {self.params:,} ({_bytes(self.params_bytes)})" + (f"; batch statistics: {self.state:,}" if self.state else ""))
        at = f"(XLA's cost analysis of the compiled step, batch {self.batch_size}, {self.backend})"
        if self.train_flops is None:
            lines.append(f"FLOPs: none given by the {self.backend} backend's cost analysis")
        else:
            lines.append(f"FLOPs per example: training step {_flops(self.train_flops)}, forward {_flops(self.forward_flops)} {at}")
        return "\n".join(lines)


def summary(
    model: nn.Module | nnx.Module | TrainState,
    sample: Any,
    *,
    tx: optax.GradientTransformation | None = None,
    batch_size: int = 32,
    depth: int | None = 1,
    loss_fn: Callable[..., jax.Array] = cross_entropy,
) -> ModelSummary:
    """Each layer's output shape and parameters, the totals, and FLOPs per example: ``model.summary()``.

    Args:
      model: a Linen module, an initialized NNX module, or a ``TrainState`` (its model, parameters and
        optimizer are summarized as they are).
      sample: an input batch, e.g. ``images[:1]`` (``(1, H, W, C) float32``), as ``create_train_state`` takes.
      tx: the optimizer whose update the training step's FLOPs include (default: ``jaxtrain.adam(1e-3)``);
        ignored for a ``TrainState``, which has its own.
      batch_size: the batch the training step and the forward pass are compiled for, to count their FLOPs
        (the sample's first example, repeated).
      depth: how deep to list submodules: 1 lists the model's own layers; None, every submodule.
      loss_fn: the training step's loss, ``loss_fn(logits, labels)`` with integer labels.

    Returns:
      A ``ModelSummary``; ``print()`` it for the table.

    Example:
      >>> print(summary(MLP(), images[:1]))
      >>> summary(NNXCNN((28, 28, 1), rngs=nnx.Rngs(0)), images[:1]).params   # 110,698 for 28×28×1 inputs
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r}; expected a positive integer")
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 1):
        raise ValueError(f"depth={depth!r}; expected a positive integer, or None for every submodule")
    if isinstance(model, TrainState):
        state = model
        name = model.model.name if isinstance(model.model, NNXModel) else type(model.model).__name__
    else:
        name = type(model).__name__
        state = create_train_state(model, tx or adam(1e-3), sample, loss_fn=loss_fn)
    inputs = jax.tree.map(lambda a: jnp.asarray(a)[:1], sample)
    layers = _layers(state, inputs, depth)
    params = jax.tree.leaves(state.params)
    batch = jax.tree.map(lambda a: jnp.repeat(a, batch_size, axis=0), inputs)
    labels = jnp.zeros((batch_size,), jnp.int32)
    train_flops = _flops_of(train_step.lower(state, (batch, labels)), batch_size)
    forward_flops = _flops_of(predict.lower(state, batch), batch_size)
    return ModelSummary(
        model=name,
        input_shape=tuple(np.shape(jax.tree.leaves(sample)[0])),
        layers=layers,
        params=sum(int(np.size(p)) for p in params),
        params_bytes=sum(int(np.size(p)) * np.dtype(p.dtype).itemsize for p in params),
        state=sum(int(np.size(s)) for s in jax.tree.leaves(state.batch_stats)),
        train_flops=train_flops,
        forward_flops=forward_flops if train_flops is not None else None,
        batch_size=batch_size,
        backend=jax.default_backend(),
    )


def _flops_of(lowered: Any, batch_size: int) -> float | None:
    """FLOPs per example of a lowered step, by XLA's cost analysis of its compilation; None where the
    backend counts none."""
    analysis = lowered.compile().cost_analysis()
    if isinstance(analysis, list | tuple):  # one per device in older jax
        analysis = analysis[0] if analysis else None
    if not analysis or analysis.get("flops") is None or analysis["flops"] < 0:
        return None
    return float(analysis["flops"]) / batch_size


def _layers(state: TrainState, inputs: Any, depth: int | None) -> tuple[Layer, ...]:
    """The model's submodules down to ``depth``, recorded at their first call in evaluation mode (shapes
    only: ``jax.eval_shape`` computes nothing)."""
    calls: dict[tuple[str, ...], tuple[int, str, Any]] = {}
    order = itertools.count()

    def record(path: tuple[Any, ...], module: Any, output: Any, index: int) -> None:
        key = tuple(str(p) for p in path)
        if key and (depth is None or len(key) <= depth) and key not in calls:
            calls[key] = (index, type(module).__name__, output)

    if isinstance(state.model, NNXModel):
        from flax import nnx

        def run(variables, x):
            module = state.model.module(variables)
            module.eval()
            paths = {id(sub): path for path, sub in nnx.iter_modules(module)}
            classes = {type(sub) for _, sub in nnx.iter_modules(module)}
            with _wrapped_calls(classes, lambda sub, out, i: record(paths.get(id(sub), ()), sub, out, i), order):
                return module(x)
    else:
        def interceptor(next_fun, args, kwargs, context):
            index = next(order)  # numbered on entry: a parent before its children, as the code reads
            out = next_fun(*args, **kwargs)
            if context.method_name == "__call__":
                record(context.module.path, context.module, out, index)
            return out

        def run(variables, x):
            with nn.intercept_methods(interceptor):
                return forward(state.replace(batch_stats=variables.get("batch_stats", {})), variables["params"], x, train=False)[0]

    jax.eval_shape(run, state.variables, inputs)
    flat = [(tuple(_key(k) for k in path), int(np.size(leaf))) for path, leaf in jax.tree_util.tree_leaves_with_path(state.params)]
    return tuple(
        Layer("/".join(path), kind, tuple(tuple(o.shape) for o in jax.tree.leaves(output)),
              sum(n for where, n in flat if where[: len(path)] == path))
        for path, (_, kind, output) in sorted(calls.items(), key=lambda item: item[1][0])
    )


@contextlib.contextmanager
def _wrapped_calls(types: set[type], record: Callable[[Any, Any, int], None], order: Iterator[int]) -> Iterator[None]:
    """Wraps the ``__call__`` of NNX module classes for the block, as ``nnx.tabulate`` does: a call's output
    goes to ``record(module, output, index)``. The classes are restored on the way out, whatever happens."""
    from flax import nnx

    owners = {next(c for c in t.__mro__ if "__call__" in vars(c)) for t in types if callable(getattr(t, "__call__", None))}
    owners = {c for c in owners if c not in (object, nnx.Module) and issubclass(c, nnx.Module)}
    originals = {c: vars(c)["__call__"] for c in owners}

    def wrap(call):
        def wrapper(self, *args, **kwargs):
            index = next(order)
            out = call(self, *args, **kwargs)
            record(self, out, index)
            return out
        return wrapper

    try:
        for c, call in originals.items():
            setattr(c, "__call__", wrap(call))
        yield
    finally:
        for c, call in originals.items():
            setattr(c, "__call__", call)


def _key(entry: Any) -> str:
    """A key path entry as a string: ``DictKey("Dense_0")`` → ``"Dense_0"``."""
    for attribute in ("key", "name", "idx"):
        if hasattr(entry, attribute):
            return str(getattr(entry, attribute))
    return str(entry)


def _shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(map(str, shape)) + ")"


def _bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1000
    return f"{n} B"


def _flops(n: float | None) -> str:
    if n is None:
        return "none"
    exponent = min(int(math.log10(max(n, 1)) // 3), 4)
    return f"{n / 1000 ** exponent:.3g} {('', 'k', 'M', 'G', 'T')[exponent]}FLOPs"
