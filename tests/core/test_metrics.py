"""Job metrics recorded from jobtrace's job events."""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
    OTLPMetricExporter,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    InMemoryMetricReader,
    MetricExporter,
    MetricExportResult,
    MetricsData,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

import jobtrace
from jobtrace import _aggregation, _guard, _handoff, _metrics, _provider
from jobtrace import _names as names
from jobtrace._handoff import HandoffProcessor
from jobtrace._receiver import METRICS_PATH, Fault, OtlpReceiver

JOB = jobtrace.Job("rq", "shop.tasks.charge", id="job-1", queue="default")


@pytest.fixture
def reader(exporter: InMemorySpanExporter) -> Iterator[InMemoryMetricReader]:
    """Record jobtrace's metrics into memory."""
    memory = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[memory])
    _metrics._state = _metrics._SdkRecorder(meters.get_meter("tests"))
    yield memory
    _metrics._reset_for_tests()
    meters.shutdown()


def points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    """Return the data points of each metric, by metric name."""
    data = reader.get_metrics_data()
    found: dict[str, list[Any]] = {}
    if data is None:
        return found
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                found.setdefault(metric.name, []).extend(metric.data.data_points)
    return found


def test_run_recorded_once(reader: InMemoryMetricReader) -> None:
    """A run adds one duration, one consumed message and one queue time."""
    run = jobtrace.begin_run(JOB, {"jobtrace_sent_at": "1.0"})
    jobtrace.end_run(run, jobtrace.Outcome.SUCCESS)

    found = points(reader)
    (duration,) = found["messaging.process.duration"]
    (consumed,) = found["messaging.client.consumed.messages"]
    (queue_time,) = found["jobtrace.job.queue_time"]
    assert duration.count == 1
    assert consumed.value == 1
    assert queue_time.count == 1
    assert dict(duration.attributes) == {
        "messaging.system": "rq",
        "messaging.destination.name": "default",
        "jobtrace.job.name": "shop.tasks.charge",
        "messaging.operation.name": "process",
        "jobtrace.job.outcome": "success",
    }
    assert "jobtrace.job.outcome" not in queue_time.attributes
    assert tuple(duration.explicit_bounds) == _metrics.DURATION_BUCKETS


def test_failure_carries_error_type(reader: InMemoryMetricReader) -> None:
    """A failed run's series carries error.type and outcome failure."""
    run = jobtrace.begin_run(JOB, {})
    jobtrace.end_run(run, jobtrace.Outcome.FAILURE, ValueError("bad"))

    (duration,) = points(reader)["messaging.process.duration"]
    assert duration.attributes["error.type"] == "ValueError"
    assert duration.attributes["jobtrace.job.outcome"] == "failure"
    assert "jobtrace.job.queue_time" not in points(reader)


def test_no_unbounded_attributes(reader: InMemoryMetricReader) -> None:
    """Job ids and attempts never become metric attributes."""
    job = jobtrace.Job("rq", "shop.tasks.charge", id="unique-id", attempt=3)
    carrier: dict[str, Any] = {}
    jobtrace.end_send(jobtrace.begin_send(job, carrier))
    jobtrace.end_run(jobtrace.begin_run(job, carrier), jobtrace.Outcome.RETRY)

    for series in points(reader).values():
        for point in series:
            assert "messaging.message.id" not in point.attributes
            assert "jobtrace.job.attempt" not in point.attributes


def test_send_recorded(reader: InMemoryMetricReader) -> None:
    """An enqueue adds one operation duration and one sent message."""
    handle = jobtrace.begin_send(JOB, {})
    jobtrace.end_send(handle, ConnectionError("broker down"))

    found = points(reader)
    (duration,) = found["messaging.client.operation.duration"]
    (sent,) = found["messaging.client.sent.messages"]
    assert duration.count == 1
    assert sent.value == 1
    assert sent.attributes["error.type"] == "ConnectionError"
    assert sent.attributes["messaging.operation.name"] == "send"
    assert tuple(duration.explicit_bounds) == _metrics.SEND_BUCKETS


