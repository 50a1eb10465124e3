"""The span budget in a real ``rq worker``, checked over OTLP.

Each job runs in a forked work horse, which hands its spans to the worker
through a pipe. The worker's budget processor prunes them and exports them
early, so these tests check what reached a real OTLP receiver.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from redis import Redis
from rq import Queue

from jobtrace._receiver import OtlpReceiver, ReceivedSpan

from . import budget_jobs
from .workers import process_spans_for, rq_worker, wait_for_exit

pytestmark = pytest.mark.integration

BUDGET = 40


@pytest.fixture
def connection(redis_url: str) -> Iterator[Redis]:
    """A connection to the database that JOBTRACE_TEST_REDIS_DB names."""
    client = Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def queue(connection: Redis) -> Iterator[Queue]:
    """A queue with a fresh name, deleted with its jobs after the test."""
    created = Queue(f"jobtrace-budget-{uuid.uuid4().hex[:8]}", connection=connection)
    yield created
    created.delete(delete_jobs=True)


def trace_of(receiver: OtlpReceiver, root: ReceivedSpan) -> list[ReceivedSpan]:
    """Return the received spans of ``root``'s trace."""
    return [span for span in receiver.spans() if span.trace_id == root.trace_id]


def test_work_horse_trace_pruned(
    redis_url: str, queue: Queue, receiver: OtlpReceiver
) -> None:
    """A job that makes 311 spans arrives as one tree of at most 40 spans,
    with its failing row, and with counts of everything dropped."""
    job = queue.enqueue(budget_jobs.many_spans, 10, 30, 123)
    env = {"JOBTRACE_MAX_SPANS_PER_TRACE": str(BUDGET)}

    with rq_worker(receiver, redis_url, queue.name, "--burst", env=env) as worker:
        assert wait_for_exit(worker) == 0
    (root,) = process_spans_for(receiver, {job.id})[job.id]

    spans = trace_of(receiver, root)
    ids = {span.span_id for span in spans}
    assert len(spans) == BUDGET
    assert root.parent_span_id is None
    for span in spans:
        assert span.parent_span_id is None or span.parent_span_id in ids
    failed = [span for span in spans if span.status_code == "ERROR"]
    assert [(span.name, span.attributes["row"]) for span in failed] == [("row", 3)]
    assert root.attributes["jobtrace.trace.spans_created"] == 311
    assert root.attributes["jobtrace.trace.spans_exported"] == BUDGET
    assert root.attributes["jobtrace.trace.spans_dropped"] == 311 - BUDGET
    pruned = sum(int(span.attributes.get("jobtrace.pruned_spans", 0)) for span in spans)
    assert pruned == 311 - BUDGET
    # Batches rank above the rows below them, so all ten are kept.
    assert sum(span.name == "batch" for span in spans) == 10


def test_long_job_flushed_early(
    redis_url: str, queue: Queue, receiver: OtlpReceiver, connection: Redis
) -> None:
    """The finished spans of a running job reach the backend before it ends."""
    key = f"jobtrace-release-{uuid.uuid4().hex}"
    job = queue.enqueue(budget_jobs.spans_until_released, 20, key)
    env = {"JOBTRACE_PARTIAL_FLUSH_SECONDS": "0.5"}

    with rq_worker(receiver, redis_url, queue.name, "--burst", env=env) as worker:
        try:
            early = receiver.wait_for(
                lambda spans: sum(span.name == "early" for span in spans) >= 20,
                timeout=30,
            )
            running = [span for span in early if span.name.startswith("process ")]
        finally:
            connection.set(key, "1", ex=120)
        assert wait_for_exit(worker) == 0
    (root,) = process_spans_for(receiver, {job.id})[job.id]

    assert running == []
    spans = trace_of(receiver, root)
    assert sorted({span.name for span in spans}) == sorted({"early", "late", root.name})
    assert len(spans) == 22
    assert all(span.parent_span_id == root.span_id for span in spans if span != root)
    assert root.attributes["jobtrace.trace.spans_created"] == 22
    assert root.attributes["jobtrace.trace.spans_dropped"] == 0
