import json
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from jaxtrain import compare
from jaxtrain.cli import main
from jaxtrain.experiment import Config, run

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jaxtrain", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_importing_the_study_loads_neither_torch_nor_tensorflow():
    code = (
        "import sys, jaxtrain, jaxtrain.compare, jaxtrain.interop, jaxtrain.cli; "
        "print(sorted(m for m in ('torch', 'tensorflow', 'matplotlib') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "optimizer,kwargs", [("sgd", dict(momentum=0.9, nesterov=True, weight_decay=1e-4)), ("adamw", dict())]
)
def test_float64_parity_of_the_mlp_holds_step_for_step(optimizer, kwargs, torch, x64):
    config = compare.ParityConfig(model="mlp", optimizer=optimizer, dtype="float64", steps=60, dataset="digits", **kwargs)
    report = compare.parity(config, log=None)
    assert report["steps"] == 60 and len(report["torch"]["losses"]) == len(report["jax"]["losses"]) == 60
    assert report["torch"]["losses"][-1] < 0.8 * report["torch"]["losses"][0]  # it trained
    assert report["max_rel_loss_diff"] <= 1e-10
    assert report["max_param_diff"] <= 1e-10
    assert report["max_batch_stats_diff"] is None
    assert report["test_accuracy_diff"] == 0


def test_float64_parity_of_the_cnn_from_the_cli(tmp_path, torch):
    # In a process of its own: the CLI turns 64-bit JAX on for the whole process.
    report = tmp_path / "parity.json"
    result = _cli("compare", "parity", "--model", "cnn", "--optimizer", "adam", "--weight-decay", "1e-4",
                  "--steps", "12", "--report", str(report))
    assert result.returncode == 0, result.stderr
    assert "max relative loss difference" in result.stdout
    data = json.loads(report.read_text())
    assert data["config"]["dtype"] == "float64" and data["steps"] == 12
    assert data["torch"]["losses"][-1] < 0.8 * data["torch"]["losses"][0]  # it trained
    assert data["max_rel_loss_diff"] <= 1e-10 and data["max_param_diff"] <= 1e-10
    assert data["max_batch_stats_diff"] <= 1e-10  # BatchNorm: torch's momentum and unbiased running variance
    assert data["test_accuracy_diff"] == 0


def test_float32_parity_on_mnist_stays_within_1e_4(mnist_dir, torch):
    config = compare.ParityConfig(
        model="mlp", optimizer="adam", dtype="float32", steps=50, dataset="mnist", data_dir=str(mnist_dir), float64_reference=True
    )
    report = compare.parity(config, log=None)
    assert report["max_rel_loss_diff"] <= 1e-4
    assert abs(report["test_accuracy_diff"]) <= 0.5
    reference = report["float64_reference"]
    assert len(reference["losses"]) == 50
    assert reference["torch_max_rel_loss_diff"] <= 1e-4 and reference["jax_max_rel_loss_diff"] <= 1e-4


def test_float64_parity_refuses_32_bit_jax(torch):
    if jax.config.jax_enable_x64:
        pytest.skip("64-bit JAX is on in this process")
    with pytest.raises(ValueError, match="jax_enable_x64"):
        compare.parity(compare.ParityConfig(dtype="float64", steps=1), log=None)


@pytest.mark.parametrize(
    "args,message",
    [
        (["parity", "--steps", "0"], "steps=0"),
        (["parity", "--optimizer", "adam", "--momentum", "0.9"], "optimizer='adam'"),
        (["parity", "--lr", "-1"], "lr=-1.0"),
        (["parity", "--float64-reference"], "float64_reference"),
        (["bench", "--epochs", "0"], "epochs=0"),
        (["bench", "--plot", "/nonexistent/bench.png"], "/nonexistent"),
    ],
)
def test_bad_input_is_one_line_and_a_nonzero_exit(args, message, capsys):
    assert main(["compare", *args]) != 0
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_torch_run_reports_what_experiment_run_reports(torch):
    config = Config(dataset="digits", epochs=2)
    ours = compare.torch_run(config, "dataloader", log=None)
    theirs = run(config, log=None)
    shared = {"dataset", "model", "batch_size", "device", "history", "test_accuracy", "test_loss",
              "compile_seconds", "eval_seconds", "samples_per_second", "train_examples", "test_examples"}
    assert shared <= ours.keys() and shared <= theirs.keys()
    assert all(h.keys() <= j.keys() for h, j in zip(ours["history"], theirs["history"], strict=True))
    assert ours["test_examples"] == theirs["test_examples"] == 449
    assert ours["test_accuracy"] > 0.7 and ours["history"][-1]["train_loss"] < ours["history"][0]["train_loss"]


def test_bench_on_a_tiny_configuration(tmp_path, torch):
    report, plot = tmp_path / "bench.json", tmp_path / "bench.png"
    assert main(["compare", "bench", "--epochs", "1", "--models", "mlp", "--report", str(report), "--plot", str(plot)]) == 0
    data = json.loads(report.read_text())
    rows = data["rows"]
    assert [row["program"] for row in rows] == ["pytorch-dataloader", "pytorch-tensors", "jaxtrain"]
    assert rows[0]["vs_primer"]["samples_per_second"] == 1
    for row in rows:
        assert row["samples_per_second"] > 0 and row["compile_seconds"] > 0 and row["epoch_seconds"] > 0
        assert row["eval_seconds"] > 0
        assert 50 < row["peak_memory_mib"] < 10_000
        assert row["vs_primer"]["samples_per_second"] == pytest.approx(row["samples_per_second"] / rows[0]["samples_per_second"])
        assert 0.5 < row["test_accuracy"] <= 1
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_pytorch_example_runs_on_digits(torch):
    result = subprocess.run(
        [sys.executable, "examples/pytorch_mnist.py", "--dataset", "digits", "--dry-run"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={"PYTHONPATH": str(ROOT), "PATH": ""},
    )
    assert result.returncode == 0, result.stderr
    assert "Epoch 1, Loss: " in result.stdout and "Accuracy on the test set:" in result.stdout
