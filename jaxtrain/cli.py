"""``python -m jaxtrain``: flags onto the library, nothing else.

  python -m jaxtrain train --dataset digits --epochs 10 --report out.json
  python -m jaxtrain train --coordinator 10.0.0.1:1234 --num-processes 2 --process-id 0   # and 1 on the other host
  python -m jaxtrain compare parity --model cnn --optimizer adam --dtype float64 --steps 600
  python -m jaxtrain compare bench --preset feeding --dataset mnist --data-dir DIR --report bench.json
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import traceback
from pathlib import Path

import jax

from jaxtrain import compare, devices, experiment, optim
from jaxtrain.datasets import DatasetUnavailableError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        """Bad flags: one line naming the value, no usage dump (``--help`` has it)."""
        self.exit(2, f"{self.prog}: error: {message}\n")


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's default where there is one to show: not for switches, nor for None, whose meaning the
    help text gives."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
            return action.help
        return super()._get_help_string(action)


def _add_data(p: argparse.ArgumentParser, defaults) -> None:
    p.add_argument("--dataset", choices=experiment.DATASETS, default=defaults.dataset, help="the training data")
    p.add_argument("--data-dir", default=None,
                   help="mnist: a folder with its IDX files (default: read through tensorflow-datasets)")


def _add_train(commands) -> None:
    defaults = experiment.Config()
    p = commands.add_parser("train", help="train and evaluate a model (the primer's program)", formatter_class=_Help)
    _add_data(p, defaults)
    p.add_argument("--model", choices=experiment.MODELS, default=defaults.model, help="the network")
    p.add_argument("--dropout", type=float, default=defaults.dropout, metavar="P",
                   help="dropout rate in [0, 1) (default: the model's; mlp: 0, cnn: 0.25)")
    p.add_argument("--batch-norm", action=argparse.BooleanOptionalAction, default=defaults.batch_norm,
                   help="BatchNorm (torch semantics) in each hidden layer or conv block "
                   "(default: the model's; mlp: off, cnn: on)")
    p.add_argument("--dtype", choices=experiment.COMPUTE_DTYPES, default=defaults.dtype,
                   help="compute dtype; parameters and optimizer state stay float32")
    p.add_argument("--epochs", type=int, default=defaults.epochs, help="passes over the training data")
    p.add_argument("--batch-size", type=int, default=defaults.batch_size, help="examples per step")
    p.add_argument("--lr", type=float, default=defaults.lr, help="learning rate")
    p.add_argument("--optimizer", choices=optim.OPTIMIZERS, default=defaults.optimizer, help="torch.optim's and jaxtrain.optim's")
    p.add_argument("--momentum", type=float, default=defaults.momentum, help="SGD momentum")
    p.add_argument("--weight-decay", type=float, default=defaults.weight_decay, help="L2 (sgd, adam) or decoupled (adamw)")
    p.add_argument("--schedule", choices=("auto", *optim.SCHEDULES), default=defaults.schedule,
                   help="learning rate per optimizer step: constant, step (StepLR), multistep (MultiStepLR), "
                   "cosine (CosineAnnealingLR to 0); auto: constant for the mlp, cosine for the cnn")
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
                   help="optimizer steps per compiled call: K, 'epoch', or 'auto' (the measured default for the model)")
    p.add_argument("--data-on-device", action=argparse.BooleanOptionalAction, default=defaults.data_on_device,
                   help="keep the training set on the device (default: when it takes under a quarter of its memory)")
    p.add_argument("--devices", type=int, default=defaults.devices, metavar="N",
                   help="train data-parallel on the first N devices of each process (default: all of them); "
                   "--batch-size is the global batch, split over them")
    d = p.add_argument_group("several machines", "one process per machine, all with the same flags but --process-id "
                             "(default: one process, or what an srun/mpirun/indexed-Job launcher sets up)")
    d.add_argument("--coordinator", default=None, metavar="HOST:PORT", help="where process 0 listens")
    d.add_argument("--num-processes", type=int, default=None, metavar="N", help="the processes of the run")
    d.add_argument("--process-id", type=int, default=None, metavar="I", help="this process, 0 to N-1")
    d.add_argument("--init-timeout", type=int, default=120, metavar="SECONDS",
                   help="how long to wait for the coordinator and for every process to join")
    p.add_argument("--report", type=Path, default=None, help="write the run's report as JSON here (process 0)")
    p.set_defaults(handler=_train)


def _train(args: argparse.Namespace) -> None:
    config = _from_flags(experiment.Config, args)
    _check_writable(args.report)
    flags = {"--coordinator": args.coordinator, "--num-processes": args.num_processes, "--process-id": args.process_id}
    missing = [flag for flag, value in flags.items() if value is None]
    if 0 < len(missing) < len(flags):
        raise ValueError(f"{missing[0]} is missing; expected --coordinator, --num-processes and --process-id together")
    devices.initialize(args.coordinator, args.num_processes, args.process_id, timeout=args.init_timeout)
    report = experiment.run(config)
    if args.report and devices.is_main_process():
        experiment.write_json(args.report, report)


def _steps_per_call(text: str) -> int | str:
    if text in ("auto", "epoch"):
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}; expected a positive integer, 'epoch' or 'auto'") from None


def _add_compare(commands) -> None:
    parser = commands.add_parser("compare", help="the PyTorch program beside jaxtrain's: parity and benchmarks")
    studies = parser.add_subparsers(dest="study", required=True, parser_class=_Parser)
    defaults = compare.ParityConfig()

    p = studies.add_parser(
        "parity", formatter_class=_Help,
        help="train in PyTorch and in jaxtrain from the same weights on the same batches; report the differences",
    )
    p.add_argument("--model", choices=experiment.MODELS, default=defaults.model, help="the network (dropout off)")
    p.add_argument("--optimizer", choices=optim.OPTIMIZERS, default=defaults.optimizer, help="torch.optim's and jaxtrain.optim's")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: 1e-3 for adam and adamw, 1e-2 for sgd)")
    p.add_argument("--momentum", type=float, default=defaults.momentum, help="sgd")
    p.add_argument("--dampening", type=float, default=defaults.dampening, help="sgd")
    p.add_argument("--nesterov", action="store_true", help="sgd: Nesterov momentum")
    p.add_argument("--weight-decay", type=float, default=None, help="default: the optimizer's (1e-2 for adamw, else 0)")
    p.add_argument("--betas", type=float, nargs=2, default=defaults.betas, metavar=("B1", "B2"), help="adam, adamw")
    p.add_argument("--eps", type=float, default=defaults.eps, help="adam, adamw")
    p.add_argument("--dtype", choices=compare.PARITY_DTYPES, default=defaults.dtype, help="both frameworks' dtype")
    p.add_argument("--steps", type=int, default=defaults.steps, help="optimizer steps, epoch after epoch")
    _add_data(p, defaults)
    p.add_argument("--batch-size", type=int, default=defaults.batch_size, help="examples per step")
    p.add_argument("--seed", type=int, default=defaults.seed, help="seeds torch's initialization and the batch order")
    p.add_argument("--float64-reference", action="store_true",
                   help="float32 only: also train torch in float64, and report each side's distance from it")
    p.add_argument("--report", type=Path, default=None, help="write the report as JSON here")
    p.set_defaults(handler=_parity)

    config = experiment.Config()
    b = studies.add_parser(
        "bench", formatter_class=_Help,
        help="time the primer's PyTorch program and jaxtrain's on the same data, each in its own process",
    )
    b.add_argument("--preset", choices=compare.PRESETS, default="frameworks",
                   help="frameworks: the PyTorch variants beside jaxtrain's defaults; "
                   "feeding: jaxtrain's feeding modes beside the primer and a hand-written lax.scan epoch")
    b.add_argument("--programs", choices=compare.PROGRAMS, nargs="+", default=None, metavar="PROGRAM",
                   help=f"the programs to time instead of the preset's: {', '.join(compare.PROGRAMS)}")
    b.add_argument("--models", choices=experiment.MODELS, nargs="+", default=["mlp"], help="the networks to time")
    _add_data(b, config)
    b.add_argument("--epochs", type=int, default=5, help="passes over the training data; samples/s is the median after the first")
    b.add_argument("--batch-sizes", type=int, nargs="+", default=[config.batch_size], metavar="B", help="the batch sizes to sweep")
    b.add_argument("--lr", type=float, default=config.lr, help="Adam's learning rate")
    b.add_argument("--seed", type=int, default=config.seed, help="seeds both frameworks")
    b.add_argument("--report", type=Path, default=None, help="write the results as JSON here")
    b.add_argument("--plot", type=Path, default=None, help="draw test accuracy per epoch and samples/s by batch size into this PNG")
    b.set_defaults(handler=_bench)


def _parity(args: argparse.Namespace) -> None:
    config = _from_flags(compare.ParityConfig, args)
    _check_writable(args.report)
    if config.dtype == "float64":
        # 64-bit JAX for the whole process: the float64 proof of equivalence needs float64 everywhere.
        jax.config.update("jax_enable_x64", True)
    report = compare.parity(config)
    if args.report:
        experiment.write_json(args.report, report)


def _bench(args: argparse.Namespace) -> None:
    config = _from_flags(experiment.Config, args)
    programs = args.programs or compare.PRESETS[args.preset]
    compare.bench_check(config, args.models, programs)
    _check_writable(args.report)
    _check_writable(args.plot, "--plot")
    if args.plot is not None and args.plot.suffix.lower() != ".png":
        raise ValueError(f"--plot {args.plot}: expected a .png file")
    result = compare.bench(config, models=args.models, programs=programs, batch_sizes=args.batch_sizes, log=None)
    print(compare.format_bench(result))
    if args.report:
        experiment.write_json(args.report, result)
    if args.plot:
        compare.plot_bench(result, args.plot)


def _from_flags(config_type: type, args: argparse.Namespace):
    """The dataclass ``config_type`` with the flags that name its fields."""
    fields = {f.name for f in dataclasses.fields(config_type)}
    return config_type(**{k: v for k, v in vars(args).items() if k in fields})


def _check_writable(path: Path | None, flag: str = "--report") -> None:
    """Fails before any work when a report could not be written afterwards."""
    if path is not None and not path.parent.resolve().is_dir():
        raise FileNotFoundError(f"{flag} {path}: folder {path.parent} does not exist")


def _command(args: argparse.Namespace) -> str:
    """The command's words: "train", "compare parity"."""
    return " ".join(word for word in (args.command, getattr(args, "study", None)) if word)


def _message(error: Exception) -> str:
    """An error as the user should read it: a configuration field by the flag that sets it."""
    if isinstance(error, experiment.ConfigError):
        return f"{error.field.replace('_', ' ')} {error.value!r} (--{error.field.replace('_', '-')}): expected {error.expected}"
    return str(error)


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="jaxtrain", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (or set JAXTRAIN_DEBUG=1)")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_train(commands)
    _add_compare(commands)
    args = parser.parse_args(argv)
    try:
        args.handler(args)
    except (ValueError, OSError, ImportError, DatasetUnavailableError) as error:
        if args.debug or os.environ.get("JAXTRAIN_DEBUG"):
            traceback.print_exc()
        print(f"jaxtrain {_command(args)}: error: {_message(error)}", file=sys.stderr)
        return 2 if isinstance(error, experiment.ConfigError) else 1
    except KeyboardInterrupt:
        print(f"jaxtrain {_command(args)}: interrupted", file=sys.stderr)
        return 130
    return 0
