"""Wrappers around RQ's enqueue and run methods that turn jobs into spans.

RQ has no signals, so each wrapper sits directly on the job's path. The
wrappers run jobtrace's code inside a :class:`jobtrace.Guard` and call RQ's
own method outside it, so RQ's results and exceptions pass through as they
are. Methods are wrapped on the class that defines them in the installed
RQ, because RQ 2.x moved ``perform_job`` from ``Worker`` to ``BaseWorker``.
"""

from __future__ import annotations

import logging
import threading
from contextvars import ContextVar
from typing import Any

import wrapt

import jobtrace
from jobtrace import Guard
from jobtrace_rq import _overlap, _reports
from jobtrace_rq._propagation import (
    ATTEMPT_FIELD,
    ETA_FIELD,
    job_from_rq,
    next_attempt,
    read_carrier,
    to_timestamp,
    write_carrier,
)
from jobtrace_rq._reports import argument

log = logging.getLogger(__name__)

# Keyed by (job id, thread id), so that workers running in several threads
# of one process keep their runs apart.
_runs: jobtrace.BoundedRegistry[tuple[str, int], jobtrace.RunHandle] = (
    jobtrace.BoundedRegistry()
)
_retried: jobtrace.BoundedRegistry[tuple[str, int], bool] = jobtrace.BoundedRegistry()

# The job whose send span is open in this context, with its carrier. RQ's
# enqueue methods call each other (a retry calls schedule_job), and only the
# outermost call for a job opens a span.
_active_send: ContextVar[tuple[Any, dict[str, Any]] | None] = ContextVar(
    "jobtrace_rq_active_send", default=None
)
# The send spans opened by the current enqueue_many call.
_batch: ContextVar[list[jobtrace.SendHandle] | None] = ContextVar(
    "jobtrace_rq_batch", default=None
)

# The pipe opened for the work horse that fork_work_horse is forking now.
_fork_pipe: jobtrace.SpanPipe | None = None

#: Installed wrappers, as (owner class or module, name), for :func:`remove`.
_installed: list[tuple[Any, str]] = []

# Whether this process looked for other tracers. The first send and the
# worker's start look, so that forked work horses inherit the result.
_overlap_checked = False


