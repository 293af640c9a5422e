"""prefetch_to_device: the loader's batches on the device, from a background thread (jaxtrain.data.transfer)."""

import threading

import numpy as np
import pytest

from jaxtrain import ArrayDataset, DataLoader, prefetch_to_device

pytestmark = pytest.mark.quick  # fast: the whole file is in the quick tier


def test_prefetch_yields_the_same_batches_on_the_device():
    loader = DataLoader(ArrayDataset(np.arange(20.0), np.arange(20)), batch_size=6)
    fetched = list(prefetch_to_device(iter(loader)))
    assert [b[1].tolist() for b in fetched] == [b[1].tolist() for b in loader]
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
