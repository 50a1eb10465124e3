"""Real ``dramatiq`` worker processes on Redis and RabbitMQ, checked over OTLP.

Every test starts its own OTLP/HTTP receiver on 127.0.0.1, sends messages
from this process, and runs ``dramatiq`` with 2 worker processes of 4
threads each, which export to the receiver.
"""

from __future__ import annotations

import itertools
import signal
import sys
import time
import types
from pathlib import Path

import pytest
from dramatiq import group, pipeline
from opentelemetry import baggage, context

import jobtrace
from jobtrace._receiver import OtlpReceiver, ReceivedSpan
from tests import tracing

from .workers import (
    SERVICE_NAME,
    WAIT,
    Target,
    build_broker,
    by_name,
    dramatiq_worker,
    links_of,
    process_spans_for,
    stop,
    wait_for_started,
)

pytestmark = pytest.mark.integration

redis_only = pytest.mark.parametrize("target", ["redis"], indirect=True)


def outcomes(spans: list[ReceivedSpan]) -> list[str]:
    """Return the outcomes of process spans in attempt order."""
    ordered = sorted(spans, key=lambda span: span.attributes["jobtrace.job.attempt"])
    return [str(span.attributes["jobtrace.job.outcome"]) for span in ordered]


def test_every_span_arrives(
    receiver: OtlpReceiver, target: Target, producer: types.SimpleNamespace
) -> None:
    """Each of 200 messages gets its process span, linked to its send span."""
    count = 200
    with dramatiq_worker(receiver, target):
        # One process prefetches at most 8 messages (twice its 4 threads)
        # and runs 4 at a time, so 16 messages of 1 s each cannot all start
        # in one process before the other fetches some.
        warm_up = [producer.actors.wait.send(1.0) for _ in range(16)]
        started = wait_for_started(target, len(warm_up))
        with jobtrace.tracer().start_as_current_span("POST /import"):
            sent = [producer.actors.add.send(i, i) for i in range(count)]
        runs = process_spans_for(receiver, {m.message_id for m in sent})

    sends = {
        span.attributes["messaging.message.id"]: span
        for span in by_name(receiver.spans(), "send add")
    }
    assert len(runs) == count
    assert all(len(spans) == 1 for spans in runs.values())
    runners = {
        (s[0].attributes["test.pid"], s[0].attributes["test.thread"])
        for s in runs.values()
    }
    assert len({pid for pid, _ in runners} | set(started.values())) == 2
    assert len(runners) > 2
    for message in sent:
        (run,) = runs[message.message_id]
        send = sends[message.message_id]
        assert run.kind == "CONSUMER"
        assert run.attributes["jobtrace.job.outcome"] == "success"
        assert run.attributes["messaging.destination.name"] == target.queue
        assert run.resource["jobtrace.component"] == "worker"
        assert run.resource["service.name"] == SERVICE_NAME
        assert send.resource["jobtrace.component"] == "web"
        assert links_of(run, "send") == [(send.trace_id, send.span_id)]


