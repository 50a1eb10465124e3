"""Private header names, used when another tracer writes ``traceparent``."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

import jobtrace
from jobtrace import Job, Outcome, _carrier

OTHER = "00-11111111111111111111111111111111-2222222222222222-01"


@pytest.fixture
def private(exporter: InMemorySpanExporter) -> Iterator[InMemorySpanExporter]:
    """Turn private headers on for one test."""
    jobtrace.private_headers()
    yield exporter
    jobtrace.private_headers(False)


def test_private_send_leaves_traceparent(private: InMemorySpanExporter) -> None:
    """A send writes jobtrace_traceparent and keeps the other tracer's value."""
    carrier = {"traceparent": OTHER}

    handle = jobtrace.begin_send(Job(system="t", name="job"), carrier)
    jobtrace.end_send(handle)

    (send,) = private.get_finished_spans()
    assert carrier["traceparent"] == OTHER
    assert carrier["jobtrace_traceparent"].split("-")[2] == format(
        send.context.span_id, "016x"
    )


def test_private_fields_read_first(exporter: InMemorySpanExporter) -> None:
    """A run links to jobtrace's own send, not to the other tracer's span."""
    own = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    carrier = {"traceparent": OTHER, "jobtrace_traceparent": own}

    extracted = _carrier.extract(carrier)

    span_context = trace.get_current_span(extracted).get_span_context()
    assert format(span_context.span_id, "016x") == "b7ad6b7169203331"


def test_private_names_in_header_names() -> None:
    """Plugins that collect headers by name also collect the private ones."""
    assert "jobtrace_traceparent" in jobtrace.header_names()


def test_standard_run_unchanged(exporter: InMemorySpanExporter) -> None:
    """Without private names in the carrier, traceparent is read as before."""
    run = jobtrace.begin_run(Job(system="t", name="job"), {"traceparent": OTHER})
    jobtrace.end_run(run, Outcome.SUCCESS)

    (span,) = exporter.get_finished_spans()
    assert [format(link.context.span_id, "016x") for link in span.links] == [
        "2222222222222222"
    ]


def test_ddtrace_patch_detected(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A Celery class that ddtrace marked as patched turns private headers on.

    ddtrace's patching would last for the rest of the test session, so the
    test sets only the marker that ddtrace 4.16's patch_app() sets.
    tests/faults/test_ddtrace.py runs the real ddtrace.
    """
    import sys
    import types

    import celery

    from jobtrace_celery import _overlap

    caplog.set_level(logging.WARNING, logger="jobtrace_celery")
    monkeypatch.setitem(sys.modules, "ddtrace", types.ModuleType("ddtrace"))
    monkeypatch.setattr(celery.Celery, "__datadog_patch", True, raising=False)
    try:
        _overlap.check()
        _overlap.check()
        assert _carrier._private is True
    finally:
        _overlap.reset()

    lines = [
        r for r in caplog.records if "ddtrace also traces Celery" in r.getMessage()
    ]
    assert len(lines) == 1
    assert "DD_TRACE_CELERY_ENABLED=false" in lines[0].getMessage()


def test_ddtrace_rq_marker_warns_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An rq module that ddtrace marked as patched gets one warning.

    RQ's carrier lives under its own meta key, so the headers stay as they
    are. ddtrace's patching would last for the rest of the test session,
    so the test sets only the marker that ddtrace 4.16's patch() sets.
    """
    import sys
    import types

    import rq

    from jobtrace_rq import _overlap

    caplog.set_level(logging.WARNING, logger="jobtrace_rq")
    monkeypatch.setitem(sys.modules, "ddtrace", types.ModuleType("ddtrace"))
    monkeypatch.setattr(rq, "_datadog_patch", True, raising=False)
    try:
        _overlap.check()
        _overlap.check()
        assert _carrier._private is False
    finally:
        _overlap.reset()

    lines = [r for r in caplog.records if "ddtrace also traces RQ" in r.getMessage()]
    assert len(lines) == 1
    assert "DD_TRACE_RQ_ENABLED=false" in lines[0].getMessage()
