"""The tracer provider: built from ``OTEL_*`` variables, flushed in bounds.

The provider is built on first use, not at import, because the same module
that calls ``instrument()`` is imported both by web processes and by
workers, and the resource's ``jobtrace.component`` is only known once a
host's worker hook has run.
"""

from __future__ import annotations

import atexit
import ctypes
import dataclasses
import logging
import multiprocessing
import os
import threading
from collections.abc import Callable, Sequence

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
    SpanExportResult,
)

from jobtrace import _autoconfig, _carrier, _delivery, _handoff, _metrics
from jobtrace._budget import BudgetProcessor
from jobtrace._settings import Settings, exporter_choice
from jobtrace._version import __version__

log = logging.getLogger(__name__)

#: Resource attribute that separates worker data from web data.
COMPONENT_ATTRIBUTE = "jobtrace.component"
ENVIRONMENT_ATTRIBUTE = "deployment.environment.name"

_lock = threading.RLock()
_settings: Settings | None = None
_component: str | None = None
_provider: TracerProvider | None = None
_owns_provider = False
_tracer: trace.Tracer | None = None
_exporter: _TrackedExporter | None = None
_stopped = False

#: Flush limit in seconds while the last export failed. Pool children that
#: exit after each job would otherwise each wait the full limit on a
#: collector that is down.
DEGRADED_FLUSH_TIMEOUT = 0.5


class _TrackedExporter(SpanExporter):
    """An exporter wrapper that records whether the last export failed.

    The flag lives in shared memory. When the provider is built before a
    worker forks its pool, every child, including children forked later,
    reads and writes the same flag. The wrapper also counts the spans of
    each export in ``health``, and logs failures once per outage in place
    of the exporter's line per batch.
    """

    def __init__(self, exporter: SpanExporter) -> None:
        self._exporter = exporter
        self._failing = multiprocessing.RawValue(ctypes.c_bool, False)
        endpoint = getattr(exporter, "_endpoint", None)
        self.health = _delivery.ExportHealth(
            _delivery.redact(endpoint) if isinstance(endpoint, str) else None
        )

    @property
    def failing(self) -> bool:
        """Whether the last export failed or a flush ran out of time."""
        return bool(self._failing.value)

    @failing.setter
    def failing(self, value: bool) -> None:
        self._failing.value = value

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        reason = None
        with _delivery.quiet_logs() as held:
            try:
                result = self._exporter.export(spans)
            except Exception as error:
                result = SpanExportResult.FAILURE
                reason = _delivery.redact(f"{type(error).__name__}: {error}")
        succeeded = result is SpanExportResult.SUCCESS
        self.failing = not succeeded
        reason = reason or _delivery.reason_of(held)
        self.health.count_export(len(spans), succeeded, reason)
        return result

    def shutdown(self) -> None:
        self._exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._exporter.force_flush(timeout_millis)


class _TracerProvider(TracerProvider):
    """The SDK's tracer provider, minus a per-fork cost in piped children.

    The SDK (seen in 1.45) runs resource detection again in every forked
    child, on a new thread, to give the child its own instance id. A child
    whose spans go to its parent through a span pipe never exports, so it
    only needs the fresh lock. Measured on a 2-vCPU VM, the detection
    costs about 270 page faults per fork, which an RQ work horse pays for
    every job.
    """

    def _handle_fork(self) -> None:
        if not _handoff.fork_has_pipe():
            super()._handle_fork()
            return
        self._tracers_lock = threading.Lock()


def settings() -> Settings:
    """Return the settings in force, reading the environment once."""
    global _settings
    if _settings is None:
        _settings = Settings.from_env()
    return _settings


def enabled() -> bool:
    """Return False when JOBTRACE_ENABLED or OTEL_SDK_DISABLED turns tracing off."""
    sdk_disabled = os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"
    return settings().enabled and not sdk_disabled


