"""The train command: flags onto Config, and one-line errors for bad values (jaxtrain.cli)."""

import pytest

from jaxtrain import cli, experiment


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
