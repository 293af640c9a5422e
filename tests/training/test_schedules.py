"""Learning-rate schedules with torch.optim.lr_scheduler's values, step by step (jaxtrain.training.schedules)."""

import json
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxtrain.training.optim import adam, adamw, sgd
from jaxtrain.training.schedules import Plateau, schedule, scheduled

pytestmark = pytest.mark.quick  # fast: the whole file is in the quick tier


def _torch_lrs(make_scheduler, lr, steps):
    """The lr of each of ``steps`` optimizer steps under a torch scheduler stepped once per optimizer step."""
    torch = pytest.importorskip("torch")
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    scheduler = make_scheduler(torch.optim.lr_scheduler, optimizer)
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return np.array(lrs)


def _ours(sched, steps):
    return np.array(jax.vmap(sched)(jnp.arange(steps)), np.float64)


def test_schedule_constant():
    np.testing.assert_array_equal(_ours(schedule("constant", 0.1), 5), np.full(5, 0.1, np.float32))


def test_schedule_step_matches_torch_steplr():
    expected = _torch_lrs(lambda s, o: s.StepLR(o, step_size=7, gamma=0.5), 0.1, 40)
    np.testing.assert_allclose(_ours(schedule("step", 0.1, step_size=7, gamma=0.5), 40), expected, rtol=1e-6)


def test_schedule_cosine_matches_torch_cosineannealinglr():
    expected = _torch_lrs(lambda s, o: s.CosineAnnealingLR(o, T_max=50, eta_min=1e-4), 1e-2, 51)
    ours = _ours(schedule("cosine", 1e-2, total_steps=50, eta_min=1e-4), 51)
    np.testing.assert_allclose(ours, expected, rtol=1e-5)


def test_schedule_warmup_then_cosine_matches_torch_sequentiallr():
    def torch_schedule(s, o):
        warmup = s.LinearLR(o, start_factor=0.1, total_iters=10)
        return s.SequentialLR(o, [warmup, s.CosineAnnealingLR(o, T_max=30)], milestones=[10])

    expected = _torch_lrs(torch_schedule, 1e-3, 40)
    ours = _ours(schedule("cosine", 1e-3, total_steps=40, warmup_steps=10, warmup_start_factor=0.1), 40)
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-12)


def test_schedule_warmup_then_step_matches_torch_sequentiallr():
    def torch_schedule(s, o):
        warmup = s.LinearLR(o, total_iters=4)  # torch's default start factor, 1/3
        return s.SequentialLR(o, [warmup, s.StepLR(o, step_size=5, gamma=0.7)], milestones=[4])

    expected = _torch_lrs(torch_schedule, 0.05, 30)
    ours = _ours(schedule("step", 0.05, step_size=5, gamma=0.7, warmup_steps=4), 30)
    np.testing.assert_allclose(ours, expected, rtol=1e-6)


def test_schedule_warmup_then_constant_matches_torch_linearlr():
    expected = _torch_lrs(lambda s, o: s.LinearLR(o, start_factor=0.25, total_iters=6), 0.1, 12)
    ours = _ours(schedule("constant", 0.1, warmup_steps=6, warmup_start_factor=0.25), 12)
    np.testing.assert_allclose(ours, expected, rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name": "linear"}, "schedule='linear'"),
        ({"name": "cosine"}, "total_steps=None"),
        ({"name": "cosine", "total_steps": 10, "warmup_steps": 10}, "warmup_steps=10"),
        ({"name": "step"}, "step_size=None"),
        ({"name": "multistep"}, "milestones=None"),
        ({"name": "constant", "warmup_steps": -1}, "warmup_steps=-1"),
        ({"name": "constant", "warmup_start_factor": 0.0}, "warmup_start_factor=0.0"),
    ],
)
def test_schedule_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        schedule(lr=0.1, **kwargs)


def test_a_schedule_drives_the_optimizer_step_by_step():
    lr = schedule("step", 1.0, step_size=2, gamma=0.5)
    tx = sgd(lr)
    params = {"w": jnp.zeros(())}
    state = tx.init(params)
    moves = []
    for _ in range(5):
        updates, state = tx.update({"w": jnp.ones(())}, state, params)
        moves.append(float(updates["w"]))
    assert moves == [-1.0, -1.0, -0.5, -0.5, -0.25]


def test_schedule_multistep_matches_torch_multisteplr():
    expected = _torch_lrs(lambda s, o: s.MultiStepLR(o, milestones=[3, 10, 10, 17], gamma=0.5), 0.2, 25)
    ours = _ours(schedule("multistep", 0.2, milestones=[3, 10, 10, 17], gamma=0.5), 25)
    np.testing.assert_allclose(ours, expected, rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name": "constant", "lr": float("nan")}, "lr=nan; expected a finite number > 0"),
        ({"name": "constant", "lr": float("inf")}, "lr=inf; expected a finite number > 0"),
        ({"name": "step", "step_size": 2, "gamma": float("nan")}, "gamma=nan; expected a finite number > 0"),
        ({"name": "step", "step_size": True}, "step_size=True; expected a positive integer (optimizer steps)"),
        ({"name": "multistep", "milestones": [3, -1]}, "milestones[1]=-1; expected an integer >= 0 (an optimizer step)"),
        ({"name": "cosine", "total_steps": 10, "eta_min": float("nan")}, "eta_min=nan; expected a number in [0, lr=0.1]"),
        ({"name": "cosine", "total_steps": 5, "warmup_steps": 8},
         "warmup_steps=8; expected fewer than total_steps=5 (cosine annealing needs optimizer steps after the warmup)"),
    ],
)
def test_schedule_names_one_bad_argument_per_message(kwargs, message):
    kwargs = {"lr": 0.1, **kwargs}
    with pytest.raises(ValueError) as info:
        schedule(**kwargs)
    assert str(info.value) == message


