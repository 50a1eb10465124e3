"""The RQ settings, worker classes and jobs that the benchmark's processes run.

``rq worker -c benchmarks.rq_app`` loads this module as its settings module,
and ``-w`` names one of its worker classes, so importing it sets up the
instrumentation that ``BENCH_SETUP`` chooses, each as its own documentation
describes:

- ``none``: no instrumentation.
- ``jobtrace``: ``jobtrace_rq.instrument()`` at import.
- ``otel``: opentelemetry-instrumentation-rq's ``RQInstrumentor().instrument()``
  at import, with an SDK tracer provider, a batch span processor and the
  OTLP/HTTP exporter.
- ``sentry``: ``sentry_sdk.init`` with ``traces_sample_rate=1.0`` and
  RqIntegration at import, in the settings module, as Sentry's RQ guide
  shows, beside the integrations that sentry-sdk enables by default.

A forking worker imports this module before its first fork, so every work
horse inherits the instrumentation. Producers import it too.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import redis
from rq.worker import SimpleWorker, Worker

from benchmarks._cpu import tree_cpu_seconds

SETUP = os.environ.get("BENCH_SETUP", "none")
SETUPS = ("none", "jobtrace", "otel", "sentry")
if SETUP not in SETUPS:
    raise RuntimeError(
        f"Invalid BENCH_SETUP={SETUP!r}, expected one of {', '.join(SETUPS)}"
    )

#: Dotted names of the marker jobs' functions, compared with ``job.func_name``.
START_MARKER = f"{__name__}.start_marker"
END_MARKER = f"{__name__}.end_marker"

# Imported before the first fork, so every work horse inherits the pid of
# the worker's main process.
MAIN_PID = os.getpid()

_marker_store = redis.Redis.from_url(
    os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/12")
)


class WithoutCommandListener:
    """Mixin that skips the subscription to the worker's command channel.

    RQ listens for commands on a redis-py pubsub thread that polls with a
    60 s timeout, and with redis-py 8.2 stopping that thread can wait out
    the whole timeout, which would add a minute to a burst worker's exit.
    The benchmark sends no commands.
    """

    def subscribe(self) -> None:
        pass

    def unsubscribe(self) -> None:
        pass


class ForkingWorker(WithoutCommandListener, Worker):
    """RQ's forking Worker, without the command listener.

    It records the markers itself, in the worker process. It records the
    start marker once that marker's work horse has exited, and the end
    marker before it forks that marker's horse, after a flush of the
    worker's own exporter. The figures then cover the measured jobs only,
    and they include the export of any spans that the horses handed to the
    worker instead of sending them.
    """

    def execute_job(self, job: Any, queue: Any) -> None:
        if job.func_name == END_MARKER:
            flush_telemetry()
            _record(job.args[0])
        super().execute_job(job, queue)
        if job.func_name == START_MARKER:
            _record(job.args[0])


class InProcessWorker(WithoutCommandListener, SimpleWorker):
    """RQ's SimpleWorker, without the command listener."""


def noop() -> None:
    """Do nothing, so that only the instrumentation's overhead is measured."""


def start_marker(key: str) -> None:
    """Record the time and the worker's CPU time before the measured jobs.

    In a work horse it records nothing, because ForkingWorker records it.
    """
    if os.getpid() == MAIN_PID:
        _record(key)


def end_marker(key: str) -> None:
    """Export what is still buffered, then record the time and CPU time.

    In a work horse it does nothing, because ForkingWorker does both.
    """
    if os.getpid() == MAIN_PID:
        flush_telemetry()
        _record(key)


def _record(key: str) -> None:
    # The first command opens the connection, which stays out of the time.
    _marker_store.ping()
    sample = {"time": time.perf_counter(), "cpu": tree_cpu_seconds(MAIN_PID)}
    _marker_store.set(key, json.dumps(sample), ex=3600)


def flush_telemetry() -> None:
    """Export the spans or transactions that the setup still buffers."""
    if SETUP == "jobtrace":
        import jobtrace

        jobtrace.flush(timeout=30)
    elif SETUP == "otel":
        from opentelemetry import trace

        trace.get_tracer_provider().force_flush(30_000)  # type: ignore[attr-defined]
    elif SETUP == "sentry":
        import sentry_sdk

        sentry_sdk.flush(timeout=30)


def _start_jobtrace() -> None:
    import jobtrace_rq

    jobtrace_rq.instrument()


def _start_otel() -> None:
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter,
    )
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry_instrumentation_rq import RQInstrumentor

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    RQInstrumentor().instrument()


def _start_sentry() -> None:
    import sentry_sdk
    from sentry_sdk.integrations.rq import RqIntegration

    sentry_sdk.init(
        dsn=os.environ["BENCH_SENTRY_DSN"],
        traces_sample_rate=1.0,
        integrations=[RqIntegration()],
    )


_STARTERS = {"jobtrace": _start_jobtrace, "otel": _start_otel, "sentry": _start_sentry}
if SETUP in _STARTERS:
    _STARTERS[SETUP]()
