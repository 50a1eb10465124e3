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

#: Environment that makes ``opentelemetry-instrument`` run as it does
#: without opentelemetry-distro installed. No package has an entry point
#: of these names, so no configurator builds a provider and jobtrace
#: builds its own.
WITHOUT_DISTRO = {"OTEL_PYTHON_DISTRO": "none", "OTEL_PYTHON_CONFIGURATOR": "none"}


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


def job_counts(
    receiver: OtlpReceiver, metric: str = "messaging.process.duration"
) -> dict[tuple[str, str], int]:
    """Sum the newest received count of ``metric`` by job name and outcome.

    Counts come from histogram points, or from the value of counter points.
    """
    counts: dict[tuple[str, str], int] = {}
    for point in receiver.latest_points().values():
        if point.name != metric:
            continue
        key = (
            str(point.attributes.get("jobtrace.job.name")),
            str(point.attributes.get("jobtrace.job.outcome")),
        )
        found = point.count if point.count is not None else int(point.value)
        counts[key] = counts.get(key, 0) + found
    return counts


def duplicate_series(receiver: OtlpReceiver) -> list[tuple[str, str]]:
    """Return the metric series that more than one process exported.

    A series is a metric name with its point attributes. Two processes that
    export it under different ``service.instance.id`` values would double
    its counts in a backend that ignores the instance.
    """
    instances: dict[tuple[str, str], set[object]] = {}
    for point in receiver.latest_points().values():
        if not point.name.startswith(("messaging.", "jobtrace.")):
            continue
        key = (point.name, repr(sorted(point.attributes.items())))
        instances.setdefault(key, set()).add(point.resource.get("service.instance.id"))
    return [key for key, found in instances.items() if len(found) > 1]
