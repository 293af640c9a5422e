"""Faults around a run folder, as a careful user and a cluster scheduler meet them: a second process, a rerun
without --resume, a shorter or differently scheduled resume, odd paths, a full disk, a folder made from
Python (jaxtrain.runs.ownership, jaxtrain.runs.reports, jaxtrain.runs.record, jaxtrain.runs.folder).

Each refusal is one line on stderr, with the exit code that the README states (2 for a bad setting, 1 for
files), and leaves every byte of the folder as it was."""

import contextlib
import errno
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxtrain import MLP, ArrayDataset, DataLoader, Run, adam, create_train_state, experiment, fit, load_run
from jaxtrain.runs import checkpoints, ownership, reports
from jaxtrain.sources import registry
from jaxtrain.cli import commands as cli
from jaxtrain.config import Config

TRAIN = ["train", "--dataset", "digits", "--checkpoint-seconds", "0"]


def _train(folder, *flags, epochs=2):
    return cli.main([*TRAIN, "--epochs", str(epochs), "--run-dir", str(folder), *flags])


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` and its bytes (the lock file aside: its PID is its holder's)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


@contextlib.contextmanager
def _locked_by_another_process(folder: Path):
    """A second process holding the folder's lock as a run does (flock on DIR/.lock, its PID inside)."""
    code = ("import fcntl, os, sys; f = open(sys.argv[1], 'a+'); fcntl.flock(f, fcntl.LOCK_EX); f.seek(0); f.truncate(); "
            "f.write(f'{os.getpid()}\\n'); f.flush(); print('locked', flush=True); sys.stdin.read()")
    child = subprocess.Popen([sys.executable, "-c", code, str(folder / ".lock")], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "locked\n"
        yield child.pid
    finally:
        child.stdin.close()
        child.wait(timeout=30)


def _can_lock(folder: Path) -> bool:
    """Whether another process could take the folder's lock now."""
    code = "import fcntl, sys; fcntl.flock(open(sys.argv[1], 'a+'), fcntl.LOCK_EX | fcntl.LOCK_NB)"
    return subprocess.run([sys.executable, "-c", code, str(folder / ".lock")], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def cosine_run(tmp_path_factory):
    """A finished 2-epoch MLP run on digits with a cosine schedule, made by the command line."""
    folder = tmp_path_factory.mktemp("finished") / "run"
    assert _train(folder, "--schedule", "cosine") == 0
    return folder


@pytest.fixture
def used(cosine_run, tmp_path):
    """A copy of ``cosine_run`` for one test to break."""
    folder = tmp_path / "run"
    shutil.copytree(cosine_run, folder)
    return folder


# (flags after `train --dataset digits --checkpoint-seconds 0 --run-dir RUN`, exit code, the line's start, the
# rest it must hold). RUN holds a finished 2-epoch cosine run; each row must leave its bytes as they were.
REFUSALS = {
    "a rerun of the same command without --resume": (
        ["--epochs", "2", "--schedule", "cosine"], 2, "run folder {run} holds a run (config.json, metrics.jsonl, report.json, "
        "checkpoints); expected --resume to continue it", "or another --run-dir"),
    "another model in a used folder": (
        ["--model", "cnn", "--epochs", "1"], 2, "run folder {run} holds a run", "expected --resume"),
    "fewer epochs than were done": (
        ["--resume", "--epochs", "1", "--schedule", "cosine"], 2, "epochs=1 on resuming the run in {run}, which has "
        "begun 2 epochs; expected --epochs 2 or more", "another --run-dir"),
    "more epochs of a cosine schedule": (
        ["--resume", "--epochs", "3", "--schedule", "cosine"], 2, "epochs=3 on resuming the run in {run}, whose cosine "
        "schedule (--schedule cosine) anneals the learning rate to 0 over its 2 epochs", "expected --epochs 2 to finish it"),
    "a setting that computes something else": (
        ["--resume", "--epochs", "2", "--schedule", "cosine", "--batch-size", "64"], 2,
        "batch_size=64 differs from the run in {run} (batch_size=32)", "expected the same to resume it"),
}


@pytest.mark.parametrize("fault", REFUSALS)
def test_a_used_folder_is_refused_in_one_line_before_anything_is_written(fault, used, capsys):
    flags, code, start, rest = REFUSALS[fault]
    before = _snapshot(used)
    assert cli.main([*TRAIN, "--run-dir", str(used), *flags]) == code
    err = capsys.readouterr().err
    assert err.startswith(f"jaxtrain train: error: {start.format(run=used)}") and rest in err, err
    assert err.count("\n") == 1
    assert _snapshot(used) == before


def test_a_folder_in_use_by_another_process_is_refused_naming_its_pid(used, capsys):
    before = _snapshot(used)
    with _locked_by_another_process(used) as pid:
        assert _train(used, "--resume", "--schedule", "cosine") == 2
    err = capsys.readouterr().err
    assert err == (f"jaxtrain train: error: run folder {used}: in use by process {pid}, which holds {used / '.lock'}; "
                   f"expected a folder that no other process is writing: wait for that run to end, or use another --run-dir\n")
    assert _snapshot(used) == before
    assert _train(used, "--resume", "--schedule", "cosine") == 0  # the lock goes with its process


def test_a_second_train_cannot_touch_a_running_one(tmp_path, capsys):
    """Two real runs: the second is refused at once while the first trains on, and the first ends whole."""
    folder = tmp_path / "run"
    command = [sys.executable, "-m", "jaxtrain", *TRAIN, "--epochs", "4", "--run-dir", str(folder), "--steps-per-call", "1"]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while ownership.holder(folder) != first.pid:  # progress, not a clock: the first run owns its folder
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        assert _train(folder, epochs=4) == 2
        assert _train(folder, "--resume", epochs=4) == 2
        err = capsys.readouterr().err
        assert err.count(f"in use by process {first.pid}") == 2 and err.count("\n") == 2
    finally:
        out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    assert Run(folder).intact_steps()[-1] == 4 * 43
    assert [json.loads(line)["epoch"] for line in (folder / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4]


def test_a_path_that_orbax_reads_as_a_pattern_is_refused_before_anything_is_made(tmp_path, capsys):
    folder = tmp_path / "runs" / "mlp[lr=1e-3]"
    assert _train(folder, epochs=1) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"jaxtrain train: error: run folder {folder}: its path") and "[ ]" in err and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()
    for character in "*?[]\\":
        with pytest.raises(ownership.FolderError, match="glob pattern"):
            Run(tmp_path / f"a{character}b")


def test_odd_characters_that_orbax_reads_literally_work(tmp_path):
    images, labels = registry.load("digits", "train")
    loader = DataLoader(ArrayDataset(images[:64], labels[:64]), 32)
    for name in ("a b", "a%20b", "a#b", "a:b", "ä,=;~&$'\""):
        state = create_train_state(MLP(hidden=(4,)), adam(1e-3), images[:1])
        with Run(tmp_path / name, checkpoint_seconds=0) as run:
            trained, _ = fit(state, loader, 1, run=run, log=None)
        restored, _ = load_run(tmp_path / name)
        jax.tree.map(np.testing.assert_array_equal, restored.params, jax.device_get(trained.params))


def test_resume_on_a_folder_without_a_checkpoint_starts_afresh_and_says_so(tmp_path, capsys):
    missing = tmp_path / "missing"
    assert _train(missing, "--resume", epochs=1) == 0
    notice = f"jaxtrain: run folder {missing} holds no checkpoint to resume from; starting the run afresh\n"
    assert notice in capsys.readouterr().err
    stopped = tmp_path / "stopped"  # a run stopped before its first checkpoint: its lines are not this run's
    stopped.mkdir()
    (stopped / "metrics.jsonl").write_text('{"epoch": 1, "train_loss": 9.0}\n{"epoch": 2, "train_loss": 9.0}\n')
    assert _train(stopped, "--resume", epochs=1) == 0
    assert f"run folder {stopped} holds no checkpoint" in capsys.readouterr().err
    lines = [json.loads(line) for line in (stopped / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1] and lines[0]["train_loss"] != 9.0


def test_a_longer_resume_continues_the_schedule_and_appends_to_the_record(tmp_path):
    """A step schedule is a function of the epoch, not of the total: 2 epochs and 1 more equal 3 at once,
    and the record holds all three."""
    flags = ["--schedule", "step", "--gamma", "0.5", "--dropout", "0.2"]
    assert _train(tmp_path / "whole", *flags, epochs=3) == 0
    assert _train(tmp_path / "cut", *flags, epochs=2) == 0
    assert _train(tmp_path / "cut", "--resume", *flags, epochs=3) == 0
    whole, cut = (json.loads((tmp_path / name / "report.json").read_text()) for name in ("whole", "cut"))
    for key in ("epoch", "lr", "train_loss", "test_loss", "test_accuracy"):
        assert [h[key] for h in cut["history"]] == [h[key] for h in whole["history"]]
    assert [h["lr"] for h in cut["history"]] == [0.001, 0.0005, 0.00025]
    assert cut["test_accuracy"] == whole["test_accuracy"]
    lines = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]
    assert json.loads((tmp_path / "cut" / "config.json").read_text())["epochs"] == 3


def _fit_digits(run, epochs=2, **options):
    images, labels = registry.load("digits", "train")
    loader = DataLoader(ArrayDataset(images, labels), 32, shuffle=True, seed=1)
    state = create_train_state(MLP(hidden=(16,), **options), adam(1e-3), images[:1], seed=1)
    return fit(state, loader, epochs, DataLoader(ArrayDataset(*registry.load("digits", "test")), 500), run=run, log=None)


def test_fit_returns_with_its_last_checkpoint_committed_and_the_folder_owned_until_close(tmp_path):
    folder = tmp_path / "run"
    with Run(folder, checkpoint_seconds=0) as run:
        state, history = _fit_digits(run)
        assert Run(folder).intact_steps() == [43, 86]  # committed, manifests and all
        assert not list((folder / "checkpoints").glob("*.orbax-checkpoint-tmp*"))
        assert ownership.holder(folder) == os.getpid() and not _can_lock(folder)
    assert _can_lock(folder)  # released on leaving the block


def test_a_run_of_this_process_takes_over_from_an_earlier_one_not_closed(tmp_path):
    """A notebook cell run twice: the second Run of a folder closes the first (its saves committed)."""
    folder = tmp_path / "run"
    earlier = Run(folder, checkpoint_seconds=0)
    _fit_digits(earlier, epochs=1)
    state, history = _fit_digits(Run(folder, resume=True, checkpoint_seconds=0), epochs=2)
    assert [h["epoch"] for h in history] == [1, 2] and not earlier.claimed


def test_a_folder_made_from_python_is_complete_when_the_script_just_ends(tmp_path, run_cli):
    """The README's script, which never closes its Run: its last checkpoint is committed, and load_run and
    evaluate open the folder."""
    folder = tmp_path / "run"
    script = ("import sys; from jaxtrain import MLP, ArrayDataset, DataLoader, adam, create_train_state, fit, load, Run\n"
              "x, y = load('digits', 'train')\n"
              "state = create_train_state(MLP(hidden=(16,), dropout=0.1), adam(1e-3), x[:1])\n"
              "fit(state, DataLoader(ArrayDataset(x, y), 32, shuffle=True), 2, run=Run(sys.argv[1], checkpoint_seconds=0), log=None)\n")
    done = subprocess.run([sys.executable, "-c", script, str(folder)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert Run(folder).intact_steps() == [43, 86]
    assert not list((folder / "checkpoints").glob("*tmp*"))
    state, config = load_run(folder)
    assert int(state.step) == 86 and config.model == "mlp" and config.dropout == 0.1
    assert state.params["Dense_0"]["kernel"].shape == (64, 16)
    result = run_cli("evaluate", "--run-dir", str(folder), "--dataset", "digits")
    assert result.returncode == 0 and "digits test set, 449 images" in result.stdout, result.stderr
    result = run_cli("evaluate", "--run-dir", str(folder))
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "dataset None (--dataset): expected the data to evaluate on" in result.stderr


# ---- Full disks: a small tmpfs where one can be mounted (root, as in CI's containers), else skipped.

@pytest.fixture
def small_disk(tmp_path):
    """``small_disk(size)``: a fresh tmpfs of ``size`` (e.g. "400k"), unmounted after the test."""
    mounted = []

    def mount(size: str) -> Path:
        target = tmp_path / f"disk{len(mounted)}"
        target.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(target)], capture_output=True)
        if done.returncode:
            pytest.skip("no small filesystem to fill here (mounting a tmpfs needs root)")
        mounted.append(target)
        return target

    yield mount
    for target in mounted:
        subprocess.run(["umount", "-l", str(target)], check=False)


def _fill(folder: Path) -> None:
    with open(folder / "filler", "wb", buffering=0) as out, contextlib.suppress(OSError):
        while True:
            out.write(b"\0" * 4096)


def test_a_full_disk_fails_before_any_work_though_an_empty_file_still_fits(small_disk, capsys):
    disk = small_disk("256k")
    _fill(disk)
    (disk / "empty").touch()  # what the old check did: it passes on a full disk
    (disk / "empty").unlink()
    assert cli.main([*TRAIN, "--epochs", "1", "--report", str(disk / "report.json")]) == 1
    assert capsys.readouterr().err == (f"jaxtrain train: error: --report {disk / 'report.json'}: folder {disk} cannot be "
                                       f"written (No space left on device)\n")
    assert _train(disk / "run", epochs=1) == 1
    assert capsys.readouterr().err == f"jaxtrain train: error: run folder {disk / 'run'} cannot be written (No space left on device)\n"
    assert sorted(p.name for p in disk.iterdir()) == ["filler", "run"] and not list((disk / "run").iterdir())


def test_a_save_that_fills_the_disk_stops_the_run_in_one_line_and_keeps_the_last_good_checkpoint(small_disk, capsys):
    disk = small_disk("400k")  # one checkpoint of the digits MLP (~230 KB) fits, a second does not
    folder = disk / "run"
    assert _train(folder, "--steps-per-call", "1", epochs=5) == 1
    err = capsys.readouterr().err
    assert err == (f"jaxtrain train: error: checkpoint 86 in {folder / 'checkpoints'}: not written (no space left on device); "
                   f"the last good checkpoint, 43, is kept\n")
    assert Run(folder).intact_steps() == [43] and not list(disk.rglob("*tmp*"))
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] in ([1, 2], [1, 2, 3])  # stopped, by the next save at the latest
    state, _ = load_run(folder)
    assert int(state.step) == 43


def test_a_failed_background_save_stops_the_run_at_the_next_call(tmp_path, monkeypatch):
    """The save at epoch 1's end fails in Orbax's background thread (its manifest cannot be written): the
    run stops at the first call boundary after, within epoch 2, rather than at the next save."""
    failed = threading.Event()

    def full(folder):
        failed.set()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(folder))

    monkeypatch.setattr(checkpoints, "write_manifest", full)
    folder = tmp_path / "run"
    images, labels = registry.load("digits", "train")
    state = create_train_state(MLP(hidden=(16,)), adam(1e-3), images[:1])
    loader = DataLoader(ArrayDataset(images, labels), 8, shuffle=True)  # 169 calls an epoch
    with pytest.raises(OSError) as failure, Run(folder, checkpoint_seconds=0) as run:
        check, calls = run.check_saves, []

        def after_the_failure():  # a save outlasts an epoch of these tiny steps: wait on its progress
            if run._sealing is not None:  # the first call of epoch 2, the save under way
                calls.append(1)
                if len(calls) == 1:
                    assert failed.wait(60)
                    time.sleep(0.5)  # the thread's end, after its error
            check()

        run.check_saves = after_the_failure
        fit(state, loader, 3, run=run, log=None, steps_per_call=1)
    assert str(failure.value) == (f"checkpoint 169 in {folder / 'checkpoints'}: not written (no space left on device); "
                                  f"no earlier checkpoint of this run exists")
    assert len(calls) == 1  # the first call after the failure stopped the run
    assert [json.loads(line)["epoch"] for line in (folder / "metrics.jsonl").read_text().splitlines()] == [1]
    assert not list(folder.rglob("*tmp*"))


def _fail_fsync_of(name: str, monkeypatch) -> None:
    """``os.fsync`` raises ENOSPC for a file whose name starts with ``name``: a disk that fills up after the
    up-front check."""
    fsync = os.fsync

    def full(fd):
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(name):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", full)


def test_a_report_that_cannot_be_written_after_the_work_goes_where_the_error_says(tmp_path, capsys, monkeypatch):
    _fail_fsync_of(".out.json.", monkeypatch)
    report = tmp_path / "out.json"
    assert cli.main([*TRAIN, "--epochs", "1", "--report", str(report)]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith(f"jaxtrain train: error: --report {report}: not written (No space left on device)")
    assert captured.err.endswith("; the report is printed on stdout as JSON instead\n") and captured.err.count("\n") == 1
    printed = json.loads(captured.out[captured.out.index("{\n"):])
    assert printed["history"][0]["epoch"] == 1 and printed["test_accuracy"] > 0.1
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no temporary file left behind
    assert cli.main([*TRAIN, "--epochs", "1", "--report", str(report), "--run-dir", str(tmp_path / "run")]) == 1
    captured = capsys.readouterr()
    assert captured.err.endswith(f"; the same report is in {tmp_path / 'run' / 'report.json'}\n")
    assert "{" not in captured.out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_writes_on_a_full_disk_leave_no_temporary_file_and_the_earlier_file_whole(tmp_path, monkeypatch):
    target = tmp_path / "report.json"
    reports.write_json(target, {"earlier": True})
    _fail_fsync_of(".report.json.", monkeypatch)
    with pytest.raises(OSError, match=rf"^{target}: not written \(No space left on device\); any earlier file"):
        reports.write_json(target, {"later": True})
    assert json.loads(target.read_text()) == {"earlier": True} and [p.name for p in tmp_path.iterdir()] == ["report.json"]
    _fail_fsync_of("", monkeypatch)
    with pytest.raises(OSError, match=rf"^report {target}: folder {tmp_path} cannot be written \(No space left on device\)$"):
        reports.check_writable(target)


def test_resuming_with_fewer_epochs_from_python_is_refused(tmp_path):
    folder = tmp_path / "run"
    with Run(folder, checkpoint_seconds=0) as run:
        _fit_digits(run, epochs=2)
    before = _snapshot(folder)
    with pytest.raises(ownership.FolderError, match="has begun 2 epochs; expected --epochs 2 or more"):
        with Run(folder, resume=True) as run:
            _fit_digits(run, epochs=1)
    assert _snapshot(folder) == before
    with pytest.raises(ownership.FolderError, match=r"holds a run \(config.json, metrics.jsonl, checkpoints\)"):
        experiment.run(Config(epochs=1), log=None, folder=Run(folder))
    assert _snapshot(folder) == before


def test_a_reader_leaves_the_temporary_folder_of_a_save_in_progress_alone(used):
    """evaluate during training: Orbax's writer would remove another's unfinished save as debris; a reader must not."""
    in_progress = used / "checkpoints" / "999.orbax-checkpoint-tmp-1"
    (in_progress / "state").mkdir(parents=True)
    load_run(used)
    assert cli.main(["evaluate", "--run-dir", str(used)]) == 0
    assert in_progress.is_dir()