def test_outcomes_and_attempts(
    receiver: OtlpReceiver, target: Target, producer: types.SimpleNamespace
) -> None:
    """Failures, retries, time limits, skips and delays get their outcomes."""
    actors = producer.actors
    failing = actors.fail.send()
    exhausted = actors.always_fail.send()
    flaky = actors.fail_twice.send()
    requested = actors.request_retry.send()
    declared = actors.expected.send()
    slow = actors.slow.send()
    old = actors.add.send_with_options(args=(1, 1), max_age=1)
    delayed = actors.add.send_with_options(args=(2, 2), delay=500)
    with dramatiq_worker(receiver, target):
        runs = process_spans_for(
            receiver, {failing.message_id, declared.message_id, slow.message_id}
        )
        runs.update(process_spans_for(receiver, {old.message_id, delayed.message_id}))
        runs.update(
            process_spans_for(
                receiver, {exhausted.message_id, flaky.message_id}, count=3
            )
        )
        runs.update(process_spans_for(receiver, {requested.message_id}, count=2))

    (failed,) = runs[failing.message_id]
    assert failed.attributes["jobtrace.job.outcome"] == "failure"
    assert failed.status_code == "ERROR"
    assert failed.attributes["error.type"] == "ValueError"
    (expected,) = runs[declared.message_id]
    assert expected.attributes["jobtrace.job.outcome"] == "failure"
    assert expected.status_code == "UNSET"
    (timed_out,) = runs[slow.message_id]
    assert timed_out.attributes["jobtrace.job.outcome"] == "timeout"
    assert timed_out.status_code == "ERROR"
    (skipped,) = runs[old.message_id]
    assert skipped.attributes["jobtrace.job.outcome"] == "skipped"
    (late,) = runs[delayed.message_id]

    assert outcomes(runs[exhausted.message_id]) == ["retry", "retry", "failure"]
    assert outcomes(runs[flaky.message_id]) == ["retry", "retry", "success"]
    # The Retries middleware retries a dramatiq.Retry that the actor raised
    # like any other exception, and a retried run has no ERROR status.
    retried = sorted(
        runs[requested.message_id],
        key=lambda span: span.attributes["jobtrace.job.attempt"],
    )
    assert outcomes(retried) == ["retry", "success"]
    assert [s.attributes["jobtrace.job.attempt"] for s in retried] == [1, 2]
    assert retried[0].status_code == "UNSET"
    attempts = sorted(
        runs[exhausted.message_id],
        key=lambda span: span.attributes["jobtrace.job.attempt"],
    )
    assert [s.attributes["jobtrace.job.attempt"] for s in attempts] == [1, 2, 3]
    for previous, current in itertools.pairwise(attempts):
        assert links_of(current, "previous_attempt") == [
            (previous.trace_id, previous.span_id)
        ]
    # The move from the delay queue adds no send span, and the queue time
    # counts from the end of the 0.5 s delay.
    (late_send,) = [
        span
        for span in by_name(receiver.spans(), "send add")
        if span.attributes["messaging.message.id"] == delayed.message_id
    ]
    since_send = (late.start_ns - late_send.start_ns) / 1e9
    queue_time = late.attributes["jobtrace.job.queue_time"]
    assert isinstance(queue_time, float)
    assert since_send - 0.5 - 0.1 < queue_time < since_send - 0.5 + 0.1


def test_no_context_leaks(
    receiver: OtlpReceiver, target: Target, producer: types.SimpleNamespace
) -> None:
    """Messages without context run as new roots on threads that ran traced ones."""
    # A client without jobtrace: a broker with no middleware at all.
    plain = build_broker(target.broker_url, target.namespace, middleware=[])
    traced_ids, bare_ids = set(), set()
    token = context.attach(baggage.set_baggage("tenant", "acme"))
    try:
        for _ in range(40):
            traced_ids.add(producer.actors.record.send().message_id)
            bare = producer.actors.record.message()
            plain.enqueue(bare)
            bare_ids.add(bare.message_id)
    finally:
        context.detach(token)
        plain.close()
    with dramatiq_worker(receiver, target):
        runs = process_spans_for(receiver, traced_ids | bare_ids)

    insides = {
        span.parent_span_id: span for span in by_name(receiver.spans(), "inside")
    }
    for message_id, (run,) in runs.items():
        assert run.parent_span_id is None
        assert insides[run.span_id].trace_id == run.trace_id
        if message_id in bare_ids:
            assert run.links == ()
            assert run.attributes["test.baggage"] == ""
        else:
            assert len(links_of(run, "send")) == 1
            assert run.attributes["test.baggage"] == "tenant=acme"
    assert len({run.trace_id for (run,) in runs.values()}) == len(runs)

    # At least one message without context ran right after a traced one on
    # the same thread, so the test covered the case.
    by_thread = sorted(
        (s.attributes["test.pid"], s.attributes["test.thread"], s.start_ns, m)
        for m, (s,) in runs.items()
    )
    followers = [
        current[3]
        for previous, current in itertools.pairwise(by_thread)
        if previous[:2] == current[:2]
        and previous[3] in traced_ids
        and current[3] in bare_ids
    ]
    assert followers


