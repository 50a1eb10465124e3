"""Real ``celery worker`` processes on Redis and RabbitMQ, checked over OTLP.

Every test starts its own OTLP/HTTP receiver on 127.0.0.1 and a worker
subprocess that exports to it, and asserts on what the receiver decoded.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest
from celery import chord, group, signature
from celery.result import AsyncResult

from jobtrace._receiver import OtlpReceiver, ReceivedSpan
from tests import tracing

from .workers import SERVICE_NAME, celery_worker, producer

pytestmark = pytest.mark.integration

WAIT = 60

POOLS = {
    "prefork": ("--pool", "prefork", "--concurrency", "2"),
    "prefork-recycle": (
        "--pool", "prefork", "--concurrency", "2", "--max-tasks-per-child", "1",
    ),
    "solo": ("--pool", "solo"),
    "threads": ("--pool", "threads", "--concurrency", "2"),
}  # fmt: skip


@pytest.fixture(params=["redis", "rabbitmq"])
def broker_url(request: pytest.FixtureRequest) -> str:
    """Each test runs once per broker."""
    return request.getfixturevalue(f"{request.param}_url")  # type: ignore[no-any-return]


def by_name(spans: list[ReceivedSpan], name: str) -> list[ReceivedSpan]:
    return [s for s in spans if s.name == name]


def process_spans_for(
    receiver: OtlpReceiver, ids: set[str], timeout: float = WAIT
) -> dict[str, list[ReceivedSpan]]:
    """Wait until a process span arrived for every job id; group them by id."""

    def arrived(spans: list[ReceivedSpan]) -> bool:
        seen = {
            s.attributes.get("messaging.message.id")
            for s in spans
            if s.name.startswith("process ")
        }
        return ids <= seen

    spans = receiver.wait_for(arrived, timeout=timeout)
    grouped: dict[str, list[ReceivedSpan]] = {}
    for span in spans:
        job_id = span.attributes.get("messaging.message.id")
        if span.name.startswith("process ") and job_id in ids:
            grouped.setdefault(str(job_id), []).append(span)
    return grouped


@pytest.mark.parametrize("pool", list(POOLS))
def test_pool_delivers_every_span(
    pool: str, broker_url: str, receiver: OtlpReceiver, instrumented_producer: None
) -> None:
    """Every job's spans arrive over OTLP, with relations, resource and status."""
    with celery_worker(receiver, broker_url, *POOLS[pool]) as (_, queue):
        app = producer(broker_url, queue)
        adds = [app.send_task("it.add", args=(i, i)) for i in range(10)]
        failing = app.send_task("it.fail")
        flaky = app.send_task("it.flaky")
        assert [r.get(timeout=WAIT) for r in adds] == [2 * i for i in range(10)]
        with pytest.raises(Exception, match="boom"):
            failing.get(timeout=WAIT)
        assert flaky.get(timeout=WAIT) == "done"

    ids = {r.id for r in adds} | {failing.id, flaky.id}
    runs = process_spans_for(receiver, ids)
    spans = receiver.spans()
    sends = {
        s.attributes["messaging.message.id"]: s for s in by_name(spans, "send it.add")
    }

    for result in adds:
        (run,) = runs[result.id]
        assert run.kind == "CONSUMER"
        assert run.attributes["jobtrace.job.outcome"] == "success"
        assert run.resource["jobtrace.component"] == "worker"
        assert run.resource["service.name"] == SERVICE_NAME
        assert run.parent_span_id is None
        send = sends[result.id]
        assert send.kind == "PRODUCER"
        assert send.resource["jobtrace.component"] == "web"
        assert [(t, s) for t, s, _ in run.links] == [(send.trace_id, send.span_id)]

    (failed,) = runs[failing.id]
    assert failed.status_code == "ERROR"
    assert failed.attributes["error.type"] == "ValueError"
    assert failed.attributes["jobtrace.job.outcome"] == "failure"
    assert [name for name, _ in failed.events] == ["exception"]

    attempts = sorted(
        runs[flaky.id], key=lambda s: s.attributes["jobtrace.job.attempt"]
    )
    outcomes = [s.attributes["jobtrace.job.outcome"] for s in attempts]
    assert outcomes == ["retry", "success"]


