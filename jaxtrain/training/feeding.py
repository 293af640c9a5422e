"""What ``steps_per_call="auto"`` and ``data_on_device=None`` become: one table, the backend (cpu, gpu, tpu)
and the model → the setting, each cell with the measurement that chose it (``TABLE``), and ``resolve``,
which turns a run's settings into ``fit``'s arguments and says why.

The cells hold what was measured, not a rule of thumb: a backend or model that was not measured says so.
docs/performance.md shows the same table (``markdown``), and ``python -m jaxtrain train``'s report names
the setting and its reason (``Feeding.why``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

# The models' rows: the NNX twins compute what their Linen models do, layer for layer (config.MODELS).
FAMILIES = ("mlp", "cnn")
BACKENDS = ("cpu", "gpu", "tpu")  # jax.default_backend()'s names; CUDA and ROCm are both "gpu"


@dataclasses.dataclass(frozen=True)
class Choice:
    """One cell of ``TABLE``.

    Attributes:
      steps_per_call: optimizer steps per compiled call: K, or "epoch" for the whole epoch in one call.
      data_on_device: True or False; None: when the training set takes at most a quarter of the device's
        memory (``transfer.fits_on_device``).
      reason: the measurement that chose it, with where it is written down.
    """

    steps_per_call: int | str
    data_on_device: bool | None
    reason: str


_CPU = "2-core CPU, MNIST, batch 32, docs/performance.md's"
_H200 = "one NVIDIA H200, MNIST's 19,690 training images, batch 32"
TABLE: dict[tuple[str, str], Choice] = {
    ("cpu", "mlp"): Choice("epoch", None, (
        f"{_CPU} feeding-mlp: the whole epoch in one call over device-resident data ran 90,697 samples/s, "
        "1.5x one step a call (59,628) and 1.1x 32 fused steps over host data (82,461), as fast as a "
        "hand-written lax.scan (87,743)")),
    ("cpu", "cnn"): Choice("epoch", None, (
        f"{_CPU} feeding-cnn: the whole epoch in one call over device-resident data ran 2,928 samples/s "
        "and 32 fused steps 2,909, 1.19x one step a call (2,456); train --model cnn --epochs 2, 3 rounds "
        "alternated: epoch 2 took 6.71 s against 7.65 s one step a call (the NNX CNN, 2 rounds: 6.59 "
        "against 8.47 s). An earlier 2-core CPU, half as fast at matrix products, measured the three "
        "within 4% (1,386-1,445)")),
    ("gpu", "mlp"): Choice("epoch", None, (
        f"{_H200}: the device-resident whole epoch ran 1.03M samples/s, 19x one step a call (54,427) "
        "and 1.11x a hand-written lax.scan (929,823)")),
    ("gpu", "cnn"): Choice("epoch", None, (
        f"{_H200}: the whole epoch in one call ran 138,108 samples/s and 64 steps a call 141,346, "
        "against 18,480-34k for one step a call (106,031 for 16); the whole epoch compiles one program "
        "fewer than 64 steps (no call of the steps left over). Batch 512: 615k against 411k")),
    ("tpu", "mlp"): Choice("epoch", None, "not measured on a TPU: the GPU's choice"),
    ("tpu", "cnn"): Choice("epoch", None, "not measured on a TPU: the GPU's choice"),
}

# Where "epoch" is chosen but the data stays on the host (it does not fit, or data_on_device=False): a whole
# epoch per call would stack all of its batches on the host and copy them at once, as much memory as did
# not fit. Fused calls of this many steps instead: 1.4x one step a call for the MLP on the CPU (82,461
# against 59,628 samples/s, feeding-mlp), and 1.18x for the CNN (2,909 against 2,456), the benchmark's
# "fused" mode.
HOST_FED_STEPS = 32


def choose(family: str, backend: str) -> Choice:
    """The cell of ``TABLE`` for a model family on a backend; a backend outside the table (a plugin's)
    takes the GPU's cell, its reason saying that it was not measured there.

    Args:
      family: "mlp" or "cnn" (``config.MODELS[name].family``).
      backend: ``jax.default_backend()``: "cpu", "gpu", "tpu", or another.

    Example:
      >>> choose("cnn", "gpu").steps_per_call
      'epoch'
    """
    if family not in FAMILIES:
        raise ValueError(f"family={family!r}; expected one of {', '.join(FAMILIES)}")
    if backend in BACKENDS:
        return TABLE[backend, family]
    gpu = TABLE["gpu", family]
    return Choice(gpu.steps_per_call, gpu.data_on_device, f"not measured on {backend}: the GPU's choice")


@dataclasses.dataclass(frozen=True)
class Feeding:
    """A run's feeding as ``fit`` takes it, and why.

    Attributes:
      steps_per_call: optimizer steps per compiled call (a whole epoch's batches, for "epoch").
      data_on_device: whether the training set is copied to the device once.
      why: per setting, what chose it: the configuration, or ``TABLE``'s cell and its reason.
    """

    steps_per_call: int
    data_on_device: bool
    why: dict[str, str]

    def settings(self) -> dict[str, Any]:
        """``fit``'s and ``compile_fit``'s keyword arguments: ``steps_per_call`` and ``data_on_device``."""
        return {"steps_per_call": self.steps_per_call, "data_on_device": self.data_on_device}


def resolve(
    steps_per_call: int | str,
    data_on_device: bool | None,
    family: str,
    backend: str,
    batches: int,
    fits: bool,
) -> Feeding:
    """A run's ``steps_per_call`` ("auto", "epoch" or K) and ``data_on_device`` (None or a bool) as ``fit``
    takes them.

    Args:
      steps_per_call: the configuration's: "auto" takes ``choose(family, backend)``'s.
      data_on_device: the configuration's: None takes the cell's, which is ``fits`` for every cell.
      family: the model's row of ``TABLE``.
      backend: ``jax.default_backend()``.
      batches: the batches of an epoch (``len(train_loader)``), which "epoch" stands for.
      fits: whether the training set takes at most a quarter of the device's memory.

    Returns:
      The ``Feeding``. An "epoch" that ``TABLE`` chose for data left on the host becomes
      ``HOST_FED_STEPS`` steps a call.

    Example:
      >>> resolve("auto", None, "mlp", "cpu", batches=57, fits=True).settings()
      {'steps_per_call': 57, 'data_on_device': True}
    """
    cell = choose(family, backend)
    why = {}
    if data_on_device is None:
        data_on_device = fits if cell.data_on_device is None else cell.data_on_device
        fit_text = "takes at most" if fits else "takes more than"
        why["data_on_device"] = f"auto: the training set {fit_text} a quarter of the device's memory"
    else:
        why["data_on_device"] = "set by the configuration"
    if steps_per_call == "auto":
        steps_per_call = cell.steps_per_call
        why["steps_per_call"] = f"auto ({backend}, {family}): {steps_per_call} ({cell.reason})"
        if steps_per_call == "epoch" and not data_on_device:
            steps_per_call = HOST_FED_STEPS
            why["steps_per_call"] += f"; the data stays on the host, so {HOST_FED_STEPS} fused steps a call instead"
    else:
        why["steps_per_call"] = "set by the configuration"
    steps = batches if steps_per_call == "epoch" else steps_per_call
    return Feeding(steps_per_call=steps, data_on_device=bool(data_on_device), why=why)


def markdown() -> str:
    """``TABLE`` as a Markdown table, as docs/performance.md shows it."""
    rows = ["| backend | model | steps per call | data on the device | measured |", "| --- | --- | --- | --- | --- |"]
    for (backend, family), cell in TABLE.items():
        on_device = {None: "when it fits", True: "yes", False: "no"}[cell.data_on_device]
        rows.append(f"| {backend} | {family} | {cell.steps_per_call} | {on_device} | {cell.reason} |")
    return "\n".join(rows)


def summary() -> str:
    """One line for ``--help``: "cpu: epoch for mlp and cnn; gpu: epoch for mlp and cnn; ..."."""
    parts = []
    for backend in BACKENDS:
        by_value: dict[str, list[str]] = {}
        for family in FAMILIES:
            by_value.setdefault(str(TABLE[backend, family].steps_per_call), []).append(family)
        parts.append(f"{backend}: " + ", ".join(f"{value} for {' and '.join(f)}" for value, f in by_value.items()))
    return "; ".join(parts)
