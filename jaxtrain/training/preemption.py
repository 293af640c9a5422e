"""Preemption: a scheduler's SIGTERM ends a run with a checkpoint instead of losing the work since the last.

``fit(..., run=...)`` asks ``Notice.reached`` at every call boundary. On one process, a SIGTERM handler
notes the signal; the next boundary saves a checkpoint and ``fit`` raises ``Preempted`` (the command line
prints it in one line and exits with 143, the code of a process ended by SIGTERM). ``--resume`` continues
from that checkpoint, bit for bit.

Several processes must save at the same step, since a save is collective, yet the signal may reach only
one of them. There ``jax.distributed``'s preemption service takes the signal instead: it tells every
process, they agree on a step past the one that the fastest of them has reached, and each stops at the call
boundary that contains it (``multihost_utils.reached_preemption_sync_point``). Nothing is exchanged between
the processes until a notice comes.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

import jax
from jax.experimental import multihost_utils

EXIT_CODE = 128 + signal.SIGTERM  # 143: what a shell reports for a process ended by SIGTERM


class Preempted(Exception):
    """A preemption notice (SIGTERM) stopped the run after a checkpoint was saved; ``--resume`` continues it."""


class Notice:
    """Whether a preemption notice has come, asked at call boundaries (``notice``)."""

    def __init__(self, step: int, several: bool):
        self.step, self._several, self.received = step, several, False

    def reached(self, step: int) -> bool:
        """Whether the run should stop after the call that took it to ``step`` (optimizer steps since the
        state's creation), saving a checkpoint first.

        Every process must ask at every boundary, with the same steps. The preemption service names one step
        past the fastest process's at the time of the notice; each step of the call is offered to it,
        so that the boundary that contains it answers True on every process alike.
        """
        if self._several:
            try:  # a list, not a generator: the service hears of every step
                offered = [multihost_utils.reached_preemption_sync_point(s) for s in range(self.step + 1, step + 1)]
            except RuntimeError:  # the service is off (jax_enable_preemption_service): no notice can come
                self._several, offered = False, []
            self.received = self.received or any(offered)
        self.step = step
        return self.received


@contextlib.contextmanager
def notice(step: int) -> Iterator[Notice]:
    """Listens for a preemption notice while the block runs.

    One process: SIGTERM is noted instead of ending the process (a second SIGTERM ends it at once); the
    previous handler comes back afterwards. Outside the main thread, where Python cannot take signals,
    nothing is listened for. Several processes: ``jax.distributed``'s preemption service has taken SIGTERM
    since ``jax.distributed.initialize``; a notice is read from it (where the service is turned off,
    ``jax_enable_preemption_service``, none comes).

    Args:
      step: the state's step when the block starts.

    Example:
      >>> with notice(int(state.step)) as preempt:
      ...     for ...: if preempt.reached(step): save(); raise Preempted(...)
    """
    several = jax.process_count() > 1
    listening = Notice(step, several)
    if several or threading.current_thread() is not threading.main_thread():
        yield listening
        return

    def note(signum, frame):
        listening.received = True
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM is not a notice but an order

    previous = signal.signal(signal.SIGTERM, note)
    try:
        yield listening
    finally:
        signal.signal(signal.SIGTERM, previous)
