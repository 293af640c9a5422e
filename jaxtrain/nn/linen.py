"""Networks as Flax modules: the primer's MLP, a small CNN, and BatchNorm with torch's semantics, in Flax's
Linen API (``MLP``, ``CNN``, ``BatchNorm``; their NNX twins are in ``jaxtrain.nn.nnx``).

PyTorch switches a module's behaviour with ``model.train()`` / ``model.eval()``, flags hidden in the
module. Here the mode is an argument of every call, ``model.apply(variables, x, train=True)``, and the
state that training changes (BatchNorm's running statistics) is a collection that comes back out.

The layers compute with ``jaxtrain.nn.ops``, written for XLA:CPU's speed as well as torch's semantics
(``max_pool``, ``conv2d``, BatchNorm's closed-form gradient), which the NNX models use too; the CNN's head
draws its dropout masks at once.

An NNX module (``jaxtrain.nn.nnx``) keeps torch's flags and its arrays; the training step splits it into the same pure
function (``jaxtrain.nn.adapter``).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtrain.nn.ops import Dtype, batch_normalize, conv2d, max_pool, normalize, running_statistics


class BatchNorm(nn.Module):
    """Batch normalization with ``torch.nn.BatchNorm{1,2}d``'s defaults and running-statistics update.

    Training normalizes with the batch's biased variance and moves the running statistics by
    ``momentum`` of the batch value: ``running = (1 - momentum) * running + momentum * batch``, with the
    unbiased (n / (n - 1)) batch variance, as torch does. Evaluation normalizes with the running statistics.

    Note the momentum convention: ``flax.linen.BatchNorm(momentum=m)`` keeps ``m`` of the old value, so
    torch's ``momentum=0.1`` is Flax's ``momentum=0.9``; and Flax's running variance is the biased one.

    Attributes:
      momentum: the weight of the batch statistics in the running ones (torch's convention).
      epsilon: added to the variance before the square root.
      dtype: the computation dtype; statistics are always computed in at least float32.
    """

    momentum: float = 0.1
    epsilon: float = 1e-5
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        features = x.shape[-1]
        stats_dtype = jnp.promote_types(x.dtype, jnp.float32)
        scale = self.param("scale", nn.initializers.ones, (features,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (features,), jnp.float32)
        running_mean = self.variable("batch_stats", "mean", jnp.zeros, (features,), jnp.float32)
        running_var = self.variable("batch_stats", "var", jnp.ones, (features,), jnp.float32)
        xs = x.astype(stats_dtype)
        if not train:
            y = normalize(xs, running_mean.value, running_var.value, scale, bias, self.epsilon)
            return y.astype(self.dtype or x.dtype)
        y, mean, var = batch_normalize(xs, scale, bias, self.epsilon)
        if not self.is_initializing():
            running_mean.value, running_var.value = running_statistics(
                running_mean.value, running_var.value, mean, var, x.size // features, self.momentum
            )
        return y.astype(self.dtype or x.dtype)





class Conv(nn.Module):
    """``flax.linen.Conv(features, (k, k), padding=p)`` with stride 1, computed by ``conv2d``.

    The parameters are ``nn.Conv``'s, with its initializers: ``kernel`` (k, k, C_in, features) and
    ``bias`` (features,), so that ``jaxtrain.interop`` maps torch's i-th ``Conv2d`` onto ``Conv_i``.

    Attributes:
      features: the output channels.
      kernel_size: the side of the square kernel.
      padding: zeros added on each side of both spatial axes.
      use_bias: add a learned bias.
      dtype: the computation dtype; parameters stay float32.
    """

    features: int
    kernel_size: int = 3
    padding: int = 1
    use_bias: bool = True
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        shape = (self.kernel_size, self.kernel_size, x.shape[-1], self.features)
        kernel = self.param("kernel", nn.initializers.lecun_normal(), shape, jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32) if self.use_bias else None
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        y = conv2d(x, kernel, self.padding)
        return y if bias is None else y + bias


class MLP(nn.Module):
    """The primer's ``MyModel``: flatten → Dense 256 → ReLU → Dense 10, with optional BatchNorm and Dropout.

    Attributes:
      hidden: the widths of the hidden layers; ``(256,)`` is the primer's.
      num_classes: the number of output logits.
      dropout: the dropout rate after each hidden ReLU (0 disables it).
      batch_norm: add a BatchNorm (torch semantics) before each hidden ReLU.
      dtype: the computation dtype (e.g. ``jnp.bfloat16``); parameters stay float32.

    Example:
      >>> model = MLP()
      >>> variables = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
      >>> logits = model.apply(variables, images, train=False)   # (N, 10)
    """

    hidden: Sequence[int] = (256,)
    num_classes: int = 10
    dropout: float = 0.0
    batch_norm: bool = False
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = x.reshape(x.shape[0], -1)  # x.view(-1, 784)
        for width in self.hidden:
            x = nn.Dense(width, dtype=self.dtype)(x)
            if self.batch_norm:
                x = BatchNorm(dtype=self.dtype)(x, train)
            x = nn.relu(x)
            if self.dropout:
                x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return nn.Dense(self.num_classes, dtype=self.dtype)(x)


class CNN(nn.Module):
    """A small CNN for 28×28×1 images: [Conv 3×3 → BatchNorm → ReLU → MaxPool 2×2] per block, then a Dense
    head: Dropout → [Dense → ReLU → Dropout] per hidden layer → Dense.

    Attributes:
      channels: the output channels of each block.
      hidden: the widths of the head's hidden layers (``()``: a single Dense layer).
      num_classes: the number of output logits.
      dropout: the dropout rate before each Dense layer of the head (0 disables it).
      batch_norm: use BatchNorm (torch semantics) after each convolution.
      dtype: the computation dtype; parameters stay float32.

    Example:
      >>> model = CNN()
      >>> variables = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    """

    channels: Sequence[int] = (32, 64, 128)
    hidden: Sequence[int] = (128,)
    num_classes: int = 10
    dropout: float = 0.25
    batch_norm: bool = True
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        for width in self.channels:
            x = Conv(width, 3, padding=1, use_bias=not self.batch_norm, dtype=self.dtype)(x)
            if self.batch_norm:
                x = BatchNorm(dtype=self.dtype)(x, train)
            x = max_pool(nn.relu(x), 2)
        x = x.reshape(x.shape[0], -1)
        widths = [x.shape[-1], *self.hidden]  # the inputs of the head's Dense layers
        masks = self._dropout_masks(len(x), widths) if train and self.dropout else [None] * len(widths)
        for width, keep in zip(self.hidden, masks):
            x = nn.relu(nn.Dense(width, dtype=self.dtype)(_dropout(x, keep, self.dropout)))
        return nn.Dense(self.num_classes, dtype=self.dtype)(_dropout(x, masks[-1], self.dropout))

    def _dropout_masks(self, batch: int, widths: Sequence[int]) -> list[jax.Array]:
        """The head's dropout keep-masks, from one draw: XLA compiles each draw's random-bit generator on
        its own, and one draw instead of two took 0.2 s (6%) off the CNN's compilation on XLA:CPU."""
        keep = jax.random.bernoulli(self.make_rng("dropout"), 1 - self.dropout, (batch, sum(widths)))
        return jnp.split(keep, list(itertools.accumulate(widths))[:-1], axis=1)


def _dropout(x: jax.Array, keep: jax.Array | None, rate: float) -> jax.Array:
    """torch's dropout with a given keep-mask: kept units scaled by 1 / (1 - rate); ``keep=None`` is the identity."""
    return x if keep is None else jnp.where(keep, x / (1 - rate), 0)
