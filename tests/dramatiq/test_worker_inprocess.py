"""Dramatiq messages run by an in-process worker on a stub broker."""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

import dramatiq
from dramatiq import Message, group, pipeline
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import AsyncIO, GroupCallbacks, ShutdownNotifications
from dramatiq.rate_limits.backends import StubBackend
from opentelemetry import baggage, context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, StatusCode

import jobtrace
import jobtrace_dramatiq
from jobtrace import _provider
from jobtrace_dramatiq._propagation import ETA_FIELD, OPTIONS_KEY

from .conftest import Seen, run_all, running_worker


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


def wait_until(condition: Any, timeout: float = 5) -> None:
    """Poll ``condition`` until it is true, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def by_attempt(spans: list[Any]) -> list[Any]:
    """Return process spans sorted by their attempt number."""
    return sorted(spans, key=lambda span: span.attributes["jobtrace.job.attempt"])


def test_enqueue_opens_send_span(instrumented: Any, actors: Any) -> None:
    """An enqueue gives one PRODUCER span with the messaging attributes."""
    message = actors.add.send(1, 2)

    (send,) = named(instrumented, "send add")
    assert send.kind is SpanKind.PRODUCER
    assert send.attributes["messaging.system"] == "dramatiq"
    assert send.attributes["messaging.destination.name"] == "default"
    assert send.attributes["messaging.message.id"] == message.message_id
    assert send.attributes["messaging.operation.type"] == "send"


def test_context_travels_in_options(
    instrumented: Any, actors: Any, broker: StubBroker
) -> None:
    """The send span's traceparent is encoded with the message's options."""
    actors.add.send(1, 2)

    encoded = broker.queues["default"].queue[0]
    stored = Message.decode(encoded).options[OPTIONS_KEY]
    (send,) = named(instrumented, "send add")
    assert f"{send.context.span_id:016x}" in stored["traceparent"]
    assert "jobtrace_sent_at" in stored


def test_user_options_unchanged(
    instrumented: Any, actors: Any, broker: StubBroker
) -> None:
    """Options set by the sender reach the worker unchanged, beside one key."""
    options = {"max_retries": 3, "time_limit": 5000, "tenant": "acme"}
    actors.add.send_with_options(args=(1, 2), **options)
    actors.add.send_with_options(args=(1, 2), delay=10, **options)

    delivered = [Message.decode(data) for data in broker.queues["default"].queue]
    delayed = [Message.decode(data) for data in broker.queues["default.DQ"].queue]
    (plain,) = delivered
    (late,) = delayed
    assert {k: v for k, v in plain.options.items() if k != OPTIONS_KEY} == options
    assert late.options["max_retries"] == 3
    assert late.options["tenant"] == "acme"
    assert set(late.options) == {*options, "eta", OPTIONS_KEY}


def test_success_process_span(instrumented: Any, actors: Any, broker: Any) -> None:
    """A run gives a CONSUMER span linked to its send span, outcome success."""
    actors.add.send(1, 2)
    run_all(broker)

    (send,) = named(instrumented, "send add")
    (run,) = named(instrumented, "process add")
    assert run.kind is SpanKind.CONSUMER
    assert run.attributes["jobtrace.job.outcome"] == "success"
    assert run.attributes["jobtrace.job.attempt"] == 1
    assert run.attributes["messaging.destination.name"] == "default"
    assert run.attributes["jobtrace.job.queue_time"] >= 0
    assert run.status.status_code is StatusCode.UNSET
    assert run.parent is None
    assert link_targets(run, "send") == [send.context.span_id]
    assert jobtrace.component() == "worker"


def test_child_mode_per_message(instrumented: Any, actors: Any, broker: Any) -> None:
    """propagation_mode('child') makes the process span a child of the send."""
    with jobtrace.propagation_mode("child"):
        actors.add.send(1, 2)
    run_all(broker)

    (send,) = named(instrumented, "send add")
    (run,) = named(instrumented, "process add")
    assert run.parent.span_id == send.context.span_id
    assert run.context.trace_id == send.context.trace_id


def test_send_parent_is_current_span(instrumented: Any, actors: Any) -> None:
    """A send inside a request span is that span's child."""
    with jobtrace.tracer().start_as_current_span("GET /checkout") as request:
        actors.add.send(1, 2)

    (send,) = named(instrumented, "send add")
    assert send.parent.span_id == request.get_span_context().span_id


def test_failure_sets_error(instrumented: Any, actors: Any, broker: Any) -> None:
    """A message that raises with no retries left fails with ERROR."""
    actors.fail.send()
    run_all(broker)

    (run,) = named(instrumented, "process fail")
    assert run.attributes["jobtrace.job.outcome"] == "failure"
    assert run.status.status_code is StatusCode.ERROR
    assert run.attributes["error.type"] == "ValueError"
    assert [event.name for event in run.events] == ["exception"]


