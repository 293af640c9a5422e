"""Preemption: a SIGTERM during training saves a checkpoint at the next call boundary and exits with 143 and a
one-line notice, and ``--resume`` then continues to the bits of a run never stopped; on one process and on two
(jaxtrain.training.preemption)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jaxtrain.runs.folder import Run

ROOT = Path(__file__).resolve().parents[2]
# One step per call: a boundary after every step, so the signal lands mid-epoch.
_FLAGS = ["--dataset", "digits", "--epochs", "3", "--steps-per-call", "1", "--checkpoint-seconds", "1000"]


def _command(folder: Path, *flags: str) -> list[str]:
    return [sys.executable, "-m", "jaxtrain", "train", *_FLAGS, "--run-dir", str(folder), *flags]


def _env(num_devices: int = 1) -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": str(num_devices)}


def _wait_for_an_epoch(folder: Path, processes: list[subprocess.Popen], timeout: float = 300) -> None:
    """Waits on progress, not on a clock: until the first epoch's line is in metrics.jsonl."""
    metrics, deadline = folder / "metrics.jsonl", time.monotonic() + timeout
    while not (metrics.is_file() and metrics.read_text().strip()):
        assert all(p.poll() is None for p in processes), [p.communicate()[1][-2000:] for p in processes]
        assert time.monotonic() < deadline, "no epoch finished"
        time.sleep(0.02)


def _losses(folder: Path) -> list[float]:
    return [h["train_loss"] for h in json.loads((folder / "report.json").read_text())["history"]]


def test_sigterm_saves_at_the_next_boundary_exits_143_and_resume_is_bitwise(tmp_path):
    reference, folder = tmp_path / "whole", tmp_path / "preempted"
    subprocess.run(_command(reference), cwd=ROOT, env=_env(), check=True, capture_output=True, timeout=300)
    process = subprocess.Popen(_command(folder), cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_an_epoch(folder, [process])
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=300)
    finally:
        process.kill()
    assert process.returncode == 143, err[-2000:]
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("jaxtrain train: preempted (SIGTERM): stopped at step ") and "--resume" in err
    step = int(err.split("stopped at step ")[1].split(",")[0])
    assert Run(folder).intact_steps() == [step] and 43 < step  # saved after the first epoch, at once
    assert not (folder / "report.json").exists()
    resumed = subprocess.run([*_command(folder), "--resume"], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert _losses(folder) == _losses(reference)
    ours, theirs = (json.loads((f / "report.json").read_text())["test_accuracy"] for f in (folder, reference))
    assert ours == theirs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pair(folder: Path, *flags: str) -> list[subprocess.Popen]:
    # 20 epochs (about 0.25 s each here): jax's preemption service polls for SIGTERM once a second, then agrees
    # on a step, so the run must outlast the notice by more than that; 3 epochs ended before it came.
    group = ["--epochs", "20", "--coordinator", f"127.0.0.1:{_free_port()}", "--num-processes", "2", "--init-timeout", "60"]
    return [
        subprocess.Popen(_command(folder, *group, "--process-id", str(i), *flags), cwd=ROOT, env=_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]


def _finish(processes: list[subprocess.Popen]) -> list[tuple[int, str]]:
    try:
        return [(p.communicate(timeout=400)[1], p.returncode)[::-1] for p in processes]
    finally:
        for p in processes:
            p.kill()


@pytest.mark.slow
@pytest.mark.parametrize("signalled", [1, 0], ids=["process 1 signalled", "process 0 signalled"])
def test_on_two_processes_both_stop_at_one_agreed_step_and_resume_is_bitwise(tmp_path, signalled):
    reference, folder = tmp_path / "whole", tmp_path / "preempted"
    for code, err in _finish(_pair(reference)):
        assert code == 0, err[-2000:]
    processes = _pair(folder)
    _wait_for_an_epoch(folder, processes)
    processes[signalled].send_signal(signal.SIGTERM)
    results = _finish(processes)
    steps = set()
    for code, err in results:  # both stop, whichever was signalled, each with its notice
        assert code == 143, err[-2000:]
        notice = [line for line in err.splitlines() if line.startswith("jaxtrain train: preempted (SIGTERM)")]
        assert len(notice) == 1 and "Traceback" not in err
        steps.add(int(notice[0].split("stopped at step ")[1].split(",")[0]))
    assert len(steps) == 1 and Run(folder).intact_steps() == list(steps)
    for code, err in _finish(_pair(folder, "--resume")):
        assert code == 0, err[-2000:]
    assert _losses(folder) == _losses(reference)
