"""Run folders: checkpoints, exact resume, the divergence guard, strict JSON (jaxtrain.runs.folder), and the
trained run put to use: evaluate, predict, export, plot (jaxtrain.cli.commands, jaxtrain.runs.curves)."""

import dataclasses
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from flax import nnx

from jaxtrain import MLP, NNXMLP, ArrayDataset, DataLoader, Run, adam, create_train_state, evaluate, experiment, fit, load_digits, load_run, predict
from jaxtrain.runs import checkpoints, curves, reports
from jaxtrain.cli import commands as cli
from jaxtrain.config import Config


def _data(n=150, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 8, 8, 1), np.float32), rng.integers(0, 10, n).astype(np.int32)


@pytest.mark.quick
def test_json_is_strict_and_written_in_place_of_a_symlinks_target(tmp_path):
    assert reports.to_json({"a": float("nan"), "b": [np.float32("inf"), 1.5]}) == '{"a": null, "b": [null, 1.5]}'
    target = tmp_path / "real.json"
    target.write_text("{}")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    old = os.umask(0o022)
    try:
        reports.write_json(link, {"loss": float("-inf")})
    finally:
        os.umask(old)
    assert link.is_symlink() and json.loads(target.read_text()) == {"loss": None}
    assert target.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.quick
def test_outputs_are_checked_for_writing_before_any_work(tmp_path):
    with pytest.raises(IsADirectoryError, match="a folder; expected a file name"):
        reports.check_writable(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        reports.check_writable(tmp_path / "missing" / "out.json")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.access(locked, os.W_OK):
        pytest.skip("running as a user who can write anywhere")
    with pytest.raises(PermissionError, match="cannot be written"):
        reports.check_writable(locked / "out.json")


FEEDING_MODES = {
    "per step": dict(steps_per_call=1),
    "fused K=3": dict(steps_per_call=3),
    "device-resident, whole epoch": dict(steps_per_call=10, data_on_device=True),
}


class _Crash(Exception):
    pass


def _fit(folder, epochs, mode, crash_at=None, resume=False, nnx_model=False):
    """3 epochs of an MLP with dropout and BatchNorm (Linen's, or NNX's), checkpointing every 4 steps;
    ``crash_at=(epoch, step)`` stops the process's work right after that checkpoint, as a kill would."""
    images, labels = _data()
    loader = DataLoader(ArrayDataset(images, labels), batch_size=16, shuffle=True, seed=5)
    options = dict(hidden=(12,), dropout=0.3, batch_norm=True)
    model = NNXMLP(images.shape[1:], **options, rngs=nnx.Rngs(3)) if nnx_model else MLP(**options)
    state = create_train_state(model, adam(1e-2), images[:1], seed=3)
    run = Run(folder, resume=resume, checkpoint_every=4, checkpoint_seconds=0)
    if crash_at:
        step_end = run.step_end

        def crashing(state, loader, epoch, taken, *args):
            step_end(state, loader, epoch, taken, *args)
            if (epoch, taken) == crash_at:
                raise _Crash

        run.step_end = crashing
    try:
        state, history = fit(state, loader, epochs, DataLoader(ArrayDataset(images, labels), 64), log=None, run=run, **mode)
    finally:
        run.close()
    return jax.device_get(state), history


@pytest.mark.parametrize("mode, nnx_model", [*((mode, False) for mode in FEEDING_MODES), ("fused K=3", True)])
def test_resume_mid_epoch_and_after_an_epoch_is_bitwise(mode, nnx_model, tmp_path):
    mode = FEEDING_MODES[mode]
    reference, ref_history = _fit(tmp_path / "whole", 3, mode, nnx_model=nnx_model)
    with pytest.raises(_Crash):
        _fit(tmp_path / "cut", 3, mode, crash_at=(2, 4), nnx_model=nnx_model)  # mid-epoch 2
    assert Run(tmp_path / "cut").latest_step() == 10 + 4
    _fit(tmp_path / "cut", 2, mode, resume=True, nnx_model=nnx_model)  # to the end of epoch 2, then stop
    state, history = _fit(tmp_path / "cut", 3, mode, resume=True, nnx_model=nnx_model)  # after an epoch's end: one more
    jax.tree.map(np.testing.assert_array_equal, (state.params, state.batch_stats, state.opt_state),
                 (reference.params, reference.batch_stats, reference.opt_state))
    assert int(state.step) == int(reference.step) == 30
    strip = lambda h: [{k: v for k, v in r.items() if k not in ("seconds", "samples_per_second", "eval_seconds")} for r in h]  # noqa: E731
    assert strip(history) == strip(ref_history)
    lines = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]


