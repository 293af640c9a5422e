"""The docs' figures, regenerated from the code: every table and picture of measured numbers in README.md
and docs/ (``DOCS``), and the commands that measure them. A tool of the repository, not of the package: it
rewrites the checkout's documents.

A figure is a list of CLI commands and a formatter (``doc_tables``). ``generate`` runs the commands one after
another, each in a fresh process (``python -m jaxtrain ...``, never two at once) that writes a JSON report
(``--report``) into a temporary folder; the formatter turns the reports into a Markdown block, whose first
line names the commands, the machine and the date. The block replaces what stands between
``<!-- figure: NAME -->`` and ``<!-- /figure: NAME -->`` in the figure's document.

  python tools/figures.py --data-dir DIR                  # every figure (--list: the minutes each)
  python tools/figures.py --data-dir DIR --only primer checkpoints
  python tools/figures.py --list                          # the figures, their commands and run times
  python tools/figures.py --quick --print                 # digits, 2 epochs: a check, not figures
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# The repository whose README.md and docs/ hold the figures: the one this file lies in.
ROOT = Path(__file__).resolve().parents[1]
if __name__ == "__main__":  # run from the checkout: its package, which the documents describe
    sys.path.insert(0, str(ROOT))

import jaxtrain  # noqa: E402 (after the checkout is put first)
from jaxtrain.cli.flags import Help, Parser  # noqa: E402
from jaxtrain.compare.measure import facts, measure_in_child  # noqa: E402
from jaxtrain.config import ConfigError  # noqa: E402
from jaxtrain.runs.reports import write_text  # noqa: E402

import doc_tables as tables  # noqa: E402
from doc_tables import Result  # noqa: E402

# The documents that hold figures, relative to ROOT.
DOCS = ("README.md", "docs/paradigms.md", "docs/performance.md", "docs/training.md")
_MARKER = re.compile(r"^<!-- (/?)figure: ([\w.-]+) -->$", re.M)


@dataclasses.dataclass(frozen=True)
class Figure:
    """A table (and maybe a picture) of the docs, and the commands behind it.

    Attributes:
      doc: the document that holds its markers, relative to the repository.
      rows: the commands, or with ``common`` the flags that each command adds to it. ``{data}`` stands for
        MNIST's folder (``--data-dir``), ``{runs}`` for a folder of run folders, ``{docs}`` for ``docs/``.
      format: turns the commands' ``Result``s into Markdown.
      minutes: the estimated run time on the 2-core CPU that the docs' epoch times were measured on.
      common: the start that every command shares; the table then shows each row's flags.
      picture: the picture it writes, relative to the repository (``docs/NAME.png``): by a command (with
        ``{docs}``), or by ``draw(results, path)``.
      caption: the picture's alternative text.
    """

    doc: str
    rows: tuple[str, ...]
    format: Callable[[Sequence[Result]], str]
    minutes: float
    common: str = ""
    picture: str | None = None
    draw: Callable[[Sequence[Result], Path], None] | None = None
    caption: str = ""

    @property
    def commands(self) -> tuple[str, ...]:
        return tuple(f"{self.common} {row}".strip() for row in self.rows)

    @property
    def needs_data(self) -> bool:
        """Whether a command trains on MNIST's IDX files."""
        return any("{data}" in command for command in self.commands)


_MNIST = "--dataset mnist --data-dir {data}"
_TRAIN = f"python -m jaxtrain train {_MNIST}"
_BENCH = "python -m jaxtrain compare bench"
_PARITY = "python -m jaxtrain compare parity"
_MLP_OPTIMIZERS = (
    "--optimizer sgd",
    "--optimizer sgd --momentum 0.9",
    "--optimizer sgd --momentum 0.9 --nesterov",
    "--optimizer sgd --weight-decay 1e-4",
    "--optimizer adam",
    "--optimizer adam --weight-decay 1e-2",
    "--optimizer adamw",
)
_MLP_ROWS = tuple(f"--model mlp {flags}" for flags in _MLP_OPTIMIZERS)
_PARITY_ROWS = (*_MLP_ROWS, "--model nnx-mlp --optimizer adam", "--model cnn --optimizer adam",
                "--model cnn --optimizer sgd --momentum 0.9")

