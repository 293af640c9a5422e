import copy
import warnings

import flax.linen as fnn
import jax
import numpy as np
import pytest

from jaxtrain import CNN, MLP, create_train_state, sgd
from jaxtrain.interop import from_torch, to_torch

pytestmark = pytest.mark.quick  # fast: the whole file is in the quick tier

torch = pytest.importorskip("torch")
nn = torch.nn


def _cnn(image_size=28, seed=0):
    """jaxtrain.nn.linen.CNN(channels=(32, 64), hidden=()) in torch, with dropout off."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * (image_size // 4) ** 2, 10),
    )


def _mlp(in_features=784, batch_norm=False, seed=0):
    torch.manual_seed(seed)
    layers = [nn.Flatten(), nn.Linear(in_features, 256)] + ([nn.BatchNorm1d(256)] if batch_norm else [])
    return nn.Sequential(*layers, nn.ReLU(), nn.Linear(256, 10))


def _train_a_little(net, images):
    """Moves BatchNorm's running statistics off their initial values."""
    net.train()
    with torch.no_grad():
        net(images)
    return net


def _images(n=8, size=28, seed=0):
    return np.random.default_rng(seed).random((n, size, size, 1), np.float32)


def _nchw(images):
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


def _assert_same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(sa[key], sb[key]), key


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("make", [_mlp, _cnn, lambda **kw: _mlp(batch_norm=True, **kw)], ids=["mlp", "cnn", "mlp-bn"])
def test_round_trips_are_exact(make, dtype):
    net = _train_a_little(make(seed=0).to(dtype), _nchw(_images()).to(dtype))
    variables = from_torch(net)
    other = make(seed=1).to(dtype)
    to_torch(variables, other)
    _assert_same_state(net, other)
    again = from_torch(other)
    assert jax.tree.structure(again) == jax.tree.structure(variables)
    for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(variables)):
        assert a.dtype == b.dtype == np.dtype(str(dtype).removeprefix("torch."))
        np.testing.assert_array_equal(a, b)


def test_layouts_follow_torch_semantics():
    net = _cnn()
    variables = from_torch(net)
    params = variables["params"]
    w = net[0].weight.detach().numpy()  # OIHW
    assert params["Conv_0"]["kernel"].shape == (3, 3, 1, 32)  # HWIO
    assert params["Conv_0"]["kernel"][2, 1, 0, 5] == w[5, 0, 2, 1]
    assert "bias" not in params["Conv_0"]
    assert params["BatchNorm_1"]["scale"].shape == (64,)
    assert set(variables["batch_stats"]["BatchNorm_0"]) == {"mean", "var"}
    linear = _mlp()[1].weight.detach().numpy()  # (out, in)
    np.testing.assert_array_equal(from_torch(_mlp())["params"]["Dense_0"]["kernel"], linear.T)
    assert "batch_stats" not in from_torch(_mlp())


@pytest.mark.parametrize("train", [False, True])
def test_the_flax_cnn_computes_what_the_torch_cnn_computes(train):
    images = _images(16)
    net = _train_a_little(_cnn(), _nchw(_images(16, seed=1)))
    net.train(train)
    variables = from_torch(net)
    with torch.no_grad():
        expected = net(_nchw(images)).numpy()
    logits, updates = CNN(channels=(32, 64), hidden=(), dropout=0.0).apply(variables, images, train=train, mutable=["batch_stats"])
    # A wrong flatten order (NCHW against NHWC) would scramble the head's inputs entirely.
    np.testing.assert_allclose(np.asarray(logits), expected, rtol=1e-4, atol=1e-5)
    if train:  # the running statistics moved as torch's did: momentum 0.1, unbiased variance
        stats = from_torch(net)["batch_stats"]
        for name in stats:
            for key in ("mean", "var"):
                np.testing.assert_allclose(updates["batch_stats"][name][key], stats[name][key], rtol=1e-5, atol=1e-7)


def test_the_flax_mlp_computes_what_the_torch_mlp_computes():
    images = _images(16)
    net = _mlp().eval()
    with torch.no_grad():
        expected = net(_nchw(images)).numpy()
    np.testing.assert_allclose(np.asarray(MLP().apply(from_torch(net), images)), expected, rtol=1e-4, atol=1e-5)


def test_flatten_shape_is_inferred_for_square_maps_and_can_be_given():
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 6 * 3, 2))
    with pytest.raises(ValueError, match="flatten_shape"):
        from_torch(net)
    variables = from_torch(net, flatten_shape=(4, 6, 3))
    x = np.random.default_rng(0).random((2, 6, 3, 1), np.float32)
    with torch.no_grad():
        expected = net(_nchw(x)).numpy()

    class Small(fnn.Module):
        @fnn.compact
        def __call__(self, x):
            x = fnn.Conv(4, (3, 3), padding=1)(x)
            return fnn.Dense(2)(x.reshape(x.shape[0], -1))

    np.testing.assert_allclose(np.asarray(Small().apply(variables, x)), expected, rtol=1e-5, atol=1e-6)
    fresh = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Flatten(), nn.Linear(72, 2))
    to_torch(variables, fresh, flatten_shape=(4, 6, 3))
    _assert_same_state(net, fresh)


