"""Optimizers with ``torch.optim``'s update rules and defaults, built as optax chains.

Each optimizer is a chain of small optax transformations, one per line of torch's ``step()``; the
docstrings name the torch line that each part matches. ``lr`` may be a float or an optax schedule.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

ScalarOrSchedule = float | optax.Schedule


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
    if momentum < 0 or dampening < 0 or weight_decay < 0:
        raise ValueError(f"sgd(momentum={momentum}, dampening={dampening}, weight_decay={weight_decay}); expected values >= 0")
    if nesterov and (momentum <= 0 or dampening != 0):
        raise ValueError(f"sgd(nesterov=True, momentum={momentum}, dampening={dampening}); Nesterov needs momentum > 0 and dampening 0")
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


def _check_adam(lr, betas, eps, weight_decay) -> None:
    if not all(0 <= b < 1 for b in betas):
        raise ValueError(f"betas={betas!r}; expected two values in [0, 1)")
    if eps < 0 or weight_decay < 0 or (not callable(lr) and lr < 0):
        raise ValueError(f"lr={lr!r}, eps={eps!r}, weight_decay={weight_decay!r}; expected values >= 0")
