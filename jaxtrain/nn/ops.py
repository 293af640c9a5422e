"""The operations the models are built of, shared by the Linen and the NNX models: torch's semantics, and
lowerings that suit XLA:CPU.

``max_pool`` gives the gradient to the first maximum of each window, as torch does, without the scalar loop
that XLA:CPU runs for ``nn.max_pool``'s gradient; ``conv2d`` hands XLA:CPU its gradient convolutions in the
one form that its fast convolution takes everywhere, loops included; ``batch_normalize`` is training-mode
batch normalization with the closed-form gradient, and ``running_statistics`` torch's update of the running
mean and variance. ``benchmarks/cnn_step.py`` times the resulting step beside torch's.
"""

from __future__ import annotations

import functools
import itertools
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

Dtype = Any


def running_statistics(
    mean: jax.Array, var: jax.Array, batch_mean: jax.Array, batch_var: jax.Array, n: int, momentum: float
) -> tuple[jax.Array, jax.Array]:
    """torch's running statistics after a training batch of ``n`` values per feature: ``(1 - momentum)`` of the
    old value plus ``momentum`` of the batch's, with the unbiased (n / (n - 1)) batch variance.

    Raises:
      ValueError: ``n < 2``, as torch raises: the unbiased variance of a single value is undefined.
    """
    if n < 2:
        raise ValueError(f"BatchNorm in training mode got {n} value per feature; expected more than 1")
    return (1 - momentum) * mean + momentum * batch_mean, (1 - momentum) * var + momentum * batch_var * (n / (n - 1))


def normalize(x: jax.Array, mean: jax.Array, var: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float) -> jax.Array:
    """Evaluation-mode batch normalization with given (running) statistics."""
    return (x - mean) * lax.rsqrt(var + epsilon) * scale + bias


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def batch_normalize(x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float) -> tuple[jax.Array, ...]:
    """Training-mode batch normalization over all axes but the last: ``(y, batch mean, biased batch variance)``."""
    axes = tuple(range(x.ndim - 1))
    mean = x.mean(axes)
    var = jnp.square(x - mean).mean(axes)
    return (x - mean) * lax.rsqrt(var + epsilon) * scale + bias, mean, var


def batch_normalize_fwd(x, scale, bias, epsilon):
    out = batch_normalize(x, scale, bias, epsilon)
    return out, (x, scale, out[1], out[2])


def batch_normalize_bwd(epsilon, residuals, cotangents):
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


batch_normalize.defvjp(batch_normalize_fwd, batch_normalize_bwd)


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
    (Eigen) kernels rather than YNNPACK's (``jaxtrain.parallel.compiler``). Patches and a matrix product
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
