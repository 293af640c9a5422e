"""default_collate and select: examples stacked into a batch, a batch's inputs and labels (jaxtrain.data.collate)."""

import collections
import types

import numpy as np
import pytest

from jaxtrain import default_collate, select

pytestmark = pytest.mark.quick  # fast: the whole file is in the quick tier


Point = collections.namedtuple("Point", "x y")


def test_collate_keeps_the_structure_of_an_example():
    items = [{"image": np.full((2, 2), i, np.float32), "meta": (i, [i * 0.5, True]), "p": Point(i, "ab"[i])} for i in range(2)]
    batch = default_collate(items)
    assert batch["image"].shape == (2, 2, 2) and batch["image"].dtype == np.float32
    ids, (halves, flags) = batch["meta"]
    assert type(batch["meta"]) is tuple and type(batch["meta"][1]) is list
    assert ids.dtype == np.int64 and halves.dtype == np.float64 and flags.dtype == bool
    assert type(batch["p"]) is Point and batch["p"].y.tolist() == ["a", "b"]
    proxy = default_collate([types.MappingProxyType({"a": 1}), types.MappingProxyType({"a": 2})])
    assert type(proxy) is types.MappingProxyType and proxy["a"].tolist() == [1, 2]
    assert default_collate([range(2), range(2)])[1].tolist() == [1, 1]  # range cannot be rebuilt: a list


@pytest.mark.parametrize(
    "items,message",
    [
        ([(1,), (2, 3)], r"^default_collate: batch has length 1 in item 0 but 2 in item 1"),
        ([np.zeros(2), np.zeros(2), np.zeros(3)], r"^default_collate: batch has shape \(2,\) in item 0 but \(3,\) in item 2"),
        ([{"image": np.zeros((2, 2)), "y": 0}, {"image": np.zeros((2, 3)), "y": 1}], r"batch\['image'\] has shape \(2, 2\)"),
        ([(np.zeros(1), [1, 2]), (np.zeros(1), [1])], r"batch\[1\] has length 2 in item 0 but 1 in item 1"),
        ([Point(1, np.zeros(2)), Point(2, 0.0)], r"batch\.y has shape \(2,\) in item 0 but \(\) in item 1"),
    ],
)
def test_ragged_examples_raise_one_line_naming_the_field(items, message):
    with pytest.raises(ValueError, match=message) as error:
        default_collate(items)
    assert "\n" not in str(error.value)


def test_collate_rejects_what_it_cannot_stack():
    with pytest.raises(TypeError, match=r"batch\[1\] is a NoneType"):
        default_collate([(1, None), (2, None)])
    with pytest.raises(TypeError, match="object array"):
        default_collate([np.array([None]), np.array([None])])
    with pytest.raises(ValueError, match="items=\\[\\]"):
        default_collate([])


def test_select_picks_inputs_and_labels_from_tuples_and_dicts():
    x, y = np.zeros((2, 3)), np.ones(2)
    assert select((x, y))[1] is y
    assert select((y, x, "id"), inputs=1, labels=0) == (x, y)
    assert select({"image": x, "label": y, "id": "a"}) == (x, y)
    assert select({"features": x, "targets": y}) == (x, y)
    assert select({"pixels": x, "class": y}, inputs="pixels", labels="class") == (x, y)
    Pair = collections.namedtuple("Pair", "inputs targets")
    assert select(Pair(x, y), labels="targets")[1] is y


@pytest.mark.parametrize(
    "batch, keys, message",
    [
        ({"pixels": 0, "label": 1}, {}, "inputs=None and the batch has none of the keys image, images, inputs, x, "
         "features; expected inputs= one of its keys: 'pixels', 'label'"),
        ({"image": 0, "label": 1}, {"labels": "class"}, "labels='class'; expected a key of the batch: 'image', 'label'"),
        ((0, 1), {"inputs": 2}, "inputs=2; expected a position of the batch's 2 entries (0..1)"),
        ((0,), {}, "labels=None; expected a position of the batch's 1 entries (0..0)"),
    ],
)
def test_select_names_what_the_batch_has_in_one_line(batch, keys, message):
    with pytest.raises(ValueError) as info:
        select(batch, **keys)
    assert str(info.value) == message