# In the order of the docs. minutes: estimated from the docs' epoch times on a 2-core CPU (a jaxtrain CNN
# epoch of MNIST's 19,690 images about 22 s, torch's about 10 s, an MLP epoch under a second), plus 4 to 6
# seconds to start each process (jax, and torch) and a few to compile. The CNN's runs are most of the total.
FIGURES: dict[str, Figure] = {
    "checkpoints": Figure(
        "docs/performance.md", (f"{_BENCH} --preset checkpoints --models mlp cnn {_MNIST} --epochs 3",), tables.checkpoints_table, 4.5,
    ),
    "curves": Figure(
        "docs/training.md",
        (f"{_TRAIN} --val-fraction 0.1 --run-dir {{runs}}/mlp",
         f"{_TRAIN} --val-fraction 0.1 --dropout 0.2 --batch-norm --run-dir {{runs}}/mlp-dropout-bn",
         "python -m jaxtrain plot {runs}/mlp {runs}/mlp-dropout-bn -o {docs}/curves.png"),
        tables.curves_table, 0.5, picture="docs/curves.png", caption="Loss and accuracy per epoch of two MNIST runs",
    ),
    "feeding-mlp": Figure(
        "docs/performance.md", (f"{_BENCH} --preset feeding --models mlp {_MNIST} --epochs 10",), tables.bench_table, 1.5,
    ),
    "feeding-cnn": Figure(
        "docs/performance.md", (f"{_BENCH} --preset feeding --models cnn {_MNIST} --epochs 3",), tables.bench_table, 4.5,
    ),
    "compile": Figure(
        "docs/performance.md",
        tuple(f"--model {model} --compile-cache {{runs}}/{model}-cache {flags}"
              for model in ("cnn", "mlp") for flags in ("--epochs 1", "--epochs 1 --seed 1", "--epochs 2 --lr 2e-3")),
        tables.compile_table, 2.5, common=_TRAIN,
    ),
    "primer": Figure(
        "README.md",
        ("python -m jaxtrain train --dataset digits",
         f"{_TRAIN} --epochs 10 --batch-size 32 --lr 1e-3 --optimizer adam"),
        tables.runs_table, 0.5,
    ),
    "training-options": Figure(
        "docs/training.md",
        ("--model cnn --epochs 5",
         "--model cnn --epochs 5 --dtype bfloat16",
         "--model cnn --epochs 5 --warmup-steps 100 --clip-norm 1.0",
         "--model mlp --dropout 0.2 --batch-norm --epochs 10",
         "--model mlp --dropout 0.2 --batch-norm --epochs 10 --dtype bfloat16",
         "--model mlp --dropout 0.2 --batch-norm --epochs 10 --schedule step --grad-accum 4 --lr 2e-3"),
        tables.options_table, 8, common=_TRAIN,
    ),
    "parity-float64": Figure(
        "docs/paradigms.md", _PARITY_ROWS, tables.parity_table, 5, common=f"{_PARITY} --dtype float64 --steps 600 {_MNIST}",
    ),
    "parity-float32": Figure(
        "docs/paradigms.md", _PARITY_ROWS, tables.reference_table, 2,
        common=f"{_PARITY} --dtype float32 --steps 50 --float64-reference {_MNIST}",
    ),
    "parity-float32-epochs": Figure(
        "docs/paradigms.md", (*_MLP_ROWS, "--model cnn --optimizer adam"), tables.accuracy_table, 5.5,
        common=f"{_PARITY} --dtype float32 --steps 6160 {_MNIST}",
    ),
    "bench": Figure(
        "docs/paradigms.md",
        (f"{_BENCH} --preset frameworks --models mlp cnn {_MNIST} --epochs 4 --plot {{docs}}/compare_bench.png",),
        tables.bench_table, 4, picture="docs/compare_bench.png",
        caption="test accuracy per epoch and samples/s, both frameworks",
    ),
    "batch-sizes": Figure(
        "docs/paradigms.md",
        (f"{_BENCH} --preset frameworks --models mlp cnn --batch-sizes 32 128 512 {_MNIST} --epochs 3",),
        tables.batch_sizes_table, 8, picture="docs/sweep.png", draw=tables.draw_batch_sizes,
        caption="samples/s by batch size, per model and program",
    ),
}

QUICK = {"--epochs": 2, "--steps": 20, "--warmup-steps": 10}  # --quick: digits, and at most these


