"""Runs that outlive their process: the run folder (``folder``: ``Run``, with its checkpoints, exact resume
and metrics), who owns a folder (``ownership``), checkpoints read only when complete (``checkpoints``), the
``config.json`` of a run made from Python (``record``), a finished run read back (``load``: ``load_run``),
reports as files (``reports``) and learning curves (``curves``)."""

from jaxtrain.runs.curves import plot_runs, read_metrics, write_tensorboard
from jaxtrain.runs.folder import Run
from jaxtrain.runs.load import load_run
from jaxtrain.runs.ownership import FolderError

__all__ = ["FolderError", "Run", "load_run", "plot_runs", "read_metrics", "write_tensorboard"]
