"""Checkpoints that are read only when complete: a manifest of every file of a checkpoint, written as the
save commits, and checked before the checkpoint is restored.

Orbax writes a checkpoint into a temporary folder and renames it when complete, but a folder can still be
damaged afterwards: a delete of an old checkpoint cut short by a signal leaves it without an item, a copy
cut short leaves an empty step folder, and a flipped byte goes unnoticed by Orbax (a model restored from
it computes something else, silently). So each checkpoint carries ``jaxtrain-manifest.json``: the size and
SHA-256 of each of its files, written into the temporary folder just before Orbax renames it, so that a
committed checkpoint always has one. ``check`` compares a step folder with its manifest (a CNN's state of
~3 MB hashes in milliseconds).

A step folder without a manifest is incomplete, except in a folder where no checkpoint has one: those were
written before checkpoints carried manifests, and are read unverified once their Orbax items are there.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import jax

MANIFEST = "jaxtrain-manifest.json"
_FORMAT = 1
# What Orbax writes into every complete checkpoint of a run (items "state" and "meta"): the minimum a
# checkpoint without a manifest must hold to be read at all.
_ORBAX_FILES = ("_CHECKPOINT_METADATA", "state/_METADATA", "state/manifest.ocdbt", "meta/metadata")
# Orbax's own records at a checkpoint's top, written as it commits, after the manifest: left out of it.
# The first is checked to be JSON; the arrays and the JSON of the run are all in the manifest.
_WRITTEN_AT_COMMIT = ("_CHECKPOINT_METADATA", "commit_success.txt")


def _digest(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as data:
        for block in iter(lambda: data.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def _files(folder: Path) -> list[Path]:
    ours = lambda p: p.name == MANIFEST or p.name.startswith(f".{MANIFEST}")  # noqa: E731
    orbax = lambda p: p.parent == folder and p.name in _WRITTEN_AT_COMMIT  # noqa: E731
    return sorted(p for p in folder.rglob("*") if p.is_file() and not ours(p) and not orbax(p))


def write_manifest(folder: str | Path) -> Path:
    """Writes the manifest of a checkpoint folder: each file's path (relative to ``folder``), size and
    SHA-256, but for Orbax's records written after it (``_WRITTEN_AT_COMMIT``). Written atomically and synced, so that a crash leaves either no manifest or a whole one.

    Args:
      folder: a checkpoint's folder, complete (Orbax's temporary folder just before its rename).

    Returns:
      The manifest's path.

    Example:
      >>> write_manifest("runs/mlp/checkpoints/430.orbax-checkpoint-tmp")
    """
    folder = Path(folder)
    files = {p.relative_to(folder).as_posix(): {"bytes": p.stat().st_size, "sha256": _digest(p)} for p in _files(folder)}
    text = json.dumps({"format": _FORMAT, "files": files}, indent=1, sort_keys=True) + "\n"
    with tempfile.NamedTemporaryFile("w", dir=folder, prefix=f".{MANIFEST}.", delete=False) as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    path = folder / MANIFEST
    os.replace(out.name, path)
    descriptor = os.open(folder, os.O_RDONLY)
    try:  # the rename itself survives a power cut only once the folder is synced
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    return path


def check(folder: str | Path, unverified: bool = False) -> str | None:
    """What is wrong with a checkpoint folder, in a few words, or None when it is intact.

    Args:
      folder: a checkpoint's folder (``checkpoints/<step>``).
      unverified: accept a folder without a manifest whose Orbax items are all there (a run written before
        checkpoints carried manifests); otherwise a missing manifest means an incomplete checkpoint.

    Returns:
      None, or e.g. "empty folder", "no manifest (its save did not finish)", "state/_METADATA missing",
      "state/d/3b2e…: changed since it was saved (checksum differs)".
    """
    folder = Path(folder)
    if not any(folder.iterdir()):
        return "empty folder"
    path = folder / MANIFEST
    if not path.is_file():
        if unverified:
            missing = [name for name in _ORBAX_FILES if not (folder / name).is_file()]
            return f"{missing[0]} missing" if missing else None
        return "no manifest (its save did not finish, or it was copied in part)"
    try:
        files = json.loads(path.read_text())["files"]
        entries = [(name, int(entry["bytes"]), str(entry["sha256"])) for name, entry in files.items()]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return f"{MANIFEST} unreadable"
    try:
        json.loads((folder / _WRITTEN_AT_COMMIT[0]).read_text())
    except FileNotFoundError:
        return f"{_WRITTEN_AT_COMMIT[0]} missing"
    except (OSError, ValueError):
        return f"{_WRITTEN_AT_COMMIT[0]} unreadable"
    for name, size, sha in entries:
        file = folder / name
        if not file.is_file():
            return f"{name} missing"
        if file.stat().st_size != size:
            return f"{name}: {file.stat().st_size} bytes, {size} when saved"
        if _digest(file) != sha:
            return f"{name}: changed since it was saved (checksum differs)"
    return None


def step_folders(directory: str | Path) -> dict[int, Path]:
    """The step folders of a checkpoints folder (named by their step, as Orbax names them), by step,
    oldest first. Orbax's temporary folders and anything else are left out."""
    directory = Path(directory)
    if not directory.is_dir():
        return {}
    found = {int(p.name): p for p in directory.iterdir() if p.name.isdigit() and p.is_dir()}
    return dict(sorted(found.items()))


