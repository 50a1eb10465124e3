"""Celery tasks run by an in-process worker on Redis, spans in memory."""

from __future__ import annotations

import itertools
import time
from typing import Any

import pytest
from opentelemetry.trace import SpanKind, StatusCode

import jobtrace

TIMEOUT = 10


def wait_for_spans(exporter: Any, name: str, count: int = 1) -> list[Any]:
    """Return the finished spans called ``name`` once ``count`` have ended."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        found = [s for s in exporter.get_finished_spans() if s.name == name]
        if len(found) >= count:
            return found
        time.sleep(0.02)
    names = sorted({s.name for s in exporter.get_finished_spans()})
    raise AssertionError(f"{count} x {name!r} not finished; got {names}")


@pytest.fixture
def worker(instrumented: Any, tasks: Any, celery_worker: Any) -> Any:
    """A solo worker thread, started after the tasks are registered."""
    return celery_worker


def test_success_send_and_process(worker: Any, tasks: Any, exporter: Any) -> None:
    """A task enqueued outside any span gets a root send span and a consumer."""
    result = tasks.add.delay(2, 3)

    assert result.get(timeout=TIMEOUT) == 5
    (send,) = wait_for_spans(exporter, "send t.add")
    (process,) = wait_for_spans(exporter, "process t.add")
    assert send.kind is SpanKind.PRODUCER
    assert send.parent is None
    assert process.kind is SpanKind.CONSUMER
    assert send.attributes["messaging.system"] == "celery"
    assert send.attributes["messaging.operation.type"] == "send"
    assert send.attributes["messaging.message.id"] == result.id
    assert send.attributes["messaging.destination.name"].startswith("jobtrace-")
    assert process.attributes["messaging.operation.type"] == "process"
    assert process.attributes["jobtrace.job.name"] == "t.add"
    assert process.attributes["jobtrace.job.attempt"] == 1
    assert process.attributes["jobtrace.job.outcome"] == "success"
    assert process.attributes["jobtrace.job.queue_time"] >= 0
    assert process.attributes["messaging.message.id"] == result.id


def test_link_mode_starts_new_trace(worker: Any, tasks: Any, exporter: Any) -> None:
    """In the default link mode the process span is a root linked to send."""
    tasks.add.delay(1, 1).get(timeout=TIMEOUT)

    (send,) = wait_for_spans(exporter, "send t.add")
    (process,) = wait_for_spans(exporter, "process t.add")
    assert process.parent is None
    assert process.context.trace_id != send.context.trace_id
    assert [link.context.span_id for link in process.links] == [send.context.span_id]
    assert process.links[0].attributes["jobtrace.link.type"] == "send"


def test_child_mode_per_job(worker: Any, tasks: Any, exporter: Any) -> None:
    """A job enqueued under propagation_mode('child') is a child of its send."""
    with jobtrace.propagation_mode("child"):
        result = tasks.add.delay(1, 1)
    result.get(timeout=TIMEOUT)

    (send,) = wait_for_spans(exporter, "send t.add")
    (process,) = wait_for_spans(exporter, "process t.add")
    assert process.parent is not None
    assert process.parent.span_id == send.context.span_id
    assert process.context.trace_id == send.context.trace_id


def test_send_parent_is_current_span(worker: Any, tasks: Any, exporter: Any) -> None:
    """A send span is a child of the span that was current at enqueue time."""
    tracer = jobtrace.tracer()
    with tracer.start_as_current_span("web request") as request_span:
        tasks.add.delay(1, 1).get(timeout=TIMEOUT)

    (send,) = wait_for_spans(exporter, "send t.add")
    assert send.parent is not None
    assert send.parent.span_id == request_span.get_span_context().span_id


def test_failure_sets_error(worker: Any, tasks: Any, exporter: Any) -> None:
    """A raising task gets outcome failure, status ERROR and an exception event."""
    result = tasks.fail.delay()

    with pytest.raises(ValueError, match="boom"):
        result.get(timeout=TIMEOUT)
    (process,) = wait_for_spans(exporter, "process t.fail")
    assert process.attributes["jobtrace.job.outcome"] == "failure"
    assert process.status.status_code is StatusCode.ERROR
    assert process.attributes["error.type"] == "ValueError"
    events = [e for e in process.events if e.name == "exception"]
    assert len(events) == 1
    assert events[0].attributes["exception.message"] == "boom"
    assert "ValueError" in events[0].attributes["exception.stacktrace"]


def test_declared_exception_not_error(worker: Any, tasks: Any, exporter: Any) -> None:
    """An exception listed in the task's throws is recorded but not an error."""
    result = tasks.expected.delay()

    with pytest.raises(Exception, match="declared"):
        result.get(timeout=TIMEOUT)
    (process,) = wait_for_spans(exporter, "process t.expected")
    assert process.attributes["jobtrace.job.outcome"] == "failure"
    assert process.status.status_code is StatusCode.UNSET
    assert "error.type" not in process.attributes
    assert [e.name for e in process.events] == ["exception"]


