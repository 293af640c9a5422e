import jax
import numpy as np
import pytest
from conftest import count_compiles

from jaxtrain import MLP, ArrayDataset, DataLoader, adam, create_train_state, eval_step, evaluate, fit, sgd, train_step
from jaxtrain.experiment import Config, run
from jaxtrain.train import compile_fit


def _data(n=100, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 8, 8, 1), np.float32), rng.integers(0, 10, n).astype(np.int32)


def test_train_step_lowers_the_loss_on_a_fixed_batch():
    images, labels = _data(32)
    state = create_train_state(MLP(), adam(1e-2), images[:1])
    losses = []
    for _ in range(20):
        state, metrics = train_step(state, (images, labels))
        losses.append(float(metrics["loss"]))
    assert losses[-1] < 0.5 * losses[0]
    assert int(state.step) == 20


def test_second_train_step_does_not_recompile():
    images, labels = _data(64)
    state = create_train_state(MLP(hidden=(17,)), sgd(0.1), images[:1])
    state, _ = train_step(state, (images[:32], labels[:32]))
    with count_compiles() as compiles:
        state, _ = train_step(state, (images[32:], labels[32:]))
        jax.block_until_ready(state)
    assert compiles() == 0


def test_evaluate_counts_every_example_once_and_a_short_batch_does_not_recompile():
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
    np.testing.assert_allclose(jax.tree.leaves(state.params)[0], jax.tree.leaves(manual.params)[0], rtol=1e-6)


def test_run_on_digits_end_to_end():
    report = run(Config(dataset="digits", epochs=10), log=None)
    assert report["test_examples"] == 449
    assert report["test_accuracy"] >= 0.95
    assert len(report["history"]) == 10
    assert report["samples_per_second"] > 0 and report["compile_seconds"] > 0


@pytest.mark.slow
def test_the_primers_configuration_on_mnist(mnist_dir):
    report = run(Config(dataset="mnist", data_dir=str(mnist_dir), epochs=10, batch_size=32, lr=1e-3), log=None)
    assert report["test_examples"] == 10000
    assert report["test_accuracy"] >= 0.965


FEEDS = {
    "per step": dict(steps_per_call=1),
    "per step, prefetched": dict(steps_per_call=1, prefetch=2),
    "fused K=3": dict(steps_per_call=3),
    "device-resident, K=2": dict(steps_per_call=2, data_on_device=True),
    "device-resident, whole epoch": dict(steps_per_call=10, data_on_device=True),
}


@pytest.mark.parametrize("feed", list(FEEDS))
def test_every_feed_computes_the_same_training(feed):
    images, labels = _data(150)  # 150 = 9 batches of 16 and one of 6: uneven groups and a short batch
    make_loader = lambda: DataLoader(ArrayDataset(images, labels), batch_size=16, shuffle=True, seed=5)
    model, tx = MLP(hidden=(12,)), adam(1e-2)
    reference, ref_history = fit(create_train_state(model, tx, images[:1]), make_loader(), 2, log=None)
    state, history = fit(create_train_state(model, tx, images[:1]), make_loader(), 2, log=None, **FEEDS[feed])
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(reference.params)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    for h, r in zip(history, ref_history):
        assert h["train_loss"] == pytest.approx(r["train_loss"], rel=1e-6)
    assert int(state.step) == 20


@pytest.mark.parametrize("feed", ["per step", "fused K=3", "device-resident, whole epoch"])
def test_a_second_epoch_does_not_recompile(feed):
    images, labels = _data(150)
    loader = DataLoader(ArrayDataset(images, labels), batch_size=16, shuffle=True)
    state = create_train_state(MLP(hidden=(13,)), adam(1e-2), images[:1])
    state, _ = fit(state, loader, 1, log=None, **FEEDS[feed])
    with count_compiles() as compiles:
        fit(state, loader, 1, log=None, **FEEDS[feed])
    assert compiles() == 0


def test_fit_rejects_bad_feed_settings():
    images, labels = _data(20)
    state = create_train_state(MLP(hidden=(4,)), adam(1e-2), images[:1])
    loader = DataLoader(ArrayDataset(images, labels), batch_size=4)
    with pytest.raises(ValueError, match="steps_per_call=0"):
        fit(state, loader, 1, steps_per_call=0)
    with pytest.raises(ValueError, match="ArrayDataset"):
        fit(state, DataLoader(ArrayDataset(images, labels), 4, collate_fn=list), 1, data_on_device=True)


@pytest.mark.parametrize("feed", ["per step", "fused K=3", "device-resident, K=2"])
def test_compile_fit_leaves_nothing_to_compile(feed):
    images, labels = _data(107)  # 6 full batches of 16 and a short one of 11
    loader = DataLoader(ArrayDataset(images, labels), batch_size=16, shuffle=True)
    state = create_train_state(MLP(hidden=(11,)), adam(1e-2), images[:1])
    options = {k: v for k, v in FEEDS[feed].items() if k != "prefetch"}
    assert compile_fit(state, loader, **options) > 0
    with count_compiles() as compiles:
        fit(state, loader, 1, log=None, **FEEDS[feed])
    assert compiles() == 0


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
    assert message.startswith("sample (shape (1, 28), dtype float32): the model cannot take it (ValueError: ")
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
