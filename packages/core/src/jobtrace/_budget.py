"""A span processor that keeps every local trace within a span budget.

:class:`BudgetProcessor` sits below :class:`jobtrace._handoff.HandoffProcessor`
and above the batch processor. In a worker whose forked children hand their
spans to the parent, it therefore runs in the parent, which receives all
the spans of each job. :mod:`jobtrace._pruning` decides what it keeps.

Dropping is never silent: the local root carries the totals, the first
trace that loses spans is logged at WARNING (later ones at DEBUG), and
every dropped span is counted in the ``jobtrace.spans.dropped`` job
metric.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanContext

from jobtrace import _metrics
from jobtrace._aggregation import DROPPED_SPANS
from jobtrace._guard import Guard, report_error
from jobtrace._pruning import MAX_OPEN_TRACES, DropReport, Pruner

log = logging.getLogger(__name__)

_FLUSH = Guard("span budget flush")
_SHUTDOWN = Guard("span budget shutdown")

_NO_OP_STARTS = (SpanProcessor.on_start, BatchSpanProcessor.on_start)

_counts_lock = threading.Lock()
_counts: Counter[str] = Counter()


class BudgetProcessor(SpanProcessor):
    """A span processor that exports at most ``max_spans`` spans per local trace.

    It hands the spans it keeps to ``processor``. A running trace's
    finished spans are handed over early every ``partial_flush_seconds``
    seconds and whenever ``partial_flush_spans`` of them ended since the
    last partial flush. 0 turns either trigger off. ``clock`` returns
    seconds and exists for tests.

    Note:
        A forked child starts with no tracked spans, and it tracks none
        while it hands its spans to its parent.
    """

    def __init__(
        self,
        processor: SpanProcessor,
        *,
        max_spans: int,
        partial_flush_seconds: float = 0.0,
        partial_flush_spans: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.processor = processor
        # The batch processor does nothing when a span starts, and calling
        # it anyway costs a tenth of this processor's own work.
        self._start_below: Callable[..., None] | None = processor.on_start
        if type(processor).on_start in _NO_OP_STARTS:
            self._start_below = None
        self.max_spans = max_spans
        self._seconds = partial_flush_seconds
        self._spans = partial_flush_spans
        self._clock = clock
        self._reset()
        if hasattr(os, "register_at_fork"):
            reset = weakref.WeakMethod(self._reset)

            def after_in_child() -> None:
                method = reset()
                if method is not None:
                    method()

            os.register_at_fork(after_in_child=after_in_child)

    def _reset(self) -> None:
        # Also runs in a forked child: the lock may have been held by a
        # thread that does not exist there, and the timer thread is gone.
        self._lock = threading.Lock()
        self._pruner = Pruner(
            self.max_spans,
            self.processor.on_end,
            partial_spans=self._spans,
            partial_seconds=self._seconds,
            clock=self._clock,
        )
        self._stopped = threading.Event()
        self._timer: threading.Thread | None = None

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        context = span.context
        if context is not None and context.trace_flags.sampled:
            # A plain try costs nothing in this hot path, unlike a Guard.
            try:
                with self._lock:
                    if self._timer is None and self._seconds:
                        self._start_timer()
                    self._pruner.start(context, span.parent)
                    reports = self._take_reports()
                if reports:
                    # Starting a local trace can stop tracking the oldest.
                    _report(reports, self.max_spans)
            except Exception as error:
                report_error("span budget on_start", error)
        if self._start_below is not None:
            self._start_below(span, parent_context=parent_context)

    def track_start(self, context: SpanContext, parent: SpanContext | None) -> None:
        """Track a span that a child process started."""
        try:
            with self._lock:
                if self._timer is None and self._seconds:
                    self._start_timer()
                self._pruner.start(context, parent)
                reports = self._take_reports()
            if reports:
                _report(reports, self.max_spans)
        except Exception as error:
            report_error("span budget on_start", error)

    def on_end(self, span: ReadableSpan) -> None:
        # Spans that are not sampled go below unchanged, from the pruner.
        try:
            with self._lock:
                pruner = self._pruner
                pruner.end(span)
                reports = pruner.reports
                if reports:
                    pruner.reports = []
            if reports:
                _report(reports, self.max_spans)
        except Exception as error:
            report_error("span budget on_end", error)

    def flush_due(self) -> None:
        """Hand on the finished spans of running traces whose interval passed."""
        self._flush(due_only=True)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Hand running traces' finished spans on early, then flush below."""
        self._flush(due_only=False)
        return self.processor.force_flush(timeout_millis)

    def shutdown(self) -> None:
        """Hand on every kept span, including those of running traces."""
        self._stopped.set()
        with _SHUTDOWN:
            with self._lock:
                self._pruner.close()
                reports = self._take_reports()
            if reports:
                _report(reports, self.max_spans)
        self.processor.shutdown()

    def waiting_count(self) -> int:
        """Return how many ended spans this processor holds back."""
        with self._lock:
            return self._pruner.waiting_count()

    def _flush(self, *, due_only: bool) -> None:
        with _FLUSH:
            with self._lock:
                self._pruner.flush(due_only=due_only)
                reports = self._take_reports()
            if reports:
                _report(reports, self.max_spans)

    def _take_reports(self) -> list[DropReport]:
        reports = self._pruner.reports
        if reports:
            self._pruner.reports = []
        return reports

    def _start_timer(self) -> None:
        self._timer = threading.Thread(
            target=self._run_timer, name="jobtrace-partial-flush", daemon=True
        )
        self._timer.start()

    def _run_timer(self) -> None:
        # Half the interval, at most a second, so a due trace waits no
        # longer than that past its interval.
        tick = min(self._seconds / 2, 1.0)
        stopped = self._stopped
        while not stopped.wait(tick):
            self.flush_due()


def dropped_counts() -> dict[str, int]:
    """Return how many spans this process dropped so far, by reason."""
    with _counts_lock:
        return dict(_counts)


def reset_dropped_counts() -> None:
    """Forget the counts, so the next drop of each reason is logged again."""
    with _counts_lock:
        _counts.clear()


def _report(reports: list[DropReport], max_spans: int) -> None:
    for reason, trace_id, dropped, created in reports:
        with _counts_lock:
            first = reason not in _counts
            _counts[reason] += dropped
        if dropped:
            _metrics.record_dropped_spans(reason, dropped)
        level = logging.WARNING if first else logging.DEBUG
        if reason == "budget":
            log.log(
                level,
                "Trace %032x exported %d of its %d spans, the most that "
                "JOBTRACE_MAX_SPANS_PER_TRACE=%d allows. Later drops are "
                "logged at DEBUG and counted in the %s metric",
                trace_id,
                created - dropped,
                created,
                max_spans,
                DROPPED_SPANS,
            )
        elif reason == "late":
            log.log(
                level,
                "Dropped %d span(s) of trace %032x that ended after their "
                "local root, because they did not fit in the budget or "
                "their parent was dropped",
                dropped,
                trace_id,
            )
        else:
            log.log(
                level,
                "More than %d local traces were running at once, so trace "
                "%032x was exported as it was and is no longer pruned",
                MAX_OPEN_TRACES,
                trace_id,
            )