@pytest.mark.parametrize(
    "options",
    [
        {},  # torch's defaults: mode min, factor 0.1, patience 10, threshold 1e-4 relative
        {"factor": 0.5, "patience": 2, "cooldown": 2, "min_lr": 2e-5},
        {"patience": 0, "threshold": 0.05, "threshold_mode": "abs", "min_lr": 1e-6},
        {"mode": "max", "factor": 0.3, "patience": 1, "threshold": 0.01},
        {"factor": 0.5, "patience": 1, "eps": 1e-3},  # decays smaller than eps are not made
    ],
)
def test_plateau_gives_torchs_learning_rates_for_the_same_metrics(options):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    # falls, plateaus within the threshold, exact ties, and rises
    metrics = [*np.linspace(2, 1, 8), *(1 - 1e-5 * rng.random(15)), *([0.9] * 6), *rng.random(60), *np.linspace(0.5, 0.1, 11)]
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
    theirs = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, **options)
    ours = Plateau(0.01, **options)
    for metric in map(float, metrics):
        theirs.step(metric)
        assert ours.step(metric) == optimizer.param_groups[0]["lr"]
        assert (ours.best, ours.num_bad_epochs, ours.cooldown_counter) == (theirs.best, theirs.num_bad_epochs, theirs.cooldown_counter)
    assert ours.lr < 0.01  # it did decay


def test_plateau_continues_from_its_state_and_refuses_torchs_bad_arguments():
    metrics = [1.0, 0.5, 0.6, 0.6, 0.6, 0.4, 0.45, 0.45, 0.45, 0.45]
    whole = Plateau(1e-3, patience=1, cooldown=1)
    lrs = [whole.step(m) for m in metrics]
    first = Plateau(1e-3, patience=1, cooldown=1)
    [first.step(m) for m in metrics[:4]]
    second = Plateau(1e-3, patience=1, cooldown=1)
    second.load_state_dict(json.loads(json.dumps(first.state_dict())))
    assert [second.step(m) for m in metrics[4:]] == lrs[4:]
    fresh = Plateau(1e-3)
    fresh.load_state_dict({**fresh.state_dict(), "best": None})  # an infinite best, as strict JSON writes it
    assert fresh.best == float("inf")
    for bad, message in [({"factor": 1.0}, r"factor=1.0; expected a number in \[0, 1\)"), ({"mode": "low"}, "mode='low'"),
                         ({"patience": -1}, "patience=-1"), ({"threshold_mode": "pct"}, "threshold_mode='pct'")]:
        with pytest.raises(ValueError, match=message):
            Plateau(1e-3, **bad)


@pytest.mark.parametrize("factory, kwargs", [(sgd, dict(momentum=0.9)), (adam, dict(weight_decay=1e-2)), (adamw, dict())])
@pytest.mark.parametrize("lr", [
    schedule("cosine", 0.1, total_steps=12, warmup_steps=3, eta_min=0.01),
    schedule("step", 0.1, step_size=Fraction(5, 2), gamma=0.5),
    schedule("multistep", 0.1, milestones=[2, 4, 4], gamma=0.3),
    schedule("constant", 0.1),
])
def test_scheduled_steps_bit_for_bit_as_the_schedule_given_to_the_optimizer(factory, kwargs, lr):
    params = {"w": jnp.linspace(-1.0, 1.0, 5), "b": jnp.ones(2)}
    ours, theirs = scheduled(factory, lr, **kwargs), factory(lr, **kwargs)
    ours_state, theirs_state = ours.init(params), theirs.init(params)
    for step in range(14):
        grads = jax.tree.map(lambda p: jnp.sin(3 * p) + 0.1 * step, params)  # parts as the parameters do
        mine, ours_state = jax.jit(ours.update)(grads, ours_state, params)
        expected, theirs_state = jax.jit(theirs.update)(grads, theirs_state, params)
        for k in params:
            np.testing.assert_array_equal(mine[k], expected[k], err_msg=f"step {step}, {k}")
        params = optax.apply_updates(params, mine)


def test_a_schedules_numbers_are_data_of_the_compiled_update_not_constants():
    """Cosine schedules of other lengths and rates lower to the same program: a second run's step is cached."""
    params = {"w": jnp.zeros(3)}

    def program(lr):
        tx = scheduled(adam, lr)
        return jax.jit(tx.update).lower(params, tx.init(params), params).as_text()

    first = program(schedule("cosine", 1e-3, total_steps=100, warmup_steps=10))
    assert program(schedule("cosine", 3e-2, total_steps=7000, warmup_steps=20, eta_min=1e-4)) == first
    assert program(schedule("cosine", 1e-3, total_steps=100)) != first  # no warmup: another formula
    assert program(0.5) == program(schedule("constant", 2e-3))  # a number is a constant schedule
    with pytest.raises(ValueError, match=r"^lr=<function .*>; expected a number or a jaxtrain.training.schedules.schedule, "):
        scheduled(adam, optax.constant_schedule(0.1))
    with pytest.raises(ValueError, match=r"^lr=-1; expected a finite number > 0$"):
        scheduled(adam, -1)