def test_pipeline_and_group(
    receiver: OtlpReceiver, target: Target, producer: types.SimpleNamespace
) -> None:
    """Pipelines and group callbacks are sent from inside the run before them."""
    record = producer.actors.record
    steps = pipeline(
        [record.message_with_options(pipe_ignore=True) for _ in range(3)],
        broker=producer.broker,
    )
    members = group([record.message() for _ in range(3)], broker=producer.broker)
    members.add_completion_callback(record.message())
    with jobtrace.tracer().start_as_current_span("POST /batch"):
        steps.run()
        members.run()
    with dramatiq_worker(receiver, target):
        spans = receiver.wait_for(
            lambda found: len(by_name(found, "process record")) >= 7, timeout=WAIT
        )

    sends = {span.span_id: span for span in by_name(spans, "send record")}
    runs = by_name(spans, "process record")
    (request,) = by_name(spans, "POST /batch")
    assert len(sends) == 7
    assert len(runs) == 7
    sent_by_request = [s for s in sends.values() if s.parent_span_id == request.span_id]
    # The first pipeline step and the three group members.
    assert len(sent_by_request) == 4
    run_ids = {run.span_id for run in runs}
    sent_by_runs = [s for s in sends.values() if s.parent_span_id in run_ids]
    # The second and third pipeline steps and the group's callback.
    assert len(sent_by_runs) == 3
    for run in runs:
        ((_, send_id),) = links_of(run, "send")
        assert send_id in sends


def test_graceful_shutdown_loses_nothing(
    receiver: OtlpReceiver, target: Target, producer: types.SimpleNamespace
) -> None:
    """Messages in flight at SIGTERM finish, and every message gets one span."""
    sent = [producer.actors.wait.send(1.5) for _ in range(16)]
    ids = {message.message_id for message in sent}
    with dramatiq_worker(receiver, target) as worker:
        running = wait_for_started(target, 8)
        assert stop(worker) == 0
    finished = process_spans_for(receiver, set(running), timeout=1)
    with dramatiq_worker(receiver, target):
        runs = process_spans_for(receiver, ids)

    assert len(running) == 8
    assert all(len(spans) == 1 for spans in finished.values())
    assert all(len(spans) == 1 for spans in runs.values())
    assert {outcomes(spans)[0] for spans in runs.values()} == {"success"}


@redis_only
def test_sighup_reload_flushes(
    receiver: OtlpReceiver, target: Target, producer: types.SimpleNamespace
) -> None:
    """SIGHUP reloads the workers, and the runs in flight are exported."""
    in_flight = [producer.actors.wait.send(1.5) for _ in range(8)]
    with dramatiq_worker(receiver, target) as worker:
        wait_for_started(target, 8)
        worker.send_signal(signal.SIGHUP)
        finished = process_spans_for(receiver, {m.message_id for m in in_flight})
        after = producer.actors.add.send(1, 2)
        (late,) = process_spans_for(receiver, {after.message_id})[after.message_id]
        assert worker.poll() is None

    assert {outcomes(spans)[0] for spans in finished.values()} == {"success"}
    assert late.attributes["jobtrace.job.outcome"] == "success"
    old_pids = {spans[0].attributes["test.pid"] for spans in finished.values()}
    assert late.attributes["test.pid"] not in old_pids


@redis_only
def test_shutdown_timeout_interrupts(
    receiver: OtlpReceiver, target: Target, producer: types.SimpleNamespace
) -> None:
    """A run still going when the shutdown timeout ends is interrupted."""
    message = producer.actors.wait.send(30)
    options = ("--worker-shutdown-timeout", "500")
    with dramatiq_worker(receiver, target, *options) as worker:
        wait_for_started(target, 1)
        started = time.monotonic()
        assert stop(worker) == 0
        stopped_in = time.monotonic() - started

    (run,) = process_spans_for(receiver, {message.message_id}, timeout=1)[
        message.message_id
    ]
    assert run.attributes["jobtrace.job.outcome"] == "interrupted"
    assert run.status_code == "ERROR"
    assert stopped_in < 10


@redis_only
def test_opentelemetry_instrument_loads_plugin(
    receiver: OtlpReceiver, target: Target, producer: types.SimpleNamespace
) -> None:
    """opentelemetry-instrument without the distro traces an uninstrumented worker."""
    message = producer.actors.add.send(1, 1)
    launcher = (str(Path(sys.executable).parent / "opentelemetry-instrument"),)
    env = {"TEST_INSTRUMENT": "0", "OTEL_TRACES_EXPORTER": "otlp"}
    env.update(tracing.WITHOUT_DISTRO)
    with dramatiq_worker(receiver, target, env=env, launcher=launcher):
        (run,) = process_spans_for(receiver, {message.message_id})[message.message_id]

    assert run.attributes["jobtrace.job.outcome"] == "success"
    assert run.resource["jobtrace.component"] == "worker"
