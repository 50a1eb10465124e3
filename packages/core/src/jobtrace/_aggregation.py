"""jobtrace's own aggregation and export of its job metrics.

An SDK instrument costs about 8 us per measurement on a 2-vCPU VM (SDK
1.45), mostly because it copies and checks the attributes every time, and
a job makes three measurements. jobtrace has six instruments with few,
fixed attribute sets, so it keeps their series itself, one dict update per
measurement, and builds the SDK's :class:`MetricsData` only when it
exports, through the SDK's OTLP metric exporter.
"""

from __future__ import annotations

import bisect
import logging
import os
import threading
import time
from typing import Any

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from jobtrace import _delivery
from jobtrace import _names as names
from jobtrace._guard import Guard
from jobtrace._version import __version__

log = logging.getLogger(__name__)

PROCESS_DURATION = "messaging.process.duration"
OPERATION_DURATION = "messaging.client.operation.duration"
SENT_MESSAGES = "messaging.client.sent.messages"
CONSUMED_MESSAGES = "messaging.client.consumed.messages"
QUEUE_TIME = "jobtrace.job.queue_time"
DROPPED_SPANS = "jobtrace.spans.dropped"

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

#: Name, unit, description and bucket bounds of each histogram.
HISTOGRAMS = {
    PROCESS_DURATION: ("s", "Time a job ran, from start to outcome.", DURATION_BUCKETS),
    QUEUE_TIME: (
        "s",
        "Time a job waited from its enqueue, or its scheduled time, to its start.",
        DURATION_BUCKETS,
    ),
    OPERATION_DURATION: ("s", "Time an enqueue took.", SEND_BUCKETS),
}
#: Name, unit and description of each counter.
COUNTERS = {
    CONSUMED_MESSAGES: ("{message}", "Job runs finished."),
    SENT_MESSAGES: ("{message}", "Jobs enqueued."),
    DROPPED_SPANS: (
        "{span}",
        "Spans dropped to keep local traces within JOBTRACE_MAX_SPANS_PER_TRACE.",
    ),
}

_Key = tuple[tuple[str, Any], ...]
# Per series: count, sum, min, max, then one count per bucket.
_Series = list[Any]
# Queue time is known before the outcome, so its series do not split by
# outcome or error.
_NOT_ON_QUEUE_TIME = (names.JOB_OUTCOME, names.ERROR_TYPE)


