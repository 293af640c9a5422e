"""The models, the counterpart of ``torch.nn``: the primer's MLP, a small CNN and torch-semantics BatchNorm in
Flax's Linen API (``linen``) and, as a mirror to read beside them, in NNX (``nnx``); the operations both are
built of (``ops``); and how an NNX module enters a functional training step (``adapter``)."""

from jaxtrain.nn.adapter import NNXModel, is_nnx
from jaxtrain.nn.linen import CNN, MLP, BatchNorm, Conv
from jaxtrain.nn.nnx import NNXCNN, NNXMLP, NNXBatchNorm, NNXConv
from jaxtrain.nn.ops import batch_normalize, conv2d, max_pool

__all__ = ["CNN", "MLP", "BatchNorm", "Conv", "NNXCNN", "NNXMLP", "NNXBatchNorm", "NNXConv", "NNXModel",
           "batch_normalize", "conv2d", "max_pool", "is_nnx"]
