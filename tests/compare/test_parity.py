"""Parity: PyTorch and jaxtrain from the same weights on the same batches (jaxtrain.compare.parity)."""

import json

import jax
import pytest

from jaxtrain import compare


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


def test_float64_parity_of_the_nnx_mlp_holds_step_for_step(torch, x64):
    config = compare.ParityConfig(model="nnx-mlp", optimizer="adam", dtype="float64", steps=60, dataset="digits")
    report = compare.parity(config, log=None)
    assert report["torch"]["losses"][-1] < 0.8 * report["torch"]["losses"][0]  # it trained
    assert report["max_rel_loss_diff"] <= 1e-10
    assert report["max_param_diff"] <= 1e-10
    assert report["test_accuracy_diff"] == 0


def test_float32_parity_on_mnist_stays_within_1e_6(mnist_dir, torch):
    config = compare.ParityConfig(
        model="mlp", optimizer="adam", dtype="float32", steps=50, dataset="mnist", data_dir=str(mnist_dir), float64_reference=True
    )
    report = compare.parity(config, log=None)
    assert report["max_rel_loss_diff"] <= 1e-6  # measured 1.9e-7
    assert abs(report["test_accuracy_diff"]) <= 0.5
    reference = report["float64_reference"]
    assert len(reference["losses"]) == 50
    assert reference["torch_max_rel_loss_diff"] <= 1e-4 and reference["jax_max_rel_loss_diff"] <= 1e-4


def test_float64_parity_refuses_32_bit_jax(torch):
    if jax.config.jax_enable_x64:
        pytest.skip("64-bit JAX is on in this process")
    with pytest.raises(ValueError, match="jax_enable_x64"):
        compare.parity(compare.ParityConfig(dtype="float64", steps=1), log=None)


@pytest.mark.slow
def test_float64_parity_of_the_cnn_from_the_cli(tmp_path, torch, run_cli):
    # In a process of its own: the CLI turns 64-bit JAX on for the whole process.
    report = tmp_path / "parity.json"
    result = run_cli("compare", "parity", "--model", "cnn", "--optimizer", "adam", "--weight-decay", "1e-4",
                     "--steps", "12", "--report", str(report))
    assert result.returncode == 0, result.stderr
    assert "max relative loss difference" in result.stdout
    data = json.loads(report.read_text())
    assert data["config"]["dtype"] == "float64" and data["steps"] == 12
    assert data["torch"]["losses"][-1] < 0.8 * data["torch"]["losses"][0]  # it trained
    assert data["max_rel_loss_diff"] <= 1e-10 and data["max_param_diff"] <= 1e-10
    assert data["max_batch_stats_diff"] <= 1e-10  # BatchNorm: torch's momentum and unbiased running variance
    assert data["test_accuracy_diff"] == 0




@pytest.mark.slow
# The CNN's 200 steps on the bundled 8×8 digits: on MNIST's 28×28 images they took about three minutes of CPU
# time (the docs give its 600 MNIST steps, measured by `compare figures`); the horizon and the bound are the same.
@pytest.mark.parametrize("model, steps, dataset", [("mlp", 600, "mnist"), ("cnn", 200, "digits")])
def test_float64_parity_over_hundreds_of_steps(model, steps, dataset, torch, x64, request):
    data_dir = str(request.getfixturevalue("mnist_dir")) if dataset == "mnist" else None
    config = compare.ParityConfig(model=model, optimizer="adam", dtype="float64", steps=steps, dataset=dataset,
                                  data_dir=data_dir)
    report = compare.parity(config, log=None)
    assert report["steps"] == steps
    assert report["max_rel_loss_diff"] <= 1e-10 and report["max_param_diff"] <= 1e-10
    assert report["max_batch_stats_diff"] is None if model == "mlp" else report["max_batch_stats_diff"] <= 1e-10
    assert report["test_accuracy_diff"] == 0
