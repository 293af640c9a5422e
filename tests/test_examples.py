"""The examples run: the primer's program with jaxtrain, and as written in PyTorch (examples/)."""

import os
import subprocess
import sys

import pytest

from conftest import ROOT

PRIMER_LINES = ("Epoch 1, Loss: ", "Accuracy on the test set:")


def _run_example(script: str, *flags: str) -> str:
    """Runs ``examples/SCRIPT --dry-run FLAGS`` from the checkout; returns its output, after asserting success."""
    result = subprocess.run(
        [sys.executable, f"examples/{script}", "--dry-run", *flags],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={"PATH": "", **{k: v for k, v in os.environ.items() if k == "PYTHONPATH"}},  # the package under test
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    "script, expected",
    [
        ("mnist_mlp.py", PRIMER_LINES),
        ("mnist_nnx.py", (*PRIMER_LINES, "Predicted classes of the first test images: [")),
        ("pytorch_mnist.py", PRIMER_LINES),
    ],
)
def test_each_example_runs_the_primers_program_on_digits(script, expected):
    if script.startswith("pytorch"):
        pytest.importorskip("torch")
    output = _run_example(script, "--dataset", "digits")
    assert all(line in output for line in expected), output


@pytest.mark.slow
def test_mnist_mlp_example_on_real_mnist(mnist_dir):
    _run_example("mnist_mlp.py", "--data-dir", str(mnist_dir))
