"""Job functions that the RQ tests enqueue, importable by every worker."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from typing import Any

from opentelemetry import trace

import jobtrace


def add(x: int, y: int) -> int:
    """Return the sum; the plain successful job."""
    return x + y


def fail() -> None:
    """Raise ValueError; the plain failing job."""
    raise ValueError("boom")


def fail_until_third() -> str:
    """Raise until the third attempt, for jobs enqueued with ``Retry``."""
    current = jobtrace.current_job()
    if current is None or current.attempt < 3:
        raise KeyError("again")
    return "done"


def return_retry_once() -> Any:
    """Return RQ's ``Retry`` on the first run and succeed on the second."""
    from rq import get_current_job
    from rq.job import Retry

    job = get_current_job()
    if job is not None and not job.number_of_retries:
        return Retry(max=2)
    return "done"


def sleep(seconds: float) -> str:
    """Sleep, for timeouts and killed work horses."""
    time.sleep(seconds)
    return "slept"


def sleep_through_timeout(seconds: float) -> str:
    """Sleep, catching RQ's JobTimeoutException, as a stuck job would."""
    from rq.timeouts import JobTimeoutException

    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        with contextlib.suppress(JobTimeoutException):
            time.sleep(left)
    return "slept"


def enqueue_add() -> str:
    """Enqueue ``add`` on the job's own queue from inside the job."""
    from rq import Queue, get_current_job

    job = get_current_job()
    assert job is not None
    Queue(job.origin, connection=job.connection).enqueue(add, 1, 2)
    return "enqueued"


def report_pid() -> int:
    """Return the pid of the process that ran the job."""
    return os.getpid()


def traced_callback(job: Any, connection: Any, *args: Any, **kwargs: Any) -> None:
    """An RQ success or failure callback that opens a span of its own."""
    with jobtrace.tracer().start_as_current_span("callback"):
        trace.get_current_span().set_attribute("test.job_id", job.id)


def span_then_sleep(seconds: float) -> str:
    """End a span of the job's own code, then save the pid and sleep."""
    with jobtrace.tracer().start_as_current_span("inside"):
        pass
    return save_pid_then_sleep(seconds)


def sleep_inside_span(seconds: float) -> str:
    """Save the pid and sleep inside a span of the job's own code."""
    with jobtrace.tracer().start_as_current_span("sleeping"):
        return save_pid_then_sleep(seconds)


def save_pid_then_sleep(seconds: float) -> str:
    """Save the work horse's pid in the job's meta, then sleep."""
    from rq import get_current_job

    job = get_current_job()
    assert job is not None
    job.meta["pid"] = os.getpid()
    job.save_meta()
    time.sleep(seconds)
    return "slept"


def fail_until_second() -> str:
    """Raise on the first attempt, for jobs that get requeued."""
    current = jobtrace.current_job()
    if current is None or current.attempt < 2:
        raise KeyError("again")
    return "done"


def fail_once() -> int:
    """Raise on the job's first run and return the number of runs after.

    The count lives in the job's meta, so it does not depend on jobtrace.
    """
    from rq import get_current_job

    job = get_current_job()
    assert job is not None
    runs = int(job.meta.get("runs", 0)) + 1
    job.meta["runs"] = runs
    job.save_meta()
    if runs == 1:
        raise KeyError("again")
    return runs


def environment_variable(name: str) -> str | None:
    """Return environment variable ``name`` of the process that ran the job."""
    return os.environ.get(name)


def echo(*args: Any, **kwargs: Any) -> str:
    """Take any arguments and ignore them, for the argument recording tests."""
    return "echoed"


class BrokenMapping(dict):  # type: ignore[type-arg]
    """A mapping stored in a job's meta whose iteration raises."""

    def __iter__(self) -> Any:
        raise RuntimeError("broken iteration")

    def keys(self) -> Any:
        raise RuntimeError("broken keys")


def kill_horse_on_first_run() -> int:
    """SIGKILL the work horse on the job's first run; return the run count after.

    The count is a Redis counter, because RQ's retry of a lost run saves
    the worker's copy of the job's meta over what the horse saved.
    """
    from rq import get_current_job

    job = get_current_job()
    assert job is not None
    runs = int(job.connection.incr(f"jobtrace-test-runs:{job.id}"))
    job.connection.expire(f"jobtrace-test-runs:{job.id}", 600)
    if runs == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return runs