def _wrapped_enqueue_job(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    job = argument(args, kwargs, 0, "job")
    return _send(wrapped, args, kwargs, job, getattr(instance, "name", None))


def _wrapped_schedule_job(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    job = argument(args, kwargs, 0, "job")
    eta = argument(args, kwargs, 1, "datetime")
    queue = getattr(instance, "name", None)
    return _send(wrapped, args, kwargs, job, queue, eta=eta)


def _wrapped_retry(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    # Job.retry and Job._handle_retry_result both take the queue first.
    queue = getattr(argument(args, kwargs, 0, "queue"), "name", None)
    return _send(wrapped, args, kwargs, instance, queue, retry=True)


def _send(
    wrapped: Any,
    args: Any,
    kwargs: Any,
    job: Any,
    queue: str | None,
    *,
    eta: Any = None,
    retry: bool = False,
    attempt: int | None = None,
) -> Any:
    active = _active_send.get()
    if active is not None and active[0] is job:
        with _NESTED_SEND:
            _record_eta(active[1], eta)
        return wrapped(*args, **kwargs)

    if not _overlap_checked:
        with _OVERLAP:
            _check_overlap()
    handle = token = None
    with _BEGIN_SEND:
        handle, carrier = _begin_send(job, queue, eta, retry, attempt)
        token = _active_send.set((job, carrier))
    try:
        result = wrapped(*args, **kwargs)
    except BaseException as error:
        with _END_SEND:
            _end_send(handle, token, error)
        raise
    with _END_SEND:
        _end_send(handle, token, None)
    return result


def _begin_send(
    job: Any, queue: str | None, eta: Any, retry: bool, attempt: int | None = None
) -> tuple[jobtrace.SendHandle, dict[str, Any]]:
    # ``attempt`` is the next run's attempt number when the caller sets it,
    # as for requeued and repeated jobs. A retry's number is computed here.
    carrier: dict[str, Any] = {}
    if retry:
        attempt = next_attempt(job)
        _retried.put(_run_key(job), True)
    if attempt is not None:
        carrier[ATTEMPT_FIELD] = str(attempt)
    _record_eta(carrier, eta)

    described = job_from_rq(job, carrier, queue)
    handle = jobtrace.begin_send(described, carrier, retry=retry)
    write_carrier(job, carrier)
    return handle, carrier


def _record_eta(carrier: dict[str, Any], eta: Any) -> None:
    timestamp = to_timestamp(eta)
    if timestamp is not None:
        carrier[ETA_FIELD] = repr(timestamp)


def _end_send(
    handle: jobtrace.SendHandle | None, token: Any, error: BaseException | None
) -> None:
    if token is not None:
        _active_send.reset(token)
    if handle is not None:
        jobtrace.end_send(handle, error)


def _wrapped_enqueue_many(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    handles: list[jobtrace.SendHandle] = []
    token = None
    with _BEGIN_SEND:
        token = _batch.set(handles)
    try:
        result = wrapped(*args, **kwargs)
    except BaseException as error:
        with _END_SEND:
            _end_batch(handles, token, error)
        raise
    with _END_SEND:
        _end_batch(handles, token, None)
    return result


def _wrapped_create_job(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    # enqueue_many creates its jobs inside RQ and pushes them with the
    # private _enqueue_job, so their send spans open when RQ creates them.
    job = wrapped(*args, **kwargs)
    with _CREATE_JOB:
        handles = _batch.get()
        if handles is not None:
            handle, _ = _begin_send(job, getattr(instance, "name", None), None, False)
            handles.append(handle)
    return job


def _end_batch(
    handles: list[jobtrace.SendHandle], token: Any, error: BaseException | None
) -> None:
    if token is not None:
        _batch.reset(token)
    for handle in handles:
        jobtrace.end_send(handle, error)


def _wrapped_perform_job(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    job = argument(args, kwargs, 0, "job")
    with _BEGIN_RUN:
        # Only a retry sent during this run makes it a retry. The forking
        # worker sends one when a horse dies, outside any run, and the
        # horse forked for the next run starts with a copy of that mark.
        _retried.pop(_run_key(job))
        carrier = read_carrier(job)
        run = jobtrace.begin_run(
            job_from_rq(job, carrier),
            carrier,
            arguments=lambda: (job.args, job.kwargs),
        )
        _runs.put(_run_key(job), run)
    try:
        finished = wrapped(*args, **kwargs)
    except BaseException as error:
        with _END_RUN:
            _finish(instance, job, None, error)
        raise
    with _END_RUN:
        _finish(instance, job, finished, None)
    return finished


def _finish(worker: Any, job: Any, finished: Any, error: BaseException | None) -> None:
    key = _run_key(job)
    run = _runs.pop(key)
    retried = bool(_retried.pop(key))
    if run is None:
        log.debug("No process span for job %s, its start was not traced", job.id)
    else:
        outcome = jobtrace.Outcome.INTERRUPTED
        try:
            outcome = _reports.run_outcome(job, finished, error or run.error, retried)
        finally:
            try:
                jobtrace.end_run(run, outcome, error)
            finally:
                # The next job on this thread must not start inside this run.
                run.detach()

    # The work horse ends with os._exit, which skips every atexit hook. A
    # horse forked with a span pipe has handed its spans to the worker
    # already, so this returns at once. Other horses export now, within
    # JOBTRACE_FLUSH_TIMEOUT.
    if getattr(worker, "is_horse", False):
        jobtrace.flush_before_exit()


def _wrapped_handle_exception(
    wrapped: Any, instance: Any, args: Any, kwargs: Any
) -> Any:
    # RQ catches the job's exception inside perform_job and hands it here.
    with _HANDLE_EXCEPTION:
        job = argument(args, kwargs, 0, "job")
        error = args[2] if len(args) > 2 else None
        run = _runs.get(_run_key(job))
        if run is not None and isinstance(error, BaseException):
            jobtrace.record_error(run, error)
    return wrapped(*args, **kwargs)


def _wrapped_work(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    # Building the provider before the first fork lets every work horse
    # inherit the imported exporter instead of importing it per job.
    with _WORK:
        jobtrace.mark_worker()
        jobtrace.tracer()
    with _OVERLAP:
        _check_overlap()
    try:
        return wrapped(*args, **kwargs)
    finally:
        # The worker keeps its horses' spans in its batch queue. A worker
        # that `rq worker-pool` forks ends with os._exit once work()
        # returns, without running atexit hooks.
        with _WORK:
            jobtrace.flush()


def _check_overlap() -> None:
    global _overlap_checked
    _overlap_checked = True
    _overlap.check()


def _wrapped_fork_work_horse(
    wrapped: Any, instance: Any, args: Any, kwargs: Any
) -> Any:
    # The horse writes its spans into a pipe that the worker reads, so the
    # worker exports them in batches and the job never waits for an export.
    return _start_horse(wrapped, args, kwargs, spawn=False)


def _wrapped_spawn_work_horse(
    wrapped: Any, instance: Any, args: Any, kwargs: Any
) -> Any:
    # RQ 3.x's SpawnWorker starts the horse with os.posix_spawn and passes
    # it os.environ, so the horse finds the pipe's ends in the environment
    # and its jobtrace uses them as a forked horse's does.
    # NOTE: another thread of the worker that starts a process during this
    # call also passes the variable and the descriptors on. RQ's own
    # threads (heartbeat, command listener) start none.
    return _start_horse(wrapped, args, kwargs, spawn=True)


def _start_horse(wrapped: Any, args: Any, kwargs: Any, *, spawn: bool) -> Any:
    global _fork_pipe
    with _FORK:
        _fork_pipe = jobtrace.open_span_pipe()
        if spawn and _fork_pipe is not None:
            _fork_pipe.pass_to_spawn()
    try:
        result = wrapped(*args, **kwargs)
    except BaseException:
        with _FORK:
            _close_fork_pipe(failed=True)
        raise
    # Only the worker gets here: a forked horse ends inside wrapped() with
    # os._exit.
    with _FORK:
        _close_fork_pipe(failed=False)
    return result


def _close_fork_pipe(*, failed: bool) -> None:
    global _fork_pipe
    pipe, _fork_pipe = _fork_pipe, None
    if pipe is None:
        return
    if failed:
        pipe.close()
    else:
        pipe.use_in_parent()
        _reports.watch_horse(pipe)


def _wrapped_main_work_horse(
    wrapped: Any, instance: Any, args: Any, kwargs: Any
) -> Any:
    with _WORK:
        pipe = _fork_pipe
        if pipe is not None:
            pipe.use_in_child()
        else:
            # A SpawnWorker's work horse is a new interpreter that never
            # called work(). On RQ 3.x, building its provider makes it use
            # the span pipe that its worker named in the environment.
            jobtrace.mark_worker()
            jobtrace.tracer()
    return wrapped(*args, **kwargs)


def _run_key(job: Any) -> tuple[str, int]:
    return (job.id, threading.get_ident())


_NESTED_SEND = Guard("rq.Queue.schedule_job")
_BEGIN_SEND = Guard("rq.enqueue.begin")
_END_SEND = Guard("rq.enqueue.end")
_CREATE_JOB = Guard("rq.Queue.create_job")
_BEGIN_RUN = Guard("rq.perform_job.begin")
_END_RUN = Guard("rq.perform_job.end")
_HANDLE_EXCEPTION = Guard("rq.handle_exception")
_WORK = Guard("rq.work")
_OVERLAP = Guard("rq.check_other_tracers")
_FORK = Guard("rq.fork_work_horse")

_WORKER_WRAPPERS = (
    ("work", _wrapped_work),
    ("main_work_horse", _wrapped_main_work_horse),
    ("perform_job", _wrapped_perform_job),
    ("handle_exception", _wrapped_handle_exception),
    ("monitor_work_horse", _reports.wrapped_monitor_work_horse),
    ("handle_job_failure", _reports.wrapped_handle_job_failure),
)


def _targets() -> list[tuple[Any, str, Any]]:
    from rq import worker
    from rq.job import Job
    from rq.queue import Queue

    from jobtrace_rq import _resends

    targets: list[tuple[Any, str, Any]] = [
        (Queue, "enqueue_job", _wrapped_enqueue_job),
        (Queue, "schedule_job", _wrapped_schedule_job),
        (Queue, "enqueue_many", _wrapped_enqueue_many),
        (Queue, "create_job", _wrapped_create_job),
        (Job, "retry", _wrapped_retry),
    ]
    # RQ 2.x and newer re-enqueue a job that returns Retry through here.
    if "_handle_retry_result" in vars(Job):
        targets.append((Job, "_handle_retry_result", _wrapped_retry))
    targets.extend(_resends.targets())
    targets.extend(_reports.stopped_callback_targets())

    names = ("Worker", "SimpleWorker", "SpawnWorker")
    classes = [getattr(worker, name) for name in names if hasattr(worker, name)]
    for method, wrapper in _WORKER_WRAPPERS:
        targets.extend((owner, method, wrapper) for owner in _owners(classes, method))
    targets.extend(
        (owner, "fork_work_horse", _wrapped_fork_work_horse)
        for owner in _owners([worker.Worker], "fork_work_horse")
    )
    # SpawnWorker overrides fork_work_horse to start a new interpreter. On
    # RQ 2.x that interpreter runs the plain rq.Worker and never imports
    # jobtrace, so it gets no pipe.
    spawning = getattr(worker, "SpawnWorker", None)
    overrides = spawning is not None and "fork_work_horse" in vars(spawning)
    if overrides and _rq_major() >= 3:
        targets.append((spawning, "fork_work_horse", _wrapped_spawn_work_horse))
    return targets


def _rq_major() -> int:
    version = jobtrace.host_version("rq") or "0"
    try:
        return int(version.split(".")[0])
    except ValueError:
        return 0


def _owners(classes: list[type], method: str) -> list[type]:
    """Return the classes that define ``method`` for ``classes``, once each."""
    owners: list[type] = []
    for cls in classes:
        owner = next((c for c in cls.__mro__ if method in vars(c)), None)
        if owner is not None and owner not in owners:
            owners.append(owner)
    return owners


def install() -> None:
    """Wrap RQ's enqueue and worker methods."""
    for owner, method, wrapper in _targets():
        wrapt.wrap_function_wrapper(owner, method, wrapper)
        _installed.append((owner, method))


def _unwrap(owner: Any, method: str) -> None:
    # Read the wrapper from the class's own dict, because getattr() would
    # bind a wrapped classmethod and restore it as a bound method.
    original = getattr(vars(owner).get(method), "__wrapped__", None)
    if original is not None:
        setattr(owner, method, original)


def remove() -> None:
    """Undo :func:`install`: restore RQ's original methods."""
    global _overlap_checked
    while _installed:
        owner, method = _installed.pop()
        _unwrap(owner, method)
    _overlap_checked = False
    _overlap.reset()
    _runs.clear()
    _retried.clear()
    _reports.clear()
