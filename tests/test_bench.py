import importlib.util

from jaxtrain import bench
from jaxtrain.experiment import Config


def test_bench_times_every_mode_on_a_tiny_configuration():
    torch = importlib.util.find_spec("torch") is not None
    result = bench.bench(Config(dataset="digits", epochs=2), torch=torch, log=None)
    names = [row["mode"] for row in result["rows"]]
    expected = [f"jaxtrain {mode}" for mode in bench.MODES] + ["hand-written lax.scan"]
    assert names == (["PyTorch primer"] if torch else []) + expected
    assert result["machine"]["matmul_gflops"] > 0 and result["machine"]["copy_gbps"] > 0
    # forward and backward of the 64-256-10 MLP: 3 × 2 × (64·256 + 256·10) ≈ 0.11 MFLOP per example
    assert 0.5e5 < result["flops_per_example"] < 2e5
    for row in result["rows"]:
        assert row["samples_per_second"] > 0 and row["peak_memory_mib"] > 100
        assert (row["vs_pytorch"] is not None) == torch
    accuracies = {row["test_accuracy"] for row in result["rows"] if row["mode"].startswith("jaxtrain")}
    assert len(accuracies) == 1  # every mode trains the same model for the same seed
    assert "| jaxtrain device-resident |" in bench.table(result)
