"""Runs reported by the worker's main process instead of a pool child.

A job can end without its pool child reporting it: the message was revoked
or rejected before any child ran it, or the child died (hard time limit,
SIGKILL, out of memory). The main process still has the job's request, with
its headers and start time, so it emits the job's process span itself.
"""

from __future__ import annotations

from typing import Any

from billiard.exceptions import WorkerLostError
from celery.exceptions import TimeLimitExceeded

import jobtrace
from jobtrace import Guard, Job, Outcome
from jobtrace_celery._propagation import (
    SYSTEM,
    build_carrier,
    job_from_request,
    unwrap_error,
)

_reported: jobtrace.BoundedRegistry[tuple[Any, int, float | None], bool] = (
    jobtrace.BoundedRegistry()
)


def on_task_revoked(request: Any = None, sender: Any = None, **kwargs: Any) -> None:
    with _REVOKED:
        name = getattr(sender, "name", None) or getattr(request, "task", "unknown")
        _report_from_parent(
            job_from_request(name, request), build_carrier(request), Outcome.REVOKED
        )


def on_task_unknown(
    name: Any = None,
    id: Any = None,
    message: Any = None,
    exc: Any = None,
    **kwargs: Any,
) -> None:
    with _UNKNOWN:
        _report_message(str(name), id, message, exc)


def on_task_rejected(message: Any = None, exc: Any = None, **kwargs: Any) -> None:
    with _REJECTED:
        headers = getattr(message, "headers", None) or {}
        _report_message(
            str(headers.get("task", "unknown")), headers.get("id"), message, exc
        )


def _report_message(name: str, job_id: Any, message: Any, exc: Any) -> None:
    delivery = getattr(message, "delivery_info", None) or {}
    job = Job(system=SYSTEM, name=name, id=job_id, queue=delivery.get("routing_key"))
    headers = getattr(message, "headers", None) or {}
    error = exc if isinstance(exc, BaseException) else None
    _report_from_parent(job, build_carrier(headers), Outcome.REJECTED, error)


def wrapped_on_timeout(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    with _TIMEOUT:
        soft = args[0] if args else kwargs.get("soft")
        limit = args[1] if len(args) > 1 else kwargs.get("timeout")
        if not soft:
            _report_request(instance, Outcome.KILLED, TimeLimitExceeded(limit))
    return wrapped(*args, **kwargs)


def wrapped_on_failure(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    with _LOST:
        exc_info = args[0] if args else kwargs.get("exc_info")
        error = unwrap_error(getattr(exc_info, "exception", None))
        lost = isinstance(error, WorkerLostError) or (
            isinstance(error, (SystemExit, KeyboardInterrupt))
            and not getattr(instance, "_already_revoked", False)
            and not getattr(instance, "_already_cancelled", False)
        )
        if lost:
            # A cold shutdown cancels the running requests before their
            # children are killed.
            cancelled = getattr(instance, "_already_cancelled", False)
            outcome = Outcome.INTERRUPTED if cancelled else Outcome.KILLED
            _report_request(instance, outcome, error)
    return wrapped(*args, **kwargs)


def _report_request(request: Any, outcome: Outcome, error: BaseException) -> None:
    fields = request.request_dict
    job = job_from_request(request.name, fields)
    _report_from_parent(job, build_carrier(fields), outcome, error, request.time_start)


def _report_from_parent(
    job: Job,
    carrier: dict[str, Any],
    outcome: Outcome,
    error: BaseException | None = None,
    start_time: float | None = None,
) -> None:
    # Several host hooks can report the same lost run; the first one wins.
    key = (job.id, job.attempt, start_time)
    if job.id is not None:
        if _reported.get(key):
            return
        _reported.put(key, True)
    # The child's own span of the job, if it started one, keeps its id, so
    # the spans the job made stay under it.
    own = jobtrace.claim_child_run(job.id) if job.id is not None else None
    jobtrace.report_run(
        job,
        carrier,
        outcome,
        error,
        start_time=start_time,
        unfinished=[own] if own is not None else [],
    )


_REVOKED = Guard("celery.task_revoked")
_UNKNOWN = Guard("celery.task_unknown")
_REJECTED = Guard("celery.task_rejected")
_TIMEOUT = Guard("celery.Request.on_timeout")
_LOST = Guard("celery.Request.on_failure")
