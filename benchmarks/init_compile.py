"""How long the initialization's program takes to compile and to run, with XLA's code optimization on (its
default) and off (``compiler.RUN_ONCE``, what ``create_train_state`` compiles it with on the CPU).

    python benchmarks/init_compile.py [--repeats 3] [--models cnn mlp]

Each measurement is a fresh process with no compilation cache, which compiles ``create_train_state``'s one
program for the model (MNIST's input shape, Adam), by JAX's own compile event, then times one run of it. The
processes alternate between the two settings, so that a change in the machine's speed touches both; the
table gives medians over the repeats, and how far the weights of the two programs are apart.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import subprocess
import sys
import time

import jax
import numpy as np

from jaxtrain import CNN, MLP, adam
from jaxtrain.parallel import compiler
from jaxtrain.training import step

SETTINGS = {"optimized (XLA's default)": {}, "RUN_ONCE (optimization off)": compiler.RUN_ONCE}
MODELS = {"cnn": CNN, "mlp": MLP}


def measure(model: str, setting: str) -> dict:
    """Compiles and runs ``model``'s initialization with ``setting``'s options; its seconds and weights' sum."""
    seconds = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, duration, **_: seconds.append(duration) if event == "/jax/core/compile/backend_compile_duration" else None
    )
    module, sample = MODELS[model](), np.zeros((1, 28, 28, 1), np.float32)
    program = jax.jit(functools.partial(step._start, functools.partial(module.init, train=False), adam(1e-3)),
                      compiler_options=SETTINGS[setting])
    compiled = program.lower(np.uint32(0), sample, None).compile()
    start = time.perf_counter()
    params = jax.block_until_ready(compiled(np.uint32(0), sample, None)[1]["params"])
    return {"compile": sum(seconds), "run": time.perf_counter() - start,
            "weights": [np.asarray(leaf).tolist() for leaf in jax.tree.leaves(params)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["cnn", "mlp"])
    parser.add_argument("--measure", nargs=2, metavar=("MODEL", "SETTING"), help="measure one and print JSON")
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure)))
        return
    runs = {(model, setting): [] for model in args.models for setting in SETTINGS}
    for _ in range(args.repeats):
        for model, setting in runs:
            out = subprocess.run([sys.executable, __file__, "--measure", model, setting], capture_output=True, text=True, check=True)
            runs[model, setting].append(json.loads(out.stdout.splitlines()[-1]))
    print(f"jax {jax.__version__}, {jax.devices()[0].device_kind}; medians of {args.repeats} fresh processes each\n")
    print("| model | initialization compiled | compile s | run s | weights apart (max ulp; share) |")
    print("| --- | --- | ---: | ---: | --- |")
    for (model, setting), results in runs.items():
        ours = [np.asarray(w, np.float32) for w in results[0]["weights"]]
        default = [np.asarray(w, np.float32) for w in runs[model, next(iter(SETTINGS))][0]["weights"]]
        ulps = max(float((np.abs(a - b) / np.spacing(np.abs(b))).max()) for a, b in zip(ours, default))
        share = sum(int((a != b).sum()) for a, b in zip(ours, default)) / sum(a.size for a in ours)
        apart = "—" if setting == next(iter(SETTINGS)) else f"{ulps:.0f}; {100 * share:.1f}%"
        median = lambda key: statistics.median(r[key] for r in results)  # noqa: E731
        print(f"| {model} | {setting} | {median('compile'):.2f} | {median('run'):.3f} | {apart} |")


if __name__ == "__main__":
    main()
