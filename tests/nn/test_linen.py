"""Models: train/eval mode, BatchNorm's torch semantics, dropout keys, mixed precision (jaxtrain.nn.linen)."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtrain import CNN, MLP, BatchNorm, adam, create_train_state, eval_step, sgd, train_step
from jaxtrain.training.step import train_steps


def _data(n=64, size=8, seed=0):  # 8×8 keeps the CNN's compilations quick
    rng = np.random.default_rng(seed)
    return rng.random((n, size, size, 1), np.float32), rng.integers(0, 10, n).astype(np.int32)


def test_cnn_maps_28x28_images_to_logits_and_keeps_batch_statistics():
    images, _ = _data(4, size=28)
    model = CNN(channels=(4, 8))
    variables = model.init(jax.random.key(0), images[:1])
    assert model.apply(variables, images).shape == (4, 10)
    assert set(variables) == {"params", "batch_stats"}
    assert [v.shape for v in jax.tree.leaves(variables["batch_stats"])] == [(4,), (4,), (8,), (8,)]
    assert set(CNN(channels=(4,), batch_norm=False).init(jax.random.key(0), images[:1])) == {"params"}


@pytest.mark.quick
def test_evaluation_is_deterministic_and_leaves_the_batch_statistics_unchanged():
    images, labels = _data(32)
    state = create_train_state(CNN(channels=(4, 8), dropout=0.5), sgd(0.1), images[:1])
    state, _ = train_step(state, (images, labels))  # move the statistics away from their initial values
    stats = jax.device_get(state.batch_stats)
    first = eval_step(state, (images, labels))
    second = eval_step(state, (images, labels))
    jax.tree.map(np.testing.assert_array_equal, first, second)
    jax.tree.map(np.testing.assert_array_equal, state.batch_stats, stats)
    # The module itself writes nothing in evaluation mode, even when allowed to.
    logits_a, updates = state.model.apply(state.variables, images, train=False, mutable=["batch_stats"])
    logits_b = state.model.apply(state.variables, images, train=False)
    np.testing.assert_array_equal(logits_a, logits_b)
    jax.tree.map(np.testing.assert_array_equal, updates["batch_stats"], stats)


@pytest.mark.quick
def test_training_mode_updates_the_batch_statistics():
    images, labels = _data(32)
    state = create_train_state(MLP(hidden=(16,), batch_norm=True), sgd(0.1), images[:1])
    before = jax.device_get(state.batch_stats)
    state, _ = train_step(state, (images, labels))
    assert not np.allclose(state.batch_stats["BatchNorm_0"]["mean"], before["BatchNorm_0"]["mean"])


@pytest.mark.parametrize("shape", [(8, 5), (6, 7, 7, 3)], ids=["BatchNorm1d", "BatchNorm2d"])
def test_batch_norm_follows_torch_exactly(shape):
    torch = pytest.importorskip("torch")
    features = shape[-1]
    rng = np.random.default_rng(0)
    ours = BatchNorm()
    variables = ours.init(jax.random.key(0), jnp.zeros(shape), train=False)
    theirs = (torch.nn.BatchNorm1d if len(shape) == 2 else torch.nn.BatchNorm2d)(features)
    to_torch = lambda x: torch.tensor(x if len(shape) == 2 else x.transpose(0, 3, 1, 2))  # NHWC → NCHW
    from_torch = lambda t: t.detach().numpy() if len(shape) == 2 else t.detach().numpy().transpose(0, 2, 3, 1)
    theirs.train()
    for step in range(5):
        x = (rng.normal(size=shape) * (step + 1) + step).astype(np.float32)
        y, updates = ours.apply(variables, x, train=True, mutable=["batch_stats"])
        variables = {**variables, **updates}
        np.testing.assert_allclose(y, from_torch(theirs(to_torch(x))), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(variables["batch_stats"]["mean"], theirs.running_mean.numpy(), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(variables["batch_stats"]["var"], theirs.running_var.numpy(), rtol=1e-6)
    theirs.eval()
    x = rng.normal(size=shape).astype(np.float32)
    expected = from_torch(theirs(to_torch(x)))
    np.testing.assert_allclose(ours.apply(variables, x, train=False), expected, rtol=1e-5, atol=1e-5)
    assert (theirs.momentum, theirs.eps) == (ours.momentum, ours.epsilon)


@pytest.mark.quick
def test_batch_norm_rejects_a_single_value_per_feature_in_training():
    variables = BatchNorm().init(jax.random.key(0), jnp.zeros((1, 3)), train=True)
    with pytest.raises(ValueError, match="1 value per feature"):
        BatchNorm().apply(variables, jnp.zeros((1, 3)), train=True, mutable=["batch_stats"])


def _nchw(x):
    return np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2))


def _nhwc(t):
    return t.detach().numpy().transpose(0, 2, 3, 1)


def test_batch_norm_gradients_follow_torch_in_float64(torch, x64):
    rng = np.random.default_rng(0)
    x, dy = rng.normal(size=(6, 5, 5, 3)) * 3 + 1, rng.normal(size=(6, 5, 5, 3))
    variables = BatchNorm().init(jax.random.key(0), jnp.zeros((1, 5, 5, 3)), train=False)
    params = {"scale": jnp.asarray(rng.normal(size=3)), "bias": jnp.asarray(rng.normal(size=3))}

    def apply(x, params):
        return BatchNorm().apply({**variables, "params": params}, x, train=True, mutable=["batch_stats"])[0]

    y, vjp = jax.vjp(apply, jnp.asarray(x), params)
    dx, dparams = vjp(jnp.asarray(dy))
    theirs = torch.nn.BatchNorm2d(3).double().train()
    with torch.no_grad():
        theirs.weight.copy_(torch.tensor(np.asarray(params["scale"])))
        theirs.bias.copy_(torch.tensor(np.asarray(params["bias"])))
    tx = torch.tensor(_nchw(x), requires_grad=True)
    ty = theirs(tx)
    ty.backward(torch.tensor(_nchw(dy)))
    np.testing.assert_allclose(y, _nhwc(ty), rtol=0, atol=1e-13)
    np.testing.assert_allclose(dx, _nhwc(tx.grad), rtol=0, atol=1e-13)
    np.testing.assert_allclose(dparams["scale"], theirs.weight.grad.numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(dparams["bias"], theirs.bias.grad.numpy(), rtol=0, atol=1e-12)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="a property of XLA:CPU's lowering")
def test_every_convolution_of_a_scanned_cnn_step_is_in_xla_cpus_fast_form():
    # Inside a loop XLA:CPU runs a convolution in any other form as a naive loop nest, about 10 times slower.
    images, labels = _data(16)
    state = create_train_state(CNN(channels=(4, 8), dropout=0.5), adam(1e-2), images[:1])
    stacked = (np.stack([images] * 2), np.stack([labels] * 2))
    hlo = train_steps.lower(state, stacked).compile().as_text()
    forms = re.findall(r" convolution\(.*?dim_labels=([^,\s]+)", hlo)
    assert len(forms) >= 5  # forward, input and kernel gradients (none for the images' gradient)
    assert set(forms) == {"b01f_01io->b01f"}



@pytest.mark.parametrize("rate", [0.25, 0.5])
def test_the_cnn_heads_training_dropout_is_torchs_nn_dropout(rate, torch):
    """torch's ``nn.Dropout(p)`` in training mode zeroes each entry with probability p and scales the kept
    ones by 1/(1-p), so the expected output is the input. The head of a CNN without blocks is Dropout → Dense;
    with the Dense an identity, its output in training mode is the dropout itself."""
    n, width = 4096, 16
    x = np.random.default_rng(0).uniform(0.5, 1.5, (n, 4, 4, 1)).astype(np.float32)
    model = CNN(channels=(), hidden=(), num_classes=width, dropout=rate, batch_norm=False)
    variables = {"params": {"Dense_0": {"kernel": jnp.eye(width), "bias": jnp.zeros(width)}}}
    ours = np.asarray(model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(1)}))
    theirs = torch.nn.Dropout(rate).train()(torch.from_numpy(x.reshape(n, width))).numpy()
    flat = x.reshape(n, width)
    for out in (ours, theirs):
        kept = out != 0
        assert abs(kept.mean() - (1 - rate)) < 0.01  # entries dropped with probability p
        np.testing.assert_allclose(out[kept], flat[kept] / (1 - rate), rtol=1e-6)  # the kept ones scaled by 1/(1-p)
        assert abs(out.mean() / flat.mean() - 1) < 0.01  # so that the expected output is the input
    np.testing.assert_array_equal(ours[ours != 0], flat[ours != 0] / np.float32(1 - rate))  # exactly x / (1 - p)
    evaluation = np.asarray(model.apply(variables, x, train=False))
    np.testing.assert_array_equal(evaluation, flat)  # and the identity in evaluation mode
