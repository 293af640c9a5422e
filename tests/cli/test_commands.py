"""The command line: flags onto Config, reports, help texts and one-line errors (jaxtrain.cli.commands)."""

import argparse
import dataclasses
import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT

from jaxtrain import Run, build, compare
from jaxtrain.parallel import devices
from jaxtrain.training import feeding
from jaxtrain.cli import commands as cli
from jaxtrain.config import Config


@pytest.mark.quick
def test_train_on_digits_writes_the_report(tmp_path, capsys):
    report = tmp_path / "run.json"
    assert cli.main(["train", "--dataset", "digits", "--epochs", "2", "--report", str(report)]) == 0
    out = capsys.readouterr().out
    assert "Epoch 1, Loss: " in out and "Epoch 2, Loss: " in out and "Accuracy" in out
    data = json.loads(report.read_text())
    for key in ("dataset", "model", "batch_size", "device", "test_accuracy", "compile_seconds", "samples_per_second"):
        assert key in data
    assert [h["epoch"] for h in data["history"]] == [1, 2]
    assert data["test_examples"] == 449 and all(0 <= r["test_accuracy"] <= 1 for r in [data, *data["history"]])
    for key in ("train_loss", "test_loss", "test_accuracy", "seconds"):
        assert key in data["history"][0]


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, message, code",
    [
        (["--epochs", "0"], "epochs 0 (--epochs): expected a positive integer", 2),
        (["--lr", "-1"], "lr -1.0 (--lr): expected a positive finite number", 2),
        (["--dataset", "mnist", "--data-dir", "/nonexistent"], "/nonexistent", 1),
        (["--report", "/nonexistent/out.json"], "/nonexistent", 1),
    ],
)
def test_bad_input_is_one_line_and_a_nonzero_exit(args, message, code, run_cli):
    result = run_cli("train", "--dataset", "digits", *args) if "--dataset" not in args else run_cli("train", *args)
    assert result.returncode == code
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_a_failed_run_leaves_an_earlier_report_whole(tmp_path, run_cli):
    report = tmp_path / "run.json"
    report.write_text('{"earlier": true}\n')
    result = run_cli("train", "--dataset", "mnist", "--data-dir", str(tmp_path), "--report", str(report))
    assert result.returncode != 0
    assert json.loads(report.read_text()) == {"earlier": True}


@pytest.mark.slow
def test_debug_shows_the_traceback(run_cli):
    result = run_cli("--debug", "train", "--epochs", "0")
    assert result.returncode == 2 and "Traceback" in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "jaxtrain train: error: epochs 0 (--epochs): expected a positive integer"


