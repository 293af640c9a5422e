"""The loop: train_step, eval_step, evaluate, fit, its feeding modes and plan of calls (jaxtrain.training.step)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxtrain import CNN, MLP, NNXMLP, ArrayDataset, DataLoader, accumulate_gradients, adam, create_train_state, eval_step
from jaxtrain import evaluate, fit, load_digits, predict, sgd, train_step
from jaxtrain.training.step import forward


def _data(n=100, seed=0, size=8):  # 8×8 keeps the CNN's compilations quick
    rng = np.random.default_rng(seed)
    return rng.random((n, size, size, 1), np.float32), rng.integers(0, 10, n).astype(np.int32)


@pytest.mark.quick
def test_train_step_lowers_the_loss_on_a_fixed_batch():
    images, labels = _data(32)
    state = create_train_state(MLP(), adam(1e-2), images[:1])
    losses = []
    for _ in range(20):
        state, metrics = train_step(state, (images, labels))
        losses.append(float(metrics["loss"]))
    assert losses[-1] < 0.5 * losses[0]
    assert int(state.step) == 20


@pytest.mark.quick
def test_second_train_step_does_not_recompile(count_compiles):
    images, labels = _data(64)
    state = create_train_state(MLP(hidden=(17,)), sgd(0.1), images[:1])
    state, _ = train_step(state, (images[:32], labels[:32]))
    with count_compiles() as compiles:
        state, _ = train_step(state, (images[32:], labels[32:]))
        jax.block_until_ready(state)
    assert compiles() == 0


@pytest.mark.quick
def test_evaluate_counts_every_example_once_and_a_short_batch_does_not_recompile(count_compiles):
    images, _ = _data(103)
    state = create_train_state(MLP(hidden=(19,)), sgd(0.1), images[:1])
    logits = np.asarray(state.model.apply(state.variables, images))
    # Every other example right, the 101st among them: the short last batch (examples 100-102) is padded with
    # copies of it, which would add 22 right answers if the padding counted.
    labels = np.where(np.arange(103) % 2 == 0, logits.argmax(-1), (logits.argmax(-1) + 1) % 10).astype(np.int32)
    loader = DataLoader(ArrayDataset(images, labels), batch_size=25)
    eval_step(state, (images[:25], labels[:25]), np.ones(25, bool))  # compile for full batches
    with count_compiles() as compiles:
        result = evaluate(state, loader)
    assert compiles() == 0
    assert result["count"] == 103
    assert result["accuracy"] == 52 / 103 <= 1
    per_example = -jax.nn.log_softmax(logits)[np.arange(103), labels]
    assert result["loss"] == pytest.approx(float(per_example.mean()), rel=1e-5)


@pytest.mark.quick
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


@pytest.mark.quick
@pytest.mark.parametrize("seed", [2**32, -1, 2**70, 1.0, True])
def test_a_seed_outside_32_bits_is_refused_not_wrapped(seed):
    images, _ = _data(4)
    with pytest.raises(ValueError) as info:
        create_train_state(MLP(hidden=(4,)), sgd(0.1), images[:1], seed=seed)
    assert str(info.value) == f"seed={seed!r}; expected an integer in [0, 2**32)"
    create_train_state(MLP(hidden=(4,)), sgd(0.1), images[:1], seed=2**32 - 1)  # the largest one is fine


@pytest.mark.quick
def test_a_uint8_sample_is_refused_with_a_hint_to_scale_it():
    sample = np.zeros((1, 8, 8, 1), np.uint8)
    with pytest.raises(ValueError) as info:
        create_train_state(MLP(), sgd(0.1), sample)
    assert str(info.value) == (
        "sample (shape (1, 8, 8, 1), dtype uint8): raw pixels; expected floats in [0, 1] "
        "(scale the images first: uint8 pixels / 255; token ids: astype(np.int32))"
    )


@pytest.mark.quick
def test_a_sample_the_model_cannot_take_is_named_with_its_shape_and_dtype():
    from jaxtrain import CNN

    with pytest.raises(ValueError) as info:
        create_train_state(CNN(), sgd(0.1), np.zeros((1, 28), np.float32))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("sample (shape (1, 28), dtype float32): the model cannot take it (")
    assert message.endswith("; expected a batch shaped like the training inputs, e.g. images[:1]")
    with pytest.raises(ValueError) as info:
        create_train_state(MLP(), sgd(0.1), np.zeros((0, 8, 8, 1), np.float32))
    assert str(info.value) == (
        "sample (shape (0, 8, 8, 1), dtype float32): no examples; expected a batch (B, ...) with B >= 1, e.g. images[:1]"
    )


@pytest.mark.quick
def test_variables_shaped_unlike_the_model_are_refused():
    images, _ = _data(4)
    variables = create_train_state(MLP(hidden=(4,)), sgd(0.1), images[:1]).variables
    with pytest.raises(ValueError) as info:
        create_train_state(MLP(hidden=(5,)), sgd(0.1), images[:1], variables=variables)
    assert str(info.value) == "variables['params']['Dense_0']['bias']: shape (4,); expected (5,) for this model and sample"


class UserMLP(nnx.Module):
    """A user's own NNX model, as the Flax NNX docs write one; its layers named as MLP's are, for the twin test."""

    def __init__(self, features: int, hidden: int, rngs: nnx.Rngs, dropout: float = 0.0, batch_norm: bool = False):
        self.Dense_0 = nnx.Linear(features, hidden, rngs=rngs)
        self.norm = nnx.BatchNorm(hidden, rngs=rngs) if batch_norm else None
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.Dense_1 = nnx.Linear(hidden, 10, rngs=rngs)

    def __call__(self, x):
        x = self.Dense_0(x.reshape(x.shape[0], -1))
        if self.norm is not None:
            x = self.norm(x)
        return self.Dense_1(self.dropout(nnx.relu(x)))


def _digits_loaders():
    train, test = load_digits("train"), load_digits("test")
    return DataLoader(ArrayDataset(*train), 32, shuffle=True, seed=0), DataLoader(ArrayDataset(*test), 500), train[0]


def test_a_users_nnx_model_trains_through_fit_exactly_as_its_linen_twin():
    train_loader, test_loader, images = _digits_loaders()
    linen = create_train_state(MLP(hidden=(32,)), adam(3e-3), images[:1])
    start = jax.device_get(linen.variables)  # both from the same weights: then they compute the same
    linen, linen_history = fit(linen, train_loader, 3, test_loader, log=None)
    user = UserMLP(64, 32, nnx.Rngs(0))
    state = create_train_state(user, adam(3e-3), images[:1], variables=start)
    train_loader, test_loader, _ = _digits_loaders()
    state, history = fit(state, train_loader, 3, test_loader, log=None)
    assert [h["test_accuracy"] for h in history] == [h["test_accuracy"] for h in linen_history]
    assert history[-1]["test_accuracy"] > 0.8
    jax.tree.map(np.testing.assert_array_equal, state.params, jax.device_get(linen.params))
    # The user's module is left as it was: the state holds the trained values, the module its own.
    np.testing.assert_array_equal(user.Dense_0.kernel[...], UserMLP(64, 32, nnx.Rngs(0)).Dense_0.kernel[...])


def test_an_nnx_model_with_dropout_and_batch_norm_trains_as_well_as_its_linen_twin():
    train_loader, test_loader, images = _digits_loaders()
    user = UserMLP(64, 32, nnx.Rngs(1), dropout=0.2, batch_norm=True)
    state, history = fit(create_train_state(user, adam(1e-3), images[:1]), train_loader, 5, test_loader, log=None)
    train_loader, test_loader, _ = _digits_loaders()
    linen = create_train_state(MLP(hidden=(32,), dropout=0.2, batch_norm=True), adam(1e-3), images[:1], seed=1)
    _, linen_history = fit(linen, train_loader, 5, test_loader, log=None)
    assert abs(history[-1]["test_accuracy"] - linen_history[-1]["test_accuracy"]) <= 0.01
    assert set(state.batch_stats["norm"]) == {"mean", "var"}  # nnx.BatchStat, moved by training
    assert not np.allclose(state.batch_stats["norm"]["mean"], 0)


@pytest.mark.quick
def test_nnx_dropout_draws_from_fold_in_key_step_and_evaluation_is_deterministic():
    images, _ = _data(16)
    state = create_train_state(NNXMLP(images.shape[1:], hidden=(64,), dropout=0.5, rngs=nnx.Rngs(0)), sgd(0.1), images[:1])
    at = lambda step: forward(state.replace(step=jnp.int32(step)), state.params, images, train=True)[0]  # noqa: E731
    np.testing.assert_array_equal(at(3), at(3))
    assert not np.allclose(at(3), at(4))
    evaluation = forward(state, state.params, images, train=False)[0]
    assert not np.allclose(at(3), evaluation)
    np.testing.assert_array_equal(evaluation, forward(state.replace(step=jnp.int32(9)), state.params, images, train=False)[0])


@pytest.mark.quick
def test_a_batch_without_the_named_entries_is_refused_in_one_line():
    images, labels = _data(32)
    loader = DataLoader(ArrayDataset(img=images, y=labels), batch_size=16)
    state = create_train_state(MLP(hidden=(4,)), adam(1e-2), images[:1])
    with pytest.raises(ValueError) as info:
        fit(state, loader, 1, log=None)
    assert str(info.value) == (
        "inputs=None and the batch has none of the keys image, images, inputs, x, features; "
        "expected inputs= one of its keys: 'img', 'y'"
    )
    state, _ = fit(state, loader, 1, log=None, inputs="img", data_on_device=True)
    assert int(state.step) == 2


def test_a_second_nnx_model_of_the_same_architecture_reuses_the_compiled_step(count_compiles):
    images, labels = _data(32)
    tx = sgd(0.1)  # the optimizer is part of the compiled program too
    state = create_train_state(NNXMLP(images.shape[1:], hidden=(7,), rngs=nnx.Rngs(0)), tx, images[:1])
    state, _ = train_step(state, (images, labels))
    other = create_train_state(NNXMLP(images.shape[1:], hidden=(7,), rngs=nnx.Rngs(1)), tx, images[:1])
    with count_compiles() as compiles:
        other, _ = train_step(other, (images, labels))
        jax.block_until_ready(other)
    assert compiles() == 0


@pytest.mark.quick
def test_an_nnx_model_with_state_a_step_would_drop_is_refused():
    class Counting(nnx.Module):
        def __init__(self, rngs):
            self.linear = nnx.Linear(64, 10, rngs=rngs)
            self.calls = nnx.Variable(jnp.zeros(()))

        def __call__(self, x):
            return self.linear(x.reshape(x.shape[0], -1))

    images, _ = _data(4)
    with pytest.raises(ValueError) as info:
        create_train_state(Counting(nnx.Rngs(0)), sgd(0.1), images[:1])
    assert str(info.value) == (
        "model (NNX Counting): holds Variable at 'calls', which a training step would not carry over; "
        "expected only nnx.Param, nnx.BatchStat and RNG streams (nnx.Rngs)"
    )
    with pytest.raises(ValueError, match=r"^sample \(shape \(1, 5\), dtype float32\): the model cannot take it"):
        create_train_state(UserMLP(64, 8, nnx.Rngs(0)), sgd(0.1), np.zeros((1, 5), np.float32))


# Token ids: an embedding bag (the mean of the tokens' embeddings) over int32 ids, the class given by which
# fifth of the vocabulary most of an example's tokens come from.
def _tokens(n=256, length=6, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n).astype(np.int32)
    ids = labels[:, None] * 5 + rng.integers(0, 5, (n, length))
    noise = rng.random((n, length)) < 0.3
    ids = np.where(noise, rng.integers(0, 5 * classes, (n, length)), ids).astype(np.int32)
    mask = (np.arange(length) < rng.integers(2, length + 1, n)[:, None]).astype(np.float32)
    return ids, mask, labels


class LinenBag(nn.Module):
    """An embedding bag over ``ids: (B, T) int32``, or over ``{"ids", "mask"}`` (a masked mean)."""

    @nn.compact
    def __call__(self, inputs):
        ids, mask = (inputs["ids"], inputs["mask"]) if isinstance(inputs, dict) else (inputs, None)
        assert jnp.issubdtype(ids.dtype, jnp.integer)  # the ids reach the model as integers, never cast
        vectors = nn.Embed(20, 16)(ids)
        if mask is None:
            return nn.Dense(4)(vectors.mean(1))
        return nn.Dense(4)((vectors * mask[..., None]).sum(1) / mask.sum(1, keepdims=True))


class NNXBag(nnx.Module):
    def __init__(self, rngs):
        self.embed, self.out = nnx.Embed(20, 16, rngs=rngs), nnx.Linear(16, 4, rngs=rngs)

    def __call__(self, inputs):
        ids, mask = (inputs["ids"], inputs["mask"]) if isinstance(inputs, dict) else (inputs, None)
        assert jnp.issubdtype(ids.dtype, jnp.integer)
        vectors = self.embed(ids)
        if mask is None:
            return self.out(vectors.mean(1))
        return self.out((vectors * mask[..., None]).sum(1) / mask.sum(1, keepdims=True))


@pytest.mark.parametrize("kind", ["linen", "nnx"])
def test_a_model_over_int32_token_ids_trains_with_fit_and_evaluates(kind):
    ids, _, labels = _tokens()
    model = LinenBag() if kind == "linen" else NNXBag(nnx.Rngs(0))
    state = create_train_state(model, adam(3e-2), ids[:1])
    loader = DataLoader(ArrayDataset(ids[:192], labels[:192]), 32, shuffle=True, seed=0)
    test = DataLoader(ArrayDataset(ids[192:], labels[192:]), 50)
    before = evaluate(state, test)
    state, history = fit(state, loader, 4, test, log=None)
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]
    after = evaluate(state, test)
    assert after["count"] == 64 and after["loss"] < before["loss"] and after["accuracy"] > 0.8
    assert predict(state, ids[:3]).shape == (3, 4)
    # The same on the device-resident path, whose arrays keep their integer dtype there.
    state, _ = fit(state, DataLoader(ArrayDataset(ids[:192], labels[:192]), 32), 1, log=None, data_on_device=True)


@pytest.mark.parametrize("kind", ["linen", "nnx"])
def test_a_dict_batch_feeds_two_inputs_to_the_model(kind):
    ids, mask, labels = _tokens()
    model = LinenBag() if kind == "linen" else NNXBag(nnx.Rngs(0))
    state = create_train_state(model, adam(3e-2), {"ids": ids[:1], "mask": mask[:1]})
    train = ArrayDataset(ids=ids[:192], mask=mask[:192], label=labels[:192])
    test = DataLoader(ArrayDataset(ids=ids[192:], mask=mask[192:], label=labels[192:]), 50)  # a short last batch
    keys = ("ids", "mask")
    state, history = fit(state, DataLoader(train, 32, shuffle=True), 4, test, log=None, inputs=keys, data_on_device=True)
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]
    result = evaluate(state, test, inputs=keys)
    assert result["count"] == 64 and result["accuracy"] > 0.8
    # The mask is read: the same ids with the padding unmasked give other logits.
    full = {"ids": ids[:8], "mask": np.ones_like(mask[:8])}
    assert not np.allclose(predict(state, {"ids": ids[:8], "mask": mask[:8]}), predict(state, full))
    with pytest.raises(ValueError) as info:
        evaluate(state, test, inputs=("ids", "masks"))
    assert str(info.value) == "inputs='masks'; expected a key of the batch: 'ids', 'label', 'mask'"
