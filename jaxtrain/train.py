"""The training loop, functionally: ``TrainState``, ``train_step``, ``eval_step``, ``fit`` and ``evaluate``.

PyTorch keeps the weights, the gradients, the optimizer's moments and BatchNorm's running statistics
inside objects and changes them in place (``loss.backward()``, ``optimizer.step()``). Here all of that
is one immutable pytree, ``TrainState``; a step is a pure function from the old state and a batch to a new
state, compiled once by ``jax.jit``.
"""

from __future__ import annotations

import functools
import inspect
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from jaxtrain.data import DataLoader, prefetch_to_device
from jaxtrain.losses import cross_entropy

Batch = tuple[Any, Any]  # (inputs, labels)


class TrainState(struct.PyTreeNode):
    """Everything a training step reads and writes, as one pytree.

    Attributes:
      step: the number of ``train_step`` calls so far (``int32`` scalar): optimizer steps, or batches when
        the optimizer accumulates gradients (``optim.accumulate_gradients``), so each batch gets its own key.
      params: the model's parameters, what ``model.parameters()`` holds in torch.
      opt_state: the optimizer's state (Adam's moments, say).
      batch_stats: the model's non-trained state (BatchNorm's running statistics); ``{}`` if none.
      key: the PRNG key; step ``s`` draws its dropout masks from ``fold_in(key, s)``.
      model: the Flax module (static: part of the compiled program, not of the data).
      tx: the optax optimizer (static).
      loss_fn: ``loss_fn(logits, labels, mask=None) -> scalar`` (static), ``cross_entropy`` by default.
    """

    step: jax.Array
    params: Any
    opt_state: optax.OptState
    batch_stats: Any
    key: jax.Array
    model: nn.Module = struct.field(pytree_node=False)
    tx: optax.GradientTransformation = struct.field(pytree_node=False)
    loss_fn: Callable[..., jax.Array] = struct.field(pytree_node=False, default=cross_entropy)

    @property
    def variables(self) -> dict[str, Any]:
        """The Flax variables: ``{"params": ..., "batch_stats": ...}``."""
        return {"params": self.params, **({"batch_stats": self.batch_stats} if self.batch_stats else {})}


def create_train_state(
    model: nn.Module,
    tx: optax.GradientTransformation,
    sample: Any,
    seed: int = 0,
    variables: dict[str, Any] | None = None,
    loss_fn: Callable[..., jax.Array] = cross_entropy,
) -> TrainState:
    """Initializes the model (or takes ``variables``) and the optimizer: torch's ``model = MyModel()`` and
    ``optimizer = torch.optim.Adam(model.parameters())``.

    Before any work it checks the arguments: ``sample`` must be a float batch that the model can take
    (checked with ``jax.eval_shape`` of the initialization, which computes nothing), ``seed`` an integer in
    [0, 2**32), and ``variables``, if given, shaped as the model's own.

    Args:
      model: a Flax module; if its ``__call__`` takes ``train``, it is passed the mode.
      tx: an optax optimizer, e.g. ``jaxtrain.optim.adam(1e-3)``.
      sample: an input batch (e.g. ``images[:1]``, ``(1, H, W, C) float32`` in [0, 1]) that fixes the
        parameter shapes.
      seed: seeds the initialization and the dropout key; an integer in [0, 2**32).
      variables: start from these Flax variables (``{"params": ..., "batch_stats": ...}``) instead.
      loss_fn: ``loss_fn(logits, labels, mask=None)``, the mean loss of a batch.

    Returns:
      A ``TrainState`` at step 0.

    Raises:
      ValueError: one line, e.g. ``seed=4294967296; expected an integer in [0, 2**32)`` or
        ``sample (shape (1, 28, 28, 1), dtype uint8): integer-typed; expected floats ...``.

    Example:
      >>> state = create_train_state(MLP(), adam(1e-3), images[:1])
    """
    # jax.random.key takes the seed modulo 2**32 (2**32 gives seed 0's weights) and overflows past 2**64.
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or not 0 <= seed < 2**32:
        raise ValueError(f"seed={seed!r}; expected an integer in [0, 2**32)")
    if not isinstance(tx, optax.GradientTransformation):
        raise ValueError(f"tx={tx!r}; expected an optax.GradientTransformation, e.g. jaxtrain.adam(1e-3)")
    _check_sample(sample)
    init_key, key = jax.random.split(jax.random.key(seed))
    init = functools.partial(model.init, **_mode(model, False))
    try:
        expected = jax.eval_shape(init, init_key, sample)
    except Exception as error:  # whatever the model raises on this input: a shape or a type it cannot take
        first_line = (str(error).strip().splitlines() or [""])[0][:300]
        raise ValueError(
            f"sample ({_describe(sample)}): the model cannot take it ({type(error).__name__}: {first_line}); "
            f"expected a batch shaped like the training inputs, e.g. images[:1]"
        ) from error
    if variables is None:
        variables = init(init_key, sample)
    else:
        _check_variables(variables, expected)
    variables = dict(variables)
    params = variables.pop("params")
    batch_stats = variables.pop("batch_stats", {})
    if variables:
        raise ValueError(f"variables has collections {sorted(variables)}; expected only 'params' and 'batch_stats'")
    return TrainState(
        step=jnp.zeros([], jnp.int32),
        params=params,
        opt_state=tx.init(params),
        batch_stats=batch_stats,
        key=key,
        model=model,
        tx=tx,
        loss_fn=loss_fn,
    )


