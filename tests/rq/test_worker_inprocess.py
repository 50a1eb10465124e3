"""RQ jobs run by an in-process SimpleWorker against the local Redis."""

from __future__ import annotations

import datetime
import itertools
import logging
import time
from typing import Any

import pytest
from opentelemetry.trace import SpanKind, StatusCode
from rq import Queue, SimpleWorker
from rq.decorators import job as job_decorator
from rq.job import Callback, Job, JobStatus, Retry
from rq.scheduler import RQScheduler

import jobtrace
import jobtrace_rq
from jobtrace_rq import _hooks
from jobtrace_rq._propagation import META_KEY

from . import jobs
from .conftest import RQ_MAJOR, work


def named(exporter: Any, name: str) -> list[Any]:
    """Return the finished spans called ``name``, in end order."""
    return [span for span in exporter.get_finished_spans() if span.name == name]


def link_targets(span: Any, link_type: str) -> list[int]:
    """Return the span ids that ``span`` links to with ``link_type``."""
    return [
        link.context.span_id
        for link in span.links
        if link.attributes.get("jobtrace.link.type") == link_type
    ]


def test_enqueue_opens_send_span(instrumented: Any, queue: Queue) -> None:
    """An enqueue gives one PRODUCER span with the messaging attributes."""
    job = queue.enqueue(jobs.add, 1, 2)

    (send,) = named(instrumented, "send tests.rq.jobs.add")
    assert send.kind is SpanKind.PRODUCER
    assert send.attributes["messaging.system"] == "rq"
    assert send.attributes["messaging.destination.name"] == queue.name
    assert send.attributes["messaging.message.id"] == job.id
    assert send.attributes["messaging.operation.type"] == "send"


def test_context_travels_in_meta(instrumented: Any, queue: Queue) -> None:
    """The send span's traceparent is saved in the job's meta in Redis."""
    job = queue.enqueue(jobs.add, 1, 2)

    stored = Job.fetch(job.id, connection=queue.connection).meta[META_KEY]
    (send,) = named(instrumented, "send tests.rq.jobs.add")
    assert f"{send.context.span_id:016x}" in stored["traceparent"]
    assert "jobtrace_sent_at" in stored


def test_caller_meta_not_changed(instrumented: Any, queue: Queue) -> None:
    """The dict passed as meta= is not changed, and its keys are kept."""
    meta = {"tenant": "acme"}
    job = queue.enqueue(jobs.add, 1, 2, meta=meta)

    assert meta == {"tenant": "acme"}
    assert Job.fetch(job.id, connection=queue.connection).meta["tenant"] == "acme"


def test_success_process_span(instrumented: Any, queue: Queue) -> None:
    """A run gives a CONSUMER span linked to its send span, outcome success."""
    job = queue.enqueue(jobs.add, 1, 2)
    work(queue)

    (send,) = named(instrumented, "send tests.rq.jobs.add")
    (run,) = named(instrumented, "process tests.rq.jobs.add")
    assert job.get_status() == JobStatus.FINISHED
    assert run.kind is SpanKind.CONSUMER
    assert run.attributes["jobtrace.job.outcome"] == "success"
    assert run.attributes["jobtrace.job.attempt"] == 1
    assert run.attributes["messaging.destination.name"] == queue.name
    assert run.attributes["jobtrace.job.queue_time"] >= 0
    assert run.parent is None
    assert link_targets(run, "send") == [send.context.span_id]


def test_child_mode_per_job(instrumented: Any, queue: Queue) -> None:
    """propagation_mode('child') makes the process span a child of the send."""
    with jobtrace.propagation_mode("child"):
        queue.enqueue(jobs.add, 1, 2)
    work(queue)

    (send,) = named(instrumented, "send tests.rq.jobs.add")
    (run,) = named(instrumented, "process tests.rq.jobs.add")
    assert run.parent.span_id == send.context.span_id
    assert run.context.trace_id == send.context.trace_id


def test_failure_sets_error(instrumented: Any, queue: Queue) -> None:
    """A job that raises gets outcome failure, ERROR and an exception event."""
    queue.enqueue(jobs.fail)
    work(queue)

    (run,) = named(instrumented, "process tests.rq.jobs.fail")
    assert run.attributes["jobtrace.job.outcome"] == "failure"
    assert run.status.status_code is StatusCode.ERROR
    assert run.attributes["error.type"] == "ValueError"
    assert [event.name for event in run.events] == ["exception"]


def test_timeout_outcome(instrumented: Any, queue: Queue) -> None:
    """A job stopped by job_timeout gets outcome timeout."""
    queue.enqueue(jobs.sleep, 5, job_timeout=1)
    work(queue)

    (run,) = named(instrumented, "process tests.rq.jobs.sleep")
    assert run.attributes["jobtrace.job.outcome"] == "timeout"
    assert run.status.status_code is StatusCode.ERROR
    assert run.attributes["error.type"] == "rq.timeouts.JobTimeoutException"


