"""The loop: train_step, eval_step, evaluate, fit, its feeding modes and plan of calls (jaxtrain.train)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxtrain import CNN, MLP, NNXMLP, ArrayDataset, DataLoader, accumulate_gradients, adam, create_train_state, eval_step
from jaxtrain import evaluate, fit, load_digits, sgd, train_step
from jaxtrain.train import compile_fit, forward, plan_calls


def _data(n=100, seed=0, size=8):  # 8×8 keeps the CNN's compilations quick
    rng = np.random.default_rng(seed)
    return rng.random((n, size, size, 1), np.float32), rng.integers(0, 10, n).astype(np.int32)


@pytest.mark.parametrize(
    "examples, batch_size, k, plan",
    [
        (100, 32, 1, [(1, 32)] * 3 + [(1, 4)]),
        (100, 32, 2, [(2, 32), (1, 32), (1, 4)]),
        (96, 32, 3, [(3, 32)]),
        (96, 32, 10, [(3, 32)]),
        (20, 32, 4, [(1, 20)]),
    ],
)
def test_plan_calls_covers_the_epoch_once(examples, batch_size, k, plan):
    assert plan_calls(examples, batch_size, k) == plan
    assert sum(steps * size for steps, size in plan) == examples


def test_train_step_lowers_the_loss_on_a_fixed_batch():
    images, labels = _data(32)
    state = create_train_state(MLP(), adam(1e-2), images[:1])
    losses = []
    for _ in range(20):
        state, metrics = train_step(state, (images, labels))
        losses.append(float(metrics["loss"]))
    assert losses[-1] < 0.5 * losses[0]
    assert int(state.step) == 20


def test_second_train_step_does_not_recompile(count_compiles):
    images, labels = _data(64)
    state = create_train_state(MLP(hidden=(17,)), sgd(0.1), images[:1])
    state, _ = train_step(state, (images[:32], labels[:32]))
    with count_compiles() as compiles:
        state, _ = train_step(state, (images[32:], labels[32:]))
        jax.block_until_ready(state)
    assert compiles() == 0


def test_evaluate_counts_every_example_once_and_a_short_batch_does_not_recompile(count_compiles):
    images, labels = _data(103)
    state = create_train_state(MLP(hidden=(19,)), sgd(0.1), images[:1])
    loader = DataLoader(ArrayDataset(images, labels), batch_size=25)
    eval_step(state, (images[:25], labels[:25]), np.ones(25, bool))  # compile for full batches
    with count_compiles() as compiles:
        result = evaluate(state, loader)
    assert compiles() == 0
    assert result["count"] == 103
    logits = np.asarray(state.model.apply(state.variables, images))
    expected = np.mean(np.argmax(logits, -1) == labels)
    assert result["accuracy"] == pytest.approx(expected, abs=1e-9)
    per_example = -jax.nn.log_softmax(logits)[np.arange(103), labels]
    assert result["loss"] == pytest.approx(float(per_example.mean()), rel=1e-5)


def test_fit_reports_each_epoch_and_prints_the_primers_lines(capsys):
    images, labels = _data(96)
    loader = DataLoader(ArrayDataset(images, labels), batch_size=32, shuffle=True)
    state = create_train_state(MLP(hidden=(16,)), adam(1e-2), images[:1])
    state, history = fit(state, loader, 3, loader)
    out = capsys.readouterr().out.splitlines()
    assert [line.split(",")[0] for line in out] == ["Epoch 1", "Epoch 2", "Epoch 3"]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert out[-1] == f"Epoch 3, Loss: {history[-1]['train_loss']}"
    assert int(state.step) == 9


def test_fit_matches_separate_train_steps():
    images, labels = _data(64)
    loader = DataLoader(ArrayDataset(images, labels), batch_size=16, shuffle=True, seed=3)
    model, tx = MLP(hidden=(8,)), adam(1e-2)
    state, _ = fit(create_train_state(model, tx, images[:1]), loader, 2, log=None)
    manual = create_train_state(model, tx, images[:1])
    for epoch in range(2):
        order = loader.indices(epoch)
        for start in range(0, 64, 16):
            index = order[start : start + 16]
            manual, _ = train_step(manual, (images[index], labels[index]))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), state.params, manual.params)


FEEDING_MODES = {
    "per step": dict(steps_per_call=1),
    "per step, prefetched": dict(steps_per_call=1, prefetch=2),
    "fused K=3": dict(steps_per_call=3),
    "device-resident, K=2": dict(steps_per_call=2, data_on_device=True),
    "device-resident, whole epoch": dict(steps_per_call=10, data_on_device=True),
}


@pytest.mark.parametrize("feed", list(FEEDING_MODES))
def test_every_feeding_mode_computes_the_same_training(feed):
    images, labels = _data(150)  # 150 = 9 batches of 16 and one of 6: uneven groups and a short batch
    make_loader = lambda: DataLoader(ArrayDataset(images, labels), batch_size=16, shuffle=True, seed=5)
    model, tx = MLP(hidden=(12,)), adam(1e-2)
    reference = create_train_state(model, tx, images[:1])
    losses, loader = [], make_loader()
    for _ in range(2):
        for batch in loader:  # the primer's loop, one train_step per batch
            reference, metrics = train_step(reference, batch)
            losses.append(float(metrics["loss"]))
    ref_history = [{"train_loss": np.mean(losses[:10])}, {"train_loss": np.mean(losses[10:])}]
    state, history = fit(create_train_state(model, tx, images[:1]), make_loader(), 2, log=None, **FEEDING_MODES[feed])
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(reference.params)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    for h, r in zip(history, ref_history):
        assert h["train_loss"] == pytest.approx(r["train_loss"], rel=1e-6)
    assert int(state.step) == 20


@pytest.mark.parametrize("feed", ["per step", "fused K=3", "device-resident, whole epoch"])
def test_a_second_epoch_does_not_recompile(feed, count_compiles):
    images, labels = _data(150)
    loader = DataLoader(ArrayDataset(images, labels), batch_size=16, shuffle=True)
    state = create_train_state(MLP(hidden=(13,)), adam(1e-2), images[:1])
    state, _ = fit(state, loader, 1, log=None, **FEEDING_MODES[feed])
    with count_compiles() as compiles:
        fit(state, loader, 1, log=None, **FEEDING_MODES[feed])
    assert compiles() == 0


def test_fit_rejects_bad_feeding_settings():
    images, labels = _data(20)
    state = create_train_state(MLP(hidden=(4,)), adam(1e-2), images[:1])
    loader = DataLoader(ArrayDataset(images, labels), batch_size=4)
    with pytest.raises(ValueError, match="steps_per_call=0"):
        fit(state, loader, 1, steps_per_call=0)
    with pytest.raises(ValueError, match="array-backed dataset"):
        fit(state, DataLoader(ArrayDataset(images, labels), 4, collate_fn=list), 1, data_on_device=True)


@pytest.mark.parametrize("feed", ["per step", "fused K=3", "device-resident, K=2", "device-resident, whole epoch"])
def test_compile_fit_leaves_nothing_to_compile(feed, count_compiles):
    images, labels = _data(107)  # 6 full batches of 16 and a short one of 11
    loader = DataLoader(ArrayDataset(images, labels), batch_size=16, shuffle=True)
    state = create_train_state(MLP(hidden=(11,)), adam(1e-2), images[:1])
    options = {k: v for k, v in FEEDING_MODES[feed].items() if k != "prefetch"}
    assert compile_fit(state, loader, **options) > 0
    with count_compiles() as compiles:
        fit(state, loader, 1, log=None, **FEEDING_MODES[feed])
    assert compiles() == 0


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


@pytest.mark.parametrize("seed", [2**32, -1, 2**70, 1.0, True])
def test_a_seed_outside_32_bits_is_refused_not_wrapped(seed):
    images, _ = _data(4)
    with pytest.raises(ValueError) as info:
        create_train_state(MLP(hidden=(4,)), sgd(0.1), images[:1], seed=seed)
    assert str(info.value) == f"seed={seed!r}; expected an integer in [0, 2**32)"
    create_train_state(MLP(hidden=(4,)), sgd(0.1), images[:1], seed=2**32 - 1)  # the largest one is fine


def test_a_uint8_sample_is_refused_with_a_hint_to_scale_it():
    sample = np.zeros((1, 8, 8, 1), np.uint8)
    with pytest.raises(ValueError) as info:
        create_train_state(MLP(), sgd(0.1), sample)
    assert str(info.value) == (
        "sample (shape (1, 8, 8, 1), dtype uint8): integer-typed; expected floats in [0, 1] "
        "(scale the images first: uint8 pixels / 255)"
    )


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


def test_variables_shaped_unlike_the_model_are_refused():
    images, _ = _data(4)
    variables = create_train_state(MLP(hidden=(4,)), sgd(0.1), images[:1]).variables
    with pytest.raises(ValueError) as info:
        create_train_state(MLP(hidden=(5,)), sgd(0.1), images[:1], variables=variables)
    assert str(info.value) == "variables['params']['Dense_0']['bias']: shape (4,); expected (5,) for this model and sample"


@pytest.mark.parametrize("feed", ["per step", "fused K=3", "device-resident, K=2", "device-resident, whole epoch"])
def test_the_same_seed_gives_bitwise_identical_runs_in_every_feeding_mode(feed):
    images, labels = _data(150)

    def run(seed):
        loader = DataLoader(ArrayDataset(images, labels), batch_size=16, shuffle=True, seed=seed)
        model = MLP(hidden=(12,), dropout=0.3, batch_norm=True)
        state = create_train_state(model, adam(1e-2), images[:1], seed=seed)
        state, history = fit(state, loader, 2, log=None, **FEEDING_MODES[feed])
        return jax.device_get((state.params, state.batch_stats, state.opt_state)), [h["train_loss"] for h in history]

    (first, losses), (second, losses2) = run(4), run(4)
    jax.tree.map(np.testing.assert_array_equal, first, second)
    assert losses == losses2
    third, _ = run(5)
    assert not np.array_equal(first[0]["Dense_0"]["kernel"], third[0]["Dense_0"]["kernel"])


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


def test_nnx_dropout_draws_from_fold_in_key_step_and_evaluation_is_deterministic():
    images, _ = _data(16)
    state = create_train_state(NNXMLP(images.shape[1:], hidden=(64,), dropout=0.5, rngs=nnx.Rngs(0)), sgd(0.1), images[:1])
    at = lambda step: forward(state.replace(step=jnp.int32(step)), state.params, images, train=True)[0]  # noqa: E731
    np.testing.assert_array_equal(at(3), at(3))
    assert not np.allclose(at(3), at(4))
    evaluation = forward(state, state.params, images, train=False)[0]
    assert not np.allclose(at(3), evaluation)
    np.testing.assert_array_equal(evaluation, forward(state.replace(step=jnp.int32(9)), state.params, images, train=False)[0])


@pytest.mark.parametrize("feed", list(FEEDING_MODES))
def test_nnx_models_and_dict_batches_train_alike_in_every_feeding_mode(feed):
    images, labels = _data(150)
    make_loader = lambda data: DataLoader(data, batch_size=16, shuffle=True, seed=5)  # noqa: E731
    model, tx = NNXMLP(images.shape[1:], hidden=(12,), dropout=0.1, batch_norm=True, rngs=nnx.Rngs(0)), adam(1e-2)
    reference, loader = create_train_state(model, tx, images[:1]), make_loader(ArrayDataset(images, labels))
    for _ in range(2):
        for batch in loader:  # the primer's loop over tuples
            reference, _ = train_step(reference, batch)
    data = ArrayDataset(pixels=images, label=labels)  # dict items, their inputs under a name of the user's
    options = dict(log=None, inputs="pixels", **FEEDING_MODES[feed])
    state, _ = fit(create_train_state(model, tx, images[:1]), make_loader(data), 2, make_loader(data), **options)
    for a, b in zip(jax.tree.leaves((state.params, state.batch_stats)), jax.tree.leaves((reference.params, reference.batch_stats))):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


class DictItems:
    """A dataset whose items are dicts, as tensorflow-datasets, grain and Hugging Face datasets give them."""

    def __init__(self, images, labels):
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"image": self.images[i], "label": self.labels[i], "id": f"example-{i}"}


@pytest.mark.parametrize("feed", ["per step", "fused K=3"])
def test_a_dataset_of_dicts_trains_without_naming_its_entries(feed, count_compiles):
    images, labels = _data(96)
    loader = DataLoader(DictItems(images, labels), batch_size=16, shuffle=True)
    state = create_train_state(MLP(hidden=(8,)), adam(1e-2), images[:1])
    assert compile_fit(state, loader, FEEDING_MODES[feed]["steps_per_call"]) > 0
    with count_compiles() as compiles:
        state, history = fit(state, loader, 2, loader, log=None, **FEEDING_MODES[feed])
    assert compiles() <= 2  # evaluation's step only
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert evaluate(state, loader)["count"] == 96


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
