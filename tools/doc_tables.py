"""The docs' tables, formatted from the reports that the figures' commands write (``figures.py``, beside this file).

A formatter takes a figure's ``Result``s, one per command in order, and returns Markdown.
"""

from __future__ import annotations

import dataclasses
import shlex
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from jaxtrain.compare import plot
from jaxtrain.compare.bench import PRESETS, PRIMER, format_bench, format_machine
from jaxtrain.training.fit import plan_calls


@dataclasses.dataclass(frozen=True)
class Result:
    """One command of a figure, run: ``command`` as the docs show it, ``flags`` (the words after the
    figure's ``common`` start, the whole command without one) and its ``report`` (None for ``plot``)."""

    command: str
    flags: str
    report: dict[str, Any] | None


def _percent(fraction: float | None) -> str:
    return "—" if fraction is None else f"{100 * fraction:.2f}%"


def _epoch_seconds(report: dict[str, Any]) -> float:
    """The median epoch's seconds after the first, as samples/s is the median after the first."""
    return statistics.median(e["seconds"] for e in report["history"][1:] or report["history"])


def _common(result: Result) -> str:
    return result.command[: len(result.command) - len(result.flags)].strip()


def _model_and_flags(result: Result) -> tuple[str, str]:
    """A parity row's ``--model`` and its other flags."""
    words = shlex.split(result.flags)
    at = words.index("--model")
    return words[at + 1], shlex.join(words[:at] + words[at + 2:])


def runs_table(results: Sequence[Result]) -> str:
    """Training runs, one row per command: the data, test accuracy, samples/s."""
    lines = [
        "| command | training / test images | test accuracy | samples/s |",
        "| --- | ---: | ---: | ---: |",
        *(f"| `{r.command}` | {r.report['train_examples']:,} / {r.report['test_examples']:,} | "
          f"{_percent(r.report['test_accuracy'])} | {r.report['samples_per_second']:,.0f} |" for r in results),
    ]
    return "\n".join(lines + ["", "samples/s: the median over the epochs after the first, which includes compiling."])


def options_table(results: Sequence[Result]) -> str:
    """Training runs that share a start, one row per flags: test accuracy, per epoch too, and speed."""
    lines = [
        f"| command (`{_common(results[0])}` and) | test accuracy | test accuracy by epoch (%) | samples/s | epoch (s) |",
        "| --- | ---: | --- | ---: | ---: |",
    ]
    for r in results:
        by_epoch = " ".join(f"{100 * e['test_accuracy']:.2f}" for e in r.report["history"])
        lines.append(f"| `{r.flags}` | {_percent(r.report['test_accuracy'])} | {by_epoch} | "
                     f"{r.report['samples_per_second']:,.0f} | {_epoch_seconds(r.report):.2f} |")
    return "\n".join(lines + ["", "samples/s and epoch: the median over the epochs after the first."])


