"""Job metrics: run and send durations, queue time and message counts.

Metrics are recorded from jobtrace's own job events, not from spans, so
sampled-out traces still count. Each series is exported by one process
only, because backends such as Prometheus reject two processes writing
the same series:

- A forked child that hands its spans to its parent (an RQ work horse, a
  Celery prefork child) sends its measurements through the same pipe, and
  the parent records them.
- Any other process records its own, under a resource with its own
  ``service.instance.id``. A meter provider inherited through a fork never
  exports from the child, because it still carries the parent's counts.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Mapping
from typing import Any

from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource

from jobtrace import _handoff
from jobtrace import _names as names
from jobtrace._version import __version__

log = logging.getLogger(__name__)

PROCESS_DURATION = "messaging.process.duration"
OPERATION_DURATION = "messaging.client.operation.duration"
SENT_MESSAGES = "messaging.client.sent.messages"
CONSUMED_MESSAGES = "messaging.client.consumed.messages"
QUEUE_TIME = "jobtrace.job.queue_time"

#: Histogram bucket bounds in seconds. Jobs take from milliseconds to
#: hours, so the bounds reach 24 hours instead of the SDK's 10 s.
DURATION_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0, 43200.0,
    86400.0,
)  # fmt: skip
#: Bucket bounds in seconds for an enqueue, which is a broker round trip.
SEND_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
)  # fmt: skip

#: The SDK's default export interval, in milliseconds.
DEFAULT_EXPORT_INTERVAL_MS = 60000

_lock = threading.Lock()
_state: _Recorder | None = None


class _OwnProcessExporter(MetricExporter):
    """An exporter that only sends from the process that created it.

    The SDK restarts a periodic reader's thread in a forked child, and that
    child would export the parent's counts again as its own.
    """

    def __init__(self, exporter: MetricExporter) -> None:
        super().__init__(
            preferred_temporality=exporter._preferred_temporality,
            preferred_aggregation=exporter._preferred_aggregation,
        )
        self._exporter = exporter
        self._pid = os.getpid()

    def export(
        self,
        metrics_data: MetricsData,
        timeout_millis: float = 10_000,
        **kwargs: Any,
    ) -> MetricExportResult:
        if os.getpid() != self._pid:
            return MetricExportResult.SUCCESS
        return self._exporter.export(metrics_data, timeout_millis=timeout_millis)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        if os.getpid() != self._pid:
            return True
        return self._exporter.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        if os.getpid() == self._pid:
            self._exporter.shutdown(timeout_millis=timeout_millis)


class _MeterProvider(MeterProvider):
    """The SDK's meter provider, minus a per-fork cost in piped children.

    Like the tracer provider, the SDK (seen in 1.45) runs resource
    detection again in every forked child. A child that sends its
    measurements to its parent never exports through this provider, so it
    only needs fresh locks.
    """

    def _handle_fork(self) -> None:
        if not _handoff.fork_has_pipe():
            super()._handle_fork()
            return
        # The same locks the SDK's own fork handler replaces.
        for name in ("_lock", "_meter_lock"):
            if hasattr(self, name):
                setattr(self, name, threading.Lock())
        if hasattr(MeterProvider, "_all_metric_readers_lock"):
            type(self)._all_metric_readers_lock = threading.Lock()


class _Recorder:
    """The instruments of one process, and the provider jobtrace built for them."""

    def __init__(self, meter: metrics.Meter, provider: MeterProvider | None) -> None:
        self.pid = os.getpid()
        self.provider = provider
        self.process_duration = meter.create_histogram(
            PROCESS_DURATION,
            unit="s",
            description="Time a job ran, from start to outcome.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.queue_time = meter.create_histogram(
            QUEUE_TIME,
            unit="s",
            description="Time a job waited from its enqueue, or its scheduled "
            "time, to its start.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.operation_duration = meter.create_histogram(
            OPERATION_DURATION,
            unit="s",
            description="Time an enqueue took.",
            explicit_bucket_boundaries_advisory=SEND_BUCKETS,
        )
        self.sent = meter.create_counter(
            SENT_MESSAGES, unit="{message}", description="Jobs enqueued."
        )
        self.consumed = meter.create_counter(
            CONSUMED_MESSAGES, unit="{message}", description="Job runs finished."
        )

    def record(self, values: tuple[Any, ...]) -> None:
        operation, attributes, duration, queue_time = values
        if operation == "process":
            self.process_duration.record(duration, attributes)
            self.consumed.add(1, attributes)
            if queue_time is not None:
                self.queue_time.record(queue_time, _without_outcome(attributes))
        else:
            self.operation_duration.record(duration, attributes)
            self.sent.add(1, attributes)


def record_run(
    base: Mapping[str, Any],
    outcome: str,
    error_type: str | None,
    duration: float,
    queue_time: float | None,
) -> None:
    """Record one finished run: its duration, its count and its queue time."""
    attributes = _attributes(base, "process", error_type)
    attributes[names.JOB_OUTCOME] = outcome
    _dispatch(("process", attributes, max(duration, 0.0), queue_time))


def record_send(
    base: Mapping[str, Any], error_type: str | None, duration: float
) -> None:
    """Record one enqueue: its duration and its count."""
    attributes = _attributes(base, "send", error_type)
    _dispatch(("send", attributes, max(duration, 0.0), None))


def _attributes(
    base: Mapping[str, Any], operation: str, error_type: str | None
) -> dict[str, Any]:
    # Only bounded values: never the message id or the attempt.
    attributes = {
        key: base[key]
        for key in (names.MESSAGING_SYSTEM, names.DESTINATION_NAME, names.JOB_NAME)
        if base.get(key) is not None
    }
    attributes[names.OPERATION_NAME] = operation
    if error_type is not None:
        attributes[names.ERROR_TYPE] = error_type
    return attributes


def _without_outcome(attributes: Mapping[str, Any]) -> dict[str, Any]:
    # Queue time is known before the outcome, so its series do not split by
    # outcome or error.
    dropped = (names.JOB_OUTCOME, names.ERROR_TYPE)
    return {key: value for key, value in attributes.items() if key not in dropped}


def _dispatch(values: tuple[Any, ...]) -> None:
    if _handoff.send_measurement(values):
        return
    record_local(values)


def record_local(values: tuple[Any, ...]) -> None:
    """Record a measurement in this process's instruments."""
    recorder = _recorder()
    if recorder is not None:
        recorder.record(values)


