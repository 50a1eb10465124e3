"""Subprocesses of the benchmark: every wait has a time limit, every exit a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

import psutil

ROOT = Path(__file__).resolve().parent.parent
#: Seconds to wait for a killed process to be reaped.
STOP_TIMEOUT = 20.0
LOG_TAIL_LINES = 30

T = TypeVar("T")


class BenchmarkError(RuntimeError):
    """A measurement that failed; its message names the measurement and the cause."""


@contextmanager
def running(
    command: list[str], env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``command`` in its own session, logging to ``log``; kill it on exit.

    The new session makes the process a group leader, so :func:`stop` also
    ends its children, such as a prefork worker's pool.
    """
    with log.open("wb") as output:
        process = subprocess.Popen(
            command,
            env=env,
            cwd=ROOT,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    """Kill ``process``, the rest of its process group and its children.

    The measurement is over by the time a process is stopped, and a warm
    shutdown of a Celery worker takes 1 to 2 s, mostly waiting for its
    broker poll to return, so the group is killed without one. Children
    are killed one by one as well, because an RQ work horse moves to a
    process group of its own.
    """
    try:
        children = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []

    # Until the leader is reaped, its process id is the group's id, so the
    # signal cannot reach another group.
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    for child in children:
        with suppress(psutil.NoSuchProcess):
            child.kill()
    process.wait(timeout=STOP_TIMEOUT)


def wait_for(
    read: Callable[[], T | None],
    process: subprocess.Popen[bytes],
    timeout: float,
    description: str,
    log: Path,
    interval: float = 0.02,
) -> T:
    """Poll ``read`` until it returns a value, at most ``timeout`` seconds.

    Raises:
        BenchmarkError: the time ran out or ``process`` exited first.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = read()
        if value is not None:
            return value
        code = process.poll()
        if code is not None:
            raise BenchmarkError(
                f"{description}: the process exited with code {code}\n{tail(log)}"
            )
        time.sleep(interval)
    raise BenchmarkError(f"{description}: timed out after {timeout:.0f} s\n{tail(log)}")


def run_json(command: list[str], env: dict[str, str], timeout: float) -> Any:
    """Run ``command`` to its end and return the JSON on its last output line.

    Raises:
        BenchmarkError: it failed, timed out or printed no JSON.
    """
    description = " ".join(command[1:])
    try:
        result = subprocess.run(
            command,
            env=env,
            cwd=ROOT,
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise BenchmarkError(
            f"{description}: timed out after {timeout:.0f} s"
        ) from error
    errors = result.stderr.decode(errors="replace")
    if result.returncode != 0:
        raise BenchmarkError(f"{description}: exit code {result.returncode}\n{errors}")
    lines = result.stdout.decode(errors="replace").strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, ValueError) as error:
        raise BenchmarkError(
            f"{description}: no JSON result in its output\n{errors}"
        ) from error


def tail(log: Path) -> str:
    """Return the last lines of ``log``, for error messages."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return f"(no log at {log})"
    return "\n".join([f"last lines of {log}:", *lines[-LOG_TAIL_LINES:]])
