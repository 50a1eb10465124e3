"""The spans of local traces, as the span budget tracks them.

:class:`jobtrace._pruning.Pruner` keeps one :class:`Node` per span from its
start until no later span can need it, one :class:`Unit` per local trace
(a local root and the spans below it) and one :class:`Trace` per trace id.
The functions here change one node and the counts of its unit.
"""

from __future__ import annotations

import heapq

from opentelemetry.sdk.trace import ReadableSpan

from jobtrace._summary import Summary

# Node states, in the order a span goes through them.
OPEN = 0
WAITING = 1  # ended and kept, not exported yet
EXPORTED = 2
DROPPED = 3

# Heap entries: a node's rank, then the node.
Entry = tuple[tuple[int, int, int], "Node"]


class Node:
    """One span of a local trace, from its start until no span needs it."""

    __slots__ = (
        "depth",
        "kept_children",
        "parent",
        "pending",
        "pinned",
        "rank",
        "span",
        "span_id",
        "state",
        "summary",
        "unit",
    )

    def __init__(
        self, span_id: int, parent: Node | None, unit: Unit, depth: int
    ) -> None:
        self.span_id = span_id
        # None for the local root, and for a span whose parent was dropped
        # before this span started.
        self.parent = parent
        self.unit = unit
        self.depth = depth
        self.state = OPEN
        # Set when the span must be kept: an ERROR span, or an ancestor of a
        # span that is kept for sure. A pinned span always has a slot.
        self.pinned = False
        # Children that started and whose subtree has not ended yet.
        self.pending = 0
        # Children that are waiting for their export.
        self.kept_children = 0
        # (-depth, duration, -sequence): the lower, the sooner dropped.
        self.rank = (0, 0, 0)
        self.span: ReadableSpan | None = None
        self.summary: Summary | None = None


class Unit:
    """The budget of one local trace."""

    __slots__ = (
        "closed",
        "created",
        "early",
        "ended_since_flush",
        "exported",
        "flush_at",
        "heap",
        "heap_size",
        "root",
        "trace",
        "used",
        "waiting",
    )

    def __init__(self, trace: Trace, span_id: int, flush_at: float) -> None:
        self.trace = trace
        self.root = Node(span_id, None, self, 0)
        self.root.pinned = True
        self.closed = False
        # Slots taken: pinned open spans, waiting spans and exported spans.
        self.used = 1
        self.created = 0
        self.exported = 0
        # Slots that partial flushes took, by exporting or reserving.
        self.early = 0
        self.ended_since_flush = 0
        self.flush_at = flush_at
        # Waiting spans that are not pinned, worst ranked first, built once
        # the budget is full. Entries of spans that left that state stay
        # until they reach the top.
        self.heap: list[Entry] | None = None
        self.heap_size = 0
        self.waiting: dict[Node, None] = {}


class Trace:
    """The tracked spans of one trace id, for every local trace in it."""

    __slots__ = ("nodes", "trace_id", "units")

    def __init__(self, trace_id: int) -> None:
        self.trace_id = trace_id
        self.nodes: dict[int, Node] = {}
        self.units: list[Unit] = []


def rank_of(node: Node) -> tuple[int, int, int]:
    """Return the rank of an ended span, for sorting."""
    return node.rank


def in_heap(node: Node) -> bool:
    """Return True for a span that waits and may still be dropped."""
    return node.state == WAITING and not node.pinned


def heap_of(unit: Unit) -> list[Entry]:
    """Return the heap of a unit's droppable spans, building it if needed."""
    heap = unit.heap
    if heap is None:
        heap = [(node.rank, node) for node in unit.waiting if not node.pinned]
        heapq.heapify(heap)
        unit.heap = heap
    return heap


def wait(node: Node, *, evictable: bool) -> None:
    """Keep an ended span until its export; ``evictable`` if not pinned."""
    node.state = WAITING
    unit = node.unit
    unit.waiting[node] = None
    if node.parent is not None:
        node.parent.kept_children += 1
    if evictable:
        unit.heap_size += 1
        if unit.heap is not None:
            heapq.heappush(unit.heap, (node.rank, node))


def complete(node: Node) -> None:
    """Tell the ancestors of a span that its subtree has ended.

    A subtree is complete once its top and all its descendants ended.
    """
    parent = node.parent
    while parent is not None:
        parent.pending -= 1
        if parent.pending or parent.state == OPEN:
            return
        parent = parent.parent


def subtree(top: Node, below: dict[Node, list[Node]]) -> list[Node]:
    """Return ``top`` and its waiting descendants, given each one's children."""
    found = [top]
    index = 0
    while index < len(found):
        found.extend(below.get(found[index], ()))
        index += 1
    return found


def waiting_below(top: Node) -> list[Node]:
    """Return the waiting descendants of ``top``, by a scan of its unit."""
    found = []
    for node in top.unit.waiting:
        ancestor = node.parent
        while ancestor is not None and ancestor is not top:
            ancestor = ancestor.parent
        if ancestor is top:
            found.append(node)
    return found