def test_unsupported_layers_and_mismatched_variables_are_refused():
    with pytest.raises(ValueError, match="Embedding"):
        from_torch(nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 2)))
    variables = from_torch(_mlp(in_features=64))
    target = _mlp(in_features=784)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(ValueError, match=r"\['Dense_0'\]\['kernel'\]: shape \(64, 256\); expected \(784, 256\)"):
        to_torch(variables, target)
    assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items())  # nothing written
    with pytest.raises(ValueError, match=r"\['Conv_0'\]\['kernel'\] is missing"):
        to_torch(variables, _cnn())


def test_to_torch_takes_a_train_states_jax_arrays():
    net = _mlp(in_features=64)
    state = create_train_state(MLP(), sgd(0.1), np.zeros((1, 8, 8, 1), np.float32), variables=from_torch(net))
    other = _mlp(in_features=64, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. torch's warning about read-only numpy arrays
        to_torch(state.variables, other)
    _assert_same_state(net, other)


def test_a_state_dict_gets_one_line_saying_to_pass_the_module():
    net = _mlp(in_features=64)
    with pytest.raises(ValueError) as info:
        from_torch(net.state_dict())
    assert str(info.value) == (
        "module (a mapping of 4 entries, a state_dict?): not a torch.nn.Module, and a state_dict cannot say which "
        "kind each layer is; expected the module: model.load_state_dict(state_dict), then from_torch(model)"
    )
    with pytest.raises(ValueError, match=r"then to_torch\(variables, model\)$"):
        to_torch(from_torch(net), net.state_dict())
    with pytest.raises(ValueError) as info:
        from_torch(np.zeros(3))
    assert str(info.value) == "module (ndarray): not a torch.nn.Module; expected the model: from_torch(model)"


def test_a_mismatch_names_the_flax_entry_the_torch_layer_and_both_shapes():
    with pytest.raises(ValueError) as info:
        to_torch(from_torch(_mlp(in_features=64)), _mlp(in_features=784))
    assert str(info.value) == (
        "variables['params']['Dense_0']['kernel']: shape (64, 256); expected (784, 256) for torch layer '1' (Linear)"
    )
    with pytest.raises(ValueError) as info:
        from_torch(nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 2)))
    assert str(info.value) == (
        "torch layer '0' (Embedding): holds ['weight']; expected weights only in BatchNorm1d, BatchNorm2d, Conv2d, Linear layers"
    )


@pytest.mark.parametrize("train", [False, True])
def test_the_default_cnn_computes_what_its_torch_mirror_computes(train):
    from jaxtrain import compare

    torch.manual_seed(0)
    net = _train_a_little(compare.torch_model("cnn", 28, dropout=0.0), _nchw(_images(16, seed=1)))
    net.train(train)
    variables = from_torch(net)
    images = _images(16)
    with torch.no_grad():
        expected = net(_nchw(images)).numpy()
    logits = CNN(dropout=0.0).apply(variables, images, train=train, mutable=["batch_stats"])[0]
    np.testing.assert_allclose(np.asarray(logits), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("train", [False, True])
def test_an_nnx_cnn_on_rgb_images_computes_what_the_torch_cnn_computes(train):
    from flax import nnx

    from jaxtrain import NNXCNN
    from jaxtrain.compare import flatten_shape, torch_model

    rng = np.random.default_rng(0)
    images = rng.random((16, 32, 32, 3), np.float32)  # CIFAR-like
    torch.manual_seed(0)
    net = _train_a_little(torch_model("nnx-cnn", 32, dropout=0.0, channels=3, num_classes=5), _nchw(rng.random((16, 32, 32, 3), np.float32)))
    net.train(train)
    model = NNXCNN((32, 32, 3), num_classes=5, dropout=0.0, rngs=nnx.Rngs(0))
    state = create_train_state(model, sgd(0.1), images[:1], variables=from_torch(net))
    start = copy.deepcopy(net)  # what the state holds; torch's training forward moves the statistics in place
    with torch.no_grad():
        expected = net(_nchw(images)).numpy()
    logits, updates = state.model.apply(state.variables, images, train=train, mutable=["batch_stats"])
    np.testing.assert_allclose(np.asarray(logits), expected, rtol=1e-4, atol=1e-5)
    if train:
        stats = from_torch(net)["batch_stats"]
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), updates["batch_stats"], stats)
    # And back: an NNX module (here, the trained values put into one) writes into the torch module.
    trained = state.model.module(jax.device_get(state.variables))
    other = torch_model("cnn", (32, 32), dropout=0.0, channels=3, num_classes=5)
    to_torch(trained, other, flatten_shape("nnx-cnn", (32, 32, 3)))
    _assert_same_state(start, other)
