"""benchmarks/gpu.sh, the GPU machine's benchmarks, run with --quick on whatever device is here (the CPU), so
that its commands cannot rot while no GPU is at hand."""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT


@pytest.mark.skipif(shutil.which("timeout") is None, reason="the script limits each step with coreutils' timeout")
def test_the_gpu_script_runs_every_step_quick_and_writes_its_tables_and_results(tmp_path, torch):
    out = tmp_path / "out"
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--quick", str(out)], cwd=ROOT,
                          env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    announced = re.findall(r"^\[ *\d+ s\] (\w+): (started|done)", done.stdout, re.M)
    assert announced == [(name, event) for name in ("device", "job", "bench", "parity") for event in ("started", "done")]
    assert json.loads((out / "job.json").read_text())["rows"][0]["program"] == "pytorch"
    assert json.loads((out / "bench.json").read_text())["rows"][0]["program"] == "jaxtrain"
    assert json.loads((out / "parity.json").read_text())["max_rel_loss_diff"] < 1e-6
    summary = (out / "summary.md").read_text()
    for table in ("| model | epochs | program | to the printed accuracy s", "| model | batch | program | samples/s"):
        assert table in summary
