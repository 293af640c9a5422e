"""fit's callbacks: a user's hooks stop a run or change its learning rate; early stopping, the plateau schedule
and a target accuracy, from Python and from the command line (jaxtrain.training.callbacks)."""

import json

import jax
import numpy as np
import pytest

from jaxtrain import MLP, ArrayDataset, DataLoader, Run, adam, create_train_state, experiment, fit, load_run
from jaxtrain.cli import commands as cli
from jaxtrain.training.callbacks import Callback, EarlyStopping, LambdaCallback, ReduceLROnPlateau, TargetAccuracy
from jaxtrain.config import Config
from jaxtrain.training.optim import adjustable_lr, learning_rate


def _data(n=120, seed=0, size=8):
    rng = np.random.default_rng(seed)
    return rng.random((n, size, size, 1), np.float32), rng.integers(0, 10, n).astype(np.int32)


def _loaders(n=120):
    images, labels = _data(n)
    val_images, val_labels = _data(40, seed=1)
    train = DataLoader(ArrayDataset(images, labels), batch_size=16, shuffle=True)
    return train, DataLoader(ArrayDataset(val_images, val_labels), batch_size=40), images


def _host(tree):
    """A tree's arrays on the host, typed keys as their data (bitwise comparable)."""
    raw = lambda a: jax.random.key_data(a) if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key) else a  # noqa: E731
    return jax.device_get(jax.tree.map(raw, tree))


def _equal(a, b) -> bool:
    a, b = jax.tree.leaves(_host(a)), jax.tree.leaves(_host(b))
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


@pytest.mark.quick
def test_a_users_callback_stops_the_run():
    train, val, images = _loaders()

    class StopAtTwo(Callback):
        def on_epoch_end(self, context):
            if context.epoch == 2:
                context.stop("two is enough")

    state = create_train_state(MLP(hidden=(8,)), adam(1e-2), images[:1])
    lines = []
    state, history = fit(state, train, 10, log=lines.append, callbacks=[StopAtTwo()])
    assert [h["epoch"] for h in history] == [1, 2] and int(state.step) == 2 * len(train)
    assert lines[-1] == "Stopped after epoch 2: two is enough"


def test_a_users_callback_lowers_the_lr_without_recompiling(count_compiles):
    train, val, images = _loaders()
    state = create_train_state(MLP(hidden=(8,)), adjustable_lr(adam, 1e-2), images[:1])
    state, _ = fit(state, train, 1, log=None)  # compiled here, and the lr's host read
    frozen = {}

    def lower(context):
        if context.epoch == 2:
            context.lr = 0.0  # from epoch 3 on, Adam moves nothing
            frozen["params"] = _host(context.state.params)  # a host copy: a device copy would compile

    with count_compiles() as compiles:
        state, history = fit(state, train, 4, log=None, callbacks=[LambdaCallback(on_epoch_end=lower)])
    assert compiles() == 0
    assert [h["lr"] for h in history] == pytest.approx([1e-2, 1e-2, 0.0, 0.0])
    assert learning_rate(state.opt_state) == 0.0
    assert _equal(state.params, frozen["params"])


def test_early_stopping_returns_the_best_epochs_state_bitwise():
    train, val, images = _loaders()
    copies = []
    keep = LambdaCallback(on_epoch_end=lambda c: copies.append(jax.tree.map(lambda a: a.copy(), c.state)))
    early = EarlyStopping("val_loss", patience=2)
    state = create_train_state(MLP(hidden=(32,)), adam(5e-2), images[:1])  # a high rate: val loss soon rises
    state, history = fit(state, train, 40, {"val": val}, log=None, callbacks=[keep, early])
    assert len(history) < 40 and early.stopped and f"epoch {early.best_epoch}" in early.stopped
    losses = [h["val_loss"] for h in history]
    assert early.best_epoch == 1 + int(np.argmin(losses)) < len(history)
    assert _equal(state, copies[early.best_epoch - 1]) and not _equal(state, copies[-1])


@pytest.mark.quick
def test_early_stopping_copies_the_best_state_in_one_compiled_program(count_compiles):
    train, val, images = _loaders()
    state = create_train_state(MLP(hidden=(23,)), adam(1e-2), images[:1])  # shapes no other test compiles
    state, _ = fit(state, train, 1, {"val": val}, log=None)  # the step and the evaluation compiled here
    early = EarlyStopping("val_loss", patience=5)
    with count_compiles() as compiles:
        fit(state, train, 2, {"val": val}, log=None, callbacks=[early])
    assert early.best_epoch is not None and compiles() == 1  # not one program per shape of the state's leaves


