"""Hand the spans of a forked child process to its parent.

Workers run jobs in forked children: RQ forks a work horse per job and
ends it with ``os._exit``, and Celery's prefork pool recycles and kills its
children. A child that exported its own spans would make jobs wait for OTLP
requests and lose the spans in its queue when killed. Instead, the parent
opens a pipe right before the fork, the child writes each span into it as
the span starts and as it ends, and a thread in the parent queues the ended
spans on the parent's batch processor. One export then carries the spans of
many jobs, and the parent can end the spans of a child that died.

Spans cross the pipe as :mod:`marshal` data, which contains plain values
only and never code. Only a fork of this process, or a child that it
spawned with the pipe's ends (see :mod:`jobtrace._spawned`), can write to
the pipe.
"""

from __future__ import annotations

import contextlib
import logging
import marshal
import os
import queue
import select
import selectors
import struct
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import (
    Event,
    ReadableSpan,
    Span,
    SpanProcessor,
    TracerProvider,
)
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, TraceFlags, TraceState
from opentelemetry.trace.status import Status, StatusCode
from opentelemetry.util.types import Attributes

from jobtrace import _delivery, _spawned
from jobtrace import _names as names
from jobtrace._guard import Guard

try:
    import fcntl
    import resource
except ImportError:  # Windows, which has no fork() either
    fcntl = None  # type: ignore[assignment]
    resource = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

#: A frame is a kind byte, the payload's length as 4 bytes, then the
#: payload: a span as it started (``S``) or as it ended (``E``).
_HEADER = struct.Struct("!cI")
_STARTED = b"S"
_ENDED = b"E"
#: A job measurement, as a tuple of plain values, for
#: :data:`measurement_handler`.
_MEASURED = b"M"
#: A request to export everything queued so far. The payload is a token
#: that the parent writes back to the child once the export has finished.
_FLUSH = b"F"
_TOKEN = struct.Struct("!Q")
#: Frames longer than this are treated as a corrupt stream.
MAX_FRAME_BYTES = 64 * 1024 * 1024
#: The minimum of :func:`max_open_pipes`, and its value when the limit on
#: open files is unknown.
MAX_OPEN_PIPES = 16
#: The maximum of :func:`max_open_pipes`.
_PIPES_CAP = 1024
#: Linux grows a pipe's buffer up to /proc/sys/fs/pipe-max-size (1 MiB by
#: default), so a child rarely waits for the parent's reader.
_PIPE_BYTES = 1024 * 1024

#: Seconds that the spans a child left open wait, after the child exited,
#: for a host's report to claim the job's own span (:func:`claim_child_run`)
#: before the parent ends them all as abandoned.
ABANDONED_GRACE_SECONDS = 10.0
#: Seconds between two reads of the children's pipes while they send spans.
#: A write to a pipe that a thread waits on wakes that thread, which cost
#: about 25 µs of CPU per frame on a 2-vCPU VM, twice per job. Reading at
#: intervals instead costs one wakeup per interval, whatever the job rate.
POLL_SECONDS = 0.05
#: Reads that found nothing, after which the reader waits on the pipes
#: again, so that an idle worker's thread sleeps until a child writes.
IDLE_POLLS = 20

_lock = threading.Lock()
_active: HandoffProcessor | None = None
_collector: _Collector | None = None
# Whether every os.fork() gets a pipe: see pipe_forks().
_pipe_forks = False
# Pipes opened and not yet handed to the parent's reader. A child forked
# while one is open inherits a count above zero: see fork_has_pipe().
_opened = 0
_fork_hooks_registered = False
_pipes_full_warned = False
_forking = threading.local()

_ON_START = Guard("processor.on_start")
_ON_END = Guard("processor.on_end")

#: Called in the parent with each measurement a child sent through
#: :func:`send_measurement`; the metrics module sets it.
measurement_handler: Callable[[tuple[Any, ...]], None] | None = None


@runtime_checkable
class StartTracker(Protocol):
    """A span processor that needs to know of every span that starts."""

    def track_start(self, context: SpanContext, parent: SpanContext | None) -> None:
        """Record that the span ``context`` started below ``parent``."""


