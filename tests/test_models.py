"""Models: train/eval mode, BatchNorm's torch semantics, dropout keys, mixed precision (jaxtrain.models)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtrain import CNN, MLP, ArrayDataset, BatchNorm, DataLoader, accumulate_gradients, adam, create_train_state
from jaxtrain import eval_step, fit, sgd, train_step
from jaxtrain.train import forward


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


def test_training_mode_updates_the_batch_statistics():
    images, labels = _data(32)
    state = create_train_state(MLP(hidden=(16,), batch_norm=True), sgd(0.1), images[:1])
    before = jax.device_get(state.batch_stats)
    state, _ = train_step(state, (images, labels))
    assert not np.allclose(state.batch_stats["BatchNorm_0"]["mean"], before["BatchNorm_0"]["mean"])


def test_dropout_masks_change_from_step_to_step_and_not_within_one():
    images, _ = _data(16)
    state = create_train_state(MLP(hidden=(64,), dropout=0.5), sgd(0.1), images[:1])
    at = lambda step: forward(state.replace(step=jnp.int32(step)), state.params, images, train=True)[0]
    np.testing.assert_array_equal(at(3), at(3))
    assert not np.allclose(at(3), at(4))
    evaluation = forward(state, state.params, images, train=False)[0]
    assert not np.allclose(at(3), evaluation)  # and training mode differs from evaluation mode


def _tiny_run(seed):
    images, labels = _data(48, seed=1)
    loader = DataLoader(ArrayDataset(images, labels), batch_size=16, shuffle=True, seed=seed)
    state = create_train_state(CNN(channels=(4, 8), dropout=0.5), adam(1e-2), images[:1], seed=seed)
    state, history = fit(state, loader, 2, log=None, prefetch=0)
    return jax.device_get((state.params, state.batch_stats)), [h["train_loss"] for h in history]


def test_the_same_seed_gives_bitwise_identical_runs_with_dropout_and_batch_norm():
    (params, stats), losses = _tiny_run(seed=7)
    (params2, stats2), losses2 = _tiny_run(seed=7)
    jax.tree.map(np.testing.assert_array_equal, (params, stats), (params2, stats2))
    assert losses == losses2
    (params3, _), _ = _tiny_run(seed=8)
    assert not np.array_equal(params["Dense_0"]["kernel"], params3["Dense_0"]["kernel"])


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


def test_batch_norm_rejects_a_single_value_per_feature_in_training():
    variables = BatchNorm().init(jax.random.key(0), jnp.zeros((1, 3)), train=True)
    with pytest.raises(ValueError, match="1 value per feature"):
        BatchNorm().apply(variables, jnp.zeros((1, 3)), train=True, mutable=["batch_stats"])


@pytest.mark.parametrize("model", [MLP(hidden=(32,), batch_norm=True, dropout=0.1, dtype=jnp.bfloat16),
                                   CNN(channels=(4, 8), dtype=jnp.bfloat16)], ids=["mlp", "cnn"])
def test_a_bfloat16_run_trains_with_float32_parameters_and_optimizer_state(model):
    images, labels = _data(32)
    state = create_train_state(model, adam(1e-2), images[:1])
    assert state.model.apply(state.variables, images).dtype == jnp.bfloat16  # the compute dtype
    losses = []
    for _ in range(15):
        state, metrics = train_step(state, (images, labels))
        losses.append(float(metrics["loss"]))
    assert metrics["loss"].dtype == jnp.float32
    assert losses[-1] < 0.5 * losses[0]
    leaves = jax.tree.leaves((state.params, state.opt_state, state.batch_stats))
    floats = [x for x in leaves if jnp.issubdtype(x.dtype, jnp.floating)]
    assert floats and {x.dtype for x in floats} == {jnp.dtype(jnp.float32)}


def test_each_accumulated_batch_draws_its_own_dropout_mask():
    images, labels = _data(16)
    state = create_train_state(MLP(hidden=(32,), dropout=0.5), accumulate_gradients(sgd(0.1), 2), images[:1])
    state, first = train_step(state, (images, labels))
    state, second = train_step(state, (images, labels))  # same batch, same parameters, next step's key
    assert int(state.step) == 2 and float(first["loss"]) != float(second["loss"])
