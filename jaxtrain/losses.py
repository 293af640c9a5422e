"""Loss functions with PyTorch's reductions."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def cross_entropy(logits: jax.Array, labels: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """``nn.CrossEntropyLoss()``: softmax cross-entropy on integer labels, averaged over the batch.

    Logits are promoted to at least float32, so a bfloat16 forward pass still gets a float32 loss.

    Args:
      logits: ``(N, C)`` unnormalized scores.
      labels: ``(N,)`` integer class indices.
      mask: optional ``(N,)`` booleans; the mean runs over the kept examples only (padding, say).

    Returns:
      The scalar mean loss.

    Example:
      >>> cross_entropy(jnp.array([[2.0, 0.0]]), jnp.array([0]))
      Array(0.126928, dtype=float32)
    """
    logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    if mask is None:
        return losses.mean()
    return jnp.sum(losses * mask) / jnp.maximum(jnp.sum(mask), 1)
