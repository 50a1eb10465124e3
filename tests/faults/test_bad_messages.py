"""Messages that jobtrace did not write, or wrote long ago, still run.

The producers here write the message themselves: RQ jobs whose
``meta["jobtrace"]`` contains values of every type, Dramatiq messages whose
``options["jobtrace"]`` contains every value that JSON can encode, and raw
Celery messages of protocol 1 whose headers are None or carry an older
header format. Each job must run as a new root, and jobtrace logs no error.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import types
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

import jobtrace
import jobtrace_celery
import jobtrace_dramatiq
import jobtrace_rq
from jobtrace_celery._propagation import attempt_number, build_carrier
from jobtrace_dramatiq import _propagation as dramatiq_propagation
from jobtrace_rq._propagation import job_from_rq, read_carrier
from tests.rq import jobs

from .inprocess import CeleryRunner, DramatiqRunner, RQRunner

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE_ID}-b7ad6b7169203331-01"
#: OTLP encodes integer attributes as signed 64-bit values, and the
#: exporter drops a larger one and logs an error for each span.
OTLP_INT_LIMIT = 2**63

META_CASES = [
    pytest.param(None, id="none"),
    pytest.param(0, id="zero"),
    pytest.param(-1, id="negative"),
    pytest.param(math.nan, id="nan"),
    pytest.param(True, id="bool"),
    pytest.param("garbage", id="string"),
    pytest.param(TRACEPARENT, id="bare-traceparent"),
    pytest.param("", id="empty-string"),
    pytest.param(b"\x00\xff", id="bytes"),
    pytest.param([TRACEPARENT], id="list"),
    pytest.param(("a", 1), id="tuple"),
    pytest.param({1, 2}, id="set"),
    pytest.param({}, id="empty-dict"),
    pytest.param({1: 2, None: "x"}, id="non-string-keys"),
    pytest.param({"traceparent": 5}, id="traceparent-int"),
    pytest.param({"traceparent": {"nested": TRACEPARENT}}, id="traceparent-dict"),
    pytest.param({"traceparent": TRACEPARENT * 200}, id="traceparent-11kb"),
    pytest.param({"baggage": "k=" + "v" * 9000}, id="baggage-9kb"),
    pytest.param({"jobtrace_rq_attempt": "9" * 40}, id="attempt-40-digits"),
    pytest.param({"jobtrace_rq_attempt": -3}, id="attempt-negative"),
    # A digit to str.isdigit() but not to int().
    pytest.param({"jobtrace_rq_attempt": "\u00b2"}, id="attempt-superscript-two"),
    pytest.param({"jobtrace_rq_eta": "1e309"}, id="eta-overflow"),
    pytest.param({"jobtrace_rq_eta": ["now"]}, id="eta-list"),
    pytest.param({"jobtrace_sent_at": 1.7e9}, id="older-sent-at-float"),
    pytest.param(jobs.BrokenMapping(traceparent=TRACEPARENT), id="broken-mapping"),
]


def _process_span(exporter: InMemorySpanExporter, job_id: str) -> ReadableSpan:
    (span,) = [
        span
        for span in exporter.get_finished_spans()
        if (span.attributes or {}).get("messaging.message.id") == job_id
        and span.name.startswith("process ")
    ]
    return span


def _jobtrace_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        record
        for record in caplog.records
        if record.name.startswith("jobtrace") and record.levelno >= logging.WARNING
    ]


@pytest.mark.parametrize("meta", META_CASES)
def test_rq_meta_garbage_runs_as_root(
    meta: Any,
    redis_url: str,
    exporter: InMemorySpanExporter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An RQ job whose jobtrace meta is garbage runs and gets a root span."""
    caplog.set_level(logging.WARNING)
    runner = RQRunner(redis_url)
    with runner.started():
        job = runner.queue.enqueue(jobs.add, 1, 2, meta={"jobtrace": meta})
        jobtrace_rq.instrument()
        try:
            runner.work()
        finally:
            jobtrace_rq.uninstrument()

    job.refresh()
    span = _process_span(exporter, job.id)
    attributes = span.attributes or {}
    assert job.return_value() == 3
    assert span.parent is None
    assert span.links == ()
    assert attributes["jobtrace.job.outcome"] == "success"
    assert attributes["jobtrace.job.attempt"] >= 1
    assert jobtrace.error_counts() == {}
    assert len(_jobtrace_warnings(caplog)) <= 1


