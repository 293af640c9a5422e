"""The study: PyTorch's training program beside jaxtrain's, proven equivalent and measured.

- ``torch_side``: the primer's classes, the torch mirrors of jaxtrain's models, the primer's program timed;
- ``parity``: both frameworks from the same weights on the same batches, and their differences;
- ``measure``: each program in a fresh process, and the machine's facts and rates;
- ``bench``: the one benchmark runner, with its presets;
- ``job``: the whole job, a fresh process from its start to its printed accuracy, beside ``primer_script.py``;
- ``plot``: its pictures.

The docs' tables and pictures are regenerated from these by ``tools/figures.py``, outside the package.

torch and matplotlib are imported only when a function here is called: ``pip install 'jaxtrain[compare]'``.

  python -m jaxtrain compare parity --model cnn --optimizer adam --dtype float64 --steps 600
  python -m jaxtrain compare bench --preset frameworks --dataset mnist --data-dir DIR --report bench.json
"""

from jaxtrain.compare.bench import PRESETS, PROGRAMS, bench, format_bench
from jaxtrain.compare.bench import check as bench_check
from jaxtrain.compare.job import EPOCHS as JOB_EPOCHS
from jaxtrain.compare.job import TARGETS as JOB_TARGETS
from jaxtrain.compare.job import format_job, job
from jaxtrain.compare.job import check as job_check
from jaxtrain.compare.measure import machine, measure_in_child
from jaxtrain.compare.parity import PARITY_DTYPES, ParityConfig, format_parity, parity
from jaxtrain.compare.plot import plot_batch_sizes, plot_bench
from jaxtrain.compare.torch_side import TORCH_VARIANTS, flatten_shape, torch_model, torch_run

__all__ = [
    "JOB_EPOCHS",
    "JOB_TARGETS",
    "PARITY_DTYPES",
    "PRESETS",
    "PROGRAMS",
    "ParityConfig",
    "TORCH_VARIANTS",
    "bench",
    "bench_check",
    "flatten_shape",
    "format_bench",
    "format_job",
    "format_parity",
    "job",
    "job_check",
    "machine",
    "measure_in_child",
    "parity",
    "plot_batch_sizes",
    "plot_bench",
    "torch_model",
    "torch_run",
]