def test_reported_run_recorded(reader: InMemoryMetricReader) -> None:
    """A run reported by a parent process counts like any other run."""
    jobtrace.report_run(JOB, {}, jobtrace.Outcome.KILLED, start_time=1.0)

    (duration,) = points(reader)["messaging.process.duration"]
    assert duration.attributes["jobtrace.job.outcome"] == "killed"
    assert duration.attributes["error.type"] == "killed"
    assert duration.sum > 1.0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_child_measurements_recorded_in_parent(
    reader: InMemoryMetricReader,
) -> None:
    """A forked child with a span pipe sends its measurements to the parent."""
    provider = TracerProvider()
    processor = HandoffProcessor(SimpleSpanProcessor(InMemorySpanExporter()))
    provider.add_span_processor(processor)
    _handoff.activate(processor)
    pipe = jobtrace.open_span_pipe()
    assert pipe is not None

    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            pipe.use_in_child()
            for _ in range(3):
                run = jobtrace.begin_run(JOB, {})
                jobtrace.end_run(run, jobtrace.Outcome.SUCCESS)
            # Nothing was recorded in the child's own copy of the reader.
            code = 0 if not points(reader) else 3
        finally:
            os._exit(code)
    pipe.use_in_parent()
    _, status = os.waitpid(pid, 0)
    pipe.collect()

    assert os.waitstatus_to_exitcode(status) == 0
    (duration,) = points(reader)["messaging.process.duration"]
    assert duration.count == 3


