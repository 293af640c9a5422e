"""The whole job, a fresh process from start to printed accuracy, beside the primer's PyTorch program
(jaxtrain.compare.job and jaxtrain/compare/primer_script.py)."""

import importlib.util
import json

import numpy as np
import pytest

from jaxtrain.sources import registry
from jaxtrain.cli import commands as cli
from jaxtrain.compare.job import PROGRAMS, SCRIPT, command, evaluated_at, time_to_accuracy
from jaxtrain.compare.torch_side import torch_model
from jaxtrain.config import Config


@pytest.mark.quick
def test_an_epochs_accuracy_is_known_where_the_next_epochs_training_starts():
    # Epoch 1's line at 3.0 s, epoch 2's at 4.5 s after 1.0 s of training: epoch 1's evaluation ended at 3.5 s.
    # The last: the accuracy line at 5.0 s, 0.25 s after the final evaluation started.
    assert evaluated_at([3.0, 4.5], [1.0, 1.0], 5.0, 0.25) == [3.5, 4.75]
    assert evaluated_at([3.0], [1.0], 3.0, 0.0) == [3.0]  # never before its own line
    history = [{"epoch": 1, "test_accuracy": 0.9}, {"epoch": 2, "test_accuracy": 0.97}, {"epoch": 3, "test_accuracy": 0.96}]
    assert time_to_accuracy(history, [3.5, 4.75, 6.0], 0.965) == (2, 4.75)
    assert time_to_accuracy(history, [3.5, 4.75, 6.0], 0.9) == (1, 3.5)  # the first that reaches it
    assert time_to_accuracy(history, [3.5, 4.75, 6.0], 0.98) is None


@pytest.mark.quick
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--models", "nnx-mlp"], "invalid choice: 'nnx-mlp'"),
        (["--repeats", "0"], "repeats 0 (--repeats): expected a positive integer"),
        (["--epochs", "0"], "epochs 0 (--epochs): expected a positive integer"),
        (["--targets", "mlp=1.5"], "target mlp=1.5; expected a test accuracy in (0, 1]"),
        (["--targets", "vit=0.5"], "target for model 'vit'"),
        (["--targets", "mlp"], "'mlp'; expected MODEL=ACCURACY"),
        (["--report", "/nonexistent/job.json"], "/nonexistent"),
    ],
)
def test_the_job_refuses_bad_input_in_one_line_before_any_work(args, message, capsys, monkeypatch):
    monkeypatch.setattr(cli.compare, "job", lambda *a, **k: pytest.fail("the job ran"))
    try:
        status = cli.main(["compare", "job", *args])
    except SystemExit as exit:  # refused by the flags' parser
        status = exit.code
    assert status != 0
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_the_job_times_each_program_from_its_start_to_its_accuracy(tmp_path, torch, capsys):
    report = tmp_path / "job.json"
    argv = ["compare", "job", "--models", "mlp", "--epochs", "2", "--repeats", "1", "--dataset", "digits",
            "--targets", "mlp=0.5", "--report", str(report)]
    assert cli.main(argv) == 0
    out, err = capsys.readouterr()
    assert "| mlp | 2 | jaxtrain-warm |" in out
    assert [line.split(":")[0] for line in err.splitlines() if line.endswith("started")] == [
        f"job mlp {program} [1/1]" for program in PROGRAMS]  # each process announced as it starts
    result = json.loads(report.read_text())
    rows = {row["program"]: row for row in result["rows"]}
    assert list(rows) == list(PROGRAMS) and rows["pytorch"]["vs_pytorch"] == 1
    for row, run in zip(result["rows"], result["runs"], strict=True):
        assert 0 < run["epoch_lines"][0] <= run["epoch_lines"][1] <= run["accuracy_seconds"] <= run["exit_seconds"]
        assert run["epoch_lines"] <= run["evaluated_at"] and run["evaluated_at"][-1] <= run["accuracy_seconds"]
        assert row["job_seconds"] == run["accuracy_seconds"] and row["reached"] == 1
        assert row["target_seconds"] == run["evaluated_at"][row["target_epoch"] - 1] <= row["job_seconds"]
        assert 0.5 <= run["accuracies"][row["target_epoch"] - 1] and 0.5 < row["test_accuracy"] <= 1
    cached = {run["program"]: run["cached_files"] for run in result["runs"]}
    assert cached["pytorch"] is None and cached["jaxtrain-cold"] == 0 and cached["jaxtrain-warm"] > 0
    # The same program, seed and data with the cache empty or warm: the same model.
    assert rows["jaxtrain-cold"]["test_accuracy"] == rows["jaxtrain-warm"]["test_accuracy"]


def _primer_script():
    spec = importlib.util.spec_from_file_location("primer_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_primer_script_reads_jaxtrains_data_and_builds_its_torch_twin(torch):
    script = _primer_script()
    for split in ("train", "test"):
        images, labels = script.load("digits", split, None)
        expected_images, expected_labels = registry.load("digits", split)
        np.testing.assert_array_equal(images, expected_images.transpose(0, 3, 1, 2))
        np.testing.assert_array_equal(labels, expected_labels)
    for name, ours in (("mlp", script.MyModel(64)), ("cnn", script.CNN(8))):
        twin = torch_model(name, 8)
        assert [(k, v.shape) for k, v in ours.state_dict().items()] == [(k, v.shape) for k, v in twin.state_dict().items()]
        assert [type(m) for m in ours.modules()][1:] == [type(m) for m in twin.modules()][1:]


def test_the_primer_script_reads_mnist_as_jaxtrain_does(mnist_dir, torch):
    images, labels = _primer_script().load("mnist", "test", str(mnist_dir))
    expected_images, expected_labels = registry.load("mnist", "test", str(mnist_dir))
    np.testing.assert_array_equal(images, expected_images.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(labels, expected_labels)


def test_the_job_is_the_cli_and_the_primer_with_the_same_model_data_and_schedule():
    config = Config(dataset="mnist", data_dir="mnist", model="cnn", epochs=3)
    torch_side = command("pytorch", config, "r.json")
    ours = command("jaxtrain", config, "r.json", "cache")
    assert ours[1:4] == ["-m", "jaxtrain", "train"] and torch_side[1] == str(SCRIPT)
    for flag, value in (("--model", "cnn"), ("--epochs", "3"), ("--dataset", "mnist"), ("--data-dir", "mnist")):
        assert torch_side[torch_side.index(flag) + 1] == ours[ours.index(flag) + 1] == value
    assert torch_side[torch_side.index("--schedule") + 1] == "cosine"  # the CLI's for the CNN