def _recorder() -> _Recorder | None:
    global _state
    state = _state
    if state is not None and state.pid == os.getpid():
        return state
    with _lock:
        if _state is None or _state.pid != os.getpid():
            _state = _build()
        return _state


def _build() -> _Recorder | None:
    from jobtrace import _provider

    if not _provider.enabled():
        return None
    current = metrics.get_meter_provider()
    inherited = _state is not None
    if isinstance(current, MeterProvider) and not _owned(current):
        # The application set its own provider, which is its to export.
        return _Recorder(current.get_meter("jobtrace", __version__), None)
    exporter = _exporter_from_env()
    if exporter is None:
        return None
    interval = _export_interval()
    reader = PeriodicExportingMetricReader(
        _OwnProcessExporter(exporter), export_interval_millis=interval
    )
    attributes: dict[str, Any] = dict(_provider.resource_attributes())
    attributes["service.instance.id"] = str(uuid.uuid4())
    provider = _MeterProvider(
        metric_readers=[reader],
        resource=Resource.create(attributes),
        shutdown_on_exit=False,
    )
    if not inherited and not isinstance(current, MeterProvider):
        metrics.set_meter_provider(provider)
    _owned_providers.append(provider)
    log.info("jobtrace built a meter provider, export interval %d ms", interval)
    return _Recorder(provider.get_meter("jobtrace", __version__), provider)


_owned_providers: list[MeterProvider] = []


def _owned(provider: MeterProvider) -> bool:
    return any(provider is owned for owned in _owned_providers)


def _exporter_from_env() -> MetricExporter | None:
    name = os.environ.get("OTEL_METRICS_EXPORTER", "otlp").strip().lower()
    if name == "none":
        return None
    if name == "console":
        return ConsoleMetricExporter()
    if name != "otlp":
        log.warning("Unsupported OTEL_METRICS_EXPORTER=%r, using otlp", name)
    protocol = (
        os.environ.get("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
            OTLPMetricExporter as GrpcExporter,
        )

        return GrpcExporter()
    if protocol != "http/protobuf":
        log.warning("Unsupported OTLP protocol %r, using http/protobuf", protocol)
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HttpExporter,
    )

    return HttpExporter()


def _export_interval() -> int:
    raw = os.environ.get("OTEL_METRIC_EXPORT_INTERVAL", "").strip()
    if not raw:
        return DEFAULT_EXPORT_INTERVAL_MS
    try:
        interval = int(raw)
    except ValueError:
        interval = 0
    if interval <= 0:
        log.warning(
            "Invalid OTEL_METRIC_EXPORT_INTERVAL=%r, expected a positive number "
            "of milliseconds; using %d",
            raw,
            DEFAULT_EXPORT_INTERVAL_MS,
        )
        return DEFAULT_EXPORT_INTERVAL_MS
    return interval


def build() -> None:
    """Build this process's meter provider now, if jobtrace builds one."""
    _recorder()


def provider() -> MeterProvider | None:
    """Return the meter provider that jobtrace built in this process, if any."""
    state = _state
    if state is None or state.pid != os.getpid():
        return None
    return state.provider


_handoff.measurement_handler = record_local


def _reset_for_tests() -> None:
    # The providers built so far stay in _owned_providers: one of them may
    # be the global provider, which is set once per process.
    global _state
    with _lock:
        _state = None