def _describe(sample: Any) -> str:
    """``shape (1, 28, 28, 1), dtype float32`` for an array; the same for each leaf of a pytree."""
    describe = lambda leaf: f"shape {np.shape(leaf)}, dtype {_dtype(leaf) or type(leaf).__name__}"
    leaves = jax.tree_util.tree_leaves_with_path(sample)
    if len(leaves) == 1 and not leaves[0][0]:
        return describe(sample)
    return "; ".join(f"{jax.tree_util.keystr(path)}: {describe(leaf)}" for path, leaf in leaves)


def _dtype(value: Any) -> Any:
    """The dtype JAX would give ``value``, or None for what JAX cannot take (a string, say)."""
    try:
        return jnp.result_type(value)
    except TypeError:
        return None


def _check_sample(sample: Any) -> None:
    """Refuses a sample that is not a non-empty batch of floats (uint8 images in 0..255, say)."""
    leaves = jax.tree.leaves(sample)
    if not leaves:
        raise ValueError(f"sample={sample!r}; expected a batch of inputs, e.g. images[:1]")
    for leaf in leaves:
        dtype = _dtype(leaf)
        if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
            if dtype is not None and (jnp.issubdtype(dtype, jnp.integer) or dtype == jnp.bool_):
                raise ValueError(
                    f"sample ({_describe(sample)}): integer-typed; expected floats in [0, 1] "
                    f"(scale the images first: uint8 pixels / 255)"
                )
            raise ValueError(f"sample ({_describe(sample)}): not floats; expected a float batch such as images[:1]")
        if np.ndim(leaf) == 0 or np.shape(leaf)[0] == 0:
            raise ValueError(f"sample ({_describe(sample)}): no examples; expected a batch (B, ...) with B >= 1, e.g. images[:1]")


def _check_variables(variables: Any, expected: Any) -> None:
    """Raises a one-line ValueError at the first entry of ``variables`` missing or shaped unlike the model's."""
    for path, want in jax.tree_util.tree_leaves_with_path(expected):
        if not all(isinstance(entry, jax.tree_util.DictKey) for entry in path):
            continue  # boxed metadata (nn.Partitioned, say): not a plain nested dict to walk
        where = "variables" + jax.tree_util.keystr(path)
        node = variables
        try:
            for entry in path:
                node = node[entry.key]
        except (KeyError, TypeError, AttributeError):
            raise ValueError(f"{where} is missing; expected shape {want.shape} for this model and sample") from None
        if tuple(np.shape(node)) != tuple(want.shape):
            raise ValueError(f"{where}: shape {tuple(np.shape(node))}; expected {tuple(want.shape)} for this model and sample")


@functools.cache
def _takes_train(model_type: type) -> bool:
    return "train" in inspect.signature(model_type.__call__).parameters


def _mode(model: nn.Module, train: bool) -> dict[str, bool]:
    """The ``train=`` keyword for models that take one: the functional ``model.train()`` / ``model.eval()``."""
    return {"train": train} if _takes_train(type(model)) else {}


