"""The operations both model APIs are built of: max-pooling and convolution with torch's values and gradients,
lowered for XLA:CPU (jaxtrain.nn.ops)."""

import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtrain.nn.ops import conv2d, max_pool


def _nchw(x):
    return np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2))


def _nhwc(t):
    return t.detach().numpy().transpose(0, 2, 3, 1)


@pytest.mark.parametrize("shape,window", [((4, 8, 8, 3), 2), ((3, 7, 7, 5), 2), ((2, 5, 6, 2), 2), ((2, 7, 8, 3), 3), ((2, 2, 2, 4), 2)])
def test_max_pool_gives_the_gradient_to_the_first_maximum_as_torch_does(shape, window, torch, x64):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 3, shape).astype(np.float64)  # values in 0..2: most windows hold ties
    x.flat[rng.integers(0, x.size, 3)] = np.nan  # torch gives a NaN the maximum and its gradient
    dy = rng.normal(size=(shape[0], shape[1] // window, shape[2] // window, shape[3]))
    y, vjp = jax.vjp(lambda x: max_pool(x, window), jnp.asarray(x))
    tx = torch.tensor(_nchw(x), requires_grad=True)
    ty = torch.nn.functional.max_pool2d(tx, window)  # ceil_mode=False: odd rows and columns are dropped
    ty.backward(torch.tensor(_nchw(dy)))
    assert y.dtype == jnp.float64
    np.testing.assert_array_equal(y, _nhwc(ty))
    np.testing.assert_array_equal(vjp(jnp.asarray(dy))[0], _nhwc(tx.grad))  # exactly, ties and dropped edges included
    np.testing.assert_array_equal(y, fnn.max_pool(jnp.asarray(x), (window, window), strides=(window, window)))


@pytest.mark.quick
def test_max_pool_rejects_what_it_cannot_pool():
    with pytest.raises(ValueError, match=r"window=3; expected an integer from 1 to the image side 2"):
        max_pool(jnp.zeros((1, 2, 5, 1)), 3)
    with pytest.raises(ValueError, match=r"x.shape=\(2, 2\); expected \(N, H, W, C\)"):
        max_pool(jnp.zeros((2, 2)))


def _conv_reference(x, kernel, padding):
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), [(padding, padding)] * 2, dimension_numbers=("NHWC", "HWIO", "NHWC"))


@pytest.mark.parametrize("dtype,tolerance", [("float32", 1e-5), ("float64", 1e-12)])
@pytest.mark.parametrize("x_shape,k_shape,padding", [((4, 9, 9, 3), (3, 3, 3, 5), 1), ((2, 8, 7, 1), (3, 3, 1, 4), 0), ((3, 6, 6, 2), (5, 5, 2, 3), 2)])
def test_conv2d_and_its_gradients_equal_xlas_convolution(x_shape, k_shape, padding, dtype, tolerance, x64):
    rng = np.random.default_rng(0)
    x, kernel = rng.normal(size=x_shape).astype(dtype), rng.normal(size=k_shape).astype(dtype)
    y, vjp = jax.vjp(lambda x, k: conv2d(x, k, padding), x, kernel)
    expected, expected_vjp = jax.vjp(lambda x, k: _conv_reference(x, k, padding), x, kernel)
    dy = rng.normal(size=y.shape).astype(dtype)
    for ours, theirs in zip((y, *vjp(dy)), (expected, *expected_vjp(dy))):
        assert ours.dtype == theirs.dtype == np.dtype(dtype)
        np.testing.assert_allclose(ours, theirs, rtol=tolerance, atol=tolerance * np.max(np.abs(theirs)))


@pytest.mark.quick
def test_conv2d_rejects_a_padding_wider_than_the_kernel():
    with pytest.raises(ValueError, match=r"padding=3; expected an integer from 0 to 2"):
        conv2d(jnp.zeros((1, 8, 8, 1)), jnp.zeros((3, 3, 1, 2)), padding=3)
