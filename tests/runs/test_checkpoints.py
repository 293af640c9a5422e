"""Faults in what a run reads back, as a careful user meets them: damaged checkpoints (a flipped byte, a file cut
short, an item or the manifest lost, an empty step folder), a config.json that does not match, broken data
files and 16-bit images (jaxtrain.runs.checkpoints, jaxtrain.runs.folder, jaxtrain.sources.files, jaxtrain.cli.commands).

A damaged checkpoint is never read: "latest" and "best" fall back to the newest intact one and say so in one
line, an explicit intact step always restores, and a damaged one asked for by its step is refused in one line.
Every bad input is one line on stderr and exit code 1, never a traceback."""

import errno
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from jaxtrain.runs import checkpoints
from jaxtrain.runs import folder as run_folder
from jaxtrain.runs.folder import SET_ASIDE, Run
from jaxtrain.cli import commands as cli
from jaxtrain.sources.files import load_folder, read_images

STEPS = [43, 86, 129]  # digits, batch 32: 43 steps an epoch, a checkpoint at each epoch's end


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """An MLP trained on digits for three epochs, a checkpoint at each epoch's end."""
    folder = tmp_path_factory.mktemp("faults") / "run"
    assert cli.main(["train", "--epochs", "3", "--run-dir", str(folder), "--checkpoint-seconds", "0"]) == 0
    assert Run(folder).intact_steps() == STEPS
    return folder


@pytest.fixture
def run_dir(trained, tmp_path) -> Path:
    """A copy of the trained run folder, to damage."""
    return Path(shutil.copytree(trained, tmp_path / "run"))


def _largest(folder: Path) -> Path:
    return max((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def _flip_a_byte(step: Path) -> None:
    file = _largest(step)  # the parameters' chunk
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0x01
    file.write_bytes(bytes(data))


def _cut_short(step: Path) -> None:
    file = _largest(step)
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])


# (fault, damage done to the newest checkpoint's folder, what the skip line says)
CHECKPOINT_FAULTS = [
    ("a flipped byte", _flip_a_byte, "changed since it was saved (checksum differs)"),
    ("a file cut short", _cut_short, "bytes, "),
    ("the meta item deleted (a delete cut short)", lambda step: shutil.rmtree(step / "meta"), "meta/commit_success.txt missing"),
    ("the manifest lost", lambda step: (step / checkpoints.MANIFEST).unlink(), "no manifest"),
    ("a garbled manifest", lambda step: (step / checkpoints.MANIFEST).write_text("{"), "unreadable"),
    ("an empty step folder (a copy cut short)", lambda step: [shutil.rmtree(step), step.mkdir()], "empty folder"),
]


def _evaluate(run_dir: Path, tmp_path: Path, *flags: str) -> tuple[int, dict | None]:
    report = tmp_path / "eval.json"
    report.unlink(missing_ok=True)
    code = cli.main(["evaluate", "--run-dir", str(run_dir), "--report", str(report), *flags])
    return code, json.loads(report.read_text()) if report.exists() else None


@pytest.mark.parametrize("fault, damage, problem", CHECKPOINT_FAULTS, ids=[f[0] for f in CHECKPOINT_FAULTS])
def test_a_damaged_newest_checkpoint_is_skipped_in_one_line_and_latest_falls_back(fault, damage, problem, run_dir, tmp_path, capsys):
    damage(run_dir / "checkpoints" / "129")
    code, result = _evaluate(run_dir, tmp_path)
    err = capsys.readouterr().err
    assert code == 0 and result["step"] == 86
    assert err.splitlines() == [err.strip()] and err.startswith("jaxtrain: checkpoint 129 in ")
    assert problem in err and err.rstrip().endswith("; skipped")
    code, result = _evaluate(run_dir, tmp_path, "--checkpoint", "best")  # best by accuracy, among the intact
    assert code == 0 and result["step"] in (43, 86)
    capsys.readouterr()
    code, result = _evaluate(run_dir, tmp_path, "--checkpoint", "43")  # an explicit intact step: read, no word
    assert code == 0 and result["step"] == 43 and capsys.readouterr().err == ""
    code, _ = _evaluate(run_dir, tmp_path, "--checkpoint", "129")  # the damaged one by its step: refused
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and err[-1].startswith("jaxtrain evaluate: error: checkpoint 129 in ") and problem in err[-1]
    assert err[-1].endswith("expected latest, best or an intact one: 43, 86")


