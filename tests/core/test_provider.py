"""Tests for settings in force, the tracer provider, flush and shutdown."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http import trace_exporter as http_module
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

import jobtrace
from jobtrace import _guard, _provider
from jobtrace._budget import BudgetProcessor
from jobtrace._delivery import CountingProcessor
from jobtrace._handoff import HandoffProcessor
from jobtrace._version import __version__

#: Local endpoints, so no exporter built here could reach another address.
HTTP_ENDPOINT = "http://127.0.0.1:4318"
GRPC_ENDPOINT = "http://127.0.0.1:4317"


@pytest.fixture(autouse=True)
def capture_warnings(caplog: pytest.LogCaptureFixture) -> None:
    """Capture jobtrace's warnings even if an earlier test raised the root level.

    The in-process Celery worker tests leave the root logger at ERROR.
    """
    caplog.set_level(logging.WARNING, logger="jobtrace")


@pytest.fixture(autouse=True)
def clean_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Clear jobtrace's globals and the JOBTRACE_* and OTEL_* variables."""
    for name in list(os.environ):
        if name.startswith(("JOBTRACE_", "OTEL_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", HTTP_ENDPOINT)
    _provider._reset_for_tests()
    _guard.reset_error_counts()
    yield
    _provider._reset_for_tests()
    _guard.reset_error_counts()


def provider_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """Return the WARNING and ERROR records of the provider and settings modules."""
    return [
        record
        for record in caplog.records
        if record.name in ("jobtrace._provider", "jobtrace._settings")
        and record.levelno >= logging.WARNING
    ]


def memory_provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    """Return an application-style provider that exports to memory."""
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return provider, memory


class BlockingExporter(SpanExporter):
    """An exporter whose export waits until ``release`` is set."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.exporting = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.exporting.set()
        self.release.wait()
        return SpanExportResult.SUCCESS


@pytest.fixture
def blocked() -> Iterator[BlockingExporter]:
    """Hand jobtrace a batch provider whose exporter hangs with one span queued."""
    exporter = BlockingExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    jobtrace.configure(tracer_provider=provider)
    jobtrace.tracer().start_span("stuck").end()
    yield exporter
    exporter.release.set()
    provider.shutdown()


def timed(action: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """Call ``action`` and return its result and the seconds it took."""
    started = time.monotonic()
    result = action(*args, **kwargs)
    return result, time.monotonic() - started


def run_python(code: str, **env: str) -> tuple[dict[str, Any], str]:
    """Run ``code`` in a fresh interpreter and return its JSON line and stderr.

    The global tracer provider can be set only once per process, so tests
    that let jobtrace build and install one run in a child process. The
    child gets this environment without JOBTRACE_* and OTEL_* variables,
    plus ``env``.
    """
    environ = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("JOBTRACE_", "OTEL_"))
    }
    environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = HTTP_ENDPOINT
    environ.update(env)
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1]), result.stderr


# Settings and enabled()


def test_settings_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """settings() reads the environment on first use and then keeps it."""
    monkeypatch.setenv("JOBTRACE_PROPAGATION", "child")
    first = jobtrace.settings()
    monkeypatch.setenv("JOBTRACE_PROPAGATION", "link")

    assert jobtrace.settings() is first
    assert first.propagation == "child"


def test_enabled_by_default() -> None:
    """Without variables, jobtrace is enabled."""
    assert jobtrace.enabled() is True


def test_disabled_by_jobtrace_enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    """JOBTRACE_ENABLED=false turns jobtrace off."""
    monkeypatch.setenv("JOBTRACE_ENABLED", "false")

    assert jobtrace.enabled() is False


@pytest.mark.parametrize("value", ["true", "TRUE", " True "])
def test_disabled_by_otel_sdk_disabled(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """OTEL_SDK_DISABLED=true, in any case, turns jobtrace off."""
    monkeypatch.setenv("OTEL_SDK_DISABLED", value)

    assert jobtrace.enabled() is False


@pytest.mark.parametrize("value", ["false", "", "1", "yes"])
def test_otel_sdk_disabled_other(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """As in the OTel SDK, only the word true in OTEL_SDK_DISABLED disables."""
    monkeypatch.setenv("OTEL_SDK_DISABLED", value)

    assert jobtrace.enabled() is True


# Component and resource attributes


def test_resource_defaults() -> None:
    """A process that never ran a worker hook is the web component."""
    assert jobtrace.component() == "web"
    assert jobtrace.resource_attributes() == {"jobtrace.component": "web"}


def test_resource_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """JOBTRACE_COMPONENT and JOBTRACE_ENVIRONMENT become resource attributes."""
    monkeypatch.setenv("JOBTRACE_COMPONENT", "beat")
    monkeypatch.setenv("JOBTRACE_ENVIRONMENT", "staging")

    assert jobtrace.resource_attributes() == {
        "jobtrace.component": "beat",
        "deployment.environment.name": "staging",
    }


def test_mark_worker() -> None:
    """mark_worker makes this process the worker component."""
    jobtrace.mark_worker()

    assert jobtrace.component() == "worker"
    assert jobtrace.resource_attributes() == {"jobtrace.component": "worker"}


def test_component_setting_beats_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """JOBTRACE_COMPONENT wins over the component that mark_worker detects."""
    monkeypatch.setenv("JOBTRACE_COMPONENT", "scheduler")

    jobtrace.mark_worker()

    assert jobtrace.component() == "scheduler"


def test_configure_overrides_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """configure's arguments override the variables, and other settings stay."""
    monkeypatch.setenv("JOBTRACE_COMPONENT", "beat")
    monkeypatch.setenv("JOBTRACE_ENVIRONMENT", "staging")
    monkeypatch.setenv("JOBTRACE_PROPAGATION", "child")
    monkeypatch.setenv("JOBTRACE_FLUSH_TIMEOUT", "2")
    monkeypatch.setenv("JOBTRACE_ENABLED", "false")

    jobtrace.configure(
        component="web",
        environment="prod",
        tracer_provider=TracerProvider(shutdown_on_exit=False),
    )

    settings = jobtrace.settings()
    assert jobtrace.resource_attributes() == {
        "jobtrace.component": "web",
        "deployment.environment.name": "prod",
    }
    assert settings.propagation == "child"
    assert settings.flush_timeout == 2.0
    assert settings.enabled is False


def test_configure_without_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    """configure() without arguments keeps the values read from the variables."""
    monkeypatch.setenv("JOBTRACE_ENVIRONMENT", "staging")
    # configure builds a provider when it has none, and that build would
    # install a global provider in the test process.
    jobtrace.configure(tracer_provider=TracerProvider(shutdown_on_exit=False))

    jobtrace.configure()

    assert jobtrace.settings().environment == "staging"
    assert jobtrace.settings().component is None


def test_mark_worker_after_build_warns(caplog: pytest.LogCaptureFixture) -> None:
    """mark_worker warns once when jobtrace already built its provider as web."""
    _provider._provider = TracerProvider(shutdown_on_exit=False)
    _provider._owns_provider = True

    jobtrace.mark_worker()
    jobtrace.mark_worker()

    records = provider_records(caplog)
    assert len(records) == 1
    assert records[0].levelno == logging.WARNING
    assert "JOBTRACE_COMPONENT=worker" in records[0].getMessage()


def test_mark_worker_no_warning(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """mark_worker stays quiet unless jobtrace built its provider as web."""
    jobtrace.mark_worker()
    _provider._reset_for_tests()

    jobtrace.configure(tracer_provider=TracerProvider(shutdown_on_exit=False))
    jobtrace.mark_worker()
    _provider._reset_for_tests()

    monkeypatch.setenv("JOBTRACE_COMPONENT", "worker")
    _provider._provider = TracerProvider(shutdown_on_exit=False)
    _provider._owns_provider = True
    jobtrace.mark_worker()

    assert provider_records(caplog) == []


# Injected provider


def test_configure_uses_provider() -> None:
    """A provider passed to configure gets jobtrace's spans, under its scope."""
    provider, memory = memory_provider()

    jobtrace.configure(tracer_provider=provider)
    jobtrace.tracer().start_span("probe").end()

    spans = memory.get_finished_spans()
    assert [span.name for span in spans] == ["probe"]
    assert spans[0].instrumentation_scope is not None
    assert spans[0].instrumentation_scope.name == "jobtrace"
    assert spans[0].instrumentation_scope.version == __version__
    assert _provider._provider is provider
    assert _provider._owns_provider is False


def test_configure_last_provider_wins() -> None:
    """A second configure with another provider replaces the first."""
    first, first_memory = memory_provider()
    second, second_memory = memory_provider()

    jobtrace.configure(tracer_provider=first)
    jobtrace.configure(tracer_provider=second)
    jobtrace.tracer().start_span("probe").end()

    assert first_memory.get_finished_spans() == ()
    assert len(second_memory.get_finished_spans()) == 1


def test_configure_keeps_provider() -> None:
    """configure without a provider keeps the one passed before."""
    provider, memory = memory_provider()

    jobtrace.configure(tracer_provider=provider)
    jobtrace.configure(component="worker")
    jobtrace.tracer().start_span("probe").end()

    assert len(memory.get_finished_spans()) == 1


def test_shutdown_keeps_app_provider() -> None:
    """shutdown only flushes a provider that the application passed in."""
    provider, memory = memory_provider()
    jobtrace.configure(tracer_provider=provider)

    finished = jobtrace.shutdown(timeout=1)
    jobtrace.tracer().start_span("after shutdown").end()

    assert finished is True
    assert [span.name for span in memory.get_finished_spans()] == ["after shutdown"]


def test_flush_injected_provider() -> None:
    """flush returns True when the provider's processors finish in time."""
    provider, _ = memory_provider()
    jobtrace.configure(tracer_provider=provider)

    assert jobtrace.flush(timeout=1) is True


def test_flush_without_provider() -> None:
    """flush and shutdown return True at once when no provider exists."""
    assert jobtrace.flush() is True
    assert jobtrace.shutdown() is True


# Bounded flush and shutdown


def test_flush_bounded(
    blocked: BlockingExporter, caplog: pytest.LogCaptureFixture
) -> None:
    """flush returns False within its timeout when the exporter hangs."""
    finished, elapsed = timed(jobtrace.flush, timeout=0.3)

    records = provider_records(caplog)
    assert finished is False
    assert elapsed < 1.0
    assert blocked.exporting.is_set()
    assert len(records) == 1
    assert "flush did not finish within 0.3 s" in records[0].getMessage()


def test_shutdown_bounded(blocked: BlockingExporter) -> None:
    """shutdown of a provider jobtrace owns returns False within its timeout."""
    _provider._owns_provider = True

    finished, elapsed = timed(jobtrace.shutdown, timeout=0.3)

    assert finished is False
    assert elapsed < 1.0


def test_shutdown_app_provider_bounded(blocked: BlockingExporter) -> None:
    """shutdown of an application provider flushes it within the timeout."""
    finished, elapsed = timed(jobtrace.shutdown, timeout=0.3)

    assert finished is False
    assert elapsed < 1.0


def test_flush_default_timeout(
    blocked: BlockingExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a timeout argument, flush waits JOBTRACE_FLUSH_TIMEOUT seconds."""
    monkeypatch.setenv("JOBTRACE_FLUSH_TIMEOUT", "0.2")
    _provider._settings = None

    finished, elapsed = timed(jobtrace.flush)

    assert finished is False
    assert elapsed >= 0.15
    assert elapsed < 1.0


def test_flush_error_logged(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception raised by the provider's flush is logged, not raised."""
    provider, _ = memory_provider()
    jobtrace.configure(tracer_provider=provider)

    def fail(timeout_millis: int = 30_000) -> bool:
        raise RuntimeError("flush broke")

    monkeypatch.setattr(provider, "force_flush", fail)

    _, elapsed = timed(jobtrace.flush, timeout=1)

    records = provider_records(caplog)
    assert elapsed < 1.0
    assert len(records) == 1
    assert records[0].levelno == logging.ERROR
    assert records[0].exc_info is not None


# Exporters and span processors


def test_exporter_default_http() -> None:
    """Without variables the exporter is OTLP over HTTP."""
    exporter = _provider._exporter_from_env()

    assert isinstance(exporter, http_module.OTLPSpanExporter)
    exporter.shutdown()


@pytest.mark.parametrize("value", ["otlp", " OTLP "])
def test_exporter_otlp_named(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """OTEL_TRACES_EXPORTER=otlp, in any case, gives the HTTP exporter."""
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", value)

    exporter = _provider._exporter_from_env()

    assert isinstance(exporter, http_module.OTLPSpanExporter)
    exporter.shutdown()


def test_exporter_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """OTEL_TRACES_EXPORTER=console gives the console exporter."""
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")

    assert isinstance(_provider._exporter_from_env(), ConsoleSpanExporter)


@pytest.mark.parametrize("value", ["none", "NONE"])
def test_exporter_none(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """OTEL_TRACES_EXPORTER=none gives no exporter."""
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", value)

    assert _provider._exporter_from_env() is None


def test_exporter_unsupported_name(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An unsupported exporter name falls back to OTLP with a warning."""
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin")

    exporter = _provider._exporter_from_env()

    records = provider_records(caplog)
    assert isinstance(exporter, http_module.OTLPSpanExporter)
    assert len(records) == 1
    assert "zipkin" in records[0].getMessage()
    exporter.shutdown()


def test_exporter_grpc(monkeypatch: pytest.MonkeyPatch) -> None:
    """OTEL_EXPORTER_OTLP_PROTOCOL=grpc gives the gRPC exporter."""
    grpc_module = pytest.importorskip(
        "opentelemetry.exporter.otlp.proto.grpc.trace_exporter"
    )
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", GRPC_ENDPOINT)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")

    exporter = _provider._exporter_from_env()

    assert isinstance(exporter, grpc_module.OTLPSpanExporter)
    exporter.shutdown()


def test_exporter_traces_protocol_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    """OTEL_EXPORTER_OTLP_TRACES_PROTOCOL overrides OTEL_EXPORTER_OTLP_PROTOCOL."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf")

    exporter = _provider._exporter_from_env()

    assert isinstance(exporter, http_module.OTLPSpanExporter)
    exporter.shutdown()


def test_exporter_unsupported_protocol(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An unsupported OTLP protocol falls back to HTTP with a warning."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")

    exporter = _provider._exporter_from_env()

    records = provider_records(caplog)
    assert isinstance(exporter, http_module.OTLPSpanExporter)
    assert len(records) == 1
    assert "http/json" in records[0].getMessage()
    exporter.shutdown()


@pytest.fixture
def recorded_exporter_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Replace the HTTP exporter class and return the arguments it will get."""
    calls: list[dict[str, Any]] = []

    class RecordingExporter:
        """A stand-in for the OTLP exporter class that stores its arguments."""

        def __init__(self, **kwargs: Any) -> None:
            calls.append(kwargs)

    monkeypatch.setattr(http_module, "OTLPSpanExporter", RecordingExporter)
    return calls


def test_exporter_timeout_default(
    recorded_exporter_calls: list[dict[str, Any]],
) -> None:
    """The export timeout is the flush timeout when no OTEL timeout is set."""
    _provider._exporter_from_env()

    assert recorded_exporter_calls == [{"timeout": 5.0}]


def test_exporter_timeout_setting(
    recorded_exporter_calls: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """JOBTRACE_FLUSH_TIMEOUT also caps each export."""
    monkeypatch.setenv("JOBTRACE_FLUSH_TIMEOUT", "2.5")

    _provider._exporter_from_env()

    assert recorded_exporter_calls == [{"timeout": 2.5}]


@pytest.mark.parametrize(
    "name", ["OTEL_EXPORTER_OTLP_TIMEOUT", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"]
)
def test_exporter_timeout_from_otel(
    recorded_exporter_calls: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    name: str,
) -> None:
    """An OTEL timeout variable leaves the timeout to the exporter."""
    monkeypatch.setenv(name, "10000")

    _provider._exporter_from_env()

    assert recorded_exporter_calls == [{"timeout": None}]


def batch_processor_below(processor: SpanProcessor) -> BatchSpanProcessor:
    """Return the batch processor of a chain that span_processor built."""
    assert isinstance(processor, HandoffProcessor)
    budget = processor.processor
    assert isinstance(budget, BudgetProcessor)
    counting = budget.processor
    assert isinstance(counting, CountingProcessor)
    assert isinstance(counting.batch, BatchSpanProcessor)
    return counting.batch


def test_span_processor_given_exporter() -> None:
    """span_processor wraps the exporter in a budget and a batch processor."""
    exporter = InMemorySpanExporter()

    processor = jobtrace.span_processor(exporter)

    assert batch_processor_below(processor).span_exporter is exporter
    processor.shutdown()


def test_span_processor_budget_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The budget in the chain takes its limits from the JOBTRACE_* variables."""
    monkeypatch.setenv("JOBTRACE_MAX_SPANS_PER_TRACE", "40")
    monkeypatch.setenv("JOBTRACE_PARTIAL_FLUSH_SECONDS", "2.5")
    monkeypatch.setenv("JOBTRACE_PARTIAL_FLUSH_SPANS", "7")

    processor = jobtrace.span_processor(InMemorySpanExporter())

    assert isinstance(processor, HandoffProcessor)
    budget = processor.processor
    assert isinstance(budget, BudgetProcessor)
    assert budget.max_spans == 40
    assert budget._seconds == 2.5
    assert budget._spans == 7
    processor.shutdown()


def test_span_processor_budget_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """With JOBTRACE_MAX_SPANS_PER_TRACE=0 the chain has no budget."""
    monkeypatch.setenv("JOBTRACE_MAX_SPANS_PER_TRACE", "0")
    exporter = InMemorySpanExporter()

    processor = jobtrace.span_processor(exporter)

    assert isinstance(processor, HandoffProcessor)
    counting = processor.processor
    assert isinstance(counting, CountingProcessor)
    assert isinstance(counting.batch, BatchSpanProcessor)
    assert counting.batch.span_exporter is exporter
    processor.shutdown()


def test_span_processor_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an exporter, span_processor uses the one the variables name."""
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")

    processor = jobtrace.span_processor()

    exporter = batch_processor_below(processor).span_exporter
    assert isinstance(exporter, ConsoleSpanExporter)
    processor.shutdown()


def test_span_processor_none(monkeypatch: pytest.MonkeyPatch) -> None:
    """With OTEL_TRACES_EXPORTER=none and no exporter, span_processor raises."""
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")

    with pytest.raises(ValueError, match="OTEL_TRACES_EXPORTER=none"):
        jobtrace.span_processor()


def test_span_processor_none_with_exporter(monkeypatch: pytest.MonkeyPatch) -> None:
    """A given exporter is used even with OTEL_TRACES_EXPORTER=none."""
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    exporter = InMemorySpanExporter()

    processor = jobtrace.span_processor(exporter)

    assert batch_processor_below(processor).span_exporter is exporter
    processor.shutdown()


# Building the provider, in a child process


RESULT_OF_TRACER = """
import json
from opentelemetry import trace
import jobtrace
from jobtrace import _provider

tracer = jobtrace.tracer()
print(json.dumps({
    "tracer": type(tracer).__name__,
    "built": _provider._provider is not None,
    "global": type(trace.get_tracer_provider()).__name__,
}))
"""


@pytest.mark.parametrize(
    "env",
    [{"JOBTRACE_ENABLED": "false"}, {"OTEL_SDK_DISABLED": "true"}],
    ids=["jobtrace-disabled", "sdk-disabled"],
)
def test_build_disabled(env: dict[str, str]) -> None:
    """A disabled jobtrace gets a no-op tracer and installs no provider."""
    result, _ = run_python(RESULT_OF_TRACER, **env)

    assert result["tracer"] == "NoOpTracer"
    assert result["built"] is False
    assert result["global"] == "ProxyTracerProvider"


def test_build_installs_provider() -> None:
    """The first span builds a provider with jobtrace's resource and installs it."""
    code = """
    import json, logging
    from opentelemetry import trace
    import jobtrace
    from jobtrace import _provider

    logging.basicConfig(level=logging.WARNING)
    jobtrace.tracer()
    installed = trace.get_tracer_provider()
    jobtrace.mark_worker()
    print(json.dumps({
        "installed": installed is _provider._provider,
        "owns": _provider._owns_provider,
        "resource": dict(installed.resource.attributes),
    }))
    """
    result, stderr = run_python(
        code,
        OTEL_TRACES_EXPORTER="none",
        OTEL_SERVICE_NAME="billing",
        JOBTRACE_ENVIRONMENT="staging",
    )

    resource = result["resource"]
    assert result["installed"] is True
    assert result["owns"] is True
    assert resource["jobtrace.component"] == "web"
    assert resource["deployment.environment.name"] == "staging"
    assert resource["service.name"] == "billing"
    assert "JOBTRACE_COMPONENT=worker" in stderr


def test_configure_builds_once() -> None:
    """configure builds and installs the provider, and a second call keeps it."""
    code = """
    import json
    from opentelemetry import trace
    import jobtrace
    from jobtrace import _provider

    jobtrace.configure(environment="prod")
    first = trace.get_tracer_provider()
    built = _provider._provider
    jobtrace.configure(environment="staging")
    print(json.dumps({
        "installed": first is built,
        "same": _provider._provider is built,
        "owns": _provider._owns_provider,
        "environment": first.resource.attributes["deployment.environment.name"],
    }))
    """
    result, _ = run_python(code, OTEL_TRACES_EXPORTER="none")

    assert result["installed"] is True
    assert result["same"] is True
    assert result["owns"] is True
    assert result["environment"] == "prod"


def test_build_after_mark_worker() -> None:
    """A provider built after mark_worker carries jobtrace.component=worker."""
    code = """
    import json
    from opentelemetry import trace
    import jobtrace

    jobtrace.mark_worker()
    jobtrace.tracer()
    resource = trace.get_tracer_provider().resource
    print(json.dumps({"component": resource.attributes["jobtrace.component"]}))
    """
    result, stderr = run_python(code, OTEL_TRACES_EXPORTER="none")

    assert result["component"] == "worker"
    assert "JOBTRACE_COMPONENT" not in stderr


def test_build_uses_app_provider() -> None:
    """An SDK provider the application installed first is used, not replaced."""
    code = """
    import json
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
        InMemorySpanExporter,
    )
    import jobtrace
    from jobtrace import _provider

    memory = InMemorySpanExporter()
    app = TracerProvider()
    app.add_span_processor(SimpleSpanProcessor(memory))
    trace.set_tracer_provider(app)
    jobtrace.tracer().start_span("before shutdown").end()
    jobtrace.shutdown(timeout=1)
    jobtrace.tracer().start_span("after shutdown").end()
    print(json.dumps({
        "uses_app": _provider._provider is app,
        "owns": _provider._owns_provider,
        "spans": [span.name for span in memory.get_finished_spans()],
    }))
    """
    result, _ = run_python(code)

    assert result["uses_app"] is True
    assert result["owns"] is False
    assert result["spans"] == ["before shutdown", "after shutdown"]


def test_build_exports_at_exit() -> None:
    """A provider jobtrace built exports its queued spans when the process exits."""
    code = """
    import json
    import jobtrace

    jobtrace.tracer().start_span("queued at exit").end()
    print(json.dumps({"done": True}))
    """
    environ = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("JOBTRACE_", "OTEL_"))
    }
    environ["OTEL_TRACES_EXPORTER"] = "console"
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert '"done": true' in result.stdout
    assert '"name": "queued at exit"' in result.stdout