class HandoffProcessor(SpanProcessor):
    """A span processor that sends spans to the parent process from a child.

    Outside a child that uses a :class:`SpanPipe`, and whenever the pipe
    fails, spans go to the wrapped processor as usual.
    """

    def __init__(
        self, processor: SpanProcessor, resource: Resource | None = None
    ) -> None:
        self.processor = processor
        self._resource = resource
        self._writer: _Writer | None = None
        self._passed_on = 0
        self._reopener: _Reopener | None = None
        # A processor below that tracks spans from their start learns of
        # the spans that children started, too.
        self._tracker = processor if isinstance(processor, StartTracker) else None

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        # The SDK calls processors without a guard, from inside the code
        # that starts the span, which may be a job's own code.
        with _ON_START:
            # The parent needs the started span to end it itself if this
            # child dies first. The processors below run in the parent for it.
            writer = self._writer
            if writer is not None and writer.send(_STARTED, span):
                return
            self.processor.on_start(span, parent_context=parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        with _ON_END:
            writer = self._writer
            if writer is not None:
                if writer.send(_ENDED, span):
                    return
                self._passed_on += 1
            self.processor.on_end(span)

    def shutdown(self) -> None:
        self.processor.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        writer = self._writer
        if writer is not None and writer.usable() and self._passed_on == 0:
            # The parent exports this child's spans, so it flushes them.
            return writer.request_flush(timeout_millis / 1000)
        return self.processor.force_flush(timeout_millis)

    @property
    def resource(self) -> Resource:
        """The resource of the provider this processor belongs to."""
        if self._resource is None:
            provider = trace.get_tracer_provider()
            if isinstance(provider, TracerProvider):
                self._resource = provider.resource
            else:
                return Resource.get_empty()
        return self._resource

    def child_started(self, values: tuple[Any, ...]) -> None:
        """Tell the processor below that a child started the span in ``values``."""
        tracker = self._tracker
        if tracker is not None:
            parent = values[2]
            tracker.track_start(
                _decode_context(values[1]),
                None if parent is None else _decode_context(parent),
            )

    def reopener(self) -> _Reopener:
        """Return the helper that re-creates children's started spans."""
        with _lock:
            if self._reopener is None:
                self._reopener = _Reopener(self)
            return self._reopener

    def sends_to_parent(self) -> bool:
        """Return True while every span ended here went to the parent."""
        writer = self._writer
        return writer is not None and writer.usable() and self._passed_on == 0


class SpanPipe:
    """A pipe that carries one forked child's spans to its parent.

    Open it in the parent right before ``os.fork()``. After the fork, call
    :meth:`use_in_parent` in the parent and :meth:`use_in_child` in the
    child.
    """

    def __init__(self, processor: HandoffProcessor) -> None:
        global _opened
        self._processor = processor
        self._collector: _Collector | None = None
        self._stream: _Stream | None = None
        self._read_fd, self._write_fd = os.pipe()
        _grow_pipe(self._write_fd)
        # The parent confirms a child's flush request on this second pipe.
        self._ack_read_fd, self._ack_write_fd = os.pipe()
        self._settled = False
        # The value PIPE_VARIABLE had before pass_to_spawn() set it.
        self._saved_variable: str | None = None
        self._passed_to_spawn = False
        with _lock:
            _opened += 1

    def _settle(self) -> None:
        global _opened
        if self._settled:
            return
        self._settled = True
        with _lock:
            _opened -= 1

    def pass_to_spawn(self) -> None:
        """Offer the child's end to the next process that this one spawns.

        For a child started as a new interpreter (``os.posix_spawn`` with
        ``os.environ``) in place of a fork: the child's two descriptors
        become inheritable and :data:`jobtrace._spawned.PIPE_VARIABLE`
        names them. After the spawn, call :meth:`use_in_parent`, or
        :meth:`close` if it failed, which closes them here and restores
        the variable's previous value.
        """
        os.set_inheritable(self._write_fd, True)
        os.set_inheritable(self._ack_read_fd, True)
        self._saved_variable = os.environ.get(_spawned.PIPE_VARIABLE)
        self._passed_to_spawn = True
        value = _spawned.value_for(self._write_fd, self._ack_read_fd)
        os.environ[_spawned.PIPE_VARIABLE] = value

    def _restore_variable(self) -> None:
        if not self._passed_to_spawn:
            return
        self._passed_to_spawn = False
        if self._saved_variable is None:
            os.environ.pop(_spawned.PIPE_VARIABLE, None)
        else:
            os.environ[_spawned.PIPE_VARIABLE] = self._saved_variable

    def use_in_child(self) -> None:
        """Send the spans this process ends from now on to the parent."""
        os.close(self._read_fd)
        os.close(self._ack_write_fd)
        self._processor._writer = _Writer(self._write_fd, self._ack_read_fd)
        self._processor._passed_on = 0
        self._settle()

    def use_in_parent(self, *, end_abandoned: bool = False) -> None:
        """Close the child's end and read the child's spans on a thread.

        With ``end_abandoned``, spans the child leaves open are ended by
        the reading thread :data:`ABANDONED_GRACE_SECONDS` after the child
        exits, for callers that never call :meth:`collect`.
        """
        self._restore_variable()
        os.close(self._write_fd)
        os.close(self._ack_read_fd)
        self._settle()
        self._collector = _running_collector()
        self._stream = self._collector.add(
            self._read_fd,
            self._ack_write_fd,
            self._processor,
            end_abandoned=end_abandoned,
        )

    def collect(self, timeout: float = 1.0) -> list[trace.Span]:
        """Read the rest of the child's spans and close the pipe.

        Call it once the child has exited. Returns the spans that the child
        started but never ended, re-created in this process with the
        child's span ids and still open, so that the caller ends them and
        the spans below them keep their parent. A second call returns an
        empty list.
        """
        collector, stream = self._collector, self._stream
        if collector is None or stream is None:
            return []
        self._collector = self._stream = None
        started = collector.collect(stream, timeout)
        return [self._reopen(values) for values in started]

    def _reopen(self, values: tuple[Any, ...]) -> trace.Span:
        started = decode(values, self._processor.resource)
        return self._processor.reopener().start(started)

    def close(self) -> None:
        """Close both ends, for a fork or spawn that failed."""
        self._restore_variable()
        self._settle()
        fds = (self._read_fd, self._write_fd, self._ack_read_fd, self._ack_write_fd)
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)


