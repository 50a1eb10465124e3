"""An enqueue to a broker that is down fails as it would without jobtrace.

Each producer points at a 127.0.0.1 port where nothing listens. The call
is made once uninstrumented and once instrumented: both must raise the
same exception class with the same arguments, and the instrumented call
must leave one send span with the error.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import StatusCode

import jobtrace_celery
import jobtrace_rq
from jobtrace._guard import qualified_name


@pytest.fixture
def closed_port() -> int:
    """Return a 127.0.0.1 port where nothing listens."""
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return int(probe.getsockname()[1])


def _celery_send(scheme: str) -> Callable[[int], Any]:
    def send(port: int) -> Any:
        from celery import Celery

        urls = {
            "redis": f"redis://127.0.0.1:{port}/0",
            "amqp": f"amqp://guest:guest@127.0.0.1:{port}//",
        }
        app = Celery("down", broker=urls[scheme], set_as_current=False)
        # Publishing retries as by default, only with shorter waits.
        app.conf.broker_connection_timeout = 1
        app.conf.task_publish_retry_policy = {
            "max_retries": 1,
            "interval_start": 0,
            "interval_step": 0.1,
            "interval_max": 0.1,
        }
        try:
            return app.send_task("down.add", args=(1, 2))
        finally:
            app.close()

    return send


def _rq_enqueue(port: int) -> Any:
    from redis import Redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry
    from rq import Queue

    # redis-py retries a refused connection with backoff by default.
    connection = Redis(
        host="127.0.0.1",
        port=port,
        socket_connect_timeout=1,
        retry=Retry(NoBackoff(), 1),
    )
    return Queue("down", connection=connection).enqueue(print, "never runs")


PRODUCERS = {
    "celery-redis": (_celery_send("redis"), "send down.add", "celery"),
    "celery-rabbitmq": (_celery_send("amqp"), "send down.add", "celery"),
    "rq-redis": (_rq_enqueue, "send builtins.print", "rq"),
}
INSTRUMENT = {
    "celery": (jobtrace_celery.instrument, jobtrace_celery.uninstrument),
    "rq": (jobtrace_rq.instrument, jobtrace_rq.uninstrument),
}


@pytest.fixture(params=list(PRODUCERS))
def producer(request: pytest.FixtureRequest) -> tuple[Callable[[int], Any], str, str]:
    """Each test runs once per host and broker."""
    return PRODUCERS[request.param]


def _raised(action: Callable[[int], Any], port: int) -> BaseException:
    with pytest.raises(Exception) as raised:
        action(port)
    return raised.value


@pytest.fixture
def instrumented(
    producer: tuple[Callable[[int], Any], str, str], exporter: InMemorySpanExporter
) -> Iterator[InMemorySpanExporter]:
    """Instrument the producer's host for one test."""
    instrument, uninstrument = INSTRUMENT[producer[2]]
    instrument()
    yield exporter
    uninstrument()


def test_broker_down_same_exception(
    producer: tuple[Callable[[int], Any], str, str],
    closed_port: int,
    exporter: InMemorySpanExporter,
) -> None:
    """The instrumented enqueue raises the uninstrumented one's exception."""
    action, _, host = producer
    plain = _raised(action, closed_port)
    instrument, uninstrument = INSTRUMENT[host]
    instrument()
    try:
        traced = _raised(action, closed_port)
    finally:
        uninstrument()

    assert type(traced) is type(plain)
    assert traced.args == plain.args
    assert str(traced) == str(plain)
    assert type(traced.__cause__) is type(plain.__cause__)


def test_broker_down_send_span_error(
    producer: tuple[Callable[[int], Any], str, str],
    closed_port: int,
    instrumented: InMemorySpanExporter,
) -> None:
    """The failed enqueue leaves one send span with the error on it."""
    action, span_name, _ = producer

    error = _raised(action, closed_port)

    (span,) = instrumented.get_finished_spans()
    assert span.name == span_name
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == qualified_name(error)
    assert [event.name for event in span.events] == ["exception"]