def words(command: str, data: str | None, runs: str = "runs", docs: str = "docs", quick: bool = False) -> list[str]:
    """A figure's command as the words of a command line: ``{data}``, ``{runs}`` and ``{docs}`` filled in.

    With ``quick``, MNIST becomes the bundled digits (``--data-dir`` dropped) and ``QUICK``'s flags are
    capped, so that every command runs in seconds.

    Example:
      >>> words("python -m jaxtrain train --dataset mnist --data-dir {data} --epochs 10", None, quick=True)
      ['python', '-m', 'jaxtrain', 'train', '--dataset', 'digits', '--epochs', '2']
    """
    out: list[str] = []
    given = iter(shlex.split(command))
    for word in given:
        if quick and word == "--data-dir":
            next(given)
            continue
        word = word.format(data=data or "DIR", runs=runs, docs=docs)
        flag = out[-1] if out else None
        if quick and flag == "--dataset" and word == "mnist":
            word = "digits"
        elif quick and flag in QUICK:
            word = str(min(int(word), QUICK[flag]))
        out.append(word)
    return out


def command_line(command: str, data: str | None = None, quick: bool = False) -> str:
    """A figure's command as the docs show it: ``words`` joined, run folders under ``runs/``."""
    return shlex.join(words(command, data, quick=quick))


def listing(names: Sequence[str] | None = None, data: str | None = None, quick: bool = False) -> str:
    """The figures ``names`` (None: all), each with its document, estimated minutes and commands."""
    names = list(FIGURES) if names is None else list(names)
    lines = []
    for name in names:
        figure = FIGURES[name]
        lines.append(f"{name} ({figure.doc}, about {figure.minutes:g} minutes)")
        lines += [f"  {command_line(command, data, quick)}" for command in figure.commands]
    minutes = sum(FIGURES[name].minutes for name in names)
    return "\n".join(lines + [f"{len(names)} figures, about {minutes:g} minutes on a 2-core CPU"])


def check_markers(root: str | Path = ROOT) -> None:
    """Checks that the documents' markers and ``FIGURES`` agree: each figure opens and closes exactly once,
    in its own document, and every marker names a figure.

    Raises:
      ValueError: one line naming the first disagreement and where it is.

    Example:
      >>> check_markers()   # the repository's README.md and docs/
    """
    seen: dict[str, str] = {}
    for doc in DOCS:
        text = (Path(root) / doc).read_text()
        opened = None
        for match in _MARKER.finditer(text):
            closing, name = match.group(1) == "/", match.group(2)
            where = f"{doc}:{text.count(chr(10), 0, match.start()) + 1}"
            if name not in FIGURES:
                raise ValueError(f"{where}: a marker of figure {name!r}, which is not registered; expected one of {', '.join(FIGURES)}")
            if closing and opened != name:
                raise ValueError(f"{where}: <!-- /figure: {name} --> closes no open figure; expected <!-- figure: {name} --> before it")
            if closing:
                opened = None
            elif opened:
                raise ValueError(f"{where}: figure {name!r} opens inside {opened!r}; expected <!-- /figure: {opened} --> first")
            elif name in seen:
                raise ValueError(f"{where}: figure {name!r} a second time (first at {seen[name]}); expected each figure once")
            elif FIGURES[name].doc != doc:
                raise ValueError(f"{where}: figure {name!r} in the wrong document; expected it in {FIGURES[name].doc}")
            else:
                opened, seen[name] = name, where
        if opened:
            raise ValueError(f"{doc}: <!-- figure: {opened} --> is never closed; expected <!-- /figure: {opened} -->")
    for name, figure in FIGURES.items():
        if name not in seen:
            raise ValueError(f"figure {name!r} has no markers in {figure.doc}; expected <!-- figure: {name} --> and <!-- /figure: {name} -->")


