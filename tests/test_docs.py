"""Every fenced command and code block of README.md and docs/*.md runs, at a small size, or says why not.

A block is run in a temporary folder, one folder per document, in the document's order, so that a later
block can use what an earlier one wrote (the run folder that `evaluate`, `predict` and `export` read). An
HTML comment right before a fence tells this test what the block needs:

  <!-- doc-test: skip (needs a GPU) -->         not run here; the reason is required
  <!-- doc-test: prelude NAME [NAME ...] -->    run PRELUDES[NAME] first (Python: code put before the
                                                 block; bash: files written into the folder)
  <!-- doc-test: exit N -->                     each command exits with N and one line on stderr

A fence must name its language: ``bash`` and ``python`` blocks run; ``text`` is output, never run.

Shrinking (``shrink``): MNIST from ``path/to/mnist`` becomes the bundled digits in commands, and the real
MNIST folder beside the checkout in Python (skipped where it is absent); ``--epochs`` at most 2 (1 where
not given), ``--steps`` at most 5, ``epochs=N`` and ``range(N)`` loops 1; examples run with ``--dry-run``.
Commands that need torch, matplotlib or tensorboardX are skipped, one by one, where those are missing.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from jaxtrain.cli import commands as cli

from conftest import MNIST_DIR, ROOT

DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
DATA = "path/to/mnist"  # how the docs name MNIST's folder
_FENCE = re.compile(r"^( *)```(\S*)\n(.*?)^\1```$", re.M | re.S)
_MARKER = re.compile(r"<!-- doc-test: (.*?) -->\s*$")
_TIMEOUT_S = 300  # one command; a hung command fails its test rather than the suite


@dataclass
class Block:
    doc: Path
    line: int
    lang: str
    code: str
    marker: str | None

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


def blocks(doc: Path) -> list[Block]:
    """The fenced blocks of ``doc``, each with the ``doc-test`` marker right before it (blank lines between
    allowed)."""
    text = doc.read_text()
    found = []
    for match in _FENCE.finditer(text):
        before = text[: match.start()].rstrip().rsplit("\n", 1)[-1]
        marker = _MARKER.search(before)
        found.append(Block(doc, text.count("\n", 0, match.start()) + 1, match.group(2),
                           textwrap.dedent(match.group(3)), marker.group(1) if marker else None))
    return found


# What a block's ``prelude`` provides. Python: code run before the block, in the same process. Bash: a
# script that writes the files the commands read.
_MNIST_LOADERS = f"""
import jaxtrain
from jaxtrain import MLP, ArrayDataset, DataLoader, adam, create_train_state
images, labels = jaxtrain.load_mnist("train", data_dir={DATA!r})
test_images, test_labels = jaxtrain.load_mnist("test", data_dir={DATA!r})
loader = DataLoader(ArrayDataset(images, labels), batch_size=32, shuffle=True, seed=0)
test_loader = DataLoader(ArrayDataset(test_images, test_labels), batch_size=1000)
state = create_train_state(MLP(), adam(1e-3), sample=images[:1])
"""
PRELUDES = {
    "none": "",
    # images, labels, test_images, test_labels (MNIST), loader, test_loader, and an MLP's state
    "mnist-loaders": _MNIST_LOADERS,
    # four CPU devices, set before JAX starts
    "cpu-devices-4": "import os\nos.environ['JAX_NUM_CPU_DEVICES'] = '4'\n",
    # bash: seven.png, three.jpg (MNIST-like digits) and x.npy in the folder
    "digit-images": """
import numpy as np
from PIL import Image
from jaxtrain import load_digits
images, labels = load_digits("test")
pick = lambda d: (np.kron(images[list(labels).index(d)][..., 0], np.ones((3, 3))) * 255).astype(np.uint8)
Image.fromarray(pick(7)).save("seven.png")
Image.fromarray(pick(3)).convert("RGB").save("three.jpg")
np.save("x.npy", images[:2])
""",
    # bash: data/pets as an ImageFolder (train/ and test/, two classes of 8×8 grayscale PNGs) and data.npz
    "image-folder": """
