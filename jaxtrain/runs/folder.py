"""Runs that outlive their process: a run folder, Orbax checkpoints, exact resume and metrics as they come.

A run folder holds everything of one run (of several processes, process 0 writes its files; Orbax saves
the checkpoints from all of them):

  config.json      the configuration (``resume`` refuses another one)
  metrics.jsonl    one strict JSON line per epoch (and per ``log_every`` steps), flushed as the run goes
  checkpoints/     Orbax checkpoints: the whole ``TrainState``, the loader's position and the history, each
                   with a manifest of its files' checksums, checked before it is read (``jaxtrain.runs.checkpoints``)
  report.json      the final report

``fit(..., run=Run(folder))`` saves into it; ``Run(folder, resume=True)`` continues the run from its
latest checkpoint, bit for bit, since the batch order is a pure function of (seed, epoch) and each step's
dropout key a function of the step. ``jaxtrain.runs.load.load_run(folder)`` gives the trained model back.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from jaxtrain.data.loader import DataLoader
from jaxtrain.parallel.devices import is_main_process
from jaxtrain.runs import checkpoints, ownership, record
from jaxtrain.runs.reports import keep_lines, strict, to_json, write_json
from jaxtrain.training.step import TrainState

CHECKPOINTS = "checkpoints"
SET_ASIDE = "checkpoints-set-aside"  # where a resumed run moves the checkpoints that it cannot read


class Run(ownership.Owner):
    """A run folder and its checkpoint policy: the small object that ``fit(..., run=...)`` saves into.

    Checkpoints are taken at an epoch's end, but at most once every ``checkpoint_seconds``, and always at
    the end of the run; with ``checkpoint_every``, also every that many steps of an epoch. Orbax writes
    each one to a temporary folder and renames it when complete, so a crash mid-save leaves the previous
    checkpoint whole. The last ``keep`` are kept, and the best by accuracy (validation, else test).

    A Run owns its folder from its first write until ``close`` (``jaxtrain.runs.ownership``: a lock, and a run
    already there refused without ``resume``); ``with Run(path) as run:`` closes it. A failed save (a full
    disk) stops the run at once in one line; the last good checkpoint is kept.

    Args:
      folder: the run folder, created if needed; a path with ``*?[]\\`` is refused.
      resume: continue from the folder's latest checkpoint, if it has one.
      keep: checkpoints kept besides the best.
      checkpoint_seconds: the least time between two checkpoints at epochs' ends.
      checkpoint_every: also save every this many steps of an epoch (None: at epochs' ends only).
      log_every: also write the mean loss of every this many steps to ``metrics.jsonl`` (a host sync each).

    Example:
      >>> state, history = fit(state, loader, 10, test_loader, run=Run("runs/mlp", resume=True))
    """

    def __init__(
        self,
        folder: str | Path,
        *,
        resume: bool = False,
        keep: int = 3,
        checkpoint_seconds: float = 60.0,
        checkpoint_every: int | None = None,
        log_every: int | None = None,
    ):
        for name, value in (("keep", keep), ("checkpoint_every", checkpoint_every), ("log_every", log_every)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name}={value!r}; expected a positive integer")
        if not checkpoint_seconds >= 0:
            raise ValueError(f"checkpoint_seconds={checkpoint_seconds!r}; expected a number >= 0")
        self.folder = Path(folder)
        ownership.check_path(self.folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise NotADirectoryError(f"run folder {self.folder}: a file; expected a folder")
        self.resume, self.keep = resume, keep
        self.checkpoint_seconds, self.checkpoint_every, self.log_every = checkpoint_seconds, checkpoint_every, log_every
        self._manager: Any = None  # an orbax.checkpoint.CheckpointManager, once made
        self._last_save = time.monotonic()
        self._saved_step: int | None = None
        self._sealing: int | None = None
        self._skipped: set[Any] = set()
        # What fit's callbacks keep (their state_dict()s) and why they stopped the run, if they did: saved
        # with each checkpoint, given back on resume; a run stopped by one is done, and a resume returns it.
        self.callback_state: dict[str, Any] = {}
        self.stopped: str | None = None
        self._pinned: int | None = None

    @property
    def manager(self) -> Any:
        """The Orbax manager of ``checkpoints/`` (``checkpoints.manager``), created on first use."""
        if self._manager is None:  # Orbax asks for an absolute path
            self._manager = checkpoints.manager(
                (self.folder / CHECKPOINTS).absolute(), self.keep, self.claimed, self._seal, pinned=lambda: self._pinned
            )
        return self._manager

    def _seal(self) -> None:
        """Orbax's hook once a save's files are all written, before it renames the temporary folder: the
        manifest goes in, so that every committed checkpoint has one (``jaxtrain.runs.checkpoints``)."""
        directory = self.folder / CHECKPOINTS
        temporary = sorted(directory.glob(f"{self._sealing}.orbax-checkpoint-tmp*"))
        checkpoints.write_manifest(temporary[-1] if temporary else directory / str(self._sealing))

    def start(self, config: dict[str, Any], fixed_except: tuple[str, ...] = ("epochs",), fixed_length: str | None = None) -> None:
        """Claims the folder and writes ``config.json``; on resume, first refuses a configuration that computes
        something else, or fewer ``epochs`` than were begun (``Owner.check_epochs``).

        Args:
          config: the run's configuration, JSON-able.
          fixed_except: the settings that a resumed run may change.
          fixed_length: what fixes the run's length, if anything does (a cosine schedule): then a resumed run
            keeps its ``epochs``.

        Raises:
          jaxtrain.runs.ownership.FolderError: one line naming the first setting that differs from the saved run's.
        """
        self.claim()
        path = self.folder / "config.json"
        if self.resume and path.is_file() and self.latest_step() is not None:
            saved = json.loads(path.read_text())
            for key in sorted(set(saved) | set(config)):
                if key not in fixed_except and strict(saved.get(key)) != strict(config.get(key)):
                    raise ownership.FolderError(  # a bad setting
                        f"{key}={config.get(key)!r} differs from the run in {self.folder} ({key}={saved.get(key)!r}); "
                        f"expected the same to resume it, or another run folder"
                    )
            self.check_epochs(config.get("epochs"), saved.get("epochs"), fixed_length)
        if is_main_process():
            write_json(path, config)

    def log(self, record: dict[str, Any]) -> None:
        """Appends ``record`` to ``metrics.jsonl`` as one strict JSON line, flushed at once (process 0 only)."""
        self.claim()
        if not is_main_process():
            return
        path = self.folder / "metrics.jsonl"
        try:
            with open(path, "a") as out:
                out.write(to_json(record) + "\n")
        except OSError as error:  # a full disk fails the write without naming the file
            raise type(error)(f"{path}: a line not written ({error.strerror or error})") from None

    def pin(self, step: int) -> None:
        """Keeps the checkpoint of ``step`` whatever ``keep`` says, and saves it at its epoch's end even when no
        save is due: the best epoch of ``EarlyStopping(restore_best=True)``, which a resumed run reads back. One
        step at a time: a new pin releases the last.
        """
        self._pinned = step

    def due(self) -> bool:
        """Whether an epoch's end should be saved: ``checkpoint_seconds`` have passed since the last save."""
        return time.monotonic() - self._last_save >= self.checkpoint_seconds

    def save(self, state: TrainState, meta: dict[str, Any], accuracy: float | None = None) -> None:
        """Checkpoints ``state`` with ``meta`` (JSON: the loader's position, the history), asynchronously.

        Raises:
          FloatingPointError: the parameters are not finite; nothing is written.
          OSError: this save or the one before it failed (a full disk): one line (``Owner.save_failed``).
        """
        self.claim()
        step = int(state.step)  # host sync: the save needs the state anyway
        if step == self._saved_step:
            return
        if step < (self._saved_step or 0) and self._rewind(step):
            return
        if not all(bool(np.isfinite(leaf).all()) for leaf in jax.tree.leaves(jax.device_get(state.params))):
            raise FloatingPointError(f"step {step}: the parameters are not finite; the last good checkpoint is kept")
        metrics = None if accuracy is None or not math.isfinite(accuracy) else {"accuracy": accuracy}
        meta = strict({**meta, "accuracy": accuracy})
        ocp = checkpoints.orbax()
        items = ocp.args.Composite(state=ocp.args.StandardSave(checkpoints.state_tree(state)), meta=ocp.args.JsonSave(meta))
        self.check_saves()
        try:
            self.manager.wait_until_finished()  # the previous save sealed first (manager.save would wait anyway)
        except Exception as error:  # what Orbax's writer met: an OSError, tensorstore's ValueError
            raise self.save_failed(error, self._sealing) from error
        self._sealing = step
        try:
            self.manager.save(step, args=items, metrics=metrics, force=True)
        except Exception as error:
            raise self.save_failed(error, step) from error
        self._last_save, self._saved_step = time.monotonic(), step

    def _rewind(self, step: int) -> bool:
        """A run that ends on an earlier step's state (``EarlyStopping(restore_best=True)``): the checkpoints
        after ``step`` go, so that the latest is the state the run returned. True if ``step`` is saved already."""
        try:
            self.manager.wait_until_finished()
            for later in [s for s in self.manager.all_steps() if s > step]:
                self.manager.delete(later)
        except Exception as error:
            raise self.save_failed(error, step) from error
        self._saved_step = None
        return step in self.manager.all_steps()

    @property
    def periods(self) -> tuple[int, ...]:
        """The periods, in steps of an epoch, at which ``fit`` hands over to ``step_end``."""
        return tuple(p for p in (self.checkpoint_every, self.log_every) if p)

    def restore_fit(
        self, state: TrainState, loader: DataLoader, epochs: int | None = None
    ) -> tuple[TrainState, list[dict], list[np.ndarray]]:
        """Where ``fit`` starts: with ``resume`` and a checkpoint, its state, the loader at its position, the
        history so far and the losses of the epoch's steps already taken; else ``state`` and nothing. It
        claims the folder first, and refuses fewer ``epochs`` than the run has begun."""
        self.claim()
        if is_main_process() and not (self.folder / "config.json").exists():  # made from Python: load_run opens it
            write_json(self.folder / "config.json", record.describe(state, loader))
        if not self.resume:
            return state, [], []
        intact = self._set_aside()  # every checkpoint checked once; the latest is checked again when read
        if not intact:
            self._forget_after(-1, 0)  # the lines of a run stopped before its first checkpoint: it starts afresh
            return state, [], []
        self.check_epochs(epochs, latest=intact[-1])
        state, meta = self.restore(state, intact[-1])
        self.callback_state, self.stopped = meta.get("callbacks", {}), meta.get("stopped")
        loader.load_state_dict(meta["loader"])
        self._forget_after(int(state.step), len(meta["history"]))
        return state, meta["history"], [np.asarray(meta["losses"], np.float32)]

    def _forget_after(self, step: int, epochs: int) -> None:
        """Drops the lines of ``metrics.jsonl`` logged after the checkpoint resumed from (and a line cut short),
        which the resumed run logs again."""
        if is_main_process():
            keep_lines(self.folder / "metrics.jsonl", lambda r: r.get("step", -1) <= step and r["epoch"] <= epochs + ("step" in r))

    def step_end(
        self, state: TrainState, loader: DataLoader, epoch: int, taken: int, losses: list, history: list, save: bool = False
    ) -> None:
        """After ``taken`` steps of ``epoch`` (a multiple of a period, or where ``save`` asks for a checkpoint):
        logs and saves as the policy says.

        Raises:
          FloatingPointError: a loss so far is not finite; nothing is saved.
        """
        values = np.concatenate([np.ravel(x) for x in jax.device_get(losses)])  # host sync: asked for
        if not np.isfinite(values).all():
            raise FloatingPointError(
                f"epoch {epoch}, step {taken}: the training loss is {values[~np.isfinite(values)][0]}; expected a "
                f"finite number (the run diverged: try a lower learning rate, or clipping the gradient norm)"
            )
        if self.log_every and taken % self.log_every == 0:
            self.log({"epoch": epoch, "step": int(state.step), "train_loss": float(np.mean(values[-self.log_every:]))})
        if save or (self.checkpoint_every and taken % self.checkpoint_every == 0):
            position = (loader.next_start[0] - 1, taken)
            meta = {"loader": loader.state_dict(position), "history": history, "losses": values.tolist()}
            self.save(state, {**meta, "callbacks": self.callback_state})

    def epoch_end(self, state: TrainState, loader: DataLoader, history: list[dict], last: bool, save: bool = False) -> None:
        """After an epoch: its line in ``metrics.jsonl``, and a checkpoint when one is due, the run ends or
        ``save`` asks for one."""
        record = history[-1]
        self.log(record)
        pinned = self._pinned is not None and self._pinned == int(state.step)  # host sync: one scalar, when pinned
        if self.due() or last or save or pinned:
            accuracy = record.get("val_accuracy", record.get("test_accuracy"))
            meta = {"loader": loader.state_dict(), "history": history, "losses": [], "callbacks": self.callback_state}
            self.save(state, {**meta, **({"stopped": self.stopped} if self.stopped else {})}, accuracy)
        if last:  # fit returns once the run's last checkpoint is committed
            self.wait()

    def latest_step(self) -> int | None:
        """The step of the latest intact checkpoint (``intact_steps``), or None."""
        intact = self.intact_steps()
        return intact[-1] if intact else None

    def steps(self) -> list[int]:
        """The steps of the checkpoints kept, intact or not, oldest first."""
        return list(checkpoints.step_folders(self.folder / CHECKPOINTS))

    def intact_steps(self) -> list[int]:
        """The steps of the checkpoints that are complete and match their manifests, oldest first; each of
        the others is named once, in one line on stderr, as skipped (``jaxtrain.runs.checkpoints``)."""
        intact, broken = checkpoints.survey(self.folder / CHECKPOINTS)
        for step, problem in broken.items():
            self._say(step, f"checkpoint {step} in {self.folder / CHECKPOINTS}: {problem}; skipped")
        return intact

    def _say(self, key: Any, line: str) -> None:
        if key not in self._skipped and is_main_process():
            print(f"jaxtrain: {line}", file=sys.stderr)
        self._skipped.add(key)

    def _set_aside(self) -> list[int]:
        """Moves the checkpoints that cannot be read out of ``checkpoints/`` (``checkpoints.set_aside``; process
        0, and every process waits for it): a resumed run would otherwise meet them again as it saves the
        same steps, and Orbax's keep-N would count them as kept. Returns the intact steps, checked once."""
        intact, moved = checkpoints.set_aside(self.folder / CHECKPOINTS, self.folder / SET_ASIDE) if is_main_process() else ([], [])
        for step, problem, target in moved:
            self._say(("moved", step), f"checkpoint {step} in {self.folder / CHECKPOINTS}: {problem}; moved to {target}")
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("jaxtrain: damaged checkpoints set aside")
            intact = intact if is_main_process() else self.intact_steps()  # what process 0 left
        if self._manager is not None:
            self._manager.reload()
        return intact

    def best_step(self, intact: list[int] | None = None) -> int | None:
        """The step of the intact checkpoint (of ``intact``, default ``intact_steps()``) with the highest
        accuracy, or None."""
        intact = self.intact_steps() if intact is None else intact
        scored = [(meta["accuracy"], step) for step in intact if (meta := self.meta(step)).get("accuracy") is not None]
        return max(scored)[1] if scored else None

    def meta(self, step: int) -> dict[str, Any]:
        """The JSON saved beside checkpoint ``step``."""
        ocp = checkpoints.orbax()
        return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

    def restore(self, state: TrainState, step: int | str = "latest", model_only: bool = False) -> tuple[TrainState, dict[str, Any]]:
        """``state`` filled in from a checkpoint, and the JSON saved with it.

        Args:
          state: a state of the run's model and optimizer (``create_train_state``), whose arrays give the
            shapes and dtypes to restore; its values are not used.
          step: "latest", "best", or a checkpoint's step.
          model_only: restore the step, parameters, statistics and key, keeping ``state``'s optimizer state
            (for a folder made by ``fit``, whose optimizer is not recorded: ``jaxtrain.runs.record``).

        Raises:
          FileNotFoundError: no such checkpoint, or it is damaged (``intact_steps``); the message lists
            those there are. "latest" and "best" skip damaged checkpoints, saying so in one line each.
          ValueError: the checkpoint's arrays do not fit ``state`` (another model, or other settings).
        """
        where = self.folder / CHECKPOINTS
        if step in ("latest", "best"):
            intact = self.intact_steps()
            wanted = (intact[-1] if intact else None) if step == "latest" else self.best_step(intact)
            problem = None if wanted is not None else "no intact checkpoint" if self.steps() else "no checkpoint"
        else:  # only this one is checked: an intact step reads whatever the others' state
            folder = checkpoints.step_folders(where).get(step)
            wanted, problem = step, "not found" if folder is None else checkpoints.check(folder, checkpoints.unverified(where))
        if problem:
            kept = ", ".join(map(str, self.intact_steps())) or "none"
            raise FileNotFoundError(f"checkpoint {step!r} in {where}: {problem}; expected latest, best or an intact one: {kept}")
        if checkpoints.unverified(where):
            self._say(-1, f"checkpoints in {where} carry no manifest (written by an earlier version): read unverified")
        ocp = checkpoints.orbax()
        target = None if model_only else jax.tree.map(ocp.utils.to_shape_dtype_struct, checkpoints.state_tree(state))
        items = ocp.args.Composite(state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore())
        try:
            restored = self.manager.restore(wanted, args=items)
        except (ValueError, KeyError, TypeError) as error:  # Orbax's tree comparisons, tens of lines long
            reason = str(error).strip().splitlines()[0].rstrip(":") if str(error).strip() else type(error).__name__
            raise ValueError(
                f"checkpoint {wanted} in {where}: does not fit the model and optimizer to restore into ({reason}); "
                f"expected those that the run was trained with, as its config.json names them, by this version "
                f"of jaxtrain"
            ) from None
        tree = restored["state"]
        if model_only:  # restored as saved: the optimizer's state comes back as plain containers
            tree = {key: tree[key] for key in ("step", "params", "batch_stats", "key")}
        state = state.replace(**{**tree, "key": jax.random.wrap_key_data(tree["key"])})
        # The latest step saved: an earlier one restored (EarlyStopping's best) and saved again rewinds to it.
        self._saved_step = max(wanted, self._saved_step or 0)
        return state, restored["meta"]

    def wait(self) -> None:
        """Waits for the last save to be committed.

        Raises:
          OSError: it failed (``Owner.save_failed``).
        """
        if self._manager is not None and self._failure is None:
            try:
                self._manager.wait_until_finished()
            except Exception as error:
                raise self.save_failed(error, self._sealing) from error

    def close(self) -> None:
        """Waits for the last save to be committed, then gives the folder up; the manager goes."""
        try:
            self.wait()
        finally:
            if self._manager is not None:
                with contextlib.suppress(Exception):  # a save that failed has been named already
                    self._manager.close()
                self._manager = None
            self.release()
