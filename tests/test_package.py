"""The package as a user installs it: every module shipped, the console script, and imports from any folder.

These run the installed package in fresh processes from an empty folder, where ``python -m`` and ``python -c``
cannot pick up the checkout's source tree. CI runs the suite against a non-editable install with
``JAXTRAIN_TEST_INSTALLED=1``; then the tests below also assert that the package under test is that install.
"""

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest

import jaxtrain
from conftest import ROOT

INSTALLED = os.environ.get("JAXTRAIN_TEST_INSTALLED") == "1"
needs_install = pytest.mark.skipif(not INSTALLED, reason="JAXTRAIN_TEST_INSTALLED=1: the suite runs against an installed package")


def _python(code: str, cwd: Path) -> str:
    """Runs ``python -c CODE`` in ``cwd``; returns its output, after asserting success."""
    result = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.quick
@needs_install
def test_the_suite_imports_the_installed_package_not_the_source_tree(tmp_path):
    source = (ROOT / "jaxtrain").resolve()
    here = Path(jaxtrain.__file__).resolve()
    assert not here.is_relative_to(source), f"jaxtrain imported from {here}, the checkout's source tree"
    there = Path(_python("import jaxtrain; print(jaxtrain.__file__)", tmp_path).strip()).resolve()
    assert there == here


@pytest.mark.quick
@needs_install
def test_every_module_of_the_source_tree_is_installed():
    source, installed = ROOT / "jaxtrain", Path(jaxtrain.__file__).parent
    modules = {path.relative_to(source) for path in source.rglob("*.py")}
    assert {Path("__init__.py"), Path("compare/__init__.py")} <= modules
    assert modules - {path.relative_to(installed) for path in installed.rglob("*.py")} == set()


@pytest.mark.quick
@needs_install
def test_the_distribution_holds_the_package_and_no_tests():
    tops = {str(file).split("/")[0] for file in importlib.metadata.files("jaxtrain")}
    # "..": the console script, installed beside the interpreter rather than in site-packages.
    assert tops <= {"jaxtrain", f"jaxtrain-{jaxtrain.__version__}.dist-info", ".."}, tops


@pytest.mark.quick
def test_the_console_script_runs_from_any_folder(tmp_path):
    script = Path(sys.executable).with_name("jaxtrain")
    assert script.is_file(), f"{script}: the console script is not installed beside the interpreter"
    result = subprocess.run([str(script), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert all(command in result.stdout for command in ("train", "evaluate", "predict", "export", "plot", "compare"))


@pytest.mark.quick
def test_python_m_jaxtrain_runs_from_any_folder(tmp_path):
    result = subprocess.run([sys.executable, "-m", "jaxtrain", "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "train" in result.stdout


@pytest.mark.quick
def test_the_study_imports_from_any_folder(tmp_path):
    out = _python("import jaxtrain.compare, jaxtrain.compare.torch_side; print(jaxtrain.compare.__name__)", tmp_path)
    assert out.strip() == "jaxtrain.compare"


@pytest.mark.quick
def test_import_jaxtrain_leaves_what_a_run_may_not_need_unimported(tmp_path):
    """Orbax (a run folder's), tensorflow-datasets (a dataset by name), matplotlib (curves), torch (the
    study, export), tqdm (the progress bar) and flax.nnx (the NNX models) are imported where they are used,
    not by ``import jaxtrain``."""
    heavy = ["orbax.checkpoint", "tensorflow_datasets", "matplotlib", "torch", "tqdm", "flax.nnx"]
    code = (f"import sys, jaxtrain; from jaxtrain import build, config; build.build_model(config.Config(model='cnn')); "
            f"print([m for m in {heavy!r} if m in sys.modules])")
    assert _python(code, tmp_path).strip() == "[]"