def activate(processor: HandoffProcessor | None) -> None:
    """Make ``processor`` the one that :func:`open_span_pipe` uses.

    In a child that its parent spawned with a span pipe (see
    :meth:`SpanPipe.pass_to_spawn`), the first processor activated sends
    its spans through that pipe, as a forked child's does after
    :meth:`SpanPipe.use_in_child`.
    """
    global _active
    with _lock:
        _active = processor
    if processor is None:
        return
    inherited = _spawned.take_inherited()
    if inherited is not None:
        processor._writer = _Writer(*inherited)
        processor._passed_on = 0


def open_span_pipe() -> SpanPipe | None:
    """Open a pipe for the next fork, or return None when spans cannot use one.

    Spans can only cross when this process exports through the processor
    from :func:`jobtrace.span_processor`, which jobtrace adds to a provider
    it builds itself.
    """
    processor = _active
    if processor is None:
        return None
    collector = _collector
    streams = 0 if collector is None else collector.open_streams()
    if _opened + streams >= max_open_pipes():
        # Closing a pipe that a live child still writes to would make the
        # parent end that child's spans a second time, so the new child
        # exports its spans itself instead.
        _warn_pipes_full()
        return None
    try:
        return SpanPipe(processor)
    except OSError as error:
        log.warning("Could not open a pipe for a child's spans: %s", error)
        return None


