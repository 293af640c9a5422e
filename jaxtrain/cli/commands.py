"""``python -m jaxtrain``: flags onto the library, nothing else.

  python -m jaxtrain train --dataset digits --epochs 10 --run-dir runs/mlp
  python -m jaxtrain train --dataset folder:data/pets --model nnx-cnn --epochs 5
  python -m jaxtrain evaluate --run-dir runs/mlp --checkpoint best
  python -m jaxtrain predict --run-dir runs/mlp digit.png
  python -m jaxtrain export --run-dir runs/mlp --torch model.pt
  python -m jaxtrain plot runs/mlp -o curves.png
  python -m jaxtrain train --config runs/mlp/config.json --epochs 20   # a file's flags, the command line's over them
  python -m jaxtrain summary --model cnn --dataset digits
  python -m jaxtrain train --coordinator 10.0.0.1:1234 --num-processes 2 --process-id 0   # and 1 on the other host
  python -m jaxtrain compare parity --model cnn --optimizer adam --dtype float64 --steps 600
  python -m jaxtrain compare bench --preset feeding --dataset mnist --data-dir DIR --report bench.json
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxtrain import compare, experiment, interop
from jaxtrain.build import model_options
from jaxtrain.cli.compare import add_compare
from jaxtrain.cli.configfile import ConfigFileError
from jaxtrain.cli.flags import (
    Help, Parser, add_compile_cache, add_config, add_data, check_writable, field_defaults, from_flags, use_compile_cache,
    with_config_file,
)
from jaxtrain.cli.summary import add_summary
from jaxtrain.config import COMPUTE_DTYPES, MODELS, Config, ConfigError
from jaxtrain.parallel import devices
from jaxtrain.runs import curves
from jaxtrain.runs.folder import Run
from jaxtrain.runs.load import load_run
from jaxtrain.runs.ownership import FolderError
from jaxtrain.runs.reports import deliver, to_json, write_json
from jaxtrain.sources.download import DatasetUnavailableError
from jaxtrain.sources.files import read_images
from jaxtrain.training import feeding, optim, preemption
from jaxtrain.training.monitors import TensorBoard
from jaxtrain.training.schedules import SCHEDULES
from jaxtrain.training.evaluation import evaluate
from jaxtrain.training.step import predict


def _by_model(setting: str) -> str:
    """What a ``ModelSpec`` setting that "auto" stands for gives each model: "constant for mlp and nnx-mlp, ..."."""
    models: dict[str, list[str]] = {}
    for name, spec in MODELS.items():
        models.setdefault(str(getattr(spec, setting)), []).append(name)
    return ", ".join(f"{value} for {' and '.join(names)}" for value, names in models.items())


def _add_train(commands) -> None:
    defaults = field_defaults(Config)  # as declared: "auto" is resolved once the model is known
    p = commands.add_parser("train", help="train and evaluate a model (the primer's program)", formatter_class=Help)
    add_data(p, defaults)
    p.add_argument("--model", choices=MODELS, default=defaults.model, help="the network")
    p.add_argument("--dropout", type=float, default=defaults.dropout, metavar="P",
                   help="dropout rate in [0, 1) (default: the model's; mlp: 0, cnn: 0.25)")
    p.add_argument("--batch-norm", action=argparse.BooleanOptionalAction, default=defaults.batch_norm,
                   help="BatchNorm (torch semantics) in each hidden layer or conv block "
                   "(default: the model's; mlp: off, cnn: on)")
    p.add_argument("--dtype", choices=COMPUTE_DTYPES, default=defaults.dtype,
                   help="compute dtype; parameters and optimizer state stay float32")
    p.add_argument("--epochs", type=int, default=defaults.epochs, help="passes over the training data")
    p.add_argument("--batch-size", type=int, default=defaults.batch_size, help="examples per step")
    p.add_argument("--lr", type=float, default=defaults.lr, help="learning rate")
    p.add_argument("--optimizer", choices=optim.OPTIMIZERS, default=defaults.optimizer, help="torch.optim's and jaxtrain.training.optim's")
    p.add_argument("--momentum", type=float, default=defaults.momentum, help="SGD momentum")
    p.add_argument("--weight-decay", type=float, default=defaults.weight_decay, help="L2 (sgd, adam) or decoupled (adamw)")
    p.add_argument("--schedule", choices=("auto", *SCHEDULES), default=defaults.schedule,
                   help="learning rate per optimizer step: constant, step (StepLR), multistep (MultiStepLR), "
                   f"cosine (CosineAnnealingLR to 0), plateau (ReduceLROnPlateau on the validation loss, once per "
                   f"epoch: --factor, --patience ...); auto: {_by_model('schedule')}")
    p.add_argument("--warmup-steps", type=int, default=defaults.warmup_steps,
                   help="optimizer steps of linear warmup from lr/3 (LinearLR) before the schedule")
    p.add_argument("--step-size", type=int, default=defaults.step_size, metavar="EPOCHS",
                   help="step schedule: multiply the lr by --gamma every this many epochs")
    p.add_argument("--milestones", type=int, nargs="+", default=defaults.milestones, metavar="EPOCH",
                   help="multistep schedule: multiply the lr by --gamma at the start of each of these epochs (counted from 0)")
    p.add_argument("--gamma", type=float, default=defaults.gamma, help="step and multistep schedules: the decay factor")
    p.add_argument("--grad-accum", type=int, default=defaults.grad_accum, metavar="K",
                   help="batches whose mean gradient makes one optimizer step")
    p.add_argument("--clip-norm", type=float, default=defaults.clip_norm, metavar="X",
                   help="clip the gradient's global norm to X before each optimizer step (default: no clipping)")
    p.add_argument("--seed", type=int, default=defaults.seed, help="seeds the initialization, dropout and the batch order")
    p.add_argument("--steps-per-call", type=_steps_per_call, default=defaults.steps_per_call,
                   help=f"optimizer steps per compiled call: K, 'epoch', or 'auto', measured per backend and model "
                   f"(docs/performance.md): {feeding.summary()}")
    p.add_argument("--data-on-device", action=argparse.BooleanOptionalAction, default=defaults.data_on_device,
                   help="keep the training set on the device (default: when it takes under a quarter of its memory)")
    p.add_argument("--val-fraction", type=float, default=defaults.val_fraction, metavar="F",
                   help="hold this fraction of the training data out for validation, reported each epoch; "
                   "the best checkpoint is then chosen by validation accuracy")
    s = p.add_argument_group("stopping and the plateau schedule", "checked once per epoch, on the host")
    s.add_argument("--early-stopping", type=int, default=defaults.early_stopping, metavar="N",
                   help="stop once the validation loss has not improved for N epochs, ending on the best epoch's "
                   "state (needs --val-fraction)")
    s.add_argument("--stop-at-accuracy", type=float, default=defaults.stop_at_accuracy, metavar="A",
                   help="stop after the first epoch whose test accuracy reaches A (in (0, 1]); the report gives "
                   "time_to_accuracy_seconds, from the process's start, and epochs_to_accuracy")
    s.add_argument("--factor", type=float, default=defaults.factor,
                   help="--schedule plateau (torch's ReduceLROnPlateau on the validation loss): the decay")
    s.add_argument("--patience", type=int, default=defaults.patience, metavar="EPOCHS",
                   help="plateau: epochs without improvement before the lr decays")
    s.add_argument("--threshold", type=float, default=defaults.threshold,
                   help="plateau: the least relative improvement that counts")
    s.add_argument("--cooldown", type=int, default=defaults.cooldown, metavar="EPOCHS",
                   help="plateau: epochs after a decay before bad epochs count again")
    s.add_argument("--min-lr", type=float, default=defaults.min_lr, help="plateau: the lowest learning rate")
    p.add_argument("--devices", type=int, default=defaults.devices, metavar="N",
                   help="train data-parallel on the first N devices of each process (default: all of them); "
                   "--batch-size is the global batch, split over them")
    d = p.add_argument_group("several machines", "one process per machine, all with the same flags but --process-id "
                             "(default: one process, or what an srun/mpirun/indexed-Job launcher sets up)")
    d.add_argument("--coordinator", default=None, metavar="HOST:PORT", help="where process 0 listens")
    d.add_argument("--num-processes", type=int, default=None, metavar="N", help="the processes of the run")
    d.add_argument("--process-id", type=int, default=None, metavar="I", help="this process, 0 to N-1")
    d.add_argument("--init-timeout", type=int, default=_default(devices.initialize, "timeout"), metavar="SECONDS",
                   help="how long to wait for the coordinator and for every process to join")
    p.add_argument("--report", type=Path, default=None, help="write the run's report as JSON here (process 0)")
    _add_run_folder(p)
    add_compile_cache(p)
    add_config(p, Config)
    p.set_defaults(handler=_train)


def _default(function: Callable, name: str) -> Any:
    """The default of ``function``'s argument ``name``: the library's, which its flag shows and passes on."""
    return inspect.signature(function).parameters[name].default


def _add_run_folder(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run-dir", type=Path, default=None, metavar="DIR",
                   help="keep the run in DIR: config.json, metrics.jsonl, checkpoints/ and report.json")
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its latest checkpoint")
    p.add_argument("--checkpoint-seconds", type=float, default=_default(Run, "checkpoint_seconds"), metavar="S",
                   help="checkpoint at an epoch's end at most once every S seconds (and always at the run's end)")
    p.add_argument("--checkpoint-every", type=int, default=None, metavar="N",
                   help="also checkpoint every N steps of an epoch (default: at epochs' ends only)")
    p.add_argument("--keep", type=int, default=_default(Run, "keep"), metavar="K", help="the latest checkpoints kept, besides the best")
    p.add_argument("--log-every", type=int, default=None, metavar="N",
                   help="also log the mean loss of every N steps to metrics.jsonl (default: per epoch only)")
    p.add_argument("--tensorboard", action="store_true",
                   help="write TensorBoard events into DIR/tensorboard as the run goes, each epoch's (tensorboardX)")


def _train(args: argparse.Namespace) -> None:
    config = from_flags(Config, args)
    check_writable(args.report)
    flags = {"--coordinator": args.coordinator, "--num-processes": args.num_processes, "--process-id": args.process_id}
    missing = [flag for flag, value in flags.items() if value is None]
    if 0 < len(missing) < len(flags):
        raise ValueError(f"{missing[0]} is missing; expected --coordinator, --num-processes and --process-id together")
    run_flags = {"--resume": args.resume, "--checkpoint-every": args.checkpoint_every, "--log-every": args.log_every,
                 "--tensorboard": args.tensorboard}
    if args.run_dir is None and any(run_flags.values()):
        flag = next(name for name, value in run_flags.items() if value)
        raise ValueError(f"{flag} without --run-dir: expected --run-dir DIR, where the run is kept")
    devices.initialize(args.coordinator, args.num_processes, args.process_id, timeout=args.init_timeout)
    folder = args.run_dir and Run(
        args.run_dir, resume=args.resume, keep=args.keep, checkpoint_seconds=args.checkpoint_seconds,
        checkpoint_every=args.checkpoint_every, log_every=args.log_every,
    )
    live = [TensorBoard(args.run_dir / "tensorboard")] if args.tensorboard else []
    report = experiment.run(config, folder=folder, callbacks=live)
    if args.report and devices.is_main_process():  # a full disk now: the report goes where the error says
        deliver(report, args.report, "--report", copy=args.run_dir and args.run_dir / "report.json")


def _steps_per_call(text: str) -> int | str:
    if text in ("auto", "epoch"):
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}; expected a positive integer, 'epoch' or 'auto'") from None


def _add_use(commands) -> None:
    """The commands that put a trained run to use: evaluate, predict, export, plot."""
    checkpoint = dict(default="latest", metavar="WHICH", type=_checkpoint,
                      help="latest, best (by validation accuracy, else test accuracy) or a checkpoint's step")
    p = commands.add_parser("evaluate", help="the saved model's test loss and accuracy", formatter_class=Help)
    p.add_argument("--run-dir", type=Path, required=True, metavar="DIR", help="a run folder (train --run-dir)")
    p.add_argument("--checkpoint", **checkpoint)
    p.add_argument("--dataset", default=None, metavar="NAME", help="evaluate on this dataset (default: the run's), as train --dataset")
    p.add_argument("--data-dir", default=None, help="its IDX or tensorflow-datasets folder (default: the run's)")
    p.add_argument("--top-k", type=_positive, default=None, metavar="K",
                   help="also give the top-K accuracy: the label among the K highest scores")
    p.add_argument("--report", type=Path, default=None,
                   help="write the result as JSON here, with the confusion matrix (rows: true classes, columns: predicted)")
    add_compile_cache(p)
    p.set_defaults(handler=_evaluate)

    p = commands.add_parser("predict", help="classify image files (PNG, JPEG, .npy) with a saved model", formatter_class=Help)
    p.add_argument("--run-dir", type=Path, required=True, metavar="DIR", help="a run folder (train --run-dir)")
    p.add_argument("--checkpoint", **checkpoint)
    p.add_argument("--json", action="store_true", help="print JSON instead of a line per image")
    p.add_argument("files", type=Path, nargs="+", metavar="FILE", help="images, resized and converted as the training data was")
    add_compile_cache(p)
    p.set_defaults(handler=_predict)

    p = commands.add_parser("export", help="write the saved model as a PyTorch state_dict", formatter_class=Help)
    p.add_argument("--run-dir", type=Path, required=True, metavar="DIR", help="a run folder (train --run-dir)")
    p.add_argument("--checkpoint", **checkpoint)
    p.add_argument("--torch", type=Path, required=True, metavar="FILE",
                   help="the .pt file: torch.load it into the primer's MyModel or jaxtrain's torch CNN")
    p.set_defaults(handler=_export)

    p = commands.add_parser("plot", help="draw the loss and accuracy curves of run folders", formatter_class=Help)
    p.add_argument("run_dirs", type=Path, nargs="+", metavar="DIR", help="run folders (train --run-dir)")
    p.add_argument("-o", "--output", type=Path, default=Path("curves.png"), help="the PNG to write")
    p.add_argument("--tensorboard", action="store_true", help="also write TensorBoard events into DIR/tensorboard (tensorboardX)")
    p.set_defaults(handler=_plot)


def _positive(text: str) -> int:
    if text.isdigit() and int(text) > 0:
        return int(text)
    raise argparse.ArgumentTypeError(f"{text!r}; expected a positive integer")


def _checkpoint(text: str) -> int | str:
    if text in ("latest", "best") or text.isdigit():
        return int(text) if text.isdigit() else text
    raise argparse.ArgumentTypeError(f"{text!r}; expected latest, best or a checkpoint's step")


def _evaluate(args: argparse.Namespace) -> None:
    check_writable(args.report)
    state, config = load_run(args.run_dir, args.checkpoint)
    if not args.dataset and json.loads((args.run_dir / "config.json").read_text()).get("dataset", "") is None:
        raise ConfigError("dataset", None, f"the data to evaluate on: {args.run_dir} was made by fit from Python, "
                          f"which does not record its dataset")
    if args.dataset or args.data_dir:
        data = {"dataset": args.dataset or config.dataset, "data_dir": args.data_dir}
        config = dataclasses.replace(config, **data)
    test = experiment.loaders(config)["test"]
    shape, trained = test.gather(np.arange(1))[0].shape[1:], json.loads((args.run_dir / "config.json").read_text())["input_shape"]
    if list(shape) != list(trained):  # the model would fail deep inside Flax, in tens of lines
        raise ValueError(f"dataset {config.dataset}: images of shape {tuple(shape)}; expected {tuple(trained)}, "
                         f"the input of the model in {args.run_dir}")
    top_k = f"top{args.top_k}_accuracy" if args.top_k else None
    result = evaluate(state, test, metrics=("confusion_matrix", *([top_k] if top_k else [])))
    top = f", top-{args.top_k} accuracy {100 * result[top_k]:.2f}%" if top_k else ""
    print(f"{config.dataset} test set, {result['count']} images: loss {result['loss']:.4f}, accuracy {100 * result['accuracy']:.2f}%{top}")
    if args.report:
        names = json.loads((args.run_dir / "config.json").read_text()).get("class_names")
        result["confusion_matrix"] = result["confusion_matrix"].tolist()
        write_json(args.report, {"run_dir": str(args.run_dir), "checkpoint": args.checkpoint, "dataset": config.dataset,
                                 "step": int(state.step), **result, **({"class_names": names} if names else {})})


def _predict(args: argparse.Namespace) -> None:
    state, _ = load_run(args.run_dir, args.checkpoint)
    settings = json.loads((args.run_dir / "config.json").read_text())
    shape, names = settings["input_shape"], settings.get("class_names")
    probabilities = np.asarray(predict(state, read_images(args.files, tuple(shape))))
    files = [str(f) for f in args.files for _ in range(1 if f.suffix.lower() != ".npy" else len(np.load(f).reshape(-1, *shape)))]
    rows = [{"file": f, "class": int(p.argmax()), "probability": float(p.max())} for f, p in zip(files, probabilities)]
    if names:  # the class folders' (or the dataset's) names, by label
        rows = [{**row, "name": names[row["class"]]} for row in rows]
    if args.json:
        print(to_json(rows, indent=2))
    for row in rows if not args.json else []:
        print(f"{row['file']}: {row.get('name', row['class'])} ({row['probability']:.3f})")


def _export(args: argparse.Namespace) -> None:
    import torch

    check_writable(args.torch, "--torch")
    state, config = load_run(args.run_dir, args.checkpoint)
    settings = json.loads((args.run_dir / "config.json").read_text())
    (height, width, channels), num_classes = settings["input_shape"], settings.get("num_classes", 10)
    dropout = model_options(config)["dropout"]
    net = compare.torch_model(config.model, (height, width), dropout=dropout, channels=channels, num_classes=num_classes)
    flatten = compare.flatten_shape(config.model, (height, width, channels))
    module = interop.to_torch(jax.device_get(state.variables), net, flatten)
    torch.save(module.state_dict(), args.torch)
    print(f"{args.torch}: the {config.model} of {args.run_dir} at step {int(state.step)}, as a torch state_dict")


def _plot(args: argparse.Namespace) -> None:
    if args.output.suffix.lower() != ".png":
        raise ValueError(f"-o {args.output}: expected a .png file")
    check_writable(args.output, "-o")
    for folder in args.run_dirs:
        curves.read_metrics(folder)  # every folder readable before any drawing
    curves.plot_runs(args.run_dirs, args.output)
    if args.tensorboard:
        for folder in args.run_dirs:
            print(f"{curves.write_tensorboard(folder)}: TensorBoard events")


def _command(args: argparse.Namespace) -> str:
    """The command's words: "train", "compare parity"."""
    return " ".join(word for word in (args.command, getattr(args, "study", None)) if word)