import numpy as np
from pathlib import Path
from PIL import Image
from jaxtrain import load_digits
for split in ("train", "test"):
    images, labels = load_digits(split)
    for name, digit in (("cat", 0), ("dog", 1)):
        folder = Path("data/pets", split, name)
        folder.mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(images[labels == digit][:20]):
            Image.fromarray((image[..., 0] * 255).astype(np.uint8)).save(folder / f"{i}.png")
(x_train, y_train), (x_test, y_test) = load_digits("train"), load_digits("test")
np.savez("data.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
""",
}
_RUNNERS = ("python -m jaxtrain", "jaxtrain", "python examples/", "python tools/")
# What a command needs beyond the base install, by a word it contains.
_NEEDS = {"compare": "torch", "export": "torch", "pytorch_mnist.py": "torch", "plot": "matplotlib",
          "--tensorboard": "tensorboardX", "digits": "sklearn"}


def parse_marker(marker: str | None) -> tuple[str, str]:
    """("run" | "skip" | "prelude" | "exit", its argument), or a ValueError naming what is expected."""
    if marker is None:
        return "run", ""
    kind, _, rest = marker.partition(" ")
    if kind == "skip" and re.fullmatch(r"\(.+\)", rest):
        return kind, rest[1:-1]
    if kind == "prelude" and rest and all(name in PRELUDES for name in rest.split()):
        return kind, rest
    if kind == "exit" and rest.isdigit():
        return kind, rest
    raise ValueError(f"<!-- doc-test: {marker} -->; expected skip (REASON), prelude NAME (one of {', '.join(PRELUDES)}) or exit N")


def commands(code: str) -> list[list[str]]:
    """The command lines of a bash block as words: comments dropped, ``\\`` continuations joined."""
    lines = code.replace("\\\n", " ").splitlines()
    return [words for line in lines if (words := shlex.split(line, comments=True))]


def shrink(words: list[str]) -> tuple[dict[str, str], list[str]]:
    """A documented command made small: its environment prefix (``VAR=value``) and its words, with MNIST
    as digits, at most 2 epochs and 5 steps, and examples in ``--dry-run``."""
    env, words = {}, list(words)
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    line = " ".join(words)
    if not any(line == runner or line.startswith(runner + " ") or runner.endswith("/") and line.startswith(runner)
               for runner in _RUNNERS):
        raise ValueError(f"`{line}`: not a jaxtrain command; expected one of {_RUNNERS}, or the block marked skip (REASON)")
    if "--dataset" in words and words[words.index("--dataset") + 1] == "mnist" and "--data-dir" not in words:
        raise ValueError(f"`{line}`: downloads MNIST; expected --data-dir {DATA}, or the block marked skip (needs a network)")
    if words[1:2] == ["tools/figures.py"]:
        return env, _figures(words, line)
    out: list[str] = []
    given = iter(words)
    for word in given:
        if word == "--data-dir":
            value = next(given)
            if value != DATA:
                out += [word, value]
            elif out[-2:] == ["--dataset", "mnist"]:
                out[-1] = "digits"
            else:  # the examples' default dataset is MNIST
                out += ["--dataset", "digits"]
            continue
        if out and out[-1] == "--epochs":
            word = str(min(int(word), 2))
        elif out and out[-1] == "--steps":
            word = str(min(int(word), 5))
        out.append(word)
    if out[:1] == ["python"] and out[1].startswith("examples/"):
        out[1] = str(ROOT / out[1])
        out.append("--dry-run")
    if (out[:4] == ["python", "-m", "jaxtrain", "train"] or out[:2] == ["jaxtrain", "train"]) and "--epochs" not in out:
        out += ["--epochs", "1"]
    if out[0] == "python":
        out[0] = sys.executable
    elif out[0] == "jaxtrain":
        out[0] = str(Path(sys.executable).with_name("jaxtrain"))
    return env, out


def _figures(words: list[str], line: str) -> list[str]:
    """`tools/figures.py` made small: digits (--quick), the blocks printed rather than written into the docs."""
    script = [sys.executable, str(ROOT / words[1])]
    if "--list" in words:
        return script + words[2:]
    if "--only" not in words:
        raise ValueError(f"`{line}`: every figure, for many minutes; expected --only NAME, or the block marked skip (REASON)")
    return script + [w for w in words[2:] if w not in ("--data-dir", DATA)] + ["--quick", "--print"]


def shrink_python(code: str) -> str:
    """A documented Python block made small: MNIST's real folder, one epoch."""
    if DATA in code and not MNIST_DIR.is_dir():
        pytest.skip(f"{MNIST_DIR} not found")
    code = code.replace(repr(DATA), repr(str(MNIST_DIR))).replace(f'"{DATA}"', repr(str(MNIST_DIR)))
    code = re.sub(r"\bepochs=\d+", "epochs=1", code)
    return re.sub(r"(for \w+ in range)\(\d+\)", r"\1(1)", code)


def _missing(words: list[str]) -> str | None:
    for word, module in _NEEDS.items():
        if any(word == w or w.endswith(word) for w in words) and importlib.util.find_spec(module) is None:
            return module
    return None


def _run(argv: list[str], folder: Path, env: dict[str, str], where: str) -> subprocess.CompletedProcess:
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=folder, env={**os.environ, **env}, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=_TIMEOUT_S)
    done.shown = f"{where}: `{shlex.join(argv)}` exited with {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    done.seconds = time.perf_counter() - start
    return done


