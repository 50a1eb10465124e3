"""Job metrics from real ``dramatiq`` worker processes, checked over OTLP/HTTP."""

from __future__ import annotations

import types

import pytest

from jobtrace._receiver import METRICS_PATH, OtlpReceiver

from ..tracing import (
    UNITS_AND_BOUNDS,
    error_types,
    job_counts,
    producer_metrics,
    rewound_series,
    sent_counts,
    unexpected_attributes,
    units_and_bounds,
)
from .workers import Target, dramatiq_worker, process_spans_for

pytestmark = pytest.mark.integration

METRICS_ENV = {"OTEL_METRIC_EXPORT_INTERVAL": "500"}


@pytest.mark.parametrize("target", ["redis"], indirect=True)
def test_counts_match_runs(
    receiver: OtlpReceiver, target: Target, producer: types.SimpleNamespace
) -> None:
    """Run counts summed over the worker processes equal the runs, per outcome.

    The producer in this process exports its enqueue counts too.
    """
    actors = producer.actors
    with producer_metrics(receiver):
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
    sent_by_producer = {
        name: count
        for (name, component), count in sent_counts(receiver).items()
        if component == "web"
    }
    assert sent_by_producer == {"add": 6, "fail": 2, "always_fail": 1}
    assert error_types(receiver) == {
        ("add", "success"): {None},
        ("fail", "failure"): {"ValueError"},
        # A retry is not an error outcome, so it carries no error.type.
        ("always_fail", "retry"): {None},
        ("always_fail", "failure"): {"KeyError"},
    }
    assert unexpected_attributes(receiver) == set()
    assert units_and_bounds(receiver) == UNITS_AND_BOUNDS
    # Each series has one exporting process. Two processes that export one
    # series under the same identity would make its count go down.
    assert rewound_series(receiver) == []
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


@pytest.mark.parametrize("target", ["redis"], indirect=True)
def test_exporter_none_sends_no_metrics(
    receiver: OtlpReceiver, target: Target, producer: types.SimpleNamespace
) -> None:
    """OTEL_METRICS_EXPORTER=none sends no metrics, and traces still arrive."""
    message_id = producer.actors.add.send(1, 2).message_id
    env = {**METRICS_ENV, "OTEL_METRICS_EXPORTER": "none"}
    with dramatiq_worker(receiver, target, env=env):
        process_spans_for(receiver, {message_id})

    assert receiver.request_count(METRICS_PATH) == 0
