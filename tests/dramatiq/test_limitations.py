"""Known limitations from docs/dramatiq.md, each pinned by a strict xfail.

When one of these starts passing, the limitation is gone: update the
Limitations section of docs/dramatiq.md and turn the test into a normal one.
"""

from __future__ import annotations

import os
import signal
import time
import types
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import MiddlewareError

import jobtrace_dramatiq
from jobtrace._receiver import OtlpReceiver

from .conftest import RejectEnqueue, run_all
from .workers import (
    Target,
    default_middleware,
    dramatiq_worker,
    process_spans_for,
    stop,
    wait_for_started,
)

redis_only = pytest.mark.parametrize("target", ["redis"], indirect=True)


@pytest.mark.integration
@redis_only
@pytest.mark.xfail(
    strict=True,
    reason="docs/dramatiq.md, Limitations: a killed worker process loses "
    "the runs it had in flight",
)
def test_killed_process_reports_run(
    receiver: OtlpReceiver, target: Target, producer: types.SimpleNamespace
) -> None:
    """A message whose worker process was killed still gets a process span."""
    message = producer.actors.wait.send(30)
    with dramatiq_worker(receiver, target) as worker:
        started = wait_for_started(target, 1)
        os.kill(started[message.message_id], signal.SIGKILL)
        worker.wait(timeout=30)

    process_spans_for(receiver, {message.message_id}, timeout=5)


@pytest.mark.integration
@redis_only
@pytest.mark.xfail(
    strict=True,
    reason="docs/dramatiq.md, Limitations: a second SIGTERM ends the worker "
    "processes without a flush",
)
def test_second_sigterm_reports_run(
    receiver: OtlpReceiver, target: Target, producer: types.SimpleNamespace
) -> None:
    """A message still running at a second SIGTERM gets a process span."""
    message = producer.actors.wait.send(30)
    with dramatiq_worker(receiver, target) as worker:
        wait_for_started(target, 1)
        worker.send_signal(signal.SIGTERM)
        # Two signals that arrive before the main process handles the first
        # count as one, and then the worker stops gracefully.
        time.sleep(2)
        stop(worker)

    process_spans_for(receiver, {message.message_id}, timeout=5)


@pytest.mark.xfail(
    strict=True,
    reason="docs/dramatiq.md, Limitations: the send span of a failed enqueue "
    "ends at the thread's next enqueue",
)
def test_failed_send_ends_with_enqueue(
    instrumented: Any, actors: Any, broker: StubBroker
) -> None:
    """The send span of a failed enqueue ends when the enqueue raised."""
    broker.add_middleware(RejectEnqueue())
    with pytest.raises(MiddlewareError):
        actors.add.send(1, 2)
    raised_at = time.time_ns()
    broker.middleware.pop()
    time.sleep(0.2)
    actors.add.send(3, 4)

    failed = instrumented.get_finished_spans()[0]
    assert failed.end_time <= raised_at


@pytest.mark.xfail(
    strict=True,
    reason="docs/dramatiq.md, Limitations: Tracing must come first in the "
    "broker's middleware",
)
def test_tracing_listed_last_sees_retries(exporter: Any) -> None:
    """Retries show as retries even when Tracing is listed after Retries."""
    broker = StubBroker(middleware=[*default_middleware(), jobtrace_dramatiq.Tracing()])
    broker.emit_after("process_boot")

    @dramatiq.actor(broker=broker, max_retries=1, min_backoff=10, max_backoff=20)
    def flaky() -> None:
        raise KeyError("again")

    flaky.send()
    run_all(broker)
    broker.close()

    outcomes = [
        span.attributes["jobtrace.job.outcome"]
        for span in exporter.get_finished_spans()
        if span.name == "process flaky"
    ]
    assert outcomes == ["retry", "failure"]