def test_retries_are_linked(instrumented: Any, actors: Any, broker: Any) -> None:
    """Each attempt is a span, linked to the one before, until retries run out."""
    actors.always_fail.send()
    run_all(broker)

    runs = by_attempt(named(instrumented, "process always_fail"))
    sends = named(instrumented, "send always_fail")
    outcomes = [run.attributes["jobtrace.job.outcome"] for run in runs]
    assert outcomes == ["retry", "retry", "failure"]
    assert [run.attributes["jobtrace.job.attempt"] for run in runs] == [1, 2, 3]
    assert [run.status.status_code for run in runs] == [
        StatusCode.UNSET,
        StatusCode.UNSET,
        StatusCode.ERROR,
    ]
    assert all(run.attributes["error.type"] == "KeyError" for run in runs[2:])
    assert len(sends) == 3
    for previous, current in itertools.pairwise(runs):
        assert link_targets(current, "previous_attempt") == [previous.context.span_id]
    # The Retries middleware sends each retry from inside the failed attempt.
    assert sends[1].parent.span_id == runs[0].context.span_id
    assert (
        sends[1].attributes["messaging.message.id"]
        == runs[0].attributes["messaging.message.id"]
    )


def test_retry_then_success(
    instrumented: Any, actors: Any, broker: Any, seen: Seen
) -> None:
    """A message that fails twice, then succeeds, ends with success."""
    actors.fail_twice.send()
    run_all(broker)

    runs = by_attempt(named(instrumented, "process fail_twice"))
    outcomes = [run.attributes["jobtrace.job.outcome"] for run in runs]
    assert outcomes == ["retry", "retry", "success"]
    # The attempt follows the Retries middleware's own count.
    assert [entry["retries"] for entry in seen.labelled("fail_twice")] == [0, 1, 2]


def test_raised_retry_is_retry(instrumented: Any, actors: Any, broker: Any) -> None:
    """An actor that raises dramatiq.Retry gets outcome retry, then success."""
    actors.ask_retry.send()
    run_all(broker)

    runs = by_attempt(named(instrumented, "process ask_retry"))
    outcomes = [run.attributes["jobtrace.job.outcome"] for run in runs]
    assert outcomes == ["retry", "success"]
    assert runs[0].status.status_code is StatusCode.UNSET


def test_declared_exception_not_error(
    instrumented: Any, actors: Any, broker: Any
) -> None:
    """An exception listed in throws is recorded but does not set ERROR."""
    actors.expected.send()
    run_all(broker)

    (run,) = named(instrumented, "process expected")
    assert run.attributes["jobtrace.job.outcome"] == "failure"
    assert run.status.status_code is StatusCode.UNSET
    assert "error.type" not in run.attributes
    assert [event.name for event in run.events] == ["exception"]


def test_time_limit_is_timeout(instrumented: Any, actors: Any, broker: Any) -> None:
    """An actor stopped by its time limit gets outcome timeout."""
    actors.slow.send()
    run_all(broker)

    (run,) = named(instrumented, "process slow")
    assert run.attributes["jobtrace.job.outcome"] == "timeout"
    assert run.status.status_code is StatusCode.ERROR
    error_type = run.attributes["error.type"]
    assert error_type == "dramatiq.middleware.time_limit.TimeLimitExceeded"


def test_time_limit_wins_over_retry(
    instrumented: Any, actors: Any, broker: Any
) -> None:
    """A timed-out run that Dramatiq retries is still a timeout."""
    actors.slow.send_with_options(max_retries=1, min_backoff=10, max_backoff=20)
    run_all(broker)

    runs = by_attempt(named(instrumented, "process slow"))
    outcomes = [run.attributes["jobtrace.job.outcome"] for run in runs]
    assert outcomes == ["timeout", "timeout"]
    assert link_targets(runs[1], "previous_attempt") == [runs[0].context.span_id]


def test_age_limit_is_skipped(instrumented: Any, actors: Any, broker: Any) -> None:
    """A message dropped by the AgeLimit middleware gets outcome skipped."""
    actors.add.send_with_options(args=(1, 2), max_age=1)
    time.sleep(0.01)
    run_all(broker)

    (run,) = named(instrumented, "process add")
    assert run.attributes["jobtrace.job.outcome"] == "skipped"
    assert run.status.status_code is StatusCode.UNSET


class SkipAll(dramatiq.Middleware):
    """A middleware that skips every message before anything runs."""

    def before_process_message(self, broker: Any, message: Any) -> None:
        raise dramatiq.middleware.SkipMessage("skipped by the test")


