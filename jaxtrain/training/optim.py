"""Optimizers with ``torch.optim``'s update rules and defaults, built as optax chains.

Each optimizer is a chain of small optax transformations, one per line of torch's ``step()``; the
docstrings name the torch line that each part matches. ``lr`` may be a float or an optax schedule.

The other controls of a torch training script live here too: ``clip_grad_norm`` wraps an optimizer with
``torch.nn.utils.clip_grad_norm_``, and ``accumulate_gradients`` makes it update once every ``k`` batches,
as skipping ``optimizer.zero_grad()`` does in torch. The learning-rate schedules of
``torch.optim.lr_scheduler`` are in ``jaxtrain.training.schedules``.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxtrain.training.arguments import check_integer, check_number, is_number

ScalarOrSchedule = float | optax.Schedule


def _check_lr(lr: Any) -> None:
    """A learning rate: a finite number >= 0 (torch: "Invalid learning rate") or an optax schedule."""
    if not callable(lr) and not isinstance(lr, jax.core.Tracer):
        if not is_number(lr) or not (math.isfinite(float(lr)) and float(lr) >= 0):
            raise ValueError(f"lr={lr!r}; expected a finite number >= 0 or an optax schedule")


def _check_tx(tx: Any) -> None:
    if not isinstance(tx, optax.GradientTransformation):
        raise ValueError(f"tx={tx!r}; expected an optax.GradientTransformation, e.g. adam(1e-3)")


class _MomentumState(NamedTuple):
    buf: Any  # torch's momentum_buffer
    count: jax.Array


def _torch_momentum(momentum: float, dampening: float, nesterov: bool) -> optax.GradientTransformation:
    """torch.optim.SGD's momentum buffer, which starts as the first gradient (optax's trace starts at 0)."""

    def init(params):
        return _MomentumState(jax.tree.map(jnp.zeros_like, params), jnp.zeros([], jnp.int32))

    def update(grads, state, params=None):
        del params
        first = state.count == 0
        # buf = torch.clone(grad) on the first step, then buf.mul_(momentum).add_(grad, alpha=1 - dampening)
        buf = jax.tree.map(
            lambda b, g: jnp.where(first, g, momentum * b + (1 - dampening) * g), state.buf, grads
        )
        # grad = grad.add(buf, alpha=momentum) if nesterov else buf
        out = jax.tree.map(lambda b, g: g + momentum * b, buf, grads) if nesterov else buf
        return out, _MomentumState(buf, optax.safe_int32_increment(state.count))

    return optax.GradientTransformation(init, update)


def _bias_correction(decay: float, count: jax.Array, dtype: Any) -> jax.Array:
    """``1 - decay ** count``, accurate in float32 too.

    torch computes ``bias_correction2 = 1 - beta2 ** step`` in Python floats (double precision). In float32,
    ``1 - 0.999 ** 1`` loses 1.3e-5 of its value to the rounding of ``0.999 ** 1``;
    ``-expm1(count * log1p(-(1 - decay)))`` is the same number without the cancellation.
    """
    dtype = jnp.promote_types(dtype, jnp.float32)
    return -jnp.expm1(count.astype(dtype) * jnp.log1p(jnp.asarray(-(1 - decay), dtype)))


def _scale_by_adam(b1: float, b2: float, eps: float) -> optax.GradientTransformation:
    """torch.optim.Adam's direction, ``m̂ / (√v̂ + eps)``, with its bias corrections as accurate as torch's.

    The same rule as ``optax.scale_by_adam`` (and its state), but for ``_bias_correction``: optax's
    float32 ``1 - b2 ** count`` would scale the first updates by about 1 + 6e-6.
    """

    def init(params):
        # Two separate trees of zeros: a donated state may not hold one buffer twice.
        mu, nu = jax.tree.map(jnp.zeros_like, params), jax.tree.map(jnp.zeros_like, params)
        return optax.ScaleByAdamState(count=jnp.zeros([], jnp.int32), mu=mu, nu=nu)

    def update(grads, state, params=None):
        del params
        mu = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, grads)  # exp_avg.lerp_(grad, 1 - beta1)
        nu = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, state.nu, grads)  # exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        count = optax.safe_int32_increment(state.count)

        def direction(m, v):
            # step_size = lr / bias_correction1; denom = exp_avg_sq.sqrt() / bias_correction2.sqrt() + eps
            bc1, bc2 = _bias_correction(b1, count, m.dtype), _bias_correction(b2, count, m.dtype)
            return ((m / bc1) / (jnp.sqrt(v) / jnp.sqrt(bc2) + eps)).astype(m.dtype)

        return jax.tree.map(direction, mu, nu), optax.ScaleByAdamState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformation(init, update)


def sgd(
    lr: ScalarOrSchedule,
    momentum: float = 0.0,
    dampening: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
) -> optax.GradientTransformation:
    """``torch.optim.SGD``: the same update rule and defaults.

    The chain, part by part:
      - ``add_decayed_weights(weight_decay)``: ``grad = grad.add(param, alpha=weight_decay)``;
      - momentum: ``buf = grad`` on the first step, then ``buf = momentum * buf + (1 - dampening) * grad``;
        with ``nesterov``, ``grad = grad + momentum * buf``, else ``grad = buf``;
      - ``scale_by_learning_rate(lr)``: ``param.add_(grad, alpha=-lr)``.

    Example:
      >>> tx = sgd(0.1, momentum=0.9, nesterov=True)
    """
    _check_lr(lr)
    check_number("momentum", momentum)  # torch: "Invalid momentum value"
    check_number("dampening", dampening)
    check_number("weight_decay", weight_decay)  # torch: "Invalid weight_decay value"
    if not isinstance(nesterov, bool):
        raise ValueError(f"nesterov={nesterov!r}; expected True or False")
    # torch: "Nesterov momentum requires a momentum and zero dampening"
    if nesterov and momentum == 0:
        raise ValueError(f"momentum={momentum!r}; expected a number > 0 with nesterov=True (Nesterov needs momentum > 0)")
    if nesterov and dampening != 0:
        raise ValueError(f"dampening={dampening!r}; expected 0 with nesterov=True (Nesterov needs dampening 0)")
    return optax.chain(
        optax.add_decayed_weights(weight_decay) if weight_decay else optax.identity(),
        _torch_momentum(momentum, dampening, nesterov) if momentum else optax.identity(),
        optax.scale_by_learning_rate(lr),
    )


def adam(
    lr: ScalarOrSchedule = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
) -> optax.GradientTransformation:
    """``torch.optim.Adam``: the same update rule and defaults, weight decay as an L2 term on the gradient.

    The chain, part by part:
      - ``add_decayed_weights(weight_decay)``: ``grad = grad.add(param, alpha=weight_decay)``;
      - ``_scale_by_adam(b1, b2, eps)``: ``exp_avg.lerp_(grad, 1 - beta1)``,
        ``exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)``, and the bias-corrected
        ``exp_avg / bias_correction1 / (exp_avg_sq.sqrt() / bias_correction2_sqrt + eps)``, with the
        bias corrections as accurate as torch's double-precision ones in float32 too;
      - ``scale_by_learning_rate(lr)``: ``param.addcdiv_(exp_avg, denom, value=-step_size)``.

    Example:
      >>> tx = adam(1e-3)
    """
    _check_adam(lr, betas, eps, weight_decay)
    return optax.chain(
        optax.add_decayed_weights(weight_decay) if weight_decay else optax.identity(),
        _scale_by_adam(betas[0], betas[1], eps),
        optax.scale_by_learning_rate(lr),
    )


def adamw(
    lr: ScalarOrSchedule = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 1e-2,
) -> optax.GradientTransformation:
    """``torch.optim.AdamW``: Adam with decoupled weight decay, and torch's default ``weight_decay=1e-2``.

    (``optax.adamw`` defaults to 1e-4.) The chain, part by part:
      - ``_scale_by_adam(b1, b2, eps)``: the Adam direction, as in ``adam``;
      - ``add_decayed_weights(weight_decay)`` then ``scale_by_learning_rate(lr)``: together
        ``param.mul_(1 - lr * weight_decay)`` and ``param.addcdiv_(exp_avg, denom, value=-step_size)``.

    Example:
      >>> tx = adamw(1e-3, weight_decay=0.05)
    """
    _check_adam(lr, betas, eps, weight_decay)
    return optax.chain(
        _scale_by_adam(betas[0], betas[1], eps),
        optax.add_decayed_weights(weight_decay),
        optax.scale_by_learning_rate(lr),
    )


def _check_adam(lr: Any, betas: Any, eps: Any, weight_decay: Any) -> None:
    """torch.optim.Adam's checks, one argument per message: lr, betas (each in [0, 1)), eps, weight_decay."""
    _check_lr(lr)  # torch: "Invalid learning rate"
    try:
        pair = () if isinstance(betas, str | bytes) else tuple(betas)
    except TypeError:
        pair = ()
    if len(pair) != 2:
        raise ValueError(f"betas={betas!r}; expected a pair (beta1, beta2) of numbers in [0, 1)")
    for i, beta in enumerate(pair):
        check_number(f"betas[{i}]", beta, below_one=True)  # torch: "Invalid beta parameter at index i"
    check_number("eps", eps)  # torch: "Invalid epsilon value"
    check_number("weight_decay", weight_decay)  # torch: "Invalid weight_decay value"


