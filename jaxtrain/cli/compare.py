"""``python -m jaxtrain compare``: the study's flags onto ``jaxtrain.compare``: parity, the benchmark and the
whole job."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax

from jaxtrain import compare
from jaxtrain.runs.reports import write_json
from jaxtrain.training import optim
from jaxtrain.config import MODELS, Config, ConfigError
from jaxtrain.cli.flags import Help, Parser, add_data, check_writable, field_defaults, from_flags


def add_compare(commands) -> None:
    parser = commands.add_parser("compare", help="the PyTorch program beside jaxtrain's: parity, benchmarks and the whole job")
    studies = parser.add_subparsers(dest="study", required=True, parser_class=Parser)
    defaults = field_defaults(compare.ParityConfig)

    p = studies.add_parser(
        "parity", formatter_class=Help,
        help="train in PyTorch and in jaxtrain from the same weights on the same batches; report the differences",
    )
    p.add_argument("--model", choices=MODELS, default=defaults.model, help="the network (dropout off)")
    p.add_argument("--optimizer", choices=optim.OPTIMIZERS, default=defaults.optimizer, help="torch.optim's and jaxtrain.training.optim's")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: 1e-3 for adam and adamw, 1e-2 for sgd)")
    p.add_argument("--momentum", type=float, default=defaults.momentum, help="sgd")
    p.add_argument("--dampening", type=float, default=defaults.dampening, help="sgd")
    p.add_argument("--nesterov", action="store_true", help="sgd: Nesterov momentum")
    p.add_argument("--weight-decay", type=float, default=None, help="default: the optimizer's (1e-2 for adamw, else 0)")
    p.add_argument("--betas", type=float, nargs=2, default=defaults.betas, metavar=("B1", "B2"), help="adam, adamw")
    p.add_argument("--eps", type=float, default=defaults.eps, help="adam, adamw")
    p.add_argument("--dtype", choices=compare.PARITY_DTYPES, default=defaults.dtype, help="both frameworks' dtype")
    p.add_argument("--steps", type=int, default=defaults.steps, help="optimizer steps, epoch after epoch")
    add_data(p, defaults)
    p.add_argument("--batch-size", type=int, default=defaults.batch_size, help="examples per step")
    p.add_argument("--seed", type=int, default=defaults.seed, help="seeds torch's initialization and the batch order")
    p.add_argument("--float64-reference", action="store_true",
                   help="float32 only: also train torch in float64, and report each side's distance from it")
    p.add_argument("--report", type=Path, default=None, help="write the report as JSON here")
    p.set_defaults(handler=_parity)

    config = field_defaults(Config)
    b = studies.add_parser(
        "bench", formatter_class=Help,
        help="time the primer's PyTorch program and jaxtrain's on the same data, each in its own process",
    )
    b.add_argument("--preset", choices=compare.PRESETS, default="frameworks",
                   help="frameworks: the PyTorch variants beside jaxtrain's defaults; "
                   "feeding: jaxtrain's feeding modes beside the primer and a hand-written lax.scan epoch")
    b.add_argument("--programs", choices=compare.PROGRAMS, nargs="+", default=None, metavar="PROGRAM",
                   help=f"the programs to time instead of the preset's: {', '.join(compare.PROGRAMS)}")
    b.add_argument("--models", choices=MODELS, nargs="+", default=["mlp"], help="the networks to time")
    add_data(b, config)
    b.add_argument("--epochs", type=int, default=5, help="passes over the training data; samples/s is the median after the first")
    b.add_argument("--batch-sizes", type=int, nargs="+", default=[config.batch_size], metavar="B", help="the batch sizes to sweep")
    b.add_argument("--lr", type=float, default=config.lr, help="Adam's learning rate")
    b.add_argument("--seed", type=int, default=config.seed, help="seeds both frameworks")
    b.add_argument("--report", type=Path, default=None, help="write the results as JSON here")
    b.add_argument("--plot", type=Path, default=None, help="draw test accuracy per epoch and samples/s by batch size into this PNG")
    b.set_defaults(handler=_bench)

    j = studies.add_parser(
        "job", formatter_class=Help,
        help="time the whole job, a fresh process from its start to the printed accuracy: jaxtrain's CLI with a cold "
        "and a warm compilation cache beside the primer's PyTorch program",
    )
    j.add_argument("--models", choices=compare.JOB_EPOCHS, nargs="+", default=list(compare.JOB_EPOCHS),
                   help="the jobs: " + ", ".join(f"{m} for {e} epochs" for m, e in compare.JOB_EPOCHS.items()))
    add_data(j, config)
    j.add_argument("--epochs", type=int, default=None, help="the epochs of every job (default: each model's, as --models says)")
    j.add_argument("--repeats", type=int, default=3, help="rounds of the three programs, one process after another; the table holds medians")
    j.add_argument("--targets", nargs="+", default=[], metavar="MODEL=ACCURACY", type=_target,
                   help="time to this test accuracy (default: " + ", ".join(f"{m}={t}" for m, t in compare.JOB_TARGETS.items()) + ")")
    j.add_argument("--seed", type=int, default=config.seed, help="seeds both frameworks")
    j.add_argument("--report", type=Path, default=None, help="write the results as JSON here")
    j.set_defaults(handler=_job)


def _parity(args: argparse.Namespace) -> None:
    config = from_flags(compare.ParityConfig, args)
    check_writable(args.report)
    if config.dtype == "float64":
        # 64-bit JAX for the whole process: the float64 proof of equivalence needs float64 everywhere.
        jax.config.update("jax_enable_x64", True)
    report = compare.parity(config)
    if args.report:
        write_json(args.report, report)


def _bench(args: argparse.Namespace) -> None:
    config = from_flags(Config, args)
    programs = args.programs or compare.PRESETS[args.preset]
    compare.bench_check(config, args.models, programs)
    check_writable(args.report)
    check_writable(args.plot, "--plot")
    if args.plot is not None and args.plot.suffix.lower() != ".png":
        raise ValueError(f"--plot {args.plot}: expected a .png file")
    result = compare.bench(config, models=args.models, programs=programs, batch_sizes=args.batch_sizes, log=_progress)
    print(compare.format_bench(result))
    if args.report:
        write_json(args.report, result)
    if args.plot:
        compare.plot_bench(result, args.plot)


def _progress(line: str) -> None:
    """Each measurement as it starts and ends, on stderr: a long benchmark says where it is."""
    print(line, file=sys.stderr, flush=True)


def _target(text: str) -> tuple[str, float]:
    model, _, accuracy = text.partition("=")
    try:
        return model, float(accuracy)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}; expected MODEL=ACCURACY, e.g. mlp=0.965") from None


def _job(args: argparse.Namespace) -> None:
    config = Config(dataset=args.dataset, data_dir=args.data_dir, seed=args.seed)
    if args.epochs is not None and args.epochs < 1:
        raise ConfigError("epochs", args.epochs, "a positive integer")
    targets = dict(args.targets)
    compare.job_check(args.models, args.repeats, {**compare.JOB_TARGETS, **targets})
    check_writable(args.report)
    result = compare.job(config, args.models, args.epochs, args.repeats, targets, log=_progress)
    print(compare.format_job(result))
    if args.report:
        write_json(args.report, result)
