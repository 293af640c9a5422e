"""``steps_per_call="auto"`` and ``data_on_device=None``: one table, backend × model, each cell measured; the
run's report names the choice and why, and counts the programs it compiled, none of them twice."""

import collections
import json
import re

import jax
import pytest

from conftest import ROOT
from jaxtrain import experiment
from jaxtrain.training import feeding
from jaxtrain.config import MODELS, Config


@pytest.mark.quick
def test_every_backend_and_model_has_one_cell_with_its_measured_reason():
    assert set(feeding.TABLE) == {(backend, family) for backend in feeding.BACKENDS for family in feeding.FAMILIES}
    assert {spec.family for spec in MODELS.values()} == set(feeding.FAMILIES)
    for (backend, _), cell in feeding.TABLE.items():
        if backend == "tpu":
            assert cell.reason.startswith("not measured on a TPU")
        else:  # a figure and the machine it was measured on
            assert re.search(r"\d[\d,.]*[kM]? samples/s", cell.reason) and ("CPU" in cell.reason or "H200" in cell.reason)


# What each backend's cell gives each model: the GPU measured fused epochs 4-8x one step a call for the CNN,
# the CPU 1.19x; an unmeasured backend takes the GPU's choice.
EXPECTED = {"cpu": {"mlp": "epoch", "cnn": "epoch"}, "gpu": {"mlp": "epoch", "cnn": "epoch"},
            "tpu": {"mlp": "epoch", "cnn": "epoch"}, "metal": {"mlp": "epoch", "cnn": "epoch"}}


@pytest.mark.quick
@pytest.mark.parametrize("backend", EXPECTED)
def test_auto_follows_the_backend_and_the_model(monkeypatch, backend):
    train = experiment.loaders(Config())["train"]
    monkeypatch.setattr(jax, "default_backend", lambda: backend)  # no GPU here: fake the backend
    for model, spec in MODELS.items():
        fed = experiment.feeding(Config(model=model), train)
        steps = EXPECTED[backend][spec.family]
        assert fed.settings() == {"steps_per_call": len(train) if steps == "epoch" else steps, "data_on_device": True}, model
        assert fed.why["steps_per_call"].startswith(f"auto ({backend}, {spec.family}): {steps} (")
        assert fed.why["data_on_device"].startswith("auto: the training set takes at most a quarter")
    if backend not in feeding.BACKENDS:
        assert f"not measured on {backend}" in fed.why["steps_per_call"]


@pytest.mark.quick
def test_a_whole_epoch_chosen_for_data_left_on_the_host_becomes_fused_calls():
    for fits, on_device in [(False, None), (True, False)]:
        fed = feeding.resolve("auto", on_device, "cnn", "gpu", batches=615, fits=fits)
        assert fed.settings() == {"steps_per_call": feeding.HOST_FED_STEPS, "data_on_device": False}
        assert "stays on the host" in fed.why["steps_per_call"]
    assert feeding.resolve("epoch", False, "cnn", "gpu", batches=615, fits=True).steps_per_call == 615  # asked for: kept


@pytest.mark.quick
def test_settings_given_are_kept_and_said_so():
    fed = feeding.resolve(4, False, "mlp", "gpu", batches=615, fits=True)
    assert fed.settings() == {"steps_per_call": 4, "data_on_device": False}
    assert fed.why == {"steps_per_call": "set by the configuration", "data_on_device": "set by the configuration"}
    with pytest.raises(ValueError, match="family='rnn'; expected one of mlp, cnn"):
        feeding.choose("rnn", "cpu")


@pytest.mark.quick
def test_the_docs_and_the_help_show_the_table(run_cli):
    assert feeding.markdown() in (ROOT / "docs" / "performance.md").read_text()
    done = run_cli("train", "--help")
    assert done.returncode == 0, done.stderr
    assert " ".join(feeding.summary().split()) in " ".join(done.stdout.split())


# At most: the initialization, the probe of XLA:CPU's options, the calls of an epoch (full batches and the
# short last batch), the evaluation step and the learning rate of each epoch. Eagerly, the initialization
# alone compiled 26.
MAX_PROGRAMS = 6


def test_a_cli_run_compiles_no_program_twice_and_counts_them(run_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("JAX_LOG_COMPILES", "1")  # jax logs each program it lowers: its name, shapes and placement
    report = tmp_path / "report.json"
    done = run_cli("train", "--epochs", "2", "--val-fraction", "0.1", "--report", str(report))
    assert done.returncode == 0, done.stderr[-3000:]
    lowered = collections.Counter(re.findall(r"Compiling (.+)", done.stderr))
    assert len(lowered) >= 4, done.stderr[-3000:]  # the log is read: the initialization, two calls, evaluation
    twice = [line[:300] for line, n in lowered.items() if n > 1]
    assert not twice, twice
    compiled = re.findall(r"Finished XLA compilation of (\S+)", done.stderr)
    result = json.loads(report.read_text())
    assert result["compilations"]["programs"] == len(compiled) <= MAX_PROGRAMS, compiled
    assert result["compilations"]["names"] == dict(collections.Counter(compiled))
    assert result["feeding"]["backend"] == "cpu"
    assert result["feeding"]["why"]["steps_per_call"].startswith("auto (cpu, mlp): epoch (2-core CPU")
    assert result["steps_per_call"] == result["feeding"]["steps_per_call"] > 1
