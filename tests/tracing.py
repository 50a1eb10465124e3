"""Tracing set-up shared by the tests that run real worker processes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

import jobtrace
from jobtrace import _provider
from jobtrace._receiver import OtlpReceiver


@contextmanager
def traced_producer(
    receiver: OtlpReceiver, service_name: str
) -> Iterator[TracerProvider]:
    """Export this process's spans to ``receiver`` as component ``web``."""
    _provider._reset_for_tests()
    resource = Resource.create(
        {"service.name": service_name, **jobtrace.resource_attributes()}
    )
    provider = TracerProvider(resource=resource)
    exporter = OTLPSpanExporter(endpoint=f"{receiver.endpoint}/v1/traces")
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    jobtrace.configure(tracer_provider=provider)
    try:
        yield provider
    finally:
        provider.shutdown()
        _provider._reset_for_tests()
