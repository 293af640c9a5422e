"""Weights across the frameworks: a ``torch.nn.Module``'s parameters and buffers as Flax variables, and back.

A torch module keeps its state inside its layers; a Flax module keeps none, and its state is a nested dict
of arrays, ``{"params": ..., "batch_stats": ...}``. The two also lay the same numbers out differently:

  - ``nn.Linear.weight`` is (out, in) and computes ``x @ W.T``; ``nn.Dense``'s kernel is (in, out): K = Wᵀ.
  - ``nn.Conv2d.weight`` is OIHW over NCHW images; ``nn.Conv``'s kernel is HWIO over NHWC images.
  - So the first Linear after the convolutions sees the features flattened in (C, H, W) order in torch,
    but in (H, W, C) order in Flax: its input rows are permuted.

The layers map by kind and order: the i-th ``Linear``, ``Conv2d`` and ``BatchNorm{1,2}d`` of the torch
module (in ``module.modules()`` order) become Flax's auto-named ``Dense_i``, ``Conv_i`` and ``BatchNorm_i``
— the names of a compact Flax module that calls those layers in the same order, such as
``jaxtrain.nn.linen.MLP`` and ``CNN``, and the attribute names of their NNX twins ``NNXMLP`` and ``NNXCNN``.
BatchNorm's running statistics go to ``batch_stats`` as ``mean`` and ``var`` (``jaxtrain.nn.linen.BatchNorm``'s
names).

torch is imported only when a function here is called: ``pip install 'jaxtrain[compare]'``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

Variables = dict[str, dict[str, dict[str, np.ndarray]]]

# torch class name → Flax module name prefix.
_FLAX_NAMES = {"Linear": "Dense", "Conv2d": "Conv", "BatchNorm1d": "BatchNorm", "BatchNorm2d": "BatchNorm"}


def from_torch(module: Any, flatten_shape: tuple[int, int, int] | None = None) -> Variables:
    """A torch module's weights as Flax variables: ``{"params": ..., "batch_stats": ...}``.

    Args:
      module: a ``torch.nn.Module`` whose parameters and buffers all sit in ``Linear``, ``Conv2d`` and
        ``BatchNorm1d``/``BatchNorm2d`` layers.
      flatten_shape: ``(C, H, W)`` of the NCHW activation that torch flattens before the first ``Linear``
        that follows a ``Conv2d``. None takes C from the last ``Conv2d`` (or the BatchNorm after it) and
        H = W = √(in_features / C).

    Returns:
      Numpy arrays in the module's dtype (float64 stays float64 whatever ``jax_enable_x64`` says):
      ``params[Dense_i] = {kernel (in, out), bias}``, ``params[Conv_i] = {kernel HWIO, bias}``,
      ``params[BatchNorm_i] = {scale, bias}`` and ``batch_stats[BatchNorm_i] = {mean, var}``; no
      ``batch_stats`` key if the module has no BatchNorm.

    Raises:
      ValueError: ``module`` is not a module (a ``state_dict``, say: a state_dict alone cannot tell a
        ``Linear`` from an ``Embedding`` or a ``Conv2d`` from a ``ConvTranspose2d``), holds weights in other
        layers, or ``flatten_shape`` does not fit.

    Example:
      >>> variables = from_torch(torch_cnn)
      >>> logits = jaxtrain.CNN().apply(variables, images_nhwc, train=False)
    """
    _check_module(module, "from_torch(model)")
    params: dict[str, dict[str, np.ndarray]] = {}
    stats: dict[str, dict[str, np.ndarray]] = {}
    for name, layer, flat in _layers(module, flatten_shape):
        kind = type(layer).__name__
        if kind == "Linear":
            kernel = _numpy(layer.weight).T  # (out, in) → (in, out)
            if flat is not None:  # rows in torch's (C, H, W) order → Flax's (H, W, C) order
                c, h, w = flat
                kernel = kernel.reshape(c, h, w, -1).transpose(1, 2, 0, 3).reshape(c * h * w, -1)
            params[name] = {"kernel": np.ascontiguousarray(kernel)}
        elif kind == "Conv2d":
            params[name] = {"kernel": np.ascontiguousarray(_numpy(layer.weight).transpose(2, 3, 1, 0))}  # OIHW → HWIO
        else:
            params[name] = {"scale": _numpy(layer.weight)}
            stats[name] = {"mean": _numpy(layer.running_mean), "var": _numpy(layer.running_var)}
        if layer.bias is not None:
            params[name]["bias"] = _numpy(layer.bias)
    return {"params": params, **({"batch_stats": stats} if stats else {})}


def to_torch(variables: Any, module: Any, flatten_shape: tuple[int, int, int] | None = None) -> Any:
    """Writes Flax variables into a torch module, in place: the inverse of ``from_torch``.

    Each tensor keeps its dtype and device; values are cast to them. BatchNorm's ``num_batches_tracked``
    has no Flax counterpart and is left as it is.

    Args:
      variables: ``{"params": ..., "batch_stats": ...}`` as ``from_torch`` lays them out (numpy or jax
        arrays; a ``TrainState.variables``, say), or an NNX module laid out so (its ``nnx.Param`` and
        ``nnx.BatchStat`` state, e.g. a ``jaxtrain.nn.nnx.NNXMLP``).
      module: the torch module to write into, of the architecture ``variables`` came from.
      flatten_shape: as in ``from_torch``.

    Returns:
      ``module``, for chaining.

    Raises:
      ValueError: an entry is missing from ``variables`` or shaped unlike the module's (nothing is written);
        the one-line message names the Flax entry, the torch layer and both shapes.

    Example:
      >>> to_torch(state.variables, torch_cnn)
    """
    import torch

    _check_module(module, "to_torch(variables, model)")
    variables = _nnx_variables(variables)
    _check_shapes(variables, from_torch(module, flatten_shape), _torch_names(module, flatten_shape))
    params, stats = variables["params"], variables.get("batch_stats", {})
    with torch.no_grad():
        for name, layer, flat in _layers(module, flatten_shape):
            kind = type(layer).__name__
            p = params[name]
            if kind == "Linear":
                kernel = np.asarray(p["kernel"])
                if flat is not None:  # rows in Flax's (H, W, C) order → torch's (C, H, W) order
                    c, h, w = flat
                    kernel = kernel.reshape(h, w, c, -1).transpose(2, 0, 1, 3).reshape(c * h * w, -1)
                _copy(layer.weight, kernel.T)
            elif kind == "Conv2d":
                _copy(layer.weight, np.asarray(p["kernel"]).transpose(3, 2, 0, 1))  # HWIO → OIHW
            else:
                _copy(layer.weight, p["scale"])
                _copy(layer.running_mean, stats[name]["mean"])
                _copy(layer.running_var, stats[name]["var"])
            if layer.bias is not None:
                _copy(layer.bias, p["bias"])
    return module


def _layers(module: Any, flatten_shape: tuple[int, int, int] | None):
    """Yields ``(flax_name, layer, flatten_chw)`` for each weighted layer, in ``module.modules()`` order.

    ``flatten_chw`` is the (C, H, W) whose flattening feeds the layer, for the first Linear after a
    Conv2d; None elsewhere.
    """
    counts: dict[str, int] = {}
    channels = None  # the channels of the last conv's output, while no Linear has come after it
    for path, layer in module.named_modules():
        kind = type(layer).__name__
        if kind not in _FLAX_NAMES:
            own = [n for n, _ in layer.named_parameters(recurse=False)] + [n for n, _ in layer.named_buffers(recurse=False)]
            if own:
                raise ValueError(
                    f"torch layer {path or '(the module itself)'!r} ({kind}): holds {own}; "
                    f"expected weights only in {', '.join(sorted(_FLAX_NAMES))} layers"
                )
            continue
        prefix = _FLAX_NAMES[kind]
        name = f"{prefix}_{counts.get(prefix, 0)}"
        counts[prefix] = counts.get(prefix, 0) + 1
        flat = None
        if kind == "Conv2d":
            channels = layer.out_channels
        elif kind == "Linear" and channels is not None:
            flat = tuple(flatten_shape) if flatten_shape is not None else _square(layer.in_features, channels)
            if math.prod(flat) != layer.in_features:
                raise ValueError(f"flatten_shape={flat}; expected C·H·W = {name}'s in_features {layer.in_features}")
            channels = None
        yield name, layer, flat


def _nnx_variables(variables: Any) -> Any:
    """An NNX module's state as Flax variables, ``{"params": ..., "batch_stats": ...}``; anything else as it is."""
    from flax import nnx

    if not isinstance(variables, nnx.Module):
        return variables
    stats = nnx.to_pure_dict(nnx.state(variables, nnx.BatchStat))
    return {"params": nnx.to_pure_dict(nnx.state(variables, nnx.Param)), **({"batch_stats": stats} if stats else {})}


