"""Job metrics from real Celery workers, checked over OTLP/HTTP."""

from __future__ import annotations

import pytest
from celery.exceptions import TimeLimitExceeded

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
from .workers import celery_worker, producer

pytestmark = pytest.mark.integration

WAIT = 60
METRICS_ENV = {"OTEL_METRIC_EXPORT_INTERVAL": "500"}


@pytest.mark.parametrize(
    "options",
    [
        ("--pool", "prefork", "--concurrency", "2", "--max-tasks-per-child", "2"),
        ("--pool", "solo"),
    ],
    ids=["prefork-recycled", "solo"],
)
def test_counts_match_jobs(
    redis_url: str,
    receiver: OtlpReceiver,
    instrumented_producer: None,
    options: tuple[str, ...],
) -> None:
    """Received run counts equal the jobs run, per outcome, in one series each.

    The producer in this process exports its enqueue counts too.
    """
    with celery_worker(receiver, redis_url, *options, env=METRICS_ENV) as (_, queue):
        app = producer(redis_url, queue)
        with producer_metrics(receiver):
            adds = [app.send_task("it.add", args=(i, i)) for i in range(7)]
            fails = [app.send_task("it.fail") for _ in range(3)]
        assert [r.get(timeout=WAIT) for r in adds] == [2 * i for i in range(7)]
        for result in fails:
            with pytest.raises(ValueError):
                result.get(timeout=WAIT)

    counts = job_counts(receiver)
    consumed = job_counts(receiver, "messaging.client.consumed.messages")
    assert counts[("it.add", "success")] == 7
    assert counts[("it.fail", "failure")] == 3
    assert consumed == counts
    assert sum(job_counts(receiver, "jobtrace.job.queue_time").values()) == 10
    assert sent_counts(receiver) == {("it.add", "web"): 7, ("it.fail", "web"): 3}
    assert error_types(receiver) == {
        ("it.add", "success"): {None},
        ("it.fail", "failure"): {"ValueError"},
    }
    assert unexpected_attributes(receiver) == set()
    assert units_and_bounds(receiver) == UNITS_AND_BOUNDS
    assert duplicate_series(receiver) == []
    assert rewound_series(receiver) == []


def test_exporter_none_sends_no_metrics(redis_url: str, receiver: OtlpReceiver) -> None:
    """OTEL_METRICS_EXPORTER=none sends no metrics, and traces still arrive."""
    options = ("--pool", "prefork", "--concurrency", "1")
    env = {**METRICS_ENV, "OTEL_METRICS_EXPORTER": "none"}
    with celery_worker(receiver, redis_url, *options, env=env) as (_, queue):
        result = producer(redis_url, queue).send_task("it.add", args=(1, 2))
        assert result.get(timeout=WAIT) == 3

    receiver.wait_for_spans(1, timeout=WAIT, name_prefix="process ")
    assert receiver.request_count(METRICS_PATH) == 0


def test_hard_time_limit_counted_once(redis_url: str, receiver: OtlpReceiver) -> None:
    """A run stopped by the hard time limit is one run in the metrics.

    The main process reports the run when the limit passes. The child may
    still end the run itself before it is killed, and that count is dropped.
    """
    options = ("--pool", "prefork", "--concurrency", "1")
    with celery_worker(receiver, redis_url, *options, env=METRICS_ENV) as (_, queue):
        app = producer(redis_url, queue)
        hung = [app.send_task("it.hang") for _ in range(2)]
        for result in hung:
            with pytest.raises(TimeLimitExceeded):
                result.get(timeout=WAIT)
        assert app.send_task("it.add", args=(1, 1)).get(timeout=WAIT) == 2

    counts = job_counts(receiver)
    assert sum(n for (name, _), n in counts.items() if name == "it.hang") == 2
    assert counts[("it.add", "success")] == 1