@pytest.mark.quick
def test_callbacks_refuse_what_they_cannot_follow():
    train, val, images = _loaders(32)
    state = create_train_state(MLP(hidden=(4,)), adam(1e-2), images[:1])
    with pytest.raises(ValueError, match=r"EarlyStopping\(monitor='val_loss'\): epoch 1 measured no 'val_loss'"):
        fit(state, train, 2, log=None, callbacks=[EarlyStopping()])
    state = create_train_state(MLP(hidden=(4,)), adam(1e-2), images[:1])
    with pytest.raises(ValueError, match="holds no learning rate"):
        fit(state, train, 2, {"val": val}, log=None, callbacks=[ReduceLROnPlateau()])
    with pytest.raises(ValueError, match="target=1.5; expected an accuracy"):
        TargetAccuracy(1.5)
    with pytest.raises(ValueError, match="expected instances of jaxtrain.training.callbacks.Callback"):
        fit(state, train, 1, log=None, callbacks=[print])


def test_early_stopping_from_the_command_line_ends_the_run_folder_on_the_best_epoch(tmp_path):
    folder, report = tmp_path / "run", tmp_path / "report.json"
    args = ["train", "--dataset", "digits", "--val-fraction", "0.2", "--early-stopping", "3", "--epochs", "300"]  # docs/training.md
    # a checkpoint every epoch: those after the best one go, so that the latest is the best
    assert cli.main([*args, "--run-dir", str(folder), "--checkpoint-seconds", "0", "--report", str(report)]) == 0
    data = json.loads(report.read_text())
    best = data["best_epoch"]
    assert data["epochs_run"] == len(data["history"]) < 300 and data["epochs_run"] == best + 3
    assert f"the best was epoch {best}" in data["stopped"]
    assert data["best_val_loss"] == min(h["val_loss"] for h in data["history"]) == data["history"][best - 1]["val_loss"]
    assert data["test_accuracy"] == data["history"][best - 1]["test_accuracy"]  # the returned state is the best's
    state, _ = load_run(folder)  # the folder's latest checkpoint too
    with Run(folder) as run:
        assert run.latest_step() == int(state.step) == best * 34  # digits: 34 batches an epoch
    assert cli.main(["train", "--early-stopping", "3"]) == 2


def test_stop_at_accuracy_stops_at_the_first_epoch_that_reaches_it(tmp_path, capsys):
    report = tmp_path / "report.json"
    assert cli.main(["train", "--stop-at-accuracy", "0.9", "--epochs", "50", "--report", str(report)]) == 0
    data = json.loads(report.read_text())
    accuracies = [h["test_accuracy"] for h in data["history"]]
    first = next(e for e, a in enumerate(accuracies, 1) if a >= 0.9)
    assert data["epochs_to_accuracy"] == data["epochs_run"] == first
    assert 0 < data["time_to_accuracy_seconds"] and "reached the target 0.9" in data["stopped"]
    assert "Stopped after epoch" in capsys.readouterr().out


def _torch_plateau_lrs(losses, lr, **options):
    """The lr torch's ReduceLROnPlateau gives each epoch, fed ``losses`` after each."""
    torch = pytest.importorskip("torch")
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, **options)
    lrs = []
    for loss in losses:
        lrs.append(optimizer.param_groups[0]["lr"])
        scheduler.step(loss)
    return lrs