def max_open_pipes() -> int:
    """Return how many children's pipes a parent keeps open at once.

    Each pipe takes two descriptors in the parent, and the pipes get at
    most a quarter of the soft limit on open files, so the limit is an
    eighth of it, between 16 and 1024 pipes.
    The limit also bounds the descriptors kept by a grandchild that keeps
    a write end open after its parent exited.
    """
    if resource is None:
        return MAX_OPEN_PIPES
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return MAX_OPEN_PIPES
    if soft == resource.RLIM_INFINITY:
        return _PIPES_CAP
    return max(MAX_OPEN_PIPES, min(_PIPES_CAP, soft // 8))


def _warn_pipes_full() -> None:
    global _pipes_full_warned
    if _pipes_full_warned:
        return
    _pipes_full_warned = True
    log.warning(
        "%d child processes already send their spans to this process, so "
        "new children export their own spans; raise the limit on open files "
        "(ulimit -n) to pipe more",
        max_open_pipes(),
    )


def pipe_forks(enabled: bool = True) -> None:
    """Give every child that this process forks from now on a span pipe.

    For hosts whose pool forks its children outside any hook, such as
    Celery's prefork pool. Each child's spans go to this process, spans a
    dead child left open are ended here, and :func:`claim_child_run` lets
    the host report a killed job's own span. Children do not pass the
    setting on to the processes they fork.
    """
    global _pipe_forks, _fork_hooks_registered
    with _lock:
        _pipe_forks = enabled
        if enabled and not _fork_hooks_registered:
            os.register_at_fork(
                before=_before_fork,
                after_in_parent=_after_fork_in_parent,
                after_in_child=_after_fork_in_child,
            )
            _fork_hooks_registered = True


def _before_fork() -> None:
    _forking.pipe = open_span_pipe() if _pipe_forks else None


def _after_fork_in_parent() -> None:
    pipe, _forking.pipe = getattr(_forking, "pipe", None), None
    if pipe is not None:
        pipe.use_in_parent(end_abandoned=True)


def _after_fork_in_child() -> None:
    global _pipe_forks
    _pipe_forks = False
    pipe, _forking.pipe = getattr(_forking, "pipe", None), None
    if pipe is not None:
        pipe.use_in_child()


def claim_child_run(job_id: str) -> trace.Span | None:
    """Take over the open process span of ``job_id`` from a child, if any.

    Returns the span re-created in this process with the child's ids and
    still open, for the host to end with the outcome it saw. The child can
    no longer end that span: if it still does, its copy is dropped.
    """
    collector = _collector
    if collector is None or collector.pid != os.getpid():
        return None
    return collector.claim_run(job_id)


def fork_has_pipe() -> bool:
    """Return True in a child forked while a span pipe was open for it.

    At-fork hooks that run before the child calls
    :meth:`SpanPipe.use_in_child` use it to skip work that only matters
    for a process exporting on its own.
    """
    return _opened > 0


def send_measurement(values: tuple[Any, ...]) -> bool:
    """Send a job measurement to the parent; return False if there is none.

    ``values`` must contain only values that :mod:`marshal` can write.
    """
    processor = _active
    writer = None if processor is None else processor._writer
    if writer is None or not writer.usable():
        return False
    return writer.write(_MEASURED, marshal.dumps(values))


def sends_to_parent() -> bool:
    """Return True in a child whose spans all went to its parent."""
    processor = _active
    return processor is not None and processor.sends_to_parent()


def drain(timeout: float) -> None:
    """Queue the spans that children have written so far, waiting ``timeout`` s."""
    collector = _collector
    if collector is not None and collector.pid == os.getpid():
        collector.drain(timeout)


class _FixedIds(IdGenerator):
    """Returns the ids that the current thread set, to re-create a span."""

    def __init__(self) -> None:
        self.ids = threading.local()

    def generate_span_id(self) -> int:
        return int(self.ids.span_id)

    def generate_trace_id(self) -> int:
        return int(self.ids.trace_id)


class _Reopener:
    """Re-creates a child's started span in the parent, with the same ids.

    The SDK creates spans only through a tracer, so this uses a provider of
    its own whose id generator returns the child's ids, and which sends the
    spans to the same processor as the parent's provider.
    """

    def __init__(self, processor: HandoffProcessor) -> None:
        self._ids = _FixedIds()
        self._provider = TracerProvider(
            sampler=ALWAYS_ON,
            resource=processor.resource,
            id_generator=self._ids,
            shutdown_on_exit=False,
        )
        self._provider.add_span_processor(processor)

    def start(self, started: ReadableSpan) -> trace.Span:
        assert started.context is not None
        scope = started.instrumentation_scope
        tracer = self._provider.get_tracer(
            scope.name if scope else "jobtrace",
            scope.version if scope else None,
            schema_url=scope.schema_url if scope else None,
        )
        parent = None
        if started.parent is not None:
            parent = trace.set_span_in_context(trace.NonRecordingSpan(started.parent))
        self._ids.ids.trace_id = started.context.trace_id
        self._ids.ids.span_id = started.context.span_id
        return tracer.start_span(
            started.name,
            context=parent,
            kind=started.kind,
            attributes=started.attributes,
            links=started.links,
            start_time=started.start_time,
        )


class _Writer:
    """The child's end of a :class:`SpanPipe`."""

    def __init__(self, fd: int, ack_fd: int) -> None:
        self._fd = fd
        self._ack_fd = ack_fd
        self._pid = os.getpid()
        self._lock = threading.Lock()
        # One flush request at a time, because each request reads the
        # confirmation pipe until its own token arrives.
        self._flush_lock = threading.Lock()
        self._broken = False

    def usable(self) -> bool:
        # A process forked by the child inherits the writer, but its frames
        # could interleave with the child's, so it exports on its own.
        return not self._broken and os.getpid() == self._pid

    def send(self, kind: bytes, span: ReadableSpan) -> bool:
        if not self.usable():
            return False
        try:
            payload = marshal.dumps(encode(span))
        except ValueError as error:
            log.warning("Span %r cannot cross to the parent: %s", span.name, error)
            return False
        return self.write(kind, payload)

    def request_flush(self, timeout: float) -> bool:
        """Ask the parent to export what it has; wait ``timeout`` s for it."""
        deadline = time.monotonic() + timeout
        if not self._flush_lock.acquire(timeout=max(timeout, 0.0)):
            return False
        try:
            return self._request_flush(deadline)
        finally:
            self._flush_lock.release()

    def _request_flush(self, deadline: float) -> bool:
        token = int.from_bytes(os.urandom(8), "big")
        if not self.write(_FLUSH, _TOKEN.pack(token)):
            return False
        received = b""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            ready, _, _ = select.select([self._ack_fd], [], [], remaining)
            if not ready:
                return False
            chunk = os.read(self._ack_fd, _TOKEN.size)
            if not chunk:
                return False
            received += chunk
            # Confirmations of earlier requests that timed out may come first.
            while len(received) >= _TOKEN.size:
                (confirmed,) = _TOKEN.unpack_from(received)
                received = received[_TOKEN.size :]
                if confirmed == token:
                    return True

    def write(self, kind: bytes, payload: bytes) -> bool:
        frame = _HEADER.pack(kind, len(payload)) + payload
        with self._lock:
            try:
                _write_all(self._fd, frame)
            except OSError as error:
                self._broken = True
                log.warning(
                    "Could not hand spans to the parent process, exporting "
                    "them from this process instead: %s",
                    error,
                )
                return False
            except BaseException:
                # A signal handler raised (a job timeout, for example),
                # maybe after part of the frame was written. The parent
                # could not find the next frame's start, so nothing more
                # goes through this pipe.
                self._broken = True
                raise
        return True


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _grow_pipe(fd: int) -> None:
    setting = getattr(fcntl, "F_SETPIPE_SZ", None)
    if setting is None:
        return
    # The system's limit may be lower. The default buffer works too, but
    # the child waits for the reader more often.
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, setting, _PIPE_BYTES)


class _Collector:
    """Reads children's pipes on one thread and queues their spans."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._flusher = _Flusher()
        self._lock = threading.Lock()
        self._selector = selectors.DefaultSelector()
        self._streams: dict[int, _Stream] = {}
        # Streams of exited children with spans left open, and when the
        # grace for claiming them ends.
        self._expiring: list[tuple[float, _Stream]] = []
        self._closed = False
        thread = threading.Thread(
            target=self._run, name="jobtrace-child-spans", daemon=True
        )
        thread.start()

    def add(
        self,
        fd: int,
        ack_fd: int,
        processor: HandoffProcessor,
        *,
        end_abandoned: bool,
    ) -> _Stream:
        os.set_blocking(fd, False)
        stream = _Stream(fd, ack_fd, processor, end_abandoned)
        with self._lock:
            self._streams[fd] = stream
            self._selector.register(fd, selectors.EVENT_READ)
        return stream

    def open_streams(self) -> int:
        return len(self._streams)

    def drain(self, timeout: float) -> None:
        if not self._lock.acquire(timeout=max(timeout, 0.0)):
            log.warning("Timed out reading the spans of child processes")
            return
        try:
            for fd in list(self._streams):
                self._read(fd)
            self._end_expired(force=True)
        finally:
            self._lock.release()

    def claim_run(self, job_id: str) -> trace.Span | None:
        with self._lock:
            for fd in list(self._streams):
                self._read(fd)
            streams = list(self._streams.values())
            streams += [stream for _, stream in self._expiring]
            for stream in streams:
                for span_id, values in stream.started.items():
                    if _runs_job(values, job_id):
                        del stream.started[span_id]
                        stream.claimed.add(span_id)
                        return stream.processor.reopener().start(
                            decode(values, stream.processor.resource)
                        )
        return None

    def collect(self, stream: _Stream, timeout: float) -> list[tuple[Any, ...]]:
        if not self._lock.acquire(timeout=max(timeout, 0.0)):
            log.warning("Timed out reading the spans of a child process")
            return []
        try:
            if self._streams.get(stream.fd) is stream:
                self._read(stream.fd)
            # A process that the child forked may hold the write end open,
            # but it never writes to it, so the child's spans are all read.
            if self._streams.get(stream.fd) is stream:
                self._close(stream.fd)
            started = list(stream.started.values())
            stream.started.clear()
            return started
        finally:
            self._lock.release()

    def forget(self) -> None:
        """Close the inherited descriptors in a forked child."""
        self._closed = True
        for fd, stream in list(self._streams.items()):
            os.close(fd)
            os.close(stream.ack_fd)
        self._streams.clear()
        self._selector.close()

    def _run(self) -> None:
        idle = IDLE_POLLS
        while not self._closed:
            if idle < IDLE_POLLS:
                # Children are sending: collect what they wrote meanwhile,
                # without waiting on the pipes.
                time.sleep(POLL_SECONDS)
                timeout = 0.0
            else:
                # On Linux, epoll reports a pipe that add() registers while
                # this thread waits. Other selectors see it after the timeout.
                timeout = 0.5
            try:
                ready = self._selector.select(timeout=timeout)
            except (OSError, ValueError):
                continue
            idle = 0 if ready else idle + 1
            # The thread must outlive any error: children block once their
            # pipe is full and no thread reads it.
            with _READER, self._lock:
                for key, _ in ready:
                    if key.fd in self._streams:
                        self._read(key.fd)
                self._end_expired(force=False)

    def _end_expired(self, *, force: bool) -> None:
        now = time.monotonic()
        keep = []
        for deadline, stream in self._expiring:
            if not force and deadline > now:
                keep.append((deadline, stream))
                continue
            started, stream.started = list(stream.started.values()), {}
            reopener = stream.processor.reopener()
            resource = stream.processor.resource
            end_abandoned([reopener.start(decode(v, resource)) for v in started])
        self._expiring = keep

    def _read(self, fd: int) -> None:
        stream = self._streams[fd]
        buffer = stream.buffer
        while True:
            try:
                chunk = os.read(fd, 1024 * 1024)
            except BlockingIOError:
                return
            except OSError as error:
                log.warning("Reading a child's spans failed: %s", error)
                self._close(fd)
                return
            if not chunk:
                if buffer:
                    log.warning(
                        "A child process ended in the middle of a span, "
                        "so %d bytes of it were dropped",
                        len(buffer),
                    )
                self._close(fd)
                if stream.end_abandoned and stream.started:
                    deadline = time.monotonic() + ABANDONED_GRACE_SECONDS
                    self._expiring.append((deadline, stream))
                return
            buffer += chunk
            if not self._queue_frames(fd, stream):
                return

    def _queue_frames(self, fd: int, stream: _Stream) -> bool:
        with _delivery.waiting_for_room():
            return self._queue_frames_waiting(fd, stream)

    def _queue_frames_waiting(self, fd: int, stream: _Stream) -> bool:
        buffer = stream.buffer
        offset = 0
        while len(buffer) - offset >= _HEADER.size:
            kind, length = _HEADER.unpack_from(buffer, offset)
            if length > MAX_FRAME_BYTES:
                log.warning("A child's span pipe is corrupt, closing it")
                self._close(fd)
                return False
            end = offset + _HEADER.size + length
            if len(buffer) < end:
                break
            payload = bytes(buffer[offset + _HEADER.size : end])
            offset = end
            if kind == _FLUSH:
                self._flusher.request(stream, payload)
                continue
            try:
                values = marshal.loads(payload)
                if kind == _MEASURED:
                    if values[0] == "process" and stream.skip_runs:
                        stream.skip_runs -= 1
                    else:
                        _measured(values)
                    continue
                span_id = values[1][1]
                if kind == _STARTED:
                    stream.started[span_id] = values
                    stream.processor.child_started(values)
                    continue
                if span_id in stream.claimed:
                    # The parent reported this span already, and the child
                    # measures a run right after ending its span.
                    stream.claimed.discard(span_id)
                    stream.skip_runs += 1
                    continue
                stream.started.pop(span_id, None)
                span = decode(values, stream.processor.resource)
            except (ValueError, TypeError, IndexError, EOFError) as error:
                log.warning("Dropped a child's span that could not be read: %s", error)
                continue
            stream.processor.processor.on_end(span)
        del buffer[:offset]
        return True

    def _close(self, fd: int) -> None:
        stream = self._streams.pop(fd, None)
        if stream is not None:
            self._flusher.close(stream)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(fd)
        os.close(fd)


class _Flusher:
    """Runs children's flush requests on a thread of its own.

    A flush waits for the exporter, and the reader thread must keep reading
    meanwhile, or children block on full pipes. One export serves every
    request queued while the previous one ran, so children that flush often
    against a slow collector wait for one export, not for a line of them.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[_Stream, bytes]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        # Held while a confirmation is written or its pipe closed, so that
        # a write never reaches a descriptor number that was reused.
        self._lock = threading.Lock()

    def request(self, stream: _Stream, token: bytes) -> None:
        self._queue.put((stream, token))
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="jobtrace-child-flush", daemon=True
            )
            self._thread.start()

    def close(self, stream: _Stream) -> None:
        """Close a confirmation pipe: its child has exited or closed its end."""
        with self._lock:
            fd, stream.ack_fd = stream.ack_fd, -1
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)

    def _run(self) -> None:
        while True:
            waiting = [self._queue.get()]
            while not self._queue.empty():
                waiting.append(self._queue.get_nowait())
            with _FLUSHER:
                self._serve(waiting)

    def _serve(self, waiting: list[tuple[_Stream, bytes]]) -> None:
        processors = {id(stream.processor): stream.processor for stream, _ in waiting}
        for processor in processors.values():
            processor.processor.force_flush(_flush_millis())
        with self._lock:
            for stream, token in waiting:
                if stream.ack_fd >= 0:
                    with contextlib.suppress(OSError):
                        os.write(stream.ack_fd, token)


