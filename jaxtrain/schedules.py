"""Learning-rate schedules with the values of ``torch.optim.lr_scheduler``, counted in optimizer steps.

``schedule(name, lr, ...)`` builds ``StepLR``, ``MultiStepLR``, ``CosineAnnealingLR`` or a constant rate,
after an optional ``LinearLR`` warmup, as an optax schedule: pass it as the ``lr`` of ``optim.sgd``,
``optim.adam`` or ``optim.adamw``. Its arguments are checked as the optimizers' are, one line naming each.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import optax

from jaxtrain.optim import _check_integer, _check_number, _is_number

SCHEDULES = ("constant", "step", "multistep", "cosine")


def schedule(
    name: str,
    lr: float,
    total_steps: int | None = None,
    *,
    step_size: int | None = None,
    milestones: Sequence[int] | None = None,
    gamma: float = 0.1,
    eta_min: float = 0.0,
    warmup_steps: int = 0,
    warmup_start_factor: float = 1 / 3,
) -> optax.Schedule:
    """A learning-rate schedule with the values of a ``torch.optim.lr_scheduler`` stepped once per optimizer step.

    ``schedule(...)(t)`` is the learning rate of optimizer step ``t + 1``: the ``lr`` that torch's optimizer
    holds after ``t`` calls of ``scheduler.step()``. Every count is in optimizer steps; a torch script that
    steps its scheduler once per epoch converts epochs into steps (``jaxtrain.experiment`` does).

      - ``"constant"``: ``lr`` throughout.
      - ``"step"``: ``StepLR(step_size, gamma)``: ``lr * gamma ** (t // step_size)``.
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
      step_size: ``"step"``'s decay period in optimizer steps.
      milestones: ``"multistep"``'s decay steps, counted from the end of the warmup.
      gamma: the decay factor of ``"step"`` and ``"multistep"``.
      eta_min: ``"cosine"``'s final learning rate.
      warmup_steps: optimizer steps of linear warmup (0: none).
      warmup_start_factor: the warmup's first learning rate, as a fraction of ``lr``.

    Returns:
      An optax schedule: step count → learning rate. Pass it as the ``lr`` of ``sgd``, ``adam`` or ``adamw``.

    Example:
      >>> lr = schedule("cosine", 1e-3, total_steps=1000, warmup_steps=100)
      >>> tx = adam(lr)
    """
    if name not in SCHEDULES:
        raise ValueError(f"schedule={name!r}; expected one of {', '.join(SCHEDULES)}")
    _check_number("lr", lr, positive=True)
    _check_integer("warmup_steps", warmup_steps, 0)
    if not (_is_number(warmup_start_factor) and 0 < float(warmup_start_factor) <= 1):
        raise ValueError(f"warmup_start_factor={warmup_start_factor!r}; expected a number in (0, 1] as torch's LinearLR")
    if name in ("step", "multistep"):
        _check_number("gamma", gamma, positive=True)
    if name == "constant":
        main = optax.constant_schedule(lr)
    elif name == "step":
        _check_integer("step_size", step_size, 1, " (optimizer steps)")
        main = optax.exponential_decay(lr, transition_steps=step_size, decay_rate=gamma, staircase=True)
    elif name == "multistep":
        if milestones is None or isinstance(milestones, str | bytes) or not isinstance(milestones, Sequence):
            raise ValueError(f"milestones={milestones!r}; expected a sequence of optimizer steps >= 0")
        for i, milestone in enumerate(milestones):
            _check_integer(f"milestones[{i}]", milestone, 0, " (an optimizer step)")
        main = _multistep(lr, jnp.asarray(sorted(milestones), jnp.int32), gamma)
    else:
        _check_integer("total_steps", total_steps, 1, " (cosine annealing needs the run's optimizer steps)")
        if total_steps <= warmup_steps:
            raise ValueError(
                f"warmup_steps={warmup_steps!r}; expected fewer than total_steps={total_steps} "
                f"(cosine annealing needs optimizer steps after the warmup)"
            )
        if not (_is_number(eta_min) and 0 <= float(eta_min) <= lr):
            raise ValueError(f"eta_min={eta_min!r}; expected a number in [0, lr={lr}]")
        main = optax.cosine_decay_schedule(lr, decay_steps=total_steps - warmup_steps, alpha=eta_min / lr)
    if not warmup_steps:
        return main
    warmup = optax.linear_schedule(warmup_start_factor * lr, lr, transition_steps=warmup_steps)
    return optax.join_schedules([warmup, main], boundaries=[warmup_steps])


def _multistep(lr: float, milestones: jax.Array, gamma: float) -> optax.Schedule:
    """``MultiStepLR``: one factor of ``gamma`` per milestone reached; a repeated milestone counts twice, as in torch."""

    def lr_at(count):
        return lr * gamma ** jnp.sum(count >= milestones)

    return lr_at