def compile_table(results: Sequence[Result]) -> str:
    """Compilation with a compilation cache: each run's ahead-of-time compilation of every call shape, the
    cache empty for a folder's first run and filled by the runs before it for the next."""
    lines = [
        f"| command (`{_common(results[0])}` and) | compilation cache | call shapes | compile s | programs (loaded) | test accuracy |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    seen = set()
    for r in results:
        words = shlex.split(r.flags)
        cache = words[words.index("--compile-cache") + 1]
        report = r.report
        shapes = set(plan_calls(report["train_examples"], report["batch_size"], report["steps_per_call"]))
        state = "filled by the runs above" if cache in seen else "empty"
        seen.add(cache)
        programs = report["compilations"]
        lines.append(f"| `{r.flags}` | {state} | {len(shapes)} | {report['compile_seconds']:.2f} | "
                     f"{programs['programs']} ({programs['loaded']}) | {_percent(report['test_accuracy'])} |")
    return "\n".join(lines + ["", "compile s: `compile_fit`'s, every call shape of the epoch compiled (or loaded) "
                                   "before the first step; tracing and lowering included. programs: every program "
                                   "the run compiled, and how many of them it loaded from the cache instead."])


def bench_table(results: Sequence[Result]) -> str:
    return format_bench(results[0].report)


def checkpoints_table(results: Sequence[Result]) -> str:
    """What checkpoints cost: one save and one restore, and each policy's speed against no run folder."""
    result = results[0].report
    plain, policy, each = PRESETS["checkpoints"]
    lines = [
        format_machine(result),
        "",
        "| model | one save (complete on disk) | one restore | state size | no run folder | default policy (60 s) "
        "| a checkpoint every epoch |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for model, saves in result["checkpoints"].items():
        rows = {row["program"]: row for row in result["rows"] if row["model"] == model}
        base = rows[plain]["samples_per_second"]
        lines.append(
            f"| {model} | {saves['save_seconds']:.3f} s | {saves['restore_seconds']:.3f} s | {saves['megabytes']:.1f} MB "
            f"| {base:,.0f} samples/s ({rows[plain]['epoch_seconds']:.2f} s an epoch) "
            + " ".join(f"| {rows[p]['samples_per_second']:,.0f} ({rows[p]['samples_per_second'] / base:.0%})" for p in (policy, each))
            + " |"
        )
    return "\n".join(lines)


def curves_table(results: Sequence[Result]) -> str:
    """The run folders' final test accuracy and best validation accuracy."""
    lines = ["| run | final test accuracy | best validation accuracy (epoch) |", "| --- | ---: | ---: |"]
    for r in results:
        if r.report is None:
            continue  # the plot
        words = shlex.split(r.command)
        best = max(r.report["history"], key=lambda e: e["val_accuracy"])  # the first of equals
        lines.append(f"| `{words[words.index('--run-dir') + 1]}` | {_percent(r.report['test_accuracy'])} "
                     f"| {_percent(best['val_accuracy'])} ({best['epoch']} of {len(r.report['history'])}) |")
    return "\n".join(lines)


def _parity_rows(results: Sequence[Result], columns: Sequence[str], cells: Callable[[dict[str, Any]], Sequence[str]]) -> list[str]:
    """A parity table's lines: a row per command, its model and optimizer flags, then ``cells(report)``."""
    lines = ["| " + " | ".join(["`--model`", "optimizer flags", *columns]) + " |", "| --- | --- |" + " ---: |" * len(columns)]
    for r in results:
        model, flags = _model_and_flags(r)
        lines.append("| " + " | ".join([model, f"`{flags}`", *cells(r.report)]) + " |")
    return lines


def parity_table(results: Sequence[Result]) -> str:
    """float64 parity: the largest differences of losses, weights and running statistics, and accuracy."""
    lines = _parity_rows(
        results, ("max rel. loss diff", "max param diff", "max running-stats diff", "test acc. torch / jax"),
        lambda p: (f"{p['max_rel_loss_diff']:.1e}", f"{p['max_param_diff']:.1e}",
                   "—" if p["max_batch_stats_diff"] is None else f"{p['max_batch_stats_diff']:.1e}",
                   f"{_percent(p['torch']['test_accuracy'])} / {_percent(p['jax']['test_accuracy'])}"),
    )
    lines[1] = lines[1].removesuffix(" ---: |") + " --- |"  # the accuracies: text, left-aligned
    worst = {key: max((r.report[key] or 0) for r in results) for key in ("max_rel_loss_diff", "max_param_diff", "max_batch_stats_diff")}
    lines += ["", f"Largest over the rows: {worst['max_rel_loss_diff']:.1e} (loss), {worst['max_param_diff']:.1e} "
              f"(parameters), {worst['max_batch_stats_diff']:.1e} (running statistics); the tests' bound is 1e-10."]
    return "\n".join(lines)


def reference_table(results: Sequence[Result]) -> str:
    """float32 parity against torch's float64 run from the same start."""
    return "\n".join(_parity_rows(
        results, ("max rel. loss diff", "torch f32 vs f64", "jax f32 vs f64"),
        lambda p: (f"{p['max_rel_loss_diff']:.1e}", f"{p['float64_reference']['torch_max_rel_loss_diff']:.1e}",
                   f"{p['float64_reference']['jax_max_rel_loss_diff']:.1e}"),
    ))


def accuracy_table(results: Sequence[Result]) -> str:
    """Long float32 parity runs: the two test accuracies."""
    lines = _parity_rows(
        results, ("test acc. torch", "test acc. jax", "difference (points)", "max rel. loss diff"),
        lambda p: (_percent(p["torch"]["test_accuracy"]), _percent(p["jax"]["test_accuracy"]),
                   f"{p['test_accuracy_diff']:+.2f}", f"{p['max_rel_loss_diff']:.1e}"),
    )
    widest = max(abs(r.report["test_accuracy_diff"]) for r in results)
    lines += ["", f"The test accuracies differ by at most {widest:.2f} percentage points (the tests' bound is 0.5)."]
    return "\n".join(lines)


def batch_sizes_table(results: Sequence[Result]) -> str:
    """samples/s by batch size, one row per model and program, with the ratio to the primer's."""
    result = results[0].report
    sizes = sorted({row["batch_size"] for row in result["rows"]})
    lines = [
        format_machine(result),
        "",
        "| model | program | " + " | ".join(f"batch {b}: samples/s (×primer)" for b in sizes) + " |",
        "| --- | --- |" + " ---: |" * len(sizes),
    ]
    for model, program in dict.fromkeys((row["model"], row["program"]) for row in result["rows"]):
        cells = {row["batch_size"]: row for row in result["rows"] if (row["model"], row["program"]) == (model, program)}
        lines.append(f"| {model} | {program} | " + " | ".join(
            f"{cells[b]['samples_per_second']:,.0f} ({cells[b]['vs_primer']:.2f})" if b in cells else "—" for b in sizes) + " |")
    return "\n".join(lines + ["", f"×primer: against {PRIMER} at the same batch size."])


def draw_batch_sizes(results: Sequence[Result], path: Path) -> None:
    plot.plot_batch_sizes(results[0].report, path)