# The optimizers by name: each takes torch.optim's keyword arguments.
OPTIMIZERS = {"sgd": sgd, "adam": adam, "adamw": adamw}


# Clipping and accumulation: the rest of a torch training script's controls.


def clip_grad_norm(tx: optax.GradientTransformation, max_norm: float) -> optax.GradientTransformation:
    """``tx`` after ``torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)``.

    The gradients, all leaves together, are multiplied by ``min(1, max_norm / (norm + 1e-6))``, torch's
    rule, before ``tx`` sees them: clipping happens before weight decay and momentum, as in a torch script
    that clips between ``loss.backward()`` and ``optimizer.step()``. (optax's ``clip_by_global_norm``
    divides by ``norm`` alone, a relative difference of 1e-6 / norm.)

    Args:
      tx: the optimizer.
      max_norm: the largest global norm let through.

    Returns:
      The clipping chained before ``tx``.

    Example:
      >>> tx = clip_grad_norm(sgd(0.1), max_norm=1.0)
    """
    _check_tx(tx)
    check_number("max_norm", max_norm, positive=True)

    def clip(updates, state, params=None):
        scale = jnp.minimum(1.0, max_norm / (optax.tree.norm(updates) + 1e-6))
        return jax.tree.map(lambda g: (g * scale).astype(g.dtype), updates), state

    return optax.chain(optax.GradientTransformation(lambda params: optax.EmptyState(), clip), tx)


