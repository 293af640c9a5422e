import math
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxtrain import ArrayDataset, DataLoader, prefetch_to_device


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


def test_bad_batch_size_is_a_clear_error():
    with pytest.raises(ValueError, match="batch_size=0"):
        DataLoader(ArrayDataset(np.arange(3)), batch_size=0)
    with pytest.raises(ValueError, match="lengths"):
        ArrayDataset(np.arange(3), np.arange(4))


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


def test_prefetch_yields_the_same_batches_on_the_device():
    loader = DataLoader(ArrayDataset(np.arange(20.0), np.arange(20)), batch_size=6)
    fetched = list(prefetch_to_device(iter(loader)))
    assert [b[1].tolist() for b in fetched] == _labels(loader)
    assert all(hasattr(b[0], "devices") for b in fetched)


def test_prefetch_stops_its_thread_when_iteration_stops_early():
    before = threading.active_count()
    batches = prefetch_to_device(iter(DataLoader(ArrayDataset(np.arange(1000)), batch_size=1)), size=2)
    next(batches)
    batches.close()
    assert threading.active_count() == before


def test_prefetch_reraises_the_producers_error():
    def broken():
        yield np.zeros(2)
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        list(prefetch_to_device(broken()))