def mark_worker() -> None:
    """Record that this process runs jobs, before the provider is built.

    Plugins call this from the host's worker start hook. If the provider was
    already built as ``web``, the resource cannot change any more, so a
    warning names the variable that fixes it.
    """
    global _component
    with _lock:
        if _component == "worker":
            return
        _component = "worker"
        built_as_web = _provider is not None and _owns_provider
    if built_as_web and settings().component is None:
        log.warning(
            "The tracer provider was built before the worker started, so its "
            "spans carry jobtrace.component=web; set JOBTRACE_COMPONENT=worker"
        )


def component() -> str:
    """Return this process's component: the setting, else worker or web."""
    return settings().component or _component or "web"


def resource_attributes() -> dict[str, str]:
    """Return jobtrace's resource attributes for this process.

    Use these when building your own provider, so its spans are split by
    component and environment like jobtrace's own.
    """
    attributes = {COMPONENT_ATTRIBUTE: component()}
    environment = settings().environment
    if environment:
        attributes[ENVIRONMENT_ATTRIBUTE] = environment
    return attributes


def span_processor(exporter: SpanExporter | None = None) -> SpanProcessor:
    """Return the span processor that jobtrace adds to a provider it builds.

    Add it to your own provider when you build one yourself. Without an
    exporter, the OTLP exporter is chosen from the ``OTEL_*`` variables.
    It wraps a batch processor, and in an RQ work horse it hands spans to
    the parent worker instead of exporting them. Unless
    JOBTRACE_MAX_SPANS_PER_TRACE is 0, it also keeps each local trace
    within that many spans and exports long traces' spans early.
    """
    chosen = exporter or _exporter_from_env()
    if chosen is None:
        raise ValueError("OTEL_TRACES_EXPORTER=none, so pass an exporter")
    processor = _chain(chosen, None)
    _handoff.activate(processor)
    return processor


def _chain(
    exporter: SpanExporter,
    resource: Resource | None,
    health: _delivery.ExportHealth | None = None,
) -> _handoff.HandoffProcessor:
    # The budget sits below the handoff, so that it runs in the process
    # that exports: for a forked child's spans, the parent. The count of
    # queued spans sits right above the batch processor, so that spans the
    # budget drops on purpose never count as dropped by the export.
    # One export lasts at most its timeout, by default the flush limit, so a
    # longer wait for room in the queue means the export is stuck.
    processor: SpanProcessor = _delivery.CountingProcessor(
        BatchSpanProcessor(exporter),
        health,
        room_wait=settings().flush_timeout + 1.0,
    )
    return _wrap(processor, resource)


def _wrap(
    processor: SpanProcessor, resource: Resource | None
) -> _handoff.HandoffProcessor:
    current = settings()
    if current.max_spans_per_trace:
        processor = BudgetProcessor(
            processor,
            max_spans=current.max_spans_per_trace,
            partial_flush_seconds=current.partial_flush_seconds,
            partial_flush_spans=current.partial_flush_spans,
        )
    return _handoff.HandoffProcessor(processor, resource)


def configure(
    *,
    component: str | None = None,
    environment: str | None = None,
    tracer_provider: TracerProvider | None = None,
) -> None:
    """Set jobtrace's options and build the tracer provider now.

    The options override ``JOBTRACE_COMPONENT`` and ``JOBTRACE_ENVIRONMENT``.
    If the application set its own SDK provider first, or passes one as
    ``tracer_provider``, jobtrace uses that provider and leaves its resource
    and processors alone. Calling it again changes the settings but never
    builds a second provider.

    Plugins do not call it: without it, the provider is built when the first
    span needs it, which in a worker is after the worker's start hook has
    set the component to ``worker``. Call it yourself in processes that
    should export spans before their first job event, such as web servers.
    """
    global _settings, _provider, _owns_provider, _tracer
    with _lock:
        if tracer_provider is not None:
            _provider, _owns_provider = tracer_provider, False
            _tracer = tracer_provider.get_tracer("jobtrace", __version__)
        current = settings()
        _settings = dataclasses.replace(
            current,
            component=component or current.component,
            environment=environment or current.environment,
        )
        if _tracer is None:
            _build()
    _metrics.build()


