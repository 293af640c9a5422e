"""Config → model, optimizer and schedule (jaxtrain.build), and a run from a configuration (jaxtrain.experiment)."""

import importlib

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxtrain import CNN, MLP, NNXCNN
from jaxtrain.config import Config
from jaxtrain.build import build_model, build_optimizer, build_schedule, epoch_learning_rates, initial_state, model_options
from jaxtrain.experiment import run
from jaxtrain.training.schedules import SCHEDULES
from jaxtrain.training.step import train_step


@pytest.mark.quick
def test_build_model_keeps_the_models_defaults_unless_told():
    assert build_model(Config(model="mlp")) == MLP()
    assert build_model(Config(model="cnn")) == CNN()
    assert (CNN().dropout, CNN().batch_norm) == (0.25, True)
    mlp = build_model(Config(model="mlp", dropout=0.2, batch_norm=True, dtype="bfloat16"))
    assert (mlp.dropout, mlp.batch_norm, mlp.dtype) == (0.2, True, jnp.bfloat16)
    assert build_model(Config(model="cnn", batch_norm=False, dropout=0.0)) == CNN(batch_norm=False, dropout=0.0)


@pytest.mark.quick
def test_build_optimizer_wraps_clipping_inside_accumulation():
    params = {"w": jnp.zeros(3)}
    tx = build_optimizer(Config(optimizer="sgd", lr=1.0, clip_norm=1.0, grad_accum=2))
    state = tx.init(params)
    assert isinstance(state, optax.MultiStepsState)
    moves = []
    for g in (0.0, 20.0):  # the mean gradient, (0 + 20) / 2 per coordinate, is clipped to norm 1
        updates, state = tx.update({"w": jnp.full(3, g)}, state, params)
        moves.append(np.asarray(updates["w"]))
    np.testing.assert_array_equal(moves[0], 0.0)
    np.testing.assert_allclose(np.linalg.norm(moves[1]), 1.0, rtol=1e-6)


@pytest.mark.quick
def test_schedules_need_the_epoch_length():
    with pytest.raises(ValueError, match="batches_per_epoch"):
        build_optimizer(Config(schedule="cosine"))


