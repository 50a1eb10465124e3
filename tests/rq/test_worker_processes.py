"""Real ``rq worker`` processes on Redis, checked over OTLP.

Every test starts its own OTLP/HTTP receiver on 127.0.0.1, enqueues from
this process, and runs a worker subprocess that exports to the receiver.
Most workers run in burst mode: they exit once the queue is empty.
"""

from __future__ import annotations

import itertools
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from rq import Queue
from rq.command import send_stop_job_command
from rq.job import Callback, JobStatus, Retry

from jobtrace._receiver import OtlpReceiver
from tests import tracing

from . import jobs
from .conftest import RQ_MAJOR
from .workers import (
    SERVICE_NAME,
    WAIT,
    by_name,
    link_pairs,
    process_spans_for,
    rq_worker,
    wait_for_exit,
    wait_for_saved_pid,
)

pytestmark = pytest.mark.integration


def test_forking_worker_delivers_every_span(
    rq_url: str, queue: Queue, receiver: OtlpReceiver, producer: None
) -> None:
    """Each of 50 jobs run in a work horse gets its process span over OTLP."""
    count = 50
    enqueued = [queue.enqueue(jobs.add, i, i) for i in range(count)]
    with rq_worker(receiver, rq_url, queue.name, "--burst") as worker:
        assert wait_for_exit(worker) == 0

    runs = process_spans_for(receiver, {job.id for job in enqueued})
    sends = {
        s.attributes["messaging.message.id"]: s
        for s in by_name(receiver.spans(), "send tests.rq.jobs.add")
    }
    assert len(runs) == count
    assert all(len(spans) == 1 for spans in runs.values())
    pids = {spans[0].attributes["test.pid"] for spans in runs.values()}
    # Each job ran in a work horse of its own.
    assert len(pids) == count
    for job in enqueued:
        (run,) = runs[job.id]
        send = sends[job.id]
        assert run.kind == "CONSUMER"
        assert run.attributes["jobtrace.job.outcome"] == "success"
        assert run.resource["jobtrace.component"] == "worker"
        assert run.resource["service.name"] == SERVICE_NAME
        assert send.resource["jobtrace.component"] == "web"
        assert link_pairs(run) == [(send.trace_id, send.span_id)]


@pytest.mark.parametrize("worker_class", ["forking", "simple", "spawn"])
def test_failure_and_retry_outcomes(
    worker_class: str,
    rq_url: str,
    queue: Queue,
    receiver: OtlpReceiver,
    producer: None,
) -> None:
    """Failures, retries and timeouts get their outcomes in every worker class."""
    if worker_class == "spawn" and RQ_MAJOR < 3:
        # RQ 1.x has no SpawnWorker; test_limitations pins RQ 2.x.
        pytest.skip("SpawnWorker horses are traced since RQ 3.0")
    failing = queue.enqueue(jobs.fail)
    flaky = queue.enqueue(jobs.fail_until_third, retry=Retry(max=3))
    slow = queue.enqueue(jobs.sleep, 5, job_timeout=1)
    with rq_worker(
        receiver, rq_url, queue.name, "--burst", worker_class=worker_class
    ) as worker:
        assert wait_for_exit(worker) == 0

    runs = process_spans_for(receiver, {failing.id, slow.id})
    runs.update(process_spans_for(receiver, {flaky.id}, count=3))
    (failed,) = runs[failing.id]
    assert failed.attributes["jobtrace.job.outcome"] == "failure"
    assert failed.status_code == "ERROR"
    assert failed.attributes["error.type"] == "ValueError"
    (timed_out,) = runs[slow.id]
    assert timed_out.attributes["jobtrace.job.outcome"] == "timeout"

    attempts = sorted(
        runs[flaky.id], key=lambda s: s.attributes["jobtrace.job.attempt"]
    )
    outcomes = [s.attributes["jobtrace.job.outcome"] for s in attempts]
    assert outcomes == ["retry", "retry", "success"]
    for previous, current in itertools.pairwise(attempts):
        previous_links = [
            (t, s) for t, s, a in current.links
            if a.get("jobtrace.link.type") == "previous_attempt"
        ]  # fmt: skip
        assert previous_links == [(previous.trace_id, previous.span_id)]


