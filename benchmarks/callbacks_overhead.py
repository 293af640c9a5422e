"""What a per-epoch callback costs ``fit``: the MLP on MNIST, epochs per second without callbacks and with one
``LambdaCallback`` at each epoch's end.

    python benchmarks/callbacks_overhead.py --data-dir DIR [--epochs 3] [--repeats 5] [--batch-size 32]

The training set is device-resident and fed as the CLI feeds the MLP by default (``jaxtrain.training.feeding``: a whole
epoch per compiled call on the CPU). Every call is compiled first (``compile_fit``), and a warm-up ``fit``
runs each variant once. Then the two variants alternate, ``--repeats`` times each, each one a ``fit`` of
``--epochs`` epochs that continues the previous state, so that a change in the machine's speed touches
both; the table gives the median epochs per second of each and their ratio. The callback reads the epoch's
record, already on the host: it adds a Python call per epoch and no host sync.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax

from jaxtrain import MLP, ArrayDataset, DataLoader, LambdaCallback, adam, compile_fit, create_train_state, fit, load_mnist
from jaxtrain.training import feeding


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="MNIST's IDX files (default: the copy downloaded once)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per measured fit")
    parser.add_argument("--repeats", type=int, default=5, help="measured fits per variant, alternating")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    images, labels = load_mnist("train", args.data_dir)
    loader = DataLoader(ArrayDataset(images, labels), args.batch_size, shuffle=True, seed=0)
    mode = feeding.resolve("auto", True, "mlp", jax.default_backend(), len(loader), fits=True).settings()
    state = create_train_state(MLP(), adam(1e-3), images[:1])
    compile_fit(state, loader, **mode)

    seen = []
    variants = {
        "no callbacks": [],
        "one per-epoch LambdaCallback": [LambdaCallback(on_epoch_end=lambda context: seen.append(context.record["train_loss"]))],
    }
    rates = {name: [] for name in variants}
    for repeat in range(args.repeats + 1):  # the first round warms up, unmeasured
        for name, callbacks in variants.items():
            start = time.perf_counter()
            state, _ = fit(state, loader, args.epochs, log=None, callbacks=callbacks, **mode)
            seconds = time.perf_counter() - start  # fit has read each epoch's loss: the work is done
            if repeat:
                rates[name].append(args.epochs / seconds)

    print(f"MLP on MNIST, {len(images)} examples, batch {args.batch_size}, {mode}, backend {jax.default_backend()}")
    print(f"median of {args.repeats} fits of {args.epochs} epochs each, alternating")
    print("| callbacks | epochs/s (median) | all |")
    print("| --- | --- | --- |")
    for name, values in rates.items():
        print(f"| {name} | {statistics.median(values):.3f} | {', '.join(f'{v:.3f}' for v in values)} |")
    base, with_one = (statistics.median(rates[name]) for name in variants)
    print(f"ratio (with / without): {with_one / base:.3f}")
    assert len(seen) == (args.repeats + 1) * args.epochs  # the callback ran once an epoch


if __name__ == "__main__":
    main()
