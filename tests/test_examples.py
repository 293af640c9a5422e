"""The examples run: the primer's program with jaxtrain, and as written in PyTorch (examples/)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_mnist_mlp_example_runs_on_digits():
    result = subprocess.run(
        [sys.executable, "examples/mnist_mlp.py", "--dataset", "digits", "--dry-run"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={"PYTHONPATH": str(ROOT), "PATH": ""},
    )
    assert result.returncode == 0, result.stderr
    assert "Epoch 1, Loss: " in result.stdout and "Accuracy on the test set:" in result.stdout


@pytest.mark.slow
def test_mnist_mlp_example_on_real_mnist(mnist_dir):
    result = subprocess.run(
        [sys.executable, "examples/mnist_mlp.py", "--data-dir", str(mnist_dir), "--dry-run"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={"PYTHONPATH": str(ROOT), "PATH": ""},
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_the_pytorch_example_runs_on_digits(torch):
    result = subprocess.run(
        [sys.executable, "examples/pytorch_mnist.py", "--dataset", "digits", "--dry-run"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={"PYTHONPATH": str(ROOT), "PATH": ""},
    )
    assert result.returncode == 0, result.stderr
    assert "Epoch 1, Loss: " in result.stdout and "Accuracy on the test set:" in result.stdout


@pytest.mark.slow
def test_mnist_nnx_example_runs_on_digits():
    result = subprocess.run(
        [sys.executable, "examples/mnist_nnx.py", "--dataset", "digits", "--dry-run"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={"PYTHONPATH": str(ROOT), "PATH": ""},
    )
    assert result.returncode == 0, result.stderr
    assert "Epoch 1, Loss: " in result.stdout and "Accuracy on the test set:" in result.stdout
    assert "Predicted classes of the first test images: [" in result.stdout