def test_recycled_children_deliver_all(redis_url: str, receiver: OtlpReceiver) -> None:
    """A prefork pool that replaces its child after every task loses no span."""
    count = 200
    options = ("--pool", "prefork", "--concurrency", "2", "--max-tasks-per-child", "1")
    with celery_worker(receiver, redis_url, *options) as (_, queue):
        app = producer(redis_url, queue)
        results = [app.send_task("it.add", args=(i, 1)) for i in range(count)]
        assert [r.get(timeout=300) for r in results] == [i + 1 for i in range(count)]

    runs = process_spans_for(receiver, {r.id for r in results})
    assert len(runs) == count
    assert all(len(spans) == 1 for spans in runs.values())
    pids = {s.attributes["test.pid"] for spans in runs.values() for s in spans}
    assert len(pids) == count


def test_protocol_1_messages(
    broker_url: str, receiver: OtlpReceiver, instrumented_producer: None
) -> None:
    """Context survives Celery's task protocol 1 as well as protocol 2."""
    with celery_worker(receiver, broker_url, "--pool", "solo") as (_, queue):
        app = producer(broker_url, queue, protocol=1)
        result = app.send_task("it.add", args=(1, 2))
        assert result.get(timeout=WAIT) == 3

    (run,) = process_spans_for(receiver, {result.id})[result.id]
    (send,) = by_name(receiver.spans(), "send it.add")
    assert [(t, s) for t, s, _ in run.links] == [(send.trace_id, send.span_id)]


def test_hard_time_limit_reported_by_parent(
    redis_url: str, receiver: OtlpReceiver, instrumented_producer: None
) -> None:
    """A child killed by the hard time limit is reported as killed by its parent."""
    options = ("--pool", "prefork", "--concurrency", "1")
    with celery_worker(receiver, redis_url, *options) as (_, queue):
        app = producer(redis_url, queue)
        result = app.send_task("it.hang")
        with pytest.raises(Exception, match=r"TimeLimitExceeded|Time limit"):
            result.get(timeout=WAIT)

    # The worker has exited, so every span it will send has arrived. The
    # main process took the child's open span over before it sent SIGTERM,
    # so the child's own end of it never counts.
    (run,) = process_spans_for(receiver, {result.id})[result.id]
    (hanging,) = by_name(receiver.spans(), "hanging")
    assert run.attributes["jobtrace.job.outcome"] == "killed"
    assert run.attributes["jobtrace.job.reported_by_parent"] is True
    assert hanging.parent_span_id == run.span_id
    assert run.status_code == "ERROR"
    assert "TimeLimitExceeded" in str(run.attributes["error.type"])
    assert run.duration_s >= 0.9
    (send,) = by_name(receiver.spans(), "send it.hang")
    assert [(t, s) for t, s, _ in run.links] == [(send.trace_id, send.span_id)]


def test_soft_time_limit_is_timeout(redis_url: str, receiver: OtlpReceiver) -> None:
    """A task stopped by its soft time limit gets outcome timeout."""
    options = ("--pool", "prefork", "--concurrency", "1")
    with celery_worker(receiver, redis_url, *options) as (_, queue):
        result = producer(redis_url, queue).send_task("it.soft")
        with pytest.raises(Exception, match=r"SoftTimeLimitExceeded|oft time limit"):
            result.get(timeout=WAIT)

    (run,) = process_spans_for(receiver, {result.id})[result.id]
    assert run.attributes["jobtrace.job.outcome"] == "timeout"
    assert run.status_code == "ERROR"
    assert "SoftTimeLimitExceeded" in str(run.attributes["error.type"])


