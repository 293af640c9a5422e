"""The docs' tables, formatted from reports (tools/doc_tables.py)."""

import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "tools"))
import doc_tables as tables  # noqa: E402 (tools/ is not a package)
from doc_tables import Result  # noqa: E402

pytestmark = pytest.mark.quick

_REPORT = {"train_examples": 1348, "test_examples": 449, "test_accuracy": 0.96214, "samples_per_second": 12345.6,
           "batch_size": 32, "steps_per_call": 1, "compile_seconds": 2.345, "compilations": {"programs": 6, "loaded": 4}}


def test_a_run_is_a_row_of_its_command_data_accuracy_and_speed():
    table = tables.runs_table([Result("python -m jaxtrain train --dataset digits", "", _REPORT)])
    assert table.splitlines()[2] == "| `python -m jaxtrain train --dataset digits` | 1,348 / 449 | 96.21% | 12,346 |"


def test_the_compile_table_says_which_runs_found_their_cache_filled():
    common = "python -m jaxtrain train --dataset digits"
    flags = ["--compile-cache a", "--compile-cache a --seed 1", "--compile-cache b"]
    table = tables.compile_table([Result(f"{common} {f}", f, _REPORT) for f in flags])
    rows = table.splitlines()[2:5]
    assert [row.split(" | ")[1] for row in rows] == ["empty", "filled by the runs above", "empty"]
    # 1348 examples in batches of 32, one step a call: full calls and one short call, two shapes to compile.
    assert rows[0] == "| `--compile-cache a` | empty | 2 | 2.35 | 6 (4) | 96.21% |"
    assert table.splitlines()[0].startswith(f"| command (`{common}` and) |")
