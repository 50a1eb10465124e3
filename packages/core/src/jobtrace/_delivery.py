"""Counting the spans that could not be exported, and logging it once.

While a collector is down, OpenTelemetry's OTLP exporters log an ERROR for
every batch they fail to send and a WARNING for every retry, and the batch
processor logs a WARNING each time its queue is full. Over an outage that
is a line every few seconds in every worker process. jobtrace holds those
lines back for the exporter it wraps and counts the dropped spans. It logs
one WARNING with the exporter's reason when export starts failing, and one
with the count when export works again or the process shuts down.
"""

from __future__ import annotations

import collections
import logging
import os
import re
import threading
import time

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

log = logging.getLogger(__name__)

#: Loggers of OpenTelemetry's OTLP exporters, batch processor and
#: propagators whose records are held back while jobtrace's exporter,
#: processor or carrier extraction runs.
QUIETED_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.exporter.otlp.common.http",
    "opentelemetry.sdk._shared_internal",
    # Propagators, which log a line for every invalid header they read.
    "opentelemetry.baggage.propagation",
    "opentelemetry.trace.propagation.tracecontext",
    "opentelemetry.trace.span",
)

#: Seconds between two lines about spans dropped over the queue limit
#: while exports succeed.
OVERFLOW_LINE_SECONDS = 60.0

_quiet = threading.local()
_waiting = threading.local()
_filter_lock = threading.Lock()
_filter_installed = False

# Credentials in a URL's user part or query string, which an exporter's
# message may contain when the endpoint carries them.
_URL_USER = re.compile(r"(?<=//)[^/@\s'\"]+@")
_URL_SECRET = re.compile(
    r"(?i)([?&](?:api[_-]?key|key|token|access[_-]?token|signature)=)[^&\s'\"]+"
)


class _HeldBack(logging.Filter):
    """Drops records logged in a thread inside :func:`quiet_logs`."""

    def filter(self, record: logging.LogRecord) -> bool:
        held: list[logging.LogRecord] | None = getattr(_quiet, "held", None)
        if held is None:
            return True
        held.append(record)
        return False


def _install_filter() -> None:
    global _filter_installed
    with _filter_lock:
        if _filter_installed:
            return
        held_back = _HeldBack()
        for name in QUIETED_LOGGERS:
            # First, so that the SDK's own duplicate filter never hides a
            # record from this one.
            logging.getLogger(name).filters.insert(0, held_back)
        _filter_installed = True


class quiet_logs:
    """Hold back the records of :data:`QUIETED_LOGGERS` in this thread.

    Entering returns the list that collects them. Records of other
    threads, such as an exporter that the application runs itself, pass
    as usual. A class instead of a generator keeps the cost per use low,
    because carrier extraction runs it for every job.
    """

    __slots__ = ("held", "outer")

    def __init__(self) -> None:
        if not _filter_installed:
            _install_filter()
        self.held: list[logging.LogRecord] = []
        self.outer: list[logging.LogRecord] | None = None

    def __enter__(self) -> list[logging.LogRecord]:
        self.outer = getattr(_quiet, "held", None)
        _quiet.held = self.held
        return self.held

    def __exit__(self, *exc_info: object) -> None:
        _quiet.held = self.outer


def redact(message: str) -> str:
    """Remove credentials that a URL in ``message`` may carry."""
    return _URL_SECRET.sub(r"\1***", _URL_USER.sub("***@", message))


def reason_of(held: list[logging.LogRecord]) -> str | None:
    """Return the message of the first WARNING or ERROR in ``held``, redacted.

    The first record names the cause: a retried export logs the connection
    error first and a generic "max retries" line last.
    """
    for record in held:
        if record.levelno >= logging.WARNING:
            try:
                message = record.getMessage()
            except Exception:
                message = str(record.msg)
            return redact(message).rstrip(". ")
    return None