# A setting of each kind that changes what a run computes, as a resumed run might change it; the field the
# refusal names when it is not the one changed (momentum needs sgd: it comes first).
_CHANGES = {
    "dataset": ({"dataset": "npz:{npz}"}, "dataset"),
    "model": ({"model": "nnx-mlp"}, "model"),
    "dropout": ({"dropout": 0.1}, "dropout"),
    "batch_norm": ({"batch_norm": True}, "batch_norm"),
    "dtype": ({"dtype": "bfloat16"}, "dtype"),
    "batch_size": ({"batch_size": 64}, "batch_size"),
    "lr": ({"lr": 2e-3}, "lr"),
    "optimizer": ({"optimizer": "sgd"}, "optimizer"),
    "momentum": ({"optimizer": "sgd", "momentum": 0.9}, "momentum"),
    "weight_decay": ({"weight_decay": 1e-4}, "weight_decay"),
    "schedule": ({"schedule": "cosine"}, "schedule"),
    "warmup_steps": ({"warmup_steps": 5}, "warmup_steps"),
    "step_size": ({"step_size": 2}, "step_size"),
    "milestones": ({"milestones": (1,)}, "milestones"),
    "gamma": ({"gamma": 0.5}, "gamma"),
    "grad_accum": ({"grad_accum": 2}, "grad_accum"),
    "clip_norm": ({"clip_norm": 1.0}, "clip_norm"),
    "seed": ({"seed": 1}, "seed"),
    "val_fraction": ({"val_fraction": 0.1}, "val_fraction"),
    "devices": ({"devices": 1}, "devices"),
    # when the run stops, and the plateau schedule's rule: a resumed run that ends elsewhere is another run
    "early_stopping": ({"val_fraction": 0.1, "early_stopping": 2}, "early_stopping"),
    "stop_at_accuracy": ({"stop_at_accuracy": 0.5}, "stop_at_accuracy"),
    "factor": ({"factor": 0.5}, "factor"),
    "patience": ({"patience": 2}, "patience"),
    "threshold": ({"threshold": 0.1}, "threshold"),
    "cooldown": ({"cooldown": 1}, "cooldown"),
    "min_lr": ({"min_lr": 1e-5}, "min_lr"),
}


