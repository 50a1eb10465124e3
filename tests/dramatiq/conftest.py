"""Fixtures for Dramatiq tests: a stub broker, actors and in-process workers."""

from __future__ import annotations

import threading
import time
import types
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dramatiq
import pika
import pytest
from dramatiq import Worker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import CurrentMessage, GroupCallbacks, MiddlewareError
from dramatiq.rate_limits.backends import RedisBackend
from opentelemetry import baggage, trace
from redis import Redis

import jobtrace
import jobtrace_dramatiq
from jobtrace._receiver import OtlpReceiver

from . import actors as test_actors
from .workers import Target, build_broker, default_middleware, traced_producer


class ExpectedError(Exception):
    """An error that an actor declares in ``throws``."""


class RejectEnqueue(dramatiq.Middleware):
    """A middleware that makes every enqueue raise after Tracing's hook."""

    def before_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
        raise MiddlewareError("broker is down")


class Seen:
    """What actors saw while they ran, shared with the test thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.runs: list[dict[str, Any]] = []

    def record(self, label: str, **fields: Any) -> None:
        """Store the label, the current span and baggage of the running actor."""
        span_context = trace.get_current_span().get_span_context()
        entry = {
            "label": label,
            "thread": threading.get_ident(),
            "trace_id": span_context.trace_id,
            "span_id": span_context.span_id,
            "baggage": dict(baggage.get_all()),
            **fields,
        }
        with self._lock:
            self.runs.append(entry)

    def labelled(self, label: str) -> list[dict[str, Any]]:
        """Return the entries recorded under ``label``, in run order."""
        with self._lock:
            return [entry for entry in self.runs if entry["label"] == label]


@pytest.fixture
def broker() -> Iterator[StubBroker]:
    """A stub broker with the default middleware, set as the global broker."""
    previous = dramatiq.broker.global_broker
    created = StubBroker(middleware=default_middleware())
    created.add_middleware(CurrentMessage())
    created.emit_after("process_boot")
    dramatiq.set_broker(created)
    yield created
    created.flush_all()
    created.close()
    dramatiq.set_broker(previous)  # type: ignore[arg-type]


@pytest.fixture
def instrumented(exporter: Any, broker: StubBroker) -> Iterator[Any]:
    """Instrument the stub broker for one test and remove it after."""
    jobtrace_dramatiq.instrument(broker)
    yield exporter
    jobtrace_dramatiq.uninstrument()


@pytest.fixture
def seen() -> Seen:
    """The record that the test actors write to."""
    return Seen()


@pytest.fixture
def actors(broker: StubBroker, seen: Seen) -> types.SimpleNamespace:
    """Declare the actors that the tests send messages to."""
    quick = {"min_backoff": 10, "max_backoff": 20}

    @dramatiq.actor(broker=broker, max_retries=0)
    def add(x: int, y: int) -> None:
        seen.record("add", result=x + y)

    @dramatiq.actor(broker=broker, max_retries=0)
    def fail() -> None:
        raise ValueError("boom")

    @dramatiq.actor(broker=broker, max_retries=2, **quick)
    def always_fail() -> None:
        raise KeyError("again")

    @dramatiq.actor(broker=broker, max_retries=5, **quick)
    def fail_twice() -> None:
        message = CurrentMessage.get_current_message()
        retries = message.options.get("retries", 0) if message else 0
        seen.record("fail_twice", retries=retries)
        if retries < 2:
            raise ConnectionError("not yet")

    @dramatiq.actor(broker=broker, max_retries=1)
    def ask_retry() -> None:
        message = CurrentMessage.get_current_message()
        if message is not None and not message.options.get("retries"):
            raise dramatiq.Retry("later", delay=10)

    @dramatiq.actor(broker=broker, throws=(ExpectedError,))
    def expected() -> None:
        raise ExpectedError("declared")

    @dramatiq.actor(broker=broker, time_limit=100, max_retries=0)
    def slow() -> None:
        # Dramatiq interrupts a thread between bytecodes, so the loop lets
        # the time limit's exception in.
        for _ in range(200):
            time.sleep(0.01)

    @dramatiq.actor(broker=broker, max_retries=0)
    def record(label: str) -> None:
        seen.record(label)
        with jobtrace.tracer().start_as_current_span("inside"):
            pass

    @dramatiq.actor(broker=broker, max_retries=0)
    def enqueue_add() -> None:
        add.send(1, 2)

    @dramatiq.actor(broker=broker, max_retries=0)
    def wait(seconds: float) -> None:
        seen.record("wait")
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(0.01)

    return types.SimpleNamespace(**locals())


@contextmanager
def running_worker(broker: StubBroker, threads: int = 2) -> Iterator[Worker]:
    """Run an in-process worker on ``broker`` and stop it on exit."""
    worker = Worker(broker, worker_timeout=50, worker_threads=threads)
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()


def run_all(broker: StubBroker, threads: int = 2) -> None:
    """Run every message on the broker's queues, retries included, then stop."""
    with running_worker(broker, threads) as worker:
        drain(broker, worker)