def test_retry_attempts_are_linked(worker: Any, tasks: Any, exporter: Any) -> None:
    """Each retry is its own process span, numbered and linked to the last."""
    assert tasks.flaky.delay().get(timeout=TIMEOUT) == "done"

    runs = wait_for_spans(exporter, "process t.flaky", count=3)
    runs.sort(key=lambda s: s.attributes["jobtrace.job.attempt"])
    assert [r.attributes["jobtrace.job.attempt"] for r in runs] == [1, 2, 3]
    outcomes = [r.attributes["jobtrace.job.outcome"] for r in runs]
    assert outcomes == ["retry", "retry", "success"]
    assert runs[0].status.status_code is StatusCode.UNSET
    for before, after in itertools.pairwise(runs):
        previous = [
            link.context.span_id
            for link in after.links
            if link.attributes["jobtrace.link.type"] == "previous_attempt"
        ]
        assert previous == [before.context.span_id]


def test_task_enqueues_task(worker: Any, tasks: Any, exporter: Any) -> None:
    """A send span made inside a task is a child of that task's process span."""
    tasks.parent.delay().get(timeout=TIMEOUT)

    (outer,) = wait_for_spans(exporter, "process t.parent")
    (inner_send,) = wait_for_spans(exporter, "send t.add")
    wait_for_spans(exporter, "process t.add")
    assert inner_send.parent is not None
    assert inner_send.parent.span_id == outer.context.span_id


def test_reject_outcome(worker: Any, tasks: Any, exporter: Any) -> None:
    """A task that raises Reject gets outcome rejected."""
    tasks.reject.delay()

    (process,) = wait_for_spans(exporter, "process t.reject")
    assert process.attributes["jobtrace.job.outcome"] == "rejected"
    assert process.status.status_code is StatusCode.ERROR


def test_send_task_by_name(worker: Any, celery_app: Any, exporter: Any) -> None:
    """send_task by name is traced like apply_async."""
    result = celery_app.send_task("t.add", args=(4, 4))

    assert result.get(timeout=TIMEOUT) == 8
    (send,) = wait_for_spans(exporter, "send t.add")
    assert send.attributes["messaging.message.id"] == result.id
    wait_for_spans(exporter, "process t.add")


def test_chain_is_traced(worker: Any, tasks: Any, exporter: Any) -> None:
    """Each step of a chain, enqueued by the worker, gets send and process spans."""
    from celery import chain

    result = chain(tasks.add.s(1, 2), tasks.add.s(3), tasks.add.s(4)).delay()

    assert result.get(timeout=TIMEOUT) == 10
    processes = wait_for_spans(exporter, "process t.add", count=3)
    sends = wait_for_spans(exporter, "send t.add", count=3)
    process_ids = {p.context.span_id for p in processes}
    chained = [s for s in sends if s.parent and s.parent.span_id in process_ids]
    assert len(chained) == 2
