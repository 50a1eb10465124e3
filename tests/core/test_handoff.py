"""Spans handed from a forked child to its parent through a SpanPipe.

The tests fork real children. A child reports back through its exit code,
because its own spans and exporter live in its copy of the memory.
"""

from __future__ import annotations

import contextlib
import logging
import marshal
import os
import signal
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import Link, SpanKind, StatusCode, TraceState

import jobtrace
from jobtrace import _delivery, _handoff, _provider
from jobtrace._handoff import HandoffProcessor

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


class Pipeline:
    """A provider whose processor hands spans over, exporting to memory."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.processor = HandoffProcessor(SimpleSpanProcessor(self.exporter))
        self.provider = TracerProvider()
        self.provider.add_span_processor(self.processor)
        self.tracer = self.provider.get_tracer("tests")
        _handoff.activate(self.processor)

    def by_name(self) -> dict[str, ReadableSpan]:
        return {span.name: span for span in self.exporter.get_finished_spans()}


@pytest.fixture
def pipeline() -> Iterator[Pipeline]:
    built = Pipeline()
    yield built
    _handoff.activate(None)
    built.provider.shutdown()


def fork_child(pipe: jobtrace.SpanPipe, body: Callable[[], int]) -> int:
    """Fork a child that runs ``body`` with the pipe in use; return its pid."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            pipe.use_in_child()
            code = body()
        finally:
            os._exit(code)
    pipe.use_in_parent()
    return pid


