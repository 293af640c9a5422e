"""The whole job: a fresh process from its start to its printed test accuracy, as a user waits for it.

Samples/s leaves out what a short run mostly spends: starting Python, importing the framework, loading the
data, compiling, evaluating. ``job`` times the whole process instead, for jaxtrain's CLI
(``python -m jaxtrain train``, its defaults) beside the primer's PyTorch program
(``jaxtrain/compare/primer_script.py``, which imports no JAX), each as a program of its own started fresh:

- ``pytorch``: the primer's program, with the learning-rate schedule that jaxtrain's CLI gives the model;
- ``jaxtrain-cold``: jaxtrain's CLI with an empty compilation cache (``--compile-cache`` a new folder);
- ``jaxtrain-warm``: the same with the cache that an earlier, unmeasured run of the same job filled.

Both programs evaluate the test set after every epoch, so each reports the time to a target accuracy too
(MLPerf's training measure): from the process's start to the end of the first evaluation that reaches it.
Programs run one after another, never two at once, ``repeats`` times in turn; the rows hold medians.

  python -m jaxtrain compare job --models mlp cnn --dataset mnist --data-dir DIR --repeats 3
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from jaxtrain.config import Config, ConfigError

EPOCHS = {"mlp": 10, "cnn": 3}  # the primer's job, and the CNN's
TARGETS = {"mlp": 0.965, "cnn": 0.985}  # the test accuracy each job reaches on MNIST
PROGRAMS = ("pytorch", "jaxtrain-cold", "jaxtrain-warm")
SCRIPT = Path(__file__).with_name("primer_script.py")
_EPOCH_LINE = re.compile(r"^Epoch (\d+), Loss: ")
_ACCURACY_LINE = re.compile(r"^Accuracy on the \d+ test images: ")
# Caches that the job's processes must not inherit: a cold run's cache is only the empty folder it is given.
_CACHE_VARIABLES = ("JAX_COMPILATION_CACHE_DIR", "JAXTRAIN_COMPILE_CACHE")


def command(program: str, config: Config, report: Path, cache: Path | None = None) -> list[str]:
    """The command line of ``program`` ("pytorch" or "jaxtrain") for ``config``'s model, data and epochs,
    writing its report to ``report`` (and, for jaxtrain, keeping compiled programs in ``cache``).

    Example:
      >>> command("jaxtrain", Config(epochs=2), Path("r.json"), Path("cache"))[1:4]
      ['-m', 'jaxtrain', 'train']
    """
    data = ["--dataset", config.dataset, *(["--data-dir", config.data_dir] if config.data_dir else [])]
    common = ["--model", config.model, "--epochs", str(config.epochs), "--seed", str(config.seed), *data, "--report", str(report)]
    if program == "pytorch":
        return [sys.executable, str(SCRIPT), *common, "--schedule", config.schedule]
    return [sys.executable, "-m", "jaxtrain", "train", *common, "--compile-cache", str(cache)]


def time_process(argv: Sequence[str]) -> dict[str, Any]:
    """Runs ``argv`` as a fresh process and times, from just before its start, each line it prints.

    Returns:
      ``epoch_lines`` (the seconds at which each ``Epoch N, Loss: ...`` line arrived, in order),
      ``accuracy_seconds`` (the ``Accuracy on the ... test images`` line's) and ``exit_seconds``.

    Raises:
      RuntimeError: the process failed, or printed no accuracy; the message ends with its last stderr lines.
    """
    env = {k: v for k, v in os.environ.items() if k not in _CACHE_VARIABLES}
    env["PYTHONUNBUFFERED"] = "1"  # each line as it is printed, not when a pipe's buffer fills
    epoch_lines, accuracy = [], None
    with tempfile.TemporaryFile("w+") as errors:
        start = time.perf_counter()
        with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=errors, text=True, env=env) as process:
            for line in process.stdout:
                now = time.perf_counter() - start
                if _EPOCH_LINE.match(line):
                    epoch_lines.append(now)
                elif _ACCURACY_LINE.match(line):
                    accuracy = now
        exit_seconds = time.perf_counter() - start
        if process.returncode or accuracy is None:
            errors.seek(0)
            tail = " | ".join(errors.read().strip().splitlines()[-3:])
            raise RuntimeError(f"{' '.join(argv)}: exit status {process.returncode}, accuracy printed: "
                               f"{accuracy is not None}; expected a finished run. Its stderr ends: {tail}")
    return {"epoch_lines": epoch_lines, "accuracy_seconds": accuracy, "exit_seconds": exit_seconds}


def evaluated_at(epoch_lines: Sequence[float], epoch_seconds: Sequence[float], accuracy_seconds: float,
                 after_last: float) -> list[float]:
    """When each epoch's test accuracy was known, in seconds from the process's start.

    Both programs print ``Epoch N`` when epoch N's training ends and then evaluate, so epoch N's evaluation
    ends where epoch N+1's training starts: its line's time less its training ``seconds``. The last one
    ends ``after_last`` seconds (jaxtrain's final evaluation) before the accuracy line.

    Example:
      >>> evaluated_at([3.0, 4.5], [1.0, 1.0], 5.0, 0.25)
      [3.5, 4.75]
    """
    known = [max(line, following - seconds) for line, following, seconds
             in zip(epoch_lines, epoch_lines[1:], epoch_seconds[1:])]
    return known + [max(epoch_lines[-1], accuracy_seconds - after_last)]


def time_to_accuracy(history: Sequence[dict[str, Any]], known: Sequence[float], target: float) -> tuple[int, float] | None:
    """The first epoch whose test accuracy reaches ``target``, and when it was known; None if none does.

    Example:
      >>> time_to_accuracy([{"epoch": 1, "test_accuracy": 0.9}, {"epoch": 2, "test_accuracy": 0.97}], [3.5, 4.75], 0.965)
      (2, 4.75)
    """
    return next(((e["epoch"], t) for e, t in zip(history, known) if e["test_accuracy"] >= target), None)


def run_once(program: str, config: Config, target: float, folder: Path, cache: Path | None = None) -> dict[str, Any]:
    """One timed process of ``program`` ("pytorch" or "jaxtrain"): its times, its report's accuracies, and
    the time to ``target``. ``folder`` receives its report."""
    report_path = folder / f"{program}-{config.model}-{time.monotonic_ns()}.json"
    # What the run finds in its cache: none for a cold one, the filling run's programs for a warm one.
    cached = None if program == "pytorch" else sum(1 for p in cache.rglob("*") if p.is_file()) if cache.exists() else 0
    times = time_process(command(program, config, report_path, cache))
    report = json.loads(report_path.read_text())
    history = report["history"]
    if len(times["epoch_lines"]) != len(history):
        raise RuntimeError(f"{program}: {len(times['epoch_lines'])} epoch lines printed for {len(history)} epochs; expected one each")
    # Neither program evaluates again after its last epoch: its accuracy line follows that epoch's evaluation.
    known = evaluated_at(times["epoch_lines"], [e["seconds"] for e in history], times["accuracy_seconds"], 0.0)
    reached = time_to_accuracy(history, known, target)
    return {
        **times,
        "cached_files": cached,
        "evaluated_at": known,
        "target_epoch": reached and reached[0],
        "target_seconds": reached and reached[1],
        "test_accuracy": report["test_accuracy"],
        "accuracies": [e["test_accuracy"] for e in history],
        "compile_seconds": report.get("compile_seconds"),
        "epoch_seconds": [e["seconds"] for e in history],
    }


def check(models: Sequence[str], repeats: int, targets: dict[str, float]) -> None:
    """Refuses, before any work, what ``job`` could not run."""
    for name in models:
        if name not in EPOCHS:
            raise ValueError(f"model={name!r}; expected one of {', '.join(EPOCHS)} (the jobs that the primer's PyTorch program runs)")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ConfigError("repeats", repeats, "a positive integer")
    for name, target in targets.items():
        if name not in EPOCHS:
            raise ValueError(f"target for model {name!r}; expected a target for one of {', '.join(EPOCHS)}")
        if not 0 < target <= 1:
            raise ValueError(f"target {name}={target!r}; expected a test accuracy in (0, 1]")


def job(
    config: Config,
    models: Sequence[str] = ("mlp", "cnn"),
    epochs: int | None = None,
    repeats: int = 3,
    targets: dict[str, float] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Times the whole job of each of ``models``: jaxtrain's CLI cold and warm beside the primer's PyTorch program.

    Per model: one import of torch and one jaxtrain run that fills the warm cache, both unmeasured (so no
    program pays for the disk's first read of the libraries); then ``repeats`` rounds of pytorch,
    jaxtrain-cold, jaxtrain-warm, one process after another.

    Args:
      config: the data (``dataset``, ``data_dir``) and ``seed``; its model and epochs are replaced.
      models: "mlp" and/or "cnn".
      epochs: the epochs of every job (None: ``EPOCHS``, per model).
      repeats: the rounds; each row holds the medians.
      targets: test accuracies to time, by model (default: ``TARGETS``).
      log: where each process's start and end go, as they happen (None: nowhere).

    Returns:
      ``config``, ``repeats``, ``rows`` and ``runs`` (every timed process, in order). A row: ``model``,
      ``epochs``, ``program``, ``job_seconds`` (median, to the printed accuracy), ``exit_seconds`` (median),
      ``vs_pytorch`` (pytorch's job_seconds over this one's: how many times sooner), ``target``,
      ``target_seconds`` (median of the runs that reached it, None if none did), ``target_epoch``,
      ``reached`` (runs that did, of ``repeats``), ``test_accuracy`` (median) and ``compile_seconds``.

    Example:
      >>> result = job(Config(dataset="digits"), models=("mlp",), epochs=2, repeats=1, targets={"mlp": 0.5})
    """
    targets = {**TARGETS, **(targets or {})}
    check(models, repeats, targets)
    say = log or (lambda line: None)
    rows, timed = [], []
    with tempfile.TemporaryDirectory(prefix="jaxtrain-job-") as work:
        work = Path(work)
        say("job: importing torch once, unmeasured (the disk's first read of its libraries)")
        subprocess.run([sys.executable, "-c", "import torch"], check=True)
        for model in models:
            run_config = Config(dataset=config.dataset, data_dir=config.data_dir, seed=config.seed, model=model,
                                epochs=epochs or EPOCHS[model])
            warm = work / f"cache-{model}-warm"
            say(f"job {model}: filling the warm compilation cache (one run, unmeasured)")
            time_process(command("jaxtrain", run_config, work / "fill.json", warm))
            results = {program: [] for program in PROGRAMS}
            for repeat in range(1, repeats + 1):
                for program in PROGRAMS:
                    cache = warm if program == "jaxtrain-warm" else work / f"cache-{model}-cold-{repeat}"
                    say(f"job {model} {program} [{repeat}/{repeats}]: started")
                    result = run_once(program.split("-")[0], run_config, targets[model], work, cache)
                    say(f"job {model} {program} [{repeat}/{repeats}]: accuracy printed at {result['accuracy_seconds']:.1f} s, "
                        f"target {targets[model]:.1%} " + (f"at {result['target_seconds']:.1f} s (epoch {result['target_epoch']})"
                                                          if result["target_epoch"] else "not reached"))
                    results[program].append(result)
                    timed.append({"model": model, "program": program, "repeat": repeat, **result})
            rows += _rows(model, run_config.epochs, targets[model], results)
    return {"config": {"dataset": config.dataset, "data_dir": config.data_dir, "seed": config.seed},
            "repeats": repeats, "rows": rows, "runs": timed}


def _rows(model: str, epochs: int, target: float, results: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    def median(values):
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else None

    rows = []
    for program, measured in results.items():
        reached = [r for r in measured if r["target_epoch"]]
        rows.append({
            "model": model, "epochs": epochs, "program": program,
            "job_seconds": median(r["accuracy_seconds"] for r in measured),
            "exit_seconds": median(r["exit_seconds"] for r in measured),
            "target": target,
            "target_seconds": median(r["target_seconds"] for r in reached),
            "target_epoch": median(r["target_epoch"] for r in reached),
            "reached": len(reached),
            "test_accuracy": median(r["test_accuracy"] for r in measured),
            "compile_seconds": median(r["compile_seconds"] for r in measured),
        })
    for row in rows:  # PROGRAMS' first is pytorch
        row["vs_pytorch"] = rows[0]["job_seconds"] / row["job_seconds"]
    return rows


def format_job(result: dict[str, Any]) -> str:
    """The result as a Markdown table, one row per model and program.

    Example:
      >>> print(format_job(job(Config(dataset="digits"), models=("mlp",), epochs=2, repeats=1)))
    """
    fmt = lambda value, spec: "—" if value is None else format(value, spec)  # noqa: E731
    c = result["config"]
    lines = [
        f"{c['dataset']}; medians of {result['repeats']} run(s) each; seconds from the process's start.",
        "",
        "| model | epochs | program | to the printed accuracy s | ×sooner than pytorch | target | to the target s (epoch) "
        "| reached | test acc. % | compile s |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in result["rows"]:
        target = ("not reached" if row["target_seconds"] is None
                  else f"{row['target_seconds']:.1f} ({row['target_epoch']:g})")
        lines.append(
            f"| {row['model']} | {row['epochs']} | {row['program']} | {row['job_seconds']:.1f} | {row['vs_pytorch']:.2f} "
            f"| {100 * row['target']:.1f}% | {target} | {row['reached']}/{result['repeats']} "
            f"| {100 * row['test_accuracy']:.2f} | {fmt(row['compile_seconds'], '.2f')} |"
        )
    return "\n".join(lines)