class ExportHealth:
    """Counts of one exporter's spans, and the log lines about its failures.

    ``queued`` counts the spans handed to the batch processor, ``exported``
    and ``failed`` the spans in exports that succeeded or failed, and
    ``overflowed`` the spans the batch processor dropped because its queue
    was full. Counts are per process and start from zero in a forked child.
    """

    def __init__(self, endpoint: str | None = None) -> None:
        self.endpoint = endpoint
        self._lock = threading.Lock()
        self.queued = self.exported = self.failed = self.overflowed = 0
        self.unsent = 0
        # Spans dropped since the last line that reported a count.
        self._unreported = 0
        # When the next line about spans over the queue limit may be logged.
        self._next_overflow_line = 0.0
        self._failing = False
        self.reason: str | None = None
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self.queued = self.exported = self.failed = self.overflowed = 0
        self.unsent = self._unreported = 0
        self._next_overflow_line = 0.0
        self._failing = False
        self.reason = None

    @property
    def failing(self) -> bool:
        """Whether the last export failed."""
        return self._failing

    @property
    def dropped(self) -> int:
        """Spans that will never be exported: failed, overflowed or unsent."""
        return self.failed + self.overflowed + self.unsent

    def count_queued(self, *, overflowed: bool) -> None:
        """Count a span handed to the batch processor.

        ``overflowed`` is true when the queue was full, so the oldest span
        was dropped to make room.
        """
        with self._lock:
            self.queued += 1
            if overflowed:
                self.overflowed += 1
                self._unreported += 1

    def count_export(self, spans: int, succeeded: bool, reason: str | None) -> None:
        """Count one export of ``spans`` spans, logging a change of state."""
        overflowed = 0
        with self._lock:
            if succeeded:
                self.exported += spans
                recovered, self._failing = self._failing, False
                started = False
                dropped = 0
                now = time.monotonic()
                if recovered:
                    dropped, self._unreported = self._unreported, 0
                elif self._unreported and now >= self._next_overflow_line:
                    # Exports work, so these spans found the queue full.
                    overflowed, self._unreported = self._unreported, 0
                    self._next_overflow_line = now + OVERFLOW_LINE_SECONDS
            else:
                self.failed += spans
                self._unreported += spans
                started, self._failing = not self._failing, True
                recovered, dropped = False, 0
                self.reason = reason or "unknown error"
        if started:
            log.warning(
                "Exporting spans to %s failed (%s); jobtrace drops the spans "
                "it cannot export and logs their count when export works "
                "again and at shutdown",
                self.endpoint or "the collector",
                reason or "unknown error",
            )
        elif recovered:
            log.warning(
                "Exporting spans to %s works again; %d spans were dropped "
                "while it failed",
                self.endpoint or "the collector",
                dropped,
            )
        elif overflowed:
            log.warning(
                "jobtrace dropped %d spans because the batch queue was full: "
                "spans end faster than %s takes them. Raise "
                "OTEL_BSP_MAX_QUEUE_SIZE or OTEL_BSP_MAX_EXPORT_BATCH_SIZE, "
                "or lower JOBTRACE_MAX_SPANS_PER_TRACE; jobtrace logs this at "
                "most once a minute",
                overflowed,
                self.endpoint or "the collector",
            )

    def count_unsent(self) -> None:
        """Count the spans still queued when the processor stopped."""
        with self._lock:
            left = self.queued - self.overflowed - self.exported - self.failed
            left -= self.unsent
            if left > 0:
                self.unsent += left
                self._unreported += left

    def report(self) -> None:
        """Log the dropped spans of this process in one line, if any."""
        with self._lock:
            if not self._unreported:
                return
            self._unreported = 0
            counts = {
                "dropped": self.dropped,
                "queued": self.queued,
                "failed": self.failed,
                "overflowed": self.overflowed,
                "unsent": self.unsent,
                "reason": self.reason or "none",
            }
        if not counts["dropped"]:
            return
        log.warning(
            "jobtrace dropped %(dropped)d of %(queued)d spans: %(failed)d in "
            "failed exports, %(overflowed)d over the batch queue limit, "
            "%(unsent)d unsent at shutdown; last export error: %(reason)s",
            counts,
        )