def test_killed_child_reported_by_parent(
    redis_url: str, receiver: OtlpReceiver
) -> None:
    """A pool child killed with SIGKILL mid-job is reported as killed."""
    options = ("--pool", "prefork", "--concurrency", "1")
    with celery_worker(receiver, redis_url, *options) as (_, queue):
        result = producer(redis_url, queue).send_task("it.sleep", args=(30,))
        os.kill(_running_child(result), signal.SIGKILL)
        with pytest.raises(Exception):
            result.get(timeout=WAIT)

    (run,) = process_spans_for(receiver, {result.id})[result.id]
    assert run.attributes["jobtrace.job.outcome"] == "killed"
    assert run.status_code == "ERROR"
    assert "WorkerLostError" in str(run.attributes["error.type"])


def test_killed_child_keeps_spans(redis_url: str, receiver: OtlpReceiver) -> None:
    """A SIGKILLed child's earlier jobs and the killed job's spans all arrive."""
    options = ("--pool", "prefork", "--concurrency", "1")
    # A long batch delay shows that nothing waited in the child's own queue.
    env = {"OTEL_BSP_SCHEDULE_DELAY": "30000"}
    with celery_worker(receiver, redis_url, *options, env=env) as (_, queue):
        app = producer(redis_url, queue)
        done = app.send_task("it.add", args=(1, 1))
        assert done.get(timeout=WAIT) == 2
        killed = app.send_task("it.span_then_sleep")
        os.kill(_running_child(killed), signal.SIGKILL)
        with pytest.raises(Exception):
            killed.get(timeout=WAIT)

    runs = process_spans_for(receiver, {done.id, killed.id})
    (run,) = runs[killed.id]
    (inside,) = by_name(receiver.spans(), "inside")
    (sleeping,) = by_name(receiver.spans(), "sleeping")
    assert runs[done.id][0].attributes["jobtrace.job.outcome"] == "success"
    assert run.attributes["jobtrace.job.outcome"] == "killed"
    assert inside.parent_span_id == run.span_id
    assert sleeping.parent_span_id == run.span_id
    assert sleeping.status_code == "ERROR"
    assert sleeping.attributes["jobtrace.span.ended_by_parent"] is True


def test_children_share_the_batch_queue(redis_url: str, receiver: OtlpReceiver) -> None:
    """Four children ending 1,900 spans each at once lose none of them.

    Their spans all go through the main process's batch queue, which has room for
    2,048 spans, so the main process waits for room instead of dropping.
    """
    options = ("--pool", "prefork", "--concurrency", "4")
    with celery_worker(receiver, redis_url, *options) as (_, queue):
        app = producer(redis_url, queue)
        results = [app.send_task("it.many_spans", args=(1900,)) for _ in range(4)]
        assert [r.get(timeout=WAIT) for r in results] == [1900] * 4

    # The warm shutdown flushed the main process's queue.
    runs = process_spans_for(receiver, {r.id for r in results})
    assert all(len(spans) == 1 for spans in runs.values())
    assert len(by_name(receiver.spans(), "step")) == 4 * 1900


def test_chord_callback_is_traced(redis_url: str, receiver: OtlpReceiver) -> None:
    """A chord's callback, enqueued by the worker, gets send and process spans."""
    options = ("--pool", "prefork", "--concurrency", "2")
    with celery_worker(receiver, redis_url, *options) as (_, queue):
        app = producer(redis_url, queue)
        header = [signature("it.add", args=(i, i), app=app) for i in range(3)]
        result = chord(header)(signature("it.total", app=app))
        assert result.get(timeout=WAIT) == 6

    (run,) = process_spans_for(receiver, {result.id})[result.id]
    sends = [
        s for s in by_name(receiver.spans(), "send it.total")
        if s.attributes["messaging.message.id"] == result.id
    ]  # fmt: skip
    assert len(sends) == 1
    assert sends[0].resource["jobtrace.component"] == "worker"
    assert [(t, s) for t, s, _ in run.links] == [(sends[0].trace_id, sends[0].span_id)]


