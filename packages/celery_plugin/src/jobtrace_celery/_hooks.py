"""Celery signal receivers and wrappers that turn tasks into jobtrace jobs.

Receivers are connected strongly with a ``dispatch_uid``, so connecting twice
is harmless and :func:`disconnect` removes exactly what :func:`connect` added.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any

import wrapt
from celery import signals, states
from celery.exceptions import SoftTimeLimitExceeded
from opentelemetry.instrumentation.utils import unwrap

import jobtrace
from jobtrace import Guard, Job, Outcome
from jobtrace_celery import _overlap, _reports
from jobtrace_celery._propagation import (
    SYSTEM,
    attempt_number,
    build_carrier,
    job_from_request,
    unwrap_error,
)

log = logging.getLogger(__name__)

# Keyed by (task id, thread id): a retry of a task can start on another pool
# thread before the attempt that enqueued it has run its postrun hook.
_runs: jobtrace.BoundedRegistry[tuple[str, int], jobtrace.RunHandle] = (
    jobtrace.BoundedRegistry()
)
_pending = threading.local()
# Whether the first publish or run of this process looked for other
# tracers, which may have instrumented Celery after jobtrace did.
_overlap_checked = False

_STATE_OUTCOMES = {
    states.SUCCESS: Outcome.SUCCESS,
    states.FAILURE: Outcome.FAILURE,
    states.RETRY: Outcome.RETRY,
    states.REJECTED: Outcome.REJECTED,
    states.IGNORED: Outcome.SKIPPED,
}


def _on_before_task_publish(
    sender: Any = None, body: Any = None, headers: Any = None, **kwargs: Any
) -> None:
    if not _overlap_checked:
        _check_overlap()
    with _BEFORE_PUBLISH:
        if not isinstance(headers, dict):
            return
        fields = body if isinstance(body, dict) and "task" in body else headers
        job = Job(
            system=SYSTEM,
            name=str(sender),
            id=fields.get("id"),
            queue=kwargs.get("routing_key") or kwargs.get("exchange") or None,
            attempt=attempt_number(fields.get("retries")),
        )
        _pending.send = jobtrace.begin_send(job, headers)


def _on_after_task_publish(**kwargs: Any) -> None:
    with _AFTER_PUBLISH:
        handle = _take_pending_send()
        if handle is not None:
            jobtrace.end_send(handle)


def _wrapped_send_task(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    try:
        return wrapped(*args, **kwargs)
    except BaseException as error:
        # after_task_publish never fires when publishing raises.
        with _SEND_ERROR:
            handle = _take_pending_send()
            if handle is not None:
                jobtrace.end_send(handle, error)
        raise


def _check_overlap() -> None:
    # A guard of its own, so that an error while looking costs no span.
    global _overlap_checked
    _overlap_checked = True
    with _OVERLAP:
        _overlap.check()


def _take_pending_send() -> jobtrace.SendHandle | None:
    handle: jobtrace.SendHandle | None = getattr(_pending, "send", None)
    _pending.send = None
    return handle


def _on_task_prerun(task_id: Any = None, task: Any = None, **kwargs: Any) -> None:
    if not _overlap_checked:
        _check_overlap()
    with _PRERUN:
        request = task.request
        job = job_from_request(task.name, request)
        run = jobtrace.begin_run(
            job,
            build_carrier(request),
            arguments=lambda: (kwargs.get("args"), kwargs.get("kwargs")),
        )
        _runs.put((task_id, threading.get_ident()), run)


def _on_task_failure(
    task_id: Any = None, exception: Any = None, einfo: Any = None, **kwargs: Any
) -> None:
    with _FAILURE:
        run = _runs.get((task_id, threading.get_ident()))
        if run is not None and exception is not None:
            stacktrace = getattr(einfo, "traceback", None)
            jobtrace.record_error(run, unwrap_error(exception), stacktrace)


def _on_task_retry(request: Any = None, reason: Any = None, **kwargs: Any) -> None:
    with _RETRY:
        run = _runs.get((getattr(request, "id", None), threading.get_ident()))
        if run is not None and isinstance(reason, BaseException):
            cause = getattr(reason, "exc", None)
            jobtrace.record_error(run, cause if cause is not None else reason)


def _on_task_postrun(
    task_id: Any = None,
    task: Any = None,
    retval: Any = None,
    state: Any = None,
    **kwargs: Any,
) -> None:
    with _POSTRUN:
        run = _runs.pop((task_id, threading.get_ident()))
        if run is None:
            log.debug("No process span for task %s, prerun did not run", task_id)
            return
        outcome, error, expected = Outcome.INTERRUPTED, None, False
        try:
            outcome, error, expected = _outcome(task, state, retval, run.error)
        finally:
            try:
                jobtrace.end_run(run, outcome, error, expected=expected)
            finally:
                # The next task on this thread must not start inside this run.
                run.detach()


def _outcome(
    task: Any, state: Any, retval: Any, error: BaseException | None
) -> tuple[Outcome, BaseException | None, bool]:
    outcome = _STATE_OUTCOMES.get(state)
    if outcome is None:
        # Celery sends postrun without a state when a BaseException, such as
        # the SystemExit that SIGTERM raises in a pool child, stopped the
        # task, and when eager propagation re-raises an ordinary failure.
        raised = sys.exc_info()[1]
        if isinstance(raised, Exception):
            outcome, error = Outcome.FAILURE, error or unwrap_error(raised)
        else:
            outcome = Outcome.INTERRUPTED
    # A job may return an exception object as its result: only a run that
    # did not succeed carries its error in retval.
    failed = outcome is not Outcome.SUCCESS
    if error is None and failed and isinstance(retval, BaseException):
        error = unwrap_error(retval)
    if outcome is Outcome.FAILURE and isinstance(error, SoftTimeLimitExceeded):
        outcome = Outcome.TIMEOUT
    return outcome, error, _is_declared(task, error)


def _is_declared(task: Any, error: BaseException | None) -> bool:
    # Celery accepts a class, a tuple or a list in ``throws``.
    throws = getattr(task, "throws", None)
    if error is None or not throws:
        return False
    if isinstance(throws, list):
        throws = tuple(throws)
    try:
        return isinstance(error, throws)
    except TypeError:
        return False


def _on_worker_init(**kwargs: Any) -> None:
    # Building the provider before the pool forks lets every child inherit
    # the imported exporter, instead of paying for it in its first job.
    # Each prefork child then hands its spans to this process through a
    # pipe, so a killed child loses none and a recycled one exits at once.
    with _OVERLAP:
        _overlap.check()
    with _WORKER_INIT:
        jobtrace.mark_worker()
        jobtrace.tracer()
        jobtrace.pipe_forks()


def _on_worker_process_shutdown(**kwargs: Any) -> None:
    # billiard ends a pool child with os._exit, so atexit handlers never run.
    # A child whose spans all went through its pipe returns at once.
    with _PROCESS_SHUTDOWN:
        jobtrace.flush_before_exit()


def _on_worker_shutdown(**kwargs: Any) -> None:
    with _WORKER_SHUTDOWN:
        jobtrace.shutdown()


_BEFORE_PUBLISH = Guard("celery.before_task_publish")
_AFTER_PUBLISH = Guard("celery.after_task_publish")
_SEND_ERROR = Guard("celery.send_task")
_PRERUN = Guard("celery.task_prerun")
_FAILURE = Guard("celery.task_failure")
_RETRY = Guard("celery.task_retry")
_POSTRUN = Guard("celery.task_postrun")
_WORKER_INIT = Guard("celery.worker_init")
_PROCESS_SHUTDOWN = Guard("celery.worker_process_shutdown")
_WORKER_SHUTDOWN = Guard("celery.worker_shutdown")
_OVERLAP = Guard("celery.check_other_tracers")

_RECEIVERS = (
    (signals.before_task_publish, _on_before_task_publish),
    (signals.after_task_publish, _on_after_task_publish),
    (signals.task_prerun, _on_task_prerun),
    (signals.task_failure, _on_task_failure),
    (signals.task_retry, _on_task_retry),
    (signals.task_postrun, _on_task_postrun),
    (signals.task_revoked, _reports.on_task_revoked),
    (signals.task_unknown, _reports.on_task_unknown),
    (signals.task_rejected, _reports.on_task_rejected),
    (signals.celeryd_init, _on_worker_init),
    (signals.worker_init, _on_worker_init),
    (signals.worker_process_shutdown, _on_worker_process_shutdown),
    (signals.worker_shutdown, _on_worker_shutdown),
)

_WRAPPERS = (
    ("celery.app.base", "Celery", "send_task", _wrapped_send_task),
    ("celery.worker.request", "Request", "on_timeout", _reports.wrapped_on_timeout),
    ("celery.worker.request", "Request", "on_failure", _reports.wrapped_on_failure),
)


def connect() -> None:
    """Connect every receiver and install every wrapper."""
    for signal, receiver in _RECEIVERS:
        signal.connect(receiver, weak=False, dispatch_uid=_uid(receiver))
    for module, cls, method, wrapper in _WRAPPERS:
        wrapt.wrap_function_wrapper(module, f"{cls}.{method}", wrapper)
    with _OVERLAP:
        _overlap.check()


def disconnect() -> None:
    """Undo :func:`connect`: disconnect receivers and restore the originals."""
    import celery.app.base
    import celery.worker.request

    for signal, receiver in _RECEIVERS:
        signal.disconnect(receiver, dispatch_uid=_uid(receiver))
    unwrap(celery.app.base.Celery, "send_task")
    unwrap(celery.worker.request.Request, "on_timeout")
    unwrap(celery.worker.request.Request, "on_failure")
    jobtrace.pipe_forks(False)
    _runs.clear()
    global _overlap_checked
    _overlap_checked = False
    _overlap.reset()


def _uid(receiver: Any) -> str:
    return f"jobtrace_celery.{receiver.__name__}"
