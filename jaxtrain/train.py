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
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx, struct
from jax.sharding import Mesh

from jaxtrain import devices
from jaxtrain.data import DataLoader, prefetch_to_device, select
from jaxtrain.losses import cross_entropy
from jaxtrain.modules import NNXModel, is_nnx

if TYPE_CHECKING:
    from jaxtrain.runs import Run

Batch = tuple[Any, Any]  # (inputs, labels); a dict batch is read by data.select
Key = str | int | None  # which entry of a batch: a dict's key or a tuple's position (data.select)


class TrainState(struct.PyTreeNode):
    """Everything a training step reads and writes, as one pytree.

    Attributes:
      step: the number of ``train_step`` calls so far (``int32`` scalar): optimizer steps, or batches when
        the optimizer accumulates gradients (``optim.accumulate_gradients``), so each batch gets its own key.
      params: the model's parameters, what ``model.parameters()`` holds in torch.
      opt_state: the optimizer's state (Adam's moments, say).
      batch_stats: the model's non-trained state (BatchNorm's running statistics); ``{}`` if none.
      key: the PRNG key; step ``s`` draws its dropout masks from ``fold_in(key, s)``.
      model: the Flax module (static: part of the compiled program, not of the data): a Linen module, or
        for an NNX module its graph (``jaxtrain.modules.NNXModel``), whose ``params`` are its ``nnx.Param``
        state and ``batch_stats`` its ``nnx.BatchStat`` state.
      tx: the optax optimizer (static).
      loss_fn: ``loss_fn(logits, labels, mask=None) -> scalar`` (static), ``cross_entropy`` by default.
    """

    step: jax.Array
    params: Any
    opt_state: optax.OptState
    batch_stats: Any
    key: jax.Array
    model: nn.Module | NNXModel = struct.field(pytree_node=False)
    tx: optax.GradientTransformation = struct.field(pytree_node=False)
    loss_fn: Callable[..., jax.Array] = struct.field(pytree_node=False, default=cross_entropy)

    @property
    def variables(self) -> dict[str, Any]:
        """The Flax variables: ``{"params": ..., "batch_stats": ...}``."""
        return {"params": self.params, **({"batch_stats": self.batch_stats} if self.batch_stats else {})}