def replace_block(text: str, name: str, block: str) -> str:
    r"""``text`` with what stands between figure ``name``'s markers replaced by ``block`` (blank lines
    around it); every other byte stays as it was.

    Raises:
      ValueError: the markers are not there exactly once.

    Example:
      >>> replace_block("<!-- figure: a -->\nold\n<!-- /figure: a -->\n", "a", "new")
      '<!-- figure: a -->\n\nnew\n\n<!-- /figure: a -->\n'
    """
    pattern = re.compile(rf"^<!-- figure: {re.escape(name)} -->\n(.*?)^<!-- /figure: {re.escape(name)} -->$", re.M | re.S)
    matches = list(pattern.finditer(text))
    if len(matches) != 1:
        raise ValueError(f"figure {name!r}: {len(matches)} marked blocks; expected exactly one")
    return text[: matches[0].start(1)] + f"\n{block.strip()}\n\n" + text[matches[0].end(1):]


def _machine(about: dict[str, Any]) -> str:
    platform, _, kind = about["device"].partition(": ")
    device = "no GPU (JAX on the CPU)" if platform == "cpu" else f"JAX on {kind or platform}"
    versions = ", ".join(f"{name} {about[name]}" for name in ("jax", "flax", "optax", "torch") if about.get(name))
    return f"{about['cpu']} ({about['cpus']} CPUs), {device}, {about['system']}; {versions}"


def _header(name: str, figure: Figure, about: dict[str, Any], date: str, data_dir: str | None, quick: bool) -> str:
    """The block's first line: the command that regenerates it, what that ran, the machine and the date."""
    rerun = ["python", "tools/figures.py", "--only", name]
    rerun += ["--quick"] if quick else ["--data-dir", data_dir or "DIR"] if figure.needs_data else []
    if figure.common:
        ran = f"`{command_line(figure.common, data_dir, quick)}` with each row's flags, a process a row"
    else:
        ran = ", then ".join(f"`{command_line(command, data_dir, quick)}`" for command in figure.commands)
    if figure.draw:
        ran += f", and drew {figure.picture} from the report"
    shrunk = " (--quick: digits and at most 2 epochs or 20 steps, a check of the commands, not a measurement)" if quick else ""
    return f"Generated on {date} by `{shlex.join(rerun)}`{shrunk}, which ran {ran}; on {_machine(about)}."