def test_retry_attempts_are_linked(instrumented: Any, queue: Queue) -> None:
    """Each attempt of a Retry job is a span, linked to the attempt before."""
    job = queue.enqueue(jobs.fail_until_third, retry=Retry(max=3))
    work(queue)

    runs = named(instrumented, "process tests.rq.jobs.fail_until_third")
    sends = named(instrumented, "send tests.rq.jobs.fail_until_third")
    assert job.get_status() == JobStatus.FINISHED
    assert [r.attributes["jobtrace.job.attempt"] for r in runs] == [1, 2, 3]
    outcomes = [r.attributes["jobtrace.job.outcome"] for r in runs]
    assert outcomes == ["retry", "retry", "success"]
    assert len(sends) == 3
    for previous, current in itertools.pairwise(runs):
        assert link_targets(current, "previous_attempt") == [previous.context.span_id]
    # The worker sends each retry from inside the attempt that failed.
    assert sends[1].parent.span_id == runs[0].context.span_id


@pytest.mark.skipif(RQ_MAJOR < 2, reason="jobs return Retry since RQ 2.0")
def test_returned_retry_is_retry(instrumented: Any, queue: Queue) -> None:
    """A job that returns Retry gets outcome retry, then a second attempt."""
    queue.enqueue(jobs.return_retry_once)
    work(queue)

    runs = named(instrumented, "process tests.rq.jobs.return_retry_once")
    outcomes = [r.attributes["jobtrace.job.outcome"] for r in runs]
    assert outcomes == ["retry", "success"]
    assert [r.attributes["jobtrace.job.attempt"] for r in runs] == [1, 2]


def test_dependent_send_at_creation(instrumented: Any, queue: Queue) -> None:
    """A dependent job's send span exists at enqueue time and its run links to it."""
    first = queue.enqueue(jobs.add, 1, 1)
    second = queue.enqueue(jobs.add, 2, 2, depends_on=first)

    sends = named(instrumented, "send tests.rq.jobs.add")
    assert [s.attributes["messaging.message.id"] for s in sends] == [
        first.id,
        second.id,
    ]
    work(queue)

    runs = {
        r.attributes["messaging.message.id"]: r
        for r in named(instrumented, "process tests.rq.jobs.add")
    }
    assert second.get_status() == JobStatus.FINISHED
    assert link_targets(runs[second.id], "send") == [sends[1].context.span_id]


def test_enqueue_many_sends_each(instrumented: Any, queue: Queue) -> None:
    """enqueue_many gives every job its own send span and linked run."""
    created = queue.enqueue_many(
        [Queue.prepare_data(jobs.add, (i, i)) for i in range(3)]
    )
    work(queue)

    sends = named(instrumented, "send tests.rq.jobs.add")
    runs = named(instrumented, "process tests.rq.jobs.add")
    send_ids = {s.attributes["messaging.message.id"]: s for s in sends}
    assert set(send_ids) == {job.id for job in created}
    assert len(runs) == 3
    for run in runs:
        send = send_ids[run.attributes["messaging.message.id"]]
        assert link_targets(run, "send") == [send.context.span_id]


def test_decorator_delay_is_traced(instrumented: Any, queue: Queue) -> None:
    """The @job decorator's .delay goes through the traced enqueue."""

    def multiply(x: int, y: int) -> int:
        return x * y

    delayed = job_decorator(queue, connection=queue.connection)(multiply)
    delayed.delay(3, 4)

    (send,) = [
        span
        for span in instrumented.get_finished_spans()
        if span.name.endswith(".multiply")
    ]
    assert send.attributes["messaging.destination.name"] == queue.name


def test_enqueue_call_is_traced(instrumented: Any, queue: Queue) -> None:
    """enqueue_call gives a send span, and the job's run links to it."""
    job = queue.enqueue_call(jobs.add, args=(1, 2))
    work(queue)

    (send,) = named(instrumented, "send tests.rq.jobs.add")
    (run,) = named(instrumented, "process tests.rq.jobs.add")
    assert send.attributes["messaging.message.id"] == job.id
    assert send.attributes["messaging.destination.name"] == queue.name
    assert link_targets(run, "send") == [send.context.span_id]


@pytest.mark.parametrize("method", ["enqueue_at", "enqueue_in"])
def test_scheduled_job_queue_time(instrumented: Any, queue: Queue, method: str) -> None:
    """A scheduled job sends at once, and queue time counts from the schedule."""
    delay = datetime.timedelta(seconds=1)
    if method == "enqueue_at":
        at = datetime.datetime.now(datetime.timezone.utc) + delay
        queue.enqueue_at(at, jobs.add, 1, 2)
    else:
        queue.enqueue_in(delay, jobs.add, 1, 2)
    time.sleep(1.5)
    scheduler = RQScheduler([queue], connection=queue.connection)
    scheduler.acquire_locks()
    try:
        scheduler.enqueue_scheduled_jobs()
    finally:
        scheduler.release_locks()
    work(queue)

    (send,) = named(instrumented, "send tests.rq.jobs.add")
    (run,) = named(instrumented, "process tests.rq.jobs.add")
    assert link_targets(run, "send") == [send.context.span_id]
    # Counted from the send, the queue time would be 1.5 s or more.
    assert run.attributes["jobtrace.job.queue_time"] < 1.2


