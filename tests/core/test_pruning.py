"""The span budget's invariants, asserted on large random span trees.

Each test draws trees with a seeded random generator, so a failure names
the seed that reproduces it. ``trees.check_budget`` asserts every invariant:

- no more spans than the budget, and the local root kept;
- ERROR spans kept with their ancestors;
- no exported span without its parent;
- deeper and shorter spans dropped first;
- exact summaries of the dropped spans on their closest kept ancestor;
- the totals on the root.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanContext, TraceFlags

from jobtrace import _guard
from jobtrace import _names as names
from jobtrace._budget import BudgetProcessor
from jobtrace._summary import MAX_SUMMARY_NAMES, OTHER_NAMES

from . import trees

BUDGETS = (1, 2, 7, 64, 500, 4000)


@pytest.fixture(autouse=True)
def no_internal_errors() -> Iterator[None]:
    """Fail a test if the budget processor contained an error of its own,
    which would otherwise only be logged."""
    _guard.reset_error_counts()
    yield
    assert _guard.error_counts() == {}


class Recorder:
    """A budget processor that exports to memory, and checks its own bound."""

    def __init__(self, budget: int, **options: object) -> None:
        self.memory = InMemorySpanExporter()
        self.processor = BudgetProcessor(
            SimpleSpanProcessor(self.memory), max_spans=budget, **options
        )
        self.budget = budget
        self.max_waiting = 0
        self._events = 0

    def track_start(self, context: SpanContext, parent: SpanContext | None) -> None:
        self.processor.track_start(context, parent)

    def on_end(self, span: ReadableSpan) -> None:
        self.processor.on_end(span)
        self._events += 1
        if self._events % 101 == 0:
            self.max_waiting = max(self.max_waiting, self.processor.waiting_count())

    def spans(self) -> list[ReadableSpan]:
        return list(self.memory.get_finished_spans())


def draw(seed: int, shape: str, size: int) -> tuple[random.Random, trees.Tree, int]:
    """Draw a budget and a tree whose ERROR spans fit in half the budget."""
    rng = random.Random(seed)
    budget = rng.choice(BUDGETS)
    errors = rng.randrange(0, 8)
    tree = trees.random_tree(
        rng, size, shape, errors=errors, remote_parent=rng.random() < 0.5
    )
    while len(tree.error_closure()) > budget - budget // 2 and tree.errors:
        tree.errors.pop()
    return rng, tree, budget


@pytest.mark.parametrize("shape", trees.SHAPES)
@pytest.mark.parametrize("seed", range(5))
def test_invariants_hold(shape: str, seed: int) -> None:
    """Every invariant holds on a random tree pruned in one pass."""
    rng, tree, budget = draw(seed, shape, 4000)
    recorder = Recorder(budget)

    trees.play(tree, recorder, rng, sequential=rng.random())

    trees.check_budget(tree, recorder.spans(), budget)
    assert recorder.max_waiting <= budget
    assert recorder.processor.waiting_count() == 0


@pytest.mark.parametrize("shape", trees.SHAPES)
@pytest.mark.parametrize("seed", range(5))
def test_invariants_hold_across_flushes(shape: str, seed: int) -> None:
    """Partial flushes keep every invariant except the global ranking."""
    rng, tree, budget = draw(seed + 100, shape, 4000)
    recorder = Recorder(budget, partial_flush_spans=rng.choice((1, 9, 50, 300)))
    player = trees.Player(tree, rng, sequential=rng.random())

    flushed_before_root = 0
    while player.advance(recorder):
        if rng.random() < 0.002:
            recorder.processor.force_flush()
        if tree.ends[0] == 0:
            flushed_before_root = len(recorder.spans())

    trees.check_budget(tree, recorder.spans(), budget, ordering=False)
    assert flushed_before_root <= budget // 2
    assert recorder.max_waiting <= budget


def test_flushes_export_early() -> None:
    """With a count trigger, most of a small trace leaves before its root ends."""
    rng = random.Random(7)
    tree = trees.random_tree(rng, 1000, "levels")
    recorder = Recorder(4096, partial_flush_spans=100)

    trees.play(tree, recorder, rng)

    # The root is exported when it ends, so the spans before it left early.
    order = [span.context.span_id - 1 for span in recorder.spans()]
    assert order.index(0) >= 800
    trees.check_budget(tree, recorder.spans(), 4096, ordering=False)


@pytest.mark.parametrize("seed", range(3))
def test_large_tree(seed: int) -> None:
    """A 30,000-span tree keeps every invariant under a small budget."""
    rng = random.Random(seed + 200)
    tree = trees.random_tree(rng, 30_000, rng.choice(trees.SHAPES), errors=5)
    recorder = Recorder(300)

    trees.play(tree, recorder, rng, sequential=0.9)

    trees.check_budget(tree, recorder.spans(), 300)
    assert recorder.max_waiting <= 300


@pytest.mark.parametrize("seed", range(24))
def test_children_outliving_parents(seed: int) -> None:
    """Spans that outlive their parent never leave an exported orphan."""
    rng = random.Random(seed)
    budget = rng.choice((5, 10, 50, 100, 500, 3000))
    shape = rng.choice(trees.SHAPES)
    tree = trees.random_tree(rng, 4000, shape, errors=rng.randrange(6))
    recorder = Recorder(budget, partial_flush_spans=40 if seed % 3 else 0)

    trees.play(tree, recorder, rng, sequential=rng.random(), detached=0.3)

    kept = trees.exported_indexes(tree, recorder.spans())
    assert len(kept) <= budget
    assert 0 in kept
    for index in kept:
        parent = tree.parents[index]
        assert parent < 0 or parent in kept, f"span {index} lost its parent"


def test_errors_beyond_budget() -> None:
    """ERROR spans that do not all fit are kept up to the budget, with parents."""
    rng = random.Random(11)
    tree = trees.random_tree(rng, 2000, "random", errors=400)
    recorder = Recorder(50)

    trees.play(tree, recorder, rng)

    kept = trees.check_budget(
        tree, recorder.spans(), 50, ordering=False, errors_fit=False
    )
    assert len(kept) == 50
    assert len(tree.errors & set(kept)) >= 10


def test_traces_pruned_apart() -> None:
    """Interleaved traces each get a budget of their own."""
    rng = random.Random(12)
    played = [trees.random_tree(rng, 1500, shape) for shape in trees.SHAPES]
    recorder = Recorder(100)

    trees.play_together(played, recorder, rng)

    for tree in played:
        trees.check_budget(tree, recorder.spans(), 100)


def test_local_roots_in_one_trace() -> None:
    """Two local roots of one trace id, such as two jobs run in child mode,
    get a budget each."""
    rng = random.Random(13)
    first = trees.random_tree(rng, 800, "wide", remote_parent=True)
    second = trees.random_tree(rng, 800, "wide", trace_id=first.trace_id)
    second.remote_parent = SpanContext(first.trace_id, 77, True, TraceFlags(1))
    offset = 10_000
    recorder = Recorder(60)
    shifted = Shifted(recorder, offset)
    players = [
        (trees.Player(first, rng), recorder),
        (trees.Player(second, rng), shifted),
    ]

    while players:
        player, target = rng.choice(players)
        if not player.advance(target):
            players.remove((player, target))

    spans = recorder.spans()
    trees.check_budget(first, [s for s in spans if s.context.span_id < offset], 60)
    trees.check_budget(second, shifted.unshift(spans), 60)


class Shifted:
    """Moves one tree's span ids up by ``offset`` so two trees share a trace."""

    def __init__(self, recorder: Recorder, offset: int) -> None:
        self.recorder = recorder
        self.offset = offset

    def _shift(self, context: SpanContext | None) -> SpanContext | None:
        if context is None or context.is_remote:
            return context
        return SpanContext(
            context.trace_id, context.span_id + self.offset, False, TraceFlags(1)
        )

    def track_start(self, context: SpanContext, parent: SpanContext | None) -> None:
        shifted = self._shift(context)
        assert shifted is not None
        self.recorder.track_start(shifted, self._shift(parent))

    def on_end(self, span: ReadableSpan) -> None:
        self.recorder.on_end(
            ReadableSpan(
                name=span.name,
                context=self._shift(span.context),
                parent=self._shift(span.parent),
                resource=span.resource,
                attributes=span.attributes,
                status=span.status,
                start_time=span.start_time,
                end_time=span.end_time,
            )
        )

    def unshift(self, spans: list[ReadableSpan]) -> list[ReadableSpan]:
        """Return this tree's exported spans with their original ids."""
        found = []
        for span in spans:
            assert span.context is not None
            if span.context.span_id < self.offset:
                continue
            parent = span.parent
            if parent is not None and not parent.is_remote:
                parent = SpanContext(
                    parent.trace_id, parent.span_id - self.offset, False, TraceFlags(1)
                )
            found.append(
                ReadableSpan(
                    name=span.name,
                    context=SpanContext(
                        span.context.trace_id,
                        span.context.span_id - self.offset,
                        False,
                        TraceFlags(1),
                    ),
                    parent=parent,
                    attributes=span.attributes,
                    start_time=span.start_time,
                    end_time=span.end_time,
                    resource=trees.RESOURCE,
                )
            )
        return found


def test_summary_names_capped() -> None:
    """Past MAX_SUMMARY_NAMES names, dropped spans are added up as other names."""
    rng = random.Random(14)
    size = 400
    tree = trees.random_tree(rng, size, "wide")
    tree.parents = [-1] + [0] * (size - 1)
    tree.depths = [0] + [1] * (size - 1)
    tree.names = ["process job"] + [f"query {index}" for index in range(1, size)]
    recorder = Recorder(10)

    trees.play(tree, recorder, rng)

    kept = trees.exported_indexes(tree, recorder.spans())
    root = kept[0].attributes or {}
    listed = list(root[names.PRUNED_NAMES])  # type: ignore[arg-type]
    assert len(listed) == MAX_SUMMARY_NAMES + 1
    assert OTHER_NAMES in listed
    assert sum(root[names.PRUNED_COUNTS]) == size - 10  # type: ignore[arg-type]
    assert root[names.PRUNED_SPANS] == size - 10
