"""Reports as files: strict JSON, written atomically, JSON lines trimmed (``keep_lines``), outputs checked before
any work, and a report that its file cannot take kept somewhere the error names.

A run's work is not lost for want of disk space: ``check_writable`` writes and syncs a few KB where an
output will go before the run starts (an empty file needs no free block, so creating one proves nothing),
and ``deliver`` prints a report on stdout as JSON when its file cannot be written after the work.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

_PROBE_BYTES = 16 * 1024


def strict(data: Any) -> Any:
    """``data`` with every non-finite float (and numpy scalar) made JSON's ``null``: strict JSON, which
    parsers accept, where Python's ``json`` would write ``NaN`` and ``Infinity``."""
    if isinstance(data, dict):
        return {key: strict(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [strict(value) for value in data]
    if isinstance(data, np.generic):
        data = data.item()
    if isinstance(data, float) and not math.isfinite(data):
        return None
    return data


def to_json(data: Any, **kwargs: Any) -> str:
    """Strict JSON text of ``data`` (``strict``)."""
    return json.dumps(strict(data), allow_nan=False, **kwargs)


def check_space(folder: str | Path, what: str = "folder", nbytes: int = _PROBE_BYTES) -> None:
    """Writes ``nbytes`` into a temporary file in ``folder``, syncs it to disk and removes it: a full disk
    or a folder that cannot be written fails here, before any work.

    Raises:
      OSError: one line naming ``folder`` and the system's reason, of the system's type
        (``PermissionError`` for a folder that cannot be written).

    Example:
      >>> check_space("runs/mlp", "run folder")
    """
    try:
        with tempfile.TemporaryFile(dir=folder) as probe:
            probe.write(b"\0" * nbytes)
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as error:
        raise type(error)(f"{what} {folder} cannot be written ({error.strerror or error})") from None


def check_writable(path: str | Path, what: str = "report") -> None:
    """Fails before any work when ``path`` could not be written afterwards: its folder must exist and take
    a few KB (``check_space``), and ``path`` must not be a folder.

    Raises:
      OSError: one line naming ``path`` and what was expected.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{what} {path}: a folder; expected a file name")
    folder = path.resolve().parent
    if not folder.is_dir():
        raise FileNotFoundError(f"{what} {path}: folder {folder} does not exist")
    check_space(folder, f"{what} {path}: folder")


def write_json(path: str | Path, data: Any) -> None:
    """Writes strict JSON atomically: a crash mid-write leaves any earlier file at ``path`` whole.

    A symbolic link is followed (its target is updated), and the file gets the permissions that the umask
    gives a new file.
    """
    write_text(path, to_json(data, indent=2) + "\n")


def write_text(path: str | Path, text: str) -> None:
    """Writes ``text`` atomically, as ``write_json`` writes JSON: a crash mid-write leaves any earlier file
    at ``path`` whole, and a failed write (a full disk) leaves no temporary file behind.

    Raises:
      OSError: one line naming ``path`` and the system's reason.
    """
    target = Path(path).resolve()
    temporary = None
    try:
        with tempfile.NamedTemporaryFile("w", dir=target.parent, prefix=f".{target.name}.", delete=False) as out:
            temporary = out.name
            out.write(text)
            out.flush()
            os.fsync(out.fileno())  # the data on disk before the rename makes it the file
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, target)
    except OSError as error:
        if temporary is not None:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
        raise type(error)(f"{path}: not written ({error.strerror or error}); any earlier file there is kept whole") from None


def deliver(data: Any, path: str | Path, what: str = "--report", copy: str | Path | None = None) -> None:
    """Writes a report to ``path``; when that fails (a full disk, after the work), the report still goes
    somewhere: to ``copy`` if it holds the same report already, else to stdout as JSON. The error names where.

    Args:
      data: the report.
      path: its file.
      what: how the error names ``path`` (the flag that gave it).
      copy: a file that may hold the same report (the run folder's ``report.json``).

    Raises:
      OSError: ``path`` could not be written: one line naming it, its reason and where the report is.
    """
    try:
        write_json(path, data)
    except OSError as error:
        text = to_json(data, indent=2) + "\n"
        same = False
        with contextlib.suppress(OSError, UnicodeDecodeError):
            same = copy is not None and Path(copy).read_text() == text
        if not same:
            print(text, end="", flush=True)
        where = f"the same report is in {copy}" if same else "the report is printed on stdout as JSON instead"
        raise type(error)(f"{what} {error}; {where}") from None


def keep_lines(path: str | Path, keep: Callable[[dict[str, Any]], bool]) -> None:
    """Rewrites a JSON-lines file with the records that ``keep`` accepts, up to its first line cut short (a
    process that died mid-write); a missing file is written empty.

    Example:
      >>> keep_lines("runs/mlp/metrics.jsonl", lambda record: record["epoch"] <= 3)
    """
    path = Path(path)
    kept = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            break
        if keep(record):
            kept.append(line + "\n")
    path.write_text("".join(kept))