def test_job_enqueues_job(instrumented: Any, queue: Queue) -> None:
    """A send from inside a job is a child of that job's process span."""
    queue.enqueue(jobs.enqueue_add)
    work(queue)

    (outer,) = named(instrumented, "process tests.rq.jobs.enqueue_add")
    inner_sends = named(instrumented, "send tests.rq.jobs.add")
    assert len(inner_sends) == 1
    assert inner_sends[0].parent.span_id == outer.context.span_id


def test_callbacks_inside_process_span(instrumented: Any, queue: Queue) -> None:
    """Success and failure callbacks run inside the job's process span."""
    queue.enqueue(jobs.add, 1, 2, on_success=Callback(jobs.traced_callback))
    queue.enqueue(jobs.fail, on_failure=Callback(jobs.traced_callback))
    work(queue)

    callbacks = named(instrumented, "callback")
    runs = named(instrumented, "process tests.rq.jobs.add") + named(
        instrumented, "process tests.rq.jobs.fail"
    )
    assert len(callbacks) == 2
    run_ids = {run.context.span_id for run in runs}
    assert {callback.parent.span_id for callback in callbacks} == run_ids


def test_job_without_context_is_root(exporter: Any, queue: Queue) -> None:
    """A job enqueued without jobtrace runs as a new root without links."""
    queue.enqueue(jobs.add, 1, 2)
    jobtrace_rq.instrument()
    try:
        work(queue)
    finally:
        jobtrace_rq.uninstrument()

    (run,) = named(exporter, "process tests.rq.jobs.add")
    assert run.parent is None
    assert list(run.links) == []
    assert run.attributes["jobtrace.job.outcome"] == "success"


def test_worker_marks_component(instrumented: Any, queue: Queue) -> None:
    """Starting a worker sets this process's component to worker."""
    work(queue)

    assert jobtrace.component() == "worker"


def test_uninstrument_restores_rq(exporter: Any, queue: Queue) -> None:
    """After uninstrument, RQ's methods are the originals and no spans appear."""
    original = SimpleWorker.perform_job
    jobtrace_rq.instrument()
    jobtrace_rq.uninstrument()
    jobtrace_rq.uninstrument()
    job = queue.enqueue(jobs.add, 1, 2)
    work(queue)

    assert SimpleWorker.perform_job is original
    assert job.get_status() == JobStatus.FINISHED
    assert exporter.get_finished_spans() == ()


@pytest.mark.skipif(RQ_MAJOR < 2, reason="Repeat came in RQ 2.x")
def test_uninstrument_restores_classmethod(exporter: Any) -> None:
    """After uninstrument, Repeat.schedule is RQ's classmethod object again."""
    from rq.repeat import Repeat

    original = vars(Repeat)["schedule"]
    jobtrace_rq.instrument()
    wrapped = vars(Repeat)["schedule"]
    jobtrace_rq.uninstrument()

    assert wrapped is not original
    assert vars(Repeat)["schedule"] is original


def test_instrument_twice_wraps_once(instrumented: Any, queue: Queue) -> None:
    """A second instrument() call adds no second wrapper."""
    count = len(_hooks._installed)
    jobtrace_rq.instrument()
    queue.enqueue(jobs.add, 1, 2)

    assert len(_hooks._installed) == count
    assert len(named(instrumented, "send tests.rq.jobs.add")) == 1


def test_disabled_instruments_nothing(
    exporter: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With JOBTRACE_ENABLED=false, instrument() wraps nothing."""
    monkeypatch.setattr(jobtrace, "enabled", lambda: False)
    jobtrace_rq.instrument()

    assert _hooks._installed == []


def test_unsupported_version_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    """An RQ outside the supported range makes instrument() raise."""
    monkeypatch.setattr(jobtrace._hosts, "version", lambda name: "1.15.1")

    with pytest.raises(RuntimeError, match=r"rq >= 1\.16, found rq 1\.15\.1"):
        jobtrace_rq.instrument()


def test_core_errors_leave_jobs_alone(
    instrumented: Any,
    queue: Queue,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """When core raises in every hook, results and failures are unchanged."""

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("core is broken")

    for name in ("begin_send", "end_send", "begin_run", "end_run", "record_error"):
        monkeypatch.setattr(jobtrace, name, broken)
    with caplog.at_level(logging.WARNING, logger="jobtrace"):
        ok = queue.enqueue(jobs.add, 1, 2)
        failing = queue.enqueue(jobs.fail)
        work(queue)

    assert ok.get_status() == JobStatus.FINISHED
    assert ok.return_value() == 3
    assert failing.get_status() == JobStatus.FAILED
    assert "ValueError: boom" in str(failing.latest_result().exc_string)
    hooks = [record.args[0] for record in caplog.records if record.args]
    # One record per failing hook, however many jobs hit it.
    assert len(hooks) == len(set(hooks))
    assert "rq.enqueue.begin" in hooks
    assert "rq.perform_job.begin" in hooks