def _run(name: str, figure: Figure, data_dir: str | None, quick: bool, work: Path, pictures: Path,
         log: Callable[[str], None] | None) -> list[Result]:
    """Runs the figure's commands one after another, each in a fresh process, and reads their reports."""
    package = str(Path(jaxtrain.__file__).resolve().parents[1])  # the children import the jaxtrain this process did
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (package, os.environ.get("PYTHONPATH"))))}
    results = []
    for i, (row, command) in enumerate(zip(figure.rows, figure.commands), 1):
        shown = command_line(command, data_dir, quick)
        argv = words(command, data_dir, runs=str(work / name), docs=str(pictures), quick=quick)
        report = work / f"{name}-{i}.json"
        if argv[3] != "plot":  # python -m jaxtrain COMMAND: every command but plot writes a report
            argv += ["--report", str(report)]
        if log:
            log(f"{name} [{i}/{len(figure.rows)}]: {shown}")
        start = time.perf_counter()
        done = subprocess.run([sys.executable, *argv[1:]], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
        if done.returncode:
            last = (done.stdout.strip().splitlines() or ["no output"])[-1]
            raise ChildProcessError(f"figure {name}: `{shown}` exited with {done.returncode}: {last}")
        if log:
            log(f"  {time.perf_counter() - start:.0f} s")
        flags = command_line(row, data_dir, quick) if figure.common else shown
        results.append(Result(shown, flags, json.loads(report.read_text()) if argv[3] != "plot" else None))
    return results


def generate(
    names: Sequence[str] | None = None,
    data_dir: str | None = None,
    quick: bool = False,
    write: bool = True,
    root: str | Path = ROOT,
    log: Callable[[str], None] | None = None,
    done: Callable[[str, str], None] | None = None,
) -> dict[str, str]:
    """Regenerates figures: runs their commands, formats their blocks and writes them into the docs.

    Args:
      names: names of ``FIGURES`` (None: all of them, in order).
      data_dir: MNIST's IDX folder, as the commands should show it (relative to the working directory).
      quick: shrink every command (``words``): digits, at most 2 epochs or 20 steps.
      write: write each block into its document between its markers, and the pictures into ``docs/``, as
        soon as the figure is done; False: write nothing (the pictures go to a temporary folder).
      root: the repository whose documents get the blocks.
      log: where progress goes, a line per command (None: nowhere).
      done: called with each figure's name and block as soon as it is done.

    Returns:
      The blocks by figure name.

    Raises:
      ValueError: an unknown name, or documents whose markers disagree with ``FIGURES`` (before any work).
      ConfigError: ``data_dir`` missing for figures that train on MNIST, or given with ``quick``.
      ChildProcessError: a command failed; the figures done before it are written.

    Example:
      >>> blocks = generate(["primer"], quick=True, write=False)
    """
    names = list(FIGURES) if names is None else list(names)
    for name in names:
        if name not in FIGURES:
            raise ValueError(f"figure {name!r} is not registered; expected one of {', '.join(FIGURES)}")
    root = Path(root)
    check_markers(root)
    if quick and data_dir is not None:
        raise ConfigError("data_dir", data_dir, "none with --quick, whose commands train on digits")
    mnist = [name for name in names if FIGURES[name].needs_data]
    if not quick and mnist and data_dir is None:
        raise ConfigError("data_dir", None, f"MNIST's IDX folder, for {', '.join(mnist)} (or --quick, which trains on digits)")
    if not quick and mnist and not Path(data_dir).is_dir():
        raise FileNotFoundError(f"--data-dir {data_dir}: no such folder; expected MNIST's IDX files")
    about, _ = measure_in_child(facts)
    date = datetime.date.today().isoformat()
    blocks = {}
    with tempfile.TemporaryDirectory(prefix="jaxtrain-figures-") as work:
        work = Path(work)
        pictures = root / "docs" if write else work
        for name in names:
            figure = FIGURES[name]
            results = _run(name, figure, data_dir, quick, work, pictures, log)
            parts = [_header(name, figure, about, date, data_dir, quick), figure.format(results)]
            if figure.picture:
                picture = pictures / Path(figure.picture).name
                if figure.draw:
                    figure.draw(results, picture)
                link = os.path.relpath(root / figure.picture, (root / figure.doc).parent)
                parts.append(f"![{figure.caption}]({Path(link).as_posix()})")
            blocks[name] = "\n\n".join(parts)
            if write:
                path = root / figure.doc
                write_text(path, replace_block(path.read_text(), name, blocks[name]))
            if done:
                done(name, blocks[name])
    return blocks


def main(argv: Sequence[str] | None = None) -> int:
    """``python tools/figures.py``: reruns the commands behind the docs' tables and pictures, one at a time, and
    writes them into README.md and docs/ between their markers. Errors as jaxtrain's own: one line, exit 2."""
    p = Parser(prog="tools/figures.py", description=main.__doc__.split(". Errors")[0], formatter_class=Help)
    p.add_argument("--data-dir", default=None, help="MNIST's IDX folder, which most figures train on, as the docs should show it")
    p.add_argument("--only", nargs="+", choices=FIGURES, default=None, metavar="NAME",
                   help=f"these figures only (default: all of them): {', '.join(FIGURES)}")
    p.add_argument("--list", action="store_true", help="list the figures, their commands and estimated minutes; run nothing")
    p.add_argument("--print", action="store_true", dest="print_blocks",
                   help="print the blocks instead of writing them and the pictures into the docs")
    p.add_argument("--quick", action="store_true",
                   help="shrink every command (digits, at most 2 epochs or 20 steps): a check of the commands, not figures")
    args = p.parse_args(argv)
    names = args.only or list(FIGURES)
    try:
        if args.list:
            if args.print_blocks:
                raise ConfigError("print", True, "no --print with --list, which runs nothing")
            print(listing(names, args.data_dir, quick=args.quick))
            return 0

        def log(line: str) -> None:
            print(line, file=sys.stderr, flush=True)

        def done(name: str, block: str) -> None:  # each figure as soon as it is done: a later failure keeps it
            if args.print_blocks:
                print(f"<!-- figure: {name} -->\n\n{block}\n\n<!-- /figure: {name} -->\n", flush=True)
            else:
                log(f"{name}: written into {FIGURES[name].doc}")

        generate(names, args.data_dir, quick=args.quick, write=not args.print_blocks, log=log, done=done)
    except (ConfigError, ValueError) as error:
        print(f"tools/figures.py: error: {error.by_flag() if isinstance(error, ConfigError) else error}", file=sys.stderr)
        return 2
    except (ChildProcessError, FileNotFoundError) as error:
        print(f"tools/figures.py: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
