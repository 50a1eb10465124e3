"""Send spans for jobs that RQ enqueues again: requeues and repeats.

RQ pushes a requeued job, and a repeat without an interval, through its
private ``Queue._enqueue_job``, which the enqueue wrappers do not see. The
wrappers here give each such push a send span of its own, and the job's
next run links to it. A repeat's span covers ``Repeat.schedule``, and a
requeue's span covers the push inside ``requeue()``.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from jobtrace import Guard
from jobtrace_rq import _hooks
from jobtrace_rq._propagation import next_attempt
from jobtrace_rq._reports import argument

# True while a registry's requeue() runs in this context.
_requeueing: ContextVar[bool] = ContextVar("jobtrace_rq_requeueing", default=False)


def wrapped_requeue(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    # requeue() may be given a job id and fetch the job itself, so the send
    # span opens when the job is pushed, in wrapped_push below.
    token = _requeueing.set(True)
    try:
        return wrapped(*args, **kwargs)
    finally:
        _requeueing.reset(token)


def wrapped_push(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    if not _requeueing.get():
        return wrapped(*args, **kwargs)

    # A requeued job runs once more after the runs it had, so its attempt
    # number counts on from the latest one.
    job = argument(args, kwargs, 0, "job")
    attempt = None
    with _REQUEUE:
        attempt = next_attempt(job)
    queue = getattr(instance, "name", None)
    return _hooks._send(wrapped, args, kwargs, job, queue, attempt=attempt)


def wrapped_repeat_schedule(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    # The worker repeats a job after a run that succeeded, from inside that
    # run. The repeat starts again at attempt 1, and it is no retry, so it
    # gets no previous-attempt link.
    job = argument(args, kwargs, 0, "job")
    queue = getattr(argument(args, kwargs, 1, "queue"), "name", None)
    return _hooks._send(wrapped, args, kwargs, job, queue, attempt=1)


def targets() -> list[tuple[type, str, Any]]:
    """Return the methods to wrap in the installed RQ, as in ``_hooks``."""
    from rq.queue import Queue
    from rq.registry import FailedJobRegistry

    rows: list[tuple[type, str, Any]] = [
        (owner, "requeue", wrapped_requeue)
        for owner in _hooks._owners([FailedJobRegistry], "requeue")
    ]
    rows.append((Queue, "_enqueue_job", wrapped_push))
    # RQ 3.0 pushes a job that has a rate limit through this method instead.
    if "_enqueue_rate_limited_job" in vars(Queue):
        rows.append((Queue, "_enqueue_rate_limited_job", wrapped_push))

    try:
        from rq.repeat import Repeat
    except ImportError:  # RQ 1.x has no repeats.
        return rows
    rows.append((Repeat, "schedule", wrapped_repeat_schedule))
    return rows


_REQUEUE = Guard("rq.requeue")
