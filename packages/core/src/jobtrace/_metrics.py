"""Job metrics: run and send durations, queue time and message counts.

Metrics are recorded from jobtrace's own job events, not from spans, so
sampled-out traces still count. Each series is exported by one process
only, because backends such as Prometheus reject two processes writing
the same series:

- A forked child that hands its spans to its parent (an RQ work horse, a
  Celery prefork child) sends its measurements through the same pipe, and
  the parent records them.
- Any other process records its own, under a resource with its own
  ``service.instance.id``. A forked child without a pipe starts new
  series, because the ones it inherited belong to its parent.
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
from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, MetricExporter
from opentelemetry.sdk.resources import Resource

from jobtrace import _handoff
from jobtrace import _names as names
from jobtrace._aggregation import (
    CONSUMED_MESSAGES,
    COUNTERS,
    DROPPED_SPANS,
    DURATION_BUCKETS,
    HISTOGRAMS,
    OPERATION_DURATION,
    PROCESS_DURATION,
    QUEUE_TIME,
    SEND_BUCKETS,
    SENT_MESSAGES,
    ExportingRecorder,
)
from jobtrace._settings import exporter_choice
from jobtrace._version import __version__

__all__ = [
    "CONSUMED_MESSAGES",
    "DURATION_BUCKETS",
    "OPERATION_DURATION",
    "PROCESS_DURATION",
    "QUEUE_TIME",
    "SEND_BUCKETS",
    "SENT_MESSAGES",
    "record_run",
    "record_send",
]

log = logging.getLogger(__name__)

#: The SDK's default export interval, in milliseconds.
DEFAULT_EXPORT_INTERVAL_MS = 60000

_lock = threading.Lock()
_state: _SdkRecorder | ExportingRecorder | None = None
# The process in which _build() found no recorder, so that a
# process without metrics does not build again for every job.
_none_in_pid: int | None = None


class _SdkRecorder:
    """Records into SDK instruments of a meter provider the application set."""

    def __init__(self, meter: metrics.Meter) -> None:
        self.pid = os.getpid()
        self._histograms = {
            name: meter.create_histogram(
                name,
                unit=unit,
                description=description,
                explicit_bucket_boundaries_advisory=bounds,
            )
            for name, (unit, description, bounds) in HISTOGRAMS.items()
        }
        self._counters = {
            name: meter.create_counter(name, unit=unit, description=description)
            for name, (unit, description) in COUNTERS.items()
        }

    def record(self, values: tuple[Any, ...]) -> None:
        operation, attributes, duration, queue_time = values
        if operation == "process":
            self._histograms[PROCESS_DURATION].record(duration, attributes)
            self._counters[CONSUMED_MESSAGES].add(1, attributes)
            if queue_time is not None:
                waited = _without_outcome(attributes)
                self._histograms[QUEUE_TIME].record(queue_time, waited)
        else:
            self._histograms[OPERATION_DURATION].record(duration, attributes)
            self._counters[SENT_MESSAGES].add(1, attributes)

    def add(self, name: str, attributes: dict[str, Any], amount: int) -> None:
        self._counters[name].add(amount, attributes)


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
    dropped = (names.JOB_OUTCOME, names.ERROR_TYPE)
    return {key: value for key, value in attributes.items() if key not in dropped}


def record_dropped_spans(reason: str, count: int) -> None:
    """Count spans that the span budget dropped in this process."""
    recorder = _recorder()
    if recorder is not None:
        recorder.add(DROPPED_SPANS, {names.DROP_REASON: reason}, count)


def _dispatch(values: tuple[Any, ...]) -> None:
    if _handoff.send_measurement(values):
        return
    record_local(values)


def record_local(values: tuple[Any, ...]) -> None:
    """Record a measurement in this process's series."""
    recorder = _recorder()
    if recorder is not None:
        recorder.record(values)


def _recorder() -> _SdkRecorder | ExportingRecorder | None:
    global _state, _none_in_pid
    state = _state
    pid = os.getpid()
    if state is not None and state.pid == pid:
        return state
    if _none_in_pid == pid:
        return None
    with _lock:
        if _state is None or _state.pid != pid:
            _state = _build()
            _none_in_pid = pid if _state is None else None
        return _state


def _build() -> _SdkRecorder | ExportingRecorder | None:
    from jobtrace import _provider

    if not _provider.enabled():
        return None
    current = metrics.get_meter_provider()
    if isinstance(current, MeterProvider):
        # The application set its own provider, which is its to export.
        return _SdkRecorder(current.get_meter("jobtrace", __version__))
    exporter = _exporter_from_env()
    if exporter is None:
        return None
    interval = _export_interval()
    attributes: dict[str, Any] = dict(_provider.resource_attributes())
    attributes["service.instance.id"] = str(uuid.uuid4())
    recorder = ExportingRecorder(
        exporter,
        Resource.create(attributes),
        interval / 1000,
        delta=_delta_temporality(),
    )
    log.info("jobtrace exports job metrics every %d ms", interval)
    return recorder


def _exporter_from_env() -> MetricExporter | None:
    choice = exporter_choice("metrics")
    if choice == "none":
        return None
    if choice == "console":
        return ConsoleMetricExporter()
    if choice == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
            OTLPMetricExporter as GrpcExporter,
        )

        return GrpcExporter()
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HttpExporter,
    )

    return HttpExporter()


def _delta_temporality() -> bool:
    # The specification's "delta" and "lowmemory" preferences both make
    # counters and histograms delta; jobtrace has no other instrument kind.
    preference = os.environ.get(
        "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "cumulative"
    )
    return preference.strip().lower() in ("delta", "lowmemory")


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
    """Set up this process's metrics export now, if jobtrace exports them."""
    _recorder()


def exporting_recorder() -> ExportingRecorder | None:
    """Return the recorder that exports this process's metrics, if any."""
    state = _state
    if isinstance(state, ExportingRecorder) and state.pid == os.getpid():
        return state
    return None


_handoff.measurement_handler = record_local


def _reset_for_tests() -> None:
    global _state, _none_in_pid
    with _lock:
        _state = None
        _none_in_pid = None