def test_the_plateau_schedule_from_the_command_line_follows_torch_and_resumes_exactly(tmp_path):
    """The lr of each epoch equals torch's scheduler fed the same validation losses; a run stopped halfway
    and resumed gives the same epochs, its plateau counters restored from the checkpoint."""
    plateau = {"factor": 0.5, "patience": 1, "threshold": 0.2, "cooldown": 1, "min_lr": 1e-4}
    config = Config(val_fraction=0.2, schedule="plateau", epochs=10, lr=3e-3, **plateau)
    whole = experiment.run(config, log=None, folder=Run(tmp_path / "whole"))
    losses, lrs = [h["val_loss"] for h in whole["history"]], [h["lr"] for h in whole["history"]]
    assert lrs == _torch_plateau_lrs(losses, 3e-3, **plateau) and len(set(lrs)) > 2
    lines = [json.loads(line) for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    assert [line["lr"] for line in lines] == lrs

    half = Config(**{**config.__dict__, "epochs": 5})
    experiment.run(half, log=None, folder=Run(tmp_path / "split", checkpoint_seconds=0))
    resumed = experiment.run(config, log=None, folder=Run(tmp_path / "split", resume=True))
    for ours, theirs in zip(resumed["history"], whole["history"]):
        assert (ours["lr"], ours["val_loss"]) == (theirs["lr"], theirs["val_loss"])
    assert resumed["test_loss"] == whole["test_loss"]


def test_tensorboard_events_are_written_during_the_run(tmp_path):
    pytest.importorskip("tensorboardX")
    from jaxtrain.training.monitors import TensorBoard

    train, val, images = _loaders(48)
    sizes = []  # the events' bytes on disk at the end of each epoch, after the writer's hook
    measure = LambdaCallback(on_epoch_end=lambda c: sizes.append(sum(f.stat().st_size for f in (tmp_path / "tb").iterdir())))
    state = create_train_state(MLP(hidden=(4,)), adam(1e-2), images[:1])
    fit(state, train, 3, {"val": val}, log=None, callbacks=[TensorBoard(tmp_path / "tb"), measure])
    assert sizes[0] > 0 and sizes[0] < sizes[1] < sizes[2]


def test_train_writes_tensorboard_events_live_into_the_run_folder(tmp_path, capsys):
    pytest.importorskip("tensorboardX")
    assert cli.main(["train", "--epochs", "2", "--run-dir", str(tmp_path / "run"), "--tensorboard"]) == 0
    assert any((tmp_path / "run" / "tensorboard").iterdir())
    assert cli.main(["train", "--epochs", "1", "--tensorboard"]) == 1
    assert "--tensorboard without --run-dir" in capsys.readouterr().err


class _Crash(Exception):
    pass


def _scored(scores, crash_at=None):
    """A callback that gives each epoch the score ``scores[epoch - 1]`` (early stopping's monitor), and
    crashes the run as epoch ``crash_at`` begins."""

    def score(context):
        context.record["score"] = scores[context.epoch - 1]

    def start(context):
        if context.epoch == crash_at:
            raise _Crash

    return LambdaCallback(on_epoch_end=score, on_epoch_start=start)


@pytest.mark.parametrize("checkpoint_seconds", [0, 1e9])
def test_early_stopping_after_a_resume_ends_on_the_best_epoch_from_before_it(tmp_path, checkpoint_seconds):
    """The best epoch (2) comes before the crash (as epoch 5 begins); the epochs after the resume do not beat
    it. The resumed run ends on epoch 2's state bitwise, as the run that never stopped; its checkpoint was
    saved though none was due (checkpoint_seconds=1e9) and kept though keep=1 would have dropped it."""
    scores = [5.0, 1.0, 3.0, 4.0, 2.0, 6.0]
    train, _, images = _loaders()
    copies = []
    keep = LambdaCallback(on_epoch_end=lambda c: copies.append(jax.tree.map(lambda a: a.copy(), c.state)))
    whole, _ = fit(create_train_state(MLP(hidden=(8,)), adam(1e-2), images[:1]), train, 6, log=None,
                   callbacks=[_scored(scores), EarlyStopping("score", patience=10), keep])
    assert _equal(whole, copies[1])  # epoch 2's state, kept on the device

    folder = tmp_path / "run"
    train, _, _ = _loaders()
    with pytest.raises(_Crash), Run(folder, keep=1, checkpoint_seconds=checkpoint_seconds) as run:
        fit(create_train_state(MLP(hidden=(8,)), adam(1e-2), images[:1]), train, 6, log=None, run=run,
            callbacks=[_scored(scores, crash_at=5), EarlyStopping("score", patience=10)])
    train, _, _ = _loaders()
    early = EarlyStopping("score", patience=10)
    with Run(folder, resume=True, keep=1, checkpoint_seconds=checkpoint_seconds) as run:
        resumed_from = run.latest_step()
        state, history = fit(create_train_state(MLP(hidden=(8,)), adam(1e-2), images[:1]), train, 6, log=None, run=run,
                             callbacks=[_scored(scores), early])
        assert run.latest_step() == 2 * len(train)  # the folder ends on the best epoch too
    assert resumed_from == (4 if checkpoint_seconds == 0 else 2) * len(train)
    assert [h["epoch"] for h in history] == [1, 2, 3, 4, 5, 6] and early.best_epoch == 2
    assert _equal(state, whole)