def test_a_stray_step_folder_and_broken_older_ones_leave_the_newest_readable(run_dir, tmp_path, capsys):
    (run_dir / "checkpoints" / "999").mkdir()  # a partial copy, newer than any
    shutil.rmtree(run_dir / "checkpoints" / "43" / "meta")  # an old one, half deleted: best_step read its meta
    for which in ("latest", "best"):
        code, result = _evaluate(run_dir, tmp_path, "--checkpoint", which)
        assert code == 0 and result["step"] == 129 if which == "latest" else result["step"] in (86, 129)
    err = capsys.readouterr().err
    assert "checkpoint 999 in " in err and "empty folder" in err and "checkpoint 43 in " in err and "Traceback" not in err


def test_resume_sets_damaged_checkpoints_aside_and_continues_from_the_newest_intact_one(trained, run_dir, capsys):
    _flip_a_byte(run_dir / "checkpoints" / "129")
    (run_dir / "checkpoints" / "200").mkdir()
    argv = ["train", "--epochs", "3", "--run-dir", str(run_dir), "--checkpoint-seconds", "0", "--resume"]
    assert cli.main(argv) == 0
    err = capsys.readouterr().err
    assert "moved to " in err and "Traceback" not in err
    assert sorted(p.name for p in (run_dir / SET_ASIDE).iterdir()) == ["129", "200"]
    assert Run(run_dir).intact_steps() == STEPS  # epoch 3 retrained from 86, and saved again
    history = lambda folder: [h["train_loss"] for h in json.loads((folder / "report.json").read_text())["history"]]  # noqa: E731
    assert history(run_dir) == history(trained)  # the same bits as the run never damaged


def test_checkpoints_written_before_manifests_are_read_unverified_with_one_line(run_dir, tmp_path, capsys):
    for step in STEPS:
        (run_dir / "checkpoints" / str(step) / checkpoints.MANIFEST).unlink()
    code, result = _evaluate(run_dir, tmp_path)
    err = capsys.readouterr().err
    assert code == 0 and result["step"] == 129
    assert err.splitlines() == [err.strip()] and "carry no manifest" in err and "read unverified" in err


def test_a_manifest_records_every_file_and_a_check_is_cheap(trained):
    step = trained / "checkpoints" / "129"
    recorded = json.loads((step / checkpoints.MANIFEST).read_text())["files"]
    on_disk = {p.relative_to(step).as_posix() for p in step.rglob("*") if p.is_file()}
    assert set(recorded) == on_disk - {checkpoints.MANIFEST, "_CHECKPOINT_METADATA", "commit_success.txt"}
    assert all(len(entry["sha256"]) == 64 for entry in recorded.values())
    assert checkpoints.check(step) is None


# --- a config.json that does not match, and broken data -------------------------------------------------------


def _config(run_dir: Path, change) -> None:
    path = run_dir / "config.json"
    settings = json.loads(path.read_text())
    change(settings)
    path.write_text(json.dumps(settings))


def _write_npz(path: Path, **arrays) -> Path:
    x = np.zeros((20, 8, 8), np.uint8)
    y = np.arange(20) % 3
    np.savez(path, **{"x_train": x, "y_train": y, "x_test": x, "y_test": y, **arrays})
    return path


