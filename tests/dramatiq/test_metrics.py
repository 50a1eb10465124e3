"""Job metrics from real ``dramatiq`` worker processes, checked over OTLP/HTTP."""

from __future__ import annotations

import types

import pytest

from jobtrace._receiver import OtlpReceiver

from ..tracing import job_counts
from .workers import Target, dramatiq_worker, process_spans_for

pytestmark = pytest.mark.integration

METRICS_ENV = {"OTEL_METRIC_EXPORT_INTERVAL": "500"}


@pytest.mark.parametrize("target", ["redis"], indirect=True)
def test_counts_match_runs(
    receiver: OtlpReceiver, target: Target, producer: types.SimpleNamespace
) -> None:
    """Run counts summed over the worker processes equal the runs, per outcome."""
    actors = producer.actors
    ids = {actors.add.send(i, i).message_id for i in range(6)}
    ids |= {actors.fail.send().message_id for _ in range(2)}
    exhausted = actors.always_fail.send().message_id
    with dramatiq_worker(receiver, target, env=METRICS_ENV):
        process_spans_for(receiver, ids)
        process_spans_for(receiver, {exhausted}, count=3)

    counts = job_counts(receiver)
    consumed = job_counts(receiver, "messaging.client.consumed.messages")
    assert counts[("add", "success")] == 6
    assert counts[("fail", "failure")] == 2
    assert counts[("always_fail", "retry")] == 2
    assert counts[("always_fail", "failure")] == 1
    assert consumed == counts
    assert sum(job_counts(receiver, "jobtrace.job.queue_time").values()) == 11
    # Each worker process exports its own series under its own instance id,
    # and only worker processes run messages.
    instances = {
        point.resource.get("service.instance.id")
        for point in receiver.latest_points().values()
        if point.name == "messaging.process.duration"
    }
    components = {
        point.resource.get("jobtrace.component")
        for point in receiver.latest_points().values()
        if point.name == "messaging.process.duration"
    }
    assert 1 <= len(instances) <= 2
    assert components == {"worker"}