class CountingProcessor(SpanProcessor):
    """Counts the spans handed to a ``BatchSpanProcessor`` in ``health``.

    A span that finds the queue full takes the place of the oldest one,
    which is counted as dropped. The WARNING that the batch processor logs
    for each such span is held back, because the count replaces it.

    On a thread inside :func:`waiting_for_room`, a full queue makes
    ``on_end`` wait until the processor's export takes a batch off it, while
    the last export succeeded. A wait lasts at most ``room_wait`` seconds,
    about one export timeout: once a wait timed out, or an export failed,
    spans are dropped without waiting until exports work again, so a
    collector that stops responding costs one wait.
    """

    def __init__(
        self,
        batch: SpanProcessor,
        health: ExportHealth | None = None,
        *,
        room_wait: float = 5.0,
    ) -> None:
        self.batch = batch
        self.health = health
        self.room_wait = room_wait
        self._stalled = False

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self.batch.on_start(span, parent_context=parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        full = queue_full(self.batch)
        if not full:
            self._stalled = False
        elif getattr(_waiting, "active", False) and not self._stalled:
            if self.health is not None and self.health.failing:
                self._stalled = True
            else:
                full = not self._wait_for_room()
                self._stalled = full
        if self.health is not None:
            self.health.count_queued(overflowed=full)
        if not full:
            self.batch.on_end(span)
            return
        # The processor drops its oldest span to make room. Removing that
        # span here instead would race with the export thread, whose pops
        # assume that the queue only grows meanwhile.
        with quiet_logs():
            self.batch.on_end(span)

    def _wait_for_room(self) -> bool:
        deadline = time.monotonic() + self.room_wait
        while time.monotonic() < deadline:
            time.sleep(0.001)
            if not queue_full(self.batch):
                return True
            if self.health is not None and self.health.failing:
                return False
        return False

    def shutdown(self) -> None:
        self.batch.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.batch.force_flush(timeout_millis)


class waiting_for_room:
    """Context manager: spans ended on this thread wait for room in the queue.

    The thread that reads forked children's spans hands them over in
    bursts: several children can end thousands of spans within one export
    interval, more than one batch queue holds. Waiting there slows only
    that thread, and a child blocks only once its pipe is full.
    """

    def __enter__(self) -> None:
        _waiting.active = True

    def __exit__(self, *exc_info: object) -> None:
        _waiting.active = False


class MetricExportLog:
    """Logs when a metric exporter starts failing and when it works again.

    The first export after an outage carries every measurement made during
    it, with either temporality. What a process could not export before it
    shut down is lost, and :meth:`lost_at_shutdown` logs that.
    """

    def __init__(self, endpoint: str | None) -> None:
        self.endpoint = endpoint
        self._failing = False

    def update(self, succeeded: bool, reason: str | None) -> None:
        """Record the result of one export, logging a change of state."""
        if succeeded == (not self._failing):
            return
        self._failing = not succeeded
        where = self.endpoint or "the collector"
        if succeeded:
            log.warning("Exporting metrics to %s works again", where)
            return
        log.warning(
            "Exporting metrics to %s failed (%s); jobtrace logs again when "
            "export works",
            where,
            reason or "unknown error",
        )

    def lost_at_shutdown(self) -> None:
        """Log that the last export at shutdown failed, so its data is lost."""
        log.warning(
            "Exporting metrics to %s failed at shutdown, so the job "
            "measurements made since the last successful export are lost",
            self.endpoint or "the collector",
        )


def _queue_of(processor: object) -> collections.deque[object] | None:
    inner = getattr(processor, "_batch_processor", None)
    # Releases before 1.34 keep the queue on the processor itself.
    queue = getattr(inner, "_queue", None)
    if queue is None:
        queue = getattr(processor, "queue", None)
    return queue if isinstance(queue, collections.deque) else None


def queue_full(processor: object) -> bool:
    """Return whether the batch queue of a ``BatchSpanProcessor`` is full.

    The SDK keeps its queue private, so this returns False when the
    attribute it reads is missing in the installed SDK.
    """
    queue = _queue_of(processor)
    if queue is None or queue.maxlen is None:
        return False
    return len(queue) >= queue.maxlen
