"""An enqueue to a broker that is down fails as it would without jobtrace.

Each producer points at a 127.0.0.1 port where nothing listens. The call
is made once uninstrumented and once instrumented: both must raise the
same exception class with the same arguments, and the instrumented call
must leave one send span with the error. Dramatiq has no hook for a failed
enqueue, so its send span ends at the thread's next enqueue, and its
RabbitMQ broker fails before it calls any hook (docs/dramatiq.md,
Limitations).
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import StatusCode

import jobtrace_celery
import jobtrace_dramatiq
import jobtrace_rq
from jobtrace._guard import qualified_name

log = logging.getLogger(__name__)


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


def _dramatiq_send(scheme: str) -> Callable[[int], Any]:
    def send(port: int) -> Any:
        import dramatiq
        from dramatiq.brokers.rabbitmq import RabbitmqBroker
        from dramatiq.brokers.redis import RedisBroker
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # Built without a middleware list, so the broker gets Dramatiq's
        # default middleware, which instrument() extends.
        broker: dramatiq.Broker
        if scheme == "redis":
            broker = RedisBroker(
                url=f"redis://127.0.0.1:{port}/0",
                socket_connect_timeout=1,
                retry=Retry(NoBackoff(), 1),
            )
        else:
            broker = RabbitmqBroker(url=f"amqp://guest:guest@127.0.0.1:{port}/%2F")
        try:
            actor = dramatiq.actor(_never_runs, broker=broker, actor_name="add")
            return actor.send(1, 2)
        finally:
            broker.close()

    return send


def _never_runs(x: int, y: int) -> None:
    raise AssertionError("no worker runs this actor")


PRODUCERS = {
    "celery-redis": (_celery_send("redis"), "send down.add", "celery"),
    "celery-rabbitmq": (_celery_send("amqp"), "send down.add", "celery"),
    "rq-redis": (_rq_enqueue, "send builtins.print", "rq"),
    "dramatiq-redis": (_dramatiq_send("redis"), "send add", "dramatiq"),
    "dramatiq-rabbitmq": (_dramatiq_send("amqp"), "send add", "dramatiq"),
}
INSTRUMENT = {
    "celery": (jobtrace_celery.instrument, jobtrace_celery.uninstrument),
    "rq": (jobtrace_rq.instrument, jobtrace_rq.uninstrument),
    "dramatiq": (jobtrace_dramatiq.instrument, jobtrace_dramatiq.uninstrument),
}
#: Producers whose failed enqueue ends its send span while it raises.
SPAN_AT_RAISE = ("celery-redis", "celery-rabbitmq", "rq-redis")


@pytest.fixture(params=list(PRODUCERS))
def producer(request: pytest.FixtureRequest) -> tuple[Callable[[int], Any], str, str]:
    """Each test runs once per host and broker."""
    return PRODUCERS[str(request.param)]


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
    started = time.monotonic()
    plain = _raised(action, closed_port)
    plain_took = time.monotonic() - started
    instrument, uninstrument = INSTRUMENT[host]
    instrument()
    started = time.monotonic()
    try:
        traced = _raised(action, closed_port)
    finally:
        uninstrument()
    log.info(
        "%s raised after %.2f s without jobtrace, %.2f s with it",
        type(traced).__name__,
        plain_took,
        time.monotonic() - started,
    )

    assert type(traced) is type(plain)
    # Dramatiq's ConnectionClosed wraps pika's exception object, which
    # compares by identity, so the arguments are compared by repr.
    assert [repr(arg) for arg in traced.args] == [repr(arg) for arg in plain.args]
    assert str(traced) == str(plain)
    assert type(traced.__cause__) is type(plain.__cause__)


@pytest.mark.parametrize("producer", SPAN_AT_RAISE, indirect=True)
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


@pytest.mark.parametrize("producer", ["dramatiq-redis"], indirect=True)
def test_dramatiq_redis_down_send_span(
    producer: tuple[Callable[[int], Any], str, str],
    closed_port: int,
    instrumented: InMemorySpanExporter,
) -> None:
    """Dramatiq's failed send span ends, as an error, at the next enqueue."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    action, span_name, _ = producer
    error = _raised(action, closed_port)
    open_after_raise = instrumented.get_finished_spans()
    _send_later()

    failed, later = instrumented.get_finished_spans()
    assert isinstance(error, RedisConnectionError)
    assert open_after_raise == ()
    assert failed.name == span_name
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.attributes["error.type"] == "jobtrace_dramatiq._sends.EnqueueError"
    assert later.name == "send later"
    assert later.status.status_code is StatusCode.UNSET


@pytest.mark.parametrize("producer", ["dramatiq-rabbitmq"], indirect=True)
def test_dramatiq_rabbitmq_down_no_send_span(
    producer: tuple[Callable[[int], Any], str, str],
    closed_port: int,
    instrumented: InMemorySpanExporter,
) -> None:
    """Dramatiq's RabbitMQ broker raises before before_enqueue: no send span."""
    from dramatiq.errors import ConnectionClosed

    action, _, _ = producer
    error = _raised(action, closed_port)
    _send_later()

    (later,) = instrumented.get_finished_spans()
    assert isinstance(error, ConnectionClosed)
    assert later.name == "send later"
    assert later.status.status_code is StatusCode.UNSET


def _send_later() -> None:
    """Enqueue one message on a stub broker from this thread."""
    import dramatiq
    from dramatiq.brokers.stub import StubBroker

    stub = StubBroker()
    try:
        dramatiq.actor(_never_runs, broker=stub, actor_name="later").send(3, 4)
    finally:
        stub.close()
