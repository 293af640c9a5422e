"""jaxtrain's data module beside torch.utils.data on the same datasets: where they agree, and the documented
places where they differ on purpose."""

import collections
import types
from collections.abc import Mapping

import numpy as np
import pytest

from jaxtrain import ArrayDataset, ConcatDataset, DataLoader, Subset, WeightedRandomSampler, default_collate, random_split

pytestmark = pytest.mark.quick  # fast: the whole file is in the quick tier

Point = collections.namedtuple("Point", "x y")


class Record(dict):
    """A dict subclass, as a dataset might return."""


class Frozen(Mapping):
    """A read-only Mapping that is not a dict, rebuilt from a dict."""

    def __init__(self, data):
        self._data = dict(data)

    def __getitem__(self, key):
        return self._data[key]

    def __iter__(self):
        return iter(self._data)

    def __len__(self):
        return len(self._data)


class Opaque(Frozen):
    """A Mapping that cannot be rebuilt from a dict: both collate it to a plain dict."""

    def __init__(self, **data):
        super().__init__(data)


def _examples(i):
    return {
        "float32 arrays": np.full((2, 3), i, np.float32),
        "int32 arrays": np.arange(3, dtype=np.int32) + i,
        "uint8 arrays": np.full((2,), i, np.uint8),
        "bool arrays": np.array([i % 2 == 0, True]),
        "numpy scalars": (np.float32(i / 2), np.int32(i), np.bool_(i % 2), np.float64(i)),
        "python numbers": (i, i / 3, i % 2 == 0),
        "a list": [np.float32(i), i],
        "a namedtuple": Point(np.zeros(2, np.float32) + i, i),
        "a dict": {"image": np.full((2, 2), i, np.float32), "label": i},
        "an OrderedDict": collections.OrderedDict(b=i, a=np.ones(1) * i),
        "a defaultdict": collections.defaultdict(list, {"x": i}),
        "a dict subclass": Record(x=i, y=[i, i + 1]),
        "a Mapping": Frozen({"x": np.int64(i), "y": float(i)}),
        "a Mapping that cannot be rebuilt": Opaque(x=i),
        "a mappingproxy": types.MappingProxyType({"x": i}),
        "nested": {"pair": (np.zeros(2) + i, {"deep": [i, np.float32(i)]}), "p": Point(i, (i, i))},
    }


def _assert_same(ours, theirs, example, torch):
    """Equal values, dtypes and containers; a tuple is the one container that differs (torch: a list)."""
    if isinstance(theirs, torch.Tensor):
        assert isinstance(ours, np.ndarray)
        assert ours.dtype == theirs.numpy().dtype
        np.testing.assert_array_equal(ours, theirs.numpy())
    elif isinstance(example, Mapping):
        assert type(ours) is type(theirs)
        assert list(ours) == list(theirs)
        for key in example:
            _assert_same(ours[key], theirs[key], example[key], torch)
    else:
        if type(example) is tuple:
            assert type(ours) is tuple and type(theirs) is list
        else:
            assert type(ours) is type(theirs)
        assert len(ours) == len(theirs)
        for a, b, e in zip(ours, theirs, example):
            _assert_same(a, b, e, torch)


@pytest.mark.parametrize("case", list(_examples(0)))
def test_collate_matches_torch_structures_and_dtypes(case, torch):
    items = [_examples(i)[case] for i in range(3)]
    _assert_same(default_collate(items), torch.utils.data.default_collate(items), items[0], torch)


def test_a_dataset_of_dicts_batches_as_torchs(torch):
    class Items:
        def __len__(self):
            return 7

        def __getitem__(self, i):
            return {"image": np.full((2,), i, np.float32), "label": i, "extra": (i % 2 == 0, [i * 0.5])}

    ours = list(DataLoader(Items(), batch_size=3))
    theirs = list(torch.utils.data.DataLoader(Items(), batch_size=3))
    assert len(ours) == len(theirs) == 3
    for a, b in zip(ours, theirs):
        _assert_same(a, b, Items()[0], torch)


# Documented differences: asserted as differences, so that a change on either side shows up here.


def test_strings_collate_to_a_numpy_array_not_a_list(torch):
    theirs = torch.utils.data.default_collate(["cat", "dog"])
    ours = default_collate(["cat", "dog"])
    assert theirs == ["cat", "dog"]
    assert isinstance(ours, np.ndarray) and ours.tolist() == theirs


def test_mixed_python_numbers_follow_numpys_promotion(torch):
    assert torch.utils.data.default_collate([1, 2.5]).dtype == torch.float32
    assert default_collate([1, 2.5]).dtype == np.float64
    assert torch.utils.data.default_collate([2.5, 1]).dtype == torch.float64 == torch.from_numpy(default_collate([2.5, 1])).dtype


