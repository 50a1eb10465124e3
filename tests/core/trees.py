"""Random span trees, played through a span processor, and checks of the result.

A :class:`Tree` is drawn first: parent links, names and which spans end
with ERROR. :func:`play` then starts and ends its spans in a random order
that a program could produce: a parent starts before its children and,
unless ``detached`` is set, ends after them. Time advances by a random step
per event, so durations vary. :func:`check_budget` asserts every invariant
of the span budget on what the processor exported.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext, TraceFlags
from opentelemetry.trace.status import Status, StatusCode

from jobtrace import _names as names

RESOURCE = Resource.create({"service.name": "trees"})
NAMES = ("db.query", "http.get", "cache.get", "step", "render")
SHAPES = ("random", "deep", "wide", "levels")


@dataclasses.dataclass
class Tree:
    """A trace's shape, and the times and spans that :func:`play` gave it."""

    trace_id: int
    parents: list[int]
    names: list[str]
    errors: set[int]
    remote_parent: SpanContext | None = None
    depths: list[int] = dataclasses.field(default_factory=list)
    starts: list[int] = dataclasses.field(default_factory=list)
    ends: list[int] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        self.depths = [0] * len(self.parents)
        for index, parent in enumerate(self.parents):
            if parent >= 0:
                self.depths[index] = self.depths[parent] + 1

    @property
    def size(self) -> int:
        return len(self.parents)

    def duration(self, index: int) -> int:
        return self.ends[index] - self.starts[index]

    def ancestors(self, index: int) -> list[int]:
        found = []
        parent = self.parents[index]
        while parent >= 0:
            found.append(parent)
            parent = self.parents[parent]
        return found

    def error_closure(self) -> set[int]:
        """Return the ERROR spans, their ancestors and the root."""
        closure = {0}
        for index in self.errors:
            closure.add(index)
            closure.update(self.ancestors(index))
        return closure


def random_tree(
    rng: random.Random,
    size: int,
    shape: str,
    *,
    errors: int = 0,
    trace_id: int | None = None,
    remote_parent: bool = False,
) -> Tree:
    """Draw a tree of ``size`` spans; index 0 is the root.

    ``random`` attaches each span to any earlier one, ``deep`` to one of
    the last few (long chains), ``wide`` mostly to the root, and ``levels``
    builds three full levels below the root, like a batch job.
    """
    parents = [-1]
    for index in range(1, size):
        if shape == "random":
            parent = rng.randrange(index)
        elif shape == "deep":
            parent = rng.randrange(max(0, index - 3), index)
        elif shape == "wide":
            parent = 0 if rng.random() < 0.7 else rng.randrange(index)
        else:
            fan_out = max(2, round(size ** (1 / 3)))
            parent = (index - 1) // fan_out
        parents.append(parent)
    tree_names = [rng.choice(NAMES) for _ in range(size)]
    tree_names[0] = "process job"
    chosen = set(rng.sample(range(1, size), min(errors, size - 1)))
    trace = trace_id if trace_id is not None else rng.getrandbits(128) | 1
    remote = None
    if remote_parent:
        remote = SpanContext(trace, rng.getrandbits(64) | 1, True, TraceFlags(1))
    return Tree(trace, parents, tree_names, chosen, remote)