class _MemoryExporter(MetricExporter):
    """Keeps every MetricsData it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.exported: list[MetricsData] = []

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        self.exported.append(metrics_data)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        pass


def exported_points(exporter: _MemoryExporter) -> dict[str, list[Any]]:
    """Return the data points of the newest export, by metric name."""
    found: dict[str, list[Any]] = {}
    for resource_metrics in exporter.exported[-1].resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                found.setdefault(metric.name, []).extend(metric.data.data_points)
    return found


RUN = {
    "messaging.system": "rq",
    "jobtrace.job.name": "shop.tasks.charge",
    "messaging.operation.name": "process",
    "jobtrace.job.outcome": "success",
}


def test_aggregates_place_buckets() -> None:
    """Values land in the bucket whose upper bound includes them."""
    aggregates = _aggregation.Aggregates()
    for duration in (0.005, 0.0051, 86400.0, 90000.0):
        aggregates.record(("process", RUN, duration, None))

    (metric,) = [
        m
        for m in aggregates.collect(delta=False)
        if m.name == _metrics.PROCESS_DURATION
    ]
    (point,) = metric.data.data_points
    buckets = list(point.bucket_counts)
    assert point.count == 4
    assert point.min == 0.005
    assert point.max == 90000.0
    assert buckets[0] == 1
    assert buckets[1] == 1
    assert buckets[-2] == 1
    assert buckets[-1] == 1
    assert sum(buckets) == 4
    assert len(buckets) == len(_metrics.DURATION_BUCKETS) + 1


def test_aggregates_cumulative_and_delta() -> None:
    """Cumulative collection keeps counting; delta starts over each time."""
    cumulative = _aggregation.Aggregates()
    delta = _aggregation.Aggregates()
    for aggregates in (cumulative, delta):
        aggregates.record(("process", RUN, 0.1, 2.0))
        aggregates.collect(delta=aggregates is delta)
        aggregates.record(("process", RUN, 0.1, 2.0))

    def consumed(aggregates: _aggregation.Aggregates, as_delta: bool) -> int:
        for metric in aggregates.collect(delta=as_delta):
            if metric.name == _metrics.CONSUMED_MESSAGES:
                return int(metric.data.data_points[0].value)
        return 0

    assert consumed(cumulative, False) == 2
    assert consumed(delta, True) == 1
    assert consumed(delta, True) == 0


class _RaisingExporter(_MemoryExporter):
    def export(self, *args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("nothing listens on 127.0.0.1:9")


def test_raising_exporter_is_failure() -> None:
    """An exporter that raises counts as a failed export, not a fault."""
    _guard.reset_error_counts()
    recorder = _aggregation.ExportingRecorder(
        _RaisingExporter(), Resource.create({"service.name": "shop"}), 3600, delta=False
    )
    recorder.record(("process", RUN, 0.25, 1.5))

    assert recorder.force_flush() is False
    assert _guard.error_counts() == {}
    recorder._stopped.set()


class _FailingExporter(_MemoryExporter):
    """An exporter that keeps each export and fails while ``failing`` is true."""

    failing = True

    def export(self, *args: Any, **kwargs: Any) -> MetricExportResult:
        super().export(*args, **kwargs)
        if self.failing:
            return MetricExportResult.FAILURE
        return MetricExportResult.SUCCESS


def test_failed_delta_export_resent() -> None:
    """A delta export that fails is counted again by the next one."""
    exporter = _FailingExporter()
    recorder = _aggregation.ExportingRecorder(
        exporter, Resource.create({"service.name": "shop"}), 3600, delta=True
    )
    recorder.record(("process", RUN, 0.25, 1.5))
    assert recorder.force_flush() is False
    (lost,) = exported_points(exporter)[_metrics.CONSUMED_MESSAGES]
    recorder.record(("process", RUN, 20.0, 0.5))
    recorder.record(("send", {"jobtrace.job.name": "shop.tasks.charge"}, 0.002, None))

    exporter.failing = False
    assert recorder.force_flush()
    found = exported_points(exporter)
    (consumed,) = found[_metrics.CONSUMED_MESSAGES]
    assert consumed.value == 2
    assert consumed.start_time_unix_nano == lost.start_time_unix_nano
    (duration,) = found[_metrics.PROCESS_DURATION]
    assert (duration.count, duration.sum) == (2, 20.25)
    assert (duration.min, duration.max) == (0.25, 20.0)
    assert sum(duration.bucket_counts) == 2
    (sent,) = found[_metrics.SENT_MESSAGES]
    assert sent.value == 1

    # A series that was exported is not exported again.
    recorder.record(("process", RUN, 0.25, 1.5))
    assert recorder.force_flush()
    (consumed,) = exported_points(exporter)[_metrics.CONSUMED_MESSAGES]
    assert consumed.value == 1
    recorder.shutdown()


class _RecordingFailingExporter(_FailingExporter):
    """A failing exporter during whose export the job records a measurement.

    It simulates a worker thread that records while an export is under way.
    """

    recorder: _aggregation.ExportingRecorder

    def export(self, *args: Any, **kwargs: Any) -> MetricExportResult:
        self.recorder.record(("process", RUN, 1.0, None))
        return super().export(*args, **kwargs)


def test_delta_failures_in_a_row_resent() -> None:
    """Several failed delta exports are all sent, once, by the next success."""
    exporter = _RecordingFailingExporter()
    recorder = _aggregation.ExportingRecorder(
        exporter, Resource.create({"service.name": "shop"}), 3600, delta=True
    )
    exporter.recorder = recorder
    recorder.record(("process", RUN, 0.25, None))
    assert recorder.force_flush() is False
    (first,) = exported_points(exporter)[_metrics.CONSUMED_MESSAGES]
    for _ in range(2):
        assert recorder.force_flush() is False

    exporter.failing = False
    assert recorder.force_flush()
    (consumed,) = exported_points(exporter)[_metrics.CONSUMED_MESSAGES]
    (duration,) = exported_points(exporter)[_metrics.PROCESS_DURATION]
    recorder.shutdown()

    # One measurement before the first export and one during each failed
    # export. The one made during the successful export goes into the next.
    assert consumed.value == 4
    assert consumed.start_time_unix_nano == first.start_time_unix_nano
    assert duration.count == 4
    assert sum(duration.bucket_counts) == 4
    assert (duration.min, duration.max) == (0.25, 1.0)
    assert duration.sum == 3.25


def test_failed_shutdown_export_logged(caplog: pytest.LogCaptureFixture) -> None:
    """Measurements that shutdown cannot export are reported as lost."""
    caplog.set_level(logging.WARNING, logger="jobtrace")
    recorder = _aggregation.ExportingRecorder(
        _FailingExporter(), Resource.create({"service.name": "shop"}), 3600, delta=True
    )
    recorder.record(("process", RUN, 0.25, 1.5))

    recorder.shutdown()

    lost = [r for r in caplog.records if "failed at shutdown" in r.getMessage()]
    assert len(lost) == 1
    assert "measurements made since the last successful export are lost" in (
        lost[0].getMessage()
    )


def test_shutdown_exports_late_drop_counts() -> None:
    """Spans dropped after the last export are counted at shutdown."""
    exporter = _MemoryExporter()
    recorder = _aggregation.ExportingRecorder(
        exporter, Resource.create({"service.name": "shop"}), 3600, delta=False
    )
    recorder.record(("process", RUN, 0.25, 1.5))
    assert recorder.force_flush()
    recorder.add(_metrics.DROPPED_SPANS, {names.DROP_REASON: "budget"}, 7)

    recorder.shutdown()

    assert len(exporter.exported) == 2
    (dropped,) = exported_points(exporter)[_metrics.DROPPED_SPANS]
    assert dropped.value == 7


def test_recorder_exports_series() -> None:
    """The recorder exports each instrument with bounded attributes only."""
    exporter = _MemoryExporter()
    recorder = _aggregation.ExportingRecorder(
        exporter, Resource.create({"service.name": "shop"}), 3600, delta=False
    )
    recorder.record(("process", RUN, 0.25, 1.5))
    recorder.record(("send", {"jobtrace.job.name": "shop.tasks.charge"}, 0.002, None))

    assert recorder.force_flush()
    found = exported_points(exporter)
    assert set(found) == {
        _metrics.PROCESS_DURATION,
        _metrics.CONSUMED_MESSAGES,
        _metrics.QUEUE_TIME,
        _metrics.OPERATION_DURATION,
        _metrics.SENT_MESSAGES,
    }
    (queue_time,) = found[_metrics.QUEUE_TIME]
    assert "jobtrace.job.outcome" not in queue_time.attributes
    assert queue_time.sum == 1.5
    (sent,) = found[_metrics.SENT_MESSAGES]
    assert sent.value == 1
    recorder.shutdown()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_unpiped_child_starts_new_series(monkeypatch: pytest.MonkeyPatch) -> None:
    """A child forked without a pipe counts from zero under its own id."""
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "console")
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "600000")
    _provider._reset_for_tests()
    try:
        run = jobtrace.begin_run(JOB, {})
        jobtrace.end_run(run, jobtrace.Outcome.SUCCESS)
        parent = _metrics.exporting_recorder()
        assert parent is not None

        pid = os.fork()
        if pid == 0:
            run = jobtrace.begin_run(JOB, {})
            jobtrace.end_run(run, jobtrace.Outcome.SUCCESS)
            child = _metrics.exporting_recorder()
            fresh = child is not None and child is not parent
            own_id = (
                fresh
                and child.resource.attributes["service.instance.id"]
                != (parent.resource.attributes["service.instance.id"])
            )
            os._exit(0 if own_id else 3)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        _provider._reset_for_tests()


def test_exporter_none_builds_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """OTEL_METRICS_EXPORTER=none builds no meter provider."""
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
    _provider._reset_for_tests()
    try:
        _metrics.build()
        assert _metrics.exporting_recorder() is None
    finally:
        _provider._reset_for_tests()


def test_recorder_has_own_instance_id(monkeypatch: pytest.MonkeyPatch) -> None:
    """The metrics resource names this process's own instance."""
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "console")
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "600000")
    _provider._reset_for_tests()
    try:
        _metrics.build()
        built = _metrics.exporting_recorder()
        assert built is not None
        attributes = built.resource.attributes
        assert attributes["jobtrace.component"] == "web"
        assert len(str(attributes["service.instance.id"])) == 36
        built.shutdown()
    finally:
        _provider._reset_for_tests()


