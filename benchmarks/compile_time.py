"""How long the first training step takes to compile, by compiler options, for the CNN and the MLP.

    python benchmarks/compile_time.py [--repeats 3] [--batch-size 32] [--models cnn mlp]

Each measurement is a fresh process that builds the model's state, then times the first ``train_step``
call by JAX's own compile events (tracing, lowering to MLIR, XLA's backend) and then the step itself
(median of 5 × 30 steps). The processes alternate between the options, so that a change in the machine's
speed touches them all; the table gives medians over the repeats. Options (``jaxtrain.parallel.compiler``):

- "XLA defaults": ``jax.jit`` with no options.
- "YNNPACK option": ``YNN_OPTION`` (products and reductions in YNNPACK, convolutions in XLA's own kernels).
- "YNNPACK option + older emitters": ``YNN_OPTION`` and ``OLDER_EMITTERS`` (XLA:CPU's older fusion emitters).

A set of options that the installed XLA refuses is left out of the table and named below it. The last
column marks what ``compiler.jit`` compiles each model's step with on this XLA.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import jax
import jaxlib
import numpy as np

from jaxtrain import CNN, MLP, adam, create_train_state
from jaxtrain.parallel import compiler
from jaxtrain.training.step import train_step_fn

CHOICES = {
    "XLA defaults": {},
    "YNNPACK option": compiler.YNN_OPTION,
    "YNNPACK option + older emitters": {**compiler.YNN_OPTION, **compiler.OLDER_EMITTERS},
}
_EVENTS = {"/jax/core/compile/jaxpr_trace_duration": "trace", "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower",
           "/jax/core/compile/backend_compile_duration": "backend"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--models", nargs="+", choices=["cnn", "mlp"], default=["cnn", "mlp"])
    parser.add_argument("--measure", nargs=2, metavar=("MODEL", "OPTIONS"), help="measure one and print JSON")
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure, args.batch_size)))
        return
    accepted = [name for name, options in CHOICES.items() if all(compiler.accepts(*option) for option in options.items())]
    runs = {(model, choice): [] for model in args.models for choice in accepted}
    for _ in range(args.repeats):
        for model, choice in runs:
            command = [sys.executable, __file__, "--measure", model, choice, "--batch-size", str(args.batch_size)]
            done = subprocess.run(command, check=True, capture_output=True, text=True)
            runs[model, choice].append(json.loads(done.stdout.splitlines()[-1]))
    print(f"First train_step, batch {args.batch_size}, float32; jax {jax.__version__}, jaxlib {jaxlib.__version__}, "
          f"Python {platform.python_version()} on {jax.devices()[0].device_kind} ({os.cpu_count()} cores); "
          f"medians of {args.repeats} fresh processes each, alternated")
    print("\n| model | options | trace s | lower s | XLA backend s | compile s | ms/step | jaxtrain's |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | :---: |")
    for (model, choice), results in runs.items():
        m = {key: statistics.median(r[key] for r in results) for key in ("trace", "lower", "backend", "ms")}
        total = statistics.median(r["trace"] + r["lower"] + r["backend"] for r in results)
        ours = "✓" if CHOICES[choice] == compiler.compiler_options(convolutions=model == "cnn") else ""
        print(f"| {model} | {choice} | {m['trace']:.2f} | {m['lower']:.2f} | {m['backend']:.2f} | {total:.2f} | {m['ms']:.2f} | {ours} |")
    for choice in CHOICES.keys() - set(accepted):
        print(f"\nNot accepted by this XLA: {choice} ({', '.join(CHOICES[choice])})")


def measure(model: str, choice: str, batch_size: int) -> dict[str, float]:
    """Compile events of the first ``train_step`` call, in seconds, and the step's median ms."""
    events = dict.fromkeys(_EVENTS.values(), 0.0)

    def listen(event: str, seconds: float, **_) -> None:
        if event in _EVENTS:
            events[_EVENTS[event]] += seconds

    rng = np.random.default_rng(0)
    batch = jax.device_put((rng.random((batch_size, 28, 28, 1), np.float32), rng.integers(0, 10, batch_size).astype(np.int32)))
    state = create_train_state(CNN() if model == "cnn" else MLP(), adam(1e-3), batch[0][:1])
    step = jax.jit(train_step_fn, compiler_options=CHOICES[choice])
    jax.monitoring.register_event_duration_secs_listener(listen)
    state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    jax.monitoring.clear_event_listeners()
    times = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(30):
            state, metrics = step(state, batch)
        jax.block_until_ready(metrics)
        times.append((time.perf_counter() - start) / 30 * 1e3)
    return {**events, "ms": statistics.median(times)}


if __name__ == "__main__":
    main()
