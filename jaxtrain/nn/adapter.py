"""Flax NNX modules in a ``TrainState``: the module split into a static graph and plain pytrees of arrays.

A Linen module holds no numbers: ``model.apply(variables, x)`` is already a pure function. An NNX module
holds its arrays, like a ``torch.nn.Module``, and changes them in place (BatchNorm's statistics, the RNG
streams' counters). ``nnx.split`` takes it apart into a ``GraphDef`` (the structure, static and hashable)
and its ``State``; ``nnx.merge`` puts a copy back together inside a traced function. ``NNXModel`` keeps the
graph and offers Linen's ``apply`` over the state's plain nested dicts, so the one jitted, donated,
scanned training step runs either kind of module:

  - ``params``: the ``nnx.Param`` variables, what the optimizer updates;
  - ``batch_stats``: the ``nnx.BatchStat`` variables, what training mode changes;
  - RNG streams (``nnx.Rngs``, the streams a ``nnx.Dropout`` holds): not kept. Every call reseeds them from
    the key it is given (``fold_in(state.key, step)`` in training), so step ``s`` draws the same masks
    whenever it runs, as on the Linen path. Their keys and counters are rebuilt from the layout kept here.

Any other variable (a cache, sown intermediates) is refused: it would be silently dropped between steps.

``flax.nnx`` is imported where an NNX module is handled, not with jaxtrain (it takes about 0.17 s): a run of a
Linen model never loads it, and ``is_nnx`` asks without importing it.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp

if TYPE_CHECKING:
    from flax import nnx

# (path, is_key, shape) of each RNG variable: the keys (nnx.RngKey) and counters (nnx.RngCount) of the streams.
RngLayout = tuple[tuple[tuple[Any, ...], bool, tuple[int, ...]], ...]


@dataclasses.dataclass(frozen=True)
class NNXModel:
    """An ``nnx.Module``'s graph, applied to its state as a Linen module is to its variables.

    Static and hashable: two models of the same structure and settings compare equal, so a second
    ``create_train_state`` reuses the compiled step. ``create_train_state`` builds one from an
    ``nnx.Module`` (``NNXModel.split``); a user never needs to.

    Attributes:
      graphdef: ``nnx.split``'s graph of the module (its structure and static attributes).
      rng_layout: where its RNG streams' keys and counters sit, and their shapes.
      name: the module's class name, for messages.

    Example:
      >>> model, variables = NNXModel.split(models.NNXMLP((8, 8, 1), rngs=nnx.Rngs(0)))
      >>> logits = model.apply(variables, images, train=False)
    """

    graphdef: Any
    rng_layout: RngLayout
    name: str

    @classmethod
    def split(cls, module: nnx.Module) -> tuple[NNXModel, dict[str, Any]]:
        """Takes an NNX module apart: its graph and its values, ``{"params": ..., "batch_stats": ...}``.

        Args:
          module: an initialized ``nnx.Module``; it is not changed.

        Returns:
          The ``NNXModel`` and the module's variables, its own arrays (``create_train_state`` copies them), as
          plain nested dicts (``nnx.to_pure_dict``) laid out by attribute path: ``params["Dense_0"]["kernel"]``.
          No ``batch_stats`` key without ``nnx.BatchStat``.

        Raises:
          ValueError: the module holds variables other than parameters, batch statistics and RNG streams.
        """
        from flax import nnx

        graphdef, params, stats, rngs, rest = nnx.split(module, nnx.Param, nnx.BatchStat, nnx.RngState, ...)
        if len(rest):
            path, value = next(iter(nnx.to_flat_state(rest)))
            where = "/".join(map(str, path))
            raise ValueError(
                f"model (NNX {type(module).__name__}): holds {type(value).__name__} at {where!r}, which a training "
                f"step would not carry over; expected only nnx.Param, nnx.BatchStat and RNG streams (nnx.Rngs)"
            )
        layout = tuple(
            (tuple(path), isinstance(variable, nnx.RngKey), tuple(jnp.shape(variable.get_value())))
            for path, variable in nnx.to_flat_state(rngs)
        )
        variables = {"params": nnx.to_pure_dict(params)}
        if len(stats):
            variables["batch_stats"] = nnx.to_pure_dict(stats)
        return cls(graphdef, layout, type(module).__name__), variables

    def module(self, variables: Mapping[str, Any], key: jax.Array | None = None) -> nnx.Module:
        """A fresh NNX module of this graph holding ``variables``, its RNG streams seeded from ``key``.

        Example:
          >>> trained = state.model.module(state.variables)   # an nnx.Module again: trained(x)
        """
        from flax import nnx

        key = jax.random.key(0) if key is None else key
        # As JAX arrays: NNX writes a variable's new value into a numpy array in place, the caller's.
        params, stats = jax.tree.map(jnp.asarray, (variables["params"], variables.get("batch_stats", {})))
        return nnx.merge(self.graphdef, params, stats, self._rngs(key), {})

    def apply(
        self,
        variables: Mapping[str, Any],
        inputs: Any,
        *,
        rngs: Mapping[str, jax.Array] | None = None,
        mutable: Any = False,
        train: bool = False,
    ) -> Any:
        """``flax.linen.Module.apply``'s contract for the NNX module: a pure function of ``variables``.

        Args:
          variables: ``{"params": ..., "batch_stats": ...}`` as ``split`` lays them out.
          inputs: the model's input batch.
          rngs: ``{"dropout": key}``: every RNG stream of the module is reseeded from this one key. None
            (evaluation) seeds them with a fixed key, which a model in evaluation mode does not use.
          mutable: ``["batch_stats"]`` (or True) to also return the batch statistics after the call.
          train: NNX's own modes: ``model.train()`` (dropout on, statistics move) or ``model.eval()``.

        Returns:
          The output, or ``(output, {"batch_stats": ...})`` when ``mutable``.
        """
        key = next(iter(rngs.values())) if rngs else None
        model = self.module(variables, key)
        if train:  # on the merged copy, a value local to this trace: the caller's module never changes
            model.train()
        else:
            model.eval()
        out = model(inputs)
        if not mutable:
            return out
        from flax import nnx

        return out, {"batch_stats": nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))}

    def _rngs(self, key: jax.Array) -> dict[Any, Any]:
        """The RNG variables as a nested dict: stream ``i`` keyed ``fold_in(key, i)``, every counter at 0."""
        tree: dict[Any, Any] = {}
        for i, (path, is_key, shape) in enumerate(self.rng_layout):
            node = tree
            for entry in path[:-1]:
                node = node.setdefault(entry, {})
            if is_key:
                stream = jax.random.fold_in(key, i)
                node[path[-1]] = jax.random.split(stream, shape) if shape else stream
            else:
                node[path[-1]] = jnp.zeros(shape, jnp.uint32)
        return tree


def is_nnx(model: Any) -> bool:
    """Whether ``model`` is a Flax NNX module, or a class of one, rather than a Linen one. It does not import
    ``flax.nnx``: until something has, no NNX module can exist."""
    nnx = sys.modules.get("flax.nnx")
    if nnx is None:
        return False
    return issubclass(model, nnx.Module) if isinstance(model, type) else isinstance(model, nnx.Module)
