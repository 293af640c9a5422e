"""Where examples come from, the counterpart of ``torchvision.datasets``: a dataset by name (``registry``), the
two built in (``builtin``: MNIST and scikit-learn's digits), files of one's own (``files``: image folders,
``.npz``), tensorflow-datasets (``tfds``), MNIST's IDX format (``idx``) and its download (``download``), and
the checks every source runs on what it read (``checks``)."""

from jaxtrain.sources.builtin import load_digits, load_mnist
from jaxtrain.sources.checks import DatasetInfo, check_splits, validate
from jaxtrain.sources.download import DatasetUnavailableError
from jaxtrain.sources.files import load_folder, load_npz, read_images
from jaxtrain.sources.idx import read_idx
from jaxtrain.sources.registry import info, load

__all__ = ["DatasetInfo", "DatasetUnavailableError", "check_splits", "info", "load", "load_digits", "load_folder",
           "load_mnist", "load_npz", "read_idx", "read_images", "validate"]