def test_invalid_interval_warns(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An invalid export interval falls back to the default with a warning."""
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "soon")

    with caplog.at_level(logging.WARNING, logger="jobtrace._metrics"):
        interval = _metrics._export_interval()

    assert interval == _metrics.DEFAULT_EXPORT_INTERVAL_MS
    assert "OTEL_METRIC_EXPORT_INTERVAL='soon'" in caplog.text


@pytest.fixture
def metrics_to_receiver(
    receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> Iterator[OtlpReceiver]:
    """Export jobtrace's metrics to ``receiver`` on flush and shutdown only."""
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "otlp")
    monkeypatch.setenv(
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", receiver.endpoint + METRICS_PATH
    )
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "600000")
    _provider._reset_for_tests()
    jobtrace.configure(tracer_provider=TracerProvider())
    yield receiver
    recorder = _metrics.exporting_recorder()
    if recorder is not None:
        recorder.shutdown(timeout_millis=0)
    _provider._reset_for_tests()


@pytest.mark.parametrize("choice", ["otlp", "none"])
def test_configure_builds_metrics_export(
    monkeypatch: pytest.MonkeyPatch, choice: str
) -> None:
    """configure() builds the OTLP metrics export, or none, from OTEL_*."""
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", choice)
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "1500")
    _provider._reset_for_tests()
    try:
        jobtrace.configure(tracer_provider=TracerProvider())
        built = _metrics.exporting_recorder()

        if choice == "none":
            assert built is None
        else:
            assert built is not None
            assert isinstance(built._exporter, OTLPMetricExporter)
            assert built._interval == 1.5
            built.shutdown()
    finally:
        _provider._reset_for_tests()


