"""RQ 3.x SpawnWorker horses hand their spans to the worker.

A spawned horse is a new interpreter. The worker names a span pipe in the
horse's environment, and the horse's jobtrace writes its spans into it,
so the worker exports them under its own resource.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
from rq import Queue
from rq.job import JobStatus

from jobtrace._receiver import OtlpReceiver
from jobtrace._spawned import PIPE_VARIABLE

from . import jobs
from .conftest import RQ_MAJOR
from .workers import (
    by_name,
    link_pairs,
    process_spans_for,
    rq_worker,
    wait_for_exit,
    wait_for_saved_pid,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(RQ_MAJOR < 3, reason="SpawnWorker horses are traced on RQ 3.x"),
]


def test_spans_arrive_through_worker(
    rq_url: str, queue: Queue, receiver: OtlpReceiver, producer: None
) -> None:
    """Every horse's process span arrives under the worker's resource."""
    count = 10
    enqueued = [queue.enqueue(jobs.add, i, i) for i in range(count)]
    with rq_worker(
        receiver, rq_url, queue.name, "--burst", worker_class="spawn"
    ) as worker:
        assert wait_for_exit(worker) == 0

    runs = process_spans_for(receiver, {job.id for job in enqueued})
    assert len(runs) == count
    assert all(len(spans) == 1 for spans in runs.values())
    spans = [spans[0] for spans in runs.values()]
    pids = {span.attributes["test.pid"] for span in spans}
    instances = {span.resource["service.instance.id"] for span in spans}
    # Each job ran in a horse of its own, and one process exported them all.
    assert len(pids) == count
    assert len(instances) == 1
    for span in spans:
        assert span.attributes["jobtrace.job.outcome"] == "success"
        assert span.resource["jobtrace.component"] == "worker"


def test_job_sees_no_pipe_variable(
    rq_url: str, queue: Queue, receiver: OtlpReceiver, producer: None
) -> None:
    """The horse removes the pipe's variable before the job runs."""
    job = queue.enqueue(jobs.environment_variable, PIPE_VARIABLE)
    with rq_worker(
        receiver, rq_url, queue.name, "--burst", worker_class="spawn"
    ) as worker:
        assert wait_for_exit(worker) == 0

    (run,) = process_spans_for(receiver, {job.id})[job.id]
    assert job.get_status() == JobStatus.FINISHED
    assert job.return_value() is None
    assert run.attributes["jobtrace.job.outcome"] == "success"


def test_killed_horse_reported(
    rq_url: str, queue: Queue, receiver: OtlpReceiver, producer: None
) -> None:
    """A spawned horse killed with SIGKILL is reported as killed by its worker."""
    job = queue.enqueue(jobs.span_then_sleep, 30)
    with rq_worker(
        receiver, rq_url, queue.name, "--burst", worker_class="spawn"
    ) as worker:
        horse = wait_for_saved_pid(job)
        time.sleep(0.5)
        os.kill(horse, signal.SIGKILL)
        assert wait_for_exit(worker) == 0

    (run,) = process_spans_for(receiver, {job.id})[job.id]
    (send,) = by_name(receiver.spans(), "send tests.rq.jobs.span_then_sleep")
    (inside,) = by_name(receiver.spans(), "inside")
    assert job.get_status() == JobStatus.FAILED
    assert run.attributes["jobtrace.job.outcome"] == "killed"
    assert run.attributes["jobtrace.job.reported_by_parent"] is True
    assert run.status_code == "ERROR"
    assert "WorkHorseLostError" in str(run.attributes["error.type"])
    assert run.duration_s >= 0.4
    assert link_pairs(run) == [(send.trace_id, send.span_id)]
    # The span the job ended before the kill came through the worker.
    assert inside.parent_span_id == run.span_id
    instance = run.resource["service.instance.id"]
    assert inside.resource["service.instance.id"] == instance
