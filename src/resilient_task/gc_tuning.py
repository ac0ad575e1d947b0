"""Garbage-collector settings for a long-running worker process.

A worker allocates a few short-lived objects per task (coroutines, frames, the task's record,
its transitions). Almost all of them are freed by reference counting, but CPython also counts
every allocation towards its cyclic collector, whose first generation is scanned after 700 net
allocations by default: at thousands of tasks per second that is hundreds of scans a second,
each walking the young objects, and every few of them a scan of the older generations, which
by then hold the whole node (its modules, handlers, connections). Measured on the executor's
micro-benchmark, the collector was a quarter of the CPU per task.

:func:`tune_gc` is what ``resilient-task worker`` does once the node has started:

- ``gc.freeze()``: what exists after start (imports, the node, the connection pools) moves to a
  permanent generation that no collection scans again;
- ``gc.set_threshold(threshold, 10, 10)``: the first generation is scanned after ``threshold``
  net allocations instead of 700 (``RESILIENT_TASK_GC_THRESHOLD``, default 10,000). Garbage in
  reference cycles still gets collected, only in larger batches; the memory held meanwhile is a
  few megabytes at most.

It is process-wide, so the library never does it on its own: a program that runs a node inside
a process it owns (``async with ResilientTask(...)``) can call it after entering the node.
"""

from __future__ import annotations

import gc
import logging

__all__ = ["tune_gc"]

log = logging.getLogger(__name__)


def tune_gc(threshold: int) -> None:
    """Freeze what exists now and raise the first collection threshold to ``threshold``.

    ``threshold`` 0 leaves the collector as it is. The other two thresholds stay at Python's
    default (10, 10).
    """
    if threshold <= 0:
        return
    gc.collect()  # the startup garbage, once, before freezing what survives it
    gc.freeze()
    _, second, third = gc.get_threshold()
    gc.set_threshold(threshold, second, third)
    frozen = gc.get_freeze_count()
    log.debug("garbage collector: %d objects frozen, threshold %d", frozen, threshold)
