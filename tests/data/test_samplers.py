"""WeightedRandomSampler: draws in proportion to the weights, from the seed and the epoch (jaxtrain.data.samplers)."""

import numpy as np
import pytest

from jaxtrain import ArrayDataset, DataLoader, WeightedRandomSampler

pytestmark = pytest.mark.quick  # fast: the whole file is in the quick tier


def test_weighted_sampler_draws_in_proportion_and_from_seed_and_epoch():
    weights = np.array([1.0, 0.0, 3.0, 4.0])
    sampler = WeightedRandomSampler(weights, num_samples=8000)
    draws = sampler.indices(seed=0, epoch=0)
    assert draws.shape == (8000,) and 1 not in draws
    np.testing.assert_allclose(np.bincount(draws, minlength=4) / 8000, weights / 8, atol=0.02)
    assert (sampler.indices(0, 0) == draws).all() and not (sampler.indices(0, 1) == draws).all()
    assert not (sampler.indices(1, 0) == draws).all()
    unique = WeightedRandomSampler(weights, 3, replacement=False).indices(0, 0)
    assert sorted(unique.tolist()) == [0, 2, 3]
    loader = DataLoader(ArrayDataset(np.arange(4)), batch_size=3, sampler=WeightedRandomSampler(weights, 7), seed=2)
    assert len(loader) == 3 and [len(b[0]) for b in loader] == [3, 3, 1]
    assert np.concatenate([b[0] for b in loader]).tolist() == loader.indices(1).tolist()


@pytest.mark.parametrize(
    "args,message",
    [
        (([1, 1], 0), r"^num_samples=0; expected a positive int"),
        (([1, 1], True), r"^num_samples=True"),
        (([1, 1], 2, 1), r"^replacement=1; expected a bool"),
        (([[1, 1]], 2), r"^weights.shape=\(1, 2\); expected one dimension"),
        (([1, -1], 2), r"^weights=\[ 1. -1.\]; expected finite, non-negative"),
        (([0, 0], 2), r"^weights=\[0. 0.\]; expected"),
        (([1, 0, 1], 3, False), r"^num_samples=3; expected at most 2, the examples with a positive weight"),
    ],
)
def test_weighted_sampler_rejects_bad_arguments(args, message):
    with pytest.raises(ValueError, match=message):
        WeightedRandomSampler(*args)