def accumulate_gradients(tx: optax.GradientTransformation, every_k: int) -> optax.GradientTransformation:
    """``tx`` applied once every ``every_k`` steps, to the mean of the gradients seen since its last update.

    PyTorch accumulates by not calling ``optimizer.zero_grad()``: ``loss.backward()`` adds into ``.grad``
    for ``k`` batches (each loss divided by ``k``), then one ``optimizer.step()`` and ``zero_grad()``. Here
    ``optax.MultiSteps`` keeps the running mean in the optimizer state; the steps in between return zero
    updates, so the parameters stay put. ``k`` batches of size ``b`` give the step of one batch of size
    ``k * b`` (when the model has no BatchNorm, whose statistics see each batch alone). A schedule inside
    ``tx`` counts real updates, not batches.

    Args:
      tx: the optimizer (with clipping, if any: it then clips the accumulated gradient, as torch does).
      every_k: batches per update; 1 returns ``tx`` itself.

    Returns:
      The accumulating optimizer.

    Example:
      >>> tx = accumulate_gradients(adam(1e-3), every_k=4)   # batch 32 × 4 acts as batch 128
    """
    _check_tx(tx)
    check_integer("every_k", every_k, 1)
    if every_k == 1:
        return tx
    # The running mean in the parameters' dtype: optax's default accumulator is float32, which would round
    # a float64 run's gradients to float32.
    steps = lambda tree: optax.MultiSteps(  # noqa: E731
        tx, every_k_schedule=every_k, accumulator_dtype=jnp.result_type(*jax.tree.leaves(tree))
    )
    return optax.GradientTransformationExtraArgs(
        lambda params: steps(params).init(params),
        lambda updates, state, params=None, **extra: steps(updates).update(updates, state, params, **extra),
    )


