"""torch-semantics optimizers, gradient clipping and accumulation (jaxtrain.training.optim)."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxtrain import MLP, create_train_state, train_step
from jaxtrain.training import optim
from jaxtrain.training.optim import accumulate_gradients, adam, clip_grad_norm, sgd
from jaxtrain.training.schedules import schedule

pytestmark = pytest.mark.quick  # fast: the whole file is in the quick tier


CONFIGS = {
    "sgd": ("sgd", dict(lr=0.1)),
    "sgd-momentum": ("sgd", dict(lr=0.1, momentum=0.9)),
    "sgd-dampening": ("sgd", dict(lr=0.1, momentum=0.9, dampening=0.3)),
    "sgd-nesterov": ("sgd", dict(lr=0.1, momentum=0.9, nesterov=True)),
    "sgd-weight-decay": ("sgd", dict(lr=0.1, momentum=0.9, weight_decay=1e-2)),
    "adam": ("adam", dict()),
    "adam-weight-decay": ("adam", dict(lr=1e-2, weight_decay=1e-2)),
    "adam-betas-eps": ("adam", dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6)),
    "adamw": ("adamw", dict(lr=1e-2)),
    "adamw-weight-decay": ("adamw", dict(lr=1e-2, weight_decay=0.1, betas=(0.85, 0.95))),
}
TORCH_NAMES = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}


def _grad(params: dict, step: int) -> dict:
    """A gradient that depends on the parameters (so the trajectories can part) and on the step."""
    rng = np.random.default_rng(step)
    return {k: np.sin(3 * params[k]) + 0.1 * rng.standard_normal(params[k].shape) for k in sorted(params)}


@pytest.mark.parametrize("name", CONFIGS)
def test_the_first_20_steps_equal_torch_in_float64(name, torch, x64):
    kind, kwargs = CONFIGS[name]
    rng = np.random.default_rng(0)
    start = {"w": rng.standard_normal((5, 3)), "b": rng.standard_normal(3) + 1e-3 * np.arange(3)}
    tensors = {k: torch.tensor(v, requires_grad=True) for k, v in start.items()}
    torch_opt = getattr(torch.optim, TORCH_NAMES[kind])(list(tensors.values()), **kwargs)
    tx = getattr(optim, kind)(**kwargs)
    params = jax.tree.map(jax.numpy.asarray, start)
    state = tx.init(params)
    update = jax.jit(tx.update)
    for step in range(20):
        for k, g in _grad({k: t.detach().numpy() for k, t in tensors.items()}, step).items():
            tensors[k].grad = torch.from_numpy(g)
        torch_opt.step()
        updates, state = update(jax.tree.map(jax.numpy.asarray, _grad(jax.device_get(params), step)), state, params)
        params = optax.apply_updates(params, updates)
        for k, t in tensors.items():
            assert params[k].dtype == np.float64
            np.testing.assert_allclose(params[k], t.detach().numpy(), rtol=1e-13, atol=1e-15, err_msg=f"{k} at step {step + 1}")
    # The parameters moved: the comparison was not between two idle optimizers.
    assert np.max(np.abs(np.asarray(params["w"]) - start["w"])) > 1e-3


@pytest.mark.parametrize("kind", ["sgd", "adam", "adamw"])
def test_the_defaults_are_torchs(kind, torch):
    ours = inspect.signature(getattr(optim, kind)).parameters
    theirs = inspect.signature(getattr(torch.optim, TORCH_NAMES[kind])).parameters
    for name, parameter in ours.items():
        if parameter.default is not inspect.Parameter.empty:
            assert parameter.default == theirs[name].default, name
    if kind != "sgd":  # sgd's lr is required here, as it was in torch before 2.2
        assert ours["lr"].default == theirs["lr"].default


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: optim.sgd(0.1, nesterov=True), "Nesterov needs momentum > 0"),
        (lambda: optim.sgd(0.1, momentum=-1), "momentum=-1"),
        (lambda: optim.adam(betas=(0.9, 1.0)), "betas"),
        (lambda: optim.adamw(weight_decay=-1), "weight_decay=-1"),
    ],
)
def test_invalid_hyperparameters_are_refused_like_torch_does(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("name", ["adam", "adamw-weight-decay", "sgd-nesterov"])
def test_float32_steps_stay_within_float32_rounding_of_torch(name, torch):
    # Adam's bias corrections in particular: torch computes them in double precision, and a float32
    # 1 - 0.999 ** t would scale the first updates by about 1 + 1e-5.
    kind, kwargs = CONFIGS[name]
    rng = np.random.default_rng(1)
    start = (1e-3 * rng.standard_normal((64, 32))).astype(np.float32)  # small weights: fine rounding
    tensor = torch.tensor(start, requires_grad=True)
    torch_opt = getattr(torch.optim, TORCH_NAMES[kind])([tensor], **kwargs)
    tx = getattr(optim, kind)(**kwargs)
    params = jax.numpy.asarray(start)
    state = tx.init(params)
    update = jax.jit(tx.update)
    for step in range(20):
        noise = np.random.default_rng(step).standard_normal(start.shape)
        grad = (np.sin(3 + tensor.detach().numpy()) + 0.1 * noise).astype(np.float32)
        tensor.grad = torch.from_numpy(grad)
        torch_opt.step()
        updates, state = update(jax.numpy.asarray(grad), state, params)
        params = optax.apply_updates(params, updates)
    moved = np.max(np.abs(tensor.detach().numpy() - start))
    assert np.max(np.abs(np.asarray(params) - tensor.detach().numpy())) <= 1e-6 * moved


def test_clip_grad_norm_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    grads = {"a": rng.normal(size=(3, 4)).astype(np.float32), "b": rng.normal(size=(5,)).astype(np.float32)}
    for max_norm in (0.5, 100.0):  # clipped, and let through unchanged
        tensors = {k: torch.zeros(v.shape, requires_grad=True) for k, v in grads.items()}
        for k, t in tensors.items():
            t.grad = torch.tensor(grads[k])
        torch.nn.utils.clip_grad_norm_(list(tensors.values()), max_norm)
        tx = clip_grad_norm(optax.identity(), max_norm)
        clipped, _ = tx.update(jax.tree.map(jnp.asarray, grads), tx.init(grads))
        for k in grads:
            np.testing.assert_allclose(clipped[k], tensors[k].grad.numpy(), rtol=1e-5)
    total = np.sqrt(sum(np.sum(g**2) for g in clipped.values()))
    assert total == pytest.approx(np.sqrt(sum(np.sum(g**2) for g in grads.values())), rel=1e-6)


def _batches(k, b, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((k * b, 8, 8, 1), np.float32), rng.integers(0, 10, k * b).astype(np.int32)


@pytest.mark.parametrize("make_tx", [lambda: sgd(0.5, momentum=0.9), lambda: clip_grad_norm(sgd(0.5), 0.1)])
def test_accumulating_k_batches_equals_one_step_on_their_union(make_tx):
    k, b, updates = 4, 8, 3
    model = MLP(hidden=(16,))
    images, labels = _batches(k * updates, b)
    sample = images[:1]
    big = create_train_state(model, make_tx(), sample)
    small = create_train_state(model, accumulate_gradients(make_tx(), k), sample)
    for u in range(updates):
        batch = slice(u * k * b, (u + 1) * k * b)
        big, _ = train_step(big, (images[batch], labels[batch]))
        before = jax.device_get(small.params)  # a host copy: the step donates the state's buffers
        for i in range(k):
            micro = slice(u * k * b + i * b, u * k * b + (i + 1) * b)
            small, _ = train_step(small, (images[micro], labels[micro]))
            if i < k - 1:  # no optimizer.step() yet: the parameters stay put
                jax.tree.map(np.testing.assert_array_equal, small.params, before)
            before = jax.device_get(small.params)
        jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=0, atol=1e-6), small.params, big.params)
    assert int(small.step) == k * updates and int(big.step) == updates  # steps count batches


def test_accumulation_counts_schedule_steps_in_updates_not_batches():
    k = 3
    tx = accumulate_gradients(sgd(schedule("step", 1.0, step_size=1, gamma=0.5)), k)
    params = {"w": jnp.zeros(())}
    state = tx.init(params)
    moves = []
    for _ in range(3 * k):
        updates, state = tx.update({"w": jnp.ones(())}, state, params)
        moves.append(float(updates["w"]))
    assert moves == [0.0, 0.0, -1.0, 0.0, 0.0, -0.5, 0.0, 0.0, -0.25]


def test_accumulate_gradients_with_k_1_is_the_optimizer_itself():
    tx = adam(1e-3)
    assert accumulate_gradients(tx, 1) is tx
    with pytest.raises(ValueError, match="every_k=0"):
        accumulate_gradients(tx, 0)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: optim.sgd(lr=-1), "lr=-1; expected a finite number >= 0 or an optax schedule"),
        (lambda: optim.sgd(lr=float("inf")), "lr=inf; expected a finite number >= 0 or an optax schedule"),
        (lambda: optim.adam(lr=float("nan")), "lr=nan; expected a finite number >= 0 or an optax schedule"),
        (lambda: optim.adam(lr="0.1"), "lr='0.1'; expected a finite number >= 0 or an optax schedule"),
        (lambda: optim.sgd(None), "lr=None; expected a finite number >= 0 or an optax schedule"),
        (lambda: optim.sgd(0.1, momentum=float("nan")), "momentum=nan; expected a finite number >= 0"),
        (lambda: optim.sgd(0.1, dampening=-0.5), "dampening=-0.5; expected a finite number >= 0"),
        (lambda: optim.sgd(0.1, weight_decay=-1), "weight_decay=-1; expected a finite number >= 0"),
        (lambda: optim.sgd(0.1, momentum=0.9, nesterov="yes"), "nesterov='yes'; expected True or False"),
        (lambda: optim.sgd(0.1, momentum=0.9, dampening=0.1, nesterov=True),
         "dampening=0.1; expected 0 with nesterov=True (Nesterov needs dampening 0)"),
        (lambda: optim.adam(betas=(1.0, 0.999)), "betas[0]=1.0; expected a number in [0, 1)"),
        (lambda: optim.adamw(betas=(0.9, -0.1)), "betas[1]=-0.1; expected a number in [0, 1)"),
        (lambda: optim.adam(betas=0.9), "betas=0.9; expected a pair (beta1, beta2) of numbers in [0, 1)"),
        (lambda: optim.adam(eps=-1e-8), "eps=-1e-08; expected a finite number >= 0"),
        (lambda: optim.adam(weight_decay=-1), "weight_decay=-1; expected a finite number >= 0"),
        (lambda: optim.adamw(1e-3, weight_decay=float("inf")), "weight_decay=inf; expected a finite number >= 0"),
        (lambda: optim.clip_grad_norm(optim.sgd(0.1), float("nan")), "max_norm=nan; expected a finite number > 0"),
        (lambda: optim.clip_grad_norm("sgd", 1.0), "tx='sgd'; expected an optax.GradientTransformation, e.g. adam(1e-3)"),
        (lambda: optim.accumulate_gradients(optim.sgd(0.1), True), "every_k=True; expected a positive integer"),
    ],
)
def test_each_bad_argument_gets_one_line_naming_it_and_its_value(call, message):
    with pytest.raises(ValueError) as info:
        call()
    assert str(info.value) == message


def test_what_torch_accepts_is_accepted(torch):
    # lr=0, eps=0, momentum and dampening above 1, a schedule as lr, numpy scalars: torch takes them all.
    param = [torch.zeros(2, requires_grad=True)]
    torch.optim.SGD(param, lr=0.0, momentum=1.5, dampening=2.0)
    torch.optim.Adam(param, lr=0.0, eps=0.0)
    optim.sgd(0.0, momentum=1.5, dampening=2.0)
    optim.adam(0.0, eps=0.0)
    optim.adamw(np.float32(1e-3), betas=np.array([0.9, 0.999]))
    optim.sgd(schedule("cosine", 0.1, total_steps=10))
    optim.accumulate_gradients(optim.sgd(0.1), np.int64(2))


def test_traced_hyperparameters_pass_the_checks():
    # optax.inject_hyperparams builds the optimizer inside jit, with traced values nothing can check yet.
    tx = optax.inject_hyperparams(optim.adam, static_args=("weight_decay",))(lr=0.1, eps=1e-8)
    params = {"w": jax.numpy.ones(3)}
    updates, _ = jax.jit(tx.update)(params, jax.jit(tx.init)(params), params)
    np.testing.assert_allclose(updates["w"], -0.1, rtol=1e-5)


@pytest.mark.parametrize("kind, kwargs", [("adam", dict(lr=1e-2, weight_decay=0.1)), ("sgd", dict(lr=0.1, momentum=0.9, weight_decay=0.1))])
def test_clipping_comes_before_weight_decay_and_momentum_as_in_torch(kind, kwargs, torch, x64):
    # The gradient norm is far above max_norm: clipping after the optimizer, or after the decay term, differs.
    rng = np.random.default_rng(1)
    start = {"w": 3 * rng.standard_normal((5, 3)), "b": 3 * rng.standard_normal(3)}
    tensors = {k: torch.tensor(v, requires_grad=True) for k, v in start.items()}
    torch_opt = getattr(torch.optim, TORCH_NAMES[kind])(list(tensors.values()), **kwargs)
    tx = clip_grad_norm(getattr(optim, kind)(**kwargs), max_norm=0.5)
    params = jax.tree.map(jnp.asarray, start)
    state = tx.init(params)
    for step in range(10):
        grads = {k: 10 * g for k, g in _grad(jax.device_get(params), step).items()}
        for k, t in tensors.items():
            t.grad = torch.from_numpy(grads[k].copy())
        torch.nn.utils.clip_grad_norm_(list(tensors.values()), 0.5)  # between backward() and step()
        torch_opt.step()
        updates, state = tx.update(jax.tree.map(jnp.asarray, grads), state, params)
        params = optax.apply_updates(params, updates)
        for k, t in tensors.items():
            np.testing.assert_allclose(params[k], t.detach().numpy(), rtol=1e-12, atol=1e-14, err_msg=f"{k} at step {step + 1}")


def test_accumulation_with_adam_equals_torchs_skipped_zero_grad(torch, x64):
    # float64, to 1e-12: optax's own accumulator would be float32 and miss by 1e-7 from the first update.
    k, b, updates = 3, 8, 4
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10)).double()
    from jaxtrain import from_torch

    start = from_torch(net)
    state = create_train_state(MLP(hidden=(16,)), accumulate_gradients(adam(1e-2, weight_decay=1e-2), k),
                               np.zeros((1, 8, 8, 1)), variables=jax.tree.map(jnp.asarray, start))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2, weight_decay=1e-2)
    criterion = torch.nn.CrossEntropyLoss()
    images, labels = _batches(k * updates, b)
    images = images.astype(np.float64)
    for i in range(k * updates):
        x, y = images[i * b : (i + 1) * b], labels[i * b : (i + 1) * b]
        (criterion(net(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())), torch.from_numpy(y.astype(np.int64))) / k).backward()
        if (i + 1) % k == 0:  # the primer's loop with zero_grad() only every k batches
            opt.step()
            opt.zero_grad()
        state, _ = train_step(state, (x, y))
    theirs = from_torch(net)["params"]
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14), jax.device_get(state.params), theirs)
    assert not np.allclose(theirs["Dense_0"]["kernel"], start["params"]["Dense_0"]["kernel"])  # it trained