def run_block(block: Block, folder: Path, log: list[str]) -> None:
    """Runs one block in ``folder``; fails with the block's place, the command and its output."""
    kind, argument = parse_marker(block.marker)
    if kind == "skip" or block.lang == "text":
        return
    preludes = argument.split() if kind == "prelude" else []
    env = {"JAXTRAIN_DATA": str(folder / "cache")}  # nothing downloads into the user's cache
    if block.lang == "python":
        if "import torch" in block.code and importlib.util.find_spec("torch") is None:
            log.append(f"{block.where}: skipped (torch is not installed)")
            return
        code = "".join(PRELUDES[name] for name in preludes) + block.code
        script = folder / f"block_{block.line}.py"
        script.write_text(shrink_python(code))
        done = _run([sys.executable, script.name], folder, env, block.where)
        assert done.returncode == 0, done.shown
        log.append(f"{block.where}: python block ({done.seconds:.0f} s)")
        return
    assert block.lang == "bash", f"{block.where}: a ```{block.lang} block; expected bash, python or text"
    for name in preludes:
        done = _run([sys.executable, "-c", PRELUDES[name]], folder, env, f"{block.where} prelude {name}")
        assert done.returncode == 0, done.shown
    for words in commands(block.code):
        extra, argv = shrink(words)
        if (module := _missing(argv)) is not None:
            log.append(f"{block.where}: skipped `{shlex.join(words)}` ({module} is not installed)")
            continue
        done = _run(argv, folder, {**env, **extra}, block.where)
        if kind == "exit":
            assert done.returncode == int(argument), done.shown
            assert len(done.stderr.strip().splitlines()) == 1 and "error:" in done.stderr, done.shown
        else:
            assert done.returncode == 0, done.shown
        log.append(f"{block.where}: {shlex.join(words)} ({done.seconds:.0f} s)")


