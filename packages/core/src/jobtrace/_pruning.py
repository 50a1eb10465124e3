"""Span budgets: which spans of a local trace to export, and which to drop.

A local trace is a span whose parent is missing or remote (its local root)
together with every span below it that this process ends. :class:`Pruner`
exports at most ``max_spans`` spans of each local trace, and chooses them so
that they still form one tree:

- The local root is always kept.
- A span with status ERROR is kept together with its ancestors, as long as
  they fit in the budget beside the spans already exported or reserved.
- Other spans are ranked by depth, then by duration: a deeper span is
  dropped first, and of two spans at the same depth the shorter one is.
  A parent is always shallower than its children, so keeping the best
  ranked spans never keeps a span without its parent.

Spans are decided as they end. An ended span is kept while the budget has
room, and once it is full, a better ranked span takes the slot of the worst
ranked one. Memory therefore contains at most ``max_spans`` ended spans per
local trace, however many spans the trace makes. Each dropped span is
added to a summary on its closest kept ancestor, by name, with its
duration.

A partial flush exports ended spans before their local root ends. Only
complete subtrees are exported early, and their open ancestors are
reserved, so a later decision never has to drop or change an exported
span. Partial flushes export at most half of the budget: the other half
stays free for ERROR spans and better ranked spans that end later.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Callable

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext
from opentelemetry.trace.status import StatusCode
from opentelemetry.util.types import AttributeValue

from jobtrace import _names as names
from jobtrace import _summary
from jobtrace._localtrace import (
    DROPPED,
    EXPORTED,
    OPEN,
    WAITING,
    Node,
    Trace,
    Unit,
    complete,
    heap_of,
    in_heap,
    rank_of,
    subtree,
    wait,
    waiting_below,
)

#: Local traces tracked at once. Starting one more exports the oldest one's
#: kept spans and stops tracking it, as for a root span that never ends.
MAX_OPEN_TRACES = 1024
#: Running local roots with no span below them yet, remembered at once.
#: Past it the oldest is forgotten, unless another local trace of its trace
#: id is tracked, which then tracks it too. A forgotten root is still
#: exported when it ends, and a span that starts below it later is budgeted
#: as a local trace of its own.
MAX_LONE_ROOTS = 10_000

_ERROR = StatusCode.ERROR
#: The totals of a local trace of one span.
_LONE_TOTALS: dict[str, AttributeValue] = {
    names.TRACE_SPANS_CREATED: 1,
    names.TRACE_SPANS_EXPORTED: 1,
    names.TRACE_SPANS_DROPPED: 0,
}

#: (reason, trace id, spans dropped, spans created) for each local trace
#: that lost spans. ``created`` is 0 for spans that ended after their root.
DropReport = tuple[str, int, int, int]


class Pruner:
    """Decide, span by span, what each local trace exports within its budget.

    ``export`` receives each kept span as soon as it is decided. A local
    trace is flushed early when ``partial_spans`` of its spans ended since
    its last partial flush (0 turns that off), and by :meth:`flush`, which
    the caller runs every ``partial_seconds`` seconds by ``clock``. Not
    thread-safe: the caller holds a lock.
    """

    def __init__(
        self,
        max_spans: int,
        export: Callable[[ReadableSpan], None],
        *,
        partial_spans: int = 0,
        partial_seconds: float = 0.0,
        clock: Callable[[], float],
    ) -> None:
        if max_spans < 1:
            raise ValueError(f"max_spans must be 1 or more, not {max_spans}")
        self.max_spans = max_spans
        self._export_span = export
        self._partial_spans = partial_spans
        self._partial_seconds = partial_seconds
        self._partial_limit = max_spans // 2
        self._clock = clock
        self._traces: dict[int, Trace] = {}
        # Running local roots that no span started below yet, by trace id
        # and span id. Every enqueue, and every job that starts no span of
        # its own, makes a local trace of one span, which then needs none
        # of the tree's bookkeeping.
        self._lone: dict[tuple[int, int], SpanContext] = {}
        # Spans ended so far: the last part of each rank, so that of two
        # spans alike, the one that ended later is dropped first.
        self._ended = 0
        #: Drops not reported yet. The caller takes them out and logs them.
        self.reports: list[DropReport] = []

    def start(self, context: SpanContext, parent: SpanContext | None) -> None:
        """Track a span that started."""
        trace = self._traces.get(context.trace_id)
        if trace is not None and parent is not None:
            nodes = trace.nodes
            parent_node = nodes.get(parent.span_id)
            span_id = context.span_id
            if parent_node is not None and span_id not in nodes:
                nodes[span_id] = Node(
                    span_id, parent_node, parent_node.unit, parent_node.depth + 1
                )
                parent_node.pending += 1
                return
        if trace is not None and context.span_id in trace.nodes:
            # A span that a parent process re-created with a child's ids.
            return
        if parent is None or parent.is_remote:
            lone = self._lone
            key = (context.trace_id, context.span_id)
            if key not in lone and len(lone) >= MAX_LONE_ROOTS:
                self._evict_lone_root(lone.pop(next(iter(lone))))
            lone[key] = context
            return
        root = self._lone.pop((parent.trace_id, parent.span_id), None)
        if root is not None:
            # The first span below a lone root: track the root's tree now.
            trace = self._place(root, None, trace).unit.trace
            self.start(context, parent)
            return
        self._place(context, parent, trace)

    def end(self, span: ReadableSpan) -> None:
        """Keep or drop a span that ended, then flush early if one is due."""
        context = span.context
        assert context is not None
        trace = self._traces.get(context.trace_id)
        node = None if trace is None else trace.nodes.get(context.span_id)
        if (
            node is None
            or node.parent is None
            or node.state != OPEN
            or node.unit.closed
        ):
            self._end_rare(span, node)
            return

        unit = node.unit
        parent = node.parent
        node.span = span
        self._ended += 1
        duration = (span.end_time or 0) - (span.start_time or 0)
        node.rank = (-node.depth, duration, -self._ended)
        unit.created += 1
        if node.pinned or parent.state == DROPPED or span.status.status_code is _ERROR:
            self._decide(node, span)
        elif unit.used < self.max_spans:
            # The common case, inlined: room left and nothing special about
            # the span, so it waits for its export.
            unit.used += 1
            unit.heap_size += 1
            node.state = WAITING
            unit.waiting[node] = None
            parent.kept_children += 1
            if unit.heap is not None:
                heapq.heappush(unit.heap, (node.rank, node))
        else:
            self._admit(node)

        if node.pending == 0:
            complete(node)
        unit.ended_since_flush += 1
        if (
            unit.ended_since_flush >= self._partial_spans > 0
            and unit.early < self._partial_limit
        ):
            self.flush_unit(unit)

    def _end_rare(self, span: ReadableSpan, node: Node | None) -> None:
        # Local roots, spans that end after their root, spans whose start
        # was not seen and spans that are not sampled.
        context = span.context
        assert context is not None
        if node is None:
            # A child process reports unsampled roots too.
            lone = self._lone.pop((context.trace_id, context.span_id), None)
            if not context.trace_flags.sampled:
                # The batch processor drops it, so it takes no slot here.
                self._export_span(span)
                return
            trace = self._traces.get(context.trace_id)
            if lone is not None and trace is None:
                self._export_span(_summary.with_attributes(span, _LONE_TOTALS))
                return
            if lone is not None:
                # Another local trace of this trace id is running. The root ends
                # as a tracked one, so that a span that starts below it
                # later finds it and is not dropped as the child of a span
                # that was dropped.
                node = self._place(lone, None, trace)
            else:
                # For example a span that went into a pipe that broke
                # before the span ended.
                node = self._place(context, span.parent, trace)
                if node.parent is not None and not node.unit.closed:
                    self.end(span)
                    return
        elif node.state != OPEN:
            return

        unit = node.unit
        node.span = span
        self._ended += 1
        duration = (span.end_time or 0) - (span.start_time or 0)
        node.rank = (-node.depth, duration, -self._ended)
        if unit.closed:
            self._end_late(node)
            self._forget_if_done(unit.trace)
        elif node is unit.root:
            self._finish(unit)
            self._forget_if_done(unit.trace)
        else:
            # A span whose parent was dropped before it started.
            unit.created += 1
            self._drop(node)

    def flush(self, *, due_only: bool) -> None:
        """Flush running local traces early: all, or those due by time."""
        now = self._clock()
        for trace in list(self._traces.values()):
            for unit in list(trace.units):
                if unit.waiting and (not due_only or now >= unit.flush_at):
                    self.flush_unit(unit)

    def flush_unit(self, unit: Unit) -> None:
        """Export the complete subtrees of a running local trace that fit."""
        unit.ended_since_flush = 0
        unit.flush_at = self._clock() + self._partial_seconds
        if unit.early >= self._partial_limit:
            return
        self._commit(unit, final=False)
        if unit.heap is not None:
            unit.heap = [entry for entry in unit.heap if in_heap(entry[1])]
            heapq.heapify(unit.heap)

    def close(self) -> None:
        """Export what every running local trace kept so far, then forget all.

        For shutdown: the open ancestors of those spans are never exported.
        """
        for trace in list(self._traces.values()):
            self._abandon(trace)
        self._traces.clear()
        self._lone.clear()

    def waiting_count(self) -> int:
        """Return how many ended spans wait for their export."""
        traces = self._traces.values()
        return sum(len(unit.waiting) for trace in traces for unit in trace.units)

    def _place(
        self, context: SpanContext, parent: SpanContext | None, trace: Trace | None
    ) -> Node:
        parent_node = None
        if parent is not None and trace is not None:
            parent_node = trace.nodes.get(parent.span_id)

        if parent_node is not None:
            unit = parent_node.unit
            node = Node(context.span_id, parent_node, unit, parent_node.depth + 1)
            parent_node.pending += 1
        elif parent is None or parent.is_remote or trace is None or not trace.units:
            node = self._new_unit(context, trace)
            unit = node.unit
        else:
            # A local parent that is no longer tracked was dropped, so this
            # span is dropped when it ends.
            unit = trace.units[-1]
            node = Node(context.span_id, None, unit, 0)
        unit.trace.nodes[context.span_id] = node
        return node

    def _evict_lone_root(self, root: SpanContext) -> None:
        # In a trace id that another tracked local trace has, a span that
        # starts below a forgotten root would be dropped as the child of a
        # span that was dropped, so the root is tracked there instead.
        # NOTE: if the other local trace starts only after the root ended
        # or was forgotten, a span that starts below the root later is
        # still dropped that way: an untracked parent reads as dropped.
        trace = self._traces.get(root.trace_id)
        if trace is not None:
            self._place(root, None, trace)

    def _new_unit(self, context: SpanContext, trace: Trace | None) -> Node:
        if trace is None:
            if len(self._traces) >= MAX_OPEN_TRACES:
                oldest = next(iter(self._traces.values()))
                self._abandon(oldest)
                del self._traces[oldest.trace_id]
                self.reports.append(("too_many_traces", oldest.trace_id, 0, 0))
            trace = self._traces[context.trace_id] = Trace(context.trace_id)
        flush_at = self._clock() + self._partial_seconds
        unit = Unit(trace, context.span_id, flush_at)
        trace.units.append(unit)
        return unit.root

    def _decide(self, node: Node, span: ReadableSpan) -> None:
        parent = node.parent
        if node.pinned:
            wait(node, evictable=False)
        elif parent is None or parent.state == DROPPED:
            self._drop(node)
        elif span.status.status_code is _ERROR:
            if self._pin(node) is None:
                self._drop(node)
            else:
                wait(node, evictable=False)
        else:
            self._admit(node)

    def _admit(self, node: Node) -> None:
        unit = node.unit
        if unit.used >= self.max_spans:
            heap = heap_of(unit)
            while heap and not in_heap(heap[0][1]):
                heapq.heappop(heap)
            if not heap or node.rank < heap[0][0]:
                # Ranked below every waiting span, so it has no kept child.
                self._drop_ended(node)
                return
            self._evict(unit)
        unit.used += 1
        wait(node, evictable=True)

    def _evict(self, unit: Unit) -> None:
        heap = heap_of(unit)
        while True:
            node = heapq.heappop(heap)[1]
            if in_heap(node):
                break
        # The worst ranked span has no kept children: they would rank
        # lower, and a pinned child would have pinned it.
        self._drop(node)

    def _pin(self, node: Node, quota: int | None = None) -> int | None:
        """Pin ``node`` and its ancestors and return how many slots that took.

        Returns None, and pins nothing, when an ancestor was dropped or the
        budget has no room even after dropping every unpinned waiting span.
        With ``quota``, also when the newly taken slots would exceed it.
        """
        unit = node.unit
        chain = []
        current: Node | None = node
        while current is not None and not current.pinned:
            if current.state in (DROPPED, EXPORTED):
                break
            chain.append(current)
            current = current.parent
        if current is None or current.state == DROPPED:
            return None

        opened = sum(1 for member in chain if member.state == OPEN)
        movable = unit.heap_size - sum(1 for member in chain if in_heap(member))
        if opened > self.max_spans - unit.used + movable:
            return None
        if quota is not None and opened > quota:
            return None
        for member in chain:
            if in_heap(member):
                unit.heap_size -= 1
            member.pinned = True
        while self.max_spans - unit.used < opened:
            self._evict(unit)
        unit.used += opened
        return opened

    def _drop_ended(self, node: Node) -> None:
        # The common drop, inlined: a span that just ended, whose parent is
        # still running or waiting, takes its summary to that parent.
        parent = node.parent
        if parent is None or parent.state > WAITING or node.kept_children:
            self._drop(node)
            return
        span = node.span
        assert span is not None
        node.state = DROPPED
        node.span = None
        summary = parent.summary
        if summary is None:
            summary = parent.summary = {}
        _summary.add(summary, span.name, 1, node.rank[1])
        if node.summary:
            _summary.merge(summary, node.summary)
            node.summary = None
        del node.unit.trace.nodes[node.span_id]

    def _drop(self, node: Node) -> None:
        unit = node.unit
        dropped = [node]
        if node.kept_children:
            # Only after an ancestor ended early and was dropped.
            dropped.extend(waiting_below(node))
        for current in dropped:
            if current.state == WAITING:
                unit.used -= 1
                del unit.waiting[current]
                if not current.pinned:
                    unit.heap_size -= 1
                if current.parent is not None:
                    current.parent.kept_children -= 1
            current.state = DROPPED
            self._summarize(current)
            unit.trace.nodes.pop(current.span_id, None)

    def _summarize(self, node: Node) -> None:
        span = node.span
        node.span = None
        target = node.parent
        while target is not None and target.state == DROPPED:
            target = target.parent
        unit = node.unit
        if target is None or target.state == EXPORTED:
            # The closest kept ancestor was exported already.
            target = None if unit.closed else unit.root
        if target is None:
            lost = 1 + (_summary.total(node.summary) if node.summary else 0)
            self.reports.append(("late", unit.trace.trace_id, lost, 0))
            node.summary = None
            return

        summary = target.summary
        if summary is None:
            summary = target.summary = {}
        name = span.name if span is not None else ""
        _summary.add(summary, name, 1, node.rank[1])
        if node.summary:
            _summary.merge(summary, node.summary)
            node.summary = None

    def _commit(self, unit: Unit, *, final: bool) -> None:
        """Export waiting subtrees, best ranked first.

        A subtree goes as a whole, so no exported span can later lose a
        child to the summary it already carries. Early, only complete
        subtrees go, within the partial flush quota. At the end of the
        local trace every subtree goes, or is dropped if its open
        ancestors have no room.
        """
        below: dict[Node, list[Node]] = defaultdict(list)
        tops = []
        for node in unit.waiting:
            parent = node.parent
            assert parent is not None
            if parent.state == WAITING:
                below[parent].append(node)
            elif final or node.pending == 0:
                tops.append(node)
        tops.sort(key=rank_of, reverse=True)

        for top in tops:
            if top.state != WAITING:
                continue
            members = subtree(top, below) if top in below else [top]
            quota = None
            if not final:
                quota = self._partial_limit - unit.early - len(members)
                if quota < 0:
                    continue
            opened = self._pin(top, quota)
            if opened is None:
                if final:
                    self._drop(top)
                continue
            # Making room for pinned ancestors, here or for an earlier
            # subtree, may have dropped spans of this subtree.
            members = [node for node in members if node.state == WAITING]
            if not final:
                unit.early += opened + len(members)
            for node in members:
                self._export(node)

    def _export(self, node: Node) -> None:
        unit = node.unit
        span = node.span
        assert span is not None
        if node.summary:
            span = _summary.with_attributes(span, _summary.attributes(node.summary))
        del unit.waiting[node]
        if not node.pinned:
            unit.heap_size -= 1
        if node.parent is not None:
            node.parent.kept_children -= 1
        node.state = EXPORTED
        node.span = None
        node.summary = None
        unit.exported += 1
        self._export_span(span)

    def _finish(self, unit: Unit) -> None:
        root = unit.root
        unit.created += 1
        self._commit(unit, final=True)

        span = root.span
        assert span is not None
        unit.exported += 1
        dropped = unit.created - unit.exported
        attributes: dict[str, AttributeValue] = {
            names.TRACE_SPANS_CREATED: unit.created,
            names.TRACE_SPANS_EXPORTED: unit.exported,
            names.TRACE_SPANS_DROPPED: dropped,
        }
        if root.summary:
            attributes.update(_summary.attributes(root.summary))
        root.state = EXPORTED
        root.span = root.summary = None
        unit.closed = True
        unit.heap = None
        unit.trace.units.remove(unit)
        self._forget_ended(unit)
        if dropped:
            self.reports.append(("budget", unit.trace.trace_id, dropped, unit.created))
        self._export_span(_summary.with_attributes(span, attributes))

    def _forget_ended(self, unit: Unit) -> None:
        # Only open spans, and the root, can still be the parent of a span
        # that ends after the root.
        nodes = unit.trace.nodes
        ended = [
            span_id
            for span_id, node in nodes.items()
            if node.unit is unit and node.state != OPEN
        ]
        for span_id in ended:
            del nodes[span_id]
        nodes[unit.root.span_id] = unit.root

    def _end_late(self, node: Node) -> None:
        parent = node.parent
        if node.pinned or (
            parent is not None
            and parent.state != DROPPED
            and self._pin(node) is not None
        ):
            node.state = WAITING
            node.unit.waiting[node] = None
            if parent is not None:
                parent.kept_children += 1
            self._export(node)
        else:
            self._drop(node)

    def _forget_if_done(self, trace: Trace) -> None:
        if trace.units:
            return
        if all(node.state != OPEN for node in trace.nodes.values()):
            self._traces.pop(trace.trace_id, None)

    def _abandon(self, trace: Trace) -> None:
        for unit in list(trace.units):
            self._commit(unit, final=True)
            unit.closed = True
        trace.units.clear()
