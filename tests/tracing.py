"""Tracing set-up shared by the tests that run real worker processes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

import jobtrace
from jobtrace import _metrics, _provider
from jobtrace._receiver import METRICS_PATH, OtlpReceiver

#: Environment that makes ``opentelemetry-instrument`` run as it does
#: without opentelemetry-distro installed. No package has an entry point
#: of these names, so no configurator builds a provider and jobtrace
#: builds its own.
WITHOUT_DISTRO = {"OTEL_PYTHON_DISTRO": "none", "OTEL_PYTHON_CONFIGURATOR": "none"}

#: The attributes that a job metric point may carry. Each has a bounded
#: set of values, unlike a job id or an attempt number.
METRIC_ATTRIBUTES = frozenset(
    {
        "messaging.system",
        "messaging.destination.name",
        "messaging.operation.name",
        "jobtrace.job.name",
        "jobtrace.job.outcome",
        "error.type",
    }
)


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


#: The unit and bucket bounds of each job metric. Counters have no bounds.
#: tests/core/test_metrics.py checks that docs/metrics.md lists the same.
UNITS_AND_BOUNDS = {
    "messaging.process.duration": {("s", _metrics.DURATION_BUCKETS)},
    "jobtrace.job.queue_time": {("s", _metrics.DURATION_BUCKETS)},
    "messaging.client.operation.duration": {("s", _metrics.SEND_BUCKETS)},
    "messaging.client.consumed.messages": {("{message}", ())},
    "messaging.client.sent.messages": {("{message}", ())},
}


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


def units_and_bounds(
    receiver: OtlpReceiver,
) -> dict[str, set[tuple[str, tuple[float, ...]]]]:
    """Return the units and histogram bucket bounds received, by metric name."""
    found: dict[str, set[tuple[str, tuple[float, ...]]]] = {}
    for point in receiver.metric_points():
        found.setdefault(point.name, set()).add((point.unit, point.explicit_bounds))
    return found


def rewound_series(receiver: OtlpReceiver) -> list[tuple[str, str, str]]:
    """Return the series whose cumulative count went down between exports.

    One process's cumulative count never goes down. Two processes that
    export one series under the same identity interleave their counts, so
    the received count of that series usually goes down between exports.
    """
    last: dict[tuple[str, str, str], float] = {}
    rewound: list[tuple[str, str, str]] = []
    for point in sorted(receiver.metric_points(), key=lambda p: p.time_ns):
        count = point.value if point.count is None else point.count
        before = last.get(point.series)
        if before is not None and count < before and point.series not in rewound:
            rewound.append(point.series)
        last[point.series] = count
    return rewound


def unexpected_attributes(receiver: OtlpReceiver) -> set[str]:
    """Return the metric point attributes not in :data:`METRIC_ATTRIBUTES`."""
    return {
        key
        for point in receiver.metric_points()
        for key in point.attributes
        if key not in METRIC_ATTRIBUTES
    }


def error_types(receiver: OtlpReceiver) -> dict[tuple[str, str], set[object]]:
    """Return the ``error.type`` values of the runs by job name and outcome.

    A run without ``error.type`` adds None.
    """
    found: dict[tuple[str, str], set[object]] = {}
    for point in receiver.latest_points().values():
        if point.name != "messaging.process.duration":
            continue
        key = (
            str(point.attributes.get("jobtrace.job.name")),
            str(point.attributes.get("jobtrace.job.outcome")),
        )
        found.setdefault(key, set()).add(point.attributes.get("error.type"))
    return found


def sent_counts(receiver: OtlpReceiver) -> dict[tuple[str, object], int]:
    """Sum the newest received count of sent messages by job and component."""
    counts: dict[tuple[str, object], int] = {}
    for point in receiver.latest_points().values():
        if point.name != "messaging.client.sent.messages":
            continue
        key = (
            str(point.attributes.get("jobtrace.job.name")),
            point.resource.get("jobtrace.component"),
        )
        counts[key] = counts.get(key, 0) + int(point.value)
    return counts


@contextmanager
def producer_metrics(receiver: OtlpReceiver) -> Iterator[None]:
    """Export this process's job metrics to ``receiver`` inside the block.

    The tests set ``OTEL_METRICS_EXPORTER=none`` for the test process, so
    this builds jobtrace's OTLP/HTTP metrics export for the block only, and
    shuts it down on exit, which exports what was recorded.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OTEL_METRICS_EXPORTER", "otlp")
        patch.setenv(
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", receiver.endpoint + METRICS_PATH
        )
        # Only the shutdown on exit exports.
        patch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "600000")
        _metrics._reset_for_tests()
        _metrics.build()
        recorder = _metrics.exporting_recorder()
        if recorder is None:
            raise RuntimeError(
                "jobtrace built no metrics export: check JOBTRACE_ENABLED and "
                "OTEL_SDK_DISABLED"
            )
        try:
            yield
        finally:
            recorder.shutdown()
            _metrics._reset_for_tests()
