"""CPU time of a process tree, with nanosecond resolution where Linux has it.

``/proc`` (and so psutil's ``cpu_times``) counts CPU time in clock ticks,
usually 10 ms, which is 20 µs per job over 500 jobs. The kernel's process
CPU clock, read with ``clock_getcpuclockid`` and ``clock_gettime``, counts
nanoseconds, and it includes threads that already ended, such as the
thread that a bounded flush runs in. Processes that already ended, such as
RQ's work horses, are known only in ticks.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time

import psutil

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_getcpuclockid = getattr(_libc, "clock_getcpuclockid", None)


def tree_cpu_seconds(pid: int) -> float:
    """Return the CPU seconds (user plus system) of ``pid`` and its children.

    Children that already exited count too, once their parent has reaped
    them, as RQ's forking worker reaps each work horse. The kernel then adds
    a reaped child's CPU time to its parent's ``children_user`` and
    ``children_system``, which count clock ticks, so each reading of a tree
    with reaped children is exact to one tick (usually 10 ms).
    """
    root = psutil.Process(pid)
    total = 0.0
    for process in (root, *root.children(recursive=True)):
        try:
            total += process_cpu_seconds(process) + reaped_cpu_seconds(process)
        except psutil.NoSuchProcess:
            continue
    return total


def process_cpu_seconds(process: psutil.Process) -> float:
    """Return the CPU seconds of all threads of ``process``, ended ones too."""
    clock = _cpu_clock(process.pid)
    if clock is not None:
        try:
            return time.clock_gettime(clock)
        except OSError:
            pass
    # Without the clock, fall back to /proc's tick-based figures.
    times = process.cpu_times()
    return float(times.user + times.system)


def reaped_cpu_seconds(process: psutil.Process) -> float:
    """Return the CPU seconds of the children that ``process`` has reaped."""
    times = process.cpu_times()
    return float(times.children_user + times.children_system)


def _cpu_clock(pid: int) -> int | None:
    if _getcpuclockid is None:
        return None
    clock = ctypes.c_int()
    if _getcpuclockid(pid, ctypes.byref(clock)) != 0:
        return None
    return clock.value
