"""The primer's PyTorch program, timed with the report that jaxtrain's runs give (jaxtrain.compare.torch_side)."""

from jaxtrain import compare
from jaxtrain.config import Config
from jaxtrain.experiment import run


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