def _json_encodable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


#: The cases a Dramatiq producer can send: its JSON encoder rejects bytes,
#: sets and other objects, and the worker decodes a mapping subclass as a
#: plain dict.
DRAMATIQ_CASES = [
    case
    for case in META_CASES
    if _json_encodable(case.values[0]) and case.id != "broken-mapping"
] + [pytest.param({"traceparent": TRACEPARENT}, id="valid-traceparent")]


def test_dramatiq_options_garbage_runs_as_root(
    redis_url: str,
    exporter: InMemorySpanExporter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Dramatiq messages whose jobtrace option is garbage run as roots.

    All cases run on one worker, so a warning that repeats across
    messages shows in the count per message text.
    """
    caplog.set_level(logging.WARNING)
    runner = DramatiqRunner(redis_url)
    add = runner.actors[0]
    with runner.started():
        # Enqueued before instrument(), so that jobtrace writes no option.
        sent = {
            case.id: runner.broker.enqueue(
                add.message_with_options(args=(1, 2), jobtrace=case.values[0])
            )
            for case in DRAMATIQ_CASES
        }
        # A message from a producer without jobtrace has no such option.
        sent["no-option"] = runner.broker.enqueue(add.message(1, 2))
        jobtrace_dramatiq.instrument()
        try:
            runner.work()
        finally:
            jobtrace_dramatiq.uninstrument()

        results = {
            case: message.get_result(backend=runner.backend)
            for case, message in sent.items()
        }

    warnings = collections.Counter(r.getMessage() for r in _jobtrace_warnings(caplog))
    assert jobtrace.error_counts() == {}
    assert all(count == 1 for count in warnings.values()), warnings
    for case, message in sent.items():
        span = _process_span(exporter, str(message.message_id))
        attributes = span.attributes or {}
        linked = case == "valid-traceparent"
        assert results[case] == 3, case
        assert span.parent is None, case
        assert [link.context.trace_id for link in span.links] == (
            [int(TRACE_ID, 16)] if linked else []
        ), case
        assert attributes["jobtrace.job.outcome"] == "success", case
        assert attributes["jobtrace.job.attempt"] == 1, case


def _publish_raw(runner: CeleryRunner, body: dict[str, Any], headers: Any) -> str:
    queue = runner.app.conf.task_default_queue
    with runner.app.producer_or_acquire() as producer:
        producer.publish(
            body,
            routing_key=queue,
            exchange="",
            headers=headers,
            serializer="json",
            declare=[runner.app.amqp.queues[queue]],
        )
    return str(body["id"])


CELERY_CASES = [
    pytest.param(None, {}, False, id="headers-none"),
    pytest.param({}, {}, False, id="headers-empty"),
    pytest.param(
        {"traceparent": TRACEPARENT, "jobtrace_sent_at": 1.7e9},
        {},
        True,
        id="older-format-in-headers",
    ),
]


@pytest.fixture(scope="module")
def celery_runner(redis_url: str) -> Any:
    """A started in-process Celery worker for the raw message tests."""
    runner = CeleryRunner(redis_url)
    with runner.started():
        yield runner


@pytest.mark.parametrize(("headers", "extra", "linked"), CELERY_CASES)
def test_celery_raw_message_runs(
    headers: Any,
    extra: dict[str, Any],
    linked: bool,
    celery_runner: CeleryRunner,
    exporter: InMemorySpanExporter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A protocol 1 message from a producer without jobtrace runs as before."""
    caplog.set_level(logging.WARNING)
    body = {
        "task": "faults.add",
        "id": str(uuid.uuid4()),
        "args": [1, 2],
        "kwargs": {},
        "retries": 0,
        **extra,
    }
    jobtrace_celery.instrument()
    try:
        job_id = _publish_raw(celery_runner, body, headers)
        assert celery_runner.app.AsyncResult(job_id).get(timeout=30) == 3
        celery_runner.settle()
    finally:
        jobtrace_celery.uninstrument()

    span = _process_span(exporter, job_id)
    attributes = span.attributes or {}
    assert span.parent is None
    assert [link.context.trace_id for link in span.links] == (
        [int(TRACE_ID, 16)] if linked else []
    )
    assert "jobtrace.job.queue_time" not in attributes
    assert jobtrace.error_counts() == {}
    assert _jobtrace_warnings(caplog) == []


_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        st.text(max_size=80),
        st.binary(max_size=16),
        st.just(TRACEPARENT),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(
            st.one_of(st.sampled_from(["headers", "traceparent"]), st.text()),
            children,
            max_size=4,
        ),
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(request=st.dictionaries(st.text(max_size=12), _values, max_size=6))
def test_celery_carrier_fuzzed(request: dict[str, Any]) -> None:
    """Celery's carrier reader turns any request into a dict of header values."""
    carrier = build_carrier(request)

    assert isinstance(carrier, dict)
    assert set(carrier) <= set(jobtrace.header_names())
    assert None not in carrier.values()


@settings(max_examples=200, deadline=None)
@given(meta=st.one_of(_values, st.dictionaries(st.just("jobtrace"), _values)))
def test_rq_carrier_fuzzed(meta: Any) -> None:
    """RQ's carrier reader and job description accept any meta."""
    job = types.SimpleNamespace(
        meta=meta, id="j", func_name="f", origin="q", number_of_retries=None
    )

    carrier = read_carrier(job)
    described = job_from_rq(job, carrier)

    assert isinstance(carrier, dict)
    assert described.attempt >= 1
    assert described.attempt < OTLP_INT_LIMIT
    assert described.eta is None or math.isfinite(described.eta)


_OPTION_NAMES = st.sampled_from(["jobtrace", "retries", "eta"])


@settings(max_examples=200, deadline=None)
@given(options=st.dictionaries(_OPTION_NAMES, _values))
def test_dramatiq_carrier_fuzzed(options: dict[str, Any]) -> None:
    """Dramatiq's carrier reader and job description accept any options."""
    message = types.SimpleNamespace(
        options=options, message_id="m", actor_name="a", queue_name="q"
    )

    carrier = dramatiq_propagation.read_carrier(message)
    described = dramatiq_propagation.job_from_message(message, carrier)

    assert isinstance(carrier, dict)
    assert described.attempt >= 1
    assert described.attempt < OTLP_INT_LIMIT
    assert described.eta is None or math.isfinite(described.eta)


HUGE_RETRIES = [
    pytest.param(10**9, id="billion"),
    pytest.param(2**63, id="int64-overflow"),
    pytest.param(10**30, id="ten-to-30"),
    pytest.param(1e308, id="float-max"),
    pytest.param(-(10**30), id="negative-ten-to-30"),
]


@pytest.mark.parametrize("retries", HUGE_RETRIES)
def test_celery_huge_retries_first_attempt(retries: Any) -> None:
    """A retries header of a billion or more counts as the first attempt."""
    assert attempt_number(retries) == 1


@pytest.mark.parametrize("retries", HUGE_RETRIES)
def test_dramatiq_huge_retries_first_attempt(retries: Any) -> None:
    """A retries option of a billion or more counts as the first attempt."""
    message = types.SimpleNamespace(
        options={"retries": retries}, message_id="m", actor_name="a", queue_name="q"
    )

    described = dramatiq_propagation.job_from_message(message, {})

    assert described.attempt == 1
