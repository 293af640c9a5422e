"""The primer's loop over epochs: ``fit``, the calls it compiles (``plan_calls``, ``compile_fit``) and the
way it feeds them.

``step.py`` holds one step; this module runs many. Each epoch is cut into compiled calls by one plan,
which ``compile_fit`` compiles ahead of time; the loss stays on the device and is read once per epoch.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import jax
import numpy as np
from jax.sharding import Mesh

from jaxtrain.data.collate import select
from jaxtrain.data.loader import DataLoader
from jaxtrain.data.transfer import prefetch_to_device
from jaxtrain.parallel import devices
from jaxtrain.training import preemption
from jaxtrain.training.callbacks import Callback, Context
from jaxtrain.training.callbacks import call as call_hooks
from jaxtrain.training.evaluation import evaluate
from jaxtrain.training.metrics import Metric
from jaxtrain.training.metrics import resolve as resolve_metrics
from jaxtrain.training.monitors import DivergenceGuard, EpochLine, ProgressBar
from jaxtrain.training.step import Batch, Key, TrainState, gather_steps, train_steps


class Run(Protocol):
    """What ``fit`` and its callbacks ask of a run folder (``jaxtrain.runs.folder.Run`` is one): the loop calls
    these at its boundaries, and the folder decides what to write and when."""

    folder: Path
    callback_state: dict[str, Any]  # the callbacks' states, saved with each checkpoint
    stopped: str | None  # why a callback stopped the run, saved with each checkpoint

    @property
    def periods(self) -> tuple[int, ...]: ...  # batches of an epoch at which a call must end (to save)

    def restore_fit(self, state: TrainState, loader: DataLoader, epochs: int) -> tuple[TrainState, list[dict], list[Any]]: ...

    def check_saves(self) -> None: ...

    def step_end(self, state: TrainState, loader: DataLoader, epoch: int, taken: int, losses: list[Any],
                 history: list[dict], save: bool = False) -> None: ...

    def epoch_end(self, state: TrainState, loader: DataLoader, history: list[dict], last: bool, save: bool = False) -> None: ...

    def pin(self, step: int) -> None: ...  # keep (and save) this step's checkpoint: EarlyStopping's best

    def restore(self, state: TrainState, step: int | str = "latest") -> tuple[TrainState, dict[str, Any]]: ...


def plan_calls(
    examples: int, batch_size: int, steps_per_call: int, *, start: int = 0, every: Sequence[int] = ()
) -> list[tuple[int, int]]:
    """The compiled calls of an epoch: ``(steps, batch size)`` per call, in the order ``fit`` makes them.

    Full batches go ``steps_per_call`` to a call, and a call also ends at every multiple of each period in
    ``every`` (where a run logs or saves); a short last batch is a call of its own. ``fit`` cuts each
    epoch's order by this plan and ``compile_fit`` compiles each distinct call of it, so the two cannot
    disagree.

    Args:
      examples: the examples of an epoch (``len(loader.indices(epoch))``).
      batch_size: examples per step.
      steps_per_call: optimizer steps per call.
      start: batches of the epoch already taken (a resumed epoch); the plan covers the rest.
      every: periods, in batches of the epoch, at which a call must end.

    Example:
      >>> plan_calls(100, 32, 2)
      [(2, 32), (1, 32), (1, 4)]
    """
    full, tail = divmod(examples, batch_size)
    ends = sorted({full, *(end for period in (steps_per_call, *every) for end in range(period, full, period))})
    edges = [start] + [end for end in ends if end > start]
    calls = [(b - a, batch_size) for a, b in zip(edges, edges[1:])]
    return calls + ([(1, tail)] if tail and start <= full else [])


def compile_fit(
    state: TrainState,
    loader: DataLoader,
    steps_per_call: int = 1,
    data_on_device: bool = False,
    every: Sequence[int] = (),
    *,
    inputs: Key = None,
    labels: Key = None,
    mesh: Mesh | None = None,
) -> float:
    """Compiles ahead of time every call that ``fit`` will make (``plan_calls``, on ``mesh`` as ``fit``
    places them); returns the seconds it took.

    The arguments are ``fit``'s, which must be given the same ``inputs``, ``labels`` and ``mesh``.
    """
    mesh = mesh or devices.make_mesh()
    devices.check_batch_size(mesh, loader.batch_size)
    state = devices.replicate(state, mesh)
    examples = loader.indices(0)
    arrays = None if loader.arrays() is None else select(loader.arrays(), inputs, labels)
    sample = select(loader.gather(examples[:1]), inputs, labels)
    # The dtype each call will really receive: the host's int64 indices (and any 64-bit data) arrive as their
    # 32-bit kind unless 64-bit JAX is on, as jax.device_put makes them.
    spec = lambda a, lead, where: jax.ShapeDtypeStruct(  # noqa: E731
        lead + np.shape(a)[1:], jax.dtypes.canonicalize_dtype(np.asarray(a).dtype), sharding=where
    )
    start = time.perf_counter()
    for k, b in set(plan_calls(len(examples), loader.batch_size, steps_per_call, every=every)):
        where = devices.batch_sharding(mesh, b, axis=1)
        if data_on_device:
            data = jax.tree.map(lambda a: spec(a, (devices.padded_rows(len(a), mesh),), devices.row_sharding(mesh)), arrays)
            gather_steps.lower(state, data, spec(examples, (k, b), where)).compile()
        else:
            train_steps.lower(state, jax.tree.map(lambda a: spec(a, (k, b), where), sample)).compile()
    return time.perf_counter() - start


def _epoch_calls(
    loader: DataLoader,
    steps_per_call: int,
    arrays: tuple[jax.Array, ...] | None,
    prefetch: int,
    every: Sequence[int],
    mesh: Mesh,
    keys: tuple[Key, Key] = (None, None),
) -> Iterator[tuple[Callable, tuple, int]]:
    """The loader's next epoch (or the rest of a resumed one) as ``(call, args, index)``, where
    ``call(state, *args)`` is one compiled call of ``plan_calls`` and ``index`` its ``(steps, batch)`` examples.

    Device-resident ``arrays`` (already ``(inputs, labels)``) are gathered on the device, so only the indices
    leave the host; otherwise each call's batches are gathered on the host at once, their ``keys`` (the
    ``inputs`` and ``labels`` entries) picked out and shaped ``(steps, batch, ...)``. Either way a call's
    batch axis is split over the mesh (``devices.batch_sharding``; the indices of device-resident data
    too, and the gather follows them: ``devices.shard_rows``), and each process takes only its own rows of
    the epoch's order.
    """
    epoch, start = loader.next_start
    examples = len(loader.indices(epoch))
    order = loader.next_epoch()
    plan = plan_calls(examples, loader.batch_size, steps_per_call, start=start, every=every)
    ends = np.cumsum([k * b for k, b in plan])
    indices = [chunk.reshape(shape) for chunk, shape in zip(np.split(order, ends[:-1]), plan)]
    shardings = [devices.batch_sharding(mesh, b, axis=1) for _, b in plan]
    local = lambda index, where: index[:, devices.local_rows(where, index.shape, axis=1)]  # noqa: E731
    if arrays is not None:
        for index, where in zip(indices, shardings):
            yield gather_steps, (arrays, devices.global_batch(local(index, where), where, index.shape[1], axis=1)), index
        return

    def shaped(index: np.ndarray, where: jax.sharding.NamedSharding) -> Batch:
        part = local(index, where)
        batch = jax.tree.map(lambda a: a.reshape(part.shape + a.shape[1:]), select(loader.gather(part.ravel()), *keys))
        return devices.global_batch(batch, where, index.shape[1], axis=1)

    batches = map(shaped, indices, shardings)
    if prefetch:
        batches = prefetch_to_device(batches, prefetch)
    for batch, index in zip(batches, indices):
        yield train_steps, (batch,), index


# Calls that fit lets run ahead of the host: enough that the device never waits for it, and far from the
# 32 that deadlock XLA:CPU over several devices. Each device's part of a call takes one of 32 in-flight
# slots of that device when it is launched, and launches run on a thread pool in no set order, so a later
# call's part can take a device's last slot while an earlier call's part on that device still waits for
# one. The earlier call's all-reduce then waits for a device that never starts it, and after 40 s XLA
# aborts ("expected 8 threads to join the rendezvous, but only 7 of them arrived"). Measured with 8 forced
# CPU devices on 2 cores: 31 calls in flight ran 3000 steps, 49 hung (docs/scaling.md).
_MAX_IN_FLIGHT = 8


def _preempted(run: Run, step: int) -> preemption.Preempted:
    return preemption.Preempted(
        f"preempted (SIGTERM): stopped at step {step}, saved in {run.folder}; resume the run to continue (--resume)"
    )


def fit(
    state: TrainState,
    train_loader: DataLoader,
    epochs: int,
    eval_loader: DataLoader | dict[str, DataLoader] | None = None,
    *,
    log: Callable[[str], None] | None = print,
    prefetch: int | None = None,
    steps_per_call: int = 1,
    data_on_device: bool = False,
    run: Run | None = None,
    inputs: Key = None,
    labels: Key = None,
    mesh: Mesh | None = None,
    callbacks: Sequence[Callback] = (),
    metrics: Sequence[str | Metric | Callable] = (),
) -> tuple[TrainState, list[dict[str, float]]]:
    """The primer's loop: ``epochs`` passes over ``train_loader``, printing ``Epoch N, Loss: …`` after each.

    The loss stays on the device during an epoch and is read once at its end, so the host never waits
    on a step. Each epoch is cut into compiled calls by ``plan_calls``; three feeding modes, which
    compute the same training for the same seed, decide what a call takes:

    - per step (``steps_per_call=1``): one step per call, its batch gathered on the host; a call's end
      (progress, a preemption notice) comes at every step.
    - fused (``steps_per_call=K``): K steps per call, a ``lax.scan`` over K batches gathered on the
      host at once, saving K - 1 dispatches: for data that stays on the host, the MLP measured 1.4×
      per step's speed and the CNN 1.18× on a 2-core CPU (docs/performance.md).
    - device-resident (``data_on_device=True``): the dataset is copied to the device once and each
      call gathers its batches there, so only indices cross over; with ``steps_per_call=len(loader)``
      a whole epoch is one call. The fastest for both models (1.5× and 1.19× per step in the same
      measurement).

    Data parallel over ``mesh`` (``devices.make_mesh()``, every device, by default): each global batch
    of ``train_loader.batch_size`` is split over the devices, the state is replicated, and the compiled
    step all-reduces the gradients; for the same seed the training is that of one device, up to the
    order of floating-point sums. Device-resident data is split by rows over the devices.

    Args:
      state: the initial state; it is donated.
      train_loader: the training batches: ``(inputs, labels)``, or dicts such as ``{"image", "label"}``.
      epochs: the number of passes.
      eval_loader: if given, evaluated after each epoch (into ``test_loss`` and ``test_accuracy``); or
        loaders by name, each evaluated into ``<name>_loss`` and ``<name>_accuracy``.
      log: where the epoch lines go (None: nowhere).
      prefetch: batches (or stacks of them) copied to the device ahead of the step by a background
        thread; 0 for no thread. None: 2 on an accelerator, 0 on the CPU, where the copy is a host memcpy
        and the thread only competes for the interpreter (measured: about 20% slower with it).
      steps_per_call: optimizer steps per compiled call.
      data_on_device: keep ``train_loader``'s arrays on the device (needs an array-backed dataset).
      run: a ``jaxtrain.runs.folder.Run``: log each epoch to its folder, checkpoint by its policy, and with
        ``Run(..., resume=True)`` continue from its latest checkpoint, to the same bits as a run that
        was never stopped (the epochs already done are not repeated). ``fit`` returns once the run's last
        checkpoint is committed; the run keeps its folder (its lock) until ``run.close()`` or the end of a
        ``with Run(...) as run:`` block.
      inputs: which entry of a batch (training and evaluation) holds the inputs (``collate.select``): a dict's
        key or a tuple's position; None for position 0 or the first of "image", "images", "inputs", "x",
        "features"; several keys (``("ids", "mask")``) give the model a dict of those entries. The entries
        picked are all that go to the device, with their dtypes (token ids stay integers).
      labels: the same for the labels; None for position 1 or the first of "label", "labels", "target",
        "targets", "y".
      mesh: the devices to train on (``devices.make_mesh``); the batch size must be a multiple of them.
      callbacks: ``jaxtrain.training.callbacks.Callback``s, whose hooks run on the host at the start and end of the fit
        and of each epoch and after each compiled call; they may stop the run (``EarlyStopping``), change
        the learning rate (``ReduceLROnPlateau``) or add to an epoch's record. A run folder saves their
        ``state_dict()`` with each checkpoint, and a resumed run gives it back to them.
      metrics: more of ``evaluate``'s metrics (``jaxtrain.training.metrics``: "top5", "confusion_matrix", ...) for each
        ``eval_loader``, into ``<name>_<metric>`` (``val_top5_accuracy``, which ``EarlyStopping`` may
        monitor); a confusion matrix as nested lists.

    Raises:
      FloatingPointError: an epoch's loss is not finite (the run diverged); a ``run`` keeps its last good
        checkpoint.
      jaxtrain.training.preemption.Preempted: with a ``run``, a SIGTERM (a scheduler's preemption notice) came; the
        run saved a checkpoint at the next call boundary (with several processes, at a step they agreed
        on), or at the end of the epoch whose last call it came in, and stopped. A notice during the last
        epoch's last call lets the run finish instead.
      OSError: with a ``run``, a checkpoint could not be written (a full disk): the run stops at the next
        call boundary, in one line naming the checkpoint, and its last good checkpoint is kept.
      jaxtrain.runs.ownership.FolderError: the ``run``'s folder is in use, holds another run without ``resume``,
        or was begun with more epochs than ``epochs``.

    Returns:
      The final state (with ``EarlyStopping(restore_best=True)``, the best epoch's) and a history: per epoch
      ``epoch``, ``train_loss`` (the mean of the batch losses, the primer's ``running_loss / len(dataloader)``),
      ``seconds`` and ``samples_per_second`` of training, ``test_loss`` and ``test_accuracy`` with an
      ``eval_loader`` (and ``eval_seconds``, the evaluations' time), ``lr`` where the optimizer holds its rate (``optim.adjustable_lr``), and what callbacks
      add. The epoch line shows the validation and test loss and accuracy after the primer's part.

    Example:
      >>> state, history = fit(state, train_loader, epochs=10, eval_loader=test_loader)
      Epoch 1, Loss: 0.27...
    """
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs={epochs!r}; expected a positive integer")
    if not isinstance(steps_per_call, int) or steps_per_call < 1:
        raise ValueError(f"steps_per_call={steps_per_call!r}; expected a positive integer")
    for callback in callbacks:
        if not isinstance(callback, Callback):
            raise ValueError(f"callbacks: {callback!r}; expected instances of jaxtrain.training.callbacks.Callback")
    measured = resolve_metrics(metrics)  # checked before any work
    mesh = mesh or devices.make_mesh()
    devices.check_batch_size(mesh, train_loader.batch_size)
    state = devices.replicate(state, mesh)
    arrays = None
    if data_on_device:
        if train_loader.arrays() is None:
            raise ValueError("data_on_device=True; expected a DataLoader over an array-backed dataset, without collate_fn")
        arrays = devices.shard_rows(select(train_loader.arrays(), inputs, labels), mesh)
    if prefetch is None:
        prefetch = 0 if jax.default_backend() == "cpu" else 2
    evals = eval_loader if isinstance(eval_loader, dict) else {} if eval_loader is None else {"test": eval_loader}
    total = len(train_loader.indices(0))
    state, history, losses = run.restore_fit(state, train_loader, epochs) if run else (state, [], [])
    # fit's own parts first and last, the user's between: the guard stops a diverged run before anyone sees
    # its metrics, and the line shows what the epoch measured, before a callback changes anything.
    hooks = [DivergenceGuard(), *([EpochLine(log)] if log else []), *callbacks, ProgressBar(total)]
    every = tuple(run.periods if run else ()) + tuple(c.every for c in callbacks if c.every)
    context = Context(state, epochs, history, run)
    _load_callbacks(callbacks, run)
    # The steps so far, counted on the host: a preemption is agreed on in steps (host sync, once; this
    # process's copy, as the state is replicated over processes).
    context.step = int(jax.device_get(state.step.addressable_shards[0].data)) if run else 0
    stop = False
    stopped = run.stopped if run else None  # a run that a callback stopped before it was resumed: done
    with preemption.notice(context.step) if run else contextlib.nullcontext() as preempt:
        call_hooks(hooks, "on_fit_start", context)
        adjustable = context.lr is not None  # then each epoch's record keeps its learning rate
        for epoch in range(len(history) + 1, 0 if stopped else epochs + 1):
            start = time.perf_counter()
            context.epoch, context.record, context.losses = epoch, None, losses
            lr = context.lr if adjustable else None  # host read of one scalar, between epochs
            call_hooks(hooks, "on_epoch_start", context)
            taken, samples = train_loader.next_start[1], 0
            calls = _epoch_calls(train_loader, steps_per_call, arrays, prefetch, every, mesh, (inputs, labels))
            for call, args, index in calls:
                context.state, metrics = call(context.state, *args)
                losses.append(metrics["loss"])
                taken, samples = taken + len(index), samples + index.size
                if len(losses) > _MAX_IN_FLIGHT:
                    jax.block_until_ready(losses[-1 - _MAX_IN_FLIGHT])  # a wait, not a read: see _MAX_IN_FLIGHT
                context.step += len(index)
                context.examples = index.size
                call_hooks(hooks, "on_call_end", context)
                stop = stop or (run is not None and preempt.reached(context.step))
                if run:
                    run.check_saves()  # a failed background save (a full disk) stops the run at once
                if run and taken < len(train_loader) and (stop or any(taken % period == 0 for period in run.periods)):
                    run.callback_state = _callback_state(callbacks)
                    run.step_end(context.state, train_loader, epoch, taken, losses, history, stop)
                if stop and taken < len(train_loader):
                    raise _preempted(run, context.step)
                if context.stop_reason and taken < len(train_loader):
                    break  # a callback stopped the run mid-epoch: the epoch ends here
            # host sync: the epoch's one read of the loss
            batch_losses = np.concatenate([np.ravel(x) for x in jax.device_get(losses)])
            train_loss, losses = float(np.mean(batch_losses)), []
            seconds = time.perf_counter() - start
            record = {"epoch": epoch, "train_loss": train_loss, "seconds": seconds, "samples_per_second": samples / seconds}
            if lr is not None:
                record["lr"] = lr
            if np.isfinite(train_loss) and evals:  # a diverged epoch is not evaluated: the guard stops it
                start = time.perf_counter()
                for name, loader in evals.items():
                    result = evaluate(context.state, loader, inputs=inputs, labels=labels, metrics=measured)
                    result.pop("count")
                    plain = {key: v.tolist() if isinstance(v, np.ndarray) else v for key, v in result.items()}  # JSON
                    record.update({f"{name}_{key}": value for key, value in plain.items()})
                record["eval_seconds"] = time.perf_counter() - start
            context.record = record
            call_hooks(hooks, "on_epoch_end", context)
            history.append(record)
            last = epoch == epochs or context.stop_reason is not None
            if run:
                run.callback_state, run.stopped = _callback_state(callbacks), context.stop_reason
                run.epoch_end(context.state, train_loader, history, last=last, save=stop)
            if stop and epoch < epochs and not context.stop_reason:
                raise _preempted(run, context.step)
            if context.stop_reason:
                if log:
                    log(f"Stopped after epoch {epoch}: {context.stop_reason}")
                break
        context.stop_reason = context.stop_reason or stopped
        call_hooks(hooks, "on_fit_end", context)
    return context.state, history


def _callback_state(callbacks: Sequence[Callback]) -> dict[str, Any]:
    """The callbacks' own states, by position and class, for a checkpoint's meta."""
    return {f"{i}:{type(c).__name__}": s for i, c in enumerate(callbacks) if (s := c.state_dict()) is not None}


def _load_callbacks(callbacks: Sequence[Callback], run: Run | None) -> None:
    """A resumed run's callbacks continue from the states saved with its checkpoint."""
    saved = run.callback_state if run else {}
    for i, callback in enumerate(callbacks):
        if (state := saved.get(f"{i}:{type(callback).__name__}")) is not None:
            callback.load_state_dict(state)
