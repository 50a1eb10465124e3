"""The Celery app that the benchmark's workers and producers run.

``BENCH_SETUP`` chooses the instrumentation, each set up as its own
documentation describes:

- ``none``: no instrumentation.
- ``jobtrace``: ``jobtrace_celery.instrument()`` at import, in every process.
- ``otel``: opentelemetry-instrumentation-celery with an SDK tracer provider,
  a batch span processor and the OTLP/HTTP exporter. In a worker, all of it
  is set up in ``worker_process_init``, which its documentation requires
  for the prefork pool; the solo pool sends that signal too.
- ``sentry``: ``sentry_sdk.init`` with ``traces_sample_rate=1.0`` and
  CeleryIntegration, beside the integrations that sentry-sdk enables by
  default (RedisIntegration among them, because redis is installed). In a
  worker it runs in ``celeryd_init``, as Sentry's Celery guide shows.

Producers call :func:`instrument_producer` instead of the worker signals.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import redis
from celery import Celery, signals

from benchmarks._cpu import tree_cpu_seconds

SETUP = os.environ.get("BENCH_SETUP", "none")
SETUPS = ("none", "jobtrace", "otel", "sentry")
if SETUP not in SETUPS:
    raise RuntimeError(
        f"Invalid BENCH_SETUP={SETUP!r}, expected one of {', '.join(SETUPS)}"
    )

# Imported before the pool forks, so every pool child inherits the pid of the
# worker's main process.
MAIN_PID = os.getpid()

app = Celery("bench")
app.conf.update(
    broker_url=os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/12"),
    task_default_queue=os.environ.get("BENCH_QUEUE", "bench"),
    task_ignore_result=True,
    worker_hijack_root_logger=False,
    # Broadcasts from other workers on the same Redis would add noise.
    worker_enable_remote_control=False,
    broker_connection_retry_on_startup=True,
)

_marker_store = redis.Redis.from_url(app.conf.broker_url)


@app.task(name="bench.noop")
def noop() -> None:
    """Do nothing, so that only the instrumentation's overhead is measured."""


@app.task(name="bench.start_marker")
def start_marker(key: str) -> None:
    """Record the time and the worker's CPU time before the measured jobs."""
    _marker_store.ping()
    _record(key)


@app.task(name="bench.end_marker")
def end_marker(key: str) -> None:
    """Export what is still buffered, then record the time and CPU time."""
    flush_telemetry()
    _record(key)


def _record(key: str) -> None:
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


def instrument_producer() -> None:
    """Set up ``SETUP`` in a process that only enqueues jobs."""
    if SETUP == "otel":
        _start_otel()
    elif SETUP == "sentry":
        _start_sentry()


def _start_otel() -> None:
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter,
    )
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    CeleryInstrumentor().instrument()


def _start_sentry() -> None:
    import sentry_sdk
    from sentry_sdk.integrations.celery import CeleryIntegration

    sentry_sdk.init(
        dsn=os.environ["BENCH_SENTRY_DSN"],
        traces_sample_rate=1.0,
        integrations=[CeleryIntegration()],
    )


def _on_worker_process_init(**kwargs: Any) -> None:
    _start_otel()


def _on_celeryd_init(**kwargs: Any) -> None:
    _start_sentry()


if SETUP == "jobtrace":
    import jobtrace_celery

    jobtrace_celery.instrument()
elif SETUP == "otel":
    signals.worker_process_init.connect(_on_worker_process_init, weak=False)
elif SETUP == "sentry":
    signals.celeryd_init.connect(_on_celeryd_init, weak=False)
