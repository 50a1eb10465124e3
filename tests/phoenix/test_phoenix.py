"""Spans of a real ``celery worker``, exported to Arize Phoenix and read back.

Phoenix keeps only part of each OTLP span (arize-phoenix 20.26,
``decode_otlp_span`` in ``phoenix/trace/otel.py``). It drops span links and
the OpenTelemetry span kind, and uses resource attributes only to choose the
project. The ``span_kind`` field of its REST API is the OpenInference kind,
``UNKNOWN`` for these spans. ``GET /v1/projects/{project}/spans`` therefore
returns names, attributes, status, events, trace IDs and parent IDs, and the
tests check those.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any

import pytest

import jobtrace
import jobtrace_celery

from ..celery.workers import celery_worker, producer, traced_producer
from .conftest import PhoenixServer

pytestmark = pytest.mark.phoenix

#: Seconds to wait for job results and for spans to appear in Phoenix. Phoenix
#: queues received spans and writes them to its database in batches.
WAIT = 60
PREFORK = ("--pool", "prefork", "--concurrency", "2")

Span = dict[str, Any]


@pytest.fixture
def instrumented_producer(phoenix: PhoenixServer) -> Iterator[None]:
    """Make this process a Celery producer that exports send spans to Phoenix."""
    with traced_producer(phoenix):  # type: ignore[arg-type]
        jobtrace_celery.instrument()
        try:
            yield
        finally:
            jobtrace_celery.uninstrument()


def prefork_worker(
    phoenix: PhoenixServer, broker_url: str
) -> AbstractContextManager[tuple[subprocess.Popen[bytes], str]]:
    """Start a prefork worker with two children that exports straight to Phoenix."""
    # The harness reads only ``receiver.endpoint`` from its first argument.
    return celery_worker(phoenix, broker_url, *PREFORK)  # type: ignore[arg-type]


def list_spans(phoenix: PhoenixServer) -> list[Span]:
    """Return every span of the default project, following ``next_cursor``."""
    spans: list[Span] = []
    query = {"limit": "1000"}
    while True:
        page = phoenix.get_json("/v1/projects/default/spans", **query)
        spans.extend(page["data"])
        if page["next_cursor"] is None:
            return spans
        query["cursor"] = page["next_cursor"]


def find(spans: list[Span], name: str, job_id: str) -> list[Span]:
    """Return the spans called ``name`` that carry the message ID ``job_id``."""
    return [
        span
        for span in spans
        if span["name"] == name
        and span["attributes"].get("messaging.message.id") == job_id
    ]


def wait_for_spans(
    phoenix: PhoenixServer, expected: set[tuple[str, str]]
) -> list[Span]:
    """Poll Phoenix until it lists a span for every (name, job ID) pair."""
    deadline = time.monotonic() + WAIT
    while True:
        spans = list_spans(phoenix)
        missing = {pair for pair in expected if not find(spans, *pair)}
        if not missing:
            return spans
        if time.monotonic() > deadline:
            raise AssertionError(
                f"Timed out after {WAIT} s waiting for Phoenix to list spans for "
                f"{sorted(missing)}. It lists {len(spans)} spans in all."
            )
        time.sleep(0.5)


def test_worker_spans_in_phoenix(
    phoenix: PhoenixServer, redis_url: str, instrumented_producer: None
) -> None:
    """Phoenix lists every job's send and process span with outcome and status."""
    with prefork_worker(phoenix, redis_url) as (_, queue):
        app = producer(redis_url, queue)
        adds = [app.send_task("it.add", args=(i, i)) for i in range(4)]
        failing = app.send_task("it.fail")
        sums = [result.get(timeout=WAIT) for result in adds]
        with pytest.raises(Exception, match="boom"):
            failing.get(timeout=WAIT)
    assert sums == [0, 2, 4, 6]

    expected = {("send it.fail", failing.id), ("process it.fail", failing.id)}
    for result in adds:
        expected |= {("send it.add", result.id), ("process it.add", result.id)}
    spans = wait_for_spans(phoenix, expected)

    for result in adds:
        (send,) = find(spans, "send it.add", result.id)
        (run,) = find(spans, "process it.add", result.id)
        assert run["attributes"]["jobtrace.job.outcome"] == "success"
        assert run["attributes"]["jobtrace.job.name"] == "it.add"
        assert run["status_code"] == "UNSET"
        assert send["status_code"] == "UNSET"
        # The producer sends outside any span, so no ambient context (for
        # example a pytest plugin's span around the test) may parent it.
        assert send["parent_id"] is None
        # In the default link mode the process span starts a new trace and
        # links to its send span. Phoenix drops the link, so the relation is
        # visible there only through the shared messaging.message.id.
        assert run["parent_id"] is None
        assert run["context"]["trace_id"] != send["context"]["trace_id"]

    (failed,) = find(spans, "process it.fail", failing.id)
    assert failed["status_code"] == "ERROR"
    assert "boom" in failed["status_message"]
    assert failed["attributes"]["jobtrace.job.outcome"] == "failure"
    assert failed["attributes"]["error.type"] == "ValueError"
    assert [event["name"] for event in failed["events"]] == ["exception"]


def test_child_mode_in_send_trace(
    phoenix: PhoenixServer, redis_url: str, instrumented_producer: None
) -> None:
    """In child mode Phoenix shows the process span as a child of its send span."""
    with prefork_worker(phoenix, redis_url) as (_, queue):
        app = producer(redis_url, queue)
        with jobtrace.propagation_mode("child"):
            result = app.send_task("it.add", args=(2, 3))
        assert result.get(timeout=WAIT) == 5

    expected = {("send it.add", result.id), ("process it.add", result.id)}
    spans = wait_for_spans(phoenix, expected)

    (send,) = find(spans, "send it.add", result.id)
    (run,) = find(spans, "process it.add", result.id)
    assert run["context"]["trace_id"] == send["context"]["trace_id"]
    assert run["parent_id"] == send["context"]["span_id"]
    assert run["attributes"]["jobtrace.job.outcome"] == "success"
