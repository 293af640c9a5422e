"""``--config FILE``: a command's flags read from a TOML or JSON file, the command line overriding them.

A key is a flag's name, with underscores or dashes (``batch_size`` or ``batch-size`` for ``--batch-size``),
or a field of the command's configuration dataclass that has no flag of its own (``eval_batch_size`` of
``Config``). A value is what the flag takes, typed: a number for ``--lr``, true or false for a switch, a
list for ``--milestones``, null where the flag's default is None. A run folder's ``config.json`` is such a
file; the facts of the data it records besides the settings (``RECORDED``) are read back from the data.

The file's values become the command's defaults, and the command line is parsed again over them: a flag
given there wins, wherever it stands.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# What a run folder's config.json holds besides the settings (experiment.run writes them): facts of the data.
RECORDED = ("input_shape", "input_dtype", "num_classes", "class_names")


class ConfigFileError(ValueError):
    """A configuration file that cannot be used: ``str()`` names the file, the key and what was expected."""


class ConfigFileAction(argparse.Action):
    """``--config FILE``; ``settings`` is the configuration dataclass whose fields the file may also set."""

    def __init__(self, *args: Any, settings: type | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.settings = settings

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)


def read(path: Path) -> dict[str, Any]:
    """The settings of a ``.toml`` or ``.json`` file, as a dict.

    Raises:
      ConfigFileError: not TOML or JSON by its suffix or its content, or not a table of settings.
      OSError: the file cannot be read.

    Example:
      >>> read(Path("runs/mlp/config.json"))["lr"]
      0.001
    """
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".json"):
        raise ConfigFileError(f"--config {path}: a {suffix or 'suffix-less'} file; expected a .toml or .json file")
    try:
        text = path.read_text()
    except OSError as error:
        raise OSError(f"--config {path}: {error.strerror}; expected a readable .toml or .json file") from None
    try:
        settings = tomllib.loads(text) if suffix == ".toml" else json.loads(text)
    except ValueError as error:  # tomllib.TOMLDecodeError and json.JSONDecodeError are ValueErrors
        raise ConfigFileError(f"--config {path}: not {suffix[1:].upper()} ({error})") from None
    if not isinstance(settings, dict):
        raise ConfigFileError(f"--config {path}: a JSON {type(settings).__name__}; expected an object of settings")
    return settings


def defaults(path: Path, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """The defaults that the file at ``path`` gives the command ``parser``, checked and typed as its flags
    would type them.

    Args:
      path: a ``.toml`` or ``.json`` file of settings.
      parser: the command's parser, whose ``--config`` is a ``ConfigFileAction``.

    Returns:
      ``{dest: value}``, for ``parser.set_defaults``.

    Raises:
      ConfigFileError: one line naming the first unknown key, or a value of the wrong type and what was
        expected.

    Example:
      >>> defaults(Path("run.toml"), train_parser)
      {'lr': 0.01, 'epochs': 3}
    """
    settings = read(path)
    actions: dict[str, list[argparse.Action]] = {}
    for action in parser._actions:
        if action.dest not in (argparse.SUPPRESS, "help") and not isinstance(action, ConfigFileAction):
            actions.setdefault(action.dest, []).append(action)
    config = next(a for a in parser._actions if isinstance(a, ConfigFileAction))
    fields = {f.name: f for f in dataclasses.fields(config.settings)} if config.settings else {}
    command = parser.prog.removeprefix("jaxtrain ")
    if settings.get("made_by") == "fit":  # record.MADE_BY_FIT: a folder that fit wrote from Python
        raise ConfigFileError(f"--config {path}: written by fit from Python, which records no flags; "
                              f"expected a config.json that {command} --run-dir writes, or a file of flags")
    values: dict[str, Any] = {}
    for key, value in settings.items():
        name = key.replace("-", "_")
        where = f"--config {path}: {key}"
        if name in values:
            raise ConfigFileError(f"{where}: set twice (as {name} and {name.replace('_', '-')}); expected it once")
        if name == config.dest:
            raise ConfigFileError(f"{where}: expected no --config inside a configuration file")
        if name in actions:
            values[name] = _convert(value, actions[name], where)
        elif name in fields:
            values[name] = _field(value, fields[name], where)
        elif name not in RECORDED:
            known = sorted(set(actions) | set(fields))
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigFileError(f"{where}: unknown key{hint}; expected a flag of {command} (--help lists them)")
    return values


def _convert(value: Any, actions: Sequence[argparse.Action], where: str) -> Any:
    """``value`` as the first of ``actions`` (those of one destination) takes it."""
    expected = []
    for action in actions:
        try:
            return _as(action, value, alone=len(actions) == 1)
        except (ValueError, TypeError, argparse.ArgumentTypeError) as error:
            expected.append(str(error))
    raise ConfigFileError(f"{where} = {_show(value)}; expected {' or '.join(dict.fromkeys(expected))}")


def _as(action: argparse.Action, value: Any, alone: bool) -> Any:
    """``value`` as ``action``'s flag gives it, or a ValueError saying what it takes. A switch that shares
    its destination with another flag (``--no-compile-cache``) gives only its own value."""
    flag = action.option_strings[0] if action.option_strings else action.dest
    if value is None and action.default is None:
        return None
    if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
        if not isinstance(value, bool) or value is not action.const and not (alone and value is action.default):
            raise ValueError(f"{_show(action.const)} (as {flag} gives)")
        return value
    if isinstance(action, argparse.BooleanOptionalAction):
        if not isinstance(value, bool):
            raise ValueError(f"true or false (as {flag} gives)")
        return value
    if action.nargs in ("+", "*") or isinstance(action.nargs, int):
        if not isinstance(value, list):
            raise ValueError(f"a list of {_kind(action, plural=True)} (as {flag} takes)")
        return [_one(action, item, flag) for item in value]
    return _one(action, value, flag)


def _one(action: argparse.Action, value: Any, flag: str) -> Any:
    kind = action.type
    if isinstance(value, bool) or isinstance(value, dict | list) or value is None:
        raise ValueError(f"{_kind(action)} (as {flag} takes)")
    if kind is int:
        if not isinstance(value, int):
            raise ValueError(f"an integer (as {flag} takes)")
    elif kind is float:
        if not isinstance(value, int | float):
            raise ValueError(f"a number (as {flag} takes)")
        value = float(value)
    elif kind is None or kind is str or kind is Path:
        if not isinstance(value, str):
            raise ValueError(f"a string (as {flag} takes)")
        value = value if kind is None else kind(value)
    else:  # the flag's own parser, as on the command line
        try:
            value = kind(str(value))
        except (ValueError, argparse.ArgumentTypeError) as error:
            raise ValueError(f"what {flag} takes ({error})") from None
    if action.choices is not None and value not in action.choices:
        raise ValueError(f"one of {', '.join(map(str, action.choices))} (as {flag} takes)")
    return value


def _show(value: Any) -> str:
    """A value as the file spells it (JSON's spelling: true, null, "text")."""
    return json.dumps(value, default=str)


def _kind(action: argparse.Action, plural: bool = False) -> str:
    if action.choices is not None:
        return f"{'values' if plural else 'one'} of {', '.join(map(str, action.choices))}"
    if plural:
        return {int: "integers", float: "numbers"}.get(action.type, "strings")
    return {int: "an integer", float: "a number"}.get(action.type, "a string")


def _field(value: Any, field: dataclasses.Field, where: str) -> Any:
    """A field with no flag: the type of its default (a number for a float, an integer for an int), the
    configuration's own checks then ranging it."""
    default = field.default
    if default is dataclasses.MISSING or default is None:
        return value
    kinds: dict[type, tuple[Callable[[Any], bool], str]] = {
        bool: (lambda v: isinstance(v, bool), "true or false"),
        int: (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
        float: (lambda v: isinstance(v, int | float) and not isinstance(v, bool), "a number"),
        str: (lambda v: isinstance(v, str), "a string"),
    }
    check, expected = kinds.get(type(default), (lambda v: True, ""))
    if not check(value):
        raise ConfigFileError(f"{where} = {_show(value)}; expected {expected}")
    return value
