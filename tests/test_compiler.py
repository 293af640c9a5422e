"""How jaxtrain's steps are compiled: jaxtrain.compiler's jit and its XLA options."""

import re

import jax
import numpy as np
import pytest

from jaxtrain import CNN, adam, create_train_state, eval_step, train_step
from jaxtrain.compiler import COMPILER_OPTIONS
from jaxtrain.train import train_step_fn

pytestmark = pytest.mark.skipif(
    COMPILER_OPTIONS is None or jax.default_backend() != "cpu", reason="XLA:CPU's options, for jaxlib 0.9.2 to 0.10"
)


def _in_ynnpack(compiled) -> set[str]:
    """The kinds of operation (the last part of their op_name) that XLA:CPU hands to YNNPACK."""
    lines = [line for line in compiled.as_text().splitlines() if '"__ynn_fusion"' in line]
    return {name for line in lines for name in re.findall(r'op_name="[^"]*/(\w+)"', line)}


def test_the_cnn_steps_keep_their_convolutions_out_of_ynnpack_and_their_reductions_in():
    images, labels = np.zeros((8, 28, 28, 1), np.float32), np.zeros(8, np.int32)
    state = create_train_state(CNN(channels=(16, 32)), adam(1e-3), images[:1])
    default = _in_ynnpack(jax.jit(train_step_fn).lower(state, (images, labels)).compile())
    assert {"conv_general_dilated", "reduce_sum"} <= default  # what XLA's default would do
    ours = _in_ynnpack(train_step.lower(state, (images, labels)).compile())
    assert "conv_general_dilated" not in ours
    assert "reduce_sum" in ours  # BatchNorm's statistics and gradient
    assert "conv_general_dilated" not in _in_ynnpack(eval_step.lower(state, (images, labels)).compile())


def test_with_64_bit_jax_the_steps_compile_with_xlas_defaults(x64):
    # Eigen's float64 convolutions are several times slower than YNNPACK's.
    images, labels = np.zeros((8, 28, 28, 1)), np.zeros(8, np.int32)
    state = create_train_state(CNN(channels=(16, 32)), adam(1e-3), images[:1])
    assert "conv_general_dilated" in _in_ynnpack(train_step.lower(state, (images, labels)).compile())
