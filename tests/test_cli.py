import json
import subprocess
import sys
from pathlib import Path

import pytest

from jaxtrain.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jaxtrain", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_train_on_digits_writes_the_report(tmp_path, capsys):
    report = tmp_path / "run.json"
    assert main(["train", "--dataset", "digits", "--epochs", "2", "--report", str(report)]) == 0
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
