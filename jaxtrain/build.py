"""From a ``Config`` to what a run starts with: the model (``build_model``), the learning-rate schedule and the
optimizer with torch's semantics (``build_schedule``, ``build_optimizer``) and the state at step 0
(``initial_state``). ``experiment.run`` trains from them; ``runs.load.load_run`` rebuilds a saved run's.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import jax
import numpy as np
import optax

from jaxtrain.config import COMPUTE_DTYPES, MODELS, Config
from jaxtrain.nn.adapter import is_nnx
from jaxtrain.nn.linen import CNN, MLP
from jaxtrain.training import optim, schedules
from jaxtrain.training.step import TrainState, create_train_state

if TYPE_CHECKING:
    from jaxtrain.nn.nnx import NNXCNN, NNXMLP


def build_model(
    config: Config, num_classes: int = 10, input_shape: Sequence[int] | None = None
) -> MLP | CNN | NNXMLP | NNXCNN:
    """The Flax module that ``config`` names, with its dropout, BatchNorm and compute dtype.

    Args:
      config: the run.
      num_classes: the outputs of the last layer: the data's classes (``sources.registry.info``).
      input_shape: the shape of one input, e.g. ``(32, 32, 3)``; an NNX module needs it, since it is built
        with its weights (seeded by ``config.seed``).

    Example:
      >>> build_model(Config(model="nnx-cnn"), num_classes=10, input_shape=(32, 32, 3))
    """
    options = {"dropout": config.dropout, "batch_norm": config.batch_norm}
    options = {name: value for name, value in options.items() if value is not None}
    module = MODELS[config.model].module
    options.update(num_classes=num_classes, dtype=COMPUTE_DTYPES[config.dtype])
    if is_nnx(module):
        from flax import nnx

        if input_shape is None:
            raise ValueError(f"input_shape=None; expected the shape of one input, e.g. (28, 28, 1), to build {config.model!r}")
        return module(tuple(input_shape), rngs=nnx.Rngs(config.seed), **options)
    return module(**options)


def model_options(config: Config) -> dict[str, Any]:
    """The model's ``dropout``, ``batch_norm`` and ``dtype`` as ``config`` resolves them: its own defaults
    where the configuration leaves them None."""
    defaults = inspect.signature(MODELS[config.model].module.__init__).parameters
    return {
        "dropout": defaults["dropout"].default if config.dropout is None else config.dropout,
        "batch_norm": defaults["batch_norm"].default if config.batch_norm is None else config.batch_norm,
        "dtype": config.dtype,
    }


def build_schedule(config: Config, batches_per_epoch: int) -> schedules.Schedule:
    """The learning-rate schedule that ``config`` names, counted in optimizer steps.

    The step decay is torch's ``StepLR(step_size, gamma)`` stepped once per epoch: the lr falls at the first
    optimizer step of every ``step_size``-th epoch (counted from the end of the warmup). An epoch is
    ``batches_per_epoch / grad_accum`` optimizer steps, not always a whole number, so the period is a
    ``Fraction`` of optimizer steps. No number of the schedule but the cosine's length depends on the
    run's epochs.

    Example:
      >>> lr = build_schedule(Config(schedule="cosine", epochs=5), batches_per_epoch=100)
      >>> lr(0), lr(250), lr(500)   # 1e-3, 5e-4, 0.0 (float32)
    """
    return schedules.schedule(
        config.schedule,
        config.lr,
        total_steps=_optimizer_steps(config, batches_per_epoch, config.epochs),
        step_size=Fraction(config.step_size * batches_per_epoch, config.grad_accum),
        milestones=[_optimizer_steps(config, batches_per_epoch, e) for e in config.milestones],
        gamma=config.gamma,
        warmup_steps=config.warmup_steps,
    )


def _optimizer_steps(config: Config, batches_per_epoch: int, epochs: int) -> int:
    """Optimizer steps completed after ``epochs`` epochs (accumulation carries over epoch boundaries)."""
    return epochs * batches_per_epoch // config.grad_accum


def build_optimizer(config: Config, batches_per_epoch: int | None = None) -> optax.GradientTransformation:
    """The optax optimizer that ``config`` names, with torch's semantics, its schedule, clipping and accumulation.

    Args:
      config: the run.
      batches_per_epoch: ``len(train_loader)``, which turns epochs into steps; needed by every schedule but
        a constant learning rate without warmup.

    Returns:
      ``accumulate_gradients(clip_grad_norm(scheduled(optimizer, schedule), clip_norm), grad_accum)``,
      leaving out the parts that the configuration does not ask for (``adjustable_lr`` for "plateau").
    """
    factory, args = optim.OPTIMIZERS[config.optimizer], config.optimizer_args()
    rate = args.pop("lr")
    fixed = config.schedule in ("constant", "plateau") and not config.warmup_steps  # counts no steps
    if not fixed and batches_per_epoch is None:
        raise ValueError(
            f"schedule={config.schedule!r}, warmup_steps={config.warmup_steps}; "
            f"expected batches_per_epoch (len(train_loader)) to count the schedule's steps"
        )
    lr = rate if fixed else build_schedule(config, batches_per_epoch)
    if config.schedule == "plateau":  # the rate in the optimizer state, where ReduceLROnPlateau lowers it
        tx = optim.adjustable_lr(factory, lr, **args)
    else:  # the schedule's numbers in the state, not in the program: other epochs or rates, the same program
        tx = schedules.scheduled(factory, lr, **args)
    if config.clip_norm is not None:
        tx = optim.clip_grad_norm(tx, config.clip_norm)
    return optim.accumulate_gradients(tx, config.grad_accum)


def epoch_learning_rates(config: Config, batches_per_epoch: int) -> list[float]:
    """The learning rate in effect at the start of each epoch: that of the epoch's first optimizer step."""
    steps = np.array([_optimizer_steps(config, batches_per_epoch, e) for e in range(config.epochs)], np.int32)
    # One program for every epoch: called step by step, the schedule ran each of its operations eagerly, and
    # XLA compiled each on its own (7 programs for the cosine schedule).
    lr = build_schedule(config, batches_per_epoch)
    rates = np.asarray(jax.jit(jax.vmap(lr.at, in_axes=(0, None)))(steps, lr.numbers), np.float32)
    # str() of the float32 is its shortest decimal form: 0.001 rather than 0.0010000000474974513.
    return [float(str(rate)) for rate in rates]


def initial_state(config: Config, sample: np.ndarray, batches_per_epoch: int, num_classes: int = 10) -> TrainState:
    """The run's model and optimizer at step 0, seeded by ``config.seed``, for inputs like ``sample`` and
    ``num_classes`` classes."""
    optimizer = build_optimizer(config, batches_per_epoch)
    model = build_model(config, num_classes, np.shape(sample)[1:])
    return create_train_state(model, optimizer, sample, seed=config.seed)
