"""The one benchmark runner: presets, rows, the table and the plot (jaxtrain.compare.bench)."""

import json

import pytest

from jaxtrain import compare, experiment
from jaxtrain.cli import main
from jaxtrain.config import Config


@pytest.mark.slow
def test_the_feeding_preset_times_every_mode_beside_the_primer(torch):
    result = compare.bench(Config(dataset="digits", epochs=2), programs=compare.PRESETS["feeding"], log=None)
    rows = result["rows"]
    assert [row["program"] for row in rows] == list(compare.PRESETS["feeding"])
    assert result["machine"]["matmul_gflops"] > 0 and result["machine"]["copy_gbps"] > 0
    assert rows[0]["vs_primer"] == 1
    for row, run in zip(rows, result["runs"], strict=True):
        assert row["samples_per_second"] == experiment.steady_speed(run["history"])  # median of epochs 2..
        assert row["vs_primer"] == pytest.approx(row["samples_per_second"] / rows[0]["samples_per_second"])
        assert 0 < row["of_bound"] < 1 and row["peak_memory_mib"] > 100
    accuracies = {row["test_accuracy"] for row in rows if row["program"].startswith("jaxtrain")}
    assert len(accuracies) == 1  # every feeding mode trains the same model for the same seed
    assert "| mlp | 32 | jaxtrain-device-resident |" in compare.format_bench(result)


@pytest.mark.slow
def test_the_cli_sweeps_batch_sizes_and_draws_the_plot(tmp_path, torch, capsys):
    report, plot = tmp_path / "bench.json", tmp_path / "bench.png"
    argv = ["compare", "bench", "--epochs", "2", "--batch-sizes", "32", "64", "--report", str(report), "--plot", str(plot)]
    assert main(argv) == 0
    assert "| model | batch | program |" in capsys.readouterr().out
    rows = json.loads(report.read_text())["rows"]
    assert [(row["batch_size"], row["program"]) for row in rows] == [
        (b, p) for b in (32, 64) for p in compare.PRESETS["frameworks"]
    ]
    for row in rows:
        assert 0.5 < row["test_accuracy"] <= 1 and row["compile_seconds"] > 0 and row["eval_seconds"] > 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.quick
def test_unknown_programs_and_models_are_refused():
    with pytest.raises(ValueError, match="program='keras'"):
        compare.bench(Config(), programs=["keras"], log=None)
    with pytest.raises(ValueError, match="model='vit'"):
        compare.bench(Config(), models=["vit"], log=None)


def test_each_measurement_is_announced_as_it_starts_and_ends(torch):
    lines = []
    compare.bench(Config(dataset="digits", epochs=2), programs=("pytorch-dataloader", "jaxtrain"), log=lines.append)
    steps = [line.split("] ", 1)[1] for line in lines if line.startswith("[")]
    whats = ["the machine's matrix-product and copy rates", "mlp batch 32: a step's FLOPs (compiling it)",
             "mlp batch 32: pytorch-dataloader", "mlp batch 32: jaxtrain"]
    assert [step.rsplit(": ", 1)[0] for step in steps] == [what for what in whats for _ in range(2)]
    assert [step.rsplit(": ", 1)[1].split(" ")[0] for step in steps] == ["started", "done"] * len(whats)
    assert lines[-1].startswith("| mlp | 32 | jaxtrain |")  # each row as soon as it is measured
