"""The loop over epochs: fit, its feeding modes, its plan of calls and ahead-of-time compilation (jaxtrain.training.fit)."""

import jax
import numpy as np
import pytest
from flax import nnx

from jaxtrain import MLP, NNXMLP, ArrayDataset, DataLoader, adam, create_train_state, evaluate, fit, train_step
from jaxtrain.training.fit import compile_fit, plan_calls


def _data(n=100, seed=0, size=8):
    rng = np.random.default_rng(seed)
    return rng.random((n, size, size, 1), np.float32), rng.integers(0, 10, n).astype(np.int32)


@pytest.mark.quick
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


@pytest.mark.quick
def test_fit_reports_each_epoch_and_prints_the_primers_lines(capsys):
    images, labels = _data(96)
    loader = DataLoader(ArrayDataset(images, labels), batch_size=32, shuffle=True)
    state = create_train_state(MLP(hidden=(16,)), adam(1e-2), images[:1])
    state, history = fit(state, loader, 3, loader)
    out = capsys.readouterr().out.splitlines()
    assert [line.split(",")[0] for line in out] == ["Epoch 1", "Epoch 2", "Epoch 3"]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    # the primer's line first, then what the evaluation measured
    test = f"test loss: {history[-1]['test_loss']:.4f}, test accuracy: {100 * history[-1]['test_accuracy']:.2f}%"
    assert out[-1] == f"Epoch 3, Loss: {history[-1]['train_loss']}, {test}"
    assert int(state.step) == 9


@pytest.mark.quick
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


@pytest.mark.quick
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
