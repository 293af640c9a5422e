import json
import math

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxtrain import (
    MLP,
    ArrayDataset,
    ConcatDataset,
    DataLoader,
    Subset,
    WeightedRandomSampler,
    adam,
    create_train_state,
    fit,
    random_split,
    train_step,
)

pytestmark = pytest.mark.quick  # fast: the whole file is in the quick tier


class Squares:
    """A user's own dataset: any class with __getitem__ and __len__."""

    def __len__(self):
        return 10

    def __getitem__(self, i):
        return np.full((2,), i * i, np.float32), i


def _labels(loader):
    return [batch[1].tolist() for batch in loader]


def test_batches_in_order_without_shuffle():
    loader = DataLoader(ArrayDataset(np.arange(10) * 10, np.arange(10)), batch_size=4)
    assert len(loader) == 3
    assert _labels(loader) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    inputs, labels = next(iter(loader))
    assert isinstance(inputs, np.ndarray) and inputs.tolist() == [0, 10, 20, 30]


def test_drop_last_drops_the_short_batch():
    loader = DataLoader(ArrayDataset(np.arange(10)), batch_size=4, drop_last=True)
    assert len(loader) == 2
    assert [b[0].tolist() for b in loader] == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_a_users_dataset_is_gathered_item_by_item_and_stacked():
    loader = DataLoader(Squares(), batch_size=3)
    inputs, labels = next(iter(loader))
    assert inputs.shape == (3, 2) and inputs[:, 0].tolist() == [0, 1, 4]
    assert labels.tolist() == [0, 1, 2]


def test_collate_fn_receives_the_list_of_examples():
    loader = DataLoader(ArrayDataset(np.arange(6)), batch_size=4, collate_fn=lambda items: len(items))
    assert list(loader) == [4, 2]


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 200), batch_size=st.integers(1, 64), drop_last=st.booleans(), seed=st.integers(0, 2**31))
def test_each_epoch_visits_every_index_once(n, batch_size, drop_last, seed):
    loader = DataLoader(ArrayDataset(np.arange(n)), batch_size, shuffle=True, drop_last=drop_last, seed=seed)
    assert len(loader) == (n // batch_size if drop_last else math.ceil(n / batch_size))
    for _ in range(2):
        seen = np.concatenate([b[0] for b in loader]) if len(loader) else np.array([], int)
        sizes = [len(b[0]) for b in loader]
        assert len(sizes) == len(loader)
        assert all(s == batch_size for s in sizes[:-1])
        if drop_last:
            assert len(seen) == len(loader) * batch_size and len(set(seen.tolist())) == len(seen)
        else:
            assert sorted(seen.tolist()) == list(range(n))


def test_shuffle_draws_a_new_order_each_epoch_reproducibly():
    make = lambda seed: DataLoader(ArrayDataset(np.arange(100)), 10, shuffle=True, seed=seed)
    a, b, c = make(0), make(0), make(1)
    epochs_a = [np.concatenate([x[0] for x in a]) for _ in range(3)]
    epochs_b = [np.concatenate([x[0] for x in b]) for _ in range(3)]
    assert all((x == y).all() for x, y in zip(epochs_a, epochs_b))
    assert not (epochs_a[0] == epochs_a[1]).all()
    assert not (epochs_a[0] == np.concatenate([x[0] for x in c])).all()
    assert (epochs_a[2] == a.indices(2)).all()


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(batch_size=0), "batch_size=0; expected a positive int"),
        (dict(batch_size=True), "batch_size=True; expected a positive int, not a bool"),
        (dict(batch_size=2.0), "batch_size=2.0; expected"),
        (dict(drop_last=1), "drop_last=1; expected a bool"),
        (dict(shuffle=None), "shuffle=None; expected a bool"),
        (dict(seed=-1), "seed=-1; expected a non-negative int"),
        (dict(seed=True), "seed=True; expected"),
        (dict(collate_fn=3), "collate_fn=3; expected a callable or None"),
        (dict(sampler=[0, 1, 2]), r"sampler=\[0, 1, 2\]; expected an object with indices\(seed, epoch\)"),
        (dict(sampler=WeightedRandomSampler([1, 1, 1], 3), shuffle=True), "shuffle=True; expected False with a sampler"),
        (dict(sampler=WeightedRandomSampler([1, 1, 1, 1], 3)), r"len\(sampler.weights\)=4; expected at most"),
    ],
)
def test_bad_arguments_are_one_line_errors_naming_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=f"^{message}") as error:
        DataLoader(ArrayDataset(np.arange(3)), **kwargs)
    assert "\n" not in str(error.value)