class Player:
    """Drives one tree's spans through a processor's ``track_start``/``on_end``."""

    def __init__(
        self,
        tree: Tree,
        rng: random.Random,
        *,
        sequential: float = 0.8,
        detached: float = 0.0,
        step: Callable[[random.Random], int] | None = None,
        start_time: int = 1_700_000_000 * 10**9,
    ) -> None:
        self.tree = tree
        self.rng = rng
        self.sequential = sequential
        self.detached = detached
        self.step = step or _default_step
        self.now = start_time
        size = tree.size
        tree.starts = [0] * size
        tree.ends = [0] * size
        self._children: list[list[int]] = [[] for _ in range(size)]
        for index in range(1, size):
            self._children[tree.parents[index]].append(index)
        for children in self._children:
            children.reverse()
        self._open_children = [0] * size
        self._detached = [False] * size
        self._ready: list[int] = []
        self._started = False

    def advance(self, processor: object) -> bool:
        """Start or end one span; return False once every span ended."""
        if not self._started:
            self._started = True
            self._start(0, processor)
            return True
        if not self._ready:
            return False

        rng = self.rng
        if rng.random() < self.sequential:
            position = len(self._ready) - 1
        else:
            position = rng.randrange(len(self._ready))
        index = self._ready[position]
        children = self._children[index]
        if children:
            child = children.pop()
            self._open_children[index] += 1
            self._start(child, processor)
            if not children and not self._can_end(index):
                self._remove_ready(position)
            return True

        self._remove_ready(position)
        self._end(index, processor)
        parent = self.tree.parents[index]
        if parent >= 0 and self.tree.ends[parent] == 0:
            self._open_children[parent] -= 1
            # A detached parent stayed ready; any other one is ready again
            # once all of its children ended.
            ended_last = not self._open_children[parent] and not self._children[parent]
            if ended_last and not self._detached[parent]:
                self._ready.append(parent)
        return True

    def _can_end(self, index: int) -> bool:
        return self._detached[index] or not self._open_children[index]

    def _remove_ready(self, position: int) -> None:
        ready = self._ready
        ready[position] = ready[-1]
        ready.pop()

    def _start(self, index: int, processor: object) -> None:
        self.now += self.step(self.rng)
        self.tree.starts[index] = self.now
        parent = self.parent_context(index)
        processor.track_start(self.context(index), parent)  # type: ignore[attr-defined]
        if self._children[index] and self.rng.random() < self.detached:
            # This span may end before its children, which outlive it.
            self._detached[index] = True
        self._ready.append(index)

    def _end(self, index: int, processor: object) -> None:
        self.now += self.step(self.rng)
        self.tree.ends[index] = self.now
        processor.on_end(self.readable(index))  # type: ignore[attr-defined]

    def context(self, index: int) -> SpanContext:
        return SpanContext(self.tree.trace_id, index + 1, False, TraceFlags(1))

    def parent_context(self, index: int) -> SpanContext | None:
        parent = self.tree.parents[index]
        if parent < 0:
            return self.tree.remote_parent
        return self.context(parent)

    def readable(self, index: int) -> ReadableSpan:
        tree = self.tree
        error = index in tree.errors
        return ReadableSpan(
            name=tree.names[index],
            context=self.context(index),
            parent=self.parent_context(index),
            resource=RESOURCE,
            attributes={"test.index": index},
            status=Status(StatusCode.ERROR if error else StatusCode.UNSET),
            start_time=tree.starts[index],
            end_time=tree.ends[index],
        )


def _default_step(rng: random.Random) -> int:
    # Mostly short gaps and some long ones, in nanoseconds.
    return rng.choice((1_000, 50_000, 2_000_000, 300_000_000))


def play(tree: Tree, processor: object, rng: random.Random, **options: object) -> None:
    """Play every span of ``tree`` through ``processor``."""
    player = Player(tree, rng, **options)  # type: ignore[arg-type]
    while player.advance(processor):
        pass


def play_together(trees: Sequence[Tree], processor: object, rng: random.Random) -> None:
    """Play several trees at once, interleaving their events."""
    players = [Player(tree, rng) for tree in trees]
    while players:
        player = rng.choice(players)
        if not player.advance(processor):
            players.remove(player)


def exported_indexes(
    tree: Tree, spans: Sequence[ReadableSpan]
) -> dict[int, ReadableSpan]:
    """Return the exported spans of ``tree`` by index, asserting no duplicates."""
    found: dict[int, ReadableSpan] = {}
    for span in spans:
        assert span.context is not None
        if span.context.trace_id != tree.trace_id:
            continue
        index = span.context.span_id - 1
        assert index not in found, f"span {index} exported twice"
        found[index] = span
    return found