def exit_code(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def open_pipe() -> jobtrace.SpanPipe:
    pipe = jobtrace.open_span_pipe()
    assert pipe is not None
    return pipe


def test_encode_decode_keeps_fields(pipeline: Pipeline) -> None:
    """A span rebuilt from its encoding equals the original field by field."""
    linked = trace.SpanContext(
        0xABC, 0xDEF, True, trace.TraceFlags(1), TraceState([("vendor", "x")])
    )
    with pipeline.tracer.start_as_current_span("parent"):
        span = pipeline.tracer.start_span(
            "work",
            kind=SpanKind.CONSUMER,
            attributes={"text": "a", "number": 2, "flags": (True, False)},
            links=[Link(linked, {"jobtrace.link.type": "send"})],
        )
        span.add_event("step", {"index": 1}, timestamp=123)
        span.set_status(trace.Status(StatusCode.ERROR, "broke"))
        span.end()
    (original,) = [
        s for s in pipeline.exporter.get_finished_spans() if s.name == "work"
    ]

    values = marshal.loads(marshal.dumps(_handoff.encode(original)))
    rebuilt = _handoff.decode(values, original.resource)

    assert rebuilt.name == original.name
    assert rebuilt.context == original.context
    assert rebuilt.parent == original.parent
    assert rebuilt.kind is SpanKind.CONSUMER
    assert dict(rebuilt.attributes or {}) == dict(original.attributes or {})
    assert rebuilt.start_time == original.start_time
    assert rebuilt.end_time == original.end_time
    assert rebuilt.status.status_code is StatusCode.ERROR
    assert rebuilt.status.description == "broke"
    assert [
        (e.name, dict(e.attributes or {}), e.timestamp) for e in rebuilt.events
    ] == [("step", {"index": 1}, 123)]
    (link,) = rebuilt.links
    assert link.context.trace_state == TraceState([("vendor", "x")])
    assert dict(link.attributes or {}) == {"jobtrace.link.type": "send"}
    assert rebuilt.instrumentation_scope == original.instrumentation_scope


def test_child_spans_reach_parent(pipeline: Pipeline) -> None:
    """Spans a child ends arrive in the parent's processor with their ids."""
    pipe = open_pipe()

    def body() -> int:
        with pipeline.tracer.start_as_current_span("outer"):
            with pipeline.tracer.start_as_current_span("inner"):
                pass
        # Nothing was exported in the child: the parent has it all.
        exported = len(pipeline.exporter.get_finished_spans())
        return 0 if exported == 0 and _handoff.sends_to_parent() else 3

    pid = fork_child(pipe, body)
    assert exit_code(pid) == 0

    assert pipe.collect() == []
    spans = pipeline.by_name()
    assert set(spans) == {"outer", "inner"}
    assert spans["inner"].parent is not None
    assert spans["inner"].parent.span_id == spans["outer"].context.span_id


def test_flush_before_exit_returns_at_once(pipeline: Pipeline) -> None:
    """flush_before_exit() in a child that handed every span over waits for nothing."""
    _provider._reset_for_tests()
    jobtrace.configure(tracer_provider=pipeline.provider)
    _handoff.activate(pipeline.processor)
    # Only a provider that jobtrace built skips the flush, because another
    # provider may carry processors of its own.
    _provider._owns_provider = True
    pipe = open_pipe()

    def body() -> int:
        with pipeline.tracer.start_as_current_span("job"):
            pass
        started = time.monotonic()
        flushed = jobtrace.flush_before_exit()
        return 0 if flushed and time.monotonic() - started < 0.05 else 3

    try:
        assert exit_code(fork_child(pipe, body)) == 0
    finally:
        _provider._reset_for_tests()
    pipe.collect()
    assert set(pipeline.by_name()) == {"job"}


class _SlowExporter(InMemorySpanExporter):
    """Holds each export for a moment, as a collector on a network would."""

    def __init__(self, delay: float = 0.2) -> None:
        super().__init__()
        self.delay = delay

    def export(self, spans: Any) -> Any:
        time.sleep(self.delay)
        return super().export(spans)


@contextlib.contextmanager
def configured_with(exporter: SpanExporter) -> Iterator[trace.Tracer]:
    """Configure jobtrace with a provider that hands spans over to ``exporter``.

    The batch processor exports only when flushed.
    """
    processor = HandoffProcessor(
        BatchSpanProcessor(exporter, schedule_delay_millis=60_000)
    )
    provider = TracerProvider()
    provider.add_span_processor(processor)
    _provider._reset_for_tests()
    jobtrace.configure(tracer_provider=provider)
    _handoff.activate(processor)
    try:
        yield provider.get_tracer("tests")
    finally:
        _provider._reset_for_tests()
        provider.shutdown()


def test_flush_in_child_waits_for_parent() -> None:
    """flush() in a piped child returns once the parent has exported its spans."""
    exporter = _SlowExporter()
    ready_read, ready_write = os.pipe()

    with configured_with(exporter) as tracer:
        pipe = open_pipe()

        def body() -> int:
            with tracer.start_as_current_span("job"):
                pass
            flushed = jobtrace.flush(timeout=10)
            os.write(ready_write, b"x")
            return 0 if flushed else 3

        try:
            pid = fork_child(pipe, body)
            assert os.read(ready_read, 1) == b"x"
            # The child's flush returned, so the parent's export has finished.
            assert [span.name for span in exporter.get_finished_spans()] == ["job"]
            assert exit_code(pid) == 0
            pipe.collect()
        finally:
            for fd in (ready_read, ready_write):
                os.close(fd)


def test_killed_child_spans_reopened(pipeline: Pipeline) -> None:
    """A killed child's open spans come back with their ids, still open."""
    pipe = open_pipe()
    ready_read, ready_write = os.pipe()

    def body() -> int:
        os.close(ready_read)
        with pipeline.tracer.start_as_current_span(
            "process job", kind=SpanKind.CONSUMER, attributes={"a": 1}
        ):
            with pipeline.tracer.start_as_current_span("ended"):
                pass
            os.write(ready_write, b"x")
            time.sleep(30)
        return 0

    pid = fork_child(pipe, body)
    os.close(ready_write)
    assert os.read(ready_read, 1) == b"x"
    os.close(ready_read)
    os.kill(pid, signal.SIGKILL)
    assert exit_code(pid) == -signal.SIGKILL

    (reopened,) = pipe.collect()
    ended = pipeline.by_name()["ended"]
    assert reopened.is_recording()
    assert reopened.get_span_context().span_id == ended.parent.span_id
    assert reopened.get_span_context().trace_id == ended.context.trace_id
    jobtrace.end_abandoned([reopened])

    spans = pipeline.by_name()
    process = spans["process job"]
    assert process.context.span_id == ended.parent.span_id
    assert process.kind is SpanKind.CONSUMER
    assert process.attributes["a"] == 1
    assert process.attributes["jobtrace.span.ended_by_parent"] is True
    assert process.status.status_code is StatusCode.ERROR
    assert process.start_time <= ended.start_time
    assert pipe.collect() == []


def test_report_run_reuses_child_span(pipeline: Pipeline) -> None:
    """report_run ends the job's own reopened span with the outcome."""
    _provider._reset_for_tests()
    jobtrace.configure(tracer_provider=pipeline.provider)
    _handoff.activate(pipeline.processor)
    pipe = open_pipe()
    job = jobtrace.Job("rq", "tests.job", id="job-1")

    def body() -> int:
        run = jobtrace.begin_run(job, {})
        with pipeline.tracer.start_as_current_span("open inside"):
            os.kill(os.getpid(), signal.SIGKILL)
        jobtrace.end_run(run, jobtrace.Outcome.SUCCESS)
        return 0

    try:
        pid = fork_child(pipe, body)
        assert exit_code(pid) == -signal.SIGKILL
        jobtrace.report_run(job, {}, jobtrace.Outcome.KILLED, unfinished=pipe.collect())
    finally:
        _provider._reset_for_tests()

    spans = pipeline.by_name()
    run = spans["process tests.job"]
    inside = spans["open inside"]
    assert len(spans) == 2
    assert inside.parent.span_id == run.context.span_id
    assert run.attributes["jobtrace.job.outcome"] == "killed"
    assert run.attributes["jobtrace.job.reported_by_parent"] is True
    assert inside.attributes["jobtrace.span.ended_by_parent"] is True


def test_closed_parent_falls_back(pipeline: Pipeline) -> None:
    """A child whose parent stopped reading keeps its spans in its processor."""
    pipe = open_pipe()
    pipe_closed_read, pipe_closed_write = os.pipe()

    def body() -> int:
        os.close(pipe_closed_write)
        os.read(pipe_closed_read, 1)
        with pipeline.tracer.start_as_current_span("kept"):
            pass
        kept = [s.name for s in pipeline.exporter.get_finished_spans()]
        return 0 if kept == ["kept"] and not _handoff.sends_to_parent() else 3

    pid = fork_child(pipe, body)
    os.close(pipe_closed_read)
    assert pipe.collect() == []
    os.close(pipe_closed_write)
    assert exit_code(pid) == 0


def test_grandchild_exports_itself(pipeline: Pipeline) -> None:
    """A process forked by the child does not write into the child's pipe."""
    pipe = open_pipe()

    def body() -> int:
        grandchild = os.fork()
        if grandchild == 0:
            with pipeline.tracer.start_as_current_span("grandchild"):
                pass
            names = [s.name for s in pipeline.exporter.get_finished_spans()]
            os._exit(0 if names == ["grandchild"] else 3)
        return exit_code(grandchild)

    assert exit_code(fork_child(pipe, body)) == 0
    pipe.collect()
    assert pipeline.exporter.get_finished_spans() == ()


def test_corrupt_frames_dropped(
    pipeline: Pipeline, caplog: pytest.LogCaptureFixture
) -> None:
    """Unreadable frames are dropped with a warning; later frames still count."""
    pipe = open_pipe()
    with pipeline.tracer.start_as_current_span("good"):
        pass
    (good,) = pipeline.exporter.get_finished_spans()
    pipeline.exporter.clear()
    payload = marshal.dumps(_handoff.encode(good))

    def body() -> int:
        frames = struct.pack("!cI", b"E", 3) + b"\xff\xfe\xfd"
        frames += struct.pack("!cI", b"E", len(payload)) + payload
        frames += struct.pack("!cI", b"E", 2**31)
        os.write(pipe._write_fd, frames)
        return 0

    with caplog.at_level(logging.WARNING, logger="jobtrace._handoff"):
        assert exit_code(fork_child(pipe, body)) == 0
        pipe.collect()

    assert [s.name for s in pipeline.exporter.get_finished_spans()] == ["good"]
    messages = [record.getMessage() for record in caplog.records]
    assert any("could not be read" in message for message in messages)
    assert any("corrupt" in message for message in messages)


def test_no_pipe_without_processor() -> None:
    """open_span_pipe returns None when no handoff processor is active."""
    _handoff.activate(None)

    assert jobtrace.open_span_pipe() is None


def test_pipes_bounded(
    pipeline: Pipeline,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Past max_open_pipes(), children get no pipe and live pipes stay open."""
    monkeypatch.setattr(_handoff, "max_open_pipes", lambda: 4)
    monkeypatch.setattr(_handoff, "_pipes_full_warned", False)
    pipes = [open_pipe() for _ in range(4)]
    children_ends = []
    for pipe in pipes:
        children_ends.append(pipe._write_fd)
        # Keep the write end open, as a live child would.
        pipe._write_fd = os.dup(pipe._write_fd)
        pipe.use_in_parent()
    collector = _handoff._collector
    assert collector is not None

    with caplog.at_level(logging.WARNING, logger="jobtrace"):
        assert jobtrace.open_span_pipe() is None
        assert jobtrace.open_span_pipe() is None
    assert len(collector._streams) == 4
    assert len([r for r in caplog.records if "ulimit" in r.message]) == 1

    for pipe in pipes:
        pipe.collect()
    for fd in children_ends:
        os.close(fd)
    assert collector._streams == {}
    reopened = jobtrace.open_span_pipe()
    assert reopened is not None
    reopened.close()


def test_max_open_pipes_follows_file_limit() -> None:
    """The pipes' descriptors take a quarter of the open-file limit."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = _handoff.max_open_pipes()
    assert _handoff.MAX_OPEN_PIPES <= limit <= 1024
    if soft != resource.RLIM_INFINITY and 128 <= soft <= 8192:
        assert limit == soft // 8


@pytest.fixture
def forks_piped(pipeline: Pipeline) -> Iterator[Pipeline]:
    _handoff.pipe_forks()
    yield pipeline
    _handoff.pipe_forks(False)


def test_pipe_forks_covers_plain_fork(forks_piped: Pipeline) -> None:
    """With pipe_forks, a plain os.fork() child hands its spans over."""
    pid = os.fork()
    if pid == 0:
        with forks_piped.tracer.start_as_current_span("forked"):
            pass
        os._exit(0 if _handoff.sends_to_parent() else 3)
    assert exit_code(pid) == 0

    _handoff.drain(1.0)
    assert set(forks_piped.by_name()) == {"forked"}


def test_claimed_run_ends_once(forks_piped: Pipeline) -> None:
    """A claimed span is ended by the parent; the child's own end is dropped."""
    ready_read, ready_write = os.pipe()
    go_read, go_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        span = forks_piped.tracer.start_span(
            "process it.job",
            kind=SpanKind.CONSUMER,
            attributes={"messaging.message.id": "job-9"},
        )
        os.write(ready_write, b"x")
        os.read(go_read, 1)
        span.set_attribute("ended.by", "child")
        span.end()
        os._exit(0)
    assert os.read(ready_read, 1) == b"x"

    claimed = jobtrace.claim_child_run("job-9")
    assert claimed is not None
    assert jobtrace.claim_child_run("job-9") is None
    os.write(go_write, b"x")
    assert exit_code(pid) == 0
    _handoff.drain(1.0)
    claimed.set_attribute("ended.by", "parent")
    claimed.end()

    (process,) = forks_piped.exporter.get_finished_spans()
    assert process.attributes["ended.by"] == "parent"
    assert process.context.span_id == claimed.get_span_context().span_id
    for fd in (ready_read, ready_write, go_read, go_write):
        os.close(fd)


def test_open_spans_end_after_grace(
    forks_piped: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Spans a piped child left open are ended after the grace period."""
    monkeypatch.setattr(_handoff, "ABANDONED_GRACE_SECONDS", 0.2)
    pid = os.fork()
    if pid == 0:
        forks_piped.tracer.start_span("left open")
        os._exit(0)
    assert exit_code(pid) == 0

    deadline = time.monotonic() + 5
    while not forks_piped.exporter.get_finished_spans():
        assert time.monotonic() < deadline, "the open span was never ended"
        time.sleep(0.05)
    (span,) = forks_piped.exporter.get_finished_spans()
    assert span.name == "left open"
    assert span.attributes["jobtrace.span.ended_by_parent"] is True
    assert span.status.status_code is StatusCode.ERROR


def test_reader_survives_processor_error(pipeline: Pipeline) -> None:
    """An error while queuing one child's span leaves the reader running."""
    failing = {"left": 1}
    original = pipeline.processor.processor.on_end

    def fail_once(span: ReadableSpan) -> None:
        if failing["left"]:
            failing["left"] -= 1
            raise RuntimeError("processor broke")
        original(span)

    pipeline.processor.processor.on_end = fail_once  # type: ignore[method-assign]
    first, second = open_pipe(), open_pipe()

    def body() -> int:
        with pipeline.tracer.start_as_current_span("child span"):
            pass
        return 0

    assert exit_code(fork_child(first, body)) == 0
    deadline = time.monotonic() + 5
    while failing["left"]:
        assert time.monotonic() < deadline, "the reader never read the first pipe"
        time.sleep(0.05)
    assert exit_code(fork_child(second, body)) == 0
    deadline = time.monotonic() + 5
    while not pipeline.exporter.get_finished_spans():
        assert time.monotonic() < deadline, "the reader stopped after the error"
        time.sleep(0.05)
    first.collect()
    second.collect()
    assert [s.name for s in pipeline.exporter.get_finished_spans()] == ["child span"]


def test_fork_has_pipe_until_settled(pipeline: Pipeline) -> None:
    """fork_has_pipe is true only while a pipe waits for its fork."""
    assert not _handoff.fork_has_pipe()
    pipe = open_pipe()
    assert _handoff.fork_has_pipe()
    pipe.close()
    assert not _handoff.fork_has_pipe()


@pytest.mark.skipif(
    not hasattr(TracerProvider, "_handle_fork"),
    reason="this SDK does not detect resources again after a fork",
)
def test_piped_child_skips_resource_detection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A piped child keeps the provider's resource; an unpiped one renews it."""
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
    _provider._reset_for_tests()
    try:
        jobtrace.tracer()
        built = _provider._provider
        assert built is not None
        before = built.resource.attributes.get("service.instance.id")
        assert before is not None

        def same_resource() -> int:
            after = built.resource.attributes.get("service.instance.id")
            return 0 if after == before else 3

        pipe = open_pipe()
        assert exit_code(fork_child(pipe, same_resource)) == 0
        pipe.collect()

        pid = os.fork()
        if pid == 0:
            os._exit(3 - same_resource())
        assert exit_code(pid) == 0
    finally:
        _provider._reset_for_tests()


def test_enum_attributes_cross_as_values(pipeline: Pipeline) -> None:
    """Attribute values of enum subclasses cross the pipe as plain values."""
    import enum

    class Priority(enum.IntEnum):
        HIGH = 2

    class Color(str, enum.Enum):
        RED = "red"

    pipe = open_pipe()

    def body() -> int:
        with pipeline.tracer.start_as_current_span("typed") as span:
            span.set_attribute("priority", Priority.HIGH)
            span.set_attribute("color", Color.RED)
        return 0 if _handoff.sends_to_parent() else 3

    assert exit_code(fork_child(pipe, body)) == 0
    assert pipe.collect() == []
    (span,) = pipeline.exporter.get_finished_spans()
    assert span.attributes["priority"] == 2
    assert span.attributes["color"] == "red"
    assert type(span.attributes["color"]) is str


def test_children_bursts_fit_in_small_queue() -> None:
    """Children ending more spans than the batch queue takes lose none."""
    exporter = _SlowExporter(delay=0.02)
    batch = BatchSpanProcessor(
        exporter, max_queue_size=64, max_export_batch_size=16, schedule_delay_millis=50
    )
    processor = HandoffProcessor(_delivery.CountingProcessor(batch))
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("tests")
    _handoff.activate(processor)
    try:
        pipes = [open_pipe() for _ in range(3)]

        def body() -> int:
            for _ in range(300):
                with tracer.start_as_current_span("burst"):
                    pass
            return 0

        pids = [fork_child(pipe, body) for pipe in pipes]
        assert [exit_code(pid) for pid in pids] == [0, 0, 0]
        for pipe in pipes:
            pipe.collect()
        provider.force_flush()
        assert len(exporter.get_finished_spans()) == 900
    finally:
        _handoff.activate(None)
        provider.shutdown()


class _Stuck(InMemorySpanExporter):
    """An exporter whose exports wait until ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def export(self, spans: Any) -> Any:
        self.release.wait(30)
        return super().export(spans)


def end_spans(
    counting: _delivery.CountingProcessor, count: int, *, waiting: bool = True
) -> float:
    """End ``count`` spans through ``counting``; return the seconds it took."""
    provider = TracerProvider()
    provider.add_span_processor(counting)
    tracer = provider.get_tracer("tests")
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        if waiting:
            stack.enter_context(_delivery.waiting_for_room())
        for _ in range(count):
            with tracer.start_as_current_span("span"):
                pass
    return time.monotonic() - started


def test_room_wait_bounded_when_export_stalls() -> None:
    """With an export that never returns, handing spans over waits once."""
    stuck = _Stuck()
    batch = BatchSpanProcessor(
        stuck, max_queue_size=8, max_export_batch_size=4, schedule_delay_millis=10
    )
    counting = _delivery.CountingProcessor(batch, room_wait=0.3)
    try:
        elapsed = end_spans(counting, 200)
        # One wait for the stuck export, perhaps one more after the batch
        # it took made room; then spans are dropped without waiting.
        assert elapsed >= 0.3
        assert elapsed < 3 * 0.3
    finally:
        stuck.release.set()
        batch.shutdown()


def test_no_room_wait_while_exports_fail() -> None:
    """After a failed export, a full queue drops spans without waiting."""
    stuck = _Stuck()
    batch = BatchSpanProcessor(
        stuck, max_queue_size=8, max_export_batch_size=4, schedule_delay_millis=10
    )
    health = _delivery.ExportHealth()
    health.count_export(4, succeeded=False, reason="refused")
    counting = _delivery.CountingProcessor(batch, health, room_wait=5.0)
    try:
        elapsed = end_spans(counting, 200)

        assert elapsed < 1.0
        assert health.overflowed > 0
    finally:
        stuck.release.set()
        batch.shutdown()


def test_slow_collector_loses_no_child_spans() -> None:
    """An export slower than any fixed wait still gets every child's span."""
    exporter = _SlowExporter(delay=0.6)
    batch = BatchSpanProcessor(
        exporter,
        max_queue_size=128,
        max_export_batch_size=128,
        schedule_delay_millis=50,
    )
    health = _delivery.ExportHealth()
    processor = HandoffProcessor(
        _delivery.CountingProcessor(batch, health, room_wait=5.0)
    )
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("tests")
    _handoff.activate(processor)
    try:
        pipes = [open_pipe() for _ in range(2)]

        def body() -> int:
            for _ in range(300):
                with tracer.start_as_current_span("slow"):
                    pass
            return 0

        pids = [fork_child(pipe, body) for pipe in pipes]
        assert [exit_code(pid) for pid in pids] == [0, 0]
        for pipe in pipes:
            pipe.collect()
        provider.force_flush()

        assert len(exporter.get_finished_spans()) == 600
        assert health.overflowed == 0
    finally:
        _handoff.activate(None)
        provider.shutdown()


def test_exited_children_close_ack_pipes() -> None:
    """Children that flush and exit while an export hangs leave no descriptors."""
    stuck = _Stuck()

    with configured_with(stuck) as tracer:

        def flush_and_exit() -> int:
            with tracer.start_as_current_span("job"):
                pass
            return 0 if not jobtrace.flush(timeout=0.1) else 3

        try:
            # The first request starts the stuck export.
            first = open_pipe()
            assert exit_code(fork_child(first, flush_and_exit)) == 0
            first.collect()
            before = len(os.listdir("/proc/self/fd"))
            for _ in range(10):
                pipe = open_pipe()
                assert exit_code(fork_child(pipe, flush_and_exit)) == 0
                pipe.collect()
            after = len(os.listdir("/proc/self/fd"))

            assert after <= before + 1
        finally:
            stuck.release.set()


def test_concurrent_flushes_in_child() -> None:
    """Threads of one piped child that flush at once all get confirmed."""
    exporter = _SlowExporter(delay=0.05)

    with configured_with(exporter) as tracer:
        pipe = open_pipe()

        def body() -> int:
            results: list[bool] = []

            def flush_one(index: int) -> None:
                with tracer.start_as_current_span(f"thread-{index}"):
                    pass
                results.append(jobtrace.flush(timeout=10))

            threads = [threading.Thread(target=flush_one, args=(i,)) for i in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            return 0 if results == [True] * 4 else 3

        pid = fork_child(pipe, body)
        assert exit_code(pid) == 0
        pipe.collect()

    names = sorted(span.name for span in exporter.get_finished_spans())
    assert names == [f"thread-{i}" for i in range(4)]
