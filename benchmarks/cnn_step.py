"""The CNN's training step under XLA:CPU's convolution choices, and torch's step beside it.

    python benchmarks/cnn_step.py [--batch-size 32] [--repeats 7]

For each set of YNNPACK fusions below, a fresh process compiles jaxtrain's CNN step (``nn.linen.CNN``, Adam,
random 28×28 images) with it, alone and 16 steps to a ``lax.scan`` call, and times both and torch's step
(the same network, data already in tensors) in turns: each repeat runs each program for 16 steps, one
after another; the table gives each program's median and its ratio to torch's median in the same
process. Executables compiled with different fusions slow each other down when they share a process,
hence one process per setting. Compile times are single compilations, so they are noisier.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxtrain import CNN, adam, create_train_state
from jaxtrain.compare import torch_side
from jaxtrain.parallel.compiler import YNN_FUSIONS
from jaxtrain.training.step import train_step_fn, train_steps_fn

_TYPE = "LIBRARY_FUSION_TYPE_"
# name → the value of xla_cpu_experimental_ynn_fusion_type (None: XLA's default list)
SETTINGS = {
    "XLA's default: convolutions, products and reductions in YNNPACK": None,
    "jaxtrain: products and reductions in YNNPACK": YNN_FUSIONS,
    "reductions only in YNNPACK": f"{_TYPE}REDUCE",
    "no YNNPACK": "",
}
STEPS = 16


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="the CNN's computation dtype (torch's stays float32)")
    parser.add_argument("--setting", choices=SETTINGS, help="measure this setting alone and print JSON")
    args = parser.parse_args()
    if args.setting:
        print(json.dumps(measure(SETTINGS[args.setting], args.batch_size, args.repeats, args.dtype)))
        return
    print(f"CNN training step in {args.dtype}, batch {args.batch_size}; jax {jax.__version__} on {jax.devices()[0].device_kind}; "
          f"median of {args.repeats} repeats of {STEPS} steps; one process per setting")
    print("\n| YNNPACK fusions | calls | compile s | ms/step | samples/s | torch ms/step | ×torch |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for name in SETTINGS:
        command = [sys.executable, __file__, "--setting", name, "--batch-size", str(args.batch_size), "--repeats", str(args.repeats),
                   "--dtype", args.dtype]
        result = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
        for calls, (compile_s, ms) in result["jax"].items():
            print(f"| {name} | {calls} | {compile_s:.2f} | {ms:.1f} | {args.batch_size / ms * 1e3:,.0f} | "
                  f"{result['torch']:.1f} | {result['torch'] / ms:.2f} |")


def measure(fusions: str | None, batch_size: int, repeats: int, dtype: str = "float32") -> dict:
    """Compiles the CNN's step with ``fusions`` and times it beside torch's: medians in ms per step."""
    options = None if fusions is None else {"xla_cpu_experimental_ynn_fusion_type": fusions}
    rng = np.random.default_rng(0)
    images = rng.random((STEPS, batch_size, 28, 28, 1), np.float32)
    labels = rng.integers(0, 10, (STEPS, batch_size)).astype(np.int32)
    batches = jax.device_put((images, labels))
    programs, compile_s = {}, {}
    for key, fn, sample, run in (
        ("one step a call", train_step_fn, jax.tree.map(lambda a: a[0], batches), _stepped),
        ("16 steps a call (lax.scan)", train_steps_fn, batches, _looped),
    ):
        state = create_train_state(CNN(dtype=jnp.dtype(dtype)), adam(1e-3), images[0, :1])
        start = time.perf_counter()
        step = jax.jit(fn, donate_argnums=0, compiler_options=options).lower(state, sample).compile()
        compile_s[key] = time.perf_counter() - start
        programs[key] = run(step, state, batches)
    programs["torch"] = _torch(images, labels)
    times = {key: [] for key in programs}
    for run in programs.values():  # warm up
        run()
    for _ in range(repeats):
        for key, run in programs.items():
            start = time.perf_counter()
            run()
            times[key].append((time.perf_counter() - start) / STEPS * 1e3)
    medians = {key: statistics.median(ms) for key, ms in times.items()}
    return {"torch": medians.pop("torch"), "jax": {key: (compile_s[key], ms) for key, ms in medians.items()}}


def _stepped(step, state, batches):
    box = [state]

    def run():
        for k in range(STEPS):
            box[0], metrics = step(box[0], jax.tree.map(lambda a: a[k], batches))
        metrics["loss"].block_until_ready()

    return run


def _looped(step, state, batches):
    box = [state]

    def run():
        box[0], metrics = step(box[0], batches)
        metrics["loss"].block_until_ready()

    return run


def _torch(images, labels):
    import torch

    net = torch_side.torch_model("cnn", 28)
    optimizer = torch.optim.Adam(net.parameters(), 1e-3)
    criterion = torch.nn.CrossEntropyLoss()
    inputs = [torch_side.to_nchw(x) for x in images]
    targets = [torch_side.to_labels(y) for y in labels]

    def run():
        for x, y in zip(inputs, targets):
            torch_side.torch_step(net, optimizer, criterion, x, y)

    return run


if __name__ == "__main__":
    main()
