"""Dropped spans are counted and logged once per outage, never per batch.

The exporters here are real OTLP/HTTP exporters that send to a receiver on
127.0.0.1, which fails on purpose with :class:`jobtrace._receiver.Fault`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from jobtrace import _delivery, _provider
from jobtrace._delivery import CountingProcessor, ExportHealth
from jobtrace._handoff import HandoffProcessor
from jobtrace._provider import _TrackedExporter
from jobtrace._receiver import Fault, OtlpReceiver

from .test_provider import run_python

SECRET = "sk-live-0123456789abcdef"


@pytest.fixture(autouse=True)
def capture_warnings(caplog: pytest.LogCaptureFixture) -> None:
    """Capture every WARNING, whatever level an earlier test left set."""
    caplog.set_level(logging.WARNING)


class Pipeline:
    """A provider whose batch processor exports through jobtrace's wrapper."""

    def __init__(self, receiver: OtlpReceiver, queue_size: int = 2048) -> None:
        exporter = OTLPSpanExporter(
            endpoint=f"{receiver.endpoint}/v1/traces",
            timeout=1,
            headers={"api-key": SECRET},
        )
        self.tracked = _TrackedExporter(exporter)
        # A long delay, so that spans leave the queue only on force_flush.
        batch = BatchSpanProcessor(
            self.tracked,
            max_queue_size=queue_size,
            max_export_batch_size=min(queue_size, 512),
            schedule_delay_millis=60_000,
        )
        self.provider = TracerProvider(shutdown_on_exit=False)
        self.provider.add_span_processor(
            HandoffProcessor(CountingProcessor(batch, self.tracked.health))
        )
        self.tracer = self.provider.get_tracer("tests.delivery")

    def spans(self, count: int) -> None:
        for number in range(count):
            self.tracer.start_span(f"span {number}").end()

    def flush(self) -> None:
        self.provider.force_flush()


@pytest.fixture
def pipeline(receiver: OtlpReceiver) -> Iterator[Pipeline]:
    """A pipeline that exports to the test's receiver."""
    built = Pipeline(receiver)
    yield built
    built.provider.shutdown()


def warnings_from(
    caplog: pytest.LogCaptureFixture, prefix: str
) -> list[logging.LogRecord]:
    return [
        record
        for record in caplog.records
        if record.name.startswith(prefix) and record.levelno >= logging.WARNING
    ]


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param(Fault(status=500), id="500"),
        pytest.param(Fault(status=503), id="503"),
        pytest.param(Fault(status=429, retry_after="30"), id="429-retry-after"),
    ],
)
def test_failed_exports_logged_once(
    fault: Fault,
    receiver: OtlpReceiver,
    pipeline: Pipeline,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Five failed exports log one jobtrace line and nothing from the SDK."""
    receiver.set_fault(fault)

    for _ in range(5):
        pipeline.spans(3)
        pipeline.flush()

    (line,) = warnings_from(caplog, "jobtrace")
    assert receiver.faulted_requests >= 5
    assert "failed" in line.getMessage()
    assert warnings_from(caplog, "opentelemetry") == []
    assert pipeline.tracked.health.failed == 15
    assert pipeline.tracked.health.dropped == 15


def test_recovery_logs_count(
    receiver: OtlpReceiver, pipeline: Pipeline, caplog: pytest.LogCaptureFixture
) -> None:
    """Export resumes after a fault, and one line gives the dropped count."""
    receiver.set_fault(Fault(status=503))
    pipeline.spans(4)
    pipeline.flush()
    receiver.set_fault(None)
    pipeline.spans(2)
    pipeline.flush()

    failed, recovered = (r.getMessage() for r in warnings_from(caplog, "jobtrace"))
    assert "failed" in failed
    assert "works again; 4 spans were dropped" in recovered
    assert len(receiver.spans()) == 2
    assert pipeline.tracked.health.exported == 2


def test_collector_restart_resumes(receiver: OtlpReceiver, pipeline: Pipeline) -> None:
    """A collector that goes away and comes back on its port gets new spans."""
    pipeline.spans(1)
    pipeline.flush()
    receiver.stop()
    pipeline.spans(3)
    pipeline.flush()
    receiver.start()
    pipeline.spans(2)
    pipeline.flush()

    assert len(receiver.spans()) == 3
    assert pipeline.tracked.health.failed == 3


def test_hanging_collector_times_out(
    receiver: OtlpReceiver, pipeline: Pipeline, caplog: pytest.LogCaptureFixture
) -> None:
    """A collector that never responds fails the export at its timeout."""
    receiver.set_fault(Fault(hang=True))

    pipeline.spans(2)
    pipeline.flush()

    (line,) = warnings_from(caplog, "jobtrace")
    assert "timeout" in line.getMessage()
    assert pipeline.tracked.health.failed == 2


def test_queue_overflow_counted(
    receiver: OtlpReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    """Spans past a full batch queue are counted, with no line per span."""
    pipeline = Pipeline(receiver, queue_size=8)

    pipeline.spans(50)

    # The export thread may take spans out of the queue meanwhile, so fewer
    # spans overflow, and one counted just before such a take still fits.
    overflowed = pipeline.tracked.health.overflowed
    assert overflowed >= 50 - 3 * 8
    assert pipeline.tracked.health.queued == 50
    assert warnings_from(caplog, "opentelemetry") == []
    pipeline.provider.shutdown()
    assert 50 - overflowed <= len(receiver.spans()) <= 50 - overflowed + 8


def test_secret_header_never_logged(
    receiver: OtlpReceiver, pipeline: Pipeline, caplog: pytest.LogCaptureFixture
) -> None:
    """An API key in the exporter's headers appears in no log record."""
    receiver.set_fault(Fault(status=401))
    pipeline.spans(1)
    pipeline.flush()
    pipeline.tracked.health.report()

    caplog.set_level(logging.DEBUG)
    receiver.set_fault(None)
    pipeline.spans(1)
    pipeline.flush()

    assert caplog.records
    assert all(SECRET not in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("http://user:pw@127.0.0.1:4318/v1", "http://***@127.0.0.1:4318/v1"),
        ("https://h/v1/traces?api_key=abc&x=1", "https://h/v1/traces?api_key=***&x=1"),
        ("https://h/v1?token=abc", "https://h/v1?token=***"),
        ("Connection refused", "Connection refused"),
    ],
)
def test_redact_url_credentials(message: str, expected: str) -> None:
    """Credentials in a URL's user part or query string are masked."""
    assert _delivery.redact(message) == expected