def _check_module(module: Any, call: str) -> None:
    """Refuses what is not a ``torch.nn.Module``, a ``state_dict`` above all, in one line."""
    if isinstance(module, Mapping):
        raise ValueError(
            f"module (a mapping of {len(module)} entries, a state_dict?): not a torch.nn.Module, and a state_dict "
            f"cannot say which kind each layer is; expected the module: model.load_state_dict(state_dict), then {call}"
        )
    if not callable(getattr(module, "named_modules", None)):
        raise ValueError(f"module ({type(module).__name__}): not a torch.nn.Module; expected the model: {call}")


def _torch_names(module: Any, flatten_shape: tuple[int, int, int] | None) -> dict[str, str]:
    """Flax layer name → the torch layer it comes from, e.g. ``{"Dense_0": "layer 1 (Linear)"}``."""
    paths = {id(layer): path for path, layer in module.named_modules()}
    return {
        name: f"torch layer {paths[id(layer)] or '(the module itself)'!r} ({type(layer).__name__})"
        for name, layer, _ in _layers(module, flatten_shape)
    }


def _square(features: int, channels: int) -> tuple[int, int, int]:
    side = math.isqrt(features // channels)
    if channels * side * side != features:
        raise ValueError(
            f"a Linear with {features} inputs after a Conv2d with {channels} channels is not a square C×H×W; "
            f"expected flatten_shape=(C, H, W)"
        )
    return channels, side, side


def _numpy(tensor: Any) -> np.ndarray:
    return tensor.detach().cpu().numpy().copy()


def _check_shapes(variables: Any, expected: Variables, torch_names: dict[str, str]) -> None:
    """Raises a ValueError naming the first entry of ``variables`` that is missing or shaped unlike ``expected``.

    The message names the Flax entry, the torch layer (``torch_names``) and both shapes.
    """
    for collection, layers in expected.items():
        for name, arrays in layers.items():
            for key, want in arrays.items():
                where = f"variables[{collection!r}][{name!r}][{key!r}]"
                layer = torch_names.get(name, "this torch module")
                try:
                    got = np.shape(variables[collection][name][key])
                except (KeyError, TypeError, IndexError):
                    raise ValueError(f"{where} is missing; expected shape {want.shape} for {layer}") from None
                if tuple(got) != want.shape:
                    raise ValueError(f"{where}: shape {tuple(got)}; expected {want.shape} for {layer}")


def _copy(tensor: Any, value: Any) -> None:
    import torch

    value = np.array(value)  # a writable, contiguous copy: jax's host arrays are read-only
    if value.dtype.kind not in "fiu":  # bfloat16 and other types that numpy knows only through ml_dtypes
        value = value.astype(np.float32)
    tensor.copy_(torch.from_numpy(value).to(tensor.dtype))