@pytest.mark.slow
def test_importing_the_library_and_the_study_loads_neither_torch_nor_tensorflow_nor_matplotlib(tmp_path):
    code = (
        "import sys, jaxtrain, jaxtrain.compare, jaxtrain.interop, jaxtrain.cli.commands; "
        "print(sorted(m for m in ('torch', 'tensorflow', 'matplotlib') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.quick
def test_train_flags_map_onto_config(configs):
    argv = ["train", "--model", "cnn", "--dropout", "0.2", "--no-batch-norm", "--dtype", "bfloat16",
            "--schedule", "cosine", "--warmup-steps", "50", "--grad-accum", "4", "--clip-norm", "1.5"]
    assert cli.main(argv) == 0
    config = configs[0]
    assert (config.model, config.dropout, config.batch_norm, config.dtype) == ("cnn", 0.2, False, "bfloat16")
    assert (config.schedule, config.warmup_steps, config.grad_accum, config.clip_norm) == ("cosine", 50, 4, 1.5)


@pytest.mark.quick
def test_train_defaults_leave_the_model_and_the_primers_loop_alone(configs):
    assert cli.main(["train", "--batch-norm", "--schedule", "step", "--step-size", "2", "--gamma", "0.5"]) == 0
    config = configs[0]
    assert (config.dropout, config.batch_norm, config.dtype) == (None, True, "float32")
    assert (config.step_size, config.gamma, config.grad_accum, config.clip_norm) == (2, 0.5, 1, None)
    assert cli.main(["train", "--schedule", "multistep", "--milestones", "3", "6"]) == 0
    assert configs[1].milestones == (3, 6)


def _actions(*command: str) -> dict:
    """A command's flags, by destination: ``_actions("compare", "parity")``."""
    parser = cli.parser()
    for word in command:
        parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[word]
    return {a.dest: a for a in parser._actions if a.dest != "help"}


def _train_actions() -> dict:
    return _actions("train")


@pytest.mark.quick
def test_every_parity_flag_defaults_to_parity_configs_default():
    actions = _actions("compare", "parity")
    for field in dataclasses.fields(compare.ParityConfig):
        assert actions[field.name].default == field.default, f"--{field.name.replace('_', '-')}"


@pytest.mark.quick
def test_every_train_flag_defaults_to_the_librarys_own_default():
    """One source of defaults: a flag's default is the declared default of what it sets (Config's field, as
    declared, before "auto" is resolved; Run's and initialize's arguments), so the CLI runs what the library runs."""
    actions, fields = _train_actions(), {f.name: f for f in dataclasses.fields(Config)}
    assert set(fields) - set(actions) == {"eval_batch_size"}  # every setting but that one has its flag
    fields.pop("eval_batch_size")
    for name, field in fields.items():
        assert actions[name].default == field.default, f"--{name.replace('_', '-')}"
    run = inspect.signature(Run).parameters
    for name in ("keep", "checkpoint_seconds", "checkpoint_every", "log_every", "resume"):
        assert actions[name].default == run[name].default, f"--{name.replace('_', '-')}"
    assert actions["init_timeout"].default == inspect.signature(devices.initialize).parameters["timeout"].default


@pytest.mark.quick
def test_the_defaults_are_the_primers_and_auto_resolves_for_the_model_the_flags_name(configs):
    """The primer's job is the default (MyModel, Adam at 1e-3, batch 32, 10 epochs, a constant rate), and
    the CNN, named on the command line, gets its own schedule: cosine."""
    assert cli.main(["train"]) == 0 and cli.main(["train", "--model", "cnn"]) == 0
    mlp, cnn = configs
    assert (mlp.model, mlp.optimizer, mlp.lr, mlp.batch_size, mlp.epochs, mlp.schedule) == ("mlp", "adam", 1e-3, 32, 10, "constant")
    assert (cnn.model, cnn.schedule, cnn.lr) == ("cnn", "cosine", 1e-3)
    assert cnn == Config(model="cnn") and mlp == Config()
    lrs = build.epoch_learning_rates(dataclasses.replace(cnn, epochs=3), batches_per_epoch=10)
    assert lrs[0] == 1e-3 and lrs[0] > lrs[1] > lrs[2] > 0  # annealed, not constant


def _readme_defaults() -> dict[str, str]:
    """The defaults that the README's table of training options gives, by flag: "--lr" -> "1e-3"."""
    text = (ROOT / "README.md").read_text()
    table = text[text.index("## Training options"):].split("\n\n")[1]
    shown = {}
    for row in table.splitlines()[2:]:
        flags, default = (cell.strip() for cell in row.strip("|").split("|")[:2])
        names = re.findall(r"(--[a-z-]+)", flags)
        values = [v.strip() for v in default.split(",")]
        for name, value in zip(names, values if len(values) == len(names) else [default] * len(names)):
            shown[name] = value
    return shown


@pytest.mark.quick
def test_the_readmes_table_gives_the_librarys_defaults():
    shown, fields = _readme_defaults(), {f.name: f.default for f in dataclasses.fields(Config)}
    assert {"--model", "--lr", "--batch-size", "--epochs", "--optimizer", "--schedule"} <= set(shown)
    for flag, text in shown.items():
        default = fields[flag[2:].replace("-", "_")]
        if default is None:  # the text says what None means: "the model's", "no clipping"
            assert not re.match(r"`?[\d.]", text), f"{flag}: {text}"
            continue
        value = text.strip("`").split("`")[0].split(":")[0].strip()
        assert (value == default if isinstance(default, str) else float(value) == default), f"{flag}: {text} != {default!r}"
    assert "constant for the MLP, cosine for the CNN" in shown["--schedule"]  # what auto gives, as --help says


@pytest.mark.quick
def test_help_shows_what_auto_does_for_each_model(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split()).replace("- ", "-")
    assert "auto: constant for mlp and nnx-mlp, cosine for cnn and nnx-cnn (default: auto)" in text
    assert f"{feeding.summary()} (default: auto)" in text  # --steps-per-call: jaxtrain.training.feeding's table, per backend
    assert "(default: constant)" not in text and "--lr LR learning rate (default: 0.001)" in text


@pytest.mark.quick
@pytest.mark.parametrize(
    "flags, message",
    [
        (["--dropout", "1"], "dropout 1.0 (--dropout): expected a probability in [0, 1)"),
        (["--grad-accum", "0"], "grad accum 0 (--grad-accum): expected a positive integer"),
        (["--clip-norm", "-2"], "clip norm -2.0 (--clip-norm): expected a positive finite number"),
        (["--warmup-steps", "-5"], "warmup steps -5 (--warmup-steps): expected an integer >= 0"),
        (["--seed", "-1"], "seed -1 (--seed): expected an integer in [0, 2**32)"),
        (["--seed", str(2**32)], f"seed {2**32} (--seed): expected an integer in [0, 2**32)"),
        (["--momentum", "0.9"], "momentum 0.9 (--momentum): expected 0 with optimizer='adam' (momentum is sgd's)"),
        (["--data-dir", "x"], "data dir 'x' (--data-dir): expected none with dataset='digits', which is bundled"),
        (["--schedule", "multistep"], "milestones () (--milestones): expected at least one epoch with schedule='multistep'"),
        (["--weight-decay", "-1"], "weight decay -1.0 (--weight-decay): expected a finite number >= 0"),
        (["--lr", "inf"], "lr inf (--lr): expected a positive finite number"),
        (["--val-fraction", "1"], "val fraction 1.0 (--val-fraction): expected a fraction in [0, 1) of the training data"),
    ],
)
def test_bad_values_name_the_flag_in_one_line_with_exit_code_2(configs, capsys, flags, message):
    assert cli.main(["train", *flags]) == 2
    assert capsys.readouterr().err == f"jaxtrain train: error: {message}\n"
    assert not configs


@pytest.mark.quick
@pytest.mark.parametrize(
    "args, message",
    [
        (["parity", "--steps", "0"], "steps 0 (--steps)"),
        (["parity", "--optimizer", "adam", "--momentum", "0.9"], "optimizer='adam'"),
        (["parity", "--lr", "-1"], "lr -1.0 (--lr)"),
        (["parity", "--float64-reference"], "float64_reference"),
        (["bench", "--epochs", "1"], "epochs 1 (--epochs): expected at least 2"),
        (["bench", "--plot", "/nonexistent/bench.png"], "/nonexistent"),
        (["bench", "--plot", "bench.txt"], "--plot bench.txt: expected a .png file"),
    ],
)
def test_compare_refuses_bad_input_in_one_line_before_any_work(args, message, capsys, monkeypatch):
    monkeypatch.setattr(cli.compare, "bench", lambda *a, **k: pytest.fail("the benchmark ran"))
    assert cli.main(["compare", *args]) != 0
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.quick
@pytest.mark.parametrize("command", [["train"], ["compare", "parity"], ["compare", "bench"]])
def test_help_gives_true_defaults(command, capsys):
    with pytest.raises(SystemExit):
        cli.main([*command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: None)" not in text and "(default: False)" not in text and "(default: True)" not in text
    assert ("--data-dir DATA_DIR mnist: a folder with its IDX files (default: downloaded once into $JAXTRAIN_DATA/mnist, "
            "else $XDG_CACHE_HOME/jaxtrain/datasets/mnist or ~/.cache/jaxtrain/datasets/mnist)") in text


def _write_idx(folder, labels, images=None):
    """A small MNIST folder: IDX files of 28×28 images and the given labels, for both splits."""
    import struct

    labels = np.asarray(labels, np.uint8)
    images = np.zeros((len(labels), 28, 28), np.uint8) if images is None else images
    for prefix in ("train", "t10k"):
        (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">BBBBI", 0, 0, 8, 1, len(labels)) + labels.tobytes())
        header = struct.pack(">BBBBIII", 0, 0, 8, 3, len(images), 28, 28)
        (folder / f"{prefix}-images-idx3-ubyte").write_bytes(header + images.tobytes())


@pytest.mark.quick
def test_bad_data_is_one_line_naming_the_file_and_exit_code_1(tmp_path, capsys):
    _write_idx(tmp_path, [1, 2, 10, 255])
    assert cli.main(["train", "--dataset", "mnist", "--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "train-labels-idx1-ubyte" in err and "outside 0..9" in err
    (tmp_path / "train-labels-idx1-ubyte").unlink()
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b\x08\x00" + b"\x00" * 6)  # a gzip cut short
    assert cli.main(["train", "--dataset", "mnist", "--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "train-labels-idx1-ubyte.gz" in err


@pytest.mark.quick
def test_an_unwritable_report_fails_before_training(tmp_path, configs, capsys):
    assert cli.main(["train", "--report", str(tmp_path)]) == 1
    assert capsys.readouterr().err == f"jaxtrain train: error: --report {tmp_path}: a folder; expected a file name\n"
    assert not configs and list(tmp_path.iterdir()) == []


def _write_image_folder(root, classes=("circle", "square", "stripe"), n=12, size=12):
    """PNG files of three classes that a model can tell apart: bright pixels in different places."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", n), ("test", n // 3)):
        for label, name in enumerate(classes):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 60, (size, size), dtype=np.uint8)
                pixels[label * 4 : label * 4 + 4] += 180  # a bright band whose row tells the class
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")


@pytest.mark.quick
def test_an_image_folder_trains_from_the_cli_and_predict_names_the_classes(tmp_path, capsys):
    _write_image_folder(tmp_path / "shapes")
    run_dir, report = tmp_path / "run", tmp_path / "report.json"
    argv = ["train", "--dataset", f"folder:{tmp_path / 'shapes'}", "--model", "nnx-mlp", "--epochs", "1",
            "--batch-size", "4", "--lr", "0.01", "--run-dir", str(run_dir), "--report", str(report)]
    assert cli.main(argv) == 0
    data = json.loads(report.read_text())
    assert data["class_names"] == ["circle", "square", "stripe"] and data["num_classes"] == 3
    assert data["train_examples"] == 36 and data["test_examples"] == 12
    assert json.loads((run_dir / "config.json").read_text())["class_names"] == ["circle", "square", "stripe"]
    capsys.readouterr()
    image = tmp_path / "shapes" / "test" / "stripe" / "0.png"
    assert cli.main(["predict", "--run-dir", str(run_dir), str(image)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{image}: ") and line.split(": ")[1].split(" (")[0] in ("circle", "square", "stripe")
    assert cli.main(["predict", "--run-dir", str(run_dir), "--json", str(image)]) == 0
    assert json.loads(capsys.readouterr().out)[0]["name"] in ("circle", "square", "stripe")


@pytest.mark.parametrize("name, model", [("fashion_mnist", "mlp"), ("cifar10", "cnn")])
def test_a_tensorflow_datasets_name_trains_one_epoch_from_the_cli(name, model, tmp_path, capsys, monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")
    # mock_data fakes the reading of a prepared dataset, not the folder that is_prepared looks at.
    monkeypatch.setattr(tfds.core.DatasetBuilder, "is_prepared", lambda self: True)
    report = tmp_path / "report.json"
    with tfds.testing.mock_data(num_examples=48):
        argv = ["train", "--dataset", name, "--model", model, "--epochs", "1", "--batch-size", "16", "--report", str(report)]
        assert cli.main(argv) == 0
    assert "Epoch 1, Loss: " in capsys.readouterr().out
    data = json.loads(report.read_text())
    assert data["dataset"] == name and data["num_classes"] == 10 and data["train_examples"] == 48
    assert np.isfinite(data["history"][0]["train_loss"])


def test_an_unknown_dataset_name_is_one_line_saying_what_to_do(configs, capsys):
    pytest.importorskip("tensorflow_datasets")
    assert cli.main(["train", "--dataset", "cifar11"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jaxtrain train: error: dataset 'cifar11' (--dataset): expected mnist, digits, ")
    assert "'cifar11' is not a tensorflow-datasets name" in err and len(err.strip().splitlines()) == 1
    assert not configs


def test_the_compile_cache_keeps_the_programs_that_the_next_run_loads(tmp_path):
    """--compile-cache DIR keeps the run's programs and a second run loads them and trains the same; a run of
    other epochs and another rate (the CNN's cosine schedule) loads the same training programs;
    --no-compile-cache keeps none, neither in the default folder nor in JAX's own."""
    def train(*flags: str, default_cache: Path, jax_cache: Path | None = None, epochs: int = 1) -> dict:
        report = tmp_path / "report.json"
        command = [sys.executable, "-m", "jaxtrain", "train", "--dataset", "digits", "--model", "cnn",
                   "--epochs", str(epochs), "--report", str(report), *flags]
        env = {**os.environ, "JAXTRAIN_COMPILE_CACHE": str(default_cache)}
        if jax_cache:
            env["JAX_COMPILATION_CACHE_DIR"] = str(jax_cache)
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(report.read_text())

    cache, default = tmp_path / "cache", tmp_path / "default"
    first = train("--compile-cache", str(cache), default_cache=default)
    assert any("_steps_fn-" in f.name for f in cache.iterdir())  # the training calls
    second = train("--compile-cache", str(cache), default_cache=default)
    assert [e["train_loss"] for e in second["history"]] == [e["train_loss"] for e in first["history"]]
    assert second["test_accuracy"] == first["test_accuracy"]
    steps = {f.name for f in cache.iterdir() if "_steps_fn-" in f.name}
    train("--compile-cache", str(cache), "--lr", "0.002", default_cache=default, epochs=2)
    assert {f.name for f in cache.iterdir() if "_steps_fn-" in f.name} == steps  # nothing new to compile
    train("--no-compile-cache", default_cache=default, jax_cache=tmp_path / "jax")
    assert not default.exists() and not (tmp_path / "jax").exists()


@pytest.mark.quick
def test_an_unusable_compile_cache_fails_before_training(tmp_path, configs, capsys):
    taken = tmp_path / "file"
    taken.write_text("")
    assert cli.main(["train", "--compile-cache", str(taken)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"jaxtrain train: error: --compile-cache {taken}: ") and err.count("\n") == 1
    assert not configs