# A learning rate that the host may change between calls: held in the optimizer's state as an array
# (optax.inject_hyperparams), so a new value is new data for the same compiled step, not a recompilation.


def adjustable_lr(factory: Any, lr: ScalarOrSchedule, **kwargs: Any) -> optax.GradientTransformation:
    """``factory(lr, **kwargs)`` with its learning rate in the optimizer state, where ``set_learning_rate``
    (and ``jaxtrain.training.callbacks``) can change it between calls without recompiling.

    Only the learning rate is injected (``optax.inject_hyperparams`` with every other argument static), so
    the update computes what ``factory(lr, **kwargs)`` computes, bit for bit; the rate is held in the
    parameters' dtype (float64 in a float64 run).

    Args:
      factory: ``sgd``, ``adam``, ``adamw`` or an optax optimizer such as ``optax.adam``; its first argument
        is the learning rate (``lr`` or ``learning_rate``).
      lr: the initial learning rate (a schedule is allowed, but then it sets the rate at every step).
      kwargs: the optimizer's other arguments.

    Returns:
      The optimizer, its state an ``optax.InjectHyperparamsState``.

    Example:
      >>> tx = adjustable_lr(adam, 1e-3)
      >>> learning_rate(tx.init({"w": jnp.zeros(3)}))
      0.0010000000474974513
    """
    names = list(inspect.signature(factory).parameters)
    if not names:
        raise ValueError(f"factory={factory!r}; expected an optimizer whose first argument is the learning rate")
    rate = names[0]
    _check_lr(lr)
    return optax.inject_hyperparams(factory, static_args=[name for name in names if name != rate])(lr, **kwargs)


def _injected(node: Any) -> bool:
    return isinstance(node, optax.InjectStatefulHyperparamsState)


def _rate_name(node: Any) -> str | None:
    return next((name for name in ("lr", "learning_rate") if name in node.hyperparams), None)


def learning_rate(opt_state: Any) -> float | None:
    """The learning rate held in an optimizer state (``adjustable_lr``, or any ``optax.inject_hyperparams``
    optimizer with an ``lr`` or ``learning_rate``), or None where the state holds none.

    A host read of one scalar (a sync); the first such rate found.

    Example:
      >>> learning_rate(state.opt_state)
      0.0010000000474974513
    """
    for node in jax.tree.leaves(opt_state, is_leaf=_injected):
        if _injected(node) and (name := _rate_name(node)):
            return float(jax.device_get(node.hyperparams[name]))
    return None


def set_learning_rate(opt_state: Any, lr: float) -> Any:
    """``opt_state`` with its learning rate set to ``lr`` (every rate that ``learning_rate`` would find), each
    kept in its dtype and placement, so the compiled step takes it without recompiling.

    Raises:
      ValueError: ``lr`` is not a finite number >= 0, the state holds no learning rate (build the optimizer
        with ``adjustable_lr``), or its rate follows a schedule, which would overwrite the new value.

    Example:
      >>> state = state.replace(opt_state=set_learning_rate(state.opt_state, 1e-4))
    """
    if callable(lr):
        raise ValueError(f"lr={lr!r}; expected a finite number >= 0 (a schedule is fixed when the optimizer is built)")
    _check_lr(lr)
    found = []

    def replace(node: Any) -> Any:
        if not _injected(node) or not (name := _rate_name(node)):
            return node
        if name in node.hyperparams_states:
            raise ValueError(f"lr={lr!r}: the optimizer's learning rate follows a schedule; expected a constant one "
                             f"to set (adjustable_lr(adam, 1e-3))")
        old = node.hyperparams[name]
        found.append(name)
        new = jax.device_put(np.asarray(lr, old.dtype), old.sharding) if isinstance(old, jax.Array) else np.asarray(lr, np.result_type(old))
        return node._replace(hyperparams={**node.hyperparams, name: new})

    opt_state = jax.tree.map(replace, opt_state, is_leaf=_injected)
    if not found:
        raise ValueError(f"lr={lr!r}: the optimizer state holds no learning rate to set; expected an optimizer built "
                         f"with jaxtrain.adjustable_lr (e.g. adjustable_lr(adam, 1e-3)) or optax.inject_hyperparams")
    return opt_state