def test_killed_horse_reported_by_worker(
    rq_url: str, queue: Queue, receiver: OtlpReceiver, producer: None
) -> None:
    """A work horse killed with SIGKILL is reported as killed by its worker."""
    job = queue.enqueue(jobs.save_pid_then_sleep, 30)
    with rq_worker(receiver, rq_url, queue.name, "--burst") as worker:
        horse = wait_for_saved_pid(job)
        time.sleep(0.5)
        os.kill(horse, signal.SIGKILL)
        assert wait_for_exit(worker) == 0

    (run,) = process_spans_for(receiver, {job.id})[job.id]
    (send,) = by_name(receiver.spans(), "send tests.rq.jobs.save_pid_then_sleep")
    assert job.get_status() == JobStatus.FAILED
    assert run.attributes["jobtrace.job.outcome"] == "killed"
    assert run.attributes["jobtrace.job.reported_by_parent"] is True
    assert run.status_code == "ERROR"
    assert "WorkHorseLostError" in str(run.attributes["error.type"])
    assert run.resource["jobtrace.component"] == "worker"
    assert run.duration_s >= 0.4
    assert link_pairs(run) == [(send.trace_id, send.span_id)]


def test_killed_horse_keeps_job_spans(
    rq_url: str, queue: Queue, receiver: OtlpReceiver, producer: None
) -> None:
    """Spans a job ended before its horse was killed arrive under its run."""
    job = queue.enqueue(jobs.span_then_sleep, 30)
    # A long batch delay shows that the horse's spans did not wait in the
    # horse's own batch queue.
    env = {"OTEL_BSP_SCHEDULE_DELAY": "30000"}
    with rq_worker(receiver, rq_url, queue.name, "--burst", env=env) as worker:
        horse = wait_for_saved_pid(job)
        time.sleep(0.5)
        os.kill(horse, signal.SIGKILL)
        assert wait_for_exit(worker) == 0

    (run,) = process_spans_for(receiver, {job.id})[job.id]
    (inside,) = by_name(receiver.spans(), "inside")
    assert run.attributes["jobtrace.job.outcome"] == "killed"
    assert run.attributes["jobtrace.job.reported_by_parent"] is True
    assert inside.parent_span_id == run.span_id
    assert inside.trace_id == run.trace_id
    assert inside.start_ns >= run.start_ns


def test_retried_killed_horse_next_outcome(
    rq_url: str, queue: Queue, receiver: OtlpReceiver, producer: None
) -> None:
    """A run that the worker retried after its horse died does not mark the next.

    The worker sends the retry, and the horse that it forks for the next
    run starts with a copy of the worker's memory.
    """
    job = queue.enqueue(jobs.kill_horse_on_first_run, retry=Retry(max=1))
    with rq_worker(receiver, rq_url, queue.name, "--burst") as worker:
        assert wait_for_exit(worker) == 0

    runs = process_spans_for(receiver, {job.id}, count=2)[job.id]
    by_attempt = {span.attributes["jobtrace.job.attempt"]: span for span in runs}
    assert job.return_value() == 2
    assert set(by_attempt) == {1, 2}
    assert by_attempt[1].attributes["jobtrace.job.outcome"] == "killed"
    assert by_attempt[2].attributes["jobtrace.job.outcome"] == "success"
    assert by_attempt[2].status_code != "ERROR"


def test_horse_spans_open_at_kill_ended(
    rq_url: str, queue: Queue, receiver: OtlpReceiver, producer: None
) -> None:
    """A span still open when the horse dies is ended by the worker."""
    job = queue.enqueue(jobs.sleep_inside_span, 30)
    with rq_worker(receiver, rq_url, queue.name, "--burst") as worker:
        horse = wait_for_saved_pid(job)
        time.sleep(0.5)
        os.kill(horse, signal.SIGKILL)
        assert wait_for_exit(worker) == 0

    (run,) = process_spans_for(receiver, {job.id})[job.id]
    (open_span,) = by_name(receiver.spans(), "sleeping")
    assert open_span.parent_span_id == run.span_id
    assert open_span.status_code == "ERROR"
    assert open_span.attributes["jobtrace.span.ended_by_parent"] is True
    assert open_span.duration_s >= 0.4
    assert run.attributes["jobtrace.job.outcome"] == "killed"


