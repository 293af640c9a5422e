import inspect

import jax
import numpy as np
import optax
import pytest

from jaxtrain import optim


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
    optim.sgd(optim.schedule("cosine", 0.1, total_steps=10))
    optim.accumulate_gradients(optim.sgd(0.1), np.int64(2))


def test_traced_hyperparameters_pass_the_checks():
    # optax.inject_hyperparams builds the optimizer inside jit, with traced values nothing can check yet.
    tx = optax.inject_hyperparams(optim.adam, static_args=("weight_decay",))(lr=0.1, eps=1e-8)
    params = {"w": jax.numpy.ones(3)}
    updates, _ = jax.jit(tx.update)(params, jax.jit(tx.init)(params), params)
    np.testing.assert_allclose(updates["w"], -0.1, rtol=1e-5)
