"""Host to device: moving batches onto the accelerator while the step runs, and whether a dataset fits there.

``prefetch_to_device`` copies the loader's host batches to the device in a background thread, so that the
copy overlaps the compiled step; ``fits_on_device`` decides whether a training set may live on the device
whole (``fit(..., data_on_device=True)``).
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator
from typing import Any

import jax


def prefetch_to_device(batches: Iterator[Any], size: int = 2, device: jax.Device | None = None) -> Iterator[Any]:
    """Moves batches onto the device in a background thread, ``size`` ahead of the consumer.

    Host-side gathering and the host-to-device copy then overlap the compiled step. The thread stops
    when the input ends, when the consumer stops early (``close()`` or garbage collection), or on error,
    which is re-raised in the consumer.

    Example:
      >>> for inputs, labels in prefetch_to_device(iter(loader)): ...
    """
    slots: queue.Queue = queue.Queue(maxsize=size)
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            for batch in batches:
                if not put(jax.device_put(batch, device)):
                    return
            put(done)
        except BaseException as error:  # handed to the consumer, which re-raises it
            put(error)

    thread = threading.Thread(target=produce, daemon=True, name="jaxtrain-prefetch")
    thread.start()
    try:
        while (item := slots.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


def fits_on_device(nbytes: int, device: jax.Device | None = None, fraction: float = 0.25) -> bool:
    """Whether ``nbytes`` of data take at most ``fraction`` of the device's memory (host RAM for a CPU)."""
    device = device or jax.devices()[0]
    limit = (device.memory_stats() or {}).get("bytes_limit")
    if limit is None:
        limit = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return nbytes <= fraction * limit
