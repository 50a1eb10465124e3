"""Summaries of dropped spans, and the attributes that carry them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util import BoundedList
from opentelemetry.util.types import Attributes, AttributeValue

from jobtrace import _names as names

#: Span names that one summary lists apart. Spans with further names are
#: added up under :data:`OTHER_NAMES`, so a summary stays small when span
#: names contain ids.
MAX_SUMMARY_NAMES = 32
OTHER_NAMES = "(other names)"

_Item = TypeVar("_Item")

#: Dropped spans by name: [count, total duration in nanoseconds].
Summary = dict[str, list[int]]


def add(summary: Summary, name: str, count: int, duration: int) -> None:
    """Add ``count`` dropped spans of ``name`` and their total duration."""
    entry = summary.get(name)
    if entry is None and len(summary) >= MAX_SUMMARY_NAMES:
        entry = summary.get(OTHER_NAMES)
        name = OTHER_NAMES
    if entry is None:
        summary[name] = [count, duration]
    else:
        entry[0] += count
        entry[1] += duration


def merge(target: Summary, source: Summary) -> None:
    """Add every entry of ``source`` to ``target``."""
    for name, (count, duration) in source.items():
        add(target, name, count, duration)


def total(summary: Summary) -> int:
    """Return how many dropped spans ``summary`` counts."""
    return sum(count for count, _ in summary.values())


def attributes(summary: Summary) -> dict[str, AttributeValue]:
    """Return the ``jobtrace.pruned*`` attributes that describe ``summary``."""
    items = sorted(summary.items(), key=lambda item: item[1][1], reverse=True)
    return {
        names.PRUNED_SPANS: total(summary),
        names.PRUNED_NAMES: tuple(name for name, _ in items),
        names.PRUNED_COUNTS: tuple(count for _, (count, _) in items),
        names.PRUNED_DURATIONS: tuple(duration / 1e9 for _, (_, duration) in items),
    }


def with_attributes(
    span: ReadableSpan, extra: dict[str, AttributeValue]
) -> ReadableSpan:
    """Return a copy of an ended span with ``extra`` added to its attributes.

    The copy keeps the span's counts of dropped attributes, events and
    links, which exporters send along.
    """
    attributes: Attributes = {**(span.attributes or {}), **extra}
    if span.dropped_attributes:
        bounded = BoundedAttributes(attributes=attributes, immutable=True)
        bounded.dropped = span.dropped_attributes
        attributes = bounded
    # The span's own values were cleaned when they were set, and
    # ReadableSpan exposes a plain dict read-only.
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=attributes,
        events=_with_dropped(span.events, span.dropped_events),
        links=_with_dropped(span.links, span.dropped_links),
        kind=span.kind,
        status=span.status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


def _with_dropped(items: Sequence[_Item], dropped: int) -> Sequence[_Item]:
    if not dropped:
        return items
    bounded = BoundedList.from_seq(None, items)
    bounded.dropped = dropped
    return bounded
