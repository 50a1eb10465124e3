"""Tests for send and process spans, their headers, links and signals."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
from opentelemetry import baggage, context, trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind, StatusCode

from jobtrace import (
    Job,
    Outcome,
    _provider,
    begin_report,
    begin_run,
    begin_send,
    current_job,
    end_run,
    end_send,
    error_counts,
    propagation_mode,
    record_error,
    report_run,
    signals,
)
from jobtrace import _names as names

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
SPAN_ID = "b7ad6b7169203331"
VALID_TRACEPARENT = f"00-{TRACE_ID}-{SPAN_ID}-01"


@pytest.fixture(autouse=True)
def capture_warnings(caplog: pytest.LogCaptureFixture) -> None:
    """Capture jobtrace's warnings even if an earlier test raised the root level.

    The in-process Celery worker tests leave the root logger at ERROR.
    """
    caplog.set_level(logging.WARNING, logger="jobtrace")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove JOBTRACE_* variables of the calling shell before settings are read."""
    for name in list(os.environ):
        if name.startswith("JOBTRACE_"):
            monkeypatch.delenv(name)


def make_job(**changes: Any) -> Job:
    """Return a Celery-like job with ``changes`` applied."""
    job = Job(system="celery", name="add", id="job-1", queue="default")
    return dataclasses.replace(job, **changes)


