"""The NNX models, a mirror of the Linen ones: the same layout, the same operations, the same numbers on the
same weights; NNX's own train and eval modes (jaxtrain.nn.nnx)."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxtrain import CNN, MLP, NNXCNN, NNXMLP, NNXBatchNorm, adam, create_train_state, cross_entropy
from jaxtrain.nn.adapter import NNXModel
from jaxtrain.training.step import train_steps

_PAIRS = [
    (MLP(hidden=(16, 8), batch_norm=True), lambda s: NNXMLP(s, hidden=(16, 8), batch_norm=True, rngs=nnx.Rngs(0)), (8, 8, 1)),
    (CNN(channels=(4, 8), dropout=0.0), lambda s: NNXCNN(s, channels=(4, 8), dropout=0.0, rngs=nnx.Rngs(0)), (32, 32, 3)),
    (CNN(channels=(4,), hidden=(), batch_norm=False, num_classes=3, dropout=0.0),
     lambda s: NNXCNN(s, channels=(4,), hidden=(), batch_norm=False, num_classes=3, dropout=0.0, rngs=nnx.Rngs(0)), (12, 10, 1)),
]
_IDS = ["mlp", "cnn-rgb", "cnn-3-classes"]


@pytest.mark.parametrize("linen, make_nnx, shape", _PAIRS, ids=_IDS)
def test_the_nnx_twins_have_the_linen_layout_and_compute_the_same(linen, make_nnx, shape):
    images = np.random.default_rng(0).random((6, *shape), np.float32)
    variables = linen.init(jax.random.key(0), images[:1])
    model, own = NNXModel.split(make_nnx(shape))
    assert jax.tree.map(np.shape, own) == jax.tree.map(np.shape, variables)
    np.testing.assert_array_equal(model.apply(variables, images), linen.apply(variables, images, train=False))
    if "batch_stats" in variables:  # training mode moves the statistics alike (dropout off: masks differ)
        drop = {"dropout": jax.random.key(1)}
        ours = model.apply(variables, images, train=True, mutable=["batch_stats"], rngs=drop)[1]
        theirs = linen.clone(dropout=0.0).apply(variables, images, train=True, mutable=["batch_stats"], rngs=drop)[1]
        jax.tree.map(np.testing.assert_allclose, ours, theirs)


@pytest.mark.quick
def test_nnx_modes_are_nnxs_own_train_and_eval():
    images = np.random.default_rng(0).random((8, 8, 8, 1), np.float32)
    model = NNXMLP((8, 8, 1), hidden=(32,), batch_norm=True, dropout=0.5, rngs=nnx.Rngs(0))
    model.eval()
    np.testing.assert_array_equal(model(images), model(images))  # running statistics, no dropout
    model.train()
    before = np.asarray(model.BatchNorm_0.mean[...])
    assert not np.allclose(model(images), model(images))  # a new dropout mask per call
    assert not np.allclose(model.BatchNorm_0.mean[...], before)  # and the statistics move
    with pytest.raises(ValueError, match="1 value per feature"):
        NNXBatchNorm(3)(jnp.zeros((1, 3)))


@pytest.mark.parametrize("linen, make_nnx, shape", _PAIRS, ids=_IDS)
def test_the_nnx_twins_train_as_the_linen_models_on_the_same_weights(linen, make_nnx, shape):
    """Training mode without dropout (its masks are drawn otherwise): the same loss and gradients, since both
    are built of jaxtrain.nn.ops."""
    rng = np.random.default_rng(1)
    images, labels = rng.random((6, *shape), np.float32), rng.integers(0, 3, 6).astype(np.int32)
    variables = linen.init(jax.random.key(0), images[:1])
    model, _ = NNXModel.split(make_nnx(shape))
    linen = linen.clone(dropout=0.0)

    def loss(apply, params):
        logits, _ = apply({**variables, "params": params}, images, train=True, mutable=["batch_stats"],
                          rngs={"dropout": jax.random.key(2)})
        return cross_entropy(logits, labels)

    ours = jax.value_and_grad(lambda p: loss(model.apply, p))(variables["params"])
    theirs = jax.value_and_grad(lambda p: loss(linen.apply, p))(variables["params"])
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), ours, theirs)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="a property of XLA:CPU's lowering")
def test_the_nnx_cnn_convolves_with_the_linen_cnns_operation():
    """NNXCNN's convolutions are ops.conv2d's: inside a scanned step, all in the form XLA:CPU runs fast."""
    images = np.random.default_rng(0).random((16, 8, 8, 1), np.float32)
    labels = np.zeros(16, np.int32)
    state = create_train_state(NNXCNN((8, 8, 1), channels=(4, 8), rngs=nnx.Rngs(0)), adam(1e-2), images[:1])
    hlo = train_steps.lower(state, (np.stack([images] * 2), np.stack([labels] * 2))).compile().as_text()
    forms = re.findall(r" convolution\(.*?dim_labels=([^,\s]+)", hlo)
    assert len(forms) >= 5 and set(forms) == {"b01f_01io->b01f"}