def test_revoked_job_is_reported(
    redis_url: str, receiver: OtlpReceiver, instrumented_producer: None
) -> None:
    """A job revoked before it runs gets a process span with outcome revoked."""
    with celery_worker(receiver, redis_url, "--pool", "solo") as (_, queue):
        app = producer(redis_url, queue)
        app.send_task("it.add", args=(0, 0)).get(timeout=WAIT)
        result = app.send_task("it.add", args=(1, 1), countdown=3)
        time.sleep(0.5)
        result.revoke()
        runs = process_spans_for(receiver, {result.id})

    (run,) = runs[result.id]
    assert run.attributes["jobtrace.job.outcome"] == "revoked"


def test_unknown_task_is_rejected(
    redis_url: str, receiver: OtlpReceiver, instrumented_producer: None
) -> None:
    """A message for a task the worker does not know gets outcome rejected."""
    with celery_worker(receiver, redis_url, "--pool", "solo") as (_, queue):
        result = producer(redis_url, queue).send_task("it.missing")
        runs = process_spans_for(receiver, {result.id})

    (run,) = runs[result.id]
    assert run.attributes["jobtrace.job.outcome"] == "rejected"
    assert run.status_code == "ERROR"
    (send,) = by_name(receiver.spans(), "send it.missing")
    assert [(t, s) for t, s, _ in run.links] == [(send.trace_id, send.span_id)]


def _running_child(result: AsyncResult) -> int:
    """The pid of the pool child running a ``track_started`` task.

    The first child listed under the worker can be a short-lived helper
    process, so the pid comes from the task's STARTED state instead.
    """
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if result.state == "STARTED":
            return int(result.info["pid"])
        time.sleep(0.05)
    raise AssertionError(f"task {result.id} never started")


def test_opentelemetry_instrument_loads_plugin(
    redis_url: str, receiver: OtlpReceiver
) -> None:
    """opentelemetry-instrument without the distro traces an uninstrumented worker."""
    launcher = (str(Path(sys.executable).parent / "opentelemetry-instrument"),)
    env = {"TEST_INSTRUMENT": "0", "OTEL_TRACES_EXPORTER": "otlp"}
    env.update(tracing.WITHOUT_DISTRO)
    with celery_worker(
        receiver, redis_url, "--pool", "solo", env=env, launcher=launcher
    ) as (_, queue):
        result = producer(redis_url, queue).send_task("it.add", args=(1, 1))
        assert result.get(timeout=WAIT) == 2

    (run,) = process_spans_for(receiver, {result.id})[result.id]
    assert run.attributes["jobtrace.job.outcome"] == "success"


def test_nested_custom_headers(
    broker_url: str, receiver: OtlpReceiver, instrumented_producer: None
) -> None:
    """Context survives custom headers passed to apply_async and a retry."""
    with celery_worker(receiver, broker_url, "--pool", "solo") as (_, queue):
        app = producer(broker_url, queue)
        result = app.send_task("it.flaky", headers={"tenant": "acme"})
        assert result.get(timeout=WAIT) == "done"

    runs = process_spans_for(receiver, {result.id})[result.id]
    first = next(r for r in runs if r.attributes["jobtrace.job.attempt"] == 1)
    (send,) = [
        s for s in by_name(receiver.spans(), "send it.flaky")
        if s.resource["jobtrace.component"] == "web"
    ]  # fmt: skip
    assert [(t, s) for t, s, _ in first.links] == [(send.trace_id, send.span_id)]
    assert len(runs) == 2


def test_group_members_are_traced(
    redis_url: str, receiver: OtlpReceiver, instrumented_producer: None
) -> None:
    """Every member of a group gets its own send and process span."""
    with celery_worker(receiver, redis_url, "--pool", "prefork") as (_, queue):
        app = producer(redis_url, queue)
        members = [signature("it.add", args=(i, 1), app=app) for i in range(5)]
        result = group(members).apply_async()
        assert result.get(timeout=WAIT) == [1, 2, 3, 4, 5]

    ids = {child.id for child in result.results}
    runs = process_spans_for(receiver, ids)
    sends = {
        s.attributes["messaging.message.id"]
        for s in by_name(receiver.spans(), "send it.add")
    }
    assert len(runs) == 5
    assert ids <= sends