def test_an_empty_dataset_is_an_error_only_when_shuffled():
    assert list(DataLoader(ArrayDataset(np.arange(0)), 2)) == []
    with pytest.raises(ValueError, match=r"^len\(dataset\)=0; expected at least 1 with shuffle=True"):
        DataLoader(ArrayDataset(np.arange(0)), 2, shuffle=True)
    with pytest.raises(ValueError, match="lengths"):
        ArrayDataset(np.arange(3), np.arange(4))


def test_subset_and_concat_index_like_their_parts_and_keep_the_array_path():
    base = ArrayDataset(np.arange(10) * 10, np.arange(10))
    sub = Subset(base, [7, 2, 5])
    assert len(sub) == 3 and sub[0][1] == 7 and sub[-1][1] == 5
    loader = DataLoader(sub, batch_size=2)
    assert [b[1].tolist() for b in loader] == [[7, 2], [5]]
    assert [a.tolist() for a in loader.arrays()] == [[70, 20, 50], [7, 2, 5]]
    both = ConcatDataset([sub, Subset(base, [0])])
    assert len(both) == 4 and both[3][1] == 0 and both[-2][1] == 5
    with pytest.raises(IndexError, match="out of range"):
        both[4]
    assert DataLoader(both, 4).arrays()[1].tolist() == [7, 2, 5, 0]
    assert DataLoader(ConcatDataset([base, Squares()]), 4).arrays() is None  # a part without arrays
    assert DataLoader(Subset(Squares(), [3, 1]), 2).arrays() is None
    assert next(iter(DataLoader(Subset(Squares(), [3, 1]), 2)))[1].tolist() == [3, 1]


def test_named_arrays_give_dict_items_and_batches_through_every_path():
    images, labels = np.arange(20.0).reshape(10, 2), np.arange(10)
    data = ArrayDataset(image=images, label=labels)
    assert set(data[3]) == {"image", "label"} and data[3]["label"] == 3
    loader = DataLoader(data, batch_size=4, shuffle=True, seed=1)
    batch = next(iter(loader))
    np.testing.assert_array_equal(batch["image"], images[batch["label"]])
    sub = Subset(data, [7, 2])
    assert DataLoader(sub, 2).arrays()["label"].tolist() == [7, 2]
    both = ConcatDataset([sub, Subset(data, [0])])
    assert DataLoader(both, 3).arrays()["label"].tolist() == [7, 2, 0]
    assert DataLoader(ConcatDataset([sub, ArrayDataset(images, labels)]), 3).arrays() is None  # dict beside tuple
    with pytest.raises(ValueError, match="one kind"):
        ArrayDataset(images, label=labels)