def test_overdue_horse_is_timeout(
    rq_url: str, queue: Queue, receiver: OtlpReceiver, producer: None
) -> None:
    """A horse that outlives job_timeout by 60 s is killed and reported as timeout."""
    job = queue.enqueue(jobs.sleep_through_timeout, 300, job_timeout=1)
    # RQ's monitor kills the horse at its first check after job_timeout
    # plus 60 s, so a 1 s check interval ends this test after about 62 s.
    with rq_worker(
        receiver, rq_url, queue.name, "--burst", "--job-monitoring-interval", "1"
    ) as worker:
        assert worker.wait(timeout=WAIT + 60) == 0

    (run,) = process_spans_for(receiver, {job.id})[job.id]
    assert job.get_status() == JobStatus.FAILED
    assert run.attributes["jobtrace.job.outcome"] == "timeout"
    assert run.attributes["jobtrace.job.reported_by_parent"] is True
    assert run.status_code == "ERROR"
    assert "WorkHorseLostError" in str(run.attributes["error.type"])
    assert run.duration_s >= 60


def test_stop_job_command_is_interrupted(
    rq_url: str, queue: Queue, receiver: OtlpReceiver, producer: None
) -> None:
    """A job stopped with RQ's stop-job command is reported as interrupted."""
    job = queue.enqueue(jobs.save_pid_then_sleep, 30)
    with rq_worker(
        receiver, rq_url, queue.name, "--burst", worker_class="listening"
    ) as worker:
        wait_for_saved_pid(job)
        send_stop_job_command(queue.connection, job.id)
        assert wait_for_exit(worker) == 0

    (run,) = process_spans_for(receiver, {job.id})[job.id]
    (send,) = by_name(receiver.spans(), "send tests.rq.jobs.save_pid_then_sleep")
    assert job.get_status() == JobStatus.STOPPED
    assert run.attributes["jobtrace.job.outcome"] == "interrupted"
    assert run.attributes["jobtrace.job.reported_by_parent"] is True
    assert run.status_code == "ERROR"
    assert "WorkHorseLostError" in str(run.attributes["error.type"])
    assert "stopped" in run.status_message
    assert run.resource["jobtrace.component"] == "worker"
    assert link_pairs(run) == [(send.trace_id, send.span_id)]


def test_callbacks_in_job_trace(
    rq_url: str, queue: Queue, receiver: OtlpReceiver, producer: None
) -> None:
    """Success and failure callbacks run in the horse, inside the run's span."""
    ok = queue.enqueue(jobs.add, 1, 2, on_success=Callback(jobs.traced_callback))
    failing = queue.enqueue(jobs.fail, on_failure=Callback(jobs.traced_callback))
    with rq_worker(receiver, rq_url, queue.name, "--burst") as worker:
        assert wait_for_exit(worker) == 0

    runs = process_spans_for(receiver, {ok.id, failing.id})
    callbacks = {
        span.attributes["test.job_id"]: span
        for span in receiver.wait_for(
            lambda spans: len(by_name(spans, "callback")) >= 2
        )
        if span.name == "callback"
    }
    assert set(callbacks) == {ok.id, failing.id}
    for job_id, callback in callbacks.items():
        (run,) = runs[job_id]
        assert callback.trace_id == run.trace_id
        assert callback.parent_span_id == run.span_id
        assert run.start_ns <= callback.start_ns
        assert callback.end_ns <= run.end_ns


def test_stopped_callback_in_job_trace(
    rq_url: str, queue: Queue, receiver: OtlpReceiver, producer: None
) -> None:
    """The worker runs a stopped job's callback inside the run it reports."""
    job = queue.enqueue(
        jobs.save_pid_then_sleep, 30, on_stopped=Callback(jobs.traced_callback)
    )
    with rq_worker(
        receiver, rq_url, queue.name, "--burst", worker_class="listening"
    ) as worker:
        wait_for_saved_pid(job)
        send_stop_job_command(queue.connection, job.id)
        assert wait_for_exit(worker) == 0

    (run,) = process_spans_for(receiver, {job.id})[job.id]
    (callback,) = by_name(
        receiver.wait_for(lambda spans: bool(by_name(spans, "callback"))),
        "callback",
    )
    assert run.attributes["jobtrace.job.outcome"] == "interrupted"
    assert run.attributes["jobtrace.job.reported_by_parent"] is True
    assert callback.attributes["test.job_id"] == job.id
    assert callback.trace_id == run.trace_id
    assert callback.parent_span_id == run.span_id
    assert callback.end_ns <= run.end_ns