def tracer() -> trace.Tracer:
    """Return jobtrace's tracer, building the provider on first call."""
    found = _tracer
    if found is not None:
        return found
    with _lock:
        if _tracer is None:
            _build()
        assert _tracer is not None
        return _tracer


def _build() -> None:
    global _provider, _owns_provider, _tracer, _exporter
    current = trace.get_tracer_provider()
    if not enabled():
        _tracer = trace.NoOpTracer()
        return
    if isinstance(current, TracerProvider):
        _provider, _owns_provider = current, _take_over(current)
        if not _owns_provider:
            log.info("jobtrace uses the tracer provider the application set")
    else:
        resource = Resource.create(resource_attributes())
        # The SDK's own exit hook waits up to 30 s per processor; jobtrace's
        # waits JOBTRACE_FLUSH_TIMEOUT at most.
        _provider = _TracerProvider(resource=resource, shutdown_on_exit=False)
        _owns_provider = True
        atexit.register(shutdown)
        exporter = _exporter_from_env()
        if exporter is not None:
            _exporter = _TrackedExporter(exporter)
            processor = _chain(_exporter, resource, _exporter.health)
            _provider.add_span_processor(processor)
            _handoff.activate(processor)
        trace.set_tracer_provider(_provider)
        log.info("jobtrace built a tracer provider, component=%s", component())
    _tracer = _provider.get_tracer("jobtrace", __version__)


def _take_over(provider: TracerProvider) -> bool:
    # opentelemetry-instrument with opentelemetry-distro builds the global
    # provider before jobtrace can, so jobtrace puts its chain in front of
    # that provider's exporters and stops it at exit within its own limit.
    if not _autoconfig.built_by_auto_configuration(provider):
        return False
    extra = Resource(resource_attributes())
    resource = provider.resource.merge(extra)

    def wrap(below: SpanProcessor) -> _handoff.HandoffProcessor:
        return _wrap(_autoconfig.ResourceProcessor(below, extra), resource)

    processor = _autoconfig.take_over(provider, wrap)
    if processor is None:
        return False
    _handoff.activate(processor)
    atexit.register(shutdown)
    log.info(
        "jobtrace took over the tracer provider of opentelemetry-instrument, "
        "component=%s",
        component(),
    )
    return True


def _exporter_from_env() -> SpanExporter | None:
    choice = exporter_choice("traces")
    if choice == "none":
        return None
    if choice == "console":
        return ConsoleSpanExporter()
    timeout = _exporter_timeout()
    if choice == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )

        return GrpcExporter(timeout=timeout)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpExporter,
    )

    return HttpExporter(timeout=timeout)


def _exporter_timeout() -> float | None:
    # An export that outlives the flush limit would hold the batch
    # processor's lock past it, so the limit also caps each export unless
    # the OTEL variables set a timeout of their own.
    for name in ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"):
        if os.environ.get(name):
            return None
    return settings().flush_timeout


def flush(timeout: float | None = None) -> bool:
    """Export every finished span, waiting at most ``timeout`` seconds.

    Returns True if the export finished in time without raising. The
    default limit is JOBTRACE_FLUSH_TIMEOUT, cut to
    :data:`DEGRADED_FLUSH_TIMEOUT` while the last export failed. The SDK's
    own ``force_flush`` ignores its timeout, so it runs in a helper thread
    that is abandoned when the limit passes.

    In a parent, it first queues what its forked children have handed over
    through their span pipes. In such a child, it sends the parent a flush
    request and waits for the parent to confirm the export.
    """
    provider = _provider
    if provider is None:
        return True
    limit = _default_limit() if timeout is None else timeout
    _handoff.drain(limit)
    meters = _metrics.exporting_recorder()

    def flush_all() -> bool:
        # An SDK provider returns False when a processor's flush timed out,
        # as a piped child's does when the parent never confirms.
        flushed = provider.force_flush(int(limit * 1000)) is not False
        if meters is not None:
            meters.force_flush(limit * 1000)
        return flushed

    return _run_bounded(flush_all, limit, "flush")