def _message(error: Exception) -> str:
    """An error as the user should read it: a configuration field by the flag that sets it."""
    return error.by_flag() if isinstance(error, ConfigError) else str(error)


def parser() -> argparse.ArgumentParser:
    """The command line's parser: every command and flag."""
    parser = Parser(prog="jaxtrain", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (or set JAXTRAIN_DEBUG=1)")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    _add_train(commands)
    _add_use(commands)
    add_compare(commands)
    add_summary(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        args = with_config_file(parser, argv, args)  # --config FILE: its values under the command line's
        if "compile_cache" in args:
            use_compile_cache(args)
        args.handler(args)
    except (ValueError, OSError, ImportError, ArithmeticError, DatasetUnavailableError) as error:
        if args.debug or os.environ.get("JAXTRAIN_DEBUG"):
            traceback.print_exc()
        print(f"jaxtrain {_command(args)}: error: {_message(error)}", file=sys.stderr)
        return 2 if isinstance(error, ConfigError | ConfigFileError | FolderError) else 1  # a bad setting: 2
    except KeyboardInterrupt:
        print(f"jaxtrain {_command(args)}: interrupted", file=sys.stderr)
        return 130
    except preemption.Preempted as notice:  # a checkpoint is saved: not an error
        print(f"jaxtrain {_command(args)}: {notice}", file=sys.stderr)
        return preemption.EXIT_CODE
    except Exception as error:  # unforeseen: still one line, the traceback on request
        if args.debug or os.environ.get("JAXTRAIN_DEBUG"):
            traceback.print_exc()
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        print(f"jaxtrain {_command(args)}: error: {type(error).__name__}: {first} (--debug shows where)", file=sys.stderr)
        return 1
    return 0