@pytest.mark.parametrize("action", ["flush", "shutdown"])
def test_flush_and_shutdown_export_metrics(
    metrics_to_receiver: OtlpReceiver, action: str
) -> None:
    """flush() and shutdown() send the measurements not yet exported."""
    _provider._owns_provider = True
    for _ in range(3):
        run = jobtrace.begin_run(JOB, {})
        jobtrace.end_run(run, jobtrace.Outcome.SUCCESS)

    finished = getattr(jobtrace, action)(timeout=5)

    assert finished is True
    assert metrics_to_receiver.request_count(METRICS_PATH) == 1
    (duration,) = [
        point
        for point in metrics_to_receiver.latest_points().values()
        if point.name == "messaging.process.duration"
    ]
    assert duration.count == 3


@pytest.mark.parametrize("action", ["flush", "shutdown"])
def test_metrics_export_bounded(metrics_to_receiver: OtlpReceiver, action: str) -> None:
    """flush() and shutdown() return within their timeout if the collector hangs."""
    _provider._owns_provider = True
    metrics_to_receiver.set_fault(Fault(hang=True))
    run = jobtrace.begin_run(JOB, {})
    jobtrace.end_run(run, jobtrace.Outcome.SUCCESS)
    call: Callable[..., bool] = getattr(jobtrace, action)

    started = time.monotonic()
    finished = call(timeout=0.5)
    elapsed = time.monotonic() - started

    assert finished is False
    assert elapsed < 1.5
    assert metrics_to_receiver.faulted_requests >= 1


def test_docs_list_units_and_buckets() -> None:
    """docs/metrics.md lists every instrument's unit and the bucket bounds."""
    text = (Path(__file__).parents[2] / "docs" / "metrics.md").read_text()
    rows = re.findall(r"^\| `([a-z_.]+)` \| (\w+) \| `([^`]+)` \|", text, re.M)
    blocks = re.findall(r"^```\n([0-9. \n]+)```", text, re.M)

    documented = {name: (kind, unit) for name, kind, unit in rows}
    expected = {
        name: ("histogram", unit)
        for name, (unit, *_) in _aggregation.HISTOGRAMS.items()
    }
    expected.update(
        {name: ("counter", unit) for name, (unit, _) in _aggregation.COUNTERS.items()}
    )
    assert documented == expected
    bounds = [tuple(float(value) for value in block.split()) for block in blocks]
    assert bounds == [_metrics.DURATION_BUCKETS, _metrics.SEND_BUCKETS]
