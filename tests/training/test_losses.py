import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtrain import cross_entropy

pytestmark = pytest.mark.quick  # fast: the whole file is in the quick tier


def test_cross_entropy_equals_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(16, 10)) * 3
    labels = rng.integers(0, 10, 16)
    expected = torch.nn.CrossEntropyLoss()(torch.tensor(logits), torch.tensor(labels)).item()
    assert float(cross_entropy(jnp.asarray(logits, jnp.float32), labels)) == pytest.approx(expected, rel=1e-6)


def test_cross_entropy_by_hand_and_with_a_mask():
    logits = jnp.array([[2.0, 0.0], [0.0, 0.0], [5.0, -5.0]])
    labels = jnp.array([0, 1, 1])
    per_example = np.log1p(np.exp(-2.0)), np.log(2.0), 10 + np.log1p(np.exp(-10.0))
    assert float(cross_entropy(logits, labels)) == pytest.approx(np.mean(per_example), rel=1e-6)
    mask = jnp.array([True, True, False])
    assert float(cross_entropy(logits, labels, mask)) == pytest.approx(np.mean(per_example[:2]), rel=1e-6)


def test_bfloat16_logits_give_a_float32_loss():
    loss = cross_entropy(jnp.ones((2, 3), jnp.bfloat16), jnp.array([0, 1]))
    assert loss.dtype == jnp.float32


@pytest.mark.parametrize("bad", [2, 7, -1])
def test_a_label_outside_the_classes_gives_nan_not_another_class(bad):
    logits = jnp.array([[2.0, 0.0], [0.0, 0.0], [5.0, -5.0]])
    assert np.isnan(float(cross_entropy(logits, jnp.array([0, bad, 1]))))
    # Inside jit too, where -1 would otherwise read as class C-1 and 2 as a NaN of the gather.
    assert np.isnan(float(jax.jit(cross_entropy)(logits, jnp.array([0, 1, bad]))))


def test_a_masked_out_example_with_a_bad_label_changes_nothing():
    logits = jnp.array([[2.0, 0.0], [0.0, 0.0], [5.0, -5.0]])
    mask = jnp.array([True, True, False])
    good = cross_entropy(logits, jnp.array([0, 1, 1]), mask)
    for bad in (-1, 2, 255):
        labels = jnp.array([0, 1, bad])
        assert float(cross_entropy(logits, labels, mask)) == float(good)
        np.testing.assert_array_equal(jax.grad(cross_entropy)(logits, labels, mask), jax.grad(cross_entropy)(logits, jnp.array([0, 1, 1]), mask))


@pytest.mark.parametrize(
    "labels, mask, message",
    [
        (jnp.array([0.0, 1.0]), None, "labels (shape (2,), dtype float32): expected integer class indices"),
        (jnp.array([[0], [1]]), None, "labels (shape (2, 1), dtype int32): expected shape (2,), one class index per row of logits (2, 3)"),
        (jnp.array([0, 1]), jnp.ones((2, 1), bool), "mask (shape (2, 1)): expected shape (2,), one flag per label"),
    ],
)
def test_a_batch_of_the_wrong_shape_or_type_says_labels_or_mask(labels, mask, message):
    with pytest.raises(ValueError) as info:
        cross_entropy(jnp.zeros((2, 3)), labels, mask)
    assert str(info.value) == message
