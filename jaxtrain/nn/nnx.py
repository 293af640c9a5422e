"""The primer's MLP, the CNN and torch-semantics BatchNorm in Flax NNX, whose modules hold their arrays,
like torch's: a deliberate mirror of ``jaxtrain.nn.linen``, to read the two APIs side by side.

The mirror computes what the Linen models compute: the same operations (``jaxtrain.nn.ops``: ``conv2d``,
``max_pool``, BatchNorm's ``batch_normalize`` and ``running_statistics``), and on the same weights the same
outputs and running statistics (tests/nn/test_nnx.py). Each layer is an attribute named as Linen names a
compact module's layers (``Dense_0``, ``Conv_0``, ``BatchNorm_0``, in call order), so the parameters are laid
out exactly as ``linen.MLP``'s and ``linen.CNN``'s: ``interop.from_torch`` / ``to_torch``, checkpoints and
parity see one layout for both APIs. Only dropout draws its masks otherwise (``nnx.Dropout``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jaxtrain.nn.ops import Dtype, batch_normalize, conv2d, max_pool, normalize, running_statistics

class NNXBatchNorm(nnx.Module):
    """``BatchNorm`` (torch's semantics) as an NNX module: ``scale`` and ``bias`` are ``nnx.Param``s,
    ``mean`` and ``var`` the ``nnx.BatchStat`` running statistics.

    ``model.train()`` / ``model.eval()`` switch it, through NNX's ``use_running_average``.

    Args:
      features: the size of the last axis.
      momentum: the weight of the batch statistics in the running ones (torch's convention).
      epsilon: added to the variance before the square root.
      dtype: the computation dtype; statistics are always computed in at least float32.
      use_running_average: normalize with the running statistics (evaluation) instead of the batch's.

    Example:
      >>> bn = NNXBatchNorm(16)
      >>> y = bn(x)   # training mode: the statistics move
    """

    def __init__(
        self, features: int, momentum: float = 0.1, epsilon: float = 1e-5, dtype: Dtype | None = None,
        use_running_average: bool = False,
    ):
        self.momentum, self.epsilon, self.dtype, self.use_running_average = momentum, epsilon, dtype, use_running_average
        self.scale = nnx.Param(jnp.ones((features,), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((features,), jnp.float32))
        self.mean = nnx.BatchStat(jnp.zeros((features,), jnp.float32))
        self.var = nnx.BatchStat(jnp.ones((features,), jnp.float32))

    def __call__(self, x: jax.Array) -> jax.Array:
        xs = x.astype(jnp.promote_types(x.dtype, jnp.float32))
        if self.use_running_average:
            y = normalize(xs, self.mean[...], self.var[...], self.scale[...], self.bias[...], self.epsilon)
            return y.astype(self.dtype or x.dtype)
        y, mean, var = batch_normalize(xs, self.scale[...], self.bias[...], self.epsilon)
        self.mean[...], self.var[...] = running_statistics(
            self.mean[...], self.var[...], mean, var, x.size // x.shape[-1], self.momentum
        )
        return y.astype(self.dtype or x.dtype)


class NNXConv(nnx.Conv):
    """``nnx.Conv`` (its parameters and initializers) with stride 1, computed by ``ops.conv2d``, as Linen's ``Conv``.

    Example:
      >>> conv = NNXConv(1, 32, (3, 3), padding=1, rngs=nnx.Rngs(0))
    """

    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.kernel[...]
        bias = self.bias[...] if self.use_bias else None
        dtype = self.dtype or jnp.result_type(x, kernel)  # Linen's promote_dtype: a given dtype, else the widest
        y = conv2d(x.astype(dtype), kernel.astype(dtype), self.padding)
        return y if bias is None else y + bias.astype(dtype)


class NNXMLP(nnx.Module):
    """``MLP`` as an NNX module: flatten → [Dense → BatchNorm? → ReLU → Dropout?] per hidden layer → Dense.

    Its parameters are ``MLP``'s, by the same names (``Dense_0``, ``BatchNorm_0``, …). An NNX module is built
    with its weights, so it needs the input's shape.

    Args:
      input_shape: the shape of one input, e.g. ``(28, 28, 1)``.
      hidden: the widths of the hidden layers; ``(256,)`` is the primer's.
      num_classes: the number of output logits.
      dropout: the dropout rate after each hidden ReLU (0 disables it).
      batch_norm: add a BatchNorm (torch semantics) before each hidden ReLU.
      dtype: the computation dtype (e.g. ``jnp.bfloat16``); parameters stay float32.
      rngs: initializes the weights, and seeds dropout until a training step reseeds it.

    Example:
      >>> model = NNXMLP((28, 28, 1), rngs=nnx.Rngs(0))
      >>> model.eval()
      >>> logits = model(images)   # (N, 10)
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        hidden: Sequence[int] = (256,),
        num_classes: int = 10,
        dropout: float = 0.0,
        batch_norm: bool = False,
        dtype: Dtype | None = None,
        *,
        rngs: nnx.Rngs,
    ):
        self.hidden, self.num_classes, self.dropout, self.batch_norm = tuple(hidden), num_classes, dropout, batch_norm
        width = math.prod(input_shape)
        for i, out in enumerate(self.hidden):
            setattr(self, f"Dense_{i}", nnx.Linear(width, out, dtype=dtype, rngs=rngs))
            if batch_norm:
                setattr(self, f"BatchNorm_{i}", NNXBatchNorm(out, dtype=dtype))
            width = out
        setattr(self, f"Dense_{len(self.hidden)}", nnx.Linear(width, num_classes, dtype=dtype, rngs=rngs))
        self.Dropout_0 = nnx.Dropout(dropout, rngs=rngs)  # one layer, called once per hidden layer: a new mask each call

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape(x.shape[0], -1)  # x.view(-1, 784)
        for i in range(len(self.hidden)):
            x = getattr(self, f"Dense_{i}")(x)
            if self.batch_norm:
                x = getattr(self, f"BatchNorm_{i}")(x)
            x = self.Dropout_0(nnx.relu(x))
        return getattr(self, f"Dense_{len(self.hidden)}")(x)


class NNXCNN(nnx.Module):
    """``CNN`` as an NNX module: [Conv 3×3 → BatchNorm → ReLU → MaxPool 2×2] per block, then Dropout →
    [Dense → ReLU → Dropout] per hidden layer → Dense. Its parameters are ``CNN``'s, by the same names.

    Args:
      input_shape: the shape of one input image ``(H, W, C)``, e.g. ``(28, 28, 1)`` or ``(32, 32, 3)``.
      channels, hidden, num_classes, dropout, batch_norm, dtype: as the attributes of ``CNN`` of those names.
      rngs: initializes the weights, and seeds dropout until a training step reseeds it.

    Example:
      >>> model = NNXCNN((32, 32, 3), rngs=nnx.Rngs(0))
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        channels: Sequence[int] = (32, 64, 128),
        hidden: Sequence[int] = (128,),
        num_classes: int = 10,
        dropout: float = 0.25,
        batch_norm: bool = True,
        dtype: Dtype | None = None,
        *,
        rngs: nnx.Rngs,
    ):
        self.channels, self.hidden, self.num_classes = tuple(channels), tuple(hidden), num_classes
        self.dropout, self.batch_norm = dropout, batch_norm
        height, width, depth = input_shape
        for i, out in enumerate(self.channels):
            conv = NNXConv(depth, out, (3, 3), padding=1, use_bias=not batch_norm, dtype=dtype, rngs=rngs)
            setattr(self, f"Conv_{i}", conv)
            if batch_norm:
                setattr(self, f"BatchNorm_{i}", NNXBatchNorm(out, dtype=dtype))
            height, width, depth = height // 2, width // 2, out
        features = height * width * depth
        for i, out in enumerate((*self.hidden, num_classes)):
            setattr(self, f"Dense_{i}", nnx.Linear(features, out, dtype=dtype, rngs=rngs))
            features = out
        self.Dropout_0 = nnx.Dropout(dropout, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        for i in range(len(self.channels)):
            x = getattr(self, f"Conv_{i}")(x)
            if self.batch_norm:
                x = getattr(self, f"BatchNorm_{i}")(x)
            x = max_pool(nnx.relu(x), 2)
        x = x.reshape(x.shape[0], -1)
        for i in range(len(self.hidden)):
            x = nnx.relu(getattr(self, f"Dense_{i}")(self.Dropout_0(x)))
        return getattr(self, f"Dense_{len(self.hidden)}")(self.Dropout_0(x))