def forward(state: TrainState, params: Any, inputs: jax.Array, train: bool) -> tuple[jax.Array, Any]:
    """Runs the model in training or evaluation mode; returns the logits and the new batch statistics."""
    variables = {**state.variables, "params": params}
    rngs = {"dropout": jax.random.fold_in(state.key, state.step)} if train else None
    mutable = ["batch_stats"] if train and state.batch_stats else False
    out = state.model.apply(variables, inputs, rngs=rngs, mutable=mutable, **_mode(state.model, train))
    if mutable:
        logits, updates = out
        return logits, updates["batch_stats"]
    return out, state.batch_stats


def train_step_fn(state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer step, uncompiled: the body of ``train_step`` and of fused multi-step loops."""
    inputs, labels = batch

    def loss_of(params):
        logits, batch_stats = forward(state, params, inputs, train=True)  # outputs = model(inputs)
        return state.loss_fn(logits, labels), batch_stats  # loss = criterion(outputs, labels)

    # loss.backward(): gradients come back as a value; there is nothing to zero_grad().
    (loss, batch_stats), grads = jax.value_and_grad(loss_of, has_aux=True)(state.params)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)  # optimizer.step()
    new_state = state.replace(
        step=state.step + 1,
        params=optax.apply_updates(state.params, updates),
        opt_state=opt_state,
        batch_stats=batch_stats,
    )
    return new_state, {"loss": loss}


train_step = jax.jit(train_step_fn, donate_argnums=0)
train_step.__doc__ = """``train_step(state, (inputs, labels)) -> (state, {"loss": batch loss})``, jit-compiled.

The state is donated: its buffers are reused for the new state, so never touch the old one after the call.
"""


def train_steps_fn(state: TrainState, batches: Batch) -> tuple[TrainState, dict[str, jax.Array]]:
    """K optimizer steps in one ``lax.scan`` over stacked batches ``(inputs: (K, B, ...), labels: (K, B))``.

    Returns the state after the K steps and ``{"loss": (K,)}``, the same as K calls of ``train_step``.
    """
    return jax.lax.scan(train_step_fn, state, batches)


def gather_steps_fn(state: TrainState, arrays: tuple[jax.Array, ...], index: jax.Array) -> tuple[TrainState, dict[str, jax.Array]]:
    """K optimizer steps over device-resident data: step k trains on ``tuple(a[index[k]] for a in arrays)``.

    Args:
      state: the train state.
      arrays: the whole dataset, ``(inputs: (N, ...), labels: (N,))``, already on the device.
      index: ``(K, B)`` example indices, one row per step.
    """
    step = lambda s, i: train_step_fn(s, tuple(a[i] for a in arrays))
    if len(index) == 1:  # no loop: XLA:CPU runs a convolution's step several times slower inside one
        state, metrics = step(state, index[0])
        return state, jax.tree.map(lambda m: m[None], metrics)
    return jax.lax.scan(step, state, index)


train_steps = jax.jit(train_steps_fn, donate_argnums=0)
gather_steps = jax.jit(gather_steps_fn, donate_argnums=0)


@jax.jit
def eval_step(state: TrainState, batch: Batch, mask: jax.Array | None = None) -> dict[str, jax.Array]:
    """Evaluation mode, no gradients: the sums of the loss and of correct predictions over a batch.

    Args:
      state: the train state (not donated, not changed).
      batch: ``(inputs, labels)``.
      mask: ``(N,)`` booleans marking real examples in a padded batch; None counts them all.

    Returns:
      ``{"loss_sum", "correct", "count"}``, device scalars.
    """
    inputs, labels = batch
    if mask is None:
        mask = jnp.ones(labels.shape, bool)
    logits, _ = forward(state, state.params, inputs, train=False)
    per_example = jax.vmap(state.loss_fn)(logits[:, None], labels[:, None])
    correct = (jnp.argmax(logits, -1) == labels) & mask
    return {"loss_sum": jnp.sum(jnp.where(mask, per_example, 0)), "correct": jnp.sum(correct), "count": jnp.sum(mask)}


def _pad(batch: Batch, size: int) -> tuple[Batch, np.ndarray]:
    """Pads a short batch to ``size`` examples by repeating its first, and masks the padding out."""
    n = len(batch[1])
    mask = np.arange(size) < n
    if n == size:
        return batch, mask
    fill = np.zeros(size - n, np.int64)
    return tuple(np.concatenate([a, np.take(a, fill, axis=0)]) for a in batch), mask


def evaluate(state: TrainState, loader: DataLoader) -> dict[str, float]:
    """``model.eval()`` and ``torch.no_grad()`` over a whole loader: every example counted exactly once.

    A short last batch is padded to the loader's batch size and masked, so it reuses the compiled step.

    Returns:
      ``{"loss": mean loss, "accuracy": fraction correct, "count": examples}``.

    Example:
      >>> evaluate(state, DataLoader(ArrayDataset(test_images, test_labels), batch_size=1000))
    """
    sums = []
    for batch in loader:
        batch, mask = _pad(batch, loader.batch_size)
        sums.append(eval_step(state, batch, mask))
    if not sums:
        raise ValueError("evaluate: the loader yielded no batch")
    sums = jax.device_get(sums)  # host sync: the one read of the evaluation
    totals = {key: sum(s[key] for s in sums) for key in sums[0]}
    count = int(totals["count"])
    return {"loss": float(totals["loss_sum"]) / count, "accuracy": float(totals["correct"]) / count, "count": count}


def compile_fit(state: TrainState, loader: DataLoader, steps_per_call: int = 1, data_on_device: bool = False) -> float:
    """Compiles ahead of time every call that ``fit`` will make; returns the seconds it took.

    ``fit`` then trains without compiling: full batches (or groups of them) and the short last batch
    each have their compiled call already.
    """
    size = loader.batch_size
    full, tail = divmod(len(loader.indices(0)), size)
    rows = {min(steps_per_call, full), full % steps_per_call} - {0} if steps_per_call > 1 else {1}
    shapes = [(k, size) for k in rows if full] + ([(1, tail)] if tail else [])
    batch = loader.gather(np.arange(1))
    spec = lambda a, lead: jax.ShapeDtypeStruct(lead + np.shape(a)[1:], np.asarray(a).dtype)
    start = time.perf_counter()
    for k, b in shapes:
        if data_on_device:
            arrays = jax.tree.map(lambda a: spec(a, (len(a),)), loader.arrays())
            gather_steps.lower(state, arrays, jax.ShapeDtypeStruct((k, b), loader.indices(0).dtype)).compile()
        elif steps_per_call == 1:
            train_step.lower(state, jax.tree.map(lambda a: spec(a, (b,)), batch)).compile()
        else:
            train_steps.lower(state, jax.tree.map(lambda a: spec(a, (k, b)), batch)).compile()
    return time.perf_counter() - start


def _progress(calls: Iterable[tuple], total: int, desc: str) -> Iterator[tuple]:
    """A progress bar in examples on an interactive terminal; it never reads the loss."""
    if not sys.stderr.isatty():
        yield from calls
        return
    from tqdm.auto import tqdm  # a dependency of tensorflow-datasets

    with tqdm(total=total, desc=desc, leave=False, mininterval=0.5, unit="ex", unit_scale=True) as bar:
        for call in calls:
            yield call
            bar.update(call[-1])


def _stacked(batches: Iterable[Batch], k: int) -> Iterator[Batch]:
    """Stacks runs of up to ``k`` consecutive equal-shape batches into ``(k, B, ...)`` arrays."""
    group: list[Batch] = []
    for batch in batches:
        if group and (len(group) == k or batch[1].shape != group[0][1].shape):
            yield tuple(np.stack(a) for a in zip(*group))
            group = []
        group.append(batch)
    if group:
        yield tuple(np.stack(a) for a in zip(*group))


def _host_calls(loader: DataLoader, steps_per_call: int, prefetch: int) -> Iterator[tuple[Callable, tuple, int]]:
    """One epoch fed from the host: ``(step, args, examples)``, where ``step(state, *args)`` is one compiled call."""
    batches = iter(loader) if steps_per_call == 1 else _stacked(iter(loader), steps_per_call)
    if prefetch:
        batches = prefetch_to_device(batches, prefetch)
    step = train_step if steps_per_call == 1 else train_steps
    for batch in batches:
        yield step, (batch,), batch[1].size


def _device_calls(loader: DataLoader, arrays: tuple[jax.Array, ...], steps_per_call: int) -> Iterator[tuple[Callable, tuple, int]]:
    """One epoch over device-resident ``arrays`` in ``loader``'s order; only the indices leave the host."""
    order = loader.next_epoch()
    size = loader.batch_size
    full = order[: len(order) // size * size].reshape(-1, size)
    chunks = [full[i : i + steps_per_call] for i in range(0, len(full), steps_per_call)]
    if len(order) % size:
        chunks.append(order[len(full) * size :][None])  # the short last batch: a call of its own
    for chunk in chunks:
        yield gather_steps, (arrays, chunk), chunk.size


def fit(
    state: TrainState,
    train_loader: DataLoader,
    epochs: int,
    eval_loader: DataLoader | None = None,
    *,
    log: Callable[[str], None] | None = print,
    prefetch: int | None = None,
    steps_per_call: int = 1,
    data_on_device: bool = False,
) -> tuple[TrainState, list[dict[str, float]]]:
    """The primer's loop: ``epochs`` passes over ``train_loader``, printing ``Epoch N, Loss: …`` after each.

    The loss stays on the device during an epoch and is read once at its end, so the host never waits
    on a step. Three ways to feed the steps, which compute the same thing for the same seed:

    - per step (``steps_per_call=1``): one ``train_step`` call per batch, copied to the device
      ``prefetch`` batches ahead in a background thread;
    - fused (``steps_per_call=K``): one ``train_steps`` call runs K steps, a ``lax.scan`` over K stacked
      batches, which saves K - 1 dispatches;
    - device-resident (``data_on_device=True``): the dataset is copied to the device once, and each call
      gathers its batches there (with ``steps_per_call=len(train_loader)``, a whole epoch in one call).

    Args:
      state: the initial state; it is donated.
      train_loader: the training batches, ``(inputs, labels)``.
      epochs: the number of passes.
      eval_loader: if given, evaluated after each epoch.
      log: where the epoch lines go (None: nowhere).
      prefetch: batches (or stacks of them) copied to the device ahead of the step by a background
        thread; 0 for no thread. None: 2 on an accelerator, 0 on the CPU, where the copy is a host memcpy
        and the thread only competes for the interpreter (measured: about 20% slower with it).
      steps_per_call: optimizer steps per compiled call.
      data_on_device: keep ``train_loader``'s arrays on the device (needs an ``ArrayDataset``).

    Returns:
      The final state and a history: per epoch ``epoch``, ``train_loss`` (the mean of the batch losses,
      the primer's ``running_loss / len(dataloader)``), ``seconds`` and ``samples_per_second`` of training,
      and ``test_loss`` and ``test_accuracy`` with an ``eval_loader``.

    Example:
      >>> state, history = fit(state, train_loader, epochs=10, eval_loader=test_loader)
      Epoch 1, Loss: 0.27...
    """
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs={epochs!r}; expected a positive integer")
    if not isinstance(steps_per_call, int) or steps_per_call < 1:
        raise ValueError(f"steps_per_call={steps_per_call!r}; expected a positive integer")
    arrays = None
    if data_on_device:
        if train_loader.arrays() is None:
            raise ValueError("data_on_device=True needs a DataLoader over an ArrayDataset, without collate_fn")
        arrays = jax.device_put(train_loader.arrays())
    if prefetch is None:
        prefetch = 0 if jax.default_backend() == "cpu" else 2
    total = min(len(train_loader) * train_loader.batch_size, len(train_loader.dataset))
    history = []
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        if arrays is None:
            calls = _host_calls(train_loader, steps_per_call, prefetch)
        else:
            calls = _device_calls(train_loader, arrays, steps_per_call)
        losses, samples = [], 0
        for step, args, size in _progress(calls, total, f"epoch {epoch}"):
            state, metrics = step(state, *args)
            losses.append(metrics["loss"])
            samples += size
        # host sync: the epoch's one read of the loss
        train_loss = float(np.mean(np.concatenate([np.ravel(x) for x in jax.device_get(losses)])))
        seconds = time.perf_counter() - start
        record = {"epoch": epoch, "train_loss": train_loss, "seconds": seconds, "samples_per_second": samples / seconds}
        if log:
            log(f"Epoch {epoch}, Loss: {train_loss}")
        if eval_loader is not None:
            metrics = evaluate(state, eval_loader)
            record.update(test_loss=metrics["loss"], test_accuracy=metrics["accuracy"])
        history.append(record)
    return state, history