def test_stopped_job_missing_callback(
    rq_url: str, queue: Queue, receiver: OtlpReceiver, producer: None
) -> None:
    """A stopped job whose callback cannot be imported is still reported."""
    job = queue.enqueue(
        jobs.save_pid_then_sleep,
        30,
        on_stopped=Callback("tests.rq.jobs.no_such_callback"),
    )
    with rq_worker(
        receiver, rq_url, queue.name, "--burst", worker_class="listening"
    ) as worker:
        wait_for_saved_pid(job)
        send_stop_job_command(queue.connection, job.id)
        wait_for_exit(worker)

    (run,) = process_spans_for(receiver, {job.id})[job.id]
    assert run.attributes["jobtrace.job.outcome"] == "interrupted"
    assert run.attributes["jobtrace.job.reported_by_parent"] is True
    assert run.status_code == "ERROR"


@pytest.mark.skipif(RQ_MAJOR < 2, reason="Repeat came in RQ 2.x")
def test_repeats_link_to_own_sends(
    rq_url: str, queue: Queue, receiver: OtlpReceiver, producer: None
) -> None:
    """Each repeated run links to a send span inside the run before it."""
    from rq import Repeat

    # One repeat follows at once and the other after 1 s, through RQ's
    # scheduler. RQ 2.12 takes the intervals from the end of the list and
    # RQ 3.0 from the start, so either order covers both.
    job = queue.enqueue(jobs.add, 1, 2, repeat=Repeat(times=2, interval=[0, 1]))
    with rq_worker(receiver, rq_url, queue.name, "--with-scheduler"):
        found = process_spans_for(receiver, {job.id}, count=3)[job.id]

    runs = sorted(found, key=lambda span: span.start_ns)
    sends = by_name(receiver.spans(), "send tests.rq.jobs.add")
    sends_by_id = {send.span_id: send for send in sends}
    assert len(runs) == 3
    assert len(sends) == 3
    for run in runs:
        assert run.attributes["jobtrace.job.outcome"] == "success"
        assert run.attributes["jobtrace.job.attempt"] == 1
        assert len(run.links) == 1
        assert run.links[0][2] == {"jobtrace.link.type": "send"}
    first_send = sends_by_id[runs[0].links[0][1]]
    assert first_send.resource["jobtrace.component"] == "web"
    for previous, current in itertools.pairwise(runs):
        send = sends_by_id[current.links[0][1]]
        assert send.parent_span_id == previous.span_id
        assert send.trace_id == previous.trace_id
        assert send.resource["jobtrace.component"] == "worker"


def test_dependent_links_to_creation(
    rq_url: str, queue: Queue, receiver: OtlpReceiver, producer: None
) -> None:
    """A dependent job pushed by the worker links to the producer's send span."""
    first = queue.enqueue(jobs.add, 1, 1)
    second = queue.enqueue(jobs.add, 2, 2, depends_on=first)
    with rq_worker(receiver, rq_url, queue.name, "--burst") as worker:
        assert wait_for_exit(worker) == 0

    runs = process_spans_for(receiver, {first.id, second.id})
    sends = {
        s.attributes["messaging.message.id"]: s
        for s in by_name(receiver.spans(), "send tests.rq.jobs.add")
    }
    (dependent,) = runs[second.id]
    send = sends[second.id]
    assert send.resource["jobtrace.component"] == "web"
    assert link_pairs(dependent) == [(send.trace_id, send.span_id)]


def test_opentelemetry_instrument_loads_plugin(
    rq_url: str, queue: Queue, receiver: OtlpReceiver
) -> None:
    """opentelemetry-instrument without the distro traces an uninstrumented worker."""
    job = queue.enqueue(jobs.add, 1, 1)
    launcher = (str(Path(sys.executable).parent / "opentelemetry-instrument"),)
    env = {"TEST_INSTRUMENT": "0", "OTEL_TRACES_EXPORTER": "otlp"}
    env.update(tracing.WITHOUT_DISTRO)
    with rq_worker(
        receiver, rq_url, queue.name, "--burst", env=env, launcher=launcher
    ) as worker:
        assert wait_for_exit(worker) == 0

    (run,) = process_spans_for(receiver, {job.id})[job.id]
    assert run.attributes["jobtrace.job.outcome"] == "success"
