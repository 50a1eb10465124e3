"""Actors of the integration tests, declared on the worker's and the producer's broker.

The worker runs them. The test process declares the same actors on its own
broker only to send messages to them.
"""

from __future__ import annotations

import os
import time
import types
from typing import Any

import dramatiq
from dramatiq.middleware import CurrentMessage
from opentelemetry import baggage, trace
from redis import Redis

import jobtrace

#: Actor options that keep retries fast: a backoff of 10 to 50 ms.
QUICK_RETRIES = {"min_backoff": 10, "max_backoff": 50}


class ExpectedError(Exception):
    """An error that an actor declares in ``throws``."""


def started_key(queue: str) -> str:
    """Return the Redis hash that maps started message ids to worker pids."""
    return f"jobtrace-it:{queue}:started"


def done_key(queue: str) -> str:
    """Return the Redis key that counts the finished runs of ``tally`` and ``wait``."""
    return f"jobtrace-it:{queue}:done"


def _mark_started(queue: str) -> None:
    message = CurrentMessage.get_current_message()
    url = os.environ["TEST_REDIS_URL"]
    if message is not None:
        with Redis.from_url(url) as client:
            client.hset(started_key(queue), message.message_id, os.getpid())


def _busy_wait(seconds: float) -> None:
    # Dramatiq interrupts a thread only between bytecodes, so a loop of
    # short sleeps lets time limits and shutdown notifications in.
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.01)


def declare(broker: dramatiq.Broker, queue: str) -> types.SimpleNamespace:
    """Declare the test actors on ``broker``, all on ``queue``."""

    def actor(**options: Any) -> Any:
        return dramatiq.actor(broker=broker, queue_name=queue, **options)

    @actor(max_retries=0)
    def add(x: int, y: int) -> None:
        time.sleep(0.005)

    @actor(max_retries=0)
    def fail() -> None:
        raise ValueError("boom")

    @actor(max_retries=2, **QUICK_RETRIES)
    def always_fail() -> None:
        raise KeyError("again")

    @actor(max_retries=5, **QUICK_RETRIES)
    def fail_twice() -> None:
        message = CurrentMessage.get_current_message()
        if message is not None and message.options.get("retries", 0) < 2:
            raise ConnectionError("not yet")

    @actor(max_retries=1)
    def request_retry() -> None:
        """Raise dramatiq.Retry on the first attempt, and return on the second."""
        message = CurrentMessage.get_current_message()
        if message is not None and not message.options.get("retries"):
            raise dramatiq.Retry("later", delay=10)

    @actor(throws=(ExpectedError,))
    def expected() -> None:
        raise ExpectedError("declared")

    @actor(time_limit=300, max_retries=0)
    def slow() -> None:
        _busy_wait(10)

    @actor(max_retries=0)
    def record() -> None:
        """Store this run's baggage on its span, and open a child span."""
        found = ",".join(f"{k}={v}" for k, v in sorted(baggage.get_all().items()))
        trace.get_current_span().set_attribute("test.baggage", found)
        with jobtrace.tracer().start_as_current_span("inside"):
            pass

    @actor(max_retries=0)
    def wait(seconds: float) -> None:
        _mark_started(queue)
        _busy_wait(seconds)
        with Redis.from_url(os.environ["TEST_REDIS_URL"]) as client:
            client.incr(done_key(queue))

    @actor(max_retries=0)
    def nested() -> None:
        """Open two nested spans around short sleeps, tagged with the message id.

        The sleeps let the worker's other threads run while the spans are open.
        """
        message = CurrentMessage.get_current_message()
        message_id = message.message_id if message is not None else ""
        tracer = jobtrace.tracer()
        with tracer.start_as_current_span("outer") as outer:
            outer.set_attribute("test.job_id", message_id)
            time.sleep(0.002)
            with tracer.start_as_current_span("inner") as inner:
                inner.set_attribute("test.job_id", message_id)
                time.sleep(0.002)

    @actor(max_retries=0)
    def show_options() -> None:
        """Store the names of this message's options on its span."""
        message = CurrentMessage.get_current_message()
        names = sorted(message.options) if message is not None else []
        trace.get_current_span().set_attribute("test.options", names)

    @actor(max_retries=0)
    def tally() -> None:
        """Sleep 5 ms, then count the run in Redis, for tests without results."""
        time.sleep(0.005)
        with Redis.from_url(os.environ["TEST_REDIS_URL"]) as client:
            client.incr(done_key(queue))

    @actor(max_retries=0)
    def make_spans(count: int, then_sleep: float) -> None:
        from tests.recipes import spans

        spans.make_spans(count, then_sleep)

    return types.SimpleNamespace(**locals())