def test_random_split_is_a_seeded_partition():
    base = ArrayDataset(np.arange(10))
    parts = random_split(base, [0.5, 0.3, 0.2], seed=4)
    assert [len(p) for p in parts] == [5, 3, 2]
    assert sorted(sum((p.indices for p in parts), [])) == list(range(10))
    again = random_split(base, [5, 3, 2], seed=4)
    assert [p.indices for p in again] == [p.indices for p in parts]
    assert [p.indices for p in random_split(base, [5, 3, 2], seed=5)] != [p.indices for p in parts]
    assert [len(p) for p in random_split(ArrayDataset(np.arange(7)), [0.25, 0.25, 0.5])] == [2, 2, 3]
    with pytest.raises(ValueError, match=r"^lengths=\[5, 4\]; expected ints >= 0 summing to len\(dataset\)=10"):
        random_split(base, [5, 4])
    with pytest.raises(ValueError, match=r"^lengths\[0\]=1.5; expected a fraction"):
        random_split(base, [1.5, -0.5])
    with pytest.warns(UserWarning, match="index 1 is empty"):
        random_split(ArrayDataset(np.arange(2)), [0.9, 0.1])


LOADERS = {
    "in order": dict(),
    "shuffled, drop_last": dict(shuffle=True, drop_last=True),
    "shuffled": dict(shuffle=True),
    "weighted": dict(sampler=WeightedRandomSampler(np.linspace(0.1, 1, 23), 30)),
}


@pytest.mark.parametrize("kind", list(LOADERS))
@pytest.mark.parametrize("stop", [(0, 1), (1, 3), (2, 0)])
def test_a_loader_resumes_mid_epoch_exactly(kind, stop):
    make = lambda: DataLoader(ArrayDataset(np.arange(23)), batch_size=5, seed=9, **LOADERS[kind])
    reference = make()
    expected = [[b[0].tolist() for b in reference] for _ in range(4)]
    interrupted = make()
    epoch, taken = stop
    for _ in range(epoch):
        list(interrupted)
    batches = iter(interrupted)
    taken_batches = [next(batches)[0].tolist() for _ in range(taken)]  # the loop stops here, mid-epoch
    assert taken_batches == expected[epoch][:taken]
    assert interrupted.position == stop
    state = json.loads(json.dumps(interrupted.state_dict()))
    resumed = make()
    resumed.load_state_dict(state)
    assert resumed.next_start == stop
    rest = [b[0].tolist() for b in resumed]
    assert rest == expected[epoch][taken:]
    assert [[b[0].tolist() for b in resumed] for _ in range(epoch + 1, 4)] == expected[epoch + 1 :]


def test_next_epoch_after_a_resume_returns_the_rest_of_the_epoch():
    loader = DataLoader(ArrayDataset(np.arange(23)), batch_size=5, shuffle=True, seed=1)
    loader.load_state_dict({**loader.state_dict(), "epoch": 2, "batches_taken": 3})
    assert loader.next_start == (2, 3)
    assert loader.next_epoch().tolist() == loader.indices(2)[15:].tolist()
    assert loader.position == loader.next_start == (3, 0)
    assert loader.next_epoch().tolist() == loader.indices(3).tolist()


def test_each_iter_starts_a_new_epoch_unless_a_state_was_loaded():
    loader = DataLoader(ArrayDataset(np.arange(10)), batch_size=2, shuffle=True)
    first = next(iter(loader))[0]
    assert first.tolist() == loader.indices(0)[:2].tolist() and loader.position == (0, 1)
    assert loader.next_start == (1, 0)
    assert [b[0].tolist() for b in loader][0] == loader.indices(1)[:2].tolist()
    assert loader.position == (2, 0)
    loader.load_state_dict(loader.state_dict(position=(0, 1)))
    assert [b[0].tolist() for b in loader] == loader.indices(0)[2:].reshape(-1, 2).tolist()


@pytest.mark.parametrize(
    "change,message",
    [
        (dict(seed=1), r"^state\['seed'\]=1; expected 0, this loader's seed"),
        (dict(batch_size=4), r"^state\['batch_size'\]=4; expected 5"),
        (dict(shuffle=False), r"^state\['shuffle'\]=False; expected True"),
        (dict(drop_last=True), r"^state\['drop_last'\]=True"),
        (dict(length=22), r"^state\['length'\]=22; expected 23"),
        (dict(batches_taken=6), r"^batches_taken=6; expected an int from 0 to 5"),
        (dict(epoch=-1), r"^epoch=-1; expected a non-negative int"),
    ],
)
def test_loading_a_state_from_another_loader_names_the_setting(change, message):
    loader = DataLoader(ArrayDataset(np.arange(23)), batch_size=5, shuffle=True)
    with pytest.raises(ValueError, match=message):
        loader.load_state_dict({**loader.state_dict(), **change})
    state = loader.state_dict()
    del state["seed"]
    with pytest.raises(ValueError, match=r"^state\['seed'\]=None"):
        loader.load_state_dict(state)


