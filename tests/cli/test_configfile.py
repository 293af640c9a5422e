"""--config FILE: a command's flags from TOML or JSON, the command line over them (jaxtrain.cli.configfile)."""

import argparse
import dataclasses
import json
from pathlib import Path

import pytest

from jaxtrain import experiment
from jaxtrain.cli import configfile
from jaxtrain.cli import commands as cli
from jaxtrain.config import Config


def _command(name: str) -> argparse.ArgumentParser:
    parser = cli.parser()
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]


@pytest.mark.quick
def test_a_toml_files_values_with_the_command_line_over_them_wherever_it_stands(tmp_path, configs):
    path = tmp_path / "run.toml"
    path.write_text('model = "cnn"\nlr = 0.01\nepochs = 3\nbatch-size = 64\nbatch_norm = false\nmilestones = [1, 2]\n'
                    'schedule = "multistep"\neval_batch_size = 100\n')
    assert cli.main(["train", "--config", str(path), "--epochs", "2"]) == 0
    assert cli.main(["train", "--lr", "0.5", "--config", str(path)]) == 0
    first, second = configs
    assert (first.model, first.lr, first.epochs, first.batch_size, first.batch_norm) == ("cnn", 0.01, 2, 64, False)
    assert (first.milestones, first.schedule, first.eval_batch_size) == ((1, 2), "multistep", 100)
    assert (second.lr, second.epochs) == (0.5, 3)


@pytest.mark.quick
def test_a_json_file_and_the_defaults_where_it_says_nothing(tmp_path, configs):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"optimizer": "sgd", "momentum": 0.9, "clip_norm": None, "steps_per_call": 4}))
    assert cli.main(["train", "--config", str(path)]) == 0
    assert configs[0] == Config(optimizer="sgd", momentum=0.9, steps_per_call=4)


def test_a_run_folders_config_json_is_a_config_file(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "run"
    argv = ["train", "--model", "cnn", "--epochs", "1", "--batch-size", "64", "--lr", "0.003", "--val-fraction", "0.2",
            "--no-batch-norm", "--run-dir", str(folder)]
    assert cli.main(argv) == 0
    recorded = json.loads((folder / "config.json").read_text())
    seen = []
    monkeypatch.setattr(experiment, "run", lambda config, **_: seen.append(config) or {})
    assert cli.main(["train", "--config", str(folder / "config.json"), "--epochs", "2"]) == 0
    assert {**dataclasses.asdict(seen[0]), "milestones": []} == {**{k: v for k, v in recorded.items() if k not in configfile.RECORDED},
                                                                  "epochs": 2, "milestones": []}
    capsys.readouterr()
    assert cli.main(["summary", "--config", str(folder / "config.json")]) == 0
    assert "CNN" in capsys.readouterr().out


@pytest.mark.quick
def test_every_flag_of_train_and_summary_can_be_set_in_a_file(tmp_path):
    """Each flag's default, written into a file, reads back as the same value: a new flag needs no more work."""
    for name in ("train", "summary"):
        command = _command(name)
        actions = [a for a in command._actions if a.option_strings and a.dest not in ("help", "config")]
        settings, seen = {}, set()
        for action in actions:  # a destination's default is its first flag's (--compile-cache's, not --no-compile-cache's)
            if action.default is not None and action.dest not in seen:
                settings[action.dest] = list(action.default) if isinstance(action.default, tuple) else action.default
            seen.add(action.dest)
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(settings, default=str))
        values = configfile.defaults(path, command)
        assert values == settings, name


@pytest.mark.parametrize(
    "text, message",
    [
        ("lorn_rate = 0.1", "lorn_rate: unknown key; expected a flag of train (--help lists them)"),
        ("epoch = 3", "epoch: unknown key (did you mean epochs?); expected a flag of train"),
        ('lr = "fast"', 'lr = "fast"; expected a number (as --lr takes)'),
        ("epochs = 2.5", "epochs = 2.5; expected an integer (as --epochs takes)"),
        ("epochs = true", "epochs = true; expected an integer (as --epochs takes)"),
        ("batch_norm = 1", "batch_norm = 1; expected true or false (as --batch-norm gives)"),
        ('model = "vgg"', 'model = "vgg"; expected one of mlp, cnn, nnx-mlp, nnx-cnn (as --model takes)'),
        ("milestones = 3", "milestones = 3; expected a list of integers (as --milestones takes)"),
        ('steps_per_call = "x"', "expected what --steps-per-call takes ('x'; expected a positive integer, 'epoch' or 'auto')"),
        ("compile_cache = true", "expected a string (as --compile-cache takes) or false (as --no-compile-cache gives)"),
        ("eval_batch_size = 1.5", "eval_batch_size = 1.5; expected an integer"),
        ("batch-size = 3\nbatch_size = 4", "batch_size: set twice (as batch_size and batch-size); expected it once"),
        ('config = "other.toml"', "config: expected no --config inside a configuration file"),
        ("lr = ", "not TOML (Invalid value (at line 1, column 6))"),
    ],
)
def test_a_bad_file_is_refused_in_one_line_naming_the_key(text, message, tmp_path, capsys, configs):
    path = tmp_path / "run.toml"
    path.write_text(text + "\n")
    assert cli.main(["train", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"jaxtrain train: error: --config {path}: ") and message in err, err
    assert len(err.strip().splitlines()) == 1 and not configs


@pytest.mark.parametrize(
    "name, content, message, code",
    [
        ("run.json", "[1, 2]", "a JSON list; expected an object of settings", 2),
        ("run.json", '{"made_by": "fit", "dataset": null}', "written by fit from Python, which records no flags", 2),
        ("run.yaml", "lr: 1", "a .yaml file; expected a .toml or .json file", 2),
        ("missing.toml", None, "No such file or directory; expected a readable .toml or .json file", 1),
    ],
)
def test_a_file_that_is_no_configuration_is_refused(name, content, message, code, tmp_path, capsys, configs):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    assert cli.main(["train", "--config", str(path)]) == code
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.quick
def test_a_value_in_range_of_its_type_but_out_of_range_is_the_configurations_error(tmp_path, capsys, configs):
    path = tmp_path / "run.toml"
    path.write_text("epochs = 0\n")
    assert cli.main(["train", "--config", str(path)]) == 2
    assert "epochs 0 (--epochs): expected a positive integer" in capsys.readouterr().err


@pytest.mark.quick
def test_the_readmes_toml_file_and_command_run(tmp_path, configs):
    """README's run.toml (a text block) with the command that reads it, which the docs' test skips."""
    from conftest import ROOT

    text = (ROOT / "README.md").read_text()
    toml = text[text.index("```text\n# run.toml\n") + len("```text\n"):]
    (tmp_path / "run.toml").write_text(toml[: toml.index("```")])
    command = text[text.index("python -m jaxtrain train --config run.toml"):].splitlines()[0].split()
    assert command[3:5] == ["train", "--config"]
    argv = [str(tmp_path / "run.toml") if word == "run.toml" else word for word in command[3:]]
    argv = [word for word in argv if word not in ("--dataset", "mnist", "--data-dir", "path/to/mnist")]
    assert cli.main(argv) == 0
    assert (configs[0].model, configs[0].batch_size, configs[0].milestones, configs[0].epochs) == ("cnn", 64, (3, 6), 8)
