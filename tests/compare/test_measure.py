"""Measuring in a fresh process, and the facts that a measurement records (jaxtrain.compare.measure)."""

import importlib.metadata
import os

import jax
import pytest

from jaxtrain.compare import measure

pytestmark = pytest.mark.quick


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def test_facts_measured_in_a_child_name_this_machine_and_its_versions_with_the_childs_own_peak_memory():
    about, peak_mib = measure.measure_in_child(measure.facts)
    assert about["cpus"] == os.cpu_count()
    assert about["device"].split(": ")[0] == jax.default_backend()
    assert about["jax"] == jax.__version__
    assert all(about[package] == _version(package) for package in ("flax", "optax", "torch"))  # None without torch
    # In MiB: an interpreter that started JAX holds tens of MiB at least (KiB or bytes would be far larger).
    assert 20 < peak_mib < 20_000


def test_a_function_measured_in_a_child_runs_in_another_process():
    pid, _ = measure.measure_in_child(os.getpid)
    assert pid != os.getpid()