def test_skip_before_tracing_reported(
    instrumented: Any, actors: Any, broker: StubBroker
) -> None:
    """A skip by a middleware listed before this one still gives a span."""
    broker.middleware.insert(0, SkipAll())
    actors.add.send(1, 2)
    run_all(broker)

    (send,) = named(instrumented, "send add")
    (run,) = named(instrumented, "process add")
    assert run.attributes["jobtrace.job.outcome"] == "skipped"
    assert link_targets(run, "send") == [send.context.span_id]


def test_delayed_queue_time_from_eta(
    instrumented: Any, actors: Any, broker: StubBroker
) -> None:
    """A delayed message has one send span, and queue time counts from its eta."""
    sent = actors.add.send_with_options(args=(1, 2), delay=500)
    time.sleep(0.8)
    run_all(broker)

    sends = named(instrumented, "send add")
    (run,) = named(instrumented, "process add")
    assert len(sends) == 1
    assert sends[0].attributes["messaging.destination.name"] == "default"
    assert link_targets(run, "send") == [sends[0].context.span_id]
    assert ETA_FIELD in sent.options[OPTIONS_KEY]
    # Counted from the send, the queue time would be 0.8 s or more.
    assert run.attributes["jobtrace.job.queue_time"] < 0.6


def test_pipeline_carries_context(
    instrumented: Any, actors: Any, broker: StubBroker
) -> None:
    """Each message of a pipeline is sent from inside the run before it."""
    pipe = pipeline(
        [
            actors.record.message("first"),
            actors.record.message_with_options(args=("second",), pipe_ignore=True),
            actors.record.message_with_options(args=("third",), pipe_ignore=True),
        ]
    )
    with jobtrace.tracer().start_as_current_span("POST /orders") as request:
        pipe.run()
    run_all(broker)

    sends = named(instrumented, "send record")
    runs = named(instrumented, "process record")
    assert len(sends) == 3
    assert len(runs) == 3
    assert sends[0].parent.span_id == request.get_span_context().span_id
    run_of_send = {link_targets(run, "send")[0]: run for run in runs}
    first = run_of_send[sends[0].context.span_id]
    second = run_of_send[sends[1].context.span_id]
    assert sends[1].parent.span_id == first.context.span_id
    assert sends[2].parent.span_id == second.context.span_id


def test_group_callback_carries_context(
    instrumented: Any, actors: Any, broker: StubBroker
) -> None:
    """A group's members link to their sends, and a member sends its callback."""
    broker.add_middleware(GroupCallbacks(StubBackend()))
    members = group([actors.record.message(f"member {i}") for i in range(3)])
    members.add_completion_callback(actors.record.message("callback"))
    with jobtrace.tracer().start_as_current_span("POST /batch") as request:
        members.run()
    run_all(broker)

    sends = named(instrumented, "send record")
    runs = named(instrumented, "process record")
    assert len(sends) == 4
    assert len(runs) == 4
    request_id = request.get_span_context().span_id
    member_sends = [send for send in sends if send.parent.span_id == request_id]
    (callback_send,) = [send for send in sends if send not in member_sends]
    member_runs = {run.context.span_id for run in runs[:3]}
    assert len(member_sends) == 3
    assert callback_send.parent.span_id in member_runs
    for run in runs:
        assert len(link_targets(run, "send")) == 1


def test_actor_send_is_child(instrumented: Any, actors: Any, broker: Any) -> None:
    """A send from inside an actor is a child of that actor's process span."""
    actors.enqueue_add.send()
    run_all(broker)

    (outer,) = named(instrumented, "process enqueue_add")
    (inner,) = named(instrumented, "send add")
    assert inner.parent.span_id == outer.context.span_id


def test_callbacks_inside_process_span(
    instrumented: Any, actors: Any, broker: Any
) -> None:
    """An on_success callback is sent from inside the process span."""
    actors.add.send_with_options(args=(1, 2), on_success=actors.record)
    run_all(broker)

    (run,) = named(instrumented, "process add")
    (callback,) = named(instrumented, "send record")
    assert callback.parent.span_id == run.context.span_id


def test_actor_spans_are_children(instrumented: Any, actors: Any, broker: Any) -> None:
    """A span that an actor opens is a child of the actor's process span."""
    actors.record.send("one")
    run_all(broker)

    (run,) = named(instrumented, "process record")
    (inside,) = named(instrumented, "inside")
    assert inside.parent.span_id == run.context.span_id


def test_async_actor_inside_process_span(
    instrumented: Any, broker: StubBroker, seen: Seen
) -> None:
    """An async actor runs in its message's context on the event loop thread."""
    broker.add_middleware(AsyncIO())

    @dramatiq.actor(broker=broker, max_retries=0)
    async def fetch() -> None:
        seen.record("fetch")

    fetch.send()
    run_all(broker)

    (run,) = named(instrumented, "process fetch")
    (entry,) = seen.labelled("fetch")
    assert entry["span_id"] == run.context.span_id
    assert entry["thread"] != threading.get_ident()


