"""Job metrics from real RQ workers, checked over OTLP/HTTP."""

from __future__ import annotations

import pytest
from rq import Queue

from jobtrace._receiver import METRICS_PATH, OtlpReceiver

from ..tracing import (
    UNITS_AND_BOUNDS,
    duplicate_series,
    error_types,
    job_counts,
    producer_metrics,
    rewound_series,
    sent_counts,
    unexpected_attributes,
    units_and_bounds,
)
from . import jobs
from .conftest import RQ_MAJOR
from .workers import rq_worker, wait_for_exit

pytestmark = pytest.mark.integration

METRICS_ENV = {"OTEL_METRIC_EXPORT_INTERVAL": "500"}


@pytest.mark.parametrize("worker_class", ["forking", "simple", "spawn"])
def test_counts_match_jobs(
    rq_url: str,
    queue: Queue,
    receiver: OtlpReceiver,
    producer: None,
    worker_class: str,
) -> None:
    """Received run counts equal the jobs run, per outcome, in one series each.

    The producer in this process exports its enqueue counts too.
    """
    if worker_class == "spawn" and RQ_MAJOR < 3:
        pytest.skip("SpawnWorker horses are traced since RQ 3.0")
    with producer_metrics(receiver):
        for i in range(6):
            queue.enqueue(jobs.add, i, i)
        for _ in range(2):
            queue.enqueue(jobs.fail)
    with rq_worker(
        receiver,
        rq_url,
        queue.name,
        "--burst",
        worker_class=worker_class,
        env=METRICS_ENV,
    ) as worker:
        assert wait_for_exit(worker) == 0

    counts = job_counts(receiver)
    consumed = job_counts(receiver, "messaging.client.consumed.messages")
    assert counts[("tests.rq.jobs.add", "success")] == 6
    assert counts[("tests.rq.jobs.fail", "failure")] == 2
    assert consumed == counts
    assert sum(job_counts(receiver, "jobtrace.job.queue_time").values()) == 8
    assert sent_counts(receiver) == {
        ("tests.rq.jobs.add", "web"): 6,
        ("tests.rq.jobs.fail", "web"): 2,
    }
    assert error_types(receiver) == {
        ("tests.rq.jobs.add", "success"): {None},
        ("tests.rq.jobs.fail", "failure"): {"ValueError"},
    }
    assert unexpected_attributes(receiver) == set()
    assert units_and_bounds(receiver) == UNITS_AND_BOUNDS
    assert duplicate_series(receiver) == []
    assert rewound_series(receiver) == []
    # Every run series comes from the worker process, not from a work horse.
    instances = {
        point.resource.get("service.instance.id")
        for point in receiver.latest_points().values()
        if point.resource.get("jobtrace.component") == "worker"
    }
    assert len(instances) == 1


def test_exporter_none_sends_no_metrics(
    rq_url: str, queue: Queue, receiver: OtlpReceiver
) -> None:
    """OTEL_METRICS_EXPORTER=none sends no metrics, and traces still arrive."""
    queue.enqueue(jobs.add, 1, 2)
    env = {**METRICS_ENV, "OTEL_METRICS_EXPORTER": "none"}
    with rq_worker(receiver, rq_url, queue.name, "--burst", env=env) as worker:
        assert wait_for_exit(worker) == 0

    receiver.wait_for_spans(1, timeout=30, name_prefix="process ")
    assert receiver.request_count(METRICS_PATH) == 0
