"""Tests for taking over the provider that opentelemetry-instrument's distro built."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import (
    ConcurrentMultiSpanProcessor,
    ReadableSpan,
    TracerProvider,
)
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

import jobtrace
from jobtrace import _provider

AUTO_RESOURCE = {"service.name": "shop", "telemetry.auto.version": "0.66b2"}


@pytest.fixture(autouse=True)
def clean_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Clear jobtrace's globals and variables, and set a budget of 3 spans."""
    for name in list(os.environ):
        if name.startswith(("JOBTRACE_", "OTEL_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("JOBTRACE_MAX_SPANS_PER_TRACE", "3")
    _provider._reset_for_tests()
    yield
    _provider._reset_for_tests()


def global_provider(monkeypatch: pytest.MonkeyPatch, provider: TracerProvider) -> None:
    """Make ``provider`` the global one for jobtrace, as the SDK's configurator does."""
    monkeypatch.setattr(_provider.trace, "get_tracer_provider", lambda: provider)


def auto_provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    """A provider shaped as the SDK's configurator builds it."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create(AUTO_RESOURCE), shutdown_on_exit=False
    )
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return provider, memory


def test_takes_over_auto_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    """The budget and the component apply to spans of tracers made before."""
    provider, memory = auto_provider()
    global_provider(monkeypatch, provider)
    early_tracer = provider.get_tracer("app")

    jobtrace.mark_worker()
    with jobtrace.tracer().start_as_current_span("process job"):
        for number in range(5):
            early_tracer.start_span(f"row {number}").end()

    spans = memory.get_finished_spans()
    (root,) = [span for span in spans if span.name == "process job"]
    assert _provider._owns_provider is True
    assert len(spans) == 3
    assert root.attributes is not None
    assert root.attributes["jobtrace.trace.spans_created"] == 6
    assert root.attributes["jobtrace.trace.spans_dropped"] == 3
    for span in spans:
        assert span.resource.attributes["jobtrace.component"] == "worker"
        assert span.resource.attributes["service.name"] == "shop"


def test_app_provider_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """A provider without the auto-configuration attribute is used as it is."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    global_provider(monkeypatch, provider)

    with jobtrace.tracer().start_as_current_span("process job"):
        for number in range(5):
            jobtrace.tracer().start_span(f"row {number}").end()

    spans = memory.get_finished_spans()
    assert _provider._owns_provider is False
    assert len(spans) == 6
    assert "jobtrace.component" not in spans[0].resource.attributes


def test_unknown_processor_list_warns(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A provider whose processor list has another type is used as it is."""
    memory = InMemorySpanExporter()
    concurrent = ConcurrentMultiSpanProcessor()
    concurrent.add_span_processor(SimpleSpanProcessor(memory))
    provider = TracerProvider(
        resource=Resource.create(AUTO_RESOURCE),
        active_span_processor=concurrent,
        shutdown_on_exit=False,
    )
    global_provider(monkeypatch, provider)
    caplog.set_level(logging.WARNING, logger="jobtrace")

    with jobtrace.tracer().start_as_current_span("process job"):
        for number in range(5):
            jobtrace.tracer().start_span(f"row {number}").end()

    assert _provider._owns_provider is False
    assert len(memory.get_finished_spans()) == 6
    assert "span budget is off" in caplog.text


class FailingExporter(InMemorySpanExporter):
    """An exporter whose every export fails, as with a collector that is down."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.FAILURE


@pytest.mark.xfail(
    strict=True,
    reason="docs/recipes.md, Limitations with opentelemetry-distro: the "
    "exporters are the distro's, so jobtrace does not see export failures",
)
def test_dropped_spans_counted_with_distro(monkeypatch: pytest.MonkeyPatch) -> None:
    """Spans that the distro's exporter fails to send count as dropped."""
    provider = TracerProvider(
        resource=Resource.create(AUTO_RESOURCE), shutdown_on_exit=False
    )
    provider.add_span_processor(SimpleSpanProcessor(FailingExporter()))
    global_provider(monkeypatch, provider)

    jobtrace.tracer().start_span("process job").end()

    assert _provider._owns_provider is True
    assert jobtrace.dropped_spans() == 1