def check_budget(
    tree: Tree,
    spans: Sequence[ReadableSpan],
    budget: int,
    *,
    ordering: bool = True,
    errors_fit: bool = True,
) -> dict[int, ReadableSpan]:
    """Assert the budget's invariants on what was exported of ``tree``.

    ``ordering`` checks that no kept span ranks below a dropped one; it
    holds when no partial flush exported spans early. ``errors_fit``
    asserts that every ERROR span was kept, which holds when the ERROR
    spans with their ancestors fit in the budget.
    """
    kept = exported_indexes(tree, spans)

    assert len(kept) <= budget, f"{len(kept)} spans exported, budget {budget}"
    assert 0 in kept, "the local root was dropped"
    for index in kept:
        parent = tree.parents[index]
        assert parent < 0 or parent in kept, f"span {index} lost its parent {parent}"
    root_span = kept[0]
    if tree.remote_parent is not None:
        assert root_span.parent == tree.remote_parent
    if errors_fit:
        missing = tree.errors - set(kept)
        assert not missing, f"ERROR spans dropped: {sorted(missing)}"

    _check_summaries(tree, kept)
    _check_totals(tree, kept)
    if ordering:
        _check_ordering(tree, kept)
    return kept


def _closest_kept(tree: Tree, index: int, kept: dict[int, ReadableSpan]) -> int:
    parent = tree.parents[index]
    while parent not in kept:
        parent = tree.parents[parent]
    return parent


def _check_summaries(tree: Tree, kept: dict[int, ReadableSpan]) -> None:
    expected: dict[int, dict[str, list[int]]] = defaultdict(dict)
    for index in range(tree.size):
        if index in kept:
            continue
        owner = _closest_kept(tree, index, kept)
        entry = expected[owner].setdefault(tree.names[index], [0, 0])
        entry[0] += 1
        entry[1] += tree.duration(index)

    for index, span in kept.items():
        attributes = span.attributes or {}
        summary = expected.get(index)
        if summary is None:
            assert names.PRUNED_SPANS not in attributes, f"span {index}"
            continue
        assert attributes[names.PRUNED_SPANS] == sum(c for c, _ in summary.values())
        got_names = list(attributes[names.PRUNED_NAMES])  # type: ignore[arg-type]
        got_counts = list(attributes[names.PRUNED_COUNTS])  # type: ignore[arg-type]
        got_durations = list(attributes[names.PRUNED_DURATIONS])  # type: ignore[arg-type]
        assert sorted(got_names) == sorted(summary), f"span {index}"
        for name, count, seconds in zip(
            got_names, got_counts, got_durations, strict=True
        ):
            assert count == summary[name][0], f"span {index}, {name}"
            assert math.isclose(seconds, summary[name][1] / 1e9, rel_tol=1e-9)
        assert got_durations == sorted(got_durations, reverse=True)


def _check_totals(tree: Tree, kept: dict[int, ReadableSpan]) -> None:
    attributes = kept[0].attributes or {}
    assert attributes[names.TRACE_SPANS_CREATED] == tree.size
    assert attributes[names.TRACE_SPANS_EXPORTED] == len(kept)
    assert attributes[names.TRACE_SPANS_DROPPED] == tree.size - len(kept)


def _check_ordering(tree: Tree, kept: dict[int, ReadableSpan]) -> None:
    # Spans kept for a reason other than their rank: the root, ERROR spans
    # and their ancestors.
    pinned = {0}
    for index in tree.errors & set(kept):
        pinned.add(index)
        pinned.update(tree.ancestors(index))

    shortest_kept: dict[int, int] = {}
    longest_dropped: dict[int, int] = {}
    for index in range(tree.size):
        depth, duration = tree.depths[index], tree.duration(index)
        if index in kept:
            if index not in pinned:
                shortest_kept[depth] = min(shortest_kept.get(depth, duration), duration)
        else:
            longest_dropped[depth] = max(longest_dropped.get(depth, duration), duration)
    if not longest_dropped or not shortest_kept:
        return

    shallowest_dropped = min(longest_dropped)
    deepest_kept = max(shortest_kept)
    assert deepest_kept <= shallowest_dropped, (
        f"kept a span at depth {deepest_kept} but dropped one at "
        f"depth {shallowest_dropped}"
    )
    for depth, longest in longest_dropped.items():
        if depth in shortest_kept:
            assert longest <= shortest_kept[depth], f"depth {depth}"


def count_by_trace(spans: Sequence[ReadableSpan]) -> Counter[int]:
    """Return how many spans were exported per trace id."""
    return Counter(span.context.trace_id for span in spans if span.context)
