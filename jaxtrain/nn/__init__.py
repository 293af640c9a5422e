"""The models, the counterpart of ``torch.nn``: the primer's MLP, a small CNN and torch-semantics BatchNorm in
Flax's Linen API (``linen``) and, as a mirror to read beside them, in NNX (``nnx``); the operations both are
built of (``ops``); and how an NNX module enters a functional training step (``adapter``).

The NNX twins are imported at their first use (``jaxtrain.nn.NNXMLP``), since they import ``flax.nnx``."""

import importlib

from jaxtrain.nn.adapter import NNXModel, is_nnx
from jaxtrain.nn.linen import CNN, MLP, BatchNorm, Conv
from jaxtrain.nn.ops import batch_normalize, conv2d, max_pool

_NNX_TWINS = ("NNXCNN", "NNXMLP", "NNXBatchNorm", "NNXConv")

__all__ = ["CNN", "MLP", "BatchNorm", "Conv", "NNXCNN", "NNXMLP", "NNXBatchNorm", "NNXConv", "NNXModel",
           "batch_normalize", "conv2d", "max_pool", "is_nnx"]


def __getattr__(name: str):
    if name in _NNX_TWINS:
        return getattr(importlib.import_module("jaxtrain.nn.nnx"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_NNX_TWINS})