SHUTDOWN_SCRIPT = """
import json, logging
import jobtrace

logging.basicConfig(level=logging.DEBUG)
tracer = jobtrace.tracer()
for number in range(20):
    tracer.start_span(f"span {number}").end()
finished = jobtrace.shutdown()
print(json.dumps({"dropped": jobtrace.dropped_spans(), "finished": finished}))
"""


def test_shutdown_reports_drops_once(receiver: OtlpReceiver) -> None:
    """A process whose collector fails reports its drops in one line at exit."""
    receiver.set_fault(Fault(status=503))

    result, stderr = run_python(
        SHUTDOWN_SCRIPT,
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
        OTEL_EXPORTER_OTLP_HEADERS=f"api-key={SECRET}",
        JOBTRACE_FLUSH_TIMEOUT="1",
    )

    dropped_lines = [line for line in stderr.splitlines() if "dropped 20 of" in line]
    assert result["dropped"] == 20
    assert len(dropped_lines) == 1
    assert ":opentelemetry." not in stderr
    assert SECRET not in stderr


def test_env_headers_never_logged(
    receiver: OtlpReceiver,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An API key in OTEL_EXPORTER_OTLP_HEADERS appears in no log record."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", f"api-key={SECRET}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "1")
    caplog.set_level(logging.DEBUG)
    exporter = _provider._exporter_from_env()
    assert exporter is not None
    tracked = _TrackedExporter(exporter)
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(
        HandoffProcessor(CountingProcessor(BatchSpanProcessor(tracked), tracked.health))
    )

    for status in (401, 403, 500, 503):
        receiver.set_fault(Fault(status=status))
        provider.get_tracer("tests").start_span("span").end()
        provider.force_flush()
    receiver.set_fault(None)
    provider.shutdown()
    tracked.health.report()

    assert receiver.faulted_requests >= 4
    for record in caplog.records:
        assert SECRET not in record.getMessage(), record.name


def test_overflow_logged_while_exports_succeed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Spans dropped over the queue limit get one line, at most once a minute."""
    health = ExportHealth("http://127.0.0.1:1/v1/traces")
    with caplog.at_level(logging.WARNING, logger="jobtrace"):
        for _ in range(100):
            health.count_queued(overflowed=True)
        health.count_export(512, succeeded=True, reason=None)
        for _ in range(7):
            health.count_queued(overflowed=True)
        health.count_export(512, succeeded=True, reason=None)

    lines = [
        r.getMessage() for r in caplog.records if "queue was full" in r.getMessage()
    ]
    assert lines == [lines[0]]
    assert "dropped 100 spans" in lines[0]
    assert "OTEL_BSP_MAX_QUEUE_SIZE" in lines[0]

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="jobtrace"):
        health.report()
    # The 7 spans after the line come out at shutdown.
    assert "dropped 107 of 107 spans" in caplog.text
    assert health.dropped == 107
