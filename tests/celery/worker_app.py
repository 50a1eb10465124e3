"""Celery app run by ``celery worker`` subprocesses in the integration tests.

The broker and queue come from the environment, so one module serves every
broker and pool combination.
"""

from __future__ import annotations

import os
import time
from typing import Any

from celery import Celery
from opentelemetry import trace

import jobtrace
import jobtrace_celery
from jobtrace import signals

# The auto-instrumentation test leaves this to opentelemetry-instrument.
if os.environ.get("TEST_INSTRUMENT", "1") == "1":
    jobtrace_celery.instrument()


# The double instrumentation test adds other tracers after jobtrace.
_others = os.environ.get("TEST_OTHER_TRACERS", "").split(",")
if "opentelemetry" in _others:
    from opentelemetry.instrumentation.celery import CeleryInstrumentor

    CeleryInstrumentor().instrument()
if "sentry" in _others:
    import sentry_sdk
    from sentry_sdk.integrations.celery import CeleryIntegration

    sentry_sdk.init(
        dsn=os.environ["TEST_SENTRY_DSN"],
        traces_sample_rate=1.0,
        integrations=[CeleryIntegration()],
    )
if "ddtrace" in _others:
    import ddtrace

    ddtrace.patch(celery=True)


@signals.job_started.connect
def _record_pid(job: object, span: Any, **kwargs: object) -> None:
    """Tag each run with the pid of the process that ran it."""
    span.set_attribute("test.pid", os.getpid())


app = Celery("worker_app")
app.conf.update(
    broker_url=os.environ["TEST_BROKER_URL"],
    result_backend=os.environ["TEST_RESULT_BACKEND"],
    task_default_queue=os.environ["TEST_QUEUE"],
    task_protocol=int(os.environ.get("TEST_TASK_PROTOCOL", "2")),
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="it.add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="it.fail")
def fail() -> None:
    raise ValueError("boom")


@app.task(name="it.flaky", bind=True, max_retries=1, default_retry_delay=0)
def flaky(self: object) -> str:
    if self.request.retries < 1:  # type: ignore[attr-defined]
        raise self.retry(exc=KeyError("again"), countdown=0)  # type: ignore[attr-defined]
    return "done"


@app.task(name="it.fan_out")
def fan_out(count: int) -> int:
    for number in range(count):
        add.delay(number, number)
    return count


@app.task(name="it.hang", time_limit=1)
def hang() -> None:
    with jobtrace.tracer().start_as_current_span("hanging"):
        time.sleep(30)


# track_started stores the running child's pid in the result, so a test
# can kill the process that runs the job.
@app.task(name="it.span_then_sleep", track_started=True)
def span_then_sleep() -> None:
    with jobtrace.tracer().start_as_current_span("inside"):
        pass
    with jobtrace.tracer().start_as_current_span("sleeping"):
        time.sleep(30)


@app.task(name="it.soft", soft_time_limit=0.5, time_limit=5)
def soft() -> None:
    time.sleep(5)


@app.task(name="it.sleep", track_started=True)
def sleep(seconds: float) -> str:
    time.sleep(seconds)
    return "slept"


@app.task(name="it.headers", bind=True)
def headers(self: Any) -> dict[str, Any]:
    """Return the trace headers that reached the task, wherever they are."""
    layers = [vars(self.request)]
    nested = layers[0].get("headers")
    if isinstance(nested, dict):
        layers.append(nested)
    names = (
        "traceparent",
        "tracestate",
        "jobtrace_traceparent",
        "sentry-trace",
        "baggage",
        "x-datadog-trace-id",
        "x-datadog-parent-id",
    )
    found: dict[str, Any] = {}
    for name in names:
        found[name] = next(
            (layer[name] for layer in layers if layer.get(name) is not None), None
        )
    return found


@app.task(name="it.nested", bind=True, ignore_result=True)
def nested(self: Any) -> None:
    """Open two nested spans around short sleeps, tagged with the task id.

    The sleeps let the pool switch to other jobs while the spans are open.
    """
    tracer = jobtrace.tracer()
    with tracer.start_as_current_span("outer") as outer:
        outer.set_attribute("test.job_id", self.request.id)
        time.sleep(0.002)
        with tracer.start_as_current_span("inner") as inner:
            inner.set_attribute("test.job_id", self.request.id)
            time.sleep(0.002)


@app.task(name="it.many_spans")
def many_spans(count: int) -> int:
    tracer = jobtrace.tracer()
    for _ in range(count):
        with tracer.start_as_current_span("step"):
            pass
    return count


@app.task(name="it.total")
def total(values: list[int]) -> int:
    return sum(values)


@app.task(name="it.make_spans")
def make_spans(count: int, then_sleep: float) -> int:
    """End ``count`` spans through the OpenTelemetry API, then sleep."""
    tracer = trace.get_tracer(__name__)
    for number in range(count):
        tracer.start_span("row", attributes={"row": number}).end()
    time.sleep(then_sleep)
    return count
