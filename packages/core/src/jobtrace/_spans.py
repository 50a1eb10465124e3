"""Send and process spans: the one place where jobtrace opens and ends them.

Plugins describe a job with :class:`Job` and call the paired functions here
from their host's hooks: :func:`begin_send` and :func:`end_send` around an
enqueue, :func:`begin_run` and :func:`end_run` around a run. The pairs exist
because hosts report the start and the end of an operation in two separate
hooks, so no context manager can span them.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import Any

from opentelemetry import context, trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from jobtrace import _carrier, _metrics, _provider, signals
from jobtrace import _names as names
from jobtrace._arguments import argument_attributes
from jobtrace._guard import qualified_name, report_error
from jobtrace._handoff import end_abandoned
from jobtrace._names import Outcome
from jobtrace._settings import PROPAGATION_MODES

log = logging.getLogger(__name__)

_RUN_KEY = context.create_key("jobtrace-run")


@dataclasses.dataclass
class Job:
    """The identity and schedule of one job, filled in by a plugin.

    ``eta`` is the scheduled start as a Unix timestamp, for delayed jobs.
    ``propagation`` overrides the process's propagation mode for this job.
    """

    system: str
    name: str
    id: str | None = None
    queue: str | None = None
    attempt: int = 1
    eta: float | None = None
    propagation: str | None = None


class SendHandle:
    """An open send span, returned by :func:`begin_send`."""

    __slots__ = ("job", "span", "started")

    def __init__(self, job: Job, span: trace.Span) -> None:
        self.job = job
        self.span = span
        self.started = time.perf_counter()


class RunHandle:
    """An open process span, returned by :func:`begin_run`.

    ``started`` is the run's start as a Unix timestamp and ``queue_time``
    the wait before it in seconds, for the job metrics.
    """

    __slots__ = ("error", "job", "queue_time", "span", "started", "token")

    def __init__(
        self,
        job: Job,
        span: trace.Span,
        started: float | None = None,
        queue_time: float | None = None,
    ) -> None:
        self.job = job
        self.span = span
        self.token: object | None = None
        self.error: BaseException | None = None
        self.started = time.time() if started is None else started
        self.queue_time = queue_time

    def detach(self) -> None:
        """Make the context from before :func:`begin_run` current again.

        :func:`end_run` does this. A plugin also calls it where its own
        code failed before :func:`end_run` ran, so that the next job on
        the thread does not start inside this run. Calling it again does
        nothing.
        """
        token, self.token = self.token, None
        if token is not None:
            context.detach(token)  # type: ignore[arg-type]


def current_job() -> Job | None:
    """Return the job whose process span is current, or None."""
    run = context.get_value(_RUN_KEY)
    return run.job if isinstance(run, RunHandle) else None


def begin_send(
    job: Job, carrier: MutableMapping[str, Any], *, retry: bool = True
) -> SendHandle:
    """Open the send span of ``job`` and write its context into ``carrier``.

    The span is not made current, so a job that enqueues another job keeps
    its own span as the current one. A job that enqueues itself while it
    runs is taken as retrying, and its next run links to the current run
    as its previous attempt. Pass ``retry=False`` when the job runs again
    for another reason, such as a repeat of a run that succeeded.
    """
    span = _provider.tracer().start_span(
        f"send {job.name}",
        kind=SpanKind.PRODUCER,
        attributes=_base_attributes(job, "send"),
    )
    _carrier.inject(carrier, span)
    carrier[names.SENT_AT_HEADER] = repr(time.time())
    mode = job.propagation or _carrier.override_mode()
    if mode in PROPAGATION_MODES:
        carrier[names.PROPAGATION_HEADER] = mode

    # A job that enqueues itself again is retrying unless the caller passed
    # retry=False, and its next attempt links to this run.
    run = context.get_value(_RUN_KEY) if retry else None
    if isinstance(run, RunHandle) and job.id is not None and run.job.id == job.id:
        previous = _carrier.traceparent_of(run.span)
        if previous is not None:
            carrier[names.PREVIOUS_ATTEMPT_HEADER] = previous

    _emit(signals.job_enqueued, job, span=span)
    return SendHandle(job, span)


def end_send(handle: SendHandle, error: BaseException | None = None) -> None:
    """End a send span; ``error`` is what the enqueue raised, if anything."""
    error_type = None
    if error is not None:
        error_type = qualified_name(error)
        _record_error(handle.span, error)
        handle.span.set_attribute(names.ERROR_TYPE, error_type)
        handle.span.set_status(Status(StatusCode.ERROR, _describe(error)))
    handle.span.end()
    _metrics.record_send(
        _base_attributes(handle.job, "send"),
        error_type,
        time.perf_counter() - handle.started,
    )


def begin_run(
    job: Job,
    carrier: Mapping[str, Any] | None,
    *,
    start_time: float | None = None,
    attach: bool = True,
    arguments: Callable[[], tuple[Any, Any]] | None = None,
) -> RunHandle:
    """Open the process span of ``job`` from the context in ``carrier``.

    With ``attach`` the span becomes the current span until :func:`end_run`,
    which must then run in the same thread. ``start_time`` is a Unix
    timestamp, for runs that a parent process reports after the fact.
    ``arguments`` returns the job's positional and keyword arguments. It
    is called only with ``JOBTRACE_RECORD_ARGUMENTS=true``, and the span
    then records them, redacted and cut to the configured length.
    """
    headers = _carrier.snapshot(carrier)
    extracted = _carrier.extract(headers)
    send_context = trace.get_current_span(extracted).get_span_context()
    mode = (
        job.propagation
        or _carrier.header_mode(headers)
        or _provider.settings().propagation
    )

    links = []
    if mode == "child" and send_context.is_valid:
        parent = extracted
    else:
        parent = trace.set_span_in_context(trace.INVALID_SPAN, extracted)
        if send_context.is_valid:
            links.append(Link(send_context, {names.LINK_TYPE: "send"}))
    previous = _carrier.parse_traceparent(headers.get(names.PREVIOUS_ATTEMPT_HEADER))
    if previous is not None:
        links.append(Link(previous, {names.LINK_TYPE: "previous_attempt"}))

    started = time.time() if start_time is None else start_time
    attributes = _base_attributes(job, "process")
    attributes[names.JOB_ATTEMPT] = job.attempt
    queue_time = _carrier.queue_time(headers, job.eta, started)
    if queue_time is not None:
        attributes[names.JOB_QUEUE_TIME] = queue_time
    options = _provider.settings()
    if arguments is not None and options.record_arguments:
        try:
            args, kwargs = arguments()
        except Exception as error:
            # A host may load arguments lazily, and loading them can fail.
            report_error("arguments", error)
        else:
            attributes.update(
                argument_attributes(
                    args, kwargs, options.redacted_keys, options.arguments_max_length
                )
            )

    span = _provider.tracer().start_span(
        f"process {job.name}",
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes=attributes,
        links=links,
        start_time=int(started * 1e9),
    )
    run = RunHandle(job, span, started, queue_time)
    if attach:
        current = context.set_value(
            _RUN_KEY, run, trace.set_span_in_context(span, parent)
        )
        run.token = context.attach(current)
        _emit(signals.job_started, job, span=span)
    else:
        with trace.use_span(span, end_on_exit=False):
            _emit(signals.job_started, job, span=span)
    return run


def record_error(
    run: RunHandle, error: BaseException, stacktrace: str | None = None
) -> None:
    """Attach ``error`` to a running job before the host reports its outcome.

    ``stacktrace`` is the formatted traceback for an error that lost its own,
    for example one that crossed a process boundary.
    """
    if run.error is None:
        _record_error(run.span, error, stacktrace)
        run.error = error


def end_run(
    run: RunHandle,
    outcome: Outcome,
    error: BaseException | None = None,
    *,
    expected: bool = False,
    end_time: float | None = None,
) -> None:
    """End a process span with ``outcome``.

    An error outcome sets status ERROR and ``error.type`` unless ``expected``
    is true, which marks an exception that the job declares as part of its
    normal behaviour.
    """
    span = run.span
    error_type = None
    try:
        if error is not None:
            record_error(run, error)
        error = run.error
        span.set_attribute(names.JOB_OUTCOME, outcome.value)
        if outcome.is_error and not expected:
            error_type = qualified_name(error) if error is not None else outcome.value
            description = _describe(error) or outcome.value
            span.set_attribute(names.ERROR_TYPE, error_type)
            span.set_status(Status(StatusCode.ERROR, description))

        if outcome is Outcome.RETRY:
            _emit(signals.job_retried, run.job, span=span, error=error)
        _emit(signals.job_finished, run.job, span=span, outcome=outcome, error=error)
    finally:
        # Whatever failed above, the span still ends and the job's context
        # is still detached, so the next job on this thread starts clean.
        # The SDK calls span processors without a guard, so end() itself
        # may raise.
        try:
            span.end(None if end_time is None else int(end_time * 1e9))
        finally:
            run.detach()
    ended = time.time() if end_time is None else end_time
    _metrics.record_run(
        _base_attributes(run.job, "process"),
        outcome.value,
        error_type,
        ended - run.started,
        run.queue_time,
    )


def report_run(
    job: Job,
    carrier: Mapping[str, Any] | None,
    outcome: Outcome,
    error: BaseException | None = None,
    *,
    start_time: float | None = None,
    unfinished: Sequence[trace.Span] = (),
) -> None:
    """Emit a finished process span for a run whose own process died.

    A worker's parent process calls this when the child that ran the job was
    killed, so the job's span reaches the backend although its own span
    never ended. ``unfinished`` are the spans the child left open, from
    :meth:`jobtrace.SpanPipe.collect`. If the job's process span is among
    them, it is the one ended here, so the spans below it keep their
    parent. The others are ended as by :func:`jobtrace.end_abandoned`.
    """
    run = begin_report(job, carrier, start_time=start_time, unfinished=unfinished)
    end_run(run, outcome, error)


def begin_report(
    job: Job,
    carrier: Mapping[str, Any] | None,
    *,
    start_time: float | None = None,
    unfinished: Sequence[trace.Span] = (),
    attach: bool = False,
) -> RunHandle:
    """Open the process span of a run whose own process died.

    This is :func:`report_run` without the end, for a parent process that
    runs code of the job's own, such as a callback, before it ends the span
    with :func:`end_run`. With ``attach`` the span is current until
    :meth:`RunHandle.detach` or :func:`end_run`.
    """
    own = next((span for span in unfinished if _runs_job(span, job)), None)
    end_abandoned([span for span in unfinished if span is not own])
    if own is None:
        run = begin_run(job, carrier, start_time=start_time, attach=attach)
    else:
        started = getattr(own, "start_time", None)
        queue_time = (getattr(own, "attributes", None) or {}).get(names.JOB_QUEUE_TIME)
        run = RunHandle(
            job, own, None if started is None else started / 1e9, queue_time
        )
        if attach:
            current = context.set_value(_RUN_KEY, run, trace.set_span_in_context(own))
            run.token = context.attach(current)
    run.span.set_attribute(names.REPORTED_BY_PARENT, True)
    return run


def _runs_job(span: trace.Span, job: Job) -> bool:
    attributes = getattr(span, "attributes", None) or {}
    return (
        getattr(span, "kind", None) is SpanKind.CONSUMER
        and job.id is not None
        and attributes.get(names.MESSAGE_ID) == job.id
    )


def _base_attributes(job: Job, operation: str) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        names.MESSAGING_SYSTEM: job.system,
        names.OPERATION_TYPE: operation,
        names.OPERATION_NAME: operation,
        names.JOB_NAME: job.name,
    }
    if job.queue:
        attributes[names.DESTINATION_NAME] = job.queue
    if job.id:
        attributes[names.MESSAGE_ID] = job.id
    return attributes


def _record_error(
    span: trace.Span, error: BaseException, stacktrace: str | None = None
) -> None:
    attributes = None
    if stacktrace and error.__traceback__ is None:
        attributes = {"exception.stacktrace": stacktrace}
    try:
        span.record_exception(error, attributes=attributes)
    except Exception:
        # The SDK formats the message with str(error), which user code can
        # make raise; the event then carries the type and a placeholder.
        span.add_event(
            "exception",
            {
                "exception.type": qualified_name(error),
                "exception.message": _message(error),
                **(attributes or {}),
            },
        )


def _describe(error: BaseException | None) -> str:
    if error is None:
        return ""
    return f"{type(error).__name__}: {_message(error)}"


def _message(error: BaseException) -> str:
    try:
        return str(error)
    except Exception:
        return f"<{type(error).__name__} whose str() raised>"


def _emit(signal: Any, job: Job, **kwargs: Any) -> None:
    if not signal.receivers:
        return
    # blinker's send() stops at the first receiver that raises; calling each
    # receiver here lets the others still run.
    for receiver in signal.receivers_for(job):
        try:
            receiver(job, **kwargs)
        except Exception as error:
            report_error(f"signal {signal.name}", error)