def _flush_millis() -> int:
    # The provider module imports this one.
    from jobtrace._provider import settings

    return int(settings().flush_timeout * 1000)


class _Stream:
    """The data that the parent has read from one child's pipe."""

    __slots__ = (
        "ack_fd",
        "buffer",
        "claimed",
        "end_abandoned",
        "fd",
        "processor",
        "skip_runs",
        "started",
    )

    def __init__(
        self, fd: int, ack_fd: int, processor: HandoffProcessor, end_abandoned: bool
    ) -> None:
        self.fd = fd
        self.ack_fd = ack_fd
        self.processor = processor
        self.end_abandoned = end_abandoned
        # Ids of started spans that the parent took over with claim_run.
        self.claimed: set[int] = set()
        # Run measurements still to come for claimed runs that the child
        # ended itself. The parent recorded those runs when it claimed them.
        self.skip_runs = 0
        self.buffer = bytearray()
        # Spans the child started and has not ended yet, by span id.
        self.started: dict[int, tuple[Any, ...]] = {}


def _measured(values: tuple[Any, ...]) -> None:
    handler = measurement_handler
    if handler is None:
        return
    try:
        handler(values)
    except Exception:
        log.exception("Recording a child's job measurement failed")


_READER = Guard("handoff.reader")
_FLUSHER = Guard("handoff.flusher")