def create_train_state(
    model: nn.Module | nnx.Module,
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
      model: a Flax module. Linen: if its ``__call__`` takes ``train``, it is passed the mode. NNX: it comes
        initialized, so its own values are the start (``seed`` then seeds only the dropout key); it is split
        (``jaxtrain.modules.NNXModel``) and left unchanged, and ``model.train()`` / ``model.eval()`` set the
        mode of each step.
      tx: an optax optimizer, e.g. ``jaxtrain.optim.adam(1e-3)``.
      sample: an input batch (e.g. ``images[:1]``, ``(1, H, W, C) float32`` in [0, 1]) that fixes the
        parameter shapes.
      seed: seeds the initialization and the dropout key; an integer in [0, 2**32).
      variables: start from these Flax variables (``{"params": ..., "batch_stats": ...}``) instead; for an
        NNX module, nested by attribute path (``interop.from_torch`` gives them for jaxtrain's models).
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
    own = None
    if is_nnx(model):  # initialized at construction: its values are the start, and its forward checks the sample
        model, own = NNXModel.split(model)
        init = lambda _, x: (model.apply(own, x), own)[1]  # noqa: E731
    else:
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
        variables = own if own is not None else init(init_key, sample)
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
    return {"train": train} if isinstance(model, NNXModel) or _takes_train(type(model)) else {}


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
    inputs, labels = select(batch)  # (inputs, labels) as given; a dict's by the common names

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


def _loop(step: Callable, state: TrainState, xs: Any) -> tuple[TrainState, dict[str, jax.Array]]:
    """``lax.scan`` of ``step`` over the leading axis of ``xs``; a single step runs without the loop, since
    XLA:CPU runs a convolution's step several times slower inside one."""
    if jax.tree.leaves(xs)[0].shape[0] == 1:
        state, metrics = step(state, jax.tree.map(lambda x: x[0], xs))
        return state, jax.tree.map(lambda m: m[None], metrics)
    return jax.lax.scan(step, state, xs)


def train_steps_fn(state: TrainState, batches: Batch) -> tuple[TrainState, dict[str, jax.Array]]:
    """K optimizer steps over stacked batches ``(inputs: (K, B, ...), labels: (K, B))``.

    Returns the state after the K steps and ``{"loss": (K,)}``, the same as K calls of ``train_step``.
    """
    return _loop(train_step_fn, state, batches)


def gather_steps_fn(state: TrainState, arrays: tuple[jax.Array, ...], index: jax.Array) -> tuple[TrainState, dict[str, jax.Array]]:
    """K optimizer steps over device-resident data: step k trains on each array's rows ``index[k]``.

    Args:
      state: the train state.
      arrays: the whole dataset, ``(inputs: (N, ...), labels: (N,))``, already on the device.
      index: ``(K, B)`` example indices, one row per step.
    """
    return _loop(lambda s, i: train_step_fn(s, jax.tree.map(lambda a: a[i], arrays)), state, index)


train_steps = jax.jit(train_steps_fn, donate_argnums=0)
gather_steps = jax.jit(gather_steps_fn, donate_argnums=0)


@jax.jit
def eval_step(state: TrainState, batch: Batch, mask: jax.Array | None = None) -> dict[str, jax.Array]:
    """Evaluation mode, no gradients: the sums of the loss and of correct predictions over a batch.

    Args:
      state: the train state (not donated, not changed).
      batch: ``(inputs, labels)``, or a dict read by ``data.select``'s common names.
      mask: ``(N,)`` booleans marking real examples in a padded batch; None counts them all.

    Returns:
      ``{"loss_sum", "correct", "count"}``, device scalars.
    """
    inputs, labels = select(batch)
    if mask is None:
        mask = jnp.ones(labels.shape, bool)
    logits, _ = forward(state, state.params, inputs, train=False)
    per_example = jax.vmap(state.loss_fn)(logits[:, None], labels[:, None])
    correct = (jnp.argmax(logits, -1) == labels) & mask
    return {"loss_sum": jnp.sum(jnp.where(mask, per_example, 0)), "correct": jnp.sum(correct), "count": jnp.sum(mask)}


@jax.jit
def predict(state: TrainState, inputs: jax.Array) -> jax.Array:
    """Class probabilities in evaluation mode: ``model.eval()``, then ``model(x).softmax(-1)`` under
    ``torch.no_grad()``. Returns ``(N, C)`` float32 probabilities.

    Example:
      >>> predict(state, images[:8]).argmax(-1)
    """
    logits, _ = forward(state, state.params, inputs, train=False)
    return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)


def _pad(batch: Batch, size: int) -> tuple[Batch, np.ndarray]:
    """Pads a short batch to ``size`` examples by repeating its first, and masks the padding out."""
    n = len(batch[1])
    mask = np.arange(size) < n
    if n == size:
        return batch, mask
    fill = np.zeros(size - n, np.int64)
    return tuple(np.concatenate([a, np.take(a, fill, axis=0)]) for a in batch), mask


def evaluate(state: TrainState, loader: DataLoader, *, inputs: Key = None, labels: Key = None) -> dict[str, float]:
    """``model.eval()`` and ``torch.no_grad()`` over a whole loader: every example counted exactly once.

    A short last batch is padded to the loader's batch size and masked, so it reuses the compiled step.
    A state placed on a mesh (the state ``fit`` returns) is evaluated there, each batch split over it.

    Args:
      state: the train state.
      loader: the batches: tuples or dicts.
      inputs: which entry of a batch holds the inputs (``data.select``): a dict's key or a tuple's position;
        None for position 0 or the first of "image", "images", "inputs", "x", "features".
      labels: the same for the labels; None for position 1 or the first of "label", "labels", "target",
        "targets", "y".

    Returns:
      ``{"loss": mean loss, "accuracy": fraction correct, "count": examples}``.

    Example:
      >>> evaluate(state, DataLoader(ArrayDataset(test_images, test_labels), batch_size=1000))
    """
    sums, mesh = [], devices.mesh_of(state)
    for batch in loader:
        batch, mask = _pad(select(batch, inputs, labels), loader.batch_size)
        if mesh is not None:
            sharding = devices.batch_sharding(mesh, loader.batch_size)
            rows = devices.local_rows(sharding, (loader.batch_size,))
            batch, mask = devices.global_batch(jax.tree.map(lambda a: a[rows], (batch, mask)), sharding, loader.batch_size)
        sums.append(eval_step(state, batch, mask))
    if not sums:
        raise ValueError("evaluate: the loader yielded no batch")
    sums = jax.device_get(sums)  # host sync: the one read of the evaluation
    totals = {key: sum(s[key] for s in sums) for key in sums[0]}
    count = int(totals["count"])
    loss = float(totals["loss_sum"]) / count
    if not np.isfinite(loss):
        raise FloatingPointError(
            f"evaluate: the loss is {loss}; expected a finite number (labels outside 0..C-1, or a diverged model)"
        )
    return {"loss": loss, "accuracy": float(totals["correct"]) / count, "count": count}


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
    spec = lambda a, lead, where: jax.ShapeDtypeStruct(lead + np.shape(a)[1:], np.asarray(a).dtype, sharding=where)  # noqa: E731
    start = time.perf_counter()
    for k, b in set(plan_calls(len(examples), loader.batch_size, steps_per_call, every=every)):
        where = devices.batch_sharding(mesh, b, axis=1)
        if data_on_device:
            data = jax.tree.map(lambda a: spec(a, (devices.padded_rows(len(a), mesh),), devices.row_sharding(mesh)), arrays)
            gather_steps.lower(state, data, spec(examples, (k, b), where)).compile()
        else:
            train_steps.lower(state, jax.tree.map(lambda a: spec(a, (k, b), where), sample)).compile()
    return time.perf_counter() - start


def _progress(calls: Iterable[tuple], total: int, desc: str) -> Iterator[tuple]:
    """A progress bar in examples on an interactive terminal; it never reads the loss."""
    if not sys.stderr.isatty() or not devices.is_main_process():
        yield from calls
        return
    from tqdm.auto import tqdm  # a dependency of tensorflow-datasets

    with tqdm(total=total, desc=desc, leave=False, mininterval=0.5, unit="ex", unit_scale=True) as bar:
        for call in calls:
            yield call
            bar.update(call[-1].size)


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
) -> tuple[TrainState, list[dict[str, float]]]:
    """The primer's loop: ``epochs`` passes over ``train_loader``, printing ``Epoch N, Loss: …`` after each.

    The loss stays on the device during an epoch and is read once at its end, so the host never waits
    on a step. Each epoch is cut into compiled calls by ``plan_calls``; three feeding modes, which
    compute the same training for the same seed, decide what a call takes:

    - per step (``steps_per_call=1``): one step per call, its batch gathered on the host. Fastest for
      the CNN on XLA:CPU, which runs a convolution's step several times slower inside a loop.
    - fused (``steps_per_call=K``): K steps per call, a ``lax.scan`` over K batches gathered on the
      host at once, saving K - 1 dispatches: for data that stays on the host, the MLP measured 1.4×
      per step's speed (README, "Speed").
    - device-resident (``data_on_device=True``): the dataset is copied to the device once and each
      call gathers its batches there, so only indices cross over; with ``steps_per_call=len(loader)``
      a whole epoch is one call. The fastest for the MLP (1.8× per step in the same measurement).

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
      run: a ``jaxtrain.runs.Run``: log each epoch to its folder, checkpoint by its policy, and with
        ``Run(..., resume=True)`` continue from its latest checkpoint, to the same bits as a run that
        was never stopped (the epochs already done are not repeated).
      inputs: which entry of a batch (training and evaluation) holds the inputs (``data.select``): a dict's
        key or a tuple's position; None for position 0 or the first of "image", "images", "inputs", "x",
        "features". The entries picked are all that go to the device.
      labels: the same for the labels; None for position 1 or the first of "label", "labels", "target",
        "targets", "y".
      mesh: the devices to train on (``devices.make_mesh``); the batch size must be a multiple of them.

    Raises:
      FloatingPointError: an epoch's loss is not finite (the run diverged); a ``run`` keeps its last good
        checkpoint.

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
    state, history, losses = run.restore_fit(state, train_loader) if run else (state, [], [])
    every = run.periods if run else ()
    for epoch in range(len(history) + 1, epochs + 1):
        start = time.perf_counter()
        taken, samples = train_loader.next_start[1], 0
        calls = _epoch_calls(train_loader, steps_per_call, arrays, prefetch, every, mesh, (inputs, labels))
        for call, args, index in _progress(calls, total, f"epoch {epoch}"):
            state, metrics = call(state, *args)
            losses.append(metrics["loss"])
            taken, samples = taken + len(index), samples + index.size
            if len(losses) > _MAX_IN_FLIGHT:
                jax.block_until_ready(losses[-1 - _MAX_IN_FLIGHT])  # a wait, not a read: see _MAX_IN_FLIGHT
            if run and taken < len(train_loader) and any(taken % period == 0 for period in every):
                run.step_end(state, train_loader, epoch, taken, losses, history)
        # host sync: the epoch's one read of the loss
        batch_losses = np.concatenate([np.ravel(x) for x in jax.device_get(losses)])
        train_loss, losses = float(np.mean(batch_losses)), []
        if not np.isfinite(train_loss):
            raise FloatingPointError(
                f"epoch {epoch}: the training loss is {train_loss}; expected a finite number "
                f"(the run diverged: try a lower learning rate, or clipping the gradient norm)"
            )
        seconds = time.perf_counter() - start
        record = {"epoch": epoch, "train_loss": train_loss, "seconds": seconds, "samples_per_second": samples / seconds}
        if log:
            log(f"Epoch {epoch}, Loss: {train_loss}")
        for name, loader in evals.items():
            metrics = evaluate(state, loader, inputs=inputs, labels=labels)
            record.update({f"{name}_loss": metrics["loss"], f"{name}_accuracy": metrics["accuracy"]})
        history.append(record)
        if run:
            run.epoch_end(state, train_loader, history, last=epoch == epochs)
    return state, history