@pytest.mark.quick
@pytest.mark.parametrize("grad_accum", [1, 2, 3, 5, 7])
def test_step_decay_falls_at_epoch_boundaries_with_and_without_accumulation(grad_accum):
    batches = 10
    config = Config(schedule="step", step_size=2, gamma=0.5, epochs=6, lr=0.1, grad_accum=grad_accum)
    np.testing.assert_allclose(epoch_learning_rates(config, batches), [0.1, 0.1, 0.05, 0.05, 0.025, 0.025], rtol=1e-6)
    # Step by step: optimizer step j completes on batch (j + 1) * k - 1, in epoch ((j + 1) * k - 1) // batches.
    lr = build_schedule(config, batches)
    for j in range(6 * batches // grad_accum):
        epoch = ((j + 1) * grad_accum - 1) // batches
        assert float(lr(j)) == pytest.approx(0.1 * 0.5 ** (epoch // 2), rel=1e-6)


@pytest.mark.quick
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_the_epochs_learning_rates_are_one_program(schedule):
    """Each epoch's rate comes from one compiled program, not one per operation of the schedule, which is
    what calling the schedule eagerly step by step compiled (7 programs for the cosine); 7 epochs, a length
    no other test uses, keep the program out of this process's caches."""
    from jaxtrain.parallel.compiler import count_compilations

    config = Config(schedule=schedule, epochs=7, step_size=2, milestones=(2, 5), val_fraction=0.1,
                    warmup_steps=0 if schedule == "plateau" else 3)
    lr = build_schedule(config, batches_per_epoch=11)
    with count_compilations() as compiled:
        rates = epoch_learning_rates(config, batches_per_epoch=11)
    assert compiled.programs == 1, dict(compiled.names)
    np.testing.assert_allclose(rates, [lr(11 * e) for e in range(7)], rtol=1e-5)  # fused, as in the step: within a few ulp of eager


@pytest.mark.quick
@pytest.mark.parametrize("schedule", ["constant", "step", "multistep", "cosine"])
def test_runs_of_other_lengths_and_rates_compile_the_same_training_step(schedule):
    """The schedule's numbers are data of the step (schedules.scheduled), not constants in its program, so the
    compilation cache serves a run with other epochs, another rate or another step size."""
    batch = (np.zeros((4, 28, 28, 1), np.float32), np.zeros(4, np.int32))

    def program(**changes):
        config = Config(model="mlp", schedule=schedule, warmup_steps=5, **{"milestones": (1,), **changes})
        return train_step.lower(initial_state(config, batch[0][:1], batches_per_epoch=50), batch).as_text()

    assert program(epochs=2) == program(epochs=10, lr=0.02, step_size=3, milestones=(4,), gamma=0.5)


def test_epoch_learning_rates_equal_torchs_per_epoch_scheduler():
    torch = pytest.importorskip("torch")
    epochs = 5
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1e-3)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    expected = []
    for _ in range(epochs):
        expected.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    # Stepped per optimizer step, the cosine passes through torch's per-epoch values at each epoch's start.
    ours = epoch_learning_rates(Config(schedule="cosine", epochs=epochs), batches_per_epoch=42)
    np.testing.assert_allclose(ours, expected, rtol=1e-5)


def test_the_report_carries_each_epochs_learning_rate():
    config = Config(dataset="digits", epochs=2, schedule="step", gamma=0.5, lr=2e-3, grad_accum=2, clip_norm=5.0)
    report = run(config, log=None)
    assert [h["lr"] for h in report["history"]] == pytest.approx([2e-3, 1e-3])
    assert report["config"]["grad_accum"] == 2 and report["model_options"]["dtype"] == "float32"
    assert report["history"][-1]["train_loss"] < report["history"][0]["train_loss"]


def test_run_on_digits_end_to_end():
    report = run(Config(dataset="digits", epochs=10), log=None)
    assert report["test_examples"] == 449
    assert 0.95 <= report["test_accuracy"] <= 1 and all(h["test_accuracy"] <= 1 for h in report["history"])
    assert len(report["history"]) == 10
    assert report["samples_per_second"] > 0 and report["compile_seconds"] > 0


@pytest.mark.slow
def test_the_primers_configuration_on_mnist(mnist_dir):
    report = run(Config(dataset="mnist", data_dir=str(mnist_dir), epochs=10, batch_size=32, lr=1e-3), log=None)
    assert report["test_examples"] == 10000
    assert 0.965 <= report["test_accuracy"] <= 1


@pytest.mark.quick
def test_the_measured_defaults_are_what_config_resolves(monkeypatch):
    from jaxtrain.data import transfer
    from jaxtrain.experiment import feeding, loaders

    assert (Config(model="mlp").schedule, Config(model="cnn").schedule) == ("constant", "cosine")
    assert Config(model="cnn", schedule="step").schedule == "step"  # an explicit choice stays
    train = loaders(Config())["train"]
    assert feeding(Config(model="mlp"), train).settings() == {"steps_per_call": len(train), "data_on_device": True}
    assert feeding(Config(model="cnn"), train).settings() == {"steps_per_call": len(train), "data_on_device": True}
    assert feeding(Config(steps_per_call=4, data_on_device=False), train).settings() == {"steps_per_call": 4, "data_on_device": False}
    # On the device when the training set takes at most a quarter of its memory.
    memory = 4 * sum(a.nbytes for a in train.arrays())
    monkeypatch.setattr(transfer.os, "sysconf", lambda name: memory if name == "SC_PHYS_PAGES" else 1)
    assert feeding(Config(), train).data_on_device
    monkeypatch.setattr(transfer.os, "sysconf", lambda name: memory - 1 if name == "SC_PHYS_PAGES" else 1)
    assert not feeding(Config(), train).data_on_device


def test_fit_uses_no_prefetch_thread_on_the_cpu(monkeypatch):
    import jax

    loop = importlib.import_module("jaxtrain.training.fit")  # the module: jaxtrain.training.fit is the function

    assert jax.default_backend() == "cpu"
    monkeypatch.setattr(loop, "prefetch_to_device", lambda *a, **k: pytest.fail("a prefetch thread on the CPU"))
    run(Config(epochs=1, steps_per_call=1, data_on_device=False), log=None)


@pytest.mark.quick
def test_build_model_takes_the_datas_classes_and_an_nnx_model_its_shape():
    assert build_model(Config(model="cnn"), num_classes=3) == CNN(num_classes=3)
    model = build_model(Config(model="nnx-cnn", dropout=0.0), num_classes=3, input_shape=(32, 32, 3))
    assert isinstance(model, NNXCNN) and model.Dense_1.out_features == 3 and model.Conv_0.in_features == 3
    assert model_options(Config(model="nnx-cnn")) == {"dropout": 0.25, "batch_norm": True, "dtype": "float32"}
    with pytest.raises(ValueError, match=r"input_shape=None; expected the shape of one input"):
        build_model(Config(model="nnx-mlp"))


def test_an_nnx_model_runs_on_digits_end_to_end():
    report = run(Config(dataset="digits", model="nnx-mlp", epochs=3), log=None)
    assert 0.9 <= report["test_accuracy"] <= 1 and report["num_classes"] == 10 and report["class_names"] is None
    assert report["model_options"] == {"dropout": 0.0, "batch_norm": False, "dtype": "float32"}