class Aggregates:
    """The series of jobtrace's instruments since the last collection."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._start_ns = time.time_ns()
        self._histograms: dict[str, dict[_Key, _Series]] = {}
        self._counters: dict[str, dict[_Key, int]] = {}
        self._last_delta: (
            tuple[int, dict[str, dict[_Key, _Series]], dict[str, dict[_Key, int]]]
            | None
        ) = None

    def record(self, values: tuple[Any, ...]) -> None:
        """Add one measurement, as built by ``record_run`` or ``record_send``."""
        operation, attributes, duration, queue_time = values
        key = tuple(sorted(attributes.items()))
        with self._lock:
            if operation == "process":
                self._observe(PROCESS_DURATION, key, duration)
                self._count(CONSUMED_MESSAGES, key)
                if queue_time is not None:
                    waited = tuple(i for i in key if i[0] not in _NOT_ON_QUEUE_TIME)
                    self._observe(QUEUE_TIME, waited, queue_time)
            else:
                self._observe(OPERATION_DURATION, key, duration)
                self._count(SENT_MESSAGES, key)

    def _observe(self, name: str, key: _Key, value: float) -> None:
        bounds = HISTOGRAMS[name][2]
        series = self._histograms.setdefault(name, {}).get(key)
        if series is None:
            series = [0, 0.0, value, value] + [0] * (len(bounds) + 1)
            self._histograms[name][key] = series
        series[0] += 1
        series[1] += value
        series[2] = min(series[2], value)
        series[3] = max(series[3], value)
        # A bucket counts values above the bound before it, up to and
        # including its own, as OTLP defines explicit buckets.
        series[4 + bisect.bisect_left(bounds, value)] += 1

    def add(self, name: str, attributes: dict[str, Any], amount: int) -> None:
        """Add ``amount`` to one of the counters outside job measurements."""
        key = tuple(sorted(attributes.items()))
        with self._lock:
            self._count(name, key, amount)

    def restore_last_delta(self) -> None:
        """Add the series of the last delta collection back, at most once.

        The next delta collection then starts where the lost one started
        and counts its measurements as well.
        """
        with self._lock:
            last, self._last_delta = self._last_delta, None
            if last is None:
                return
            start, histograms, counters = last
            self._start_ns = start
            for name, series in histograms.items():
                current = self._histograms.setdefault(name, {})
                for key, values in series.items():
                    newer = current.get(key)
                    current[key] = values if newer is None else _merged(values, newer)
            for name, counts in counters.items():
                for key, count in counts.items():
                    self._count(name, key, count)

    def _count(self, name: str, key: _Key, amount: int = 1) -> None:
        counts = self._counters.setdefault(name, {})
        counts[key] = counts.get(key, 0) + amount

    def collect(self, *, delta: bool) -> list[Metric]:
        """Return the series as SDK metrics; with ``delta``, start new ones.

        A delta collection keeps what it took until the next one, so that
        :meth:`restore_last_delta` can return it after a failed export.
        """
        now = time.time_ns()
        with self._lock:
            start = self._start_ns
            histograms, counters = self._histograms, self._counters
            if delta:
                self._histograms, self._counters = {}, {}
                self._start_ns = now
                self._last_delta = (start, histograms, counters)
            else:
                histograms = {
                    n: {k: list(s) for k, s in v.items()} for n, v in histograms.items()
                }
                counters = {n: dict(v) for n, v in counters.items()}
        temporality = (
            AggregationTemporality.DELTA if delta else AggregationTemporality.CUMULATIVE
        )
        collected = [
            _histogram(name, series, start, now, temporality)
            for name, series in histograms.items()
        ]
        collected += [
            _counter(name, counts, start, now, temporality)
            for name, counts in counters.items()
        ]
        return collected


def _merged(older: _Series, newer: _Series) -> _Series:
    merged = [older[0] + newer[0], older[1] + newer[1]]
    merged += [min(older[2], newer[2]), max(older[3], newer[3])]
    merged += [a + b for a, b in zip(older[4:], newer[4:], strict=True)]
    return merged


def _histogram(
    name: str,
    series: dict[_Key, _Series],
    start: int,
    now: int,
    temporality: AggregationTemporality,
) -> Metric:
    unit, description, bounds = HISTOGRAMS[name]
    points = [
        HistogramDataPoint(
            attributes=dict(key),
            start_time_unix_nano=start,
            time_unix_nano=now,
            count=values[0],
            sum=values[1],
            bucket_counts=values[4:],
            explicit_bounds=bounds,
            min=values[2],
            max=values[3],
        )
        for key, values in series.items()
    ]
    return Metric(
        name=name,
        description=description,
        unit=unit,
        data=Histogram(data_points=points, aggregation_temporality=temporality),
    )


def _counter(
    name: str,
    counts: dict[_Key, int],
    start: int,
    now: int,
    temporality: AggregationTemporality,
) -> Metric:
    unit, description = COUNTERS[name]
    points = [
        NumberDataPoint(
            attributes=dict(key),
            start_time_unix_nano=start,
            time_unix_nano=now,
            value=count,
        )
        for key, count in counts.items()
    ]
    return Metric(
        name=name,
        description=description,
        unit=unit,
        data=Sum(
            data_points=points, aggregation_temporality=temporality, is_monotonic=True
        ),
    )


class ExportingRecorder:
    """Aggregates this process's measurements and exports them periodically.

    The export thread starts at the first measurement and only in the
    process that made it, so forked children start none.
    """

    def __init__(
        self,
        exporter: MetricExporter,
        resource: Resource,
        interval_seconds: float,
        *,
        delta: bool,
    ) -> None:
        self.pid = os.getpid()
        self.resource = resource
        self._exporter = exporter
        self._interval = interval_seconds
        self._delta = delta
        self._aggregates = Aggregates()
        self._scope = InstrumentationScope("jobtrace", __version__)
        self._export_lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        # Whether a measurement arrived since the last successful export.
        self._unexported = False
        endpoint = getattr(exporter, "_endpoint", None)
        self._log = _delivery.MetricExportLog(
            _delivery.redact(endpoint) if isinstance(endpoint, str) else None
        )

    def record(self, values: tuple[Any, ...]) -> None:
        self._aggregates.record(values)
        self._unexported = True
        if self._thread is None:
            self._start_thread()

    def add(self, name: str, attributes: dict[str, Any], amount: int) -> None:
        self._aggregates.add(name, attributes, amount)
        self._unexported = True
        if self._thread is None:
            self._start_thread()

    def _start_thread(self) -> None:
        with self._export_lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(
                target=self._run, name="jobtrace-metrics", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        while not self._stopped.wait(self._interval):
            with _EXPORT:
                self.export()

    def export(self, timeout_millis: float = 10_000) -> bool:
        """Send the current series to the exporter; return True on success."""
        with self._export_lock:
            self._unexported = False
            collected = self._aggregates.collect(delta=self._delta)
            if not collected:
                return True
            data = MetricsData(
                resource_metrics=[
                    ResourceMetrics(
                        resource=self.resource,
                        scope_metrics=[
                            ScopeMetrics(
                                scope=self._scope, metrics=collected, schema_url=""
                            )
                        ],
                        schema_url="",
                    )
                ]
            )
            # The exporter's own lines, one per failed export, are replaced
            # by one line when export fails and one when it works again.
            raised = None
            with _delivery.quiet_logs() as held:
                try:
                    result = self._exporter.export(data, timeout_millis=timeout_millis)
                except Exception as error:
                    # opentelemetry-exporter-otlp-proto-http 1.35 can raise
                    # requests' ConnectionError when nothing listens, instead
                    # of returning a failure.
                    result = MetricExportResult.FAILURE
                    raised = _delivery.redact(f"{type(error).__name__}: {error}")
            succeeded = result is MetricExportResult.SUCCESS
            if not succeeded and self._delta:
                # A delta series that the collector did not take would be
                # lost: the next export would start after it.
                self._aggregates.restore_last_delta()
        if not succeeded:
            self._unexported = True
        self._log.update(succeeded, raised or _delivery.reason_of(held))
        return succeeded

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        """Export now, so the collector has every measurement so far."""
        return self.export(timeout_millis)

    def shutdown(self, timeout_millis: float = 10_000) -> None:
        """Export what is new and stop the export thread and the exporter.

        Series that a flush exported already are not sent again, so a
        process that flushed before its collector went away exits at once.
        """
        self._stopped.set()
        if self._unexported and not self.export(timeout_millis):
            self._log.lost_at_shutdown()
        self._exporter.shutdown()


_EXPORT = Guard("metrics.export")