def _png_folder(root: Path, dtype=np.uint8, value=200, size=16) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(3):
            pixels = np.full((size, size), value, dtype) if dtype == np.uint16 else rng.integers(0, 255, (size, size), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def _truncated_png(tmp_path: Path) -> Path:
    root = _png_folder(tmp_path / "pngs", size=64)
    file = root / "a" / "1.png"
    file.write_bytes(file.read_bytes()[: int(file.stat().st_size * 0.6)])  # the header whole, the pixels cut
    return file


# (fault, the command's arguments given the run folder and tmp_path, what the one line says)
DATA_FAULTS = [
    ("an .npz that is not a zip", lambda run, tmp: ["train", "--epochs", "1", "--dataset", f"npz:{_write_bytes(tmp / 'x.npz', b'hello')}"],
     "not a zip archive; expected an .npz file"),
    ("an empty .npz file", lambda run, tmp: ["train", "--epochs", "1", "--dataset", f"npz:{_write_bytes(tmp / 'x.npz', b'')}"],
     "x.npz): empty; expected an .npz file"),
    ("float labels", lambda run, tmp: ["train", "--epochs", "1", "--dataset", f"npz:{_write_npz(tmp / 'x.npz', y_train=np.zeros(20, np.float32))}"],
     "dtype float32; expected integer class indices"),
    ("a test split of no examples", lambda run, tmp: ["train", "--epochs", "1", "--dataset",
                                                      f"npz:{_write_npz(tmp / 'x.npz', x_test=np.zeros((0, 8, 8), np.uint8), y_test=np.zeros(0, np.int64))}"],
     "x_test and y_test): shape (0, 8, 8, 1), no examples"),
    ("a truncated PNG in an image folder", lambda run, tmp: ["train", "--epochs", "1", "--dataset", f"folder:{_truncated_png(tmp).parents[1]}"],
     "1.png): image file is truncated"),
    ("evaluating on data of another input shape", lambda run, tmp: [
        "evaluate", "--run-dir", str(run), "--dataset", f"npz:{_write_npz(tmp / 'x.npz', x_test=np.zeros((20, 10, 10), np.uint8), x_train=np.zeros((20, 10, 10), np.uint8))}"],
     "images of shape (10, 10, 1); expected (8, 8, 1), the input of the model in"),
    ("predict on an empty .npy", lambda run, tmp: ["predict", "--run-dir", str(run), str(_save(tmp / "e.npy", np.zeros((0, 8, 8), np.float32)))],
     "e.npy: no images (an array of shape (0, 8, 8, 1)); expected at least one"),
    ("a config.json with an unknown setting", lambda run, tmp: _config(run, lambda s: s.update(future=1)) or ["evaluate", "--run-dir", str(run)],
     "unknown setting 'future'"),
    ("a config.json without a setting", lambda run, tmp: _config(run, lambda s: s.pop("lr")) or ["evaluate", "--run-dir", str(run)],
     "no setting 'lr'"),
    ("a config.json that is not JSON", lambda run, tmp: (run / "config.json").write_text("{") and ["evaluate", "--run-dir", str(run)],
     "config.json: not JSON"),
    ("a config.json naming another model", lambda run, tmp: _config(run, lambda s: s.update(model="cnn")) or ["evaluate", "--run-dir", str(run)],
     "checkpoint 129 in "),
]


def _write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _save(path: Path, array: np.ndarray) -> Path:
    np.save(path, array)
    return path


@pytest.mark.parametrize("fault, argv, message", DATA_FAULTS, ids=[f[0] for f in DATA_FAULTS])
def test_bad_data_and_configs_are_one_line_with_exit_code_1(fault, argv, message, run_dir, tmp_path, capsys):
    code = cli.main(argv(run_dir, tmp_path))
    err = capsys.readouterr().err
    assert code == 1
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert message in err


def test_an_unforeseen_error_is_one_line_too(monkeypatch, capsys):
    monkeypatch.setattr(cli.experiment, "run", lambda *a, **k: {}["missing"])
    assert cli.main(["train", "--epochs", "1"]) == 1
    assert capsys.readouterr().err == "jaxtrain train: error: KeyError: 'missing' (--debug shows where)\n"


# --- 16-bit images ----------------------------------------------------------------------------------------------


def test_16_bit_images_are_scaled_by_65535_in_folders_and_in_predict(tmp_path):
    root = _png_folder(tmp_path / "grey", dtype=np.uint16, value=1000)  # a 1.5% grey, which clipping turns white
    images, _ = load_folder(root, "train")
    np.testing.assert_allclose(images, 1000 / 65535, rtol=1e-6)
    one = read_images([root / "a" / "0.png"], (16, 16, 1))
    np.testing.assert_allclose(one, 1000 / 65535, rtol=1e-6)
    resized = read_images([root / "a" / "0.png"], (8, 8, 3))  # resized and made RGB, still scaled
    np.testing.assert_allclose(resized, 1000 / 65535, rtol=1e-6)
    np.save(tmp_path / "grey.npy", np.full((16, 16), 1000, np.uint16))
    np.testing.assert_allclose(read_images([tmp_path / "grey.npy"], (16, 16, 1)), 1000 / 65535, rtol=1e-6)


def test_8_bit_images_read_as_before(tmp_path):
    from PIL import Image

    root = _png_folder(tmp_path / "eight")
    images, _ = load_folder(root, "train")
    expected = np.asarray(Image.open(sorted((root / "a").iterdir())[0]), np.float32) / 255
    assert images.dtype == np.float32 and images.max() <= 1
    assert any(np.array_equal(image[..., 0], expected) for image in images)


def test_a_full_disk_names_the_file_that_could_not_be_written(tmp_path, monkeypatch, capsys):
    class Full:  # a file opened on a full disk: the write fails, and its error names no file
        def __init__(self, *args, **kwargs):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(run_folder, "open", Full, raising=False)  # the run folder's own open: metrics.jsonl's
    folder = tmp_path / "run"
    assert cli.main(["train", "--epochs", "1", "--run-dir", str(folder), "--checkpoint-seconds", "0"]) == 1
    err = capsys.readouterr().err
    assert err == f"jaxtrain train: error: {folder / 'metrics.jsonl'}: a line not written (No space left on device)\n"
