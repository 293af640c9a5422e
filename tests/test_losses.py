import jax.numpy as jnp
import numpy as np
import pytest

from jaxtrain import cross_entropy


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
