"""The training step, functionally: ``TrainState``, ``train_step``, ``eval_step`` and ``predict``
(``jaxtrain.training.fit`` runs the steps over epochs: ``fit``; ``jaxtrain.training.evaluation`` over a loader:
``evaluate``).

PyTorch keeps the weights, the gradients, the optimizer's moments and BatchNorm's running statistics
inside objects and changes them in place (``loss.backward()``, ``optimizer.step()``). Here all of that
is one immutable pytree, ``TrainState``; a step is a pure function from the old state and a batch to a new
state, compiled once by ``jax.jit``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from jaxtrain.data.collate import select
from jaxtrain.nn.adapter import NNXModel, is_nnx
from jaxtrain.parallel.compiler import jit, run_once_options
from jaxtrain.training.losses import cross_entropy
from jaxtrain.training.metrics import Accuracy, Metric

if TYPE_CHECKING:
    from flax import nnx

Batch = tuple[Any, Any]  # (inputs, labels); a dict batch is read by collate.select
Key = str | int | tuple | list | None  # which entries of a batch: a dict's keys or a tuple's positions (collate.select)


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
        for an NNX module its graph (``jaxtrain.nn.adapter.NNXModel``), whose ``params`` are its ``nnx.Param``
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

    Before any work it checks the arguments: ``sample`` must be a batch that the model can take (floats,
    or integers such as token ids; a dict of several inputs too)
    (checked with ``jax.eval_shape`` of the initialization, which computes nothing), ``seed`` an integer in
    [0, 2**32), and ``variables``, if given, shaped as the model's own.

    Args:
      model: a Flax module. Linen: if its ``__call__`` takes ``train``, it is passed the mode. NNX: it comes
        initialized, so its own values are the start (``seed`` then seeds only the dropout key); it is split
        (``jaxtrain.nn.adapter.NNXModel``) and left unchanged, and ``model.train()`` / ``model.eval()`` set the
        mode of each step.
      tx: an optax optimizer, e.g. ``jaxtrain.training.optim.adam(1e-3)``.
      sample: an input batch that fixes the parameter shapes: ``images[:1]`` (``(1, H, W, C) float32`` in
        [0, 1]), token ids (``(1, T) int32``), or a dict of several inputs, as the model takes them. uint8,
        the dtype of raw pixels, is refused: scale images to floats first (ids: ``astype(np.int32)``).
      seed: seeds the initialization and the dropout key; an integer in [0, 2**32).
      variables: start from these Flax variables (``{"params": ..., "batch_stats": ...}``) instead; for an
        NNX module, nested by attribute path (``interop.from_torch`` gives them for jaxtrain's models).
      loss_fn: ``loss_fn(logits, labels, mask=None)``, the mean loss of a batch.

    Returns:
      A ``TrainState`` at step 0.

    Raises:
      ValueError: one line, e.g. ``seed=4294967296; expected an integer in [0, 2**32)`` or
        ``sample (shape (1, 28, 28, 1), dtype uint8): raw pixels; expected floats ...``.

    Example:
      >>> state = create_train_state(MLP(), adam(1e-3), images[:1])
    """
    # jax.random.key takes the seed modulo 2**32 (2**32 gives seed 0's weights) and overflows past 2**64.
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or not 0 <= seed < 2**32:
        raise ValueError(f"seed={seed!r}; expected an integer in [0, 2**32)")
    if not isinstance(tx, optax.GradientTransformation):
        raise ValueError(f"tx={tx!r}; expected an optax.GradientTransformation, e.g. jaxtrain.adam(1e-3)")
    _check_sample(sample)
    own = None
    if is_nnx(model):  # initialized at construction: its values are the start, and its forward checks the sample
        model, own = NNXModel.split(model)
        init = lambda _, x: (model.apply(own, x), own)[1]  # noqa: E731
    else:
        init = functools.partial(model.init, **_mode(model, False))
    try:
        expected = jax.eval_shape(lambda x: init(jax.random.key(0), x), sample)  # shapes only: no key is made
    except Exception as error:  # whatever the model raises on this input: a shape or a type it cannot take
        first_line = (str(error).strip().splitlines() or [""])[0][:300]
        raise ValueError(
            f"sample ({_describe(sample)}): the model cannot take it ({type(error).__name__}: {first_line}); "
            f"expected a batch shaped like the training inputs, e.g. images[:1]"
        ) from error
    if variables is not None:
        _check_variables(variables, expected)
    given = variables if variables is not None else own
    # One compiled program makes the state's arrays: run eagerly, op by op, the initialization compiled
    # each of its dozens of ops on its own, and took longer than the training steps of a short run. The seed
    # is an argument, so that every seed shares the program (and its entry in the compilation cache). It runs
    # once, so XLA does not optimize its code (compiler.RUN_ONCE): it compiles in a third of the time.
    start = jax.jit(functools.partial(_start, None if given else init, tx), compiler_options=run_once_options())
    step, variables, opt_state, key = start(np.uint32(seed), None if given else sample, given and dict(given))
    variables = dict(variables)
    params = variables.pop("params")
    batch_stats = variables.pop("batch_stats", {})
    if variables:
        raise ValueError(f"variables has collections {sorted(variables)}; expected only 'params' and 'batch_stats'")
    return TrainState(
        step=step,
        params=params,
        opt_state=opt_state,
        batch_stats=batch_stats,
        key=key,
        model=model,
        tx=tx,
        loss_fn=loss_fn,
    )


