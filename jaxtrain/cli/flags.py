"""The command line's shared pieces: a parser that errs in one line, a help formatter with true defaults,
the data flags, the compilation cache's flags, ``--config FILE`` (``jaxtrain.cli.configfile``), and flags onto a
configuration dataclass (``jaxtrain.cli.commands``, ``jaxtrain.cli.compare``)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
from collections.abc import Callable
from pathlib import Path

from jaxtrain.cli import configfile
from jaxtrain.parallel import compiler
from jaxtrain.runs import reports


class Parser(argparse.ArgumentParser):
    def error(self, message: str):
        """Bad flags: one line naming the value, no usage dump (``--help`` has it)."""
        self.exit(2, f"{self.prog}: error: {message}\n")


class Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's default where there is one to show: not for switches, nor for None, whose meaning the
    help text gives."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
            return action.help
        return super()._get_help_string(action)


def add_data(p: argparse.ArgumentParser, defaults) -> None:
    p.add_argument("--dataset", default=defaults.dataset, metavar="NAME",
                   help="the training data: mnist, digits, a tensorflow-datasets image-classification name "
                   "(fashion_mnist, cifar10, ...), folder:PATH (PATH/train/<class>/*.png and PATH/test/<class>/*.png, "
                   "or PATH/<class>/*.png) or npz:FILE (x_train, y_train, x_test, y_test)")
    p.add_argument("--data-dir", default=None,
                   help="mnist: a folder with its IDX files (default: downloaded once into $JAXTRAIN_DATA/mnist, "
                   "else $XDG_CACHE_HOME/jaxtrain/datasets/mnist or ~/.cache/jaxtrain/datasets/mnist); "
                   "another tensorflow-datasets name: its data folder")


def add_compile_cache(p: argparse.ArgumentParser) -> None:
    p.add_argument("--compile-cache", type=Path, default=None, metavar="DIR",
                   help="keep compiled programs in DIR, so that the next run of the same programs loads them "
                   "instead of compiling (default: $JAXTRAIN_COMPILE_CACHE, else $XDG_CACHE_HOME/jaxtrain/xla or "
                   "~/.cache/jaxtrain/xla)")
    p.add_argument("--no-compile-cache", dest="compile_cache", action="store_false",
                   help="compile every program afresh and keep none")


def use_compile_cache(args: argparse.Namespace) -> None:
    """Turns the compilation cache on as the flags say. A folder given with --compile-cache must be usable;
    where the default one cannot be made, the run goes on without a cache and says so in one line."""
    if args.compile_cache is False:
        compiler.cache_compilations(None)
        return
    folder = args.compile_cache or compiler.default_cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        if args.compile_cache:
            raise OSError(f"--compile-cache {folder}: {error.strerror}; expected a folder that can be written") from error
        print(f"jaxtrain: no compilation cache ({folder}: {error.strerror})", file=sys.stderr)
        return
    compiler.cache_compilations(folder)


def add_config(p: argparse.ArgumentParser, settings: type | None = None) -> None:
    """``--config FILE``: the command's flags from a TOML or JSON file; ``settings``, the configuration
    dataclass whose fields without a flag the file may set too."""
    p.add_argument("--config", type=Path, default=None, metavar="FILE", action=configfile.ConfigFileAction, settings=settings,
                   help="take flags' values from this .toml or .json file (keys as the flags' names, batch_size or "
                   "batch-size); flags given here override it. A run folder's config.json is one")


def with_config_file(parser: Callable[[], argparse.ArgumentParser], argv: list[str] | None, args: argparse.Namespace) -> argparse.Namespace:
    """The command line parsed again over the defaults that its ``--config`` file gives, if it names one.

    Args:
      parser: makes a fresh parser of every command (``jaxtrain.cli.commands.parser``).
      argv: the command line, as first parsed (None: ``sys.argv[1:]``).
      args: its first parse.

    Returns:
      ``args`` where no ``--config`` was given; else the new parse, the command line's flags over the file's.

    Example:
      >>> with_config_file(cli.parser, ["train", "--config", "run.toml", "--epochs", "2"], args).epochs
      2
    """
    if getattr(args, "config", None) is None:
        return args
    fresh = parser()
    command = fresh
    for word in (args.command, getattr(args, "study", None)):  # down to the command's own parser
        if word is not None:
            command = next(a for a in command._actions if isinstance(a, argparse._SubParsersAction)).choices[word]
    command.set_defaults(**configfile.defaults(args.config, command))
    return fresh.parse_args(argv)


def field_defaults(config_type: type) -> types.SimpleNamespace:
    """The defaults of the dataclass ``config_type``'s fields as declared, before ``__post_init__`` resolves
    any of them: a flag's default is then the library's own ("auto" stays "auto", to be resolved for the
    model the flags name), not what it resolves to for the default model.

    Example:
      >>> field_defaults(Config).schedule
      'auto'
    """
    defaults = {f.name: f.default for f in dataclasses.fields(config_type) if f.default is not dataclasses.MISSING}
    factories = {f.name: f.default_factory() for f in dataclasses.fields(config_type) if f.default_factory is not dataclasses.MISSING}
    return types.SimpleNamespace(**defaults, **factories)


def from_flags(config_type: type, args: argparse.Namespace):
    """The dataclass ``config_type`` with the flags that name its fields."""
    fields = {f.name for f in dataclasses.fields(config_type)}
    return config_type(**{k: v for k, v in vars(args).items() if k in fields})


def check_writable(path: Path | None, flag: str = "--report") -> None:
    """Fails before any work when an output could not be written afterwards."""
    if path is not None:
        reports.check_writable(path, flag)