def test_a_tuple_collates_to_a_tuple_and_a_list_to_a_list(torch):
    assert type(torch.utils.data.default_collate([(1, 2), (3, 4)])) is list
    assert type(default_collate([(1, 2), (3, 4)])) is tuple
    assert type(torch.utils.data.default_collate([[1, 2], [3, 4]])) is list is type(default_collate([[1, 2], [3, 4]]))


@pytest.mark.parametrize(
    "items,path",
    [
        ([(1,), (2, 3)], "batch has length 1 in item 0 but 2 in item 1"),
        ([{"image": np.zeros((2, 2))}, {"image": np.zeros((3, 2))}], r"batch\['image'\] has shape \(2, 2\) in item 0 but \(3, 2\)"),
        ([(np.zeros(2), 0), (np.zeros(3), 1)], r"batch\[0\] has shape \(2,\) in item 0 but \(3,\)"),
    ],
)
def test_ragged_items_raise_in_both_ours_naming_the_field(items, path, torch):
    with pytest.raises(RuntimeError):
        torch.utils.data.default_collate(items)
    with pytest.raises(ValueError, match=path):
        default_collate(items)


def test_a_getitem_error_ends_our_epoch_but_not_torchs(torch):
    class Broken:
        def __len__(self):
            return 3

        def __getitem__(self, i):
            if i == 1:
                raise KeyError("missing file")
            return np.float32(i)

    for loader in (DataLoader(Broken()), torch.utils.data.DataLoader(Broken())):
        batches = iter(loader)
        assert float(next(batches)[0]) == 0
        with pytest.raises(KeyError):
            next(batches)
        rest = [float(b[0]) for b in batches]
        assert rest == ([2.0] if isinstance(loader, torch.utils.data.DataLoader) else [])


def test_unsupported_items_are_type_errors_in_both(torch):
    for items in ([None, None], [np.array([None]), np.array([None])], [1j, 2j]):
        with pytest.raises(TypeError):
            torch.utils.data.default_collate(items)
        with pytest.raises(TypeError):
            default_collate(items)


@pytest.mark.parametrize(
    "kwargs",
    [dict(batch_size=True), dict(batch_size=0), dict(batch_size=-2), dict(batch_size=2.0), dict(drop_last=1), dict(drop_last=None)],
)
def test_arguments_torch_rejects_we_reject(kwargs, torch):
    data = np.arange(6, dtype=np.float32)
    with pytest.raises(ValueError):
        torch.utils.data.DataLoader(torch.tensor(data), **kwargs)
    name, value = next(iter(kwargs.items()))
    with pytest.raises(ValueError, match=f"^{name}={value!r}; expected"):
        DataLoader(ArrayDataset(data), **kwargs)


def test_sampler_and_shuffle_exclude_each_other_in_both(torch):
    weights = [1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match="mutually exclusive"):
        torch.utils.data.DataLoader(list(range(3)), sampler=torch.utils.data.WeightedRandomSampler(weights, 3), shuffle=True)
    with pytest.raises(ValueError, match="^shuffle=True; expected False with a sampler"):
        DataLoader(ArrayDataset(np.arange(3)), sampler=WeightedRandomSampler(weights, 3), shuffle=True)


def test_an_empty_dataset_fails_only_when_shuffled_in_both(torch):
    assert list(torch.utils.data.DataLoader([], batch_size=2)) == list(DataLoader(ArrayDataset(np.zeros(0)), 2)) == []
    with pytest.raises(ValueError):
        torch.utils.data.DataLoader([], batch_size=2, shuffle=True)
    with pytest.raises(ValueError, match=r"^len\(dataset\)=0"):
        DataLoader(ArrayDataset(np.zeros(0)), 2, shuffle=True)


def test_shuffle_must_be_a_bool_here_not_in_torch(torch):
    assert len(torch.utils.data.DataLoader(list(range(4)), shuffle=1)) == 4
    with pytest.raises(ValueError, match="^shuffle=1; expected a bool"):
        DataLoader(ArrayDataset(np.arange(4)), shuffle=1)


def test_a_sampler_is_an_indices_function_here_and_any_iterable_in_torch(torch):
    assert [int(b) for b in torch.utils.data.DataLoader(list(range(3)), sampler=[2, 0, 1])] == [2, 0, 1]
    with pytest.raises(ValueError, match=r"^sampler=\[2, 0, 1\]; expected an object with indices\(seed, epoch\)"):
        DataLoader(ArrayDataset(np.arange(3)), sampler=[2, 0, 1])


