"""Owning a run folder: one process writes it, a run already in it is never overwritten, its disk takes
writes, and its path is one that the checkpoint layer reads back.

``Run`` claims its folder (``claim``) before it writes anything there:

- a lock: ``fcntl.flock`` on ``DIR/.lock``, which holds the PID of its holder, for the whole run. A
  second process is refused at once, in one line naming that PID. The kernel drops the lock when its
  process ends, however it ends (a SIGKILL too), so a stale ``.lock`` file locks nothing. Of several
  processes of one run, process 0 takes it for all of them. Reading a run (``evaluate``, ``predict``,
  ``export``, ``load_run``) takes no lock: readers see only committed checkpoints, so they may read a run
  while it trains;
- a folder that holds a run (``config.json``, ``metrics.jsonl``, ``report.json`` or checkpoints) is
  refused without ``resume``, before anything is written, naming ``--resume`` and another folder as the
  ways on. ``resume`` on a folder without a checkpoint (missing, empty, or a run stopped before its
  first checkpoint) starts afresh and says so in one line on stderr: a job script can then always pass
  ``--resume``, its first try included;
- a path whose characters Orbax reads as a glob pattern (``*?[]\\``: ``runs/mlp[lr=1e-3]``) is refused,
  since Orbax looks its checkpoint's parts up by pattern and would find nothing, or another run's;
- the disk must take a few KB, written and synced (``check_space``): a full disk fails before any work.

A refused folder raises ``FolderError``, a bad setting (the command line exits with 2).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import shutil
import sys
import weakref
from collections.abc import Callable
from pathlib import Path

from jaxtrain.runs.reports import check_space

LOCK = ".lock"
# What a run leaves in its folder; any of them means that the folder holds a run.
RUN_FILES = ("config.json", "metrics.jsonl", "report.json", "checkpoints", "checkpoints-set-aside")
GLOB_CHARACTERS = "*?[]\\"  # what glob reads as a pattern: Orbax finds a checkpoint's parts with glob

# Locks held by this process, by folder: a second Run of the same folder in this process (a notebook cell
# run again) takes over from the first, which is closed first, rather than being refused by its own lock.
_HELD: dict[Path, Callable[[], None]] = {}


class FolderError(ValueError):
    """A run folder that cannot be used as asked: in use, holding another run, or its path unusable. A bad
    setting: the command line exits with 2."""


def check_path(folder: str | Path) -> None:
    """Refuses a run folder whose absolute path has a character that Orbax reads as a glob pattern.

    Raises:
      FolderError: one line naming the path and the characters.
    """
    path = str(Path(folder).absolute())
    bad = sorted({c for c in path if c in GLOB_CHARACTERS})
    if bad:
        raise FolderError(
            f"run folder {folder}: its path ({path}) has {' '.join(bad)}, which the checkpoint layer (Orbax) reads as a "
            f"glob pattern, so its checkpoints could not be read back; expected a path without {' '.join(GLOB_CHARACTERS)}"
        )


def run_files(folder: str | Path) -> list[str]:
    """The files and folders of a run that ``folder`` holds (``RUN_FILES``; an empty ``checkpoints/`` is none)."""
    folder = Path(folder)
    present = []
    for name in RUN_FILES:
        path = folder / name
        if path.is_dir() and not any(path.iterdir()):
            continue
        if path.exists():
            present.append(name)
    return present


def holder(folder: str | Path) -> int | None:
    """The PID written in ``folder``'s lock file (that of its last holder, who may have ended), or None."""
    try:
        return int((Path(folder) / LOCK).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


class Lock:
    """An exclusive ``fcntl.flock`` on ``FOLDER/.lock``, which holds the holder's PID.

    Example:
      >>> lock = Lock("runs/mlp"); lock.acquire(); ...; lock.release()
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self._file = None

    def acquire(self, on_takeover: Callable[[], None] | None = None) -> None:
        """Takes the lock, or fails at once.

        Args:
          on_takeover: called should another lock of this process hold the folder, with that one released.

        Raises:
          FolderError: another process holds it: one line naming its PID.
        """
        key = self.folder.resolve()
        if key in _HELD:
            _HELD.pop(key)()  # this process's earlier Run of the folder: closed, its saves committed
        file = open(self.folder / LOCK, "a+")
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            file.close()
            if error.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            pid = holder(self.folder)
            who = f"process {pid}" if pid else "another process"
            raise FolderError(
                f"run folder {self.folder}: in use by {who}, which holds {self.folder / LOCK}; expected a folder "
                f"that no other process is writing: wait for that run to end, or use another --run-dir"
            ) from None
        try:
            file.seek(0)
            file.truncate()
            file.write(f"{os.getpid()}\n")
            file.flush()
        except OSError as error:
            file.close()
            raise type(error)(f"run folder {self.folder} cannot be written ({error.strerror or error})") from None
        self._file = file
        if on_takeover is not None:
            _HELD[key] = on_takeover

    def release(self) -> None:
        """Drops the lock (the file stays: removing it would let a third process lock another file of the
        same name while a second still waits on this one)."""
        if self._file is None:
            return
        _HELD.pop(self.folder.resolve(), None)
        with contextlib.suppress(OSError):
            fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()
        self._file = None

    @property
    def held(self) -> bool:
        return self._file is not None


def claim(folder: str | Path, resume: bool, lock: Lock, on_takeover: Callable[[], None] | None = None) -> bool:
    """Claims ``folder`` for a run that will write it (one process; ``Run.claim`` speaks for several).

    Checks the path, takes ``lock``, refuses a folder that holds a run unless ``resume``, and checks that
    the disk takes writes: all before anything of the run is written.

    Args:
      folder: the run folder; created if missing.
      resume: whether the run continues the one in the folder.
      lock: the folder's ``Lock``, released again if the claim fails.
      on_takeover: what closes this claim should a later one of the same process take the folder over.

    Returns:
      Whether the folder already held a run.

    Raises:
      FolderError: the path, the lock, or a run already there (one line saying what to do).
      OSError: the folder cannot be made or written (one line naming it).
    """
    folder = Path(folder)
    check_path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"run folder {folder}: a file; expected a folder")
    folder.mkdir(parents=True, exist_ok=True)
    check_space(folder, "run folder")  # first: on a full disk not even the lock's PID could be written
    lock.acquire(on_takeover)
    try:
        present = run_files(folder)
        if present and not resume:
            raise FolderError(
                f"run folder {folder} holds a run ({', '.join(present)}); expected --resume to continue it "
                f"(resume=True), or another --run-dir for a new run"
            )
    except BaseException:
        lock.release()
        raise
    return bool(present)


class Owner:
    """What ``runs.folder.Run`` adds to own its folder: ``claim`` before the first write, ``release`` at ``close``,
    ``with Run(path) as run:``, and a failed background save turned into one line that stops the run.

    The class that mixes it in has ``folder``, ``resume``, ``_manager``, ``latest_step()``, ``meta(step)``
    and ``close()``.
    """

    folder: Path
    resume: bool
    _lock: Lock | None = None
    _failure: OSError | None = None

    @property
    def claimed(self) -> bool:
        """Whether this object owns its folder for writing (``claim``)."""
        return self._lock is not None

    def claim(self) -> None:
        """Owns the folder for writing, once, before anything is written (``claim`` above): of several
        processes, process 0 claims it for all, and each learns its answer.

        Raises:
          FolderError: the folder is in use, holds a run without ``resume``, or has an unusable path.
          OSError: the folder cannot be made or written.
        """
        if self._lock is not None:
            return
        import jax
        import numpy as np
        from jax.experimental import multihost_utils

        lock, refusal = Lock(self.folder), None
        if jax.process_index() == 0:
            try:
                claim(self.folder, self.resume, lock, weak_close(self))
            except (OSError, ValueError) as error:
                refusal = error
        if jax.process_count() > 1:
            refused = multihost_utils.broadcast_one_to_all(np.int32(refusal is not None))
            if refused and refusal is None:
                refusal = FolderError(f"run folder {self.folder}: refused by process 0, whose error names why")
        if refusal is not None:
            raise refusal
        self._lock = lock
        _ORBAX_LOG.addFilter(_ORBAX_ERRORS)
        if self._manager is not None:  # one made to read: it must not write, nor clean up another's saves
            self._manager.close()
            self._manager = None
        if self.resume and jax.process_index() == 0 and self.latest_step() is None:
            say_fresh(self.folder)

    def release(self) -> None:
        """Gives the folder up (after the last save is complete)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None
            _ORBAX_LOG.removeFilter(_ORBAX_ERRORS)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def check_epochs(self, epochs: int | None, saved_epochs: int | None = None, fixed_length: str | None = None,
                     latest: int | None = None) -> None:
        """Refuses to resume with fewer epochs than the run has done, or, where ``fixed_length`` names what
        fixes the run's length (a cosine schedule), with any other number than ``saved_epochs``. ``latest``:
        the latest intact checkpoint's step, where the caller has checked them already.

        Raises:
          FolderError: one line naming the epochs and what to pass.
        """
        step = (latest if latest is not None else self.latest_step()) if self.resume and epochs is not None else None
        if step is None:
            return
        meta = self.meta(step)
        done = len(meta["history"]) + bool(meta.get("losses"))  # an epoch under way counts as begun
        if epochs < done:
            raise FolderError(
                f"epochs={epochs} on resuming the run in {self.folder}, which has begun {done} epochs; expected "
                f"--epochs {done} or more (a resumed run continues its record, it does not cut it short), "
                f"or another --run-dir for a shorter run"
            )
        if fixed_length and saved_epochs is not None and epochs != saved_epochs:
            raise FolderError(
                f"epochs={epochs} on resuming the run in {self.folder}, whose {fixed_length} over its {saved_epochs} "
                f"epochs; expected --epochs {saved_epochs} to finish it, or a new run with --epochs {epochs} in another --run-dir"
            )

    def check_saves(self) -> None:
        """Raises at once the error of a background save that failed (a full disk), in one line.

        Raises:
          OSError: the checkpoint's step and folder, the reason, and the last good checkpoint, which is kept.
        """
        if self._failure is not None:
            raise self._failure
        if self._manager is None:
            return
        # Orbax raises a save's error only when waited on; its finalizing thread holds it as soon as it ends
        # (a private attribute: where a version lacks it, the error waits for the next save).
        thread = getattr(self._manager, "_finalize_thread", None)
        ended = getattr(thread, "map", lambda f: False)(lambda t: t is not None and not t.is_alive() and t.exception is not None)
        try:
            self._manager.check_for_errors()
            if ended:
                self._manager.wait_until_finished()  # returns at once, raising the thread's error
        except Exception as error:  # what Orbax's writer met: an OSError, tensorstore's ValueError
            raise self.save_failed(error, getattr(self, "_sealing", None)) from error

    def save_failed(self, error: BaseException, step: int | None = None) -> OSError:
        """The one-line error of a failed save; the save's temporary folders are removed."""
        import jax

        directory = self.folder / "checkpoints"
        if jax.process_index() == 0:
            for temporary in directory.glob("*.orbax-checkpoint-tmp*"):
                shutil.rmtree(temporary, ignore_errors=True)
        text = str(error)
        reason = "no space left on device" if "No space left on device" in text else (text.splitlines() or ["?"])[0][:200]
        kept = self.latest_step()
        which = f"checkpoint {step}" if step is not None else "a checkpoint"
        last = f"the last good checkpoint, {kept}, is kept" if kept is not None else "no earlier checkpoint of this run exists"
        self._failure = OSError(f"{which} in {directory}: not written ({reason}); {last}")
        return self._failure


class _OrbaxErrorFilter(logging.Filter):
    """Holds back the errors (each with a traceback) that Orbax logs from its background threads as a save
    fails: ``Owner.check_saves`` raises them, in one line, while the folder is claimed."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno >= logging.ERROR and f"{os.sep}orbax{os.sep}" in record.pathname)


_ORBAX_LOG = logging.getLogger("absl")
_ORBAX_ERRORS = _OrbaxErrorFilter()


def say_fresh(folder: str | Path) -> None:
    """The one line that ``resume`` prints on a folder without a checkpoint (missing, empty, or a run
    stopped before its first save): the run starts afresh."""
    print(f"jaxtrain: run folder {folder} holds no checkpoint to resume from; starting the run afresh", file=sys.stderr)


def weak_close(owner: object) -> Callable[[], None]:
    """``owner.close``, without keeping ``owner`` alive: what ``claim`` calls to take a folder over."""
    method = weakref.WeakMethod(owner.close)
    return lambda: (close := method()) and close()
