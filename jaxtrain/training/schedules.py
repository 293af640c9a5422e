"""Learning-rate schedules with the values of ``torch.optim.lr_scheduler``, counted in optimizer steps.

``schedule(name, lr, ...)`` builds ``StepLR``, ``MultiStepLR``, ``CosineAnnealingLR`` or a constant rate,
after an optional ``LinearLR`` warmup, as an optax schedule: pass it as the ``lr`` of ``optim.sgd``,
``optim.adam`` or ``optim.adamw``, or to ``scheduled``, which keeps its numbers in the optimizer's
state rather than in the compiled step. Its arguments are checked as the optimizers' are, one line naming
each.

``Plateau`` is ``ReduceLROnPlateau``, which no function of the step can be: it follows a metric read once
per epoch on the host, and sets the rate held in the optimizer state (``optim.adjustable_lr``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxtrain.training.arguments import check_integer, check_number, is_number

SCHEDULES = ("constant", "step", "multistep", "cosine", "plateau")


class Schedule:
    """A learning-rate schedule of ``schedule``: called with an optimizer step count, it gives that step's rate,
    as any optax schedule does.

    Its numbers (``numbers``: the base rate, the cosine's length, the milestones ...) are kept apart from
    its formula (``at``), so that an optimizer can hold them in its state (``scheduled``): then they
    are data of the compiled step, not constants in it, and a run of another length or rate compiles the
    same program, which the compilation cache already holds.

    Attributes:
      name: one of ``SCHEDULES``.
      numbers: the schedule's numbers by name: Python numbers, and the milestones as an int32 array.
    """

    def __init__(self, name: str, numbers: dict[str, Any]):
        self.name, self.numbers = name, numbers

    def __call__(self, count: jax.Array) -> jax.Array:
        return self.at(count, self.numbers)

    def __repr__(self) -> str:
        return f"Schedule({self.name!r}, {self.numbers!r})"

    def at(self, count: jax.Array, numbers: dict[str, Any]) -> jax.Array:
        """The learning rate of optimizer step ``count + 1`` for these ``numbers`` (``self.numbers`` or arrays
        of the same structure)."""
        if "warmup_steps" not in numbers:
            return self._main(count, numbers)
        # LinearLR(start_factor, total_iters=warmup_steps), then the main schedule from its own step 0
        # (SequentialLR), as optax.linear_schedule and optax.join_schedules compute them.
        warmup = numbers["warmup_steps"]
        rising = numbers["warmup_drop"] * (1 - jnp.clip(count, 0, warmup) / warmup) + numbers["lr"]
        return jnp.where(count < warmup, rising, self._main(count - warmup, numbers))

    def _main(self, count: jax.Array, numbers: dict[str, Any]) -> jax.Array:
        lr = numbers["lr"]
        if self.name in ("constant", "plateau"):  # a plateau's rate changes from the host (Plateau), not by the step
            return lr * jnp.ones_like(count, jnp.result_type(float))
        if self.name == "step":  # decays at steps floor(j * period / per): #{j >= 1: j * period < (count + 1) * per}
            return lr * numbers["gamma"] ** (((count + 1) * numbers["per"] - 1) // numbers["period"])
        if self.name == "multistep":  # a repeated milestone counts twice, as in torch
            return lr * numbers["gamma"] ** jnp.sum(count >= numbers["milestones"])
        # cosine, as optax.cosine_decay_schedule computes it: from 1 to floor (eta_min / lr) over decay_steps
        cosine = 0.5 * (1 + jnp.cos(jnp.pi * jnp.minimum(count, numbers["decay_steps"]) / numbers["decay_steps"]))
        return lr * (numbers["span"] * cosine + numbers["floor"])


def schedule(
    name: str,
    lr: float,
    total_steps: int | None = None,
    *,
    step_size: int | Fraction | None = None,
    milestones: Sequence[int] | None = None,
    gamma: float = 0.1,
    eta_min: float = 0.0,
    warmup_steps: int = 0,
    warmup_start_factor: float = 1 / 3,
) -> Schedule:
    """A learning-rate schedule with the values of a ``torch.optim.lr_scheduler`` stepped once per optimizer step.

    ``schedule(...)(t)`` is the learning rate of optimizer step ``t + 1``: the ``lr`` that torch's optimizer
    holds after ``t`` calls of ``scheduler.step()``. Every count is in optimizer steps; a torch script that
    steps its scheduler once per epoch converts epochs into steps (``jaxtrain.experiment`` does).

      - ``"constant"``: ``lr`` throughout.
      - ``"plateau"``: ``lr`` as far as the step goes: ``ReduceLROnPlateau`` lowers it from the host, by a
        metric the step does not see (``Plateau``, ``jaxtrain.training.callbacks.ReduceLROnPlateau``).
      - ``"step"``: ``StepLR(step_size, gamma)``: ``lr * gamma ** (t // step_size)``. A fractional
        ``step_size`` (a ``Fraction``: epochs that are not a whole number of optimizer steps) decays at
        the steps ``floor(j * step_size)``, j = 1, 2, ...
      - ``"multistep"``: ``MultiStepLR(milestones, gamma)``: ``lr * gamma ** (number of milestones <= t)``.
      - ``"cosine"``: ``CosineAnnealingLR(T_max=total_steps - warmup_steps, eta_min)``:
        ``eta_min + (lr - eta_min) * (1 + cos(pi * t / T_max)) / 2``. Past ``T_max`` it stays at ``eta_min``
        (torch's would climb back along the cosine).
      - ``warmup_steps > 0`` puts ``LinearLR(warmup_start_factor, total_iters=warmup_steps)`` first, as
        ``SequentialLR([warmup, main], milestones=[warmup_steps])`` does: the lr rises linearly from
        ``warmup_start_factor * lr`` to ``lr``, then the main schedule starts from its own step 0.
        The start factor defaults to torch's 1/3; torch requires it in (0, 1].

    Args:
      name: one of ``SCHEDULES``.
      lr: the base learning rate (torch's ``lr`` argument of the optimizer).
      total_steps: the run's optimizer steps, warmup included; needed by ``"cosine"``.
      step_size: ``"step"``'s decay period in optimizer steps: an integer, or a ``Fraction``.
      milestones: ``"multistep"``'s decay steps, counted from the end of the warmup.
      gamma: the decay factor of ``"step"`` and ``"multistep"``.
      eta_min: ``"cosine"``'s final learning rate.
      warmup_steps: optimizer steps of linear warmup (0: none).
      warmup_start_factor: the warmup's first learning rate, as a fraction of ``lr``.

    Returns:
      A ``Schedule``: step count → learning rate, an optax schedule. Pass it as the ``lr`` of ``sgd``,
      ``adam`` or ``adamw``, or to ``scheduled`` to keep its numbers in the optimizer's state.

    Example:
      >>> lr = schedule("cosine", 1e-3, total_steps=1000, warmup_steps=100)
      >>> tx = adam(lr)
    """
    if name not in SCHEDULES:
        raise ValueError(f"schedule={name!r}; expected one of {', '.join(SCHEDULES)}")
    check_number("lr", lr, positive=True)
    check_integer("warmup_steps", warmup_steps, 0)
    if not (is_number(warmup_start_factor) and 0 < float(warmup_start_factor) <= 1):
        raise ValueError(f"warmup_start_factor={warmup_start_factor!r}; expected a number in (0, 1] as torch's LinearLR")
    if name in ("step", "multistep"):
        check_number("gamma", gamma, positive=True)
    numbers: dict[str, Any] = {"lr": float(lr)}
    if name == "step":
        if not (isinstance(step_size, Fraction) and step_size > 0):
            check_integer("step_size", step_size, 1, " (optimizer steps)")
        period = Fraction(step_size)
        numbers.update(gamma=float(gamma), period=period.numerator, per=period.denominator)
    elif name == "multistep":
        if milestones is None or isinstance(milestones, str | bytes) or not isinstance(milestones, Sequence):
            raise ValueError(f"milestones={milestones!r}; expected a sequence of optimizer steps >= 0")
        for i, milestone in enumerate(milestones):
            check_integer(f"milestones[{i}]", milestone, 0, " (an optimizer step)")
        numbers.update(gamma=float(gamma), milestones=np.asarray(sorted(milestones), np.int32))
    elif name == "cosine":
        check_integer("total_steps", total_steps, 1, " (cosine annealing needs the run's optimizer steps)")
        if total_steps <= warmup_steps:
            raise ValueError(
                f"warmup_steps={warmup_steps!r}; expected fewer than total_steps={total_steps} "
                f"(cosine annealing needs optimizer steps after the warmup)"
            )
        if not (is_number(eta_min) and 0 <= float(eta_min) <= lr):
            raise ValueError(f"eta_min={eta_min!r}; expected a number in [0, lr={lr}]")
        floor = float(eta_min) / float(lr)
        numbers.update(decay_steps=total_steps - warmup_steps, floor=floor, span=1 - floor)
    if warmup_steps:
        numbers.update(warmup_steps=warmup_steps, warmup_drop=(float(warmup_start_factor) - 1) * float(lr))
    return Schedule(name, numbers)


class ScheduledState(NamedTuple):
    """``scheduled``'s state: the optimizer steps taken, the schedule's numbers as arrays, the optimizer's own."""

    count: jax.Array
    numbers: dict[str, jax.Array]
    inner: optax.OptState


def scheduled(factory: Any, lr: float | Schedule, **kwargs: Any) -> optax.GradientTransformation:
    """``factory(lr, **kwargs)`` with the schedule's numbers held in the optimizer state.

    ``factory(lr)`` makes the numbers of the schedule (its base rate, a cosine's length in steps, its
    milestones) constants of the compiled step, so that a run with another number of epochs or another
    rate compiles a new program. Here they are arrays in the state, read by each step: every such run
    compiles the same program, and a second run finds it in the compilation cache. Step by step the rate
    is the schedule's own, ``lr(count)``.

    Args:
      factory: ``sgd``, ``adam``, ``adamw`` or an optax optimizer whose first argument is the learning rate.
      lr: a ``jaxtrain.training.schedules.schedule``, or a number: a constant rate.
      kwargs: the optimizer's other arguments.

    Returns:
      The optimizer, its state a ``ScheduledState``.

    Example:
      >>> tx = scheduled(adam, schedule("cosine", 1e-3, total_steps=1000))
    """
    if callable(lr) and not isinstance(lr, Schedule):
        raise ValueError(f"lr={lr!r}; expected a number or a jaxtrain.training.schedules.schedule, whose numbers "
                         f"the state can hold")
    lr = lr if isinstance(lr, Schedule) else schedule("constant", lr)

    def init(params: Any) -> ScheduledState:
        # The rates in the parameters' dtype (float64 in a float64 run), as optax.inject_hyperparams holds them.
        dtype = next((leaf.dtype for leaf in jax.tree.leaves(params) if jnp.issubdtype(leaf.dtype, jnp.floating)), None)
        numbers = {k: jnp.asarray(v, dtype if isinstance(v, float) else None) for k, v in lr.numbers.items()}
        return ScheduledState(jnp.zeros([], jnp.int32), numbers, factory(lr.numbers["lr"], **kwargs).init(params))

    def update(updates: Any, state: ScheduledState, params: Any = None) -> tuple[Any, ScheduledState]:
        rate = lr.at(state.count, state.numbers)
        updates, inner = factory(rate, **kwargs).update(updates, state.inner, params)
        return updates, ScheduledState(optax.safe_int32_increment(state.count), state.numbers, inner)

    return optax.GradientTransformation(init, update)


class Plateau:
    """``torch.optim.lr_scheduler.ReduceLROnPlateau``'s rule, on the host: the same arguments, defaults and
    arithmetic (Python floats), so that fed the same metrics it gives the same learning rates.

    After each ``step(metric)``: a metric better than the best so far by more than ``threshold`` (relative:
    below ``best * (1 - threshold)`` in mode "min"; absolute: below ``best - threshold``) resets the count of
    bad epochs; more than ``patience`` bad epochs in a row multiply the rate by ``factor`` (not below
    ``min_lr``, and not by a change of ``eps`` or less), then ``cooldown`` epochs count no bad epoch.

    Args:
      lr: the learning rate at the start.
      mode: "min" (a loss) or "max" (an accuracy).
      factor: the decay, < 1.
      patience: bad epochs tolerated before a decay.
      threshold: the least improvement that counts.
      threshold_mode: "rel" or "abs".
      cooldown: epochs after a decay before bad epochs count again.
      min_lr: the lowest learning rate.
      eps: a decay smaller than this is not made.

    Example:
      >>> plateau = Plateau(1e-3, patience=2)
      >>> [plateau.step(loss) for loss in (1.0, 1.0, 1.0, 1.0)]
      [0.001, 0.001, 0.001, 0.0001]
    """

    def __init__(
        self,
        lr: float,
        mode: str = "min",
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_mode: str = "rel",
        cooldown: int = 0,
        min_lr: float = 0.0,
        eps: float = 1e-8,
    ):
        check_number("lr", lr)
        if mode not in ("min", "max"):
            raise ValueError(f"mode={mode!r}; expected 'min' or 'max'")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"threshold_mode={threshold_mode!r}; expected 'rel' or 'abs'")
        if not (is_number(factor) and 0 <= float(factor) < 1):  # torch: "Factor should be < 1.0."
            raise ValueError(f"factor={factor!r}; expected a number in [0, 1)")
        check_integer("patience", patience, 0, " (epochs)")
        check_integer("cooldown", cooldown, 0, " (epochs)")
        check_number("threshold", threshold)
        check_number("min_lr", min_lr)
        check_number("eps", eps)
        self.lr, self.mode, self.factor, self.patience = float(lr), mode, float(factor), patience
        self.threshold, self.threshold_mode, self.cooldown = float(threshold), threshold_mode, cooldown
        self.min_lr, self.eps = float(min_lr), float(eps)
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = self.cooldown_counter = self.last_epoch = 0

    def _is_better(self, a: float) -> bool:
        if self.mode == "min":
            return a < self.best * (1.0 - self.threshold) if self.threshold_mode == "rel" else a < self.best - self.threshold
        return a > self.best * (self.threshold + 1.0) if self.threshold_mode == "rel" else a > self.best + self.threshold

    def step(self, metric: float) -> float:
        """Takes one epoch's metric (torch's ``scheduler.step(metric)``); returns the learning rate from now on."""
        current = float(metric)
        self.last_epoch += 1
        if self._is_better(current):
            self.best, self.num_bad_epochs = current, 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0  # bad epochs in a cooldown are not counted
        if self.num_bad_epochs > self.patience:
            new_lr = max(self.lr * self.factor, self.min_lr)
            if self.lr - new_lr > self.eps:
                self.lr = new_lr
            self.cooldown_counter, self.num_bad_epochs = self.cooldown, 0
        return self.lr

    def state_dict(self) -> dict[str, Any]:
        """What changes as it steps (JSON: a checkpoint's meta holds it); ``best`` may be infinite."""
        keys = ("lr", "best", "num_bad_epochs", "cooldown_counter", "last_epoch")
        return {key: getattr(self, key) for key in keys}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continues from ``state_dict()``'s values."""
        worst = math.inf if self.mode == "min" else -math.inf
        for key, value in state.items():  # strict JSON wrote an infinite best (no epoch yet) as null
            setattr(self, key, (worst if value is None else float(value)) if key in ("lr", "best") else int(value))