def unverified(directory: str | Path) -> bool:
    """Whether the checkpoints of ``directory`` were written before checkpoints carried manifests: none has one."""
    folders = step_folders(directory).values()
    return bool(folders) and not any((f / MANIFEST).is_file() for f in folders)


def survey(directory: str | Path) -> tuple[list[int], dict[int, str]]:
    """The checkpoints of a checkpoints folder, checked (``check``; those of a folder written before
    manifests, ``unverified``, by their Orbax items).

    Returns:
      The intact steps, oldest first, and the others with what is wrong with each.
    """
    legacy = unverified(directory)
    problems = {step: check(folder, legacy) for step, folder in step_folders(directory).items()}
    intact = [step for step, problem in problems.items() if problem is None]
    return intact, {step: problem for step, problem in problems.items() if problem is not None}


def set_aside(directory: str | Path, into: str | Path) -> tuple[list[int], list[tuple[int, str, Path]]]:
    """Moves each checkpoint of ``directory`` that ``survey`` finds damaged into the folder ``into`` (kept,
    not deleted: it may still be of use to someone), as ``into/<step>``.

    Returns:
      The intact steps, which stay, oldest first, and ``(step, what is wrong, where it went)`` of each
      checkpoint moved.
    """
    intact, broken = survey(directory)
    moved = []
    for step, problem in broken.items():
        target = Path(into) / str(step)
        while target.exists():  # set aside before, at the same step
            target = target.with_name(target.name + "+")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(Path(directory) / str(step), target)
        moved.append((step, problem, target))
    return intact, moved


@contextlib.contextmanager
def quiet_orbax() -> Iterator[None]:
    """Orbax's warnings (absl's logger) held back while the block runs: Orbax warns of each damaged step
    folder as it lists them, where ``survey``'s caller names them once."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def orbax() -> ModuleType:
    """``orbax.checkpoint``, imported at a run folder's first use of it: ``import jaxtrain``, and a run
    without a folder, do without its import (about 0.2 s)."""
    return importlib.import_module("orbax.checkpoint")


@functools.cache
def _manager_class() -> type:
    class CheckpointManager(orbax().CheckpointManager):
        """Orbax's manager, leaving the preemption service to ``fit`` (``jaxtrain.training.preemption``): Orbax's
        own checks, made with the saved step from its background thread, would move the service's count
        backwards and could make one process pass the agreed step unseen."""

        def reached_preemption(self, step: int) -> bool:
            return False

    return CheckpointManager


def manager(directory: Path, keep: int, writer: bool, on_commit: Callable[[], None],
            pinned: Callable[[], int | None] = lambda: None) -> Any:
    """The Orbax manager of a run's checkpoints in ``directory`` (an absolute path): the latest ``keep``, the
    best by accuracy and the step that ``pinned()`` names are kept; ``on_commit`` runs once a save's files are
    all written, before Orbax renames its temporary folder. A reader (``writer=False``) neither writes nor
    removes a writer's temporaries."""
    ocp = orbax()
    policies = ocp.checkpoint_managers
    kept = policies.AnyPreservationPolicy([
        policies.LatestN(keep),
        policies.BestN(get_metric_fn=lambda m: m["accuracy"], n=1, keep_checkpoints_without_metrics=False),
        _Pinned(pinned),
    ])
    with quiet_orbax():  # it warns of each damaged step folder; restore says what it skips, once
        options = ocp.CheckpointManagerOptions(
            preservation_policy=kept, cleanup_tmp_directories=writer, read_only=not writer,
            async_options=ocp.AsyncOptions(post_finalization_callback=on_commit),
        )
        return _manager_class()(directory, options=options, item_names=("state", "meta"))


class _Pinned:
    """Orbax's preservation policy for a pinned step (``Run.pin``): that step's checkpoint is kept."""

    def __init__(self, pinned: Callable[[], int | None]):
        self.pinned = pinned

    def should_preserve(self, checkpoints: Sequence[Any], *, context: Any) -> list[bool]:
        return [info.step == self.pinned() for info in checkpoints]


def state_tree(state: Any) -> dict[str, Any]:
    """The arrays of a ``TrainState``, its typed key as raw key data, which Orbax stores."""
    return {
        "step": state.step,
        "params": state.params,
        "opt_state": state.opt_state,
        "batch_stats": state.batch_stats,
        "key": jax.random.key_data(state.key),
    }
