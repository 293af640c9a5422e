"""Loss functions with PyTorch's reductions."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def cross_entropy(logits: jax.Array, labels: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """``nn.CrossEntropyLoss()``: softmax cross-entropy on integer labels, averaged over the batch.

    Logits are promoted to at least float32, so a bfloat16 forward pass still gets a float32 loss.

    A label outside ``0..C-1`` (``-1`` included) makes that example's loss NaN, and so the mean: a
    non-finite-loss check catches it at once. (Left alone, an index past the end reads as NaN and ``-1``
    as class C-1, which trains silently; torch raises, or with its default ``ignore_index=-100`` skips the
    example. To leave examples out here, mask them.) A masked-out example never counts, whatever its label.

    Args:
      logits: ``(N, C)`` unnormalized scores.
      labels: ``(N,)`` integer class indices in ``0..C-1``.
      mask: optional ``(N,)`` booleans; the mean runs over the kept examples only (padding, say).

    Returns:
      The scalar mean loss; NaN if a kept example's label is outside ``0..C-1``.

    Raises:
      ValueError: labels or mask of the wrong shape or type (checked when traced, at no cost per step).

    Example:
      >>> cross_entropy(jnp.array([[2.0, 0.0]]), jnp.array([0]))
      Array(0.126928, dtype=float32)
    """
    _check_shapes(logits, labels, mask)
    logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    # The NaN is a constant: no gradient flows through it, and jnp.where (not a product with the mask)
    # keeps it out of masked-out examples.
    losses = jnp.where((labels >= 0) & (labels < logits.shape[-1]), losses, jnp.nan)
    if mask is None:
        return losses.mean()
    return jnp.sum(jnp.where(mask, losses, 0)) / jnp.maximum(jnp.sum(mask), 1)


def _check_shapes(logits: jax.Array, labels: jax.Array, mask: jax.Array | None) -> None:
    """One-line errors for a batch that cannot be a classification batch, before JAX's own would surface."""
    logits_shape, labels_shape = jnp.shape(logits), jnp.shape(labels)
    if len(logits_shape) < 1 or not jnp.issubdtype(jnp.result_type(logits), jnp.floating):
        raise ValueError(f"logits (shape {logits_shape}, dtype {jnp.result_type(logits)}): expected (N, C) floats")
    described = f"labels (shape {labels_shape}, dtype {jnp.result_type(labels)})"
    if not jnp.issubdtype(jnp.result_type(labels), jnp.integer):
        raise ValueError(f"{described}: expected integer class indices")
    if labels_shape != logits_shape[:-1]:
        raise ValueError(f"{described}: expected shape {logits_shape[:-1]}, one class index per row of logits {logits_shape}")
    if mask is not None and jnp.shape(mask) != labels_shape:
        raise ValueError(f"mask (shape {jnp.shape(mask)}): expected shape {labels_shape}, one flag per label")