def flush_before_exit(timeout: float | None = None) -> bool:
    """Flush before a process exits without running atexit hooks.

    Hosts end forked children with ``os._exit``. A child whose spans all
    went to its parent has nothing to wait for, so this returns at once
    there, and otherwise flushes as :func:`flush` does. It then logs the
    spans that this process dropped, in one line, as :func:`shutdown`
    does.
    """
    if _owns_provider and _handoff.sends_to_parent():
        return True
    finished = flush(timeout)
    # No atexit hook reports this process's dropped spans, so this does,
    # counting the spans still queued as dropped.
    if _exporter is not None:
        _exporter.health.count_unsent()
        _exporter.health.report()
    return finished


def shutdown(timeout: float | None = None) -> bool:
    """Flush and stop the provider that jobtrace built, within ``timeout``.

    A provider set by the application is only flushed: stopping it is the
    application's call. Calls after the first return True at once, because
    hosts call it from their shutdown hook and it also runs at exit.
    """
    global _stopped
    provider = _provider
    if provider is None:
        return True
    if not _owns_provider:
        return flush(timeout)
    with _lock:
        if _stopped:
            return True
        _stopped = True
    _handoff.drain(_default_limit() if timeout is None else timeout)
    meters = _metrics.exporting_recorder()

    def shutdown_all() -> None:
        provider.shutdown()
        if meters is not None:
            meters.shutdown()

    finished = _run_bounded(shutdown_all, timeout, "shutdown")
    if _exporter is not None:
        _exporter.health.count_unsent()
        _exporter.health.report()
    return finished


def dropped_spans() -> int:
    """Return how many spans this process could not export so far.

    These are the spans of exports that failed, spans the batch queue
    dropped because it was full, and spans still queued when a bounded
    shutdown ran out of time. Only the provider that jobtrace builds counts
    them: with a provider of the application's, this returns 0.
    """
    exporter = _exporter
    return 0 if exporter is None else exporter.health.dropped


def _run_bounded(
    action: Callable[[], object], timeout: float | None, what: str
) -> bool:
    limit = _default_limit() if timeout is None else timeout
    done = threading.Event()
    succeeded = []

    def run() -> None:
        try:
            if action() is not False:
                succeeded.append(True)
        except Exception:
            log.exception("jobtrace %s failed", what)
        finally:
            done.set()

    threading.Thread(target=run, name=f"jobtrace-{what}", daemon=True).start()
    if not done.wait(limit):
        # A child that hands its spans over has only asked the worker to
        # export, and the worker logs the export failures itself.
        level = logging.DEBUG if _handoff.sends_to_parent() else logging.WARNING
        log.log(level, "jobtrace %s did not finish within %.1f s", what, limit)
        # The export may still be running when this process exits, so the
        # timeout itself is what tells the next flush the collector is slow.
        if _exporter is not None:
            _exporter.failing = True
    return bool(succeeded)


def _default_limit() -> float:
    limit = settings().flush_timeout
    if _exporter is not None and _exporter.failing:
        return min(limit, DEGRADED_FLUSH_TIMEOUT)
    return limit


def _reset_for_tests() -> None:
    """Forget the provider, tracer and settings; tests only."""
    global _settings, _component, _provider, _owns_provider, _tracer, _exporter
    global _stopped
    with _lock:
        _stopped = False
        _carrier.private_headers(False)
        _handoff.activate(None)
        _metrics._reset_for_tests()
        _exporter = None
        _settings = None
        _component = None
        _provider = None
        _owns_provider = False
        _tracer = None
