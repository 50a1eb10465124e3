"""Requeued RQ jobs, run by an in-process SimpleWorker against Redis.

RQ pushes a requeued job through its private ``Queue._enqueue_job``, so
these tests check that jobtrace still gives it a send span of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from rq import Queue
from rq.job import Job, JobStatus, Retry
from rq.registry import FailedJobRegistry

import jobtrace

from . import jobs
from .conftest import work
from .test_worker_inprocess import link_targets, named


def requeue_job(job: Job) -> None:
    """Requeue through Job.requeue on a freshly fetched job."""
    Job.fetch(job.id, connection=job.connection).requeue()


def requeue_id(job: Job) -> None:
    """Requeue through the failed job registry, by job id."""
    FailedJobRegistry(job.origin, connection=job.connection).requeue(job.id)


@pytest.mark.parametrize(
    "requeue",
    [pytest.param(requeue_job, id="job"), pytest.param(requeue_id, id="registry")],
)
def test_requeue_gets_send_span(
    instrumented: Any, queue: Queue, requeue: Callable[[Job], None]
) -> None:
    """A requeued job gets a new send span, and its next run links to it."""
    job = queue.enqueue(jobs.fail_until_second)
    work(queue)
    requeue(job)
    work(queue)

    name = "tests.rq.jobs.fail_until_second"
    first_send, requeue_send = named(instrumented, f"send {name}")
    failed, succeeded = named(instrumented, f"process {name}")
    assert job.get_status() == JobStatus.FINISHED
    assert failed.attributes["jobtrace.job.outcome"] == "failure"
    assert failed.attributes["jobtrace.job.attempt"] == 1
    assert succeeded.attributes["jobtrace.job.outcome"] == "success"
    assert succeeded.attributes["jobtrace.job.attempt"] == 2
    assert link_targets(failed, "send") == [first_send.context.span_id]
    assert link_targets(succeeded, "send") == [requeue_send.context.span_id]
    assert link_targets(succeeded, "previous_attempt") == []
    assert requeue_send.attributes["messaging.message.id"] == job.id
    assert requeue_send.attributes["messaging.destination.name"] == queue.name


def test_requeue_counts_on_after_retries(instrumented: Any, queue: Queue) -> None:
    """A job requeued after its retries ran out continues their attempt count."""
    job = queue.enqueue(jobs.fail_until_third, retry=Retry(max=1))
    work(queue)
    requeue_job(job)
    work(queue)

    runs = named(instrumented, "process tests.rq.jobs.fail_until_third")
    assert job.get_status() == JobStatus.FINISHED
    assert [r.attributes["jobtrace.job.attempt"] for r in runs] == [1, 2, 3]
    outcomes = [r.attributes["jobtrace.job.outcome"] for r in runs]
    assert outcomes == ["retry", "failure", "success"]


def test_requeue_with_rate_limit(instrumented: Any, queue: Queue) -> None:
    """A requeued job with a rate limit (RQ 3.0 and newer) gets a send span."""
    rate_limit = pytest.importorskip(
        "rq.rate_limit", reason="rate limits came in RQ 3.0"
    )
    limit = rate_limit.RateLimit(f"{queue.name}-limit", concurrency=1)
    job = queue.enqueue(jobs.fail_until_second, rate_limit=limit)
    work(queue)
    requeue_job(job)
    work(queue)

    name = "tests.rq.jobs.fail_until_second"
    _, requeue_send = named(instrumented, f"send {name}")
    _, succeeded = named(instrumented, f"process {name}")
    assert job.get_status() == JobStatus.FINISHED
    assert succeeded.attributes["jobtrace.job.attempt"] == 2
    assert link_targets(succeeded, "send") == [requeue_send.context.span_id]


def test_requeue_survives_core_errors(
    instrumented: Any, queue: Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When core raises, a requeue still puts the job back on its queue."""
    job = queue.enqueue(jobs.fail)
    work(queue)

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("core is broken")

    monkeypatch.setattr(jobtrace, "current_job", broken)
    monkeypatch.setattr(jobtrace, "begin_send", broken)
    requeue_job(job)

    assert job.get_status() == JobStatus.QUEUED
    assert job.id in queue.get_job_ids()


def test_other_pushes_add_no_send(instrumented: Any, queue: Queue) -> None:
    """Jobs that RQ pushes for other reasons get no send span of their own."""
    first = queue.enqueue(jobs.add, 1, 1)
    queue.enqueue(jobs.add, 2, 2, depends_on=first)
    work(queue)

    # One send per enqueue call: pushing the dependent adds none.
    assert len(named(instrumented, "send tests.rq.jobs.add")) == 2
    assert len(named(instrumented, "process tests.rq.jobs.add")) == 2