def _running_collector() -> _Collector:
    global _collector
    with _lock:
        if _collector is None or _collector.pid != os.getpid():
            _collector = _Collector()
        return _collector


def _forget_collector() -> None:
    global _collector
    collector = _collector
    _collector = None
    if collector is not None:
        collector.forget()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_collector)

# At import, so that a spawned child's own children never inherit the pipe.
_spawned.take_from_environment()


def end_abandoned(spans: Sequence[trace.Span]) -> None:
    """End spans that a child process started but exited without ending.

    Each gets status ERROR and ``jobtrace.span.ended_by_parent``, and ends
    now, because the time the child died is not known.
    """
    for span in spans:
        span.set_attribute(names.ENDED_BY_PARENT, True)
        span.set_status(
            Status(StatusCode.ERROR, "the process exited before the span ended")
        )
        span.end()


def _runs_job(values: tuple[Any, ...], job_id: str) -> bool:
    kind, attributes = values[3], values[8]
    return bool(
        kind == SpanKind.CONSUMER.value and attributes.get(names.MESSAGE_ID) == job_id
    )


def encode(span: ReadableSpan) -> tuple[Any, ...]:
    """Return ``span`` as a tuple of plain values that marshal can write."""
    context = span.context
    assert context is not None
    scope = span.instrumentation_scope
    return (
        span.name,
        _encode_context(context),
        None if span.parent is None else _encode_context(span.parent),
        span.kind.value,
        span.start_time,
        span.end_time,
        span.status.status_code.value,
        span.status.description,
        _encode_attributes(span.attributes),
        span.dropped_attributes,
        [
            (event.name, event.timestamp, _encode_attributes(event.attributes))
            for event in span.events
        ],
        span.dropped_events,
        [
            (_encode_context(link.context), _encode_attributes(link.attributes))
            for link in span.links
        ],
        span.dropped_links,
        None if scope is None else (scope.name, scope.version, scope.schema_url),
    )