def set_process_mode(monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    """Set JOBTRACE_PROPAGATION and make jobtrace read its settings again.

    The ``exporter`` fixture has already read the settings, and its
    teardown resets them, so the test must request ``exporter``.
    """
    monkeypatch.setenv("JOBTRACE_PROPAGATION", mode)
    _provider._settings = None


def send(job: Job) -> dict[str, Any]:
    """Run a complete enqueue of ``job`` and return the message headers."""
    carrier: dict[str, Any] = {}
    end_send(begin_send(job, carrier))
    return carrier


def run(job: Job, carrier: Any, **kwargs: Any) -> None:
    """Run ``job`` from ``carrier`` with outcome success."""
    end_run(begin_run(job, carrier, **kwargs), Outcome.SUCCESS)


def only_span(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    """Return the one finished span called ``name``."""
    found = [span for span in exporter.get_finished_spans() if span.name == name]
    assert len(found) == 1
    return found[0]


def exception_events(span: ReadableSpan) -> list[Mapping[str, Any]]:
    """Return the attributes of each ``exception`` event of ``span``."""
    return [
        dict(event.attributes or {})
        for event in span.events
        if event.name == "exception"
    ]


def raise_and_catch(error: BaseException) -> BaseException:
    """Raise ``error`` and return it, so it carries a traceback."""
    try:
        raise error
    except BaseException as caught:
        return caught


class CustomError(Exception):
    """An exception type defined outside builtins."""


# Send spans


def test_send_attributes(exporter: InMemorySpanExporter) -> None:
    """A send span has the producer kind and the messaging attributes."""
    send(make_job())

    span = only_span(exporter, "send add")
    assert span.kind is SpanKind.PRODUCER
    assert span.status.status_code is StatusCode.UNSET
    assert dict(span.attributes or {}) == {
        "messaging.system": "celery",
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.destination.name": "default",
        "messaging.message.id": "job-1",
        "jobtrace.job.name": "add",
    }


def test_send_without_queue_or_id(exporter: InMemorySpanExporter) -> None:
    """A job without queue or id gets no destination or message id attribute."""
    send(make_job(id=None, queue=None))

    attributes = only_span(exporter, "send add").attributes or {}
    assert names.DESTINATION_NAME not in attributes
    assert names.MESSAGE_ID not in attributes


def test_send_headers(exporter: InMemorySpanExporter) -> None:
    """The carrier gets the send span's traceparent and the send time."""
    before = time.time()
    carrier = send(make_job())
    after = time.time()

    span_context = only_span(exporter, "send add").context
    assert span_context is not None
    trace_id = trace.format_trace_id(span_context.trace_id)
    span_id = trace.format_span_id(span_context.span_id)
    flags = f"{span_context.trace_flags:02x}"
    assert carrier["traceparent"] == f"00-{trace_id}-{span_id}-{flags}"
    assert isinstance(carrier[names.SENT_AT_HEADER], str)
    assert before <= float(carrier[names.SENT_AT_HEADER]) <= after
    assert names.PROPAGATION_HEADER not in carrier
    assert names.PREVIOUS_ATTEMPT_HEADER not in carrier


def test_send_header_values_are_strings(exporter: InMemorySpanExporter) -> None:
    """Every header that begin_send writes has a string value."""
    with propagation_mode("child"):
        carrier = send(make_job())

    assert all(isinstance(value, str) for value in carrier.values())


def test_send_mode_from_job(exporter: InMemorySpanExporter) -> None:
    """A job's own propagation mode is written to the message."""
    carrier = send(make_job(propagation="child"))

    assert carrier[names.PROPAGATION_HEADER] == "child"


def test_send_mode_from_block(exporter: InMemorySpanExporter) -> None:
    """propagation_mode sets the header only for jobs enqueued inside it."""
    with propagation_mode("child"):
        inside = send(make_job())
    outside = send(make_job())

    assert inside[names.PROPAGATION_HEADER] == "child"
    assert names.PROPAGATION_HEADER not in outside


def test_send_job_mode_beats_block(exporter: InMemorySpanExporter) -> None:
    """A job's own mode takes precedence over the propagation_mode block."""
    with propagation_mode("child"):
        carrier = send(make_job(propagation="link"))

    assert carrier[names.PROPAGATION_HEADER] == "link"


def test_propagation_mode_nesting(exporter: InMemorySpanExporter) -> None:
    """An inner propagation_mode block wins and the outer one is restored."""
    with propagation_mode("child"):
        with propagation_mode("link"):
            inner = send(make_job())
        outer = send(make_job())

    assert inner[names.PROPAGATION_HEADER] == "link"
    assert outer[names.PROPAGATION_HEADER] == "child"


@pytest.mark.parametrize("mode", ["parent", "", "CHILD", "none"])
def test_propagation_mode_invalid(mode: str) -> None:
    """An unknown mode raises ValueError that names the value."""
    with pytest.raises(ValueError, match="Invalid propagation mode"):
        with propagation_mode(mode):
            pass


def test_send_not_current(exporter: InMemorySpanExporter) -> None:
    """begin_send does not make the send span the current span."""
    handle = begin_send(make_job(), {})
    current = trace.get_current_span()
    end_send(handle)

    assert current is not handle.span
    assert not current.get_span_context().is_valid


def test_send_inside_run(exporter: InMemorySpanExporter) -> None:
    """A job enqueued by a running job is a child, and the run stays current."""
    parent_run = begin_run(make_job(name="outer", id="outer-1"), {})
    handle = begin_send(make_job(), {})
    current = trace.get_current_span()
    end_send(handle)
    end_run(parent_run, Outcome.SUCCESS)

    send_span = only_span(exporter, "send add")
    process_span = only_span(exporter, "process outer")
    assert current is parent_run.span
    assert send_span.parent is not None
    assert process_span.context is not None
    assert send_span.parent.span_id == process_span.context.span_id


def test_send_without_current_span(exporter: InMemorySpanExporter) -> None:
    """A job enqueued outside any span gets a root send span."""
    send(make_job())

    assert only_span(exporter, "send add").parent is None


def test_end_send_error(exporter: InMemorySpanExporter) -> None:
    """An enqueue error sets status ERROR and adds an exception event."""
    handle = begin_send(make_job(), {})
    end_send(handle, raise_and_catch(ConnectionError("broker down")))

    span = only_span(exporter, "send add")
    events = exception_events(span)
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "ConnectionError: broker down"
    assert len(events) == 1
    assert events[0]["exception.type"] == "ConnectionError"


def test_send_carries_baggage(exporter: InMemorySpanExporter) -> None:
    """Baggage current at enqueue reaches the job's run through the message."""
    token = context.attach(baggage.set_baggage("tenant", "acme"))
    try:
        carrier = send(make_job())
    finally:
        context.detach(token)
    handle = begin_run(make_job(), carrier)
    seen = baggage.get_baggage("tenant")
    end_run(handle, Outcome.SUCCESS)

    assert "tenant=acme" in carrier["baggage"]
    assert seen == "acme"


# Process spans: parent and links


def test_run_attributes(exporter: InMemorySpanExporter) -> None:
    """A process span has the consumer kind, messaging attributes and attempt."""
    run(make_job(attempt=3), {})

    span = only_span(exporter, "process add")
    attributes = dict(span.attributes or {})
    assert span.kind is SpanKind.CONSUMER
    assert attributes[names.MESSAGING_SYSTEM] == "celery"
    assert attributes[names.OPERATION_TYPE] == "process"
    assert attributes[names.OPERATION_NAME] == "process"
    assert attributes[names.DESTINATION_NAME] == "default"
    assert attributes[names.MESSAGE_ID] == "job-1"
    assert attributes[names.JOB_NAME] == "add"
    assert attributes[names.JOB_ATTEMPT] == 3
    assert attributes[names.JOB_OUTCOME] == "success"


def test_run_link_mode(exporter: InMemorySpanExporter) -> None:
    """In link mode the run is a new root that links to the send span."""
    run(make_job(), send(make_job()))

    send_span = only_span(exporter, "send add")
    process_span = only_span(exporter, "process add")
    assert send_span.context is not None
    assert process_span.context is not None
    assert process_span.parent is None
    assert process_span.context.trace_id != send_span.context.trace_id
    assert len(process_span.links) == 1
    assert process_span.links[0].context.span_id == send_span.context.span_id
    assert process_span.links[0].context.trace_id == send_span.context.trace_id
    assert dict(process_span.links[0].attributes or {}) == {names.LINK_TYPE: "send"}


def test_run_link_mode_ignores_current(exporter: InMemorySpanExporter) -> None:
    """In link mode the run is a root even when another span is current."""
    with _provider.tracer().start_as_current_span("worker loop"):
        run(make_job(), send(make_job(id="other")))

    assert only_span(exporter, "process add").parent is None


def test_run_child_mode(exporter: InMemorySpanExporter) -> None:
    """In child mode the run is a child of the send span and has no links."""
    run(make_job(propagation="child"), send(make_job()))

    send_span = only_span(exporter, "send add")
    process_span = only_span(exporter, "process add")
    assert send_span.context is not None
    assert process_span.context is not None
    assert process_span.parent is not None
    assert process_span.parent.span_id == send_span.context.span_id
    assert process_span.context.trace_id == send_span.context.trace_id
    assert process_span.links == ()


def test_run_child_mode_from_env(
    exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """JOBTRACE_PROPAGATION=child makes every run a child of its send span."""
    set_process_mode(monkeypatch, "child")

    run(make_job(), send(make_job()))

    send_span = only_span(exporter, "send add")
    process_span = only_span(exporter, "process add")
    assert _provider.settings().propagation == "child"
    assert send_span.context is not None
    assert process_span.parent is not None
    assert process_span.parent.span_id == send_span.context.span_id


def test_header_link_beats_env_child(
    exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A link mode from the message overrides the worker's child setting."""
    set_process_mode(monkeypatch, "child")
    with propagation_mode("link"):
        carrier = send(make_job())

    run(make_job(), carrier)

    process_span = only_span(exporter, "process add")
    assert process_span.parent is None
    assert len(process_span.links) == 1


def test_header_child_beats_env_link(exporter: InMemorySpanExporter) -> None:
    """A child mode from the message overrides the worker's default link mode."""
    with propagation_mode("child"):
        carrier = send(make_job())

    run(make_job(), carrier)

    process_span = only_span(exporter, "process add")
    assert process_span.parent is not None
    assert process_span.links == ()


def test_job_mode_beats_header(exporter: InMemorySpanExporter) -> None:
    """The worker's Job.propagation overrides the mode in the message."""
    with propagation_mode("child"):
        carrier = send(make_job())

    run(make_job(propagation="link"), carrier)

    assert only_span(exporter, "process add").parent is None


@pytest.mark.parametrize("value", ["sideways", "", 1, ["child"], {"child": 1}])
def test_invalid_header_mode(
    exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch, value: object
) -> None:
    """An unknown mode in the message falls back to the worker's mode."""
    set_process_mode(monkeypatch, "child")
    carrier = send(make_job())
    carrier[names.PROPAGATION_HEADER] = value

    run(make_job(), carrier)

    assert only_span(exporter, "process add").parent is not None


def test_child_mode_without_context(exporter: InMemorySpanExporter) -> None:
    """In child mode a message without trace context gives a root, unlinked run."""
    run(make_job(propagation="child"), {names.SENT_AT_HEADER: repr(time.time())})

    process_span = only_span(exporter, "process add")
    assert process_span.parent is None
    assert process_span.links == ()


def test_previous_attempt_link(exporter: InMemorySpanExporter) -> None:
    """A job that enqueues itself while running links its retry to that run."""
    first = begin_run(make_job(), {})
    retry_carrier = send(make_job())
    end_run(first, Outcome.RETRY)
    run(make_job(attempt=2), retry_carrier)

    runs = [s for s in exporter.get_finished_spans() if s.name == "process add"]
    send_span = only_span(exporter, "send add")
    first_context = first.span.get_span_context()
    first_id = trace.format_span_id(first_context.span_id)
    assert len(runs) == 2
    assert send_span.context is not None
    assert first_id in retry_carrier[names.PREVIOUS_ATTEMPT_HEADER]
    assert [dict(link.attributes or {}) for link in runs[1].links] == [
        {names.LINK_TYPE: "send"},
        {names.LINK_TYPE: "previous_attempt"},
    ]
    assert runs[1].links[0].context.span_id == send_span.context.span_id
    assert runs[1].links[1].context.span_id == first_context.span_id
    assert runs[1].links[1].context.trace_id == first_context.trace_id


def test_previous_attempt_child_mode(exporter: InMemorySpanExporter) -> None:
    """In child mode a retry is the send span's child and still links back."""
    first = begin_run(make_job(propagation="child"), {})
    retry_carrier = send(make_job())
    end_run(first, Outcome.RETRY)
    run(make_job(propagation="child", attempt=2), retry_carrier)

    retry = [s for s in exporter.get_finished_spans() if s.name == "process add"][1]
    assert retry.parent is not None
    assert len(retry.links) == 1
    assert retry.links[0].context.span_id == first.span.get_span_context().span_id


@pytest.mark.parametrize(
    ("running", "sent"),
    [
        pytest.param(make_job(), make_job(id="job-2"), id="other-id"),
        pytest.param(make_job(id=None), make_job(id=None), id="no-id"),
    ],
)
def test_no_previous_attempt(
    exporter: InMemorySpanExporter, running: Job, sent: Job
) -> None:
    """Only a job with the running job's id gets a previous-attempt header."""
    handle = begin_run(running, {})
    carrier = send(sent)
    end_run(handle, Outcome.SUCCESS)

    assert names.PREVIOUS_ATTEMPT_HEADER not in carrier


def test_no_previous_attempt_without_retry(exporter: InMemorySpanExporter) -> None:
    """A running job that sends itself with retry=False gets no retry link."""
    handle = begin_run(make_job(), {})
    carrier: dict[str, Any] = {}
    end_send(begin_send(make_job(), carrier, retry=False))
    end_run(handle, Outcome.SUCCESS)

    assert names.PREVIOUS_ATTEMPT_HEADER not in carrier
    assert names.SENT_AT_HEADER in carrier


def test_no_previous_attempt_detached(exporter: InMemorySpanExporter) -> None:
    """A run that was not attached is not current, so it gets no retry link."""
    handle = begin_run(make_job(), {}, attach=False)
    carrier = send(make_job())
    end_run(handle, Outcome.SUCCESS)

    assert names.PREVIOUS_ATTEMPT_HEADER not in carrier


@pytest.mark.parametrize("value", ["garbage", "", 7, "00-" + "a" * 9000])
def test_invalid_previous_attempt(
    exporter: InMemorySpanExporter, value: object
) -> None:
    """An unusable previous-attempt header adds no link."""
    run(make_job(), {names.PREVIOUS_ATTEMPT_HEADER: value})

    assert only_span(exporter, "process add").links == ()


# Process spans: queue time


@pytest.mark.parametrize(
    ("sent_at", "eta", "start_time", "expected"),
    [
        pytest.param("100.0", None, 103.5, 3.5, id="from-send"),
        pytest.param("100.0", 102.0, 103.5, 1.5, id="from-eta"),
        pytest.param("100.0", 50.0, 103.5, 3.5, id="eta-before-send"),
        pytest.param("110.0", None, 103.5, 0.0, id="clock-skew"),
        pytest.param("100.0", 200.0, 103.5, 0.0, id="eta-in-future"),
    ],
)
def test_queue_time(
    exporter: InMemorySpanExporter,
    sent_at: str,
    eta: float | None,
    start_time: float,
    expected: float,
) -> None:
    """Queue time runs from the send time or ETA to the start, never below 0."""
    run(make_job(eta=eta), {names.SENT_AT_HEADER: sent_at}, start_time=start_time)

    attributes = only_span(exporter, "process add").attributes or {}
    assert attributes[names.JOB_QUEUE_TIME] == expected


@pytest.mark.parametrize(
    "carrier",
    [
        pytest.param({}, id="missing"),
        pytest.param({names.SENT_AT_HEADER: "soon"}, id="not-a-number"),
        pytest.param({names.SENT_AT_HEADER: ""}, id="empty"),
        pytest.param({names.SENT_AT_HEADER: "nan"}, id="nan"),
        pytest.param({names.SENT_AT_HEADER: "inf"}, id="inf"),
        pytest.param({names.SENT_AT_HEADER: 100.0}, id="float"),
        pytest.param({names.SENT_AT_HEADER: b"100.0"}, id="bytes"),
        pytest.param({names.SENT_AT_HEADER: "1" * 40}, id="too-long"),
    ],
)
def test_queue_time_missing(
    exporter: InMemorySpanExporter, carrier: dict[str, Any]
) -> None:
    """Without a usable send time the span has no queue time, even with an ETA."""
    run(make_job(eta=101.0), carrier, start_time=103.5)

    attributes = only_span(exporter, "process add").attributes or {}
    assert names.JOB_QUEUE_TIME not in attributes


# Process spans: malformed carriers


class NotAMapping:
    """An object with a dict-like ``get`` that is not a Mapping."""

    def get(self, key: str, default: object = None) -> object:
        return VALID_TRACEPARENT if key == "traceparent" else default


class FailingMapping(Mapping[str, Any]):
    """A Mapping whose every lookup raises, as a broken header object might."""

    def __getitem__(self, key: str) -> Any:
        raise RuntimeError(f"lookup of {key} failed")

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("iteration failed")

    def __len__(self) -> int:
        return 1


MALFORMED_CARRIERS = [
    pytest.param({"traceparent": "garbage"}, id="garbage"),
    pytest.param({"traceparent": ""}, id="empty-value"),
    pytest.param({}, id="empty-carrier"),
    pytest.param(
        {"traceparent": f"01-{TRACE_ID}-{SPAN_ID}-01-" + "a" * 8200}, id="over-long"
    ),
    pytest.param({"traceparent": 123}, id="int"),
    pytest.param({"traceparent": VALID_TRACEPARENT.encode()}, id="bytes"),
    pytest.param({"traceparent": [VALID_TRACEPARENT]}, id="list"),
    pytest.param({"traceparent": {"value": VALID_TRACEPARENT}}, id="dict"),
    pytest.param({"traceparent": None}, id="none-value"),
    pytest.param({1: VALID_TRACEPARENT, None: "x"}, id="non-string-keys"),
    pytest.param(None, id="none"),
    pytest.param([("traceparent", VALID_TRACEPARENT)], id="list-carrier"),
    pytest.param(NotAMapping(), id="not-a-mapping"),
    pytest.param(f"traceparent={VALID_TRACEPARENT}", id="string-carrier"),
]


@pytest.mark.parametrize("carrier", MALFORMED_CARRIERS)
@pytest.mark.parametrize("mode", ["link", "child"])
def test_malformed_carrier(
    exporter: InMemorySpanExporter, carrier: object, mode: str
) -> None:
    """A malformed carrier gives a root process span without links or errors."""
    run(make_job(propagation=mode), carrier)

    span = only_span(exporter, "process add")
    assert span.parent is None
    assert span.links == ()
    assert span.status.status_code is StatusCode.UNSET
    assert error_counts() == {}


def test_over_long_is_the_limit(exporter: InMemorySpanExporter) -> None:
    """The over-long traceparent fails only by its length, as a shorter one works."""
    run(make_job(), {"traceparent": f"01-{TRACE_ID}-{SPAN_ID}-01-" + "a" * 100})

    assert len(only_span(exporter, "process add").links) == 1


def test_failing_mapping(exporter: InMemorySpanExporter) -> None:
    """A Mapping whose lookups raise gives a root process span, not an error."""
    run(make_job(), FailingMapping())

    span = only_span(exporter, "process add")
    assert span.parent is None
    assert span.links == ()


# Ending runs


ERROR_OUTCOMES = [outcome for outcome in Outcome if outcome.is_error]
OTHER_OUTCOMES = [outcome for outcome in Outcome if not outcome.is_error]


def test_error_outcome_set() -> None:
    """Exactly the documented outcomes count as errors."""
    assert {outcome.value for outcome in ERROR_OUTCOMES} == {
        "failure",
        "rejected",
        "timeout",
        "killed",
        "interrupted",
    }


@pytest.mark.parametrize("outcome", ERROR_OUTCOMES)
def test_error_outcome_with_error(
    exporter: InMemorySpanExporter, outcome: Outcome
) -> None:
    """An error outcome sets status ERROR and error.type from the exception."""
    handle = begin_run(make_job(), {})
    end_run(handle, outcome, raise_and_catch(ValueError("bad input")))

    span = only_span(exporter, "process add")
    attributes = span.attributes or {}
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "ValueError: bad input"
    assert attributes[names.ERROR_TYPE] == "ValueError"
    assert attributes[names.JOB_OUTCOME] == outcome.value
    assert len(exception_events(span)) == 1


@pytest.mark.parametrize("outcome", ERROR_OUTCOMES)
def test_error_outcome_without_error(
    exporter: InMemorySpanExporter, outcome: Outcome
) -> None:
    """An error outcome without an exception uses the outcome as error.type."""
    end_run(begin_run(make_job(), {}), outcome)

    span = only_span(exporter, "process add")
    attributes = span.attributes or {}
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == outcome.value
    assert attributes[names.ERROR_TYPE] == outcome.value
    assert exception_events(span) == []


def test_error_type_qualified(exporter: InMemorySpanExporter) -> None:
    """error.type of a non-builtin exception includes its module."""
    end_run(begin_run(make_job(), {}), Outcome.FAILURE, CustomError("x"))

    attributes = only_span(exporter, "process add").attributes or {}
    assert attributes[names.ERROR_TYPE] == f"{__name__}.CustomError"


@pytest.mark.parametrize("outcome", OTHER_OUTCOMES)
def test_other_outcomes_unset(exporter: InMemorySpanExporter, outcome: Outcome) -> None:
    """Success, retry, revoked and skipped leave status UNSET and no error.type."""
    end_run(begin_run(make_job(), {}), outcome, ValueError("retry later"))

    span = only_span(exporter, "process add")
    attributes = span.attributes or {}
    assert span.status.status_code is StatusCode.UNSET
    assert names.ERROR_TYPE not in attributes
    assert attributes[names.JOB_OUTCOME] == outcome.value
    assert len(exception_events(span)) == 1


def test_expected_failure(exporter: InMemorySpanExporter) -> None:
    """An expected failure keeps status UNSET but still records the exception."""
    handle = begin_run(make_job(), {})
    end_run(handle, Outcome.FAILURE, KeyError("missing"), expected=True)

    span = only_span(exporter, "process add")
    attributes = span.attributes or {}
    assert span.status.status_code is StatusCode.UNSET
    assert names.ERROR_TYPE not in attributes
    assert attributes[names.JOB_OUTCOME] == "failure"
    assert len(exception_events(span)) == 1


def test_run_start_and_end_time(exporter: InMemorySpanExporter) -> None:
    """start_time and end_time in seconds become the span's nanosecond times."""
    handle = begin_run(make_job(), {}, start_time=1_000.0)
    end_run(handle, Outcome.SUCCESS, end_time=1_002.5)

    span = only_span(exporter, "process add")
    assert span.start_time == 1_000_000_000_000
    assert span.end_time == 1_002_500_000_000


def test_record_error_stacktrace(exporter: InMemorySpanExporter) -> None:
    """A given stack trace is used for an exception that lost its own."""
    remote = "Traceback (most recent call last):\n  ...\nValueError: remote\n"
    handle = begin_run(make_job(), {})
    record_error(handle, ValueError("remote"), stacktrace=remote)
    end_run(handle, Outcome.FAILURE)

    span = only_span(exporter, "process add")
    events = exception_events(span)
    assert len(events) == 1
    assert events[0]["exception.stacktrace"] == remote
    assert events[0]["exception.message"] == "remote"
    assert (span.attributes or {})[names.ERROR_TYPE] == "ValueError"


def test_record_error_own_traceback(exporter: InMemorySpanExporter) -> None:
    """An exception with its own traceback keeps it over a given stack trace."""
    handle = begin_run(make_job(), {})
    record_error(handle, raise_and_catch(ValueError("local")), stacktrace="other")
    end_run(handle, Outcome.FAILURE)

    events = exception_events(only_span(exporter, "process add"))
    assert len(events) == 1
    assert "raise_and_catch" in events[0]["exception.stacktrace"]


def test_record_error_first_wins(exporter: InMemorySpanExporter) -> None:
    """Only the first recorded error is kept, also over end_run's error."""
    handle = begin_run(make_job(), {})
    record_error(handle, CustomError("first"))
    record_error(handle, ValueError("second"))
    end_run(handle, Outcome.FAILURE, KeyError("third"))

    span = only_span(exporter, "process add")
    assert len(exception_events(span)) == 1
    assert (span.attributes or {})[names.ERROR_TYPE] == f"{__name__}.CustomError"
    assert span.status.description == "CustomError: first"


def test_report_run(exporter: InMemorySpanExporter) -> None:
    """report_run emits a finished, marked span without changing the context."""
    before = trace.get_current_span()
    report_run(make_job(), send(make_job()), Outcome.KILLED, start_time=1_000.0)

    span = only_span(exporter, "process add")
    attributes = span.attributes or {}
    assert attributes[names.REPORTED_BY_PARENT] is True
    assert attributes[names.JOB_OUTCOME] == "killed"
    assert attributes[names.ERROR_TYPE] == "killed"
    assert span.status.status_code is StatusCode.ERROR
    assert span.start_time == 1_000_000_000_000
    assert len(span.links) == 1
    assert trace.get_current_span() is before
    assert current_job() is None


def test_report_run_with_error(exporter: InMemorySpanExporter) -> None:
    """report_run records the given error on the span."""
    report_run(make_job(), {}, Outcome.FAILURE, MemoryError())

    span = only_span(exporter, "process add")
    assert (span.attributes or {})[names.ERROR_TYPE] == "MemoryError"
    assert len(exception_events(span)) == 1


def test_begin_report_attached(exporter: InMemorySpanExporter) -> None:
    """begin_report with attach makes the reported span current until end_run."""
    job = make_job()
    before = trace.get_current_span()
    run = begin_report(job, send(job), start_time=1_000.0, attach=True)
    with _provider.tracer().start_as_current_span("callback"):
        pass
    during = current_job()
    end_run(run, Outcome.INTERRUPTED)

    reported = only_span(exporter, "process add")
    callback = only_span(exporter, "callback")
    assert during is job
    assert callback.parent is not None
    assert callback.parent.span_id == reported.context.span_id
    assert (reported.attributes or {})[names.REPORTED_BY_PARENT] is True
    assert (reported.attributes or {})[names.JOB_OUTCOME] == "interrupted"
    assert trace.get_current_span() is before
    assert current_job() is None


def test_run_not_reported(exporter: InMemorySpanExporter) -> None:
    """A normal run does not carry the reported_by_parent attribute."""
    run(make_job(), {})

    attributes = only_span(exporter, "process add").attributes or {}
    assert names.REPORTED_BY_PARENT not in attributes


# Current job and context


def test_current_job(exporter: InMemorySpanExporter) -> None:
    """current_job returns the running job only between begin_run and end_run."""
    job = make_job()
    before = current_job()
    handle = begin_run(job, {})
    during = current_job()
    end_run(handle, Outcome.SUCCESS)
    after = current_job()

    assert before is None
    assert during is job
    assert after is None


def test_current_job_detached_run(exporter: InMemorySpanExporter) -> None:
    """A run begun with attach=False is not the current job."""
    handle = begin_run(make_job(), {}, attach=False)
    during = current_job()
    current = trace.get_current_span()
    end_run(handle, Outcome.SUCCESS)

    assert during is None
    assert current is not handle.span
    assert handle.token is None


def test_context_restored(exporter: InMemorySpanExporter) -> None:
    """end_run detaches the run's context, so the previous span is current again."""
    with _provider.tracer().start_as_current_span("worker loop") as outer:
        handle = begin_run(make_job(), {})
        during = trace.get_current_span()
        end_run(handle, Outcome.SUCCESS)
        after = trace.get_current_span()

    assert during is handle.span
    assert after is outer
    assert handle.token is None


def test_end_run_twice(exporter: InMemorySpanExporter) -> None:
    """A second end_run does not detach the context again."""
    with _provider.tracer().start_as_current_span("worker loop") as outer:
        handle = begin_run(make_job(), {})
        end_run(handle, Outcome.SUCCESS)
        end_run(handle, Outcome.SUCCESS)
        after = trace.get_current_span()

    assert after is outer
    assert len(exporter.get_finished_spans()) == 2


# Signals


Call = tuple[str, Job, dict[str, Any], bool, trace.Span]


@contextlib.contextmanager
def recorded_signals() -> Iterator[list[Call]]:
    """Connect a receiver to every signal and yield the calls it gets.

    Each call contains the signal name, the sender, the keyword arguments,
    whether the span was still recording and the span current at the time.
    """
    calls: list[Call] = []

    def receiver_for(name: str) -> Callable[..., None]:
        def receive(sender: Job, **kwargs: Any) -> None:
            recording = kwargs["span"].is_recording()
            calls.append((name, sender, kwargs, recording, trace.get_current_span()))

        return receive

    with contextlib.ExitStack() as stack:
        for name in ("job_enqueued", "job_started", "job_retried", "job_finished"):
            signal = getattr(signals, name)
            stack.enter_context(signal.connected_to(receiver_for(name)))
        yield calls


def test_signal_job_enqueued(exporter: InMemorySpanExporter) -> None:
    """job_enqueued gets the job and the open send span, which is not current."""
    job = make_job()
    with recorded_signals() as calls:
        handle = begin_send(job, {})
        end_send(handle)

    assert len(calls) == 1
    name, sender, kwargs, recording, current = calls[0]
    assert name == "job_enqueued"
    assert sender is job
    assert kwargs == {"span": handle.span}
    assert recording is True
    assert current is not handle.span


def test_signal_job_started(exporter: InMemorySpanExporter) -> None:
    """job_started gets the job and the process span, already current."""
    job = make_job()
    with recorded_signals() as calls:
        handle = begin_run(job, {})
        started = list(calls)
        end_run(handle, Outcome.SUCCESS)

    assert len(started) == 1
    name, sender, kwargs, recording, current = started[0]
    assert name == "job_started"
    assert sender is job
    assert kwargs == {"span": handle.span}
    assert recording is True
    assert current is handle.span


def test_signal_job_finished(exporter: InMemorySpanExporter) -> None:
    """job_finished gets span, outcome and error before the span ends."""
    job = make_job()
    error = ValueError("bad input")
    with recorded_signals() as calls:
        handle = begin_run(job, {})
        end_run(handle, Outcome.FAILURE, error)

    assert [call[0] for call in calls] == ["job_started", "job_finished"]
    _, sender, kwargs, recording, current = calls[1]
    assert sender is job
    assert kwargs == {"span": handle.span, "outcome": Outcome.FAILURE, "error": error}
    assert recording is True
    assert current is handle.span


def test_signal_job_finished_success(exporter: InMemorySpanExporter) -> None:
    """job_finished passes error=None for a run that succeeded."""
    with recorded_signals() as calls:
        end_run(begin_run(make_job(), {}), Outcome.SUCCESS)

    assert [call[0] for call in calls] == ["job_started", "job_finished"]
    assert calls[1][2]["error"] is None
    assert calls[1][2]["outcome"] is Outcome.SUCCESS


def test_signal_job_retried(exporter: InMemorySpanExporter) -> None:
    """A retry sends job_retried with span and error, then job_finished."""
    job = make_job()
    error = TimeoutError("try again")
    with recorded_signals() as calls:
        handle = begin_run(job, {})
        end_run(handle, Outcome.RETRY, error)

    assert [call[0] for call in calls] == [
        "job_started",
        "job_retried",
        "job_finished",
    ]
    _, sender, kwargs, recording, _ = calls[1]
    assert sender is job
    assert kwargs == {"span": handle.span, "error": error}
    assert recording is True
    assert calls[2][2]["outcome"] is Outcome.RETRY


def test_signal_receiver_sets_attribute(exporter: InMemorySpanExporter) -> None:
    """A job_started receiver can add attributes to the process span."""

    def tag_tenant(sender: Job, span: trace.Span, **kwargs: Any) -> None:
        span.set_attribute("app.tenant", "acme")

    with signals.job_started.connected_to(tag_tenant):
        run(make_job(), {})

    attributes = only_span(exporter, "process add").attributes or {}
    assert attributes["app.tenant"] == "acme"


def test_signal_started_report_run(exporter: InMemorySpanExporter) -> None:
    """job_started runs with the process span current, also for report_run."""
    with recorded_signals() as calls:
        report_run(make_job(), {}, Outcome.KILLED)

    _, _, kwargs, _, current = calls[0]
    assert current is kwargs["span"]


@pytest.mark.parametrize(
    ("signal_name", "hook"),
    [
        ("job_enqueued", "signal job-enqueued"),
        ("job_started", "signal job-started"),
        ("job_retried", "signal job-retried"),
        ("job_finished", "signal job-finished"),
    ],
)
def test_failing_receiver(
    exporter: InMemorySpanExporter,
    caplog: pytest.LogCaptureFixture,
    signal_name: str,
    hook: str,
) -> None:
    """A receiver that raises leaves the spans intact and is logged once."""

    def fail(sender: Job, **kwargs: Any) -> None:
        raise RuntimeError("receiver bug")

    signal = getattr(signals, signal_name)
    with signal.connected_to(fail):
        for _ in range(2):
            carrier = send(make_job())
            handle = begin_run(make_job(), carrier)
            during = trace.get_current_span()
            end_run(handle, Outcome.RETRY, ValueError("again"))
            assert during is handle.span

    guard_warnings = [
        record
        for record in caplog.records
        if record.name == "jobtrace._guard" and record.levelno == logging.WARNING
    ]
    process_spans = [
        span for span in exporter.get_finished_spans() if span.name == "process add"
    ]
    assert error_counts() == {(hook, "RuntimeError"): 2}
    assert len(guard_warnings) == 1
    assert len(process_spans) == 2
    assert all(len(span.links) == 1 for span in process_spans)
    assert all(span.end_time is not None for span in process_spans)
    assert not trace.get_current_span().get_span_context().is_valid
