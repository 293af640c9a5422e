"""The command line: flags onto Config, reports, and one-line errors for bad values (jaxtrain.cli)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from jaxtrain import cli, experiment

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jaxtrain", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_train_on_digits_writes_the_report(tmp_path, capsys):
    report = tmp_path / "run.json"
    assert cli.main(["train", "--dataset", "digits", "--epochs", "2", "--report", str(report)]) == 0
    out = capsys.readouterr().out
    assert "Epoch 1, Loss: " in out and "Epoch 2, Loss: " in out and "Accuracy" in out
    data = json.loads(report.read_text())
    for key in ("dataset", "model", "batch_size", "device", "test_accuracy", "compile_seconds", "samples_per_second"):
        assert key in data
    assert [h["epoch"] for h in data["history"]] == [1, 2]
    for key in ("train_loss", "test_loss", "test_accuracy", "seconds"):
        assert key in data["history"][0]


@pytest.mark.parametrize(
    "args,message",
    [
        (["--epochs", "0"], "epochs=0"),
        (["--lr", "-1"], "lr=-1.0"),
        (["--dataset", "mnist", "--data-dir", "/nonexistent"], "/nonexistent"),
        (["--report", "/nonexistent/out.json"], "/nonexistent"),
    ],
)
def test_bad_input_is_one_line_and_a_nonzero_exit(args, message):
    result = _cli("train", "--dataset", "digits", *args) if "--dataset" not in args else _cli("train", *args)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_failed_run_leaves_an_earlier_report_whole(tmp_path):
    report = tmp_path / "run.json"
    report.write_text('{"earlier": true}\n')
    result = _cli("train", "--dataset", "mnist", "--data-dir", str(tmp_path), "--report", str(report))
    assert result.returncode != 0
    assert json.loads(report.read_text()) == {"earlier": True}


def test_import_loads_neither_torch_nor_tensorflow():
    code = "import sys, jaxtrain; print(sorted(m for m in ('torch', 'tensorflow') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


@pytest.fixture
def configs(monkeypatch):
    """Captures the Config that the train command would run, without running it."""
    seen = []
    monkeypatch.setattr(experiment, "run", lambda config, log=print: seen.append(config) or {})
    return seen


def test_train_flags_map_onto_config(configs):
    argv = ["train", "--model", "cnn", "--dropout", "0.2", "--no-batch-norm", "--dtype", "bfloat16",
            "--schedule", "cosine", "--warmup-steps", "50", "--grad-accum", "4", "--clip-norm", "1.5"]
    assert cli.main(argv) == 0
    config = configs[0]
    assert (config.model, config.dropout, config.batch_norm, config.dtype) == ("cnn", 0.2, False, "bfloat16")
    assert (config.schedule, config.warmup_steps, config.grad_accum, config.clip_norm) == ("cosine", 50, 4, 1.5)


def test_train_defaults_leave_the_model_and_the_primers_loop_alone(configs):
    assert cli.main(["train", "--batch-norm", "--schedule", "step", "--step-size", "2", "--gamma", "0.5"]) == 0
    config = configs[0]
    assert (config.dropout, config.batch_norm, config.dtype) == (None, True, "float32")
    assert (config.step_size, config.gamma, config.grad_accum, config.clip_norm) == (2, 0.5, 1, None)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--dropout", "1"], "dropout=1.0; expected a probability in [0, 1)"),
        (["--grad-accum", "0"], "grad_accum=0; expected a positive integer"),
        (["--clip-norm", "-2"], "clip_norm=-2.0; expected a positive number"),
        (["--warmup-steps", "-5"], "warmup_steps=-5; expected an integer >= 0"),
    ],
)
def test_bad_values_give_one_line_and_a_nonzero_exit(configs, capsys, flags, message):
    assert cli.main(["train", *flags]) == 1
    err = capsys.readouterr().err
    assert err == f"jaxtrain train: error: {message}\n"
    assert not configs