def decode(values: tuple[Any, ...], resource: Resource) -> ReadableSpan:
    """Rebuild the span that :func:`encode` turned into ``values``."""
    (
        name,
        context,
        parent,
        kind,
        start_time,
        end_time,
        status_code,
        status_description,
        attributes,
        dropped_attributes,
        events,
        dropped_events,
        links,
        dropped_links,
        scope,
    ) = values
    return ReadableSpan(
        name=name,
        context=_decode_context(context),
        parent=None if parent is None else _decode_context(parent),
        resource=resource,
        attributes=_with_dropped(attributes, dropped_attributes),
        events=_list_with_dropped(
            [Event(n, _with_dropped(a, 0), t) for n, t, a in events], dropped_events
        ),
        links=_list_with_dropped(
            [Link(_decode_context(c), _with_dropped(a, 0)) for c, a in links],
            dropped_links,
        ),
        kind=SpanKind(kind),
        status=Status(StatusCode(status_code), status_description),
        start_time=start_time,
        end_time=end_time,
        instrumentation_scope=None if scope is None else InstrumentationScope(*scope),
    )


def _encode_context(context: SpanContext) -> tuple[Any, ...]:
    return (
        context.trace_id,
        context.span_id,
        context.is_remote,
        int(context.trace_flags),
        list(context.trace_state.items()) if context.trace_state else None,
    )