def test_message_without_context_is_root(
    exporter: Any, actors: Any, broker: StubBroker
) -> None:
    """A message enqueued without jobtrace runs as a new root without links."""
    actors.add.send(1, 2)
    jobtrace_dramatiq.instrument(broker)
    try:
        run_all(broker)
    finally:
        jobtrace_dramatiq.uninstrument()

    (run,) = named(exporter, "process add")
    assert run.parent is None
    assert list(run.links) == []
    assert run.attributes["jobtrace.job.outcome"] == "success"
    assert "jobtrace.job.queue_time" not in run.attributes


def test_no_context_leak_on_thread(
    instrumented: Any, actors: Any, broker: StubBroker, seen: Seen
) -> None:
    """A message without context never runs in the previous message's trace."""
    with running_worker(broker, threads=1):
        for i in range(5):
            token = context.attach(baggage.set_baggage("tenant", "acme"))
            try:
                actors.record.send(f"traced {i}")
            finally:
                context.detach(token)
            broker.join("default")
            # A client without jobtrace puts the next message on the queue.
            bare = actors.record.message(f"bare {i}")
            broker.queues["default"].put(bare.encode())
            broker.join("default")

    runs = {
        span.context.span_id: span for span in named(instrumented, "process record")
    }
    labels = [entry["label"] for entry in seen.runs]
    assert labels == [f"{kind} {i}" for i in range(5) for kind in ("traced", "bare")]
    assert len({entry["thread"] for entry in seen.runs}) == 1
    for entry in seen.runs:
        run = runs[entry["span_id"]]
        assert run.parent is None
        if entry["label"].startswith("bare"):
            assert list(run.links) == []
            assert entry["baggage"] == {}
        else:
            assert len(run.links) == 1
            assert entry["baggage"] == {"tenant": "acme"}
    assert len({entry["trace_id"] for entry in seen.runs}) == 10


def test_unknown_actor_is_rejected(instrumented: Any, broker: StubBroker) -> None:
    """A message for an actor the worker does not know is rejected."""
    broker.declare_queue("default")
    broker.enqueue(Message("default", "missing", (), {}, {}))
    run_all(broker)

    (send,) = named(instrumented, "send missing")
    (run,) = named(instrumented, "process missing")
    assert run.attributes["jobtrace.job.outcome"] == "rejected"
    assert run.status.status_code is StatusCode.ERROR
    assert run.attributes["error.type"] == "dramatiq.errors.ActorNotFound"
    assert link_targets(run, "send") == [send.context.span_id]


def test_shutdown_timeout_interrupts(
    instrumented: Any, actors: Any, broker: StubBroker, seen: Seen
) -> None:
    """An actor still running when the worker stops waiting is interrupted."""
    actors.wait.send(3)
    with running_worker(broker, threads=1) as worker:
        wait_until(lambda: bool(seen.labelled("wait")))
        worker.stop(timeout=100)

    (run,) = named(instrumented, "process wait")
    assert run.attributes["jobtrace.job.outcome"] == "interrupted"
    assert run.status.status_code is StatusCode.ERROR
    assert run.attributes["error.type"] == "interrupted"


def test_shutdown_notification_interrupts(
    instrumented: Any, actors: Any, broker: StubBroker, seen: Seen
) -> None:
    """An actor that ShutdownNotifications interrupts gets outcome interrupted."""
    for middleware in broker.middleware:
        if isinstance(middleware, ShutdownNotifications):
            middleware.notify_shutdown = True
    actors.wait.send(3)
    with running_worker(broker, threads=1):
        wait_until(lambda: bool(seen.labelled("wait")))

    (run,) = named(instrumented, "process wait")
    assert run.attributes["jobtrace.job.outcome"] == "interrupted"
    error_type = run.attributes["error.type"]
    assert error_type == "dramatiq.middleware.shutdown.Shutdown"


def test_worker_flush_at_shutdown(
    exporter: Any, actors: Any, broker: StubBroker, seen: Seen
) -> None:
    """A run that ends while the worker stops is exported before stop() returns."""
    provider = TracerProvider()
    provider.add_span_processor(
        BatchSpanProcessor(exporter, schedule_delay_millis=60_000)
    )
    _provider._reset_for_tests()
    jobtrace.configure(tracer_provider=provider)
    jobtrace_dramatiq.instrument(broker)
    try:
        actors.wait.send(0.5)
        with running_worker(broker, threads=1):
            wait_until(lambda: bool(seen.labelled("wait")))
        (run,) = named(exporter, "process wait")
        assert run.attributes["jobtrace.job.outcome"] == "success"
    finally:
        jobtrace_dramatiq.uninstrument()
        provider.shutdown()
