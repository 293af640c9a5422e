"""Networks as Flax modules: the primer's MLP, a small CNN, and BatchNorm with torch's semantics, in Flax's
Linen API (``MLP``, ``CNN``, ``BatchNorm``; their NNX twins are in ``jaxtrain.nnx_models``).

PyTorch switches a module's behaviour with ``model.train()`` / ``model.eval()``, flags hidden in the
module. Here the mode is an argument of every call, ``model.apply(variables, x, train=True)``, and the
state that training changes (BatchNorm's running statistics) is a collection that comes back out.

The CNN's layers are written for XLA:CPU's speed as well as torch's semantics: ``max_pool`` gives the
gradient to the first maximum of each window, as torch does, without the scalar loop that XLA:CPU runs
for ``nn.max_pool``'s gradient; ``conv2d`` hands XLA:CPU its gradient convolutions in the one form that
its fast convolution takes everywhere, loops included; BatchNorm's gradient is the closed form; the
head's dropout masks come from one draw. ``benchmarks/cnn_step.py`` times the resulting step beside
torch's.

An NNX module (``jaxtrain.nnx_models``) keeps torch's flags and its arrays; the training step splits it into the same pure
function (``jaxtrain.modules``).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

Dtype = Any


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
            y = (xs - running_mean.value) * lax.rsqrt(running_var.value + self.epsilon) * scale + bias
            return y.astype(self.dtype or x.dtype)
        y, mean, var = _batch_normalize(xs, scale, bias, self.epsilon)
        if not self.is_initializing():
            n = x.size // features
            if n < 2:  # torch raises too: the unbiased variance of a single value is undefined
                raise ValueError(f"BatchNorm in training mode got {n} value per feature; expected more than 1")
            m = self.momentum
            running_mean.value = (1 - m) * running_mean.value + m * mean
            running_var.value = (1 - m) * running_var.value + m * var * (n / (n - 1))
        return y.astype(self.dtype or x.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _batch_normalize(x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float) -> tuple[jax.Array, ...]:
    """Training-mode batch normalization over all axes but the last: ``(y, batch mean, biased batch variance)``."""
    axes = tuple(range(x.ndim - 1))
    mean = x.mean(axes)
    var = jnp.square(x - mean).mean(axes)
    return (x - mean) * lax.rsqrt(var + epsilon) * scale + bias, mean, var


def _batch_normalize_fwd(x, scale, bias, epsilon):
    out = _batch_normalize(x, scale, bias, epsilon)
    return out, (x, scale, out[1], out[2])


def _batch_normalize_bwd(epsilon, residuals, cotangents):
    # The closed form, which torch's native_batch_norm_backward computes too. Autodiff of the forward
    # above gives the same values with more passes over the activations and more kernels to compile:
    # the CNN's step took 8 to 16% longer with it on XLA:CPU (29.0 against 26.9 ms, batch 32).
    x, scale, mean, var = residuals
    dy, dmean, dvar = cotangents
    axes = tuple(range(x.ndim - 1))
    n = x.size // x.shape[-1]
    inv_std = lax.rsqrt(var + epsilon)
    centered = x - mean
    dbias = dy.sum(axes)
    dscale = (dy * centered).sum(axes) * inv_std
    dx = scale * inv_std * (dy - (dbias + centered * inv_std * dscale) / n)
    # The statistics are outputs too (they feed the running averages); their cotangents are usually zero.
    dx = dx + (dmean + 2 * dvar * centered) / n
    return dx, dscale, dbias


_batch_normalize.defvjp(_batch_normalize_fwd, _batch_normalize_bwd)


def max_pool(x: jax.Array, window: int = 2) -> jax.Array:
    """``torch.nn.functional.max_pool2d(x, window)`` over NHWC images: the forward and torch's gradient.

    Non-overlapping ``window × window`` windows (stride = window, no padding). As torch's default
    (``ceil_mode=False``), rows and columns that do not fill a window are dropped: 7 × 7 pools to 3 × 3.
    Within a window torch scans row by row and a later element replaces the maximum only if it is
    greater (or NaN), so the gradient goes to the first maximum; here too, exactly, ties included.
    ``flax.linen.max_pool`` computes the same forward, but its gradient is ``select_and_scatter``, which
    XLA:CPU runs as a scalar loop: the CNN's step took 55.9 ms with it and 29.2 ms with this one
    (batch 32, 2 cores).

    Args:
      x: ``(N, H, W, C)`` images, H and W at least ``window``.
      window: the side of the square window, which is also the stride.

    Returns:
      ``(N, H // window, W // window, C)``, of ``x``'s dtype.

    Example:
      >>> max_pool(jnp.arange(16.0).reshape(1, 4, 4, 1))[..., 0]
      Array([[[ 5.,  7.],
              [13., 15.]]], dtype=float32)
    """
    if x.ndim != 4:
        raise ValueError(f"x.shape={x.shape}; expected (N, H, W, C) images")
    if not isinstance(window, int) or not 1 <= window <= min(x.shape[1:3]):
        raise ValueError(f"window={window!r}; expected an integer from 1 to the image side {min(x.shape[1:3])}")
    h, w = x.shape[1] // window * window, x.shape[2] // window * window
    return _max_pool(x[:, :h, :w], window)  # the slice's gradient pads the dropped rows with zeros


def _windows(x: jax.Array, window: int) -> tuple[jax.Array, jax.Array]:
    """Each window's maximum and the position of its first maximum, found as torch finds them."""
    n, h, w, c = x.shape
    cells = x.reshape(n, h // window, window, w // window, window, c)
    positions = list(itertools.product(range(window), repeat=2))  # row-major: torch's order within a window
    best = cells[:, :, 0, :, 0]
    first = jnp.zeros(best.shape, jnp.int8 if len(positions) <= 128 else jnp.int32)  # int8: a quarter of the memory
    for k, (i, j) in enumerate(positions[1:], start=1):
        value = cells[:, :, i, :, j]
        later = (value > best) | jnp.isnan(value)  # torch: `if ((val > maxval) || std::isnan(val))`
        best, first = jnp.where(later, value, best), jnp.where(later, k, first)
    return best, first


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _max_pool(x: jax.Array, window: int) -> jax.Array:
    return _windows(x, window)[0]


def _max_pool_fwd(x, window):
    return _windows(x, window)


def _max_pool_bwd(window, first, dy):
    n, h, w, c = dy.shape
    # dy at each window's first maximum and zeros elsewhere, laid out as (N, H, window, W, window, C).
    rows = [jnp.stack([jnp.where(first == i * window + j, dy, 0) for j in range(window)], 3) for i in range(window)]
    return (jnp.stack(rows, 2).reshape(n, h * window, w * window, c),)


_max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


_CONV_DIMENSIONS = ("NHWC", "HWIO", "NHWC")


def conv2d(x: jax.Array, kernel: jax.Array, padding: int = 1) -> jax.Array:
    """A stride-1 2-D convolution (a cross-correlation, as torch's ``Conv2d``) of NHWC images with an HWIO kernel.

    The values are ``lax.conv_general_dilated``'s; how the gradient is lowered depends on the backend.
    On XLA:CPU, the gradients with respect to the input and the kernel are written out as convolutions
    in NHWC/HWIO/NHWC form, the one form that XLA:CPU hands to its fast convolution library wherever it
    appears. Autodiff's gradient convolutions come in other forms, which XLA:CPU's canonicalization
    pass rewrites only in a program's top level: inside a loop they run as naive loop nests, and the
    CNN's step took 390 instead of 23 ms inside ``lax.scan`` (jax#12868 is the same cause). Which
    library runs the convolutions is the compiler's choice: jaxtrain's steps give them to XLA:CPU's own
    (Eigen) kernels rather than YNNPACK's (``jaxtrain.compiler``). Patches and a matrix product
    (im2col) measured slower than Eigen's convolutions, layer by layer. Other backends get XLA's own
    convolution and its autodiff gradient.

    Args:
      x: ``(N, H, W, C_in)`` images.
      kernel: ``(kh, kw, C_in, C_out)``, as ``flax.linen.Conv``'s kernel.
      padding: zeros added on each side of both spatial axes, from 0 to the kernel's side minus one.

    Returns:
      ``(N, H + 2 * padding - kh + 1, W + 2 * padding - kw + 1, C_out)``.

    Example:
      >>> conv2d(jnp.ones((1, 28, 28, 1)), jnp.ones((3, 3, 1, 32))).shape
      (1, 28, 28, 32)
    """
    if not isinstance(padding, int) or not 0 <= padding < min(kernel.shape[:2]):
        raise ValueError(f"padding={padding!r}; expected an integer from 0 to {min(kernel.shape[:2]) - 1}")
    if jax.default_backend() == "cpu":
        return _conv2d_cpu(x, kernel, padding)
    return _conv(x, kernel, padding)


def _conv(x: jax.Array, kernel: jax.Array, padding: tuple[int, int] | int) -> jax.Array:
    pads = (padding, padding) if isinstance(padding, int) else padding
    return lax.conv_general_dilated(x, kernel, (1, 1), [(pads[0],) * 2, (pads[1],) * 2], dimension_numbers=_CONV_DIMENSIONS)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv2d_cpu(x: jax.Array, kernel: jax.Array, padding: int) -> jax.Array:
    return _conv(x, kernel, padding)


def _conv2d_cpu_fwd(x, kernel, padding):
    return _conv(x, kernel, padding), (x, kernel)


def _conv2d_cpu_bwd(padding, residuals, dy):
    x, kernel = residuals
    kh, kw = kernel.shape[:2]
    # ∂x: dy correlated with the kernel flipped in space, its in and out channels swapped.
    dx = _conv(dy, jnp.flip(kernel, (0, 1)).swapaxes(2, 3), (kh - 1 - padding, kw - 1 - padding))
    # ∂kernel: x correlated with dy, the batch as the channel summed over: x as (C_in, H, W, N) images, dy
    # as an (Ho, Wo, N, C_out) kernel, which gives (C_in, kh, kw, C_out).
    dkernel = _conv(x.transpose(3, 1, 2, 0), dy.transpose(1, 2, 0, 3), padding).transpose(1, 2, 0, 3)
    return dx, dkernel


_conv2d_cpu.defvjp(_conv2d_cpu_fwd, _conv2d_cpu_bwd)


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