def _decode_context(values: tuple[Any, ...]) -> SpanContext:
    trace_id, span_id, is_remote, flags, state = values
    return SpanContext(
        trace_id,
        span_id,
        is_remote,
        TraceFlags(flags),
        TraceState(state) if state else None,
    )


def _encode_attributes(attributes: Attributes) -> dict[str, Any]:
    if not attributes:
        return {}
    return {key: _plain(value) for key, value in attributes.items()}


_PLAIN_TYPES = (str, bool, int, float)


def _plain(value: Any) -> Any:
    # The SDK accepts subclasses such as enum.IntEnum or a str enum, which
    # marshal rejects, so they cross as their base type's value.
    if type(value) in _PLAIN_TYPES:
        return value
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, (tuple, list)):
        return tuple(_plain(item) for item in value)
    return value


def _with_dropped(attributes: dict[str, Any], dropped: int) -> Attributes:
    # The SDK checked every value in the child already. BoundedAttributes
    # would check them again, so it is only built to carry a dropped count.
    if not dropped:
        return attributes
    bounded = BoundedAttributes(attributes=attributes, immutable=True)
    bounded.dropped = dropped
    return bounded


def _list_with_dropped(items: list[Any], dropped: int) -> Any:
    if not dropped:
        return tuple(items)
    bounded = BoundedList.from_seq(None, items)
    bounded.dropped = dropped
    return bounded