def drain(broker: StubBroker, worker: Worker) -> None:
    """Wait until the broker's queues and the worker's delay queues are empty."""
    for _ in range(3):
        for queue in broker.get_declared_queues():
            broker.join(queue, fail_fast=False)
        worker.join()


@pytest.fixture(params=["redis", "rabbitmq"])
def target(request: pytest.FixtureRequest, redis_url: str) -> Iterator[Target]:
    """A fresh queue on Redis or RabbitMQ, deleted with its messages after."""
    suffix = uuid.uuid4().hex[:8]
    if request.param == "redis":
        broker_url = redis_url
    else:
        # pika reads the vhost from the path, so "/" must be escaped.
        broker_url = request.getfixturevalue("rabbitmq_url").rstrip("/") + "/%2F"
    created = Target(
        broker_url=broker_url,
        namespace=f"jobtrace-it-{suffix}",
        queue=f"jobtrace-dq-{suffix}",
        redis_url=redis_url,
    )
    yield created
    _delete(created)


def _delete(target: Target) -> None:
    with Redis.from_url(target.redis_url) as client:
        for pattern in (f"{target.namespace}:*", f"jobtrace-it:{target.queue}:*"):
            keys = list(client.scan_iter(match=pattern))
            if keys:
                client.delete(*keys)
    if target.broker_url.startswith("amqp://"):
        parameters = pika.URLParameters(target.broker_url)
        with pika.BlockingConnection(parameters) as connection:
            channel = connection.channel()
            for name in (target.queue, f"{target.queue}.DQ", f"{target.queue}.XQ"):
                channel.queue_delete(name)


class GroupBarriers(dramatiq.Middleware):
    """A middleware that records the Redis keys of group completion barriers.

    Dramatiq names a barrier after a random id and keeps it for a day, so
    the tests delete the barriers they created.
    """

    def __init__(self) -> None:
        self.keys: set[str] = set()

    def before_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
        barrier = message.options.get("group_completion_uuid")
        if barrier:
            self.keys.update({barrier, f"{barrier}@events"})


@pytest.fixture
def producer(receiver: OtlpReceiver, target: Target) -> Iterator[types.SimpleNamespace]:
    """A traced broker in this process that sends to the target's queue."""
    barriers = GroupBarriers()
    with traced_producer(receiver):
        broker = build_broker(target.broker_url, target.namespace)
        broker.add_middleware(GroupCallbacks(RedisBackend(url=target.redis_url)))
        broker.add_middleware(barriers)
        jobtrace_dramatiq.instrument(broker)
        try:
            yield types.SimpleNamespace(
                broker=broker, actors=test_actors.declare(broker, target.queue)
            )
        finally:
            jobtrace_dramatiq.uninstrument()
            broker.close()
            if barriers.keys:
                with Redis.from_url(target.redis_url) as client:
                    client.delete(*barriers.keys)