def _start(init: Callable | None, tx: optax.GradientTransformation, seed: jax.Array, sample: Any, given: Any) -> tuple:
    """The arrays of a state at step 0: the step, the variables (``init``'s, or a copy of those ``given``
    without ``init``: the steps donate the state's buffers, and their owner keeps its own), the optimizer's
    state for the parameters, and the dropout key."""
    init_key, key = jax.random.split(jax.random.key(seed))
    variables = init(init_key, sample) if init is not None else jax.tree.map(jnp.copy, given)
    return jnp.zeros([], jnp.int32), variables, tx.init(variables["params"]), key


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
    """Refuses a sample that is not a non-empty batch of numbers, or that holds raw uint8 pixels."""
    leaves = jax.tree.leaves(sample)
    if not leaves:
        raise ValueError(f"sample={sample!r}; expected a batch of inputs, e.g. images[:1]")
    for leaf in leaves:
        dtype = _dtype(leaf)
        # Integers pass as they are (token ids for an embedding, no cast to float), but uint8 is how pixels
        # come, and a model would train on them unscaled in 0..255 without a word.
        if np.dtype(getattr(leaf, "dtype", np.float32)) == np.uint8:
            raise ValueError(
                f"sample ({_describe(sample)}): raw pixels; expected floats in [0, 1] "
                f"(scale the images first: uint8 pixels / 255; token ids: astype(np.int32))"
            )
        if dtype is None or not (jnp.issubdtype(dtype, jnp.number) or dtype == jnp.bool_):
            raise ValueError(f"sample ({_describe(sample)}): not numbers; expected a batch such as images[:1] or token ids")
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


train_step = jit(train_step_fn, donate_argnums=0)
train_step.__doc__ = """``train_step(state, (inputs, labels)) -> (state, {"loss": batch loss})``, jit-compiled.

The state is donated: its buffers are reused for the new state, so never touch the old one after the call.
"""


def _loop(step: Callable, state: TrainState, xs: Any) -> tuple[TrainState, dict[str, jax.Array]]:
    """``lax.scan`` of ``step`` over the leading axis of ``xs``; a single step runs without the loop, since
    XLA:CPU runs a step of ``flax.linen.Conv`` several times slower inside one (``nn.ops.conv2d`` avoids
    that for jaxtrain's CNN)."""
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


train_steps = jit(train_steps_fn, donate_argnums=0)
gather_steps = jit(gather_steps_fn, donate_argnums=0)


def eval_step(
    state: TrainState, batch: Batch, mask: jax.Array | None = None, metrics: tuple[Metric, ...] = ()
) -> dict[str, Any]:
    """Evaluation mode, no gradients: the sums of the loss and of correct predictions over a batch, and what
    each of ``metrics`` adds (``Metric.sums``), all in one compiled program.

    Args:
      state: the train state (not donated, not changed).
      batch: ``(inputs, labels)``, or a dict read by ``collate.select``'s common names.
      mask: ``(N,)`` booleans marking real examples in a padded batch; None counts them all.
      metrics: ``jaxtrain.training.metrics.Metric``s (static: each set of them compiles once).

    Returns:
      ``{"loss_sum", "correct", "count"}``, device scalars, and each metric's sums by its name.
    """
    inputs, labels = select(batch)
    if mask is None:
        mask = jnp.ones(labels.shape, bool)
    logits, _ = forward(state, state.params, inputs, train=False)
    per_example = jax.vmap(state.loss_fn)(logits[:, None], labels[:, None])
    sums = {"loss_sum": jnp.sum(jnp.where(mask, per_example, 0)), "correct": Accuracy().sums(logits, labels, mask)}
    return {**sums, "count": jnp.sum(mask), **{metric.name: metric.sums(logits, labels, mask) for metric in metrics}}


eval_step = jit(eval_step, static_argnames="metrics")


@jit
def predict(state: TrainState, inputs: jax.Array) -> jax.Array:
    """Class probabilities in evaluation mode: ``model.eval()``, then ``model(x).softmax(-1)`` under
    ``torch.no_grad()``. Returns ``(N, C)`` float32 probabilities.

    Example:
      >>> predict(state, images[:8]).argmax(-1)
    """
    logits, _ = forward(state, state.params, inputs, train=False)
    return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