@pytest.mark.quick
@pytest.mark.parametrize("doc", DOCS, ids=lambda d: str(d.relative_to(ROOT)))
def test_every_block_names_its_language_and_carries_only_markers_this_test_knows(doc):
    fences = re.findall(r"^ *```", doc.read_text(), re.M)
    assert len(fences) == 2 * len(blocks(doc)), f"{doc}: a fence that opens or closes no block this test reads"
    for block in blocks(doc):
        try:
            kind, _ = parse_marker(block.marker)
            if block.lang == "bash" and kind != "skip":
                for words in commands(block.code):
                    _, argv = shrink(words)  # names a command that needs a marker
                    if "-m" in argv[1:2] or argv[0].endswith("jaxtrain"):  # the flags, without running it
                        cli.parser().parse_args(argv[3:] if "-m" in argv[1:2] else argv[1:])
        except ValueError as error:
            pytest.fail(f"{block.where}: {error}")
        except SystemExit:
            pytest.fail(f"{block.where}: a command that jaxtrain's parser refuses (its message above)")
        assert block.lang in ("bash", "python", "text"), f"{block.where}: ```{block.lang}; expected bash, python or text"
        if block.lang == "python" and kind != "skip":
            compile(block.code, block.where, "exec")


@pytest.mark.quick
@pytest.mark.parametrize("doc", DOCS, ids=lambda d: str(d.relative_to(ROOT)))
def test_the_docs_name_the_data_folder_as_a_user_would(doc):
    text = doc.read_text()
    assert "shared/data" not in text and "../shared" not in text, f"{doc}: expected {DATA}"


def test_shrinking_keeps_the_command_and_makes_it_small():
    env, argv = shrink(shlex.split(f"JAX_NUM_CPU_DEVICES=8 python -m jaxtrain train --dataset mnist --data-dir {DATA} --epochs 10"))
    assert env == {"JAX_NUM_CPU_DEVICES": "8"}
    assert argv == [sys.executable, "-m", "jaxtrain", "train", "--dataset", "digits", "--epochs", "2"]
    assert shrink(["python", "examples/pytorch_mnist.py", "--data-dir", DATA])[1][2:] == ["--dataset", "digits", "--dry-run"]
    assert shrink(["jaxtrain", "compare", "parity", "--steps", "600"])[1][-1] == "5"
    figures = shrink(["python", "tools/figures.py", "--data-dir", DATA, "--only", "primer"])[1]
    assert figures[1:] == [str(ROOT / "tools" / "figures.py"), "--only", "primer", "--quick", "--print"]
    with pytest.raises(ValueError, match="every figure"):
        shrink(["python", "tools/figures.py", "--data-dir", DATA])
    with pytest.raises(ValueError, match="downloads MNIST"):
        shrink(["jaxtrain", "train", "--dataset", "mnist"])
    with pytest.raises(ValueError, match="not a jaxtrain command"):
        shrink(["pip", "install", "."])


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: str(d.relative_to(ROOT)))
def test_every_block_of_the_document_runs(doc, tmp_path):
    log: list[str] = []
    for block in blocks(doc):
        run_block(block, tmp_path, log)
    print("\n".join(log))


@pytest.mark.quick
def test_the_readme_names_the_floor_that_ci_pins():
    floor = subprocess.run([sys.executable, str(ROOT / ".ci" / "floor.py")], capture_output=True, text=True, check=True)
    row = next(line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("| floor |"))
    assert set(re.findall(r"`([\w.-]+==[\w.]+)`", row)) == set(floor.stdout.split()), row


@pytest.mark.quick
def test_every_name_of_the_readmes_module_table_is_there():
    import importlib

    import jaxtrain

    rows = [line.split("|")[1] for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("| `jaxtrain.")]
    assert len(rows) >= 10
    for cell in rows:
        for part in cell.split(";"):
            module, _, names = part.partition(":")
            module = importlib.import_module(module.strip(" `"))
            for name in re.findall(r"`(\w+)`", names):
                assert hasattr(module, name), f"README's module table: {module.__name__}.{name} does not exist"
                if module.__name__ not in ("jaxtrain.nn.ops", "jaxtrain.sources.tfds", "jaxtrain.compare"):  # as it says
                    assert getattr(jaxtrain, name) is getattr(module, name), f"README's module table: jaxtrain.{name}"