def test_every_setting_but_those_that_a_resume_may_change_is_covered():
    fields = {f.name for f in dataclasses.fields(Config)}
    assert set(_CHANGES) == fields - set(experiment.RESUMABLE_CHANGES)
    assert set(experiment.RESUMABLE_CHANGES) == {"epochs", "data_dir", "eval_batch_size", "steps_per_call", "data_on_device"}


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory):
    """A run folder of the default MLP after one epoch on digits, and the same data as an npz file."""
    root = tmp_path_factory.mktemp("resume")
    experiment.run(Config(epochs=1), log=None, folder=Run(root / "run", checkpoint_seconds=0))
    (x_train, y_train), (x_test, y_test) = (load_digits(split) for split in ("train", "test"))
    np.savez(root / "digits.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return root


@pytest.mark.parametrize("setting", _CHANGES)
def test_resuming_another_configuration_is_refused_in_one_line_and_leaves_config_json_alone(setting, one_epoch, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(one_epoch / "run", folder)
    saved = (folder / "config.json").read_bytes()
    change, named = _CHANGES[setting]
    change = {k: v.format(npz=one_epoch / "digits.npz") if isinstance(v, str) else v for k, v in change.items()}
    with pytest.raises(ValueError) as refusal:
        experiment.run(Config(epochs=2, **change), log=None, folder=Run(folder, resume=True))
    assert (folder / "config.json").read_bytes() == saved  # refused before anything is written
    assert re.match(rf"{named}=.* differs from the run in .*; expected the same to resume it", str(refusal.value))
    assert Run(folder).steps() == Run(one_epoch / "run").steps()


@pytest.mark.quick
def test_resuming_for_more_epochs_is_allowed(one_epoch, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(one_epoch / "run", folder)
    report = experiment.run(Config(epochs=2), log=None, folder=Run(folder, resume=True))  # longer: allowed
    assert [h["epoch"] for h in report["history"]] == [1, 2]
    assert json.loads((folder / "config.json").read_text())["epochs"] == 2


@pytest.mark.parametrize("periods", [[], ["--checkpoint-every", "5"], ["--log-every", "5"], ["--checkpoint-every", "4", "--log-every", "3"]],
                         ids=["epochs", "checkpoint-every", "log-every", "both"])
def test_a_diverging_run_stops_with_one_line_and_keeps_its_last_good_checkpoint(periods, tmp_path, capsys):
    """The lr jumps by 1e30 at epoch 2: the run stops in its first steps, in one line naming the epoch and the
    advice, however often it logs or saves within an epoch, and keeps nothing past the end of epoch 1."""
    folder = tmp_path / "run"
    argv = ["train", "--optimizer", "sgd", "--lr", "0.1", "--schedule", "step", "--gamma", "1e30", "--epochs", "3",
            "--run-dir", str(folder), "--checkpoint-seconds", "0", *periods]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("jaxtrain train: error: epoch 2") and err.count("\n") == 1
    assert "the training loss is " in err and "try a lower learning rate, or clipping the gradient norm" in err
    saved = Run(folder)
    assert max(saved.steps()) == 43  # the end of epoch 1, the last good state: no checkpoint of epoch 2
    state, _ = load_run(folder)
    assert int(state.step) == 43 and all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(state.params))
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if "step" not in r] == [1]
    assert all(r["epoch"] == 1 and r["step"] <= 43 for r in records if "step" in r)  # nothing logged of epoch 2


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small CNN trained on digits for two epochs, with a validation split, in a run folder."""
    folder = tmp_path_factory.mktemp("runs") / "cnn"
    argv = ["train", "--model", "cnn", "--epochs", "2", "--val-fraction", "0.1", "--run-dir", str(folder),
            "--checkpoint-seconds", "0"]
    assert cli.main(argv) == 0
    return folder


def test_the_clis_cnn_anneals_its_learning_rate_by_cosine(trained):
    """`train --model cnn` with the default --schedule auto: the CNN's cosine, as the library resolves it."""
    saved = json.loads((trained / "report.json").read_text())
    assert saved["config"]["schedule"] == "cosine" and json.loads((trained / "config.json").read_text())["schedule"] == "cosine"
    assert [h["lr"] for h in saved["history"]] == pytest.approx([1e-3, 5e-4], rel=1e-6)  # halfway through a cosine


def test_evaluate_reads_the_saved_model(trained, tmp_path, capsys):
    report = tmp_path / "eval.json"
    assert cli.main(["evaluate", "--run-dir", str(trained), "--checkpoint", "best", "--report", str(report)]) == 0
    result = json.loads(report.read_text())
    saved = json.loads((trained / "report.json").read_text())
    best = max(saved["history"], key=lambda r: r["val_accuracy"])
    assert result["count"] == 449 and result["accuracy"] == best["test_accuracy"] <= 1
    assert "accuracy" in capsys.readouterr().out
    # The confusion matrix: rows are the true classes (the test set's counts of each), its trace the correct ones.
    matrix = np.asarray(result["confusion_matrix"])
    labels = load_digits("test")[1]
    assert matrix.shape == (10, 10)
    np.testing.assert_array_equal(matrix.sum(1), np.bincount(labels, minlength=10))
    assert np.trace(matrix) == round(result["accuracy"] * 449)
    assert cli.main(["evaluate", "--run-dir", str(trained), "--checkpoint", "best", "--top-k", "3", "--report", str(report)]) == 0
    top3 = json.loads(report.read_text())["top3_accuracy"]
    assert result["accuracy"] < top3 <= 1 and "top-3 accuracy" in capsys.readouterr().out
    # The top-3 accuracy from the model's own scores: the label among its three highest.
    state, config = load_run(trained, "best")
    images = experiment.loaders(config)["test"].gather(np.arange(449))[0]
    probabilities = np.asarray(predict(state, images))
    assert top3 == np.mean(np.any(np.argsort(-probabilities, -1)[:, :3] == labels[:, None], -1))
    assert cli.main(["evaluate", "--run-dir", str(trained), "--top-k", "11"]) != 0
    assert capsys.readouterr().err.strip().endswith("top11_accuracy: k=11 but the model gives 10 classes; expected k <= 10")


def test_the_best_checkpoint_is_the_one_of_the_best_validation_accuracy_not_test_accuracy(tmp_path, capsys):
    """A run whose validation accuracy peaks at epoch 4 and test accuracy at epoch 5 (jax 0.10.2 on the CPU):
    best is the validation peak's checkpoint."""
    folder = tmp_path / "run"
    argv = ["train", "--epochs", "5", "--seed", "3", "--val-fraction", "0.1", "--run-dir", str(folder), "--checkpoint-seconds", "0"]
    assert cli.main(argv) == 0
    history = json.loads((folder / "report.json").read_text())["history"]
    by_val, by_test = (max(history, key=lambda r: (r[key], r["epoch"]))["epoch"] for key in ("val_accuracy", "test_accuracy"))
    assert by_val != by_test, "the run no longer tells the two apart: choose another --seed"  # here (4, 5)
    saved = Run(folder)
    assert saved.best_step() == by_val * 38 and len(saved.meta(saved.best_step())["history"]) == by_val  # 38 batches an epoch
    report = tmp_path / "eval.json"
    assert cli.main(["evaluate", "--run-dir", str(folder), "--checkpoint", "best", "--report", str(report)]) == 0
    result = json.loads(report.read_text())
    assert result["step"] == by_val * 38 and result["count"] == 449
    assert result["accuracy"] == history[by_val - 1]["test_accuracy"] <= 1


def test_predict_classifies_png_files_as_training_data_was_prepared(trained, tmp_path, capsys):
    from PIL import Image

    images, labels = load_digits("test")
    files = []
    for i in range(4):  # saved larger than 8×8: predict resizes as the data was
        path = tmp_path / f"digit{i}.png"
        Image.fromarray((images[i, ..., 0] * 255).astype(np.uint8)).resize((8, 8)).save(path)
        files.append(str(path))
    assert cli.main(["predict", "--run-dir", str(trained), "--json", *files]) == 0
    rows = json.loads(capsys.readouterr().out)
    state, _ = load_run(trained)
    expected = np.asarray(state.model.apply(state.variables, images[:4])).argmax(-1)
    assert [row["file"] for row in rows] == files
    assert [row["class"] for row in rows] == expected.tolist()
    assert all(0 < row["probability"] <= 1 for row in rows)
    assert cli.main(["predict", "--run-dir", str(trained), files[0]]) == 0
    assert capsys.readouterr().out.startswith(f"{files[0]}: {expected[0]} (")


@pytest.mark.parametrize("model", ["mlp", "cnn", "nnx-cnn"])
def test_export_loads_strictly_into_the_torch_model_and_predicts_the_same(model, tmp_path, torch):
    from jaxtrain import compare

    folder = tmp_path / model
    cli.main(["train", "--model", model, "--epochs", "1", "--run-dir", str(folder), "--checkpoint-seconds", "0"])
    assert cli.main(["export", "--run-dir", str(folder), "--torch", str(tmp_path / "model.pt")]) == 0
    net = compare.torch_model(model, 8)
    net.load_state_dict(torch.load(tmp_path / "model.pt"), strict=True)
    if model == "mlp":
        assert sorted(net.state_dict()) == ["fc1.bias", "fc1.weight", "fc2.bias", "fc2.weight"]  # the primer's MyModel
    images, labels = load_digits("test")
    net.eval()
    with torch.no_grad():
        theirs = net(torch.from_numpy(images.transpose(0, 3, 1, 2).copy())).argmax(1).numpy()
    state, _ = load_run(folder)
    ours = np.asarray(state.model.apply(state.variables, images)).argmax(-1)
    assert (theirs == ours).mean() == 1.0
    accuracy = evaluate(state, experiment.loaders(Config())["test"])["accuracy"]
    assert (theirs == labels).mean() == pytest.approx(accuracy) and accuracy <= 1


def test_plot_draws_the_curves_and_writes_tensorboard_events(trained, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "curves.png"
    assert cli.main(["plot", str(trained), "-o", str(out), "--tensorboard"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert any((trained / "tensorboard").iterdir())


def _train_command(folder):
    return [sys.executable, "-m", "jaxtrain", "train", "--epochs", "4", "--dropout", "0.2", "--batch-norm",
            "--steps-per-call", "3", "--run-dir", str(folder), "--checkpoint-every", "5", "--checkpoint-seconds", "0"]


def _newest_checkpoint(folder) -> int:
    """The newest committed checkpoint's step in a run folder (-1: none)."""
    return max(checkpoints.step_folders(folder / "checkpoints"), default=-1)


@pytest.mark.slow
def test_sigkill_during_steps_and_saves_then_resume_is_bitwise(tmp_path):
    """Killed four times, on progress rather than on a clock (a warm compilation cache makes a run short):
    twice as soon as a save's temporary folder appears, twice in the steps after 1 to 3 new checkpoints."""
    reference = tmp_path / "whole"
    subprocess.run(_train_command(reference), cwd=tmp_path, check=True, capture_output=True, timeout=300)
    folder, rng, kills, in_save = tmp_path / "killed", random.Random(0), 0, 0
    for attempt in range(10):
        start, stale = _newest_checkpoint(folder), set((folder / "checkpoints").glob("*.orbax-checkpoint-tmp*"))
        process = subprocess.Popen([*_train_command(folder), *(["--resume"] if attempt else [])], cwd=tmp_path,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            during_save, wanted, seen = kills % 2 == 1, rng.randint(1, 3), start
            deadline = time.monotonic() + 120
            while kills < 4 and process.poll() is None and time.monotonic() < deadline:
                if during_save and set((folder / "checkpoints").glob("*.orbax-checkpoint-tmp*")) - stale:
                    break  # during a save: as soon as a new temporary folder of Orbax's appears
                if not during_save and (newest := _newest_checkpoint(folder)) > seen:
                    seen, wanted = newest, wanted - 1
                    if not wanted:
                        break  # during the steps: just after a checkpoint committed
                time.sleep(0.001)
            else:
                process.wait(timeout=300)
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                kills, in_save = kills + 1, in_save + during_save
            process.wait(timeout=300)
        finally:
            process.kill()
        lines = (folder / "metrics.jsonl").read_text().splitlines() if (folder / "metrics.jsonl").exists() else []
        records = [json.loads(line) for line in lines]  # every line of a killed run parses
        epochs = [r["epoch"] for r in records if "step" not in r]
        assert epochs == list(range(1, len(epochs) + 1))  # a resumed run's lines read as one run's
        if (folder / "report.json").exists():
            break
    assert kills == 4 and in_save == 2 and (folder / "report.json").exists()
    ours, theirs = (json.loads((f / "report.json").read_text()) for f in (folder, reference))
    assert [h["train_loss"] for h in ours["history"]] == [h["train_loss"] for h in theirs["history"]]
    assert ours["test_accuracy"] == theirs["test_accuracy"]
    a, b = (load_run(f)[0] for f in (folder, reference))
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(a.params), jax.device_get(b.params))


@pytest.mark.quick
def test_read_metrics_skips_a_line_cut_short(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1, "train_loss": 0.5}\n{"epoch": 2, "tra')
    assert curves.read_metrics(tmp_path) == [{"epoch": 1, "train_loss": 0.5}]
