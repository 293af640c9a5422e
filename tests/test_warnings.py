"""The command line's main jobs raise no warning: each runs with Python's warnings turned into errors."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

# Anything a warning leaves in stderr: the warning itself, an absl/logging "WARNING:" line, or the
# traceback of a warning raised as an error (in a thread too, where it would not change the exit status).
_NOISE = re.compile(r"warn|error|traceback", re.IGNORECASE)


def _run_with_warnings_as_errors(cwd, *args: str) -> str:
    """Runs ``python -m jaxtrain ARGS...`` with ``PYTHONWARNINGS=error`` (child processes included); returns
    its stdout once it has exited 0 with nothing that looks like a warning in stderr."""
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    done = subprocess.run([sys.executable, "-m", "jaxtrain", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not _NOISE.search(done.stderr), done.stderr[-3000:]
    return done.stdout


@pytest.mark.quick
def test_training_on_device_resident_data_then_evaluating_and_predicting_warn_of_nothing(tmp_path):
    # Device-resident data is the default for digits; its compiled calls take the epoch's int64 indices.
    out = _run_with_warnings_as_errors(tmp_path, "train", "--dataset", "digits", "--epochs", "1", "--data-on-device", "--run-dir", "run")
    assert "Accuracy on the 449 test images" in out
    assert "accuracy" in _run_with_warnings_as_errors(tmp_path, "evaluate", "--run-dir", "run")
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8) * 4).save(tmp_path / "digit.png")
    assert _run_with_warnings_as_errors(tmp_path, "predict", "--run-dir", "run", "digit.png").startswith("digit.png: ")


@pytest.mark.quick
def test_training_the_cnn_from_the_host_warns_of_nothing(tmp_path):
    # The CNN's steps compile with jaxtrain's XLA options; the host feeds each batch.
    out = _run_with_warnings_as_errors(tmp_path, "train", "--dataset", "digits", "--model", "cnn", "--epochs", "1", "--no-data-on-device")
    assert "Accuracy on the 449 test images" in out
