"""The command line, ``python -m jaxtrain`` and the ``jaxtrain`` command: flags onto the library, nothing else.
``commands`` holds train, evaluate, predict, export and plot, and ``main``; ``summary`` and ``compare`` add
theirs; ``flags`` holds the pieces they share and ``configfile`` ``--config FILE``."""

from jaxtrain.cli.commands import main, parser

__all__ = ["main", "parser"]
