"""The timed part of a producer process, shared by every host's producer."""

from __future__ import annotations

import time
from collections.abc import Callable


def time_enqueues(
    enqueue: Callable[[], object],
    flush: Callable[[], object],
    calls: int,
    warmup: int,
) -> dict[str, float]:
    """Make ``warmup`` untimed enqueues, then time ``calls`` more and a flush.

    The warm-up opens the broker connection and, for the instrumented
    setups, builds the tracer or client and its export thread. The timed
    part ends with ``flush``, so the export work of the send spans is
    included. Returns the wall time (``time.perf_counter``) and the CPU
    time of all the process's threads (``time.process_time``), in seconds.
    """
    for _ in range(warmup):
        enqueue()
    flush()

    cpu_start = time.process_time()
    wall_start = time.perf_counter()
    for _ in range(calls):
        enqueue()
    flush()
    wall = time.perf_counter() - wall_start
    cpu = time.process_time() - cpu_start
    return {"calls": calls, "wall": wall, "cpu": cpu}