@pytest.mark.parametrize(
    "args",
    [([1.0, 2.0], 0), ([1.0, 2.0], True), ([1.0, 2.0], 2, 1), ([[1.0, 2.0]], 2)],
)
def test_weighted_sampler_arguments_torch_rejects_we_reject(args, torch):
    with pytest.raises(ValueError):
        torch.utils.data.WeightedRandomSampler(*args)
    with pytest.raises(ValueError):
        WeightedRandomSampler(*args)


@pytest.mark.parametrize("num_samples,batch_size,drop_last", [(10, 3, False), (10, 3, True), (4, 8, False)])
def test_weighted_sampler_sets_the_epoch_length_as_in_torch(num_samples, batch_size, drop_last, torch):
    weights = np.array([0.0, 1.0, 1.0, 2.0, 0.0])
    data = np.arange(5)
    ours = DataLoader(ArrayDataset(data), batch_size, drop_last=drop_last, sampler=WeightedRandomSampler(weights, num_samples))
    sampler = torch.utils.data.WeightedRandomSampler(weights.tolist(), num_samples)
    theirs = torch.utils.data.DataLoader(torch.tensor(data), batch_size, drop_last=drop_last, sampler=sampler)
    assert len(ours) == len(theirs)
    assert [len(b[0]) for b in ours] == [len(b) for b in theirs]
    drawn = np.concatenate([b[0] for b in ours] + [b.numpy() for b in theirs])
    assert not np.isin(drawn, [0, 4]).any()  # a zero weight is never drawn, in either


def test_subset_matches_torchs(torch):
    data, labels = np.arange(20, dtype=np.float32).reshape(10, 2), np.arange(10)
    indices = [9, 0, 4, 4, 7]
    ours = Subset(ArrayDataset(data, labels), indices)
    theirs = torch.utils.data.Subset(torch.utils.data.TensorDataset(torch.tensor(data), torch.tensor(labels)), indices)
    assert len(ours) == len(theirs)
    for i in range(-len(ours), len(ours)):
        assert [np.asarray(a).tolist() for a in ours[i]] == [t.tolist() for t in theirs[i]]
    batches = zip(DataLoader(ours, 2), torch.utils.data.DataLoader(theirs, 2), strict=True)
    for (x, y), (tx, ty) in batches:
        np.testing.assert_array_equal(x, tx.numpy())
        np.testing.assert_array_equal(y, ty.numpy())


@pytest.mark.parametrize(
    "n,lengths",
    [(10, [3, 7]), (10, [0.5, 0.5]), (11, [0.5, 0.5]), (7, [0.25, 0.25, 0.5]), (10, [0.34, 0.33, 0.33]), (3, [0.1, 0.9]), (5, [5, 0])],
)
def test_random_split_lengths_match_torchs_and_partition_the_dataset(n, lengths, torch, recwarn):
    theirs = torch.utils.data.random_split(range(n), lengths, generator=torch.Generator().manual_seed(0))
    ours = random_split(ArrayDataset(np.arange(n)), lengths, seed=0)
    assert [len(p) for p in ours] == [len(p) for p in theirs]
    assert sorted(i for p in ours for i in p.indices) == list(range(n))
    assert sorted(int(p[i][0]) for p in ours for i in range(len(p))) == list(range(n))


def test_random_split_rejects_what_torch_rejects(torch):
    for lengths in ([3, 3], [1.2, -0.2]):
        with pytest.raises(ValueError):
            torch.utils.data.random_split(range(10), lengths)
        with pytest.raises(ValueError, match="^lengths"):
            random_split(ArrayDataset(np.arange(10)), lengths)


def test_concat_dataset_matches_torchs(torch):
    parts = [np.arange(3), np.arange(10, 15), np.arange(0), np.arange(20, 22)]
    ours = ConcatDataset([ArrayDataset(p) for p in parts])
    theirs = torch.utils.data.ConcatDataset([torch.utils.data.TensorDataset(torch.tensor(p)) for p in parts])
    assert len(ours) == len(theirs) == 10
    assert ours.cumulative_sizes == theirs.cumulative_sizes
    assert [int(ours[i][0]) for i in range(-10, 10)] == [int(theirs[i][0]) for i in range(-10, 10)]
    for index in (10, 11):
        with pytest.raises(IndexError):
            theirs[index]
        with pytest.raises(IndexError):
            ours[index]
    with pytest.raises(ValueError):  # a documented difference: below -len, torch raises ValueError
        theirs[-11]
    with pytest.raises(IndexError, match="out of range"):
        ours[-11]
    assert [b[0].tolist() for b in DataLoader(ours, 4)] == [b[0].tolist() for b in torch.utils.data.DataLoader(theirs, 4)]