def _train_data(n=90, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 6, 6, 1), np.float32), rng.integers(0, 3, n).astype(np.int32)


@pytest.mark.parametrize("kind", ["subset", "weighted"])
def test_subsets_and_weighted_sampling_train_the_same_on_the_device_and_per_step(kind):
    images, labels = _train_data()
    if kind == "subset":
        train, _ = random_split(ArrayDataset(images, labels), [0.8, 0.2], seed=1)
        make = lambda: DataLoader(train, batch_size=16, shuffle=True, seed=2)
    else:
        weights = 1.0 / np.bincount(labels)[labels]
        make = lambda: DataLoader(ArrayDataset(images, labels), 16, sampler=WeightedRandomSampler(weights, 70), seed=2)
    assert make().arrays() is not None
    model, tx = MLP(hidden=(8,)), adam(1e-2)
    per_step, _ = fit(create_train_state(model, tx, images[:1]), make(), 2, log=None)
    loader = make()
    on_device, _ = fit(create_train_state(model, tx, images[:1]), loader, 2, log=None, data_on_device=True, steps_per_call=len(loader))
    assert int(on_device.step) == int(per_step.step) == 2 * len(loader)
    for a, b in zip(jax.tree.leaves(on_device.params), jax.tree.leaves(per_step.params)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("n,batch_size,drop_last", [(10, 3, False), (10, 3, True), (9, 3, False), (2, 5, False)])
def test_matches_torch_dataloader(n, batch_size, drop_last):
    torch = pytest.importorskip("torch")
    data = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
    ours = DataLoader(ArrayDataset(data, np.arange(n)), batch_size, drop_last=drop_last)
    theirs = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.tensor(data), torch.arange(n)), batch_size, drop_last=drop_last
    )
    assert len(ours) == len(theirs)
    for (x, y), (tx, ty) in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(x, tx.numpy())
        np.testing.assert_array_equal(y, ty.numpy())
    shuffled = DataLoader(ArrayDataset(data), batch_size, shuffle=True, drop_last=drop_last)
    torch_shuffled = torch.utils.data.DataLoader(torch.tensor(data), batch_size, shuffle=True, drop_last=drop_last)
    assert [len(b[0]) for b in shuffled] == [len(b) for b in torch_shuffled]


@pytest.mark.parametrize("feed", [dict(), dict(data_on_device=True, steps_per_call=3)])
def test_fit_continues_a_loaded_loader_where_the_interrupted_run_stopped(feed):
    images, labels = _train_data(70)  # 5 batches of 16 and one of 6
    make = lambda: DataLoader(ArrayDataset(images, labels), batch_size=16, shuffle=True, seed=4)
    model, tx = MLP(hidden=(8,)), adam(1e-2)
    reference, _ = fit(create_train_state(model, tx, images[:1]), make(), 2, log=None)
    interrupted, loader = create_train_state(model, tx, images[:1]), make()
    for _, batch in zip(range(2), loader):  # two steps of epoch 0, then the run stops
        interrupted, _ = train_step(interrupted, batch)
    resumed = make()
    resumed.load_state_dict(json.loads(json.dumps(loader.state_dict())))
    state, _ = fit(interrupted, resumed, 1, log=None, **feed)  # the rest of epoch 0
    state, _ = fit(state, resumed, 1, log=None, **feed)  # epoch 1
    assert int(state.step) == int(reference.step) == 10
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(reference.params)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
