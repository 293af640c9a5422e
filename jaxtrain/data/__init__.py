"""Datasets and batch loading, the counterpart of ``torch.utils.data``: datasets and the ``DataLoader``
(``loader``), which examples an epoch visits (``samplers``), from examples to batches (``collate``), and
from the host to the device (``transfer``)."""

from jaxtrain.data.collate import default_collate, select
from jaxtrain.data.loader import ArrayDataset, ConcatDataset, DataLoader, Dataset, Subset, random_split
from jaxtrain.data.samplers import Sampler, WeightedRandomSampler
from jaxtrain.data.transfer import fits_on_device, prefetch_to_device

__all__ = ["ArrayDataset", "ConcatDataset", "DataLoader", "Dataset", "Sampler", "Subset", "WeightedRandomSampler",
           "default_collate", "fits_on_device", "prefetch_to_device", "random_split", "select"]
